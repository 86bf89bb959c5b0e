"""Lexicon scoring (probabilities, filters, order) and lexicon files (formats, metadata, errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from prealign.errors import InputError
from prealign.lexicon.lexicon_io import metadata_path, read_lexicon, write_lexicon
from prealign.lexicon.score import LEXICON_SCHEMA, LexiconConfig, score_pairs

ALL = LexiconConfig(min_count=0, min_p_tgt_given_src=0.0, words_only=False, score="geometric")
COLUMNS = ["src", "tgt", "count", "p_tgt_given_src", "p_src_given_tgt", "score"]


def pairs(*rows: tuple[str, str, int]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"src": pl.String, "tgt": pl.String, "count": pl.Int64}, orient="row")


# bank: 10 links (banque 6, rive 3, la 1); the: 90 links (la 50, le 40); la: 51 links
TABLE = pairs(("the", "le", 40), ("bank", "rive", 3), ("the", "la", 50), ("bank", "la", 1), ("bank", "banque", 6))


def as_dict(df: pl.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["src"], r["tgt"]): r for r in df.iter_rows(named=True)}


# --- scoring ----------------------------------------------------------------------------------------------


def test_probabilities_score_schema_and_order() -> None:
    out = score_pairs(TABLE, config=ALL)
    assert out.columns == COLUMNS
    assert out.schema == pl.Schema(LEXICON_SCHEMA)
    assert [out.schema[c] for c in COLUMNS] == [pl.String, pl.String, pl.Int64, pl.Float32, pl.Float32, pl.Float32]
    assert out.select("src", "tgt").rows() == [
        ("bank", "banque"),
        ("bank", "rive"),
        ("bank", "la"),
        ("the", "la"),
        ("the", "le"),
    ]
    rows = as_dict(out)
    expected = {
        ("bank", "banque"): (6, 6 / 10, 6 / 6),
        ("bank", "rive"): (3, 3 / 10, 3 / 3),
        ("bank", "la"): (1, 1 / 10, 1 / 51),
        ("the", "la"): (50, 50 / 90, 50 / 51),
        ("the", "le"): (40, 40 / 90, 40 / 40),
    }
    for key, (count, p_ts, p_st) in expected.items():
        row = rows[key]
        assert row["count"] == count
        assert row["p_tgt_given_src"] == pytest.approx(p_ts, rel=1e-6)
        assert row["p_src_given_tgt"] == pytest.approx(p_st, rel=1e-6)
        assert row["score"] == pytest.approx(math.sqrt(p_ts * p_st), rel=1e-6)


def test_garbage_collector_pair_scores_low() -> None:
    # "bank"-"la" has a fair p(tgt|src) = 0.1 but "la" links almost only to "the": the geometric mean is tiny
    rows = as_dict(score_pairs(TABLE, config=ALL))
    assert rows[("bank", "la")]["score"] < 0.05 < rows[("bank", "la")]["p_tgt_given_src"]


def test_probabilities_use_totals_before_filtering() -> None:
    out = score_pairs(TABLE, config=LexiconConfig(min_count=2, min_p_tgt_given_src=0.0, words_only=False))
    rows = as_dict(out)
    assert ("bank", "la") not in rows  # count 1 < 2
    assert rows[("bank", "banque")]["p_tgt_given_src"] == pytest.approx(0.6)  # still 6/10, not 6/9
    assert rows[("the", "la")]["p_src_given_tgt"] == pytest.approx(50 / 51)


def test_given_totals_are_the_denominators() -> None:
    src_totals = pl.DataFrame({"src": ["bank", "the", "unused"], "count": [20, 100, 5]})
    tgt_totals = pl.DataFrame({"tgt": ["banque", "rive", "la", "le"], "count": [12, 3, 100, 80]})
    rows = as_dict(score_pairs(TABLE, src_totals, tgt_totals, config=ALL))
    assert rows[("bank", "banque")]["p_tgt_given_src"] == pytest.approx(6 / 20)
    assert rows[("bank", "banque")]["p_src_given_tgt"] == pytest.approx(6 / 12)
    assert rows[("the", "le")]["p_src_given_tgt"] == pytest.approx(40 / 80)
    assert rows[("the", "le")]["score"] == pytest.approx(math.sqrt(0.4 * 0.5), rel=1e-6)
    # only one side given: the other is summed over the pairs
    rows = as_dict(score_pairs(TABLE, src_totals=src_totals, config=ALL))
    assert rows[("bank", "la")]["p_src_given_tgt"] == pytest.approx(1 / 51)


def test_given_totals_must_cover_kept_pairs() -> None:
    with pytest.raises(ValueError, match="'the'"):
        score_pairs(TABLE, src_totals=pl.DataFrame({"src": ["bank"], "count": [10]}), config=ALL)
    with pytest.raises(ValueError, match="'bank'"):
        score_pairs(TABLE, src_totals=pl.DataFrame({"src": ["bank", "the"], "count": [5, 90]}), config=ALL)


def test_min_count_filter() -> None:
    out = score_pairs(TABLE, config=LexiconConfig(min_count=6, min_p_tgt_given_src=0.0, words_only=False))
    assert sorted(out.select("src", "tgt").rows()) == [("bank", "banque"), ("the", "la"), ("the", "le")]


def test_min_probability_filters_are_inclusive_on_exact_values() -> None:
    table = pairs(("a", "x", 1), ("a", "y", 99))
    keep = LexiconConfig(min_count=0, min_p_tgt_given_src=0.01, words_only=False)
    assert as_dict(score_pairs(table, config=keep)).keys() == {("a", "x"), ("a", "y")}  # 1/100 >= 0.01
    drop = LexiconConfig(min_count=0, min_p_tgt_given_src=0.0100001, words_only=False)
    assert as_dict(score_pairs(table, config=drop)).keys() == {("a", "y")}


def test_min_p_src_given_tgt_filter() -> None:
    config = LexiconConfig(min_count=0, min_p_tgt_given_src=0.0, min_p_src_given_tgt=0.05, words_only=False)
    out = score_pairs(TABLE, config=config)
    assert ("bank", "la") not in as_dict(out)  # 1/51 < 0.05
    assert out.height == 4


def test_default_config_drops_count_one_and_rare_translations() -> None:
    table = pairs(("a", "x", 2), ("a", "y", 300), ("a", "z", 1), ("b", "x", 5))
    out = score_pairs(table)  # min_count 2, p(tgt|src) >= 0.01
    assert out.select("src", "tgt").rows() == [("a", "y"), ("b", "x")]  # a-x: 2/303 < 0.01


def test_top_k() -> None:
    top1 = score_pairs(TABLE, config=LexiconConfig(min_count=0, min_p_tgt_given_src=0.0, top_k=1))
    assert top1.select("src", "tgt").rows() == [("bank", "banque"), ("the", "la")]
    top2 = score_pairs(TABLE, config=LexiconConfig(min_count=0, min_p_tgt_given_src=0.0, top_k=2))
    assert top2.select("src", "tgt").rows() == [("bank", "banque"), ("bank", "rive"), ("the", "la"), ("the", "le")]


def test_words_only() -> None:
    table = pairs(
        ("hello", "bonjour", 3),
        ("hello", "!", 1),
        ("1999", "1999", 4),
        (",", ",", 9),
        ("l'", "the", 2),
        ("café", "coffee", 2),
    )
    out = score_pairs(table, config=LexiconConfig(min_count=0, min_p_tgt_given_src=0.0))
    assert sorted(out.select("src", "tgt").rows()) == [("café", "coffee"), ("hello", "bonjour"), ("l'", "the")]
    assert as_dict(out)[("hello", "bonjour")]["p_tgt_given_src"] == pytest.approx(0.75)  # "!" still counted
    everything = score_pairs(table, config=ALL)
    assert everything.height == 6


def test_ties_break_by_count_then_tgt() -> None:
    # a: zz (p 2/4, p' 2/4), aa (1/4, 1/1), mm (1/4, 1/1): all score 0.5; zz has the highest count
    table = pairs(("a", "mm", 1), ("a", "aa", 1), ("a", "zz", 2), ("b", "zz", 2))
    out = score_pairs(table, config=ALL)
    assert out.filter(pl.col("src") == "a")["score"].to_list() == [0.5, 0.5, 0.5]
    assert out.select("src", "tgt").rows() == [("a", "zz"), ("a", "aa"), ("a", "mm"), ("b", "zz")]


def test_sorted_by_src_like_python_strings() -> None:
    words = ["zèbre", "Zebra", "éclair", "apple", "Été", "b"]
    table = pairs(*[(w, f"t{n}", 1) for n, w in enumerate(words)])
    out = score_pairs(table, config=ALL)
    assert out["src"].to_list() == sorted(words)


def test_duplicate_pairs_are_summed() -> None:
    table = pairs(("a", "x", 2), ("a", "y", 5), ("a", "x", 3))
    rows = as_dict(score_pairs(table, config=ALL))
    assert rows[("a", "x")]["count"] == 5
    assert rows[("a", "x")]["p_tgt_given_src"] == pytest.approx(0.5)
    assert len(rows) == 2


def test_empty_and_bad_input() -> None:
    empty = score_pairs(pairs(), config=ALL)
    assert empty.height == 0 and empty.schema == pl.Schema(LEXICON_SCHEMA)
    with pytest.raises(ValueError, match="count"):
        score_pairs(pl.DataFrame({"src": ["a"], "tgt": ["b"]}))
    with pytest.raises(ValueError, match="null"):
        score_pairs(pl.DataFrame({"src": ["a", None], "tgt": ["b", "c"], "count": [1, 2]}))
    with pytest.raises(ValueError, match="negative"):
        score_pairs(pairs(("a", "b", -1)))
    with pytest.raises(ValueError):
        LexiconConfig(min_count=-1)
    with pytest.raises(ValueError):
        LexiconConfig(top_k=-2)
    with pytest.raises(ValueError):
        LexiconConfig(min_p_tgt_given_src=1.5)


def test_input_dtypes_are_normalised() -> None:
    table = pl.DataFrame({"src": ["a", "a"], "tgt": ["x", "y"], "count": pl.Series([1, 3], dtype=pl.UInt32)})
    out = score_pairs(table, config=ALL)
    assert out.schema == pl.Schema(LEXICON_SCHEMA)
    assert out["count"].to_list() == [3, 1]


# --- IO ---------------------------------------------------------------------------------------------------

META = {"src_lang": "en", "tgt_lang": "fr", "aligner": "builtin", "pairs": 142787, "ratio": 0.5, "flag": True}


def sample() -> pl.DataFrame:
    table = pairs(
        ("bank", "banque", 6),
        ("bank", "rive", 3),
        ("bank", "la", 1),
        ("the", "la", 50),
        ("café", "kaffee", 7),
        ("café", "coffee", 3),
    )
    return score_pairs(table, config=ALL)


@pytest.mark.parametrize("ext", [".parquet", ".tsv", ".jsonl"])
def test_round_trip(tmp_path: Path, ext: str) -> None:
    lex = sample()
    path = tmp_path / f"lex{ext}"
    write_lexicon(lex, path, META)
    back, meta = read_lexicon(path)
    assert back.schema == pl.Schema(LEXICON_SCHEMA)
    assert back.equals(lex)  # exact, float32 values included
    assert meta == META
    expected_files = {path.name} | ({metadata_path(path).name} if ext != ".parquet" else set())
    assert {p.name for p in tmp_path.iterdir()} == expected_files  # no temp files left


@pytest.mark.parametrize("ext", [".tsv", ".jsonl"])
def test_text_formats_tolerate_crlf_and_blank_lines(tmp_path: Path, ext: str) -> None:
    # such files take the line-by-line reader instead of polars' fast one: both must agree
    lex = sample()
    path = tmp_path / f"lex{ext}"
    write_lexicon(lex, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\r\n".join(lines[:3] + [""] + lines[3:]) + "\r\n", encoding="utf-8")
    back, _ = read_lexicon(path)
    assert back.equals(lex)


@pytest.mark.parametrize("ext", [".parquet", ".tsv", ".jsonl"])
def test_round_trip_empty_and_no_metadata(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"lex{ext}"
    write_lexicon(pl.DataFrame(schema=LEXICON_SCHEMA), path)
    back, meta = read_lexicon(path)
    assert back.height == 0 and back.schema == pl.Schema(LEXICON_SCHEMA) and meta == {}


def test_parquet_metadata_key(tmp_path: Path) -> None:
    path = tmp_path / "lex.parquet"
    write_lexicon(sample(), path, META)
    schema = pq.read_schema(path)
    assert json.loads(schema.metadata[b"prealign"]) == META
    assert not metadata_path(path).exists()


def test_tsv_layout_and_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    write_lexicon(sample(), path, META)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore"
    assert lines[1].split("\t")[:3] == ["bank", "banque", "6"]
    assert len(lines) == 7
    assert json.loads(metadata_path(path).read_text()) == META
    assert metadata_path(path).name == "lex.tsv.meta.json"


def test_jsonl_layout(tmp_path: Path) -> None:
    path = tmp_path / "lex.jsonl"
    write_lexicon(sample(), path, META)
    objs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(objs) == 6
    assert list(objs[0]) == COLUMNS
    assert objs[0]["src"] == "bank" and objs[0]["tgt"] == "banque" and objs[0]["count"] == 6


def test_json_export_prealign_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "dict.json"
    write_lexicon(sample().reverse(), path, META)  # the export orders translations itself
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"words": "bank $ banque $ rive $ la"},
        {"words": "café $ kaffee $ coffee"},
        {"words": "the $ la"},
    ]
    assert "café" in lines[1]  # UTF-8, not \u escapes
    assert json.loads(metadata_path(path).read_text()) == META
    with pytest.raises(InputError, match=r"\.parquet"):
        read_lexicon(path)  # the export is write-only


def test_json_export_rejects_ambiguous_words(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\$"):
        write_lexicon(sample().with_columns(pl.lit("$").alias("tgt")), tmp_path / "dict.json")
    assert list(tmp_path.iterdir()) == []


def test_write_overwrites_atomically_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    write_lexicon(sample(), path, META)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_lexicon(sample().head(1), path, {"bad": object()})
    assert path.read_bytes() == before
    write_lexicon(sample().head(2), path, {"v": 2})
    assert read_lexicon(path)[0].height == 2 and read_lexicon(path)[1] == {"v": 2}
    assert {p.name for p in tmp_path.iterdir()} == {"lex.tsv", "lex.tsv.meta.json"}


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "lex.csv"
    with pytest.raises(InputError) as err:
        write_lexicon(sample(), path)
    assert ".parquet" in str(err.value) and ".tsv" in str(err.value) and ".jsonl" in str(err.value)
    assert err.value.path == str(path)
    assert not path.exists()
    with pytest.raises(InputError):
        read_lexicon(tmp_path / "lex")


def test_write_rejects_missing_columns_and_tabs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="score"):
        write_lexicon(sample().drop("score"), tmp_path / "lex.parquet")
    bad = sample().with_columns(pl.lit("a\tb").alias("tgt"))
    with pytest.raises(ValueError, match="tab"):
        write_lexicon(bad, tmp_path / "lex.tsv")
    assert list(tmp_path.iterdir()) == []


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.parquet"
    with pytest.raises(InputError, match="no such file") as err:
        read_lexicon(path)
    assert err.value.path == str(path)


HEADER = "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\n"


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("a\tb\t1\t0.5\t0.5\t0.5\na\tc\tabc\t0.5\t0.5\t0.5\n", 3, "'count'"),
        ("a\tb\t1\t0.5\t0.5\t0.5\n\na\tc\t1.5\t0.5\t0.5\t0.5\n", 4, "'count'"),  # blank line counted
        ("a\tb\t1\t0.5\t0.5\n", 2, "expected 6 tab-separated fields, got 5"),
        ("a\tb\t1\t1.5\t0.5\t0.5\n", 2, "p_tgt_given_src"),
        ("a\tb\t1\t0.5\t-0.1\t0.5\n", 2, "p_src_given_tgt"),
        ("a\tb\t1\t0.5\t0.5\tnan\n", 2, "score"),
        ("a\tb\t-3\t0.5\t0.5\t0.5\n", 2, "negative"),
        ("a\t\t1\t0.5\t0.5\t0.5\n", 2, "'tgt'"),
        ("a\tb\t1\tx\t0.5\t0.5\n", 2, "p_tgt_given_src"),
    ],
)
def test_tsv_bad_rows(tmp_path: Path, body: str, line: int, message: str) -> None:
    path = tmp_path / "lex.tsv"
    path.write_text(HEADER + body, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_lexicon(path)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert message in err.value.message


def test_tsv_bad_header_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    path.write_text("src\ttgt\tcount\n", encoding="utf-8")
    with pytest.raises(InputError, match="header") as err:
        read_lexicon(path)
    assert err.value.line == 1
    path.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty") as err:
        read_lexicon(path)


def test_tsv_column_order_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    path.write_text("score\tsrc\textra\ttgt\tcount\tp_src_given_tgt\tp_tgt_given_src\n0.5\ta\tz\tb\t2\t0.25\t1\n")
    df, meta = read_lexicon(path)
    assert df.columns == COLUMNS and meta == {}
    assert df.row(0) == ("a", "b", 2, 1.0, 0.25, 0.5)


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "bad JSON"),
        ("[1, 2]", "JSON object"),
        ('{"src": "a", "tgt": "b", "count": 1}', "missing key"),
        ('{"src": "a", "tgt": "b", "count": "1", "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}', "count"),
        ('{"src": "a", "tgt": "b", "count": 1.5, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}', "count"),
        ('{"src": 3, "tgt": "b", "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}', "src"),
        ('{"src": "a", "tgt": true, "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}', "tgt"),
        ('{"src": "a", "tgt": "b", "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": "x"}', "score"),
        ('{"src": "a", "tgt": "b", "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1}', "score"),
        ('{"src": "a", "tgt": "b", "count": 1, "p_tgt_given_src": 2, "p_src_given_tgt": 1, "score": 1}', "range"),
    ],
)
def test_jsonl_bad_rows(tmp_path: Path, second_line: str, message: str) -> None:
    good = '{"src": "a", "tgt": "c", "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}'
    path = tmp_path / "lex.jsonl"
    path.write_text(good + "\n" + second_line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_lexicon(path)
    assert err.value.path == str(path) and err.value.line == 2
    assert message in err.value.message


def test_parquet_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "lex.parquet"
    sample().drop("score").write_parquet(path)
    with pytest.raises(InputError, match="score") as err:
        read_lexicon(path)
    assert err.value.path == str(path)
    sample().with_columns(pl.col("count").cast(pl.String)).write_parquet(path)
    df, meta = read_lexicon(path)  # numeric strings are cast to the exact dtype
    assert df.schema == pl.Schema(LEXICON_SCHEMA) and meta == {}
    sample().with_columns(pl.lit(2.0).alias("p_src_given_tgt")).write_parquet(path)
    with pytest.raises(InputError, match="row 1"):
        read_lexicon(path)
    path.write_bytes(b"this is not parquet")
    with pytest.raises(InputError, match="Parquet") as err:
        read_lexicon(path)
    assert err.value.path == str(path)


def test_bad_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "lex.tsv"
    write_lexicon(sample(), path, META)
    metadata_path(path).write_text("{oops")
    with pytest.raises(InputError) as err:
        read_lexicon(path)
    assert err.value.path == str(metadata_path(path))


def test_lower_bound_score_ranks_like_p_tgt_given_src_and_discounts_thin_evidence() -> None:
    table = pairs(("a", "x", 80), ("a", "y", 20), ("b", "z", 1))
    rows = as_dict(score_pairs(table, config=LexiconConfig(min_count=0, min_p_tgt_given_src=0.0)))
    # Wilson 95% lower bounds, worked out by hand: 80/100 -> 0.7112, 20/100 -> 0.1333, 1/1 -> 0.2065
    assert rows[("a", "x")]["score"] == pytest.approx(0.7112, abs=1e-3)
    assert rows[("a", "y")]["score"] == pytest.approx(0.1333, abs=1e-3)
    assert rows[("b", "z")]["score"] == pytest.approx(0.2065, abs=1e-3)
    assert rows[("b", "z")]["p_tgt_given_src"] == 1.0


def test_unknown_score_is_rejected() -> None:
    with pytest.raises(ValueError, match="score must be one of"):
        LexiconConfig(score="dice")
