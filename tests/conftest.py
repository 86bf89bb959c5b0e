"""Shared fixtures: one loopback-only Ray for the whole session, a small parallel corpus, and helpers.

Ray is started at most once per test session (it costs seconds), through the same ``ray_session`` the
pipeline uses; the jobs then find it initialised and reuse it. The fixture checks that every listening
socket of the driver and of every process Ray started is bound to a loopback address, and at the end that
no Ray process is left behind.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from prealign.cli import main
from prealign.demo import write_corpus

# Safety net, set before anything can import ray (Ray reads it once, at import): whatever a test does, any
# Ray it starts, in this process or in a child, keeps its services on loopback. The library's own handling
# is tested separately (tests/test_pipeline.py::test_embedded_ray_is_loopback_even_if_ray_was_imported_first).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DEMO_PAIRS = 600
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def psutil_module() -> Any:
    """psutil, which ships inside Ray (``ray/thirdparty_files``): importable once ray is imported."""
    import ray  # noqa: F401  (puts Ray's third-party directory on sys.path)

    return importlib.import_module("psutil")


def is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listening(processes: Iterable[Any]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every listening TCP/UDP-bound inet socket of ``processes``."""
    psutil = psutil_module()
    found = []
    for proc in processes:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):  # TCP listen, bound UDP
                found.append((proc.pid, name, c.laddr.ip, c.laddr.port))
    return found


def assert_loopback_only(sockets: list[tuple[int, str, str, int]]) -> None:
    exposed = [s for s in sockets if not is_loopback(s[2])]
    assert not exposed, f"Ray listens on a non-loopback address: {exposed}"


def alive(pids: dict[int, float]) -> list[int]:
    """Which of ``pids`` (pid -> create_time) still run (a reused pid with another start time does not)."""
    psutil = psutil_module()
    out = []
    for pid, created in pids.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: dict[int, float], timeout: float = 20.0) -> list[int]:
    """Wait until none of ``pids`` runs; returns those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive(pids)
    return left


class RaySession:
    """What the ``ray_local`` fixture yields: the executor and the Ray processes seen so far."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.pids: dict[int, float] = {}

    def processes(self) -> list[Any]:
        """This process's descendants (Ray's gcs_server, raylet, agents, workers); remembers them."""
        psutil = psutil_module()
        procs = psutil.Process().children(recursive=True)
        for p in procs:
            try:
                self.pids[p.pid] = p.create_time()
            except psutil.NoSuchProcess:
                pass
        return procs

    def check_loopback(self) -> None:
        import ray

        node = ray._private.worker.global_worker.node
        assert is_loopback(node.node_ip_address), node.node_ip_address
        psutil = psutil_module()
        sockets = listening([psutil.Process(), *self.processes()])
        assert_loopback_only(sockets)
        gcs_port = int(node.gcs_address.rsplit(":", 1)[1])
        names = {name for _, name, _, port in sockets if port == gcs_port}
        assert names, f"the GCS port {gcs_port} is not among the listening sockets seen: {sockets}"
        assert any(name.startswith("raylet") for _, name, _, _ in sockets), sockets


@pytest.fixture(scope="session")
def ray_local() -> Iterator[RaySession]:
    """Ray started once for the session, on loopback only, with 2 CPUs; shut down (and checked) at the end."""
    from prealign.pipelines.ray_runtime import ray_session

    with ray_session(None, 2) as executor:
        session = RaySession(executor)
        # run tasks first, so that worker processes are up and their sockets are checked too
        assert executor.map(lambda a, b: a**b, [(2, 3), (3, 2)]) == [8, 9]
        session.check_loopback()
        yield session
        session.check_loopback()  # again: workers started by the tests
    import ray

    assert not ray.is_initialized()
    left = wait_gone(session.pids)
    assert not left, f"Ray processes left behind after shutdown: {left}"


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-pair English<TAB>French corpus from the built-in grammar (read-only: copy before changing)."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "demo.en-fr.tsv", DEMO_PAIRS)


@pytest.fixture
def demo_pairs(demo_corpus: Path) -> list[tuple[str, str]]:
    """The demo corpus as (English, French) pairs."""
    return [tuple(line.split("\t")) for line in demo_corpus.read_text(encoding="utf-8").splitlines()]


def files_in(directory: Path) -> list[str]:
    """Names of the files under ``directory`` (recursively, relative), sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def cli(*args: object, code: int = 0) -> Result:
    """Run the command line in process; check the exit code (and, on success, that stderr is quiet)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    if code == 0:
        assert result.stderr == ""
    return result


def mount_tmpfs(mount: Path, size: int | str, read_only: bool = False) -> Path:
    """Mount a real tmpfs of ``size`` (bytes, or "256k") at ``mount`` (created), for disk-full (ENOSPC) tests;
    skips the test where this process may not mount (not root, or a sandbox without CAP_SYS_ADMIN). A read-only
    one refuses writes even to root (EROFS), where a mode-0555 directory would not. Unmount
    with :func:`unmount`."""
    import subprocess

    mount.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    return mount


def unmount(mount: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


@contextmanager
def tmpfs(mount: Path, size: int | str, read_only: bool = False) -> Iterator[Path]:
    """:func:`mount_tmpfs` for the duration of a ``with`` block."""
    try:
        yield mount_tmpfs(mount, size, read_only)
    finally:
        unmount(mount)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs at a fresh directory (see :func:`mount_tmpfs`)."""
    with tmpfs(tmp_path / "small-disk", "256k") as mount:
        yield mount


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny matrices: one torch thread is several times faster than two, above all on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shard_rows(out: Path) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Every row of a shard directory, in order: input_ids, labels and switched, as lists."""
    from prealign.shards import MANIFEST, read_rows

    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    ids, labels, switched = [], [], []
    for entry in manifest["shards"]:
        rows = read_rows(out / entry["file"], entry["rows"])
        for r in range(len(rows)):
            lo, hi = rows.offsets[r], rows.offsets[r + 1]
            ids.append(rows.input_ids[lo:hi].tolist())
            labels.append(rows.labels[lo:hi].tolist())
            switched.append(rows.switched[lo:hi].tolist())
    return ids, labels, switched


def lexicon_frame(rows: list[tuple[str, str, float, float]], count: int = 10) -> Any:
    """A lexicon of (src, tgt, p(tgt|src), score) rows with the exact columns and dtypes of LEXICON_SCHEMA."""
    import polars as pl

    from prealign.lexicon.score import LEXICON_SCHEMA

    return pl.DataFrame(
        {
            "src": [r[0] for r in rows],
            "tgt": [r[1] for r in rows],
            "count": [count] * len(rows),
            "p_tgt_given_src": [r[2] for r in rows],
            "p_src_given_tgt": [0.5] * len(rows),
            "score": [r[3] for r in rows],
        },
        schema=LEXICON_SCHEMA,
    )


def one_error_line(result: Result, *needles: str) -> str:
    """The one line ``error: ...`` a command printed on stderr with exit code 2, checked to hold each needle."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# a pair long enough (35 + 35 tokens) that one changed word leaves it a near duplicate
LONG_EN = (
    "On the first warm morning of the long summer the old fisherman carefully walked down to the quiet "
    "harbour with his grandson , and together they repaired the torn nets before the sun rose ."
)
LONG_FR = (
    "Le premier matin chaud du long été , le vieux pêcheur descendit prudemment au port tranquille avec "
    "son petit-fils , et ensemble ils réparèrent les filets déchirés avant le lever du soleil ."
)
