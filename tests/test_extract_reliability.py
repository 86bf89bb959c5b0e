"""extract-lexicon, align, eval-align and eval-lexicon on bad input and faults: reruns, outputs that are inputs,
work directories that are not the job's, very long lines, a full disk, an unreachable cluster."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, cli, tmpfs

from prealign.cli import main
from prealign.pipelines import corpus_stages, dedup_stage, em_stage
from prealign.pipelines.corpus_stages import WORK_DIRS

FAST = ["--workers", 0, "-q", "--ibm1-iterations", 1, "--hmm-iterations", 1]
EXTRACT = ["extract-lexicon", "--src-lang", "en", "--tgt-lang", "fr", *FAST]
ALIGN = ["align", *FAST]


@pytest.fixture
def corpus(demo_corpus: Path, tmp_path: Path) -> Path:
    """A copy of the demo corpus (600 pairs) in this test's directory."""
    copy = tmp_path / "corpus.tsv"
    copy.write_bytes(demo_corpus.read_bytes())
    return copy


def no_work(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make reading the input, and the first stage's tasks, fail loudly: a check that must come first never lets
    them start."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise AssertionError("the job started before its checks")

    monkeypatch.setattr(corpus_stages, "read_parallel", refuse)
    monkeypatch.setattr(dedup_stage, "prepare_task", refuse)
    return calls


def counted(monkeypatch: pytest.MonkeyPatch, module: Any = dedup_stage, name: str = "prepare_task") -> list[Any]:
    """The calls of a stage's task function from now on (the first stage's by default), one entry each."""
    calls: list[Any] = []
    real = getattr(module, name)

    def task(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, name, task)
    return calls


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".work"))


# --- 1. a rerun of a finished job ---------------------------------------------------------------------------


