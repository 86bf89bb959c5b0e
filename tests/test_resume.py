"""Resume after ``kill -9``: a real subprocess is stopped at a named point (``prealign.pipelines.faults``), killed
with SIGKILL and started again with the same arguments, several times over. The result must be byte-identical
to an uninterrupted run, finished shards must never be rewritten, a half-written file never taken for a
finished one, and a resumed run must do only the work that was left (counted in process, where a job is
interrupted by an exception at the same points). Resume on a Ray cluster is in tests/test_cluster.py."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import cli, psutil_module, wait_gone
from test_switch_job import Assets, sentences

import prealign.pipelines.extract as extract
import prealign.pipelines.switch_job as switch_pipeline
from prealign.lexicon import builtin_aligner
from prealign.pipelines import faults
from prealign.pipelines.workdir import JOURNAL, LOCK, WorkDir, read_journal

# The command line in a child process, with the batch sizes made small and the parallel stages counted: a run
# that ends normally prints "CALLS {...}" on stderr (how often each stage's unit of work ran in this process).
RUNNER = """
import atexit, functools, json, os, sys
import prealign.lexicon.builtin_aligner as aligner
import prealign.pipelines.extract as extract
import prealign.pipelines.switch_job as switch

extract.READ_BATCH = int(sys.argv.pop(1))
switch.DOC_BATCH = int(sys.argv.pop(1))
calls = {"prepare": 0, "estep": 0, "switch": 0}

def counted(name, func):
    @functools.wraps(func)
    def run(*args):
        calls[name] += 1
        return func(*args)
    return run

if os.environ.get("TEST_CHUNK_SENTENCES"):  # EM chunks of that many sentences
    bounds = aligner.chunk_bounds
    aligner.chunk_bounds = lambda n, size: bounds(n, int(os.environ["TEST_CHUNK_SENTENCES"]))
extract.prepare_batch = counted("prepare", extract.prepare_batch)
aligner._chunk_counts = counted("estep", aligner._chunk_counts)
switch.switch_task = counted("switch", switch.switch_task)
atexit.register(lambda: print("CALLS " + json.dumps(calls), file=sys.stderr))
from prealign.cli import main
sys.argv[0] = "prealign-data"
main()
"""
READ_BATCH, DOC_BATCH = 100, 40


def run(args: list[Any], tmp: Path, pause: str | None = None, env: dict[str, str] | None = None) -> dict[str, int]:
    """Run the command in a child; with ``pause``, kill it with SIGKILL once it stops there (and check that
    every process it started dies with it). Returns the stage counts of a run that ended normally."""
    flag = tmp / "paused"
    flag.unlink(missing_ok=True)
    child_env = {**os.environ, **(env or {})}
    if pause:
        child_env.update({faults.PAUSE: pause, faults.PAUSE_FILE: str(flag)})
    cmd = [sys.executable, "-c", RUNNER, str(READ_BATCH), str(DOC_BATCH), *map(str, args)]
    proc = subprocess.Popen(cmd, env=child_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        if pause is None:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            return json.loads(re.findall(r"^CALLS (.*)$", err, re.MULTILINE)[-1])
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert proc.poll() is None, f"ended before reaching {pause}: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, f"never reached {pause}"
            time.sleep(0.05)
        psutil = psutil_module()
        family = {p.pid: (p.create_time(), p.name()) for p in psutil.Process(proc.pid).children(recursive=True)}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        stop_family(family)
        return {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Ray's per-node agents outlive a killed embedded Ray by a minute or two before they exit on their own
LINGERING = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def stop_family(family: dict[int, tuple[float, str]]) -> None:
    """After the driver's SIGKILL: its Ray (raylet, GCS, workers) must die with it; the agents that linger
    are killed here, so that the test leaves nothing behind."""
    psutil = psutil_module()
    core = {pid: c for pid, (c, name) in family.items() if name not in LINGERING}
    assert not wait_gone(core, timeout=20), [family[pid] for pid in wait_gone(core, timeout=0)]
    for pid in [pid for pid, (_, name) in family.items() if name in LINGERING]:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert not wait_gone({pid: c for pid, (c, _) in family.items()}, timeout=20)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


# --- switch ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def switch_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], dict[str, bytes]]:
    root = tmp_path_factory.mktemp("resume-switch")
    assets = Assets(root)
    corpus = root / "docs.txt"
    corpus.write_text("\n".join(sentences(400, 9)) + "\n", encoding="utf-8")
    args = ["switch", corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer, "--ratio", 0.3,
            "--seq-len", 15, "--shard-rows", 8, "-q"]  # fmt: skip
    reference = root / "reference"
    cli(*args, "-o", reference, "--workers", 0)
    files = snapshot(reference)
    assert len(files) > 25  # many shards, and batches of 40 documents end inside shards
    return args, files


def test_switch_killed_again_and_again_ends_identical(switch_setup, tmp_path: Path) -> None:
    args, reference = switch_setup
    out = tmp_path / "shards"
    work = out / ".work"
    kept: dict[str, tuple[int, int]] = {}  # every shard journaled so far, and its inode and mtime
    # killed after its first shard; restarted, killed after 9 more; restarted, killed while moving the shards
    for point in ("switch-shard:1", "switch-shard:9", "switch-commit:4"):
        run([*args, "-o", out, "--workers", 0], tmp_path, pause=point)
        journal = read_journal(work)
        committing = any("commit" in e for e in journal)
        finished = [e["shard"]["file"] for e in journal if "shard" in e]
        where = {f: out / f if (out / f).exists() else work / f for f in finished}
        assert committing == (point == "switch-commit:4") == any(p.parent == out for p in where.values())
        for f, path in where.items():  # a finished shard is never written again, only moved into place
            assert kept.setdefault(f, identity(path)) == identity(path), f"{f} was rewritten"
        if point == "switch-shard:9":
            assert len(finished) == 10
            # the shard being written when the job died: a temporary file, and a complete-looking file not yet
            # journaled; neither may be taken for finished
            nxt = f"shard-{len(finished):05d}.arrow"
            (work / f".{nxt}.x1y2.tmp").write_bytes(b"half a shard")
            (work / nxt).write_bytes(b"not a finished shard")
    counts = run([*args, "-o", out, "--workers", 0], tmp_path)
    assert counts["switch"] == 0  # killed after the last batch: nothing left to switch, only shards to move
    assert snapshot(out) == reference  # the manifest and every shard, byte for byte; no work directory left
    for f, ident in kept.items():
        assert identity(out / f) == ident, f"{f} was rewritten"


class Interrupted(BaseException):
    """What the injected stop raises (like KeyboardInterrupt: not an input error, so the work is kept)."""


def stop_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """In this process: the job raises :class:`Interrupted` the N-th time it reaches ``POINT:N``."""
    name, _, nth = point.partition(":")
    seen = {"n": 0}

    def reached(at: str) -> None:
        if at == name:
            seen["n"] += 1
            if seen["n"] == int(nth or 1):
                raise Interrupted(point)

    monkeypatch.setattr(faults, "reached", reached)


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Calls to ``module.name`` from now on (one entry each)."""
    calls: list[int] = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    return calls


