"""Jobs on a real two-node Ray cluster on this machine, joined with ``--ray-address``: a worker node killed
mid-job (its raylet and every process under it, SIGKILL) costs nothing but time, and a driver killed with
SIGKILL then resumes on the cluster. The output must equal the single-process output byte for byte, every input
record accounted for.

The cluster is made of Ray's own ``ray start`` processes, as on real machines, all on 127.0.0.1:

- the head node: ``ray start --head --block --node-ip-address 127.0.0.1 --port PORT --num-cpus 1`` (GCS,
  raylet, agents);
- a worker node: ``ray start --block --address 127.0.0.1:PORT --node-ip-address 127.0.0.1 --num-cpus 1
  --resources '{"worker_node": 1}'``, its own raylet, agents and workers, with its own resources; it runs with
  the faults hook set (``PREALIGN_TEST_WORKER_DELAY``/``_MARKS``), which every process under it inherits, so
  that every task and actor call there leaves a mark and sleeps, and a test can kill the node with work in
  flight there.

Every process of both runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which is what keeps Ray on loopback
(see DESIGN.md). With that variable at 0 ``ray start --address`` refuses to join ("Multi-node Ray clusters are
not supported on Windows and OSX"): the refusal is one check in Ray's command-line module
(``ray/scripts/scripts.py``, reading ``ray_constants.ENABLE_RAY_CLUSTER``), not in the node itself. So the
worker node runs Ray's own command-line entry point (``ray.scripts.scripts.main``, what the ``ray`` command
runs) through a small shim (``JOIN_SHIM``) that answers that one check with "yes" for that module only; every
other module, and every process the node starts, still reads the variable as 0 and binds to 127.0.0.1. The
shim is a test device, for a multi-node cluster on one loopback-only machine; on real machines ``ray start
--address`` is used as is (and without the variable).

``--block`` keeps each ``ray start`` in the foreground with its node's processes under it: the test finds the
worker node's raylet among its descendants, and stops a node by sending its ``ray start`` SIGTERM (never ``ray
stop``, which stops every Ray on the machine, other users' too). Every process of the cluster must listen on
loopback only, and none may be left at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_loopback_only, cli, listening, psutil_module, wait_gone
from test_resume import SMALL, identities, run, snapshot
from test_resume import stats as comparable_stats
from test_switch_job import Assets, sentences

from prealign.lexicon.clean import DROP_REASONS
from prealign.pipelines import faults

# Ray's own command line (``ray start ...``), with the check that refuses to join a cluster when
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 answered "yes" in that module only (see the module docstring).
JOIN_SHIM = """
import sys
import ray._private.ray_constants as real
import ray.scripts.scripts as scripts

class _Constants:
    ENABLE_RAY_CLUSTER = True

    def __getattr__(self, name):
        return getattr(real, name)

scripts.ray_constants = _Constants()
sys.exit(scripts.main())
"""
# Exec the rest of the command line with SIGTERM to come when the test process dies (PR_SET_PDEATHSIG, kept
# across exec): a node does not outlive a test run killed before its teardown.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit("the test process is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""
# Connect to the cluster as a driver and wait until exactly the nodes whose raylets listen on the given ports
# are alive (a node killed a moment ago stays "alive" until the GCS's health checks give up on it).
WAIT_FOR_NODES = """
import json, sys, time
import ray
address, timeout, want = sys.argv[1], float(sys.argv[2]), sorted(map(int, sys.argv[3:]))
deadline = time.monotonic() + timeout
while True:
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        break
    except ConnectionError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    summary = sorted((n["NodeManagerPort"], n["Resources"].get("worker_node", 0)) for n in alive)
    if [port for port, _ in summary] == want:
        print("NODES " + json.dumps(summary))  # on a line of its own: Ray may print to the driver's stdout too
        break
    if time.monotonic() > deadline:
        sys.exit(f"alive nodes (node manager port, worker_node): {summary}, wanted ports {want}")
    time.sleep(0.5)