def test_rerun_of_a_finished_extract_is_a_no_op(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out, links = tmp_path / "lex.parquet", tmp_path / "links.txt"
    cli(*EXTRACT, corpus, "-o", out, "--links", links)
    saved = json.loads((tmp_path / "lex.parquet.stats.json").read_text("utf-8"))
    assert set(saved["job"]["sha256"]) == {"-o", "--links"} and len(saved["job"]["fingerprint"]) == 64
    before = (out.stat().st_mtime_ns, out.read_bytes(), links.read_bytes())
    calls = counted(monkeypatch)
    result = cli(*EXTRACT, corpus, "-o", out, "--links", links)
    assert result.stdout == f"extract-lexicon: already done (same inputs and options) -> {out}\n"
    assert calls == [] and (out.stat().st_mtime_ns, out.read_bytes(), links.read_bytes()) == before


def test_another_runs_output_needs_overwrite(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "lex.parquet"
    cli(*EXTRACT, corpus, "-o", out)
    before = out.read_bytes()
    calls = no_work(monkeypatch)
    result = cli(*EXTRACT, "--min-count", 3, corpus, "-o", out, code=2)  # other options
    assert result.stderr == f"error: {out}: -o exists (another run's output, or changed since): pass --overwrite " \
        "to replace it\n"  # fmt: skip
    out.write_bytes(before + b"x")  # the same job, but its output changed since
    assert "--overwrite" in cli(*EXTRACT, corpus, "-o", out, code=2).stderr
    assert calls == [] and out.read_bytes() == before + b"x"
    monkeypatch.undo()
    cli(*EXTRACT, "--min-count", 3, corpus, "-o", out, "--overwrite")
    assert out.read_bytes() != before + b"x"
    assert "already done" in cli(*EXTRACT, "--min-count", 3, corpus, "-o", out).stdout


def test_rerun_of_a_finished_align_is_a_no_op(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "links.txt"
    cli(*ALIGN, corpus, "-o", out)
    record = json.loads((tmp_path / "links.txt.stats.json").read_text("utf-8"))
    assert record["pairs"] == 600 and record["max_words"] == 200 and record["over_max_words"] == 0
    assert set(record["job"]["sha256"]) == {"-o"}
    calls = counted(monkeypatch)
    assert cli(*ALIGN, corpus, "-o", out).stdout == f"align: already done (same inputs and options) -> {out}\n"
    assert calls == []
    assert "pass --overwrite" in cli(*ALIGN, "--symmetrize", "union", corpus, "-o", out, code=2).stderr
    assert calls == []
    cli(*ALIGN, "--symmetrize", "union", corpus, "-o", out, "--overwrite")
    assert len(calls) == 1


def test_rerun_removes_temporary_files_a_killed_write_left(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.tsv"
    left = [tmp_path / f".lex.tsv{name}.tmp" for name in (".k1ll3d", ".stats.json.x_y", ".meta.json.a")]
    other = tmp_path / ".someone-else.abc.tmp"
    for p in [*left, other]:
        p.write_bytes(b"half")
    cli(*EXTRACT, corpus, "-o", out)
    assert [p for p in left if p.exists()] == [] and other.exists()


# --- 2. checks before the work --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{t}/lex.csv"], "{t}/lex.csv: unsupported lexicon format '.csv'"),
        (["-o", "{t}/lex.parquet", "--links", "{t}/afile/links.txt"], "{t}/afile/links.txt: cannot create it"),
        (["-o", "{t}/ro/lex.parquet"], "{t}/ro/lex.parquet: permission denied"),
    ],
)
def test_extract_checks_its_outputs_before_any_work(corpus, tmp_path, monkeypatch, args, message) -> None:
    (tmp_path / "afile").write_text("a file", encoding="utf-8")
    calls = no_work(monkeypatch)
    args = [a.replace("{t}", str(tmp_path)) for a in args]
    if os.geteuid() == 0:  # root writes into a mode-0555 directory: a read-only file system refuses even root
        with tmpfs(tmp_path / "ro", "64k", read_only=True):
            result = cli(*EXTRACT, corpus, *args, code=2)
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        result = cli(*EXTRACT, corpus, *args, code=2)
    assert result.stderr.startswith("error: " + message.replace("{t}", str(tmp_path)))
    assert result.stderr.count("\n") == 1 and calls == [] and leftovers(tmp_path) == []


# --- 3. an output that is an input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "outputs", "named"),
    [
        (EXTRACT, ["-o", "corpus.tsv"], "-o"),
        (EXTRACT, ["-o", "lex.parquet", "--links", "corpus.tsv"], "--links"),
        (EXTRACT, ["-o", "lex.tsv", "--links", "lex.tsv"], "-o and --links"),
        (EXTRACT, ["-o", "hard.tsv"], "-o"),
        (EXTRACT, ["-o", "soft.tsv"], "-o"),
        (ALIGN, ["-o", "corpus.tsv"], "-o"),
        (ALIGN, ["-o", "hard.tsv"], "-o"),
        (ALIGN, ["-o", "soft.tsv"], "-o"),
        (ALIGN, ["-o", "corpus"], "the record"),  # corpus.stats.json is the input
        (EXTRACT, ["-o", "corpus"], "the stats"),  # corpus.tsv.stats.json is the input
        (EXTRACT, ["-o", "corpus"], "the metadata"),  # corpus.tsv.meta.json is the input
    ],
)
def test_an_output_that_is_an_input_is_refused(corpus, tmp_path, monkeypatch, command, outputs, named) -> None:
    os.link(corpus, tmp_path / "hard.tsv")
    (tmp_path / "soft.tsv").symlink_to(corpus)
    source = corpus
    if named.startswith("the "):  # the input is named like the file the job writes beside -o
        sidecar = {"the record": ".stats.json", "the stats": ".tsv.stats.json", "the metadata": ".tsv.meta.json"}
        source = corpus.rename(tmp_path / f"corpus{sidecar[named]}")
        outputs = ["-o", "corpus" if command is ALIGN else "corpus.tsv"]
    before = source.read_bytes()
    calls = no_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    result = cli(*command, source.name, *outputs, code=2)
    assert result.stderr.count("\n") == 1 and f"{named} " in result.stderr, result.stderr
    assert calls == [] and source.read_bytes() == before and leftovers(tmp_path) == []


# --- 4. work directories ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [EXTRACT, ALIGN])
def test_a_work_directory_that_is_a_symlink_is_refused(corpus, tmp_path, monkeypatch, command) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me", encoding="utf-8")
    out = tmp_path / ("out.parquet" if command is EXTRACT else "out.txt")
    Path(f"{out}.work").symlink_to(victim)
    calls = no_work(monkeypatch)
    result = cli(*command, corpus, "-o", out, code=2)
    assert result.stderr == f"error: {out}.work: the work directory is a symbolic link: remove it (nothing was " \
        "deleted)\n"  # fmt: skip
    assert calls == [] and [p.name for p in victim.iterdir()] == ["precious.txt"] and not out.exists()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "file in a stage directory"])
