"""The ``prealign-data`` commands end to end: input forms, output formats, errors, evaluation, the demo, a
real-Ray run in process and one through the installed console script."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from conftest import SHARED_DATA, assert_loopback_only, cli, files_in, listening, psutil_module, wait_gone
from polars.testing import assert_frame_equal

from prealign import __version__
from prealign.demo import true_lexicon
from prealign.lexicon.lexicon_io import read_lexicon

LANGS = ["--src-lang", "en", "--tgt-lang", "fr"]
EXTRACT = ["extract-lexicon", *LANGS, "-q"]


def best_translations(path: Path) -> dict[str, str]:
    lex, _ = read_lexicon(path)
    ranked = lex.sort(["src", "score", "count", "tgt"], descending=[False, True, True, False])
    return dict(ranked.unique("src", keep="first", maintain_order=True).select("src", "tgt").iter_rows())


def assert_one_error_line(result: Result, *needles: str) -> str:
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def reference(demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lexicon of the demo corpus, extracted in process (``--workers 0``) from the TSV."""
    out = tmp_path_factory.mktemp("reference") / "lexicon.parquet"
    cli(*EXTRACT, demo_corpus, "-o", out, "--workers", "0")
    return out


# --- version and help --------------------------------------------------------------------------------------


def test_version() -> None:
    assert cli("--version").stdout.strip() == f"prealign-data, version {__version__}"


def test_main_help_lists_the_commands() -> None:
    out = cli("--help").stdout
    for command in ("align", "extract-lexicon", "eval-align", "eval-lexicon", "demo"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "extract-lexicon",
            ["PAIRS", "--src", "--tgt", "--src-column", "--tgt-column", "--src-lang", "--output", "--links",
             "--workers", "--ray-address", "--min-count", "--max-words", "--dedup", "--near-dedup", "--top-k",
             "--symmetrize", "--hmm-iterations", "--quiet"],
        ),
        ("align", ["PAIRS", "--src", "--tgt", "--output", "--symmetrize", "--pretokenized", "--workers"]),
        ("eval-align", ["LINKS", "--gold", "--gold-index", "--one-indexed", "--json"]),
        ("eval-lexicon", ["LEXICON", "--gold", "--min-count", "--json"]),
        ("demo", ["--output-dir", "--pairs", "--workers", "--quiet"]),
    ],
)  # fmt: skip
def test_command_help_names_its_options(command: str, options: list[str]) -> None:
    out = cli(command, "--help").stdout
    assert out.startswith(f"Usage: main {command} ") or out.startswith(f"Usage: prealign-data {command} ")
    for option in options:
        assert option in out, option


# --- input forms and output formats ------------------------------------------------------------------------


