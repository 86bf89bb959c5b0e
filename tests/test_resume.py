"""Resume after ``kill -9``: a real subprocess is stopped at a named point (``prealign.pipelines.faults``), killed
with SIGKILL and started again with the same arguments, several times over. The result must be byte-identical
to an uninterrupted run, finished files never rewritten, a half-written file never taken for a finished one,
and a resumed run must do only the work that was left (its tasks counted in the child, which runs them in
process). Resume on a Ray cluster is in tests/test_cluster.py."""

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

import prealign.pipelines.corpus_stages as corpus_stages
import prealign.pipelines.dedup_stage as dedup_stage
import prealign.pipelines.extract as extract
import prealign.pipelines.switch_job as switch_pipeline
from prealign.pipelines import faults
from prealign.pipelines.workdir import JOURNAL, LOCK, WorkDir, read_journal

# The command line in a child process, with the batch sizes made small and the stages' tasks counted: a run that
# ends normally prints "CALLS {...}" on stderr (how often each task function ran in this process: all of them
# with --workers 0, none on Ray). TEST_CHUNK_SENTENCES, TEST_SHARD_ROWS and TEST_SHARD_PAIRS make EM chunks,
# dedup shards and M-step shards small.
RUNNER = """
import atexit, collections, dataclasses, functools, json, os, sys
import prealign.cli as cli
import prealign.pipelines.corpus_stages as corpus_stages
import prealign.pipelines.em_stage as em_stage
import prealign.pipelines.extract as extract
import prealign.pipelines.stages as stages
import prealign.pipelines.switch_job as switch

corpus_stages.READ_BATCH = extract.READ_BATCH = int(sys.argv.pop(1))
switch.DOC_BATCH = int(sys.argv.pop(1))
corpus_stages.SHARD_ROWS = int(os.environ.get("TEST_SHARD_ROWS", corpus_stages.SHARD_ROWS))
em_stage.SHARD_PAIRS = int(os.environ.get("TEST_SHARD_PAIRS", em_stage.SHARD_PAIRS))
calls = collections.Counter(switch=0)

if os.environ.get("TEST_CHUNK_SENTENCES"):  # EM chunks of that many sentences (no option sets it)
    job_fields = cli._job_fields

    def small_chunks(kw):
        fields = job_fields(kw)
        size = int(os.environ["TEST_CHUNK_SENTENCES"])
        return {**fields, "aligner": dataclasses.replace(fields["aligner"], chunk_sentences=size)}

    cli._job_fields = small_chunks

checked = stages.run_task

@functools.wraps(checked)
def counted_task(work, func, *args):
    calls[func.__name__] += 1
    return checked(work, func, *args)

switch_task = switch.switch_task

@functools.wraps(switch_task)
def counted_switch(*args):
    calls["switch"] += 1
    return switch_task(*args)

stages.run_task = counted_task
switch.switch_task = counted_switch
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
# On the 600-pair demo corpus: 6 read batches of 100 pairs, 2 exact and 11 near dedup shards, 4 EM chunks of
# 150 pairs, 3 M-step shards a direction
SMALL = {"TEST_CHUNK_SENTENCES": "150", "TEST_SHARD_ROWS": "500", "TEST_SHARD_PAIRS": "4000"}
# the files that say a task is done, by task function (the E-step and M-step: see done_tasks)
DONE = {
    "prepare_task": "prepare/batch-?????.npz",
    "exact_task": "dedup/exact-???.npy",
    "near_task": "dedup/near-???.npy",
    "resolve_task": "dedup/dropped.npz",
    "local_task": "encode/local-?????.npz",
    "vocab_task": "encode/vocab.npz",
    "chunk_task": "encode/chunk-?????.npz",
    "plan_task": "em/plan-?-???.npz",
    "decode_task": "count/chunk-?????.npz",
}
TASKS = [*DONE, "estep_task", "mstep_task"]


@pytest.fixture(scope="module")
def extract_reference(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume-extract")
    out = root / "lex.parquet"
    calls = run([*EXTRACT, demo_corpus, "-o", out, "--links", root / "links.txt", "--workers", 0], root, env=SMALL)
    expected = {"prepare_task": 6, "exact_task": 2, "near_task": 11, "resolve_task": 1, "local_task": 6}
    expected |= {"vocab_task": 1, "chunk_task": 4, "plan_task": 6, "estep_task": 4 * 4, "mstep_task": 6 * 4}
    assert ran(calls) == {**expected, "decode_task": 4}
    return {
        "lexicon": out.read_bytes(),
        "links": (root / "links.txt").read_bytes(),
        "stats": stats(out),
        "calls": calls,
    }


def stats(lexicon: Path) -> dict[str, Any]:
    """The stats JSON but for what may differ between runs: times, memory, the record of the outputs, and where
    it ran and what its work directory held (a resumed run's differs)."""
    saved = json.loads(lexicon.with_name(lexicon.name + ".stats.json").read_text("utf-8"))
    for key in ("seconds", "memory_mib", "job"):
        del saved[key]
    for key in ("ran_on", "work_dir_mib"):
        saved.pop(key, None)
    return saved


def ran(calls: dict[str, int]) -> dict[str, int]:
    """How many tasks of each function a run printed it ran."""
    return {name: calls.get(name, 0) for name in TASKS}


def last_iteration(work: Path) -> int:
    """The last EM iteration whose parameters were saved (0: none)."""
    return max((int(p.parent.name[3:]) for p in work.glob("em/it-*/params.npz")), default=0)


def done_tasks(work: Path, totals: dict[str, int]) -> dict[str, int]:
    """How many tasks of each function the files in ``work`` say are done (``totals``: an uninterrupted run's)."""
    done = {name: len(list(work.glob(pattern))) for name, pattern in DONE.items()}
    last = last_iteration(work)
    current = work / "em" / f"it-{last + 1:03d}"  # the iteration under way, if any
    done["estep_task"] = last * totals["chunk_task"] + len(list(current.glob("counts-?????.npz")))
    done["mstep_task"] = last * totals["plan_task"] + len(list(current.glob("table-?-???.npy")))
    return done


def identities(work: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every file under ``work``, by relative path."""
    return {str(p.relative_to(work)): identity(p) for p in sorted(work.rglob("*")) if p.is_file()}


def check_kept(before: dict[str, tuple[int, int]], work: Path) -> dict[str, tuple[int, int]]:
    """Every file of ``before`` (an earlier kill's) is still there unchanged, but the EM iterations before the
    last one saved (removed once the next is saved); returns the files now."""
    now = identities(work)
    last = last_iteration(work)
    gone = [f for f in before if f not in now]
    assert all(re.fullmatch(r"em/it-(\d{3})/.*", f) and int(f[6:9]) < last for f in gone), gone
    rewritten = [f for f in before if f in now and now[f] != before[f]]
    assert rewritten == [], f"finished files written again: {rewritten}"
    return now


def check_result(out: Path, links: Path, reference: dict[str, Any]) -> None:
    assert out.read_bytes() == reference["lexicon"]
    assert links.read_bytes() == reference["links"]
    assert stats(out) == reference["stats"]
    assert not out.with_name(out.name + ".work").exists()


@pytest.mark.parametrize(
    ("point", "stage"),
    [
        ("stage-prepare:2", "prepare_task"),
        ("stage-dedup_near:2", "near_task"),
        ("stage-encode_chunks:1", "chunk_task"),
        ("stage-em_estep:5", "estep_task"),  # in the second iteration
        ("stage-em_mstep:2", "mstep_task"),  # in the first iteration
        ("em-iteration:1", "estep_task"),
        ("stage-decode_count:1", "decode_task"),
    ],
)
def test_extract_killed_at_any_point_does_only_the_rest(
    demo_corpus: Path, extract_reference: dict[str, Any], point: str, stage: str, tmp_path: Path
) -> None:
    out, links = tmp_path / "lex.parquet", tmp_path / "links.txt"
    args = [*EXTRACT, demo_corpus, "-o", out, "--links", links, "--workers", 0]
    work = tmp_path / "lex.parquet.work"
    totals = extract_reference["calls"]
    run(args, tmp_path, pause=point, env=SMALL)
    assert read_journal(work)[0]["fingerprint"] and not out.exists() and not links.exists()
    done = done_tasks(work, totals)
    assert 0 < done[stage] < totals[stage], done  # killed in the middle of the job
    per_round = {"estep_task": totals["chunk_task"], "mstep_task": totals["plan_task"]}.get(stage, totals[stage])
    if point.startswith("stage-"):  # ... and of a stage (of an EM iteration's stage): some of its tasks done
        assert done[stage] % per_round != 0, done
    else:  # between two iterations
        assert done["estep_task"] % per_round == 0 and done["mstep_task"] == totals["plan_task"], done
    calls = run(args, tmp_path, env=SMALL)
    assert ran(calls) == {name: totals[name] - done[name] for name in TASKS}
    check_result(out, links, extract_reference)


def test_extract_killed_again_and_again_never_rewrites_a_finished_file(
    demo_corpus: Path, extract_reference: dict[str, Any], tmp_path: Path
) -> None:
    out, links = tmp_path / "lex.parquet", tmp_path / "links.txt"
    args = [*EXTRACT, demo_corpus, "-o", out, "--links", links, "--workers", 0]
    work = tmp_path / "lex.parquet.work"
    kept: dict[str, tuple[int, int]] = {}
    planted, first = None, []
    # each run resumes the last and is killed a stage further on
    for point in ("stage-prepare:1", "stage-dedup_near:1", "stage-encode_chunks:1", "stage-em_estep:1",
                  "stage-em_mstep:1", "em-iteration:2", "stage-decode_count:1"):  # fmt: skip
        run(args, tmp_path, pause=point, env=SMALL)
        assert not out.exists() and not links.exists()  # nothing beside the output before the end
        kept = check_kept(kept, work)
        estep = sorted(f for f in kept if re.fullmatch(r"em/it-001/counts-\d{5}\.npz", f))
        if point == "stage-em_estep:1":  # in the middle of the first iteration: some of its E-steps done
            assert 0 < len(estep) < 4 and not (work / "em" / "it-001" / "params.npz").exists()
            first = estep
        if point == "stage-em_mstep:1":  # the same iteration resumed: those E-steps kept (check_kept), the rest run
            assert set(first) < set(estep) and len(estep) == 4
        if point == "em-iteration:2":
            assert sorted(f for f in kept if f.endswith("params.npz")) == ["em/it-002/params.npz"]
        if point == "stage-encode_chunks:1":  # what a kill in a chunk's task leaves: a temporary file, and the
            # chunk's EM file complete-looking, its sentences (written last) missing; neither is taken as done
            planted = next(c for c in range(4) if not (work / "encode" / f"chunk-{c:05d}.npz").exists())
            (work / "encode" / f".chunk-{planted:05d}.npz.x1y2.tmp").write_bytes(b"half a chunk")
            (work / "encode" / f"chunk-{planted:05d}.pkl").write_bytes(b"not a finished chunk")
            kept = {f: i for f, i in identities(work).items() if f != f"encode/chunk-{planted:05d}.pkl"}
    assert planted is not None and (work / "encode" / f"chunk-{planted:05d}.npz").is_file()
    assert not (work / "encode" / f"chunk-{planted:05d}.pkl").read_bytes().startswith(b"not")
    totals = extract_reference["calls"]
    done = done_tasks(work, totals)
    assert 0 < done["decode_task"] < 4
    calls = run(args, tmp_path, env=SMALL)
    assert ran(calls) == {name: totals[name] - done[name] for name in TASKS}
    assert sum(ran(calls).values()) == calls["decode_task"]  # only decoding was left
    check_result(out, links, extract_reference)


def test_extract_on_embedded_ray_killed_mid_iteration(
    demo_corpus: Path, extract_reference: dict[str, Any], tmp_path: Path
) -> None:
    # the driver and its embedded Ray are killed with E-steps in flight on Ray's workers; the rerun (on Ray too)
    # keeps every file they finished
    out, links = tmp_path / "lex.parquet", tmp_path / "links.txt"
    args = [*EXTRACT, demo_corpus, "-o", out, "--links", links, "--workers", 2]
    work = tmp_path / "lex.parquet.work"
    run(args, tmp_path, pause="stage-em_estep:1", env=SMALL)
    kept = check_kept({}, work)
    counts = [f for f in kept if re.fullmatch(r"em/it-001/counts-\d{5}\.npz", f)]
    assert counts and "em/it-001/params.npz" not in kept
    run(args, tmp_path, pause="em-iteration:1", env=SMALL)
    assert "em/it-001/params.npz" in check_kept(kept, work)
    run(args, tmp_path, env=SMALL)
    check_result(out, links, extract_reference)


def test_extract_with_other_arguments_starts_afresh(demo_corpus, tmp_path, monkeypatch) -> None:
    out = tmp_path / "lex.parquet"
    for module in (corpus_stages, extract):
        monkeypatch.setattr(module, "READ_BATCH", READ_BATCH)
    interrupted(monkeypatch, "em-iteration:2", *EXTRACT, demo_corpus, "-o", out, "--workers", 0)
    work = tmp_path / "lex.parquet.work"
    assert (work / "em" / "it-002" / "params.npz").is_file()  # interrupted (not bad input): the work is kept
    other = [*EXTRACT[:-1], 1]  # one HMM iteration instead of two
    prepared = counting(monkeypatch, dedup_stage, "prepare_task")
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