def test_a_work_directory_holding_other_files_is_refused(corpus, tmp_path, monkeypatch, kind: str) -> None:
    out = tmp_path / "out.parquet"
    work = tmp_path / "out.parquet.work"
    (work / "prepare").mkdir(parents=True)
    (work / "prepare" / "batch-00000.npz").write_bytes(b"looks like the job's")
    if kind == "file":
        name = "notes.txt"
        (work / name).write_text("mine", encoding="utf-8")
    elif kind == "directory":  # not one of the stage directories
        name = "mydata"
        (work / name).mkdir()
        (work / name / "precious.txt").write_text("mine", encoding="utf-8")
    elif kind == "file in a stage directory":  # the stage directory is not the job's to empty either
        name = "prepare"
        (work / "prepare" / "notes.txt").write_text("mine", encoding="utf-8")
    else:  # a symbolic link where a stage directory would be
        name = "em"
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "precious.txt").write_text("mine", encoding="utf-8")
        (work / name).symlink_to(tmp_path / "elsewhere")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    calls = no_work(monkeypatch)
    for command in (EXTRACT, ALIGN):
        result = cli(*command, corpus, "-o", out, code=2)
        assert f"holds files this job did not make ({name})" in result.stderr and result.stderr.count("\n") == 1
    assert calls == [] and sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_a_work_directory_of_another_run_loses_only_the_jobs_files(corpus, tmp_path) -> None:
    out = tmp_path / "out.parquet"
    work = tmp_path / "out.parquet.work"
    work.mkdir()
    (work / "journal.jsonl").write_text('{"fingerprint": "another job"}\n{"batch": 0}\n', encoding="utf-8")
    (work / "lock").write_bytes(b"")
    for name in (
        "batch-00000.npz",  # what versions before the stages left: cleared too
        "em-001.npz",
        "vocabulary.npz",
        "prepare/batch-00000.npz",
        "prepare/batch-00000.sig.npy",
        "prepare/.batch-00001.npz.abc.tmp",
        "dedup/near-000.npy",
        "encode/vocab.npz",
        "em/it-001/params.npz",
        "em/it-002/counts-00000.npy",
        "count/chunk-00000.npz",
    ):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(b"stale")
    assert {p.name for p in work.iterdir() if p.is_dir()} == set(WORK_DIRS)
    cli(*EXTRACT, corpus, "-o", out)
    assert out.is_file() and not work.exists()


def test_bad_input_late_in_the_file_removes_the_work(corpus, tmp_path, monkeypatch) -> None:
    lines = corpus.read_text("utf-8").splitlines()
    lines[549] = lines[549].replace("\t", " ")  # no tab: not a pair
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(corpus_stages, "READ_BATCH", 100)
    prepared = counted(monkeypatch)
    for command, out in ((EXTRACT, tmp_path / "lex.parquet"), (ALIGN, tmp_path / "links.txt")):
        prepared.clear()
        result = cli(*command, corpus, "-o", out, code=2)
        assert result.stderr.startswith(f"error: {corpus}:550: no tab separator"), result.stderr
        assert result.stderr.count("\n") == 1
        assert len(prepared) == 5  # the batches before the bad line were prepared in the work directory...
        assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.tsv"]  # ... which is gone with it


def test_a_failure_that_is_not_bad_input_keeps_the_work(corpus, tmp_path, monkeypatch) -> None:
    out = tmp_path / "lex.parquet"
    work = tmp_path / "lex.parquet.work"
    monkeypatch.setattr(corpus_stages, "READ_BATCH", 100)
    real = em_stage.estep_task

    def broken(*args: Any) -> Any:
        if args[1] == 1:  # the second iteration's E-steps (of iteration 1's parameters)
            raise RuntimeError("a worker's bug")
        return real(*args)

    monkeypatch.setattr(em_stage, "estep_task", broken)
    with pytest.raises(RuntimeError, match="a worker's bug"):
        cli(*EXTRACT[:-2], "--hmm-iterations", 2, corpus, "-o", out)
    assert not out.exists() and (work / "em" / "it-001" / "params.npz").is_file()
    assert {p.name for p in work.iterdir() if p.is_dir()} == set(WORK_DIRS)
    monkeypatch.setattr(em_stage, "estep_task", real)
    prepared = counted(monkeypatch)
    esteps = counted(monkeypatch, em_stage, "estep_task")
    cli(*EXTRACT[:-2], "--hmm-iterations", 2, corpus, "-o", out)  # resumed: read and iteration 1 not done again
    assert prepared == [] and len(esteps) == 2
    assert out.is_file() and not work.exists()