def write_form(form: str, pairs: list[tuple[str, str]], folder: Path) -> list[str]:
    """Write the pairs in one input form; returns the command-line arguments that read it."""
    if form == "two files":
        (folder / "c.en").write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
        (folder / "c.fr").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
        return ["--src", str(folder / "c.en"), "--tgt", str(folder / "c.fr")]
    if form == "|||":
        (folder / "c.txt").write_text("".join(f"{s} ||| {t}\n" for s, t in pairs), encoding="utf-8")
        return [str(folder / "c.txt")]
    if form == "jsonl":
        rows = [json.dumps({"id": n, "fr": t, "en": s}, ensure_ascii=False) for n, (s, t) in enumerate(pairs)]
        (folder / "c.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        return [str(folder / "c.jsonl"), "--src-column", "en", "--tgt-column", "fr"]
    if form == "tsv.gz":
        data = "".join(f"{s}\t{t}\textra column\n" for s, t in pairs).encode("utf-8")
        (folder / "c.tsv.gz").write_bytes(gzip.compress(data))
        return [str(folder / "c.tsv.gz")]
    if form == "parquet":
        table = pa.table({"english": [s for s, _ in pairs], "french": [t for _, t in pairs]})
        pq.write_table(table, folder / "c.parquet", row_group_size=100)
        return [str(folder / "c.parquet"), "--src-column", "english", "--tgt-column", "french"]
    raise AssertionError(form)


@pytest.mark.parametrize("form", ["two files", "|||", "jsonl", "tsv.gz", "parquet"])
def test_every_input_form_gives_the_same_lexicon(
    form: str, demo_pairs: list[tuple[str, str]], reference: Path, tmp_path: Path
) -> None:
    args = write_form(form, demo_pairs, tmp_path)
    out = tmp_path / "out" / "lex.parquet"
    out.parent.mkdir()
    result = cli(*EXTRACT, *args, "-o", out, "--workers", "0")
    assert "pairs: 600 read, 599 kept (dropped: duplicate 1)" in result.stdout
    assert files_in(out.parent) == ["lex.parquet", "lex.parquet.stats.json"]
    stats = json.loads((out.parent / "lex.parquet.stats.json").read_text())
    assert stats["pairs"]["input"] == 600 and stats["pairs"]["kept"] == 599
    best = best_translations(out)
    assert best["cat"] == "chat" and best["dog"] == "chien" and best["sees"] == "voit"
    assert out.read_bytes() == reference.read_bytes()  # the metadata holds no input path: same bytes


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_text_lexicon_outputs_read_back(suffix: str, demo_corpus: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / f"lex{suffix}"
    cli(*EXTRACT, demo_corpus, "-o", out, "--workers", "0")
    assert files_in(tmp_path) == sorted([out.name, f"{out.name}.meta.json", f"{out.name}.stats.json"])
    if suffix == ".tsv":
        header = out.read_text(encoding="utf-8").splitlines()[0]
        assert header.split("\t") == ["src", "tgt", "count", "p_tgt_given_src", "p_src_given_tgt", "score"]
    else:
        first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        assert set(first) == {"src", "tgt", "count", "p_tgt_given_src", "p_src_given_tgt", "score"}
    lex, meta = read_lexicon(out)
    ref, ref_meta = read_lexicon(reference)
    assert meta == ref_meta and meta["src_lang"] == "en"
    assert_frame_equal(lex, ref, check_exact=False)


def test_json_dictionary_export(demo_corpus: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "dict.json"
    cli(*EXTRACT, demo_corpus, "-o", out, "--workers", "0")
    entries = [json.loads(line)["words"].split(" $ ") for line in out.read_text(encoding="utf-8").splitlines()]
    ref, _ = read_lexicon(reference)
    assert len(entries) == ref["src"].n_unique()
    by_word = {words[0]: words[1:] for words in entries}
    assert by_word["cat"][0] == "chat" and by_word["house"][0] == "maison"
    best = best_translations(reference)
    for src, tgts in by_word.items():  # every translation of the lexicon, best first
        assert sorted(tgts) == sorted(ref.filter(pl.col("src") == src)["tgt"].to_list())
        assert tgts[0] == best[src]


def test_links_output_has_one_line_per_kept_pair(demo_corpus: Path, tmp_path: Path) -> None:
    out, links = tmp_path / "lex.parquet", tmp_path / "kept.links"
    cli(*EXTRACT, demo_corpus, "-o", out, "--links", links, "--workers", "0")
    lines = links.read_text().splitlines()
    assert len(lines) == json.loads((tmp_path / "lex.parquet.stats.json").read_text())["pairs"]["kept"] == 599
    assert all(re.fullmatch(r"\d+-\d+( \d+-\d+)*", line) for line in lines)


# --- bad input: exit 2, one line naming the file (and line), nothing written -------------------------------


def bad_input(case: str, folder: Path, demo_pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Input files for one bad-input case: (command-line input arguments, strings the error must hold)."""
    good = [f"{s}\t{t}" for s, t in demo_pairs]
    if case == "mismatched line counts":
        (folder / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
        (folder / "a.fr").write_text("un\ndeux\n", encoding="utf-8")
        return ["--src", str(folder / "a.en"), "--tgt", str(folder / "a.fr")], [f"{folder / 'a.fr'}:2", "a.en"]
    if case == "invalid UTF-8":  # late in the file: nothing may have been written by then
        data = "\n".join(good).encode("utf-8").split(b"\n")
        data[589] = b"Caf\xe9 au lait.\tCaf\xe9 au lait."
        (folder / "c.tsv").write_bytes(b"\n".join(data) + b"\n")
        return [str(folder / "c.tsv")], [f"{folder / 'c.tsv'}:590", "UTF-8"]
    if case == "invalid UTF-8 in --tgt":
        (folder / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
        (folder / "a.fr").write_bytes(b"un\ndeux \xff\ntrois\n")
        return ["--src", str(folder / "a.en"), "--tgt", str(folder / "a.fr")], [f"{folder / 'a.fr'}:2", "UTF-8"]
    if case == "missing JSONL column":
        rows = ['{"en": "one", "fr": "un"}', '{"en": "two", "fr": "deux"}', '{"en": "three", "de": "drei"}']
        (folder / "c.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        args = [str(folder / "c.jsonl"), "--src-column", "en", "--tgt-column", "fr"]
        return args, [f"{folder / 'c.jsonl'}:3", "'fr'"]
    if case == "line without separator":
        (folder / "c.tsv").write_text("\n".join(good[:3] + ["no tab here"] + good[3:10]) + "\n", encoding="utf-8")
        return [str(folder / "c.tsv")], [f"{folder / 'c.tsv'}:4", "separator"]
    if case == "empty corpus":
        (folder / "c.tsv").write_text("", encoding="utf-8")
        return [str(folder / "c.tsv")], [str(folder / "c.tsv"), "empty"]
    if case == "missing file":
        return [str(folder / "nowhere.tsv")], [str(folder / "nowhere.tsv"), "no such file"]
    if case == "no pair survives cleaning":
        (folder / "c.tsv").write_text("Yes\tOui\n...\t!!!\n", encoding="utf-8")
        return [str(folder / "c.tsv"), "--min-words", "2"], [str(folder / "c.tsv"), "too_short", "empty"]
    raise AssertionError(case)


BAD_CASES = [
    "mismatched line counts",
    "invalid UTF-8",
    "invalid UTF-8 in --tgt",
    "missing JSONL column",
    "line without separator",
    "empty corpus",
    "missing file",
    "no pair survives cleaning",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_to_extract_lexicon(case: str, demo_pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    args, needles = bad_input(case, tmp_path / "in", demo_pairs)
    out = tmp_path / "out" / "lex.parquet"
    result = cli(*EXTRACT, *args, "-o", out, "--links", tmp_path / "out" / "l.txt", "--workers", "0", code=2)
    assert_one_error_line(result, *needles)
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("case", ["mismatched line counts", "invalid UTF-8", "missing file"])
def test_bad_input_to_align(case: str, demo_pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    args, needles = bad_input(case, tmp_path / "in", demo_pairs)
    result = cli("align", *args, "-o", tmp_path / "out" / "links.txt", "--workers", "0", "-q", code=2)
    assert_one_error_line(result, *needles)
    assert files_in(tmp_path / "out") == []


def test_failed_run_leaves_an_existing_output_untouched(demo_pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    args, _ = bad_input("invalid UTF-8", tmp_path / "in", demo_pairs)
    out = tmp_path / "lex.parquet"
    out.write_bytes(b"previous lexicon")
    (tmp_path / "lex.parquet.stats.json").write_text("{}")
    result = cli(*EXTRACT, *args, "-o", out, "--workers", "0", "--overwrite", code=2)  # replacing it is allowed
    assert_one_error_line(result, "UTF-8")
    assert out.read_bytes() == b"previous lexicon"
    assert (tmp_path / "lex.parquet.stats.json").read_text() == "{}"
    assert files_in(tmp_path) == ["in/c.tsv", "lex.parquet", "lex.parquet.stats.json"]  # no temporary left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["PAIRS.tsv", "--src", "a.en", "--tgt", "a.fr"], "not both"),
        (["--src", "a.en"], "give a PAIRS file, or both --src and --tgt"),
        (["PAIRS.tsv", "--symmetrize", "sideways"], "sideways"),
        (["PAIRS.tsv", "--workers", "-1"], "--workers"),
        ([], "give a PAIRS file"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, demo_corpus: Path, tmp_path: Path) -> None:
    shutil.copy(demo_corpus, tmp_path / "PAIRS.tsv")
    for path in ("a.en", "a.fr"):
        (tmp_path / path).write_text("one\n", encoding="utf-8")
    args = [str(tmp_path / a) if a in ("PAIRS.tsv", "a.en", "a.fr") else a for a in args]
    for command in ("extract-lexicon", "align"):
        result = cli(command, "--workers", "0", *args, "-o", tmp_path / "out.parquet", code=2)
        assert result.stderr.startswith(f"error: prealign-data {command}: ") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr  # one line, not click's usage block
        assert not (tmp_path / "out.parquet").exists()


# --- align and evaluation ----------------------------------------------------------------------------------


def test_align_writes_one_line_per_input_pair(demo_pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    from prealign.text import Segmenter, SegmenterConfig

    src = [" ".join(w) for w in Segmenter(SegmenterConfig(apostrophe="next")).segment_batch([s for s, _ in demo_pairs])]
    tgt = [" ".join(w) for w in Segmenter(SegmenterConfig()).segment_batch([t for _, t in demo_pairs])]
    pairs = [f"{s} ||| {t}" for s, t in zip(src, tgt, strict=True)][:300]
    pairs = pairs + pairs[:40] + [""] + pairs[40:50]  # duplicates and an empty pair: align keeps them all
    (tmp_path / "c.txt").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    out = tmp_path / "c.links"
    result = cli("align", tmp_path / "c.txt", "--pretokenized", "-o", out, "--workers", "0", "-q")
    assert result.stdout.startswith("aligned 351 pairs: ") and str(out) in result.stdout
    lines = out.read_text().split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == len(pairs)
    lines = lines[:-1]
    assert lines[300:340] == lines[:40] and lines[341:] == lines[40:50]
    assert lines[340] == ""
    n_links = 0
    for line, pair in zip(lines, pairs, strict=True):
        if not pair:
            continue
        s, t = (side.split() for side in pair.split(" ||| "))
        links = [tuple(map(int, link.split("-"))) for link in line.split()]
        assert links and all(i < len(s) and j < len(t) for i, j in links), (line, pair)
        n_links += len(links)
    assert f"{n_links:,} links (grow-diag-final-and)" in result.stdout


GOLD = "1-1 2-2 3p3\n1-2 2-1\n"  # 1-indexed: sure (0,0) (1,1), possible (2,2); sure (0,1) (1,0)
PRED = "0-0 1-1 2-2 2-3\n0-1 1-1\n"
# |A| = 6, |S| = 4, |A∩S| = 2 + 1, |A∩P| = 3 + 1: AER = 1 - (3 + 4) / (6 + 4) = 0.3, P = 4/6, R = 3/4


def test_eval_align_on_a_hand_made_gold(tmp_path: Path) -> None:
    (tmp_path / "gold").write_text(GOLD)
    (tmp_path / "pred").write_text(PRED)
    out = cli("eval-align", tmp_path / "pred", "--gold", tmp_path / "gold").stdout
    assert out.strip() == "AER 0.3000  precision 0.6667  recall 0.7500  (2 sentences, 6 links)"

    (tmp_path / "pred1").write_text("1-1 2-2 3-3 3-4\n1-2 2-2\n5-5 6-6\n")  # 1-indexed, plus an extra line
    scores = json.loads(
        cli("eval-align", tmp_path / "pred1", "--gold", tmp_path / "gold", "--one-indexed", "--json").stdout
    )
    assert scores["aer"] == pytest.approx(0.3) and scores["precision"] == pytest.approx(4 / 6)
    assert scores["recall"] == pytest.approx(0.75)
    assert (scores["links"], scores["sure_links"], scores["sentences"], scores["ignored_sentences"]) == (6, 4, 2, 1)

    # the gold read 0-indexed: sure (1,1) (2,2), possible (3,3); sure (1,2) (2,1): |A∩S| = |A∩P| = 2 + 0
    scores = json.loads(
        cli("eval-align", tmp_path / "pred", "--gold", tmp_path / "gold", "--gold-index", "0", "--json").stdout
    )
    assert scores["aer"] == pytest.approx(1 - (2 + 2) / (6 + 4))

    (tmp_path / "short").write_text("0-0\n")
    result = cli("eval-align", tmp_path / "short", "--gold", tmp_path / "gold", code=2)
    assert_one_error_line(result, str(tmp_path / "short"))
    (tmp_path / "bad").write_text("0-0\n0-x\n")
    result = cli("eval-align", tmp_path / "bad", "--gold", tmp_path / "gold", code=2)
    assert_one_error_line(result, f"{tmp_path / 'bad'}:2")


LEXICON_TSV = """src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore
cat\tchat\t10\t0.8333333\t0.9\t0.9
cat\tchien\t2\t0.1666667\t0.2\t0.1
dog\tchat\t5\t0.5555556\t0.3\t0.6
dog\tchien\t4\t0.4444444\t0.8\t0.4
house\tmaison\t3\t1.0\t1.0\t1.0
"""
GOLD_DICT = "cat\tchat\ndog\tchien\nhouse\tmaison\nhouse\tlogis\ntree\tarbre\n"
# top-1: cat right, dog wrong (chien second), house right; tree has no entry:
# P@1 = 2/3, P@5 = 3/3, coverage = 3/4. Words aligned (count / p) cat 12, dog 9, house 3: with --min-count 5
# only cat and dog count: P@1 = 1/2, P@5 = 1, coverage 2/2.


def test_eval_lexicon_against_a_gold_dictionary(tmp_path: Path) -> None:
    (tmp_path / "lex.tsv").write_text(LEXICON_TSV)
    (tmp_path / "gold.tsv").write_text(GOLD_DICT)
    out = cli("eval-lexicon", tmp_path / "lex.tsv", "--gold", tmp_path / "gold.tsv").stdout
    assert out.strip() == "P@1 0.6667  P@5 1.0000  coverage 0.7500  (3 of 4 gold source words)"
    scores = json.loads(cli("eval-lexicon", tmp_path / "lex.tsv", "--gold", tmp_path / "gold.tsv", "--json").stdout)
    assert scores == {"p@1": pytest.approx(2 / 3), "p@5": 1.0, "evaluated": 3, "gold_words": 4, "coverage": 0.75}
    args = ["--min-count", "5", "--json"]
    scores = json.loads(cli("eval-lexicon", tmp_path / "lex.tsv", "--gold", tmp_path / "gold.tsv", *args).stdout)
    assert scores == {"p@1": 0.5, "p@5": 1.0, "evaluated": 2, "gold_words": 2, "coverage": 1.0}

    (tmp_path / "bad.tsv").write_text("cat\tchat\ndog chien\n")
    result = cli("eval-lexicon", tmp_path / "lex.tsv", "--gold", tmp_path / "bad.tsv", code=2)
    assert_one_error_line(result, f"{tmp_path / 'bad.tsv'}:2")
    result = cli("eval-lexicon", tmp_path / "missing.parquet", "--gold", tmp_path / "gold.tsv", code=2)
    assert_one_error_line(result, str(tmp_path / "missing.parquet"))


def test_eval_lexicon_on_an_extracted_lexicon(reference: Path, tmp_path: Path) -> None:
    (tmp_path / "gold.tsv").write_text("".join(f"{e}\t{f}\n" for e, f in true_lexicon()), encoding="utf-8")
    scores = json.loads(cli("eval-lexicon", reference, "--gold", tmp_path / "gold.tsv", "--json").stdout)
    assert scores["p@1"] >= 0.95 and scores["coverage"] >= 0.95 and scores["gold_words"] == 55


# --- demo --------------------------------------------------------------------------------------------------


def test_demo(tmp_path: Path) -> None:
    out = cli("demo", "-o", tmp_path / "demo", "--pairs", "600", "--workers", "0", "-q").stdout
    found = re.search(r"P@1 (\d\.\d+), P@5 (\d\.\d+), coverage (\d\.\d+)", out)
    assert found, out
    assert float(found[1]) >= 0.95 and float(found[3]) >= 0.95
    assert re.search(r"^\s+cat -> chat\s", out, re.M), out
    assert files_in(tmp_path / "demo") == ["demo.en-fr.tsv", "lexicon.parquet", "lexicon.parquet.stats.json"]
    assert len((tmp_path / "demo" / "demo.en-fr.tsv").read_text(encoding="utf-8").splitlines()) == 600


# --- real Ray ----------------------------------------------------------------------------------------------


def test_extract_on_ray_matches_in_process(ray_local, demo_corpus: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.parquet"
    result = cli(*EXTRACT, demo_corpus, "-o", out, "--workers", "2")
    assert "599 kept" in result.stdout
    assert out.read_bytes() == reference.read_bytes()
    # an input error found on Ray is still one line and exit code 2
    (tmp_path / "bad.tsv").write_text("Yes\tOui\n", encoding="utf-8")
    result = cli(*EXTRACT, tmp_path / "bad.tsv", "--min-words", "2", "-o", tmp_path / "x.parquet", code=2)
    assert_one_error_line(result, str(tmp_path / "bad.tsv"), "too_short")
    assert not (tmp_path / "x.parquet").exists()


def test_console_script_on_embedded_ray(demo_corpus: Path, reference: Path, tmp_path: Path) -> None:
    """``prealign-data`` as installed, starting its own Ray: same bytes, loopback only, nothing left behind."""
    beside = Path(sys.executable).with_name("prealign-data")  # this Python's own scripts, venv activated or not
    exe = str(beside) if beside.exists() else shutil.which("prealign-data")
    assert exe, "the prealign-data console script is not on PATH"
    psutil = psutil_module()
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PREALIGN_TEST_MARKER"] = marker  # inherited by every process Ray starts
    out = tmp_path / "lex.parquet"
    cmd = [exe, *EXTRACT, str(demo_corpus), "-o", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def marked() -> list:
        found = []
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get("PREALIGN_TEST_MARKER") == marker:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    seen: dict[int, float] = {}
    sockets: set[tuple[int, str, str, int]] = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        procs = marked()
        for p in procs:
            try:
                seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass
        sockets.update(listening(procs))
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    assert proc.returncode == 0, stderr
    assert "599 kept" in stdout
    assert out.read_bytes() == reference.read_bytes()

    names = {name for _, name, _, _ in sockets}
    assert any(n.startswith("gcs_server") for n in names) and any(n.startswith("raylet") for n in names), sockets
    assert_loopback_only(sorted(sockets))
    assert not wait_gone(seen), "Ray processes left behind by the command"
    assert not marked()


# --- real data ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "parallel").is_dir(), reason=f"no shared data at {SHARED_DATA}")
def test_tatoeba_lexicon_against_freedict(tmp_path: Path) -> None:
    # Tatoeba is sorted by sentence length: its first 5,000 pairs are two-word imperatives ("Go." "Run!") whose
    # inflected French rarely matches FreeDict's lemmas (P@1 0.49 there). Every 28th pair spans the corpus.
    lines = (SHARED_DATA / "parallel" / "tatoeba.en-fr.tsv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "sample.tsv").write_text("\n".join(lines[::28]) + "\n", encoding="utf-8")
    out = tmp_path / "lex.parquet"
    cli(*EXTRACT, tmp_path / "sample.tsv", "-o", out, "--workers", "0")
    gold = SHARED_DATA / "gold" / "freedict.en-fr.tsv"
    scores = json.loads(cli("eval-lexicon", out, "--gold", gold, "--min-count", "5", "--json").stdout)
    assert scores["evaluated"] >= 300
    assert scores["p@1"] > 0.6, scores
