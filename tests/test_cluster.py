"""Jobs on a real two-node Ray cluster on this machine, joined with ``--ray-address``: a worker node killed
mid-job (its raylet and every worker on it, SIGKILL) costs nothing but time, and a driver killed with SIGKILL
then resumes on the cluster. The output must equal the single-process output byte for byte, every input
record accounted for.

The cluster is ``ray.cluster_utils.Cluster`` in a helper process: a head node and a worker node, each its own
GCS/raylet processes with its own resources, as ``ray start --head`` and ``ray start --address`` make them
(``ray start --address`` itself refuses to join with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps Ray
on loopback). Every process of the cluster must listen on loopback only, and none may be left at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_loopback_only, cli, listening, psutil_module, wait_gone
from test_resume import run, snapshot
from test_switch_job import Assets, sentences

from prealign.lexicon import builtin_aligner
from prealign.lexicon.clean import DROP_REASONS
from prealign.pipelines.workdir import read_journal

# One head node (1 CPU) and, on "add", a worker node (1 CPU) whose every task and actor call first leaves a
# mark and sleeps (the faults hook), so that a test can kill it with work in flight there. Prints one JSON
# line per node added; "quit" (or end of input) shuts the cluster down.
HELPER = """
import json, os, sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
print(json.dumps({"address": cluster.address}), flush=True)
for line in sys.stdin:
    if line.strip() != "add":
        break
    os.environ.update({"PREALIGN_TEST_WORKER_DELAY": sys.argv[1], "PREALIGN_TEST_WORKER_MARKS": sys.argv[2]})
    node = cluster.add_node(num_cpus=1, resources={"worker_node": 1})
    for key in ("PREALIGN_TEST_WORKER_DELAY", "PREALIGN_TEST_WORKER_MARKS"):
        del os.environ[key]
    print(json.dumps({"raylet": node.all_processes["raylet"][0].process.pid}), flush=True)
cluster.shutdown()
"""
WORKER_DELAY = "0.5"
SMALL_CHUNKS = {"TEST_CHUNK_SENTENCES": "150"}  # 4 EM chunks of the 600-pair demo corpus, as well as 6 read batches


class TwoNodes:
    """The helper process, the cluster's address, and the worker node of the moment."""

    def __init__(self, root: Path) -> None:
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
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER, WORKER_DELAY, str(self.marks)],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = json.loads(self.proc.stdout.readline())["address"]
        self.seen: dict[int, float] = {}
        self.raylet = 0

    def add_worker_node(self) -> None:
        self.proc.stdin.write("add\n")
        self.proc.stdin.flush()
        self.raylet = json.loads(self.proc.stdout.readline())["raylet"]
        for p in self.marks.iterdir():
            p.unlink()

    def processes(self) -> list[Any]:
        """Every process of the cluster (the helper's descendants), remembered for the final check."""
        psutil = psutil_module()
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        return procs

    def kill_worker_node(self, when: str, timeout: float = 240) -> None:
        """Once a call whose name starts with ``when`` is in flight on the worker node: SIGKILL its raylet and
        every process under it (workers, agents)."""
        deadline = time.monotonic() + timeout
        while not any(p.name.startswith(when) for p in self.marks.iterdir()):
            assert time.monotonic() < deadline, f"no {when} call ever ran on the worker node"
            time.sleep(0.05)
        psutil = psutil_module()
        raylet = psutil.Process(self.raylet)
        node = [raylet, *raylet.children(recursive=True)]
        assert any(p.name().startswith("ray::") for p in node[1:]), "no worker process on the node"
        for p in node:
            p.kill()
        assert not wait_gone({p.pid: p.create_time() for p in node}, timeout=30)
        self.raylet = 0

    def job(self, args: list[Any], tmp: Path, pause: str | None = None) -> dict[str, int]:
        """The command line as a driver of this cluster (in a child process; ``pause``: see test_resume.run)."""
        env = {k: v for k, v in self.env.items() if k != "RAY_TMPDIR"}
        return run([*args, "--ray-address", self.address], tmp, pause=pause, env={**env, **SMALL_CHUNKS})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    nodes = TwoNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.add_worker_node()
        yield nodes
        assert_loopback_only(listening(nodes.processes()))
    finally:
        nodes.processes()
        nodes.close()
        left = wait_gone(nodes.seen, timeout=60)
        shutil.rmtree(nodes.ray_tmp, ignore_errors=True)
    assert not left, "Ray processes of the cluster left behind"


def fresh_worker_node(nodes: TwoNodes) -> None:
    """A live worker node for the next test (the last one may have been killed), and loopback checked."""
    if not nodes.raylet:
        nodes.add_worker_node()
    assert_loopback_only(listening(nodes.processes()))


EXTRACT = ["extract-lexicon", "-q", "--src-lang", "en", "--tgt-lang", "fr", "--ibm1-iterations", 2]
EXTRACT += ["--hmm-iterations", 2, "--links"]


def test_extract_survives_a_lost_worker_node_then_a_killed_driver(
    two_nodes: TwoNodes, demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_worker_node(two_nodes)
    reference = tmp_path / "reference"
    bounds = builtin_aligner.chunk_bounds
    monkeypatch.setattr(
        builtin_aligner, "chunk_bounds", lambda n, size: bounds(n, int(SMALL_CHUNKS["TEST_CHUNK_SENTENCES"]))
    )
    cli(*EXTRACT, reference / "links.txt", demo_corpus, "-o", reference / "lex.parquet", "--workers", 0)
    out = tmp_path / "cluster"
    out.mkdir()
    job = [*EXTRACT, out / "links.txt", demo_corpus, "-o", out / "lex.parquet"]
    # the worker node dies with an E-step task in flight there (and the chunks it held); the job goes on, and
    # its driver is killed after the third iteration
    proc = threaded(lambda: two_nodes.job(job, tmp_path, pause="em-iteration:3"))
    two_nodes.kill_worker_node("_chunk_estep")
    proc.join()
    journal = read_journal(out / "lex.parquet.work")
    assert [e["em"] for e in journal if "em" in e] == [1, 2, 3]
    fresh_worker_node(two_nodes)
    two_nodes.job(job, tmp_path)  # started again: the last iteration, decoding, counts
    for name in ("lex.parquet", "links.txt"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    stats, expected = (json.loads((d / "lex.parquet.stats.json").read_text("utf-8")) for d in (out, reference))
    assert stats.pop("seconds") and expected.pop("seconds") and stats == expected
    pairs = stats["pairs"]
    assert pairs["input"] == 600 == pairs["kept"] + sum(pairs[r] for r in DROP_REASONS)
    assert not (out / "lex.parquet.work").exists()


def test_switch_survives_the_loss_of_a_worker_node(two_nodes: TwoNodes, tmp_path: Path) -> None:
    fresh_worker_node(two_nodes)
    assets = Assets(tmp_path)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(sentences(3000, 4)) + "\n", encoding="utf-8")
    args = ["switch", corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer, "--ratio", 0.3, "-q",
            "--seq-len", 63, "--shard-rows", 50]  # fmt: skip
    cli(*args, "-o", tmp_path / "reference", "--workers", 0)
    proc = threaded(lambda: two_nodes.job([*args, "-o", tmp_path / "cluster"], tmp_path))
    two_nodes.kill_worker_node("switch_task")
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