# --- 5. very long lines ------------------------------------------------------------------------------------------


def long_line_corpus(tmp_path: Path) -> Path:
    """Two ordinary pairs around one of 5 MB a side (about 1 M words)."""
    words = ("word " * 1_000_000).strip()
    path = tmp_path / "long.txt"
    path.write_text(f"the cat ||| le chat\n{words} ||| {words}\nthe dog ||| le chien\n", encoding="utf-8")
    return path


def peak_rss_growth(run) -> tuple[Any, float]:
    """What ``run()`` returns, and how far (MB) it raised this process's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = run()
    return out, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def test_a_5mb_line_is_dropped_without_its_grid(tmp_path: Path) -> None:
    corpus = long_line_corpus(tmp_path)
    out = tmp_path / "lex.parquet"
    started = time.monotonic()
    _, grown = peak_rss_growth(lambda: cli(*EXTRACT, corpus, "-o", out, "--min-count", 1))
    assert time.monotonic() - started < 60 and grown < 1500, grown
    stats = json.loads((tmp_path / "lex.parquet.stats.json").read_text("utf-8"))
    assert stats["pairs"]["too_long"] == 1 and stats["pairs"]["kept"] == 2


def test_align_leaves_over_long_pairs_unaligned(tmp_path: Path) -> None:
    corpus = long_line_corpus(tmp_path)
    out = tmp_path / "links.txt"
    result, grown = peak_rss_growth(lambda: cli(*ALIGN, corpus, "-o", out))
    assert grown < 1500, grown
    assert "not aligned: 1 pair with a side over --max-words (200 words): empty lines" in result.stdout.splitlines()
    lines = out.read_text("utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0] and lines[2]
    assert json.loads((tmp_path / "links.txt.stats.json").read_text("utf-8"))["over_max_words"] == 1


# --- 6. a third ||| field -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [EXTRACT, ALIGN])
def test_a_third_field_is_refused(tmp_path: Path, command) -> None:
    corpus = tmp_path / "pairs.txt"
    corpus.write_text("a cat ||| un chat\na dog ||| un chien ||| a note\n", encoding="utf-8")
    out = tmp_path / ("lex.parquet" if command is EXTRACT else "links.txt")
    result = cli(*command, corpus, "-o", out, code=2)
    assert result.stderr == f"error: {corpus}:2: a third field: more than one '|||' on the line (expected " \
        "'src ||| tgt')\n"  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.txt"]


# --- 7. nonsense that yields numbers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lexicon") / "lex.tsv"
    path.write_text(
        "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\ncat\tchat\t5\t0.9\t0.9\t0.8\n", encoding="utf-8"
    )
    return path


def test_eval_lexicon_with_sentences_as_gold_is_an_error(corpus: Path, lexicon: Path) -> None:
    result = cli("eval-lexicon", lexicon, "--gold", corpus, code=2)
    assert result.stderr.startswith(f"error: {corpus}: none of its ") and result.stderr.count("\n") == 1


def test_eval_lexicon_with_an_empty_gold_or_lexicon_is_an_error(tmp_path: Path, lexicon: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n", encoding="utf-8")
    result = cli("eval-lexicon", lexicon, "--gold", empty, code=2)
    assert result.stderr == f"error: {empty}: no dictionary entry (expected 'src<TAB>tgt' lines)\n"
    no_rows = tmp_path / "none.tsv"
    no_rows.write_text(lexicon.read_text("utf-8").splitlines()[0] + "\n", encoding="utf-8")
    gold = tmp_path / "gold.tsv"
    gold.write_text("cat\tchat\n", encoding="utf-8")
    result = cli("eval-lexicon", no_rows, "--gold", gold, code=2)
    assert result.stderr == f"error: {no_rows}: the lexicon has no entries: nothing to evaluate\n"


def test_eval_align_with_empty_gold_or_links_is_an_error(tmp_path: Path) -> None:
    gold, links, empty = tmp_path / "gold", tmp_path / "links", tmp_path / "empty"
    gold.write_text("1-1 2p2\n", encoding="utf-8")
    links.write_text("0-0\n", encoding="utf-8")
    empty.write_text("\n", encoding="utf-8")
    result = cli("eval-align", links, "--gold", empty, code=2)
    assert result.stderr.startswith(f"error: {empty}: no gold links") and result.stderr.count("\n") == 1
    result = cli("eval-align", empty, "--gold", gold, code=2)
    assert result.stderr == f"error: {empty}: no links in the 1 lines scored: nothing to evaluate\n"
    assert cli("eval-align", links, "--gold", gold).stdout.startswith("AER 0.0000")


# --- 8. the gold's tokenisation ---------------------------------------------------------------------------------------


HANSARDS = SHARED_DATA / "gold" / "hansards.en-fr"


@pytest.mark.skipif(not Path(f"{HANSARDS}.gold").is_file(), reason="the Hansards gold is not in ../shared/data")
def test_eval_align_warns_when_links_do_not_fit_the_gold(tmp_path: Path) -> None:
    pairs, gold = Path(f"{HANSARDS}.src-tgt"), Path(f"{HANSARDS}.gold")
    default, pretok = tmp_path / "default.txt", tmp_path / "pretok.txt"
    cli(*ALIGN, pairs, "-o", default)
    cli(*ALIGN, "--pretokenized", pairs, "-o", pretok)
    for extra in ([], ["--pairs", pairs]):
        result = CliRunner().invoke(main, ["eval-align", str(default), "--gold", str(gold), *map(str, extra)])
        assert result.exit_code == 0 and result.stdout.startswith("AER ")
        assert result.stderr.startswith(f"warning: {default}: ") and result.stderr.count("\n") == 1
        assert "--pretokenized" in result.stderr
        cli("eval-align", pretok, "--gold", gold, *extra)  # stderr quiet


# --- 9. an unreachable cluster ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["extract-lexicon"], ["align"]])
def test_an_unreachable_ray_address_fails_fast(corpus: Path, tmp_path: Path, command, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PREALIGN_RAY_CONNECT_TIMEOUT", "5")
    out = tmp_path / "out.tsv"
    started = time.monotonic()
    result = cli(*command, "-q", corpus, "-o", out, "--ray-address", f"127.0.0.1:{port}", code=2)
    assert time.monotonic() - started < 10
    assert result.stderr == f"error: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.tsv"]


# --- 10. progress in bytes --------------------------------------------------------------------------------------------


def test_read_progress_counts_bytes_of_the_input(tmp_path: Path, capsys) -> None:
    from prealign.pipelines.progress import BytesRead, Progress

    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 999 + b"\n" + b"y" * 3000)
    read = BytesRead([path])
    assert read.total == 4000
    with open(path, "rb", buffering=0) as fh:
        fh.read(1000)
        assert read() == 1000

    def chunks():
        with open(path, "rb", buffering=0) as fh:
            while block := fh.read(1000):
                yield block

    assert len(list(Progress(True).iterate_bytes(chunks(), "read + segment", [path]))) == 4
    err = capsys.readouterr().err
    assert "3.91k/3.91k" in err and "batch 4" in err


# --- 11. a full disk --------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (skipped where mounting is not permitted)."""
    with tmpfs(tmp_path / "disk", "64k") as mount:
        yield mount


@pytest.mark.parametrize("command", [EXTRACT, ALIGN])
def test_a_full_disk_is_one_line(corpus: Path, tiny_disk: Path, command) -> None:
    filler = tiny_disk / "filler"
    out = tiny_disk / ("lex.parquet" if command is EXTRACT else "links.txt")
    big = corpus.read_bytes() * 4
    corpus.write_bytes(big)
    filler.write_bytes(b"\0" * 40_000)
    result = cli(*command, corpus, "-o", out, code=2)
    assert result.stderr.endswith(": no space left on device\n") and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists() and [p.name for p in tiny_disk.rglob("*.tmp")] == []


def test_demo_runs_again_in_its_directory(tmp_path: Path) -> None:
    for _ in range(2):  # the second run regenerates the corpus and replaces its own lexicon
        result = cli("demo", "--output-dir", tmp_path, "--pairs", 200, "--workers", 0, "--quiet")
        assert "lexicon:" in result.stdout