"""
WORKER_DELAY = "0.5"
RAY = Path(sys.executable).with_name("ray")  # the `ray` command of this Python
if not RAY.exists():
    RAY = Path(shutil.which("ray") or "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodes:
    """The ``ray start --block`` processes of the head node and of the worker node of the moment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.marks = root / "marks"
        self.marks.mkdir()
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit
        self.env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every node on 127.0.0.1
            "RAY_TMPDIR": str(self.ray_tmp),  # its own session files and address file, not /tmp/ray
            "RAY_AUTH_MODE": "token",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        for key in (faults.WORKER_DELAY, faults.WORKER_MARKS):
            self.env.pop(key, None)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen[bytes]] = []  # every `ray start` started, in order
        self.head: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.ports: dict[int, int] = {}  # `ray start` pid -> its raylet's node manager port
        self.seen: dict[int, float] = {}
        self.alive: dict[int, float] = {}  # node manager port -> worker_node, of the alive nodes

    def start_node(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start one node's ``ray start --block`` (its output in ``ROOT/NAME.log``) and wait until the
        cluster's alive nodes are exactly the live ones started here."""
        port = free_port()
        argv = [*argv, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--node-manager-port", str(port)]
        argv += ["--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
        with open(self.root / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.nodes.append(proc)
        self.ports[proc.pid] = port
        want = [str(self.ports[p.pid]) for p in self.nodes if p.poll() is None]
        wait = [sys.executable, "-c", WAIT_FOR_NODES, self.address, "120", *want]
        stdout, stderr = self.wait_while_alive(proc, wait)
        if proc.poll() is not None or stdout is None:
            code = proc.poll()
            self.kill_node(proc)  # not left to confuse the next node's wait
            raise AssertionError(
                f"the {name} node never joined: {stderr[-3000:]}\n"
                f"its `ray start` exit code: {code}; its log ends:\n{self.log_tail(name)}"
            )
        found = re.findall(r"^NODES (.*)$", stdout, re.MULTILINE)
        self.alive = {port: worker_node for port, worker_node in json.loads(found[-1])}
        self.check_loopback()
        return proc

    def wait_while_alive(self, node: subprocess.Popen[bytes], wait: list[str]) -> tuple[str | None, str]:
        """Run the ``wait`` command; give up at once when the node's ``ray start`` ends first (its own error is
        in its log), instead of waiting out the command's timeout. Returns (stdout or None on failure, stderr)."""
        waiter = subprocess.Popen(wait, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while waiter.poll() is None and node.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if waiter.poll() is None:
            waiter.kill()
        stdout, stderr = waiter.communicate()
        return (stdout if waiter.returncode == 0 else None), stderr

    def kill_node(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a node's ``ray start`` and every process under it."""
        psutil = psutil_module()
        try:
            top = psutil.Process(proc.pid)
            node = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            node = []
        for p in node:
            try:
                self.seen.setdefault(p.pid, p.create_time())
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)

    def log_tail(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text("utf-8", errors="replace")[-3000:]

    def start_head(self) -> None:
        argv = [str(RAY), "start", "--head", "--block", "--port", str(self.port), "--include-dashboard", "false"]
        self.head = self.start_node("head", argv + ["--ray-client-server-port", str(free_port())], self.env)

    def add_worker_node(self) -> None:
        """A worker node (1 CPU and ``worker_node``), with the faults hook set for its processes."""
        for p in self.marks.iterdir():
            p.unlink()
        env = {**self.env, faults.WORKER_DELAY: WORKER_DELAY, faults.WORKER_MARKS: str(self.marks)}
        argv = [sys.executable, "-c", JOIN_SHIM, "start", "--block", "--address", self.address]
        argv += ["--resources", json.dumps({"worker_node": 1})]
        self.worker = self.start_node(f"worker{len(self.nodes)}", argv, env)
        assert self.head is not None
        assert self.alive == {self.ports[self.head.pid]: 0, self.ports[self.worker.pid]: 1}, self.alive

    def check_loopback(self) -> None:
        """Every process of the cluster listens on loopback only, the GCS and each live raylet among them."""
        sockets = listening(self.processes())
        assert_loopback_only(sockets)
        ports = {port for _, _, _, port in sockets}
        expected = {self.port, *(self.ports[p.pid] for p in self.nodes if p.poll() is None)}
        assert expected <= ports, f"the GCS and raylet ports {expected} are not all among {sockets}"

    def processes(self) -> list[Any]:
        """Every process of the cluster (the live ``ray start`` processes and all under them), remembered for
        the final check."""
        psutil = psutil_module()
        procs = []
        for node in self.nodes:
            if node.poll() is None:
                try:
                    top = psutil.Process(node.pid)
                    procs += [top, *top.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        return procs

    def kill_worker_node(
        self, when: str, job: threaded, timeout: float = 240, after: Callable[[], bool] | None = None
    ) -> None:
        """Once a call whose name starts with ``when`` is in flight on the worker node (one that started once
        ``after()`` was true, if given): SIGKILL its raylet and every process under it (workers, agents), then
        what is left of the node (its ``ray start``). ``job``: the job's thread (its error, if it ends first)."""
        assert self.worker is not None
        psutil = psutil_module()
        top = psutil.Process(self.worker.pid)
        deadline = time.monotonic() + timeout

        def waiting(what: str) -> None:
            if not job.thread.is_alive():
                job.join()  # the job's own error, if any
                raise AssertionError(f"the job ended while the test waited for {what}")
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.05)

        while after is not None and not after():
            waiting("the point where the node is to be killed")
        # marks are named WHAT-PID-MONOTONIC_NS (CLOCK_MONOTONIC: one per machine); with ``after``, only a call
        # that started once it was true counts
        since = time.monotonic_ns() if after is not None else 0

        def started(name: str) -> bool:
            return name.startswith(when) and int(name.rsplit("-", 1)[1]) > since

        while not (marks := [p.name for p in self.marks.iterdir() if started(p.name)]):
            waiting(f"a {when} call on the worker node")
        node = [top, *top.children(recursive=True)]
        pids = {p.pid for p in node}
        assert {int(m.split("-")[-2]) for m in marks} <= pids, f"calls marked outside the worker node: {marks}"
        raylet = [p for p in node if p.name() == "raylet"]
        assert len(raylet) == 1, f"the worker node's raylet is not among its processes: {node}"
        lost = [raylet[0], *raylet[0].children(recursive=True)]
        assert any(p.name().startswith("ray::") for p in lost[1:]), "no worker process on the node"
        rest = [p for p in node if p not in lost]
        for p in [*lost, *rest]:  # the node's work first, then its `ray start` and log monitor
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.worker.wait(timeout=30)
        assert not wait_gone({p.pid: p.create_time() for p in node}, timeout=30)
        self.worker = None

    def job(self, args: list[Any], tmp: Path, pause: str | None = None) -> dict[str, int]:
        """The command line as a driver of this cluster (in a child process; ``pause``: see test_resume.run)."""
        env = {k: v for k, v in self.env.items() if k != "RAY_TMPDIR"}
        return run([*args, "--ray-address", self.address], tmp, pause=pause, env={**env, **SMALL})

    def close(self) -> list[int]:
        """SIGTERM every live node (worker first), SIGKILL what is left of them after a minute; returns the
        processes of the cluster still alive after that."""
        psutil = psutil_module()
        self.processes()
        live = [p for p in reversed(self.nodes) if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for p in live:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        left = wait_gone(self.seen, timeout=max(1.0, deadline - time.monotonic()))
        for pid in left:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        for p in self.nodes:
            if p.poll() is None:
                p.wait(timeout=30)
        return left


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    nodes = TwoNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start_head()
        nodes.add_worker_node()
        yield nodes
        nodes.check_loopback()
    finally:
        stubborn = nodes.close()
        left = wait_gone(nodes.seen, timeout=30)
        shutil.rmtree(nodes.ray_tmp, ignore_errors=True)
    assert not stubborn, f"Ray processes of the cluster still there a minute after SIGTERM: {stubborn}"
    assert not left, f"Ray processes of the cluster left behind: {left}"


def fresh_worker_node(nodes: TwoNodes) -> None:
    """A live worker node for the next test (the last one may have been killed), and loopback checked."""
    if nodes.worker is None:
        nodes.add_worker_node()
    nodes.check_loopback()


EXTRACT = ["extract-lexicon", "-q", "--src-lang", "en", "--tgt-lang", "fr", "--ibm1-iterations", 2]
EXTRACT += ["--hmm-iterations", 2, "--links"]


def test_extract_survives_a_lost_worker_node_then_a_killed_driver(
    two_nodes: TwoNodes, demo_corpus: Path, tmp_path: Path
) -> None:
    fresh_worker_node(two_nodes)
    reference = tmp_path / "reference"
    reference.mkdir()
    # in a process of its own, without Ray, with the same small read batches, dedup shards, EM chunks and M-step
    # shards as the cluster's job (tests/test_resume.py: RUNNER)
    run([*EXTRACT, reference / "links.txt", demo_corpus, "-o", reference / "lex.parquet", "--workers", 0], tmp_path,
        env=SMALL)  # fmt: skip
    out = tmp_path / "cluster"
    out.mkdir()
    work = out / "lex.parquet.work"
    job = [*EXTRACT, out / "links.txt", demo_corpus, "-o", out / "lex.parquet"]
    # the worker node dies with one of the job's tasks in flight there ("" matches every stage task's mark); the
    # job goes on (Ray runs the task again elsewhere), and its driver is killed after the third EM iteration
    proc = threaded(lambda: two_nodes.job(job, tmp_path, pause="em-iteration:3"))
    two_nodes.kill_worker_node("", proc)
    proc.join()
    files = identities(work)
    assert sorted(f for f in files if f.endswith("params.npz")) == ["em/it-003/params.npz"]
    assert not (work / "em" / "it-004").exists()
    fresh_worker_node(two_nodes)
    two_nodes.job(job, tmp_path)  # started again: the last iteration, decoding, counts
    for name in ("lex.parquet", "links.txt"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    stats, expected = (comparable_stats(d / "lex.parquet") for d in (out, reference))
    assert stats == expected
    pairs = stats["pairs"]
    assert pairs["input"] == 600 == pairs["kept"] + sum(pairs[r] for r in DROP_REASONS)
    assert not work.exists()


def test_switch_survives_the_loss_of_a_worker_node(two_nodes: TwoNodes, tmp_path: Path) -> None:
    fresh_worker_node(two_nodes)
    assets = Assets(tmp_path)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(sentences(3000, 4)) + "\n", encoding="utf-8")
    args = ["switch", corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer, "--ratio", 0.3, "-q",
            "--seq-len", 63, "--shard-rows", 50]  # fmt: skip
    cli(*args, "-o", tmp_path / "reference", "--workers", 0)
    proc = threaded(lambda: two_nodes.job([*args, "-o", tmp_path / "cluster"], tmp_path))
    two_nodes.kill_worker_node("switch_task", proc)
    proc.join()
    assert snapshot(tmp_path / "cluster") == snapshot(tmp_path / "reference")
    manifest = json.loads((tmp_path / "cluster" / "manifest.json").read_text("utf-8"))
    assert manifest["totals"]["documents"] == 3000


class threaded:
    """Run ``func`` in a thread; ``join`` re-raises what it raised."""

    def __init__(self, func: Any) -> None:
        import threading

        self.error: BaseException | None = None

        def target() -> None:
            try:
                func()
            except BaseException as exc:  # noqa: BLE001 - handed to join()
                self.error = exc

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error