def interrupted(monkeypatch: pytest.MonkeyPatch, point: str, *args: Any) -> None:
    with monkeypatch.context() as m:
        stop_at(m, point)
        with pytest.raises(Interrupted):
            cli(*args)


def test_switch_restart_switches_from_the_last_shards_batch(switch_setup, tmp_path, monkeypatch) -> None:
    args, reference = switch_setup
    out = tmp_path / "shards"
    monkeypatch.setattr(switch_pipeline, "DOC_BATCH", DOC_BATCH)
    interrupted(monkeypatch, "switch-shard:20", *args, "-o", out, "--workers", 0)
    restart = [e["resume"] for e in read_journal(out / ".work") if "resume" in e][-1]
    assert restart["doc"] % DOC_BATCH == 0 and restart["doc"] > 0 and restart["skip"] > 0
    calls = counting(monkeypatch, switch_pipeline, "switch_task")
    cli(*args, "-o", out, "--workers", 0)
    assert len(calls) == -(-(400 - restart["doc"]) // DOC_BATCH) < 400 // DOC_BATCH
    assert snapshot(out) == reference


def test_switch_with_other_arguments_starts_afresh(switch_setup, tmp_path, monkeypatch) -> None:
    args, _ = switch_setup
    out = tmp_path / "shards"
    interrupted(monkeypatch, "switch-shard:5", *args, "-o", out, "--workers", 0)
    assert len([e for e in read_journal(out / ".work") if "shard" in e]) == 5
    other = [a if a != 0.3 else 0.6 for a in args]
    cli(*other, "-o", out, "--workers", 0)
    fresh = tmp_path / "fresh"
    cli(*other, "-o", fresh, "--workers", 0)
    assert snapshot(out) == snapshot(fresh)


# --- extract-lexicon and align -----------------------------------------------------------------------------------

EXTRACT = ["extract-lexicon", "-q", "--src-lang", "en", "--tgt-lang", "fr", "--ibm1-iterations", 2]
EXTRACT += ["--hmm-iterations", 2]


@pytest.fixture(scope="module")
def extract_reference(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume-extract")
    out = root / "lex.parquet"
    cli(*EXTRACT, demo_corpus, "-o", out, "--links", root / "links.txt", "--workers", 0)
    return {"lexicon": out.read_bytes(), "links": (root / "links.txt").read_bytes(), "stats": stats(out)}


def stats(lexicon: Path) -> dict[str, Any]:
    saved = json.loads(lexicon.with_name(lexicon.name + ".stats.json").read_text("utf-8"))
    del saved["seconds"]
    return saved


def test_extract_killed_again_and_again_does_only_the_rest(
    demo_corpus: Path, extract_reference: dict[str, Any], tmp_path: Path
) -> None:
    out, links = tmp_path / "lex.parquet", tmp_path / "links.txt"
    args = [*EXTRACT, demo_corpus, "-o", out, "--links", links, "--workers", 0]
    work = tmp_path / "lex.parquet.work"
    # killed after two read batches; restarted, killed once the corpus is written; restarted, killed after its
    # first EM iteration (the first of the schedule); restarted, killed after its first (the second)
    run(args, tmp_path, pause="extract-batch:2")
    assert [e["batch"] for e in read_journal(work) if "batch" in e] == [0, 1]
    first = {p.name: identity(p) for p in work.glob("batch-*.npz") if p.name < "batch-00002"}
    run(args, tmp_path, pause="extract-corpus")
    batches = {p.name: identity(p) for p in work.glob("batch-*.npz")}
    assert len(batches) == 6 and {k: batches[k] for k in first} == first  # journaled batches kept as they were
    for saved in ([1], [1, 2]):
        run(args, tmp_path, pause="em-iteration:1")
        assert [e["em"] for e in read_journal(work) if "em" in e] == saved
        assert sorted(p.name for p in work.glob("em-*.npz")) == [f"em-{saved[-1]:03d}.npz"]
        assert {p.name: identity(p) for p in work.glob("batch-*.npz")} == batches  # the read stage not redone
        assert not out.exists() and not links.exists()  # nothing beside the output before the end
    counts = run(args, tmp_path)
    assert counts == {"prepare": 0, "estep": 2, "switch": 0}  # two iterations were left
    assert out.read_bytes() == extract_reference["lexicon"]
    assert links.read_bytes() == extract_reference["links"]
    assert stats(out) == extract_reference["stats"]
    assert not work.exists()


@pytest.mark.parametrize(
    ("point", "left"),
    [("extract-batch:4", {"prepare": 2, "estep": 4}), ("em-iteration:3", {"prepare": 0, "estep": 1})],
)
def test_extract_restart_does_only_what_is_left(
    demo_corpus, extract_reference, point: str, left: dict[str, int], tmp_path, monkeypatch
) -> None:
    out = tmp_path / "lex.parquet"
    args = [*EXTRACT, demo_corpus, "-o", out, "--links", tmp_path / "links.txt", "--workers", 0]
    monkeypatch.setattr(extract, "READ_BATCH", READ_BATCH)  # 6 batches of 100 pairs
    interrupted(monkeypatch, point, *args)
    assert (tmp_path / "lex.parquet.work" / JOURNAL).is_file() and not out.exists()
    prepared = counting(monkeypatch, extract, "prepare_batch")
    esteps = counting(monkeypatch, builtin_aligner, "_chunk_counts")
    cli(*args)
    assert {"prepare": len(prepared), "estep": len(esteps)} == left  # 2 + 2 iterations in all
    assert out.read_bytes() == extract_reference["lexicon"]
    assert (tmp_path / "links.txt").read_bytes() == extract_reference["links"]
    assert stats(out) == extract_reference["stats"]


def test_extract_with_other_arguments_starts_afresh(demo_corpus, tmp_path, monkeypatch) -> None:
    out = tmp_path / "lex.parquet"
    monkeypatch.setattr(extract, "READ_BATCH", READ_BATCH)
    interrupted(monkeypatch, "em-iteration:2", *EXTRACT, demo_corpus, "-o", out, "--workers", 0)
    other = [*EXTRACT[:-1], 1]  # one HMM iteration instead of two
    prepared = counting(monkeypatch, extract, "prepare_batch")
    cli(*other, demo_corpus, "-o", out, "--workers", 0)
    assert len(prepared) == 6  # everything read again
    cli(*other, demo_corpus, "-o", tmp_path / "fresh.parquet", "--workers", 0)
    assert out.read_bytes() == (tmp_path / "fresh.parquet").read_bytes()


def test_a_second_run_of_a_running_job_is_refused(demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.parquet"
    work = tmp_path / "lex.parquet.work"
    work.mkdir()
    (work / JOURNAL).write_text('{"fingerprint": "the running one"}\n{"batch": 0}\n', encoding="utf-8")
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT)
    before = snapshot(work)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for command in (EXTRACT, ["align"]):
            result = cli(*command, demo_corpus, "-o", out, "--workers", 0, code=2)
            assert "another run of this job" in result.stderr and str(work) in result.stderr
            assert snapshot(work) == before  # the running job's work is left alone
    finally:
        os.close(fd)
    assert not out.exists()


def test_journal_stops_at_a_torn_line(tmp_path: Path) -> None:
    work = WorkDir(tmp_path / "w", "abc")
    with work.session():
        work.record({"batch": 0})
        work.record({"batch": 1})
    with open(tmp_path / "w" / JOURNAL, "ab") as fh:
        fh.write(b'{"batch": 2, "rea')  # killed in mid-write
    assert read_journal(tmp_path / "w") == [{"fingerprint": "abc"}, {"batch": 0}, {"batch": 1}]
    with work.session():
        assert [e["batch"] for e in work.all("batch")] == [0, 1]
    other = WorkDir(tmp_path / "w", "another job")
    with other.session():
        assert other.events == [] and not other.resumed
        assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [JOURNAL, LOCK]
