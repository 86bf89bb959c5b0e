"""Tests for the parallel-corpus readers (prealign.lexicon.corpus) and compressed text (prealign.textio)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import zstandard

from prealign.errors import InputError
from prealign.lexicon import corpus
from prealign.lexicon.corpus import SCHEMA, pairs_format, read_parallel, read_parallel_table
from prealign.textio import (
    compression_suffix,
    count_lines,
    data_suffix,
    iter_line_arrays,
    open_lines,
    strip_compression_suffix,
)

PAIRS = [("Hello world", "Bonjour le monde"), ("Good night", "Bonne nuit"), ("Thanks", "Merci")]
FIVE = [(f"src {i} é", f"tgt {i} ü") for i in range(1, 6)]


def rows(table: pa.Table) -> list[tuple[str, str, int]]:
    return [(r["src"], r["tgt"], r["line"]) for r in table.to_pylist()]


def numbered(pairs: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    return [(s, t, i) for i, (s, t) in enumerate(pairs, 1)]


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, compressed as its name says (.gz, .zst)."""
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: Path, records: list[dict], src: str = "src", tgt: str = "tgt") -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def pairs_table(pairs: list[tuple[str | None, str | None]], src: str = "src", tgt: str = "tgt") -> pa.Table:
    return pa.table({src: [p[0] for p in pairs], tgt: [p[1] for p in pairs], "id": list(range(len(pairs)))})


def raises(match: str, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        read_parallel_table(**kwargs)
    return info.value


# --- textio -------------------------------------------------------------------------------------------------


def test_compression_suffix_helpers() -> None:
    assert compression_suffix("a/b.en.gz") == ".gz"
    assert compression_suffix("b.JSONL.ZST") == ".zst"
    assert compression_suffix("b.tsv") == ""
    assert strip_compression_suffix("dir/x.jsonl.gz") == "x.jsonl"
    assert strip_compression_suffix("x.tsv") == "x.tsv"
    assert data_suffix("x.Parquet.zst") == ".parquet"
    assert data_suffix("x.gz") == ""


@pytest.mark.parametrize("name", ["t.txt", "t.txt.gz", "t.txt.zst"])
def test_open_lines_strips_newlines_bom_and_counts(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, "\ufeffone\r\ntwo\n\nfour é".encode())
    assert list(open_lines(path)) == [(1, "one"), (2, "two"), (3, ""), (4, "four é")]
    assert count_lines(path) == 4


def test_open_lines_keeps_other_line_separators_inside_a_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "t.txt", "a\u2028b\x1cc\rd\n\ufeffe\n")
    # only \n ends a line; a BOM after line 1 is content
    assert list(open_lines(path)) == [(1, "a\u2028b\x1cc\rd"), (2, "\ufeffe")]
    assert count_lines(path) == 2


def test_open_lines_empty_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "e.txt", "")
    assert list(open_lines(path)) == []
    assert count_lines(path) == 0


@pytest.mark.parametrize("name", ["bad.txt", "bad.txt.gz", "bad.txt.zst"])
def test_open_lines_invalid_utf8_names_line(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, b"ok\nfine\nbr\xffoken\nlater\n")
    it = open_lines(path)
    assert next(it) == (1, "ok")
    assert next(it) == (2, "fine")
    with pytest.raises(InputError) as info:
        next(it)
    assert info.value.line == 3
    assert info.value.path == str(path)
    assert "invalid UTF-8" in info.value.message
    assert "0xff" in info.value.message
    assert str(info.value) == f"{path}:3: {info.value.message}"


def test_open_lines_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(InputError) as info:
        open_lines(path)
    assert (info.value.message, info.value.path, info.value.line) == ("no such file", str(path), None)


def test_open_lines_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"a\nb\n" * 1000)
    path = tmp_path / "c.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or truncated gzip data") as info:
        list(open_lines(path))
    assert info.value.path == str(path)


def test_open_lines_multi_frame_zstd(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "m.txt.zst"
    path.write_bytes(cctx.compress(b"one\ntwo\n") + cctx.compress(b"three\n"))
    assert list(open_lines(path)) == [(1, "one"), (2, "two"), (3, "three")]


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_line_arrays_match_open_lines(tmp_path: Path, block_bytes: int, suffix: str) -> None:
    text = "\ufeffone\r\ntwo\n\n\n  four é\t|||\r\nfive \u2028 x\rinside\nsix"
    path = write_text(tmp_path / f"t.txt{suffix}", text)
    expected = list(open_lines(path))
    assert [t for _, t in expected] == ["one", "two", "", "", "  four é\t|||", "five \u2028 x\rinside", "six"]
    got = []
    for first, lines in iter_line_arrays(path, block_bytes):
        assert lines.type == pa.string()
        assert first == len(got) + 1
        got.extend(enumerate(lines.to_pylist(), first))
    assert got == expected


@pytest.mark.parametrize("text", ["", "\ufeff", "\n", "\ufeff\n", "x"])
def test_line_arrays_edge_files(tmp_path: Path, text: str) -> None:
    path = write_text(tmp_path / "e.txt", text)
    got = [s for _, lines in iter_line_arrays(path) for s in lines.to_pylist()]
    assert got == [t for _, t in open_lines(path)]
    assert len(got) == count_lines(path)


@pytest.mark.parametrize("block_bytes", [1, 8, 1 << 20])
def test_line_arrays_invalid_utf8_names_line(tmp_path: Path, block_bytes: int) -> None:
    path = write_bytes(tmp_path / "bad.txt", b"ok\nfine\nbr\xffoken\nlater\n")
    with pytest.raises(InputError) as info:
        list(iter_line_arrays(path, block_bytes))
    assert (info.value.path, info.value.line) == (str(path), 3)
    assert info.value.message == "invalid UTF-8 (byte 0xff at byte 3 of the line)"


# --- two line-aligned files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_two_files(tmp_path: Path, suffix: str) -> None:
    src = write_text(tmp_path / f"c.en{suffix}", "".join(s + "\n" for s, _ in PAIRS))
    tgt = write_text(tmp_path / f"c.fr{suffix}", "".join(t + "\n" for _, t in PAIRS))
    table = read_parallel_table(src, tgt)
    assert table.schema == SCHEMA
    assert rows(table) == numbered(PAIRS)


def test_two_files_empty_lines_are_records(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "one\n\nthree\n")
    tgt = write_text(tmp_path / "a.fr", "un\ndeux\n\n")
    assert rows(read_parallel_table(src, tgt)) == [("one", "un", 1), ("", "deux", 2), ("three", "", 3)]


def test_two_files_missing_final_newline_and_crlf(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "one\r\ntwo")
    tgt = write_text(tmp_path / "a.fr", "un\ndeux\n")
    assert rows(read_parallel_table(src, tgt)) == [("one", "un", 1), ("two", "deux", 2)]


def test_two_files_tgt_shorter(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "1\n2\n3\n4\n5\n")
    tgt = write_text(tmp_path / "a.fr", "1\n2\n3\n")
    err = raises("line count mismatch", src=src, tgt=tgt)
    assert err.path == str(tgt)
    assert err.line == 3
    assert err.message == (
        f"line count mismatch: tgt file ends after 3 lines but src file {src} has 5 lines (they must be line-aligned)"
    )


def test_two_files_src_shorter(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en.gz", "1\n2\n")
    tgt = write_text(tmp_path / "a.fr.zst", "1\n2\n3\n4\n")
    err = raises("line count mismatch", src=src, tgt=tgt)
    assert err.path == str(src)
    assert err.line == 2
    assert "src file ends after 2 lines" in err.message
    assert f"tgt file {tgt} has 4 lines" in err.message


def test_two_files_one_empty(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "")
    tgt = write_text(tmp_path / "a.fr", "x\n")
    err = raises("line count mismatch", src=src, tgt=tgt)
    assert (err.path, err.line) == (str(src), None)
    assert "ends after 0 lines" in err.message


def test_two_files_mismatch_after_a_batch(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "1\n2\n3\n4\n5\n")
    tgt = write_text(tmp_path / "a.fr", "1\n2\n3\n4\n5\n6\n")
    batches = read_parallel(src, tgt, batch_size=2)
    assert next(batches).num_rows == 2
    assert next(batches).num_rows == 2
    with pytest.raises(InputError, match="line count mismatch") as info:
        next(batches)
    assert (info.value.path, info.value.line) == (str(src), 5)


def test_two_files_invalid_utf8_line_3(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "1\n2\n3\n4\n")
    tgt = write_bytes(tmp_path / "a.fr", b"1\n2\n\xc3\x28\n4\n")
    err = raises("invalid UTF-8", src=src, tgt=tgt)
    assert (err.path, err.line) == (str(tgt), 3)


def test_two_files_empty_corpus(tmp_path: Path) -> None:
    src = write_text(tmp_path / "a.en", "")
    tgt = write_text(tmp_path / "a.fr.gz", "")
    err = raises("empty corpus", src=src, tgt=tgt)
    assert (err.message, err.path, err.line) == ("empty corpus: no sentence pairs", str(src), None)


# --- text pairs files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.txt", "p.src-tgt", "p.txt.gz", "p.txt.zst"])
def test_triple_bar(tmp_path: Path, name: str) -> None:
    path = write_text(tmp_path / name, "".join(f"{s} ||| {t}\n" for s, t in PAIRS))
    assert rows(read_parallel_table(pairs=path)) == numbered(PAIRS)


def test_triple_bar_splits_and_strips(tmp_path: Path) -> None:
    text = "  a b  |||  c d \n x|||y\n|||\n\nq ||| \n"
    path = write_text(tmp_path / "p.txt", text)
    assert rows(read_parallel_table(pairs=path)) == [
        ("a b", "c d", 1),
        ("x", "y", 2),
        ("", "", 3),
        ("", "", 4),
        ("q", "", 5),
    ]


def test_a_third_triple_bar_field_is_an_error(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.txt", "a ||| b\n x|||y ||| z\n")  # joined to the target before
    with pytest.raises(InputError, match=r"p.txt:2: a third field: more than one '\|\|\|' on the line"):
        read_parallel_table(pairs=path)


def test_triple_bar_wins_over_tab(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.tsv", "a\tb ||| c\td\n")
    assert rows(read_parallel_table(pairs=path)) == [("a\tb", "c\td", 1)]


@pytest.mark.parametrize("name", ["p.tsv", "p.tsv.gz", "p.tsv.zst"])
def test_tsv_extra_columns_ignored(tmp_path: Path, name: str) -> None:
    text = "Hello world\tBonjour le monde\tCC-BY\t42\nGood night\tBonne nuit\nThanks\tMerci\t\n"
    path = write_text(tmp_path / name, text)
    assert rows(read_parallel_table(pairs=path)) == numbered(PAIRS)


def test_tsv_keeps_spaces_and_empty_sides(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.tsv", " a \t b \n\tonly tgt\nonly src\t\n")
    assert rows(read_parallel_table(pairs=path)) == [
        (" a ", " b ", 1),
        ("", "only tgt", 2),
        ("only src", "", 3),
    ]


def test_text_pairs_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.tsv", "\n  \na\tb\n\nc\td\n")
    assert rows(read_parallel_table(pairs=path)) == [
        ("", "", 1),
        ("", "", 2),
        ("a", "b", 3),
        ("", "", 4),
        ("c", "d", 5),
    ]


def test_text_pairs_leading_blank_lines_span_batches(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.txt", "\n\n\na ||| b\n")
    batches = list(read_parallel(pairs=path, batch_size=2))
    assert [b.num_rows for b in batches] == [2, 2]
    assert rows(pa.Table.from_batches(batches)) == [("", "", 1), ("", "", 2), ("", "", 3), ("a", "b", 4)]


def test_text_pairs_bom_stripped(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.tsv", "\ufeffa\tb\n")
    assert rows(read_parallel_table(pairs=path)) == [("a", "b", 1)]


def test_text_pairs_no_separator_on_first_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.txt", "\njust a sentence\na\tb\n")
    err = raises("no separator", pairs=path)
    assert (err.path, err.line) == (str(path), 2)
    assert err.message == "no separator: expected 'src ||| tgt' or 'src<TAB>tgt'"


def test_tsv_missing_separator_later(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.tsv", "a\tb\nc\td\nno tab here\n")
    err = raises("no tab separator", pairs=path)
    assert (err.path, err.line) == (str(path), 3)


def test_triple_bar_missing_separator_later(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.txt.zst", "a ||| b\nc\td\n")
    err = raises(r"no '\|\|\|' separator", pairs=path)
    assert (err.path, err.line) == (str(path), 2)


@pytest.mark.parametrize("name", ["p.tsv", "p.tsv.gz"])
def test_text_pairs_invalid_utf8_line_3(tmp_path: Path, name: str) -> None:
    path = write_bytes(tmp_path / name, b"a\tb\nc\td\ne\t\xe9t\xe9\n")
    err = raises("invalid UTF-8", pairs=path)
    assert (err.path, err.line) == (str(path), 3)
    assert "0xe9" in err.message


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_text_pairs_empty_corpus(tmp_path: Path, text: str) -> None:
    path = write_text(tmp_path / "p.tsv", text)
    err = raises("empty corpus: no sentence pairs", pairs=path)
    assert (err.path, err.line) == (str(path), None)


def test_tatoeba_if_present() -> None:
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "parallel" / "tatoeba.en-fr.tsv"
    if not path.exists():
        pytest.skip(f"shared data absent: {path}")
    table = read_parallel_table(pairs=path)
    assert table.num_rows == 142787
    assert rows(table.slice(0, 1)) == [("Go.", "Va !", 1)]
    assert table["line"][-1].as_py() == 142787


# --- batching -----------------------------------------------------------------------------------------------


def five_lines_inputs(tmp_path: Path) -> dict[str, dict]:
    tsv = write_text(tmp_path / "five.tsv", "".join(f"{s}\t{t}\n" for s, t in FIVE))
    en = write_text(tmp_path / "five.en", "".join(f"{s}\n" for s, _ in FIVE))
    fr = write_text(tmp_path / "five.fr", "".join(f"{t}\n" for _, t in FIVE))
    jsonl = write_jsonl(tmp_path / "five.jsonl", [{"src": s, "tgt": t} for s, t in FIVE])
    parquet = tmp_path / "five.parquet"
    pq.write_table(pairs_table(FIVE), parquet, row_group_size=3)
    arrow = tmp_path / "five.arrow"
    feather.write_feather(pairs_table(FIVE), arrow, chunksize=4)
    return {
        "two": {"src": en, "tgt": fr},
        "tsv": {"pairs": tsv},
        "jsonl": {"pairs": jsonl},
        "parquet": {"pairs": parquet},
        "arrow": {"pairs": arrow},
    }


@pytest.mark.parametrize("kind", ["two", "tsv", "jsonl", "parquet", "arrow"])
def test_batch_boundaries(tmp_path: Path, kind: str) -> None:
    kwargs = five_lines_inputs(tmp_path)[kind]
    small = list(read_parallel(**kwargs, batch_size=2))
    assert all(b.schema == SCHEMA for b in small)
    assert all(1 <= b.num_rows <= 2 for b in small)
    assert sum(b.num_rows for b in small) == 5
    whole = list(read_parallel(**kwargs))
    assert len(whole) == (2 if kind == "arrow" else 1)  # Arrow keeps its native record batches
    expected = numbered(FIVE)
    assert rows(pa.Table.from_batches(small)) == expected
    assert rows(pa.Table.from_batches(whole)) == expected


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("kind", ["two", "tsv"])
def test_text_batches_across_read_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, batch_size: int
) -> None:
    monkeypatch.setattr(corpus, "TEXT_BLOCK_BYTES", 16)  # many small read blocks of whole lines
    kwargs = five_lines_inputs(tmp_path)[kind]
    batches = list(read_parallel(**kwargs, batch_size=batch_size))
    assert [b.num_rows for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert rows(pa.Table.from_batches(batches)) == numbered(FIVE)


def test_two_files_mismatch_across_read_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "TEXT_BLOCK_BYTES", 4)
    src = write_text(tmp_path / "a.en", "".join(f"{i}\n" for i in range(100)))
    tgt = write_text(tmp_path / "a.fr", "".join(f"{i}\n" for i in range(98)))
    err = raises("line count mismatch", src=src, tgt=tgt, batch_size=7)
    assert (err.path, err.line) == (str(tgt), 98)
    assert f"src file {src} has 100 lines" in err.message


def test_text_batches_are_full(tmp_path: Path) -> None:
    kwargs = five_lines_inputs(tmp_path)["two"]
    assert [b.num_rows for b in read_parallel(**kwargs, batch_size=2)] == [2, 2, 1]
    assert [b.num_rows for b in read_parallel(**kwargs, batch_size=5)] == [5]


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        read_parallel(pairs=tmp_path / "x.tsv", batch_size=0)


# --- Parquet and Arrow --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.parquet", "p.PARQUET", "p.parquet.gz", "p.parquet.zst"])
def test_parquet(tmp_path: Path, name: str) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pairs_table(PAIRS), plain)
    path = write_bytes(tmp_path / name, plain.read_bytes())
    assert rows(read_parallel_table(pairs=path)) == numbered(PAIRS)


def test_parquet_custom_columns_and_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "english": pa.array([s for s, _ in PAIRS], pa.large_string()),
            "french": pa.array([t for _, t in PAIRS]).dictionary_encode(),
        }
    )
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    out = read_parallel_table(pairs=path, src_column="english", tgt_column="french")
    assert out.schema == SCHEMA
    assert rows(out) == numbered(PAIRS)


@pytest.mark.parametrize("name", ["p.arrow", "p.feather", "p.ipc", "p.arrow.zst"])
def test_arrow_ipc_file(tmp_path: Path, name: str) -> None:
    plain = tmp_path / "plain.arrow"
    with pa.ipc.new_file(plain, pairs_table(PAIRS).schema) as writer:
        writer.write_table(pairs_table(PAIRS))
    path = write_bytes(tmp_path / name, plain.read_bytes())
    assert rows(read_parallel_table(pairs=path)) == numbered(PAIRS)


@pytest.mark.parametrize("name", ["s.arrow", "s.ipc.gz"])
def test_arrow_ipc_stream(tmp_path: Path, name: str) -> None:
    plain = tmp_path / "plain-stream.arrow"
    table = pairs_table(PAIRS, src="en", tgt="fr")
    with pa.ipc.new_stream(plain, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    path = write_bytes(tmp_path / name, plain.read_bytes())
    out = read_parallel_table(pairs=path, src_column="en", tgt_column="fr")
    assert rows(out) == numbered(PAIRS)


def test_arrow_binary_columns_are_decoded(tmp_path: Path) -> None:
    path = tmp_path / "b.arrow"
    feather.write_feather(pa.table({"src": pa.array([b"caf\xc3\xa9"]), "tgt": pa.array([b"x"])}), path)
    assert rows(read_parallel_table(pairs=path)) == [("café", "x", 1)]


def test_arrow_binary_invalid_utf8_names_row(tmp_path: Path) -> None:
    path = tmp_path / "b.arrow"
    feather.write_feather(pa.table({"src": pa.array([b"a", b"b", b"\xff"]), "tgt": pa.array([b"x"] * 3)}), path)
    err = raises("invalid UTF-8 in column 'src'", pairs=path)
    assert (err.path, err.line) == (str(path), 3)


def test_arrow_string_column_with_invalid_utf8_names_row(tmp_path: Path) -> None:
    # Arrow IPC readers do not validate string data; the reader must
    offsets = pa.py_buffer(bytes(pa.array([0, 1, 2, 4], pa.int32()).buffers()[1]))
    bad = pa.Array.from_buffers(pa.string(), 3, [None, offsets, pa.py_buffer(b"ab\xffc")])
    path = tmp_path / "bad.arrow"
    table = pa.table({"src": pa.array(["x", "y", "z"]), "tgt": bad})
    with pa.ipc.new_file(path, table.schema) as writer:
        writer.write_table(table)
    err = raises("invalid UTF-8 in column 'tgt'", pairs=path)
    assert (err.path, err.line) == (str(path), 3)


@pytest.mark.parametrize("name", ["m.parquet", "m.arrow"])
def test_columnar_missing_column(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    table = pa.table({"source": ["a"], "tgt": ["b"], "n": [1]})
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        feather.write_feather(table, path)
    err = raises("missing column", pairs=path)
    assert (err.path, err.line) == (str(path), None)
    assert err.message == "missing column 'src' (columns present: 'source', 'tgt', 'n')"


@pytest.mark.parametrize("name", ["n.parquet", "n.arrow"])
def test_columnar_null_names_row(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    table = pairs_table([("a", "b"), ("c", "d"), ("e", "f"), ("g", None)])
    if name.endswith(".parquet"):
        pq.write_table(table, path, row_group_size=2)
    else:
        feather.write_feather(table, path, chunksize=2)
    err = raises("null value", pairs=path)
    assert (err.path, err.line) == (str(path), 4)
    assert err.message == "null value in column 'tgt'"


def test_columnar_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"src": ["a"], "tgt": [1]}), path)
    err = raises("column 'tgt' has type int64, expected strings", pairs=path)
    assert err.path == str(path)


@pytest.mark.parametrize("name", ["e.parquet", "e.arrow"])
def test_columnar_empty_corpus(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    table = pairs_table([])
    table = table.cast(pa.schema([("src", pa.string()), ("tgt", pa.string()), ("id", pa.int64())]))
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        feather.write_feather(table, path)
    err = raises("empty corpus", pairs=path)
    assert (err.message, err.path) == ("empty corpus: no sentence pairs", str(path))


@pytest.mark.parametrize(
    ("name", "match"), [("x.parquet", "not a readable Parquet file"), ("x.arrow", "not an Arrow IPC")]
)
def test_columnar_not_that_format(tmp_path: Path, name: str, match: str) -> None:
    path = write_text(tmp_path / name, "a\tb\n")
    err = raises(match, pairs=path)
    assert err.path == str(path)


# --- JSON lines ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.jsonl", "p.json", "p.jsonl.gz", "p.jsonl.zst"])
def test_jsonl(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, [{"src": s, "tgt": t, "extra": [1, 2]} for s, t in PAIRS])
    assert rows(read_parallel_table(pairs=path)) == numbered(PAIRS)


def test_jsonl_custom_columns_and_blank_lines(tmp_path: Path) -> None:
    records = [json.dumps({"en": s, "fr": t}, ensure_ascii=False) for s, t in PAIRS]
    path = write_text(tmp_path / "p.jsonl", "\n".join([records[0], "", records[1], "  ", records[2]]) + "\n")
    out = read_parallel_table(pairs=path, src_column="en", tgt_column="fr")
    # line = line of the object in the file (blank lines are not records)
    assert rows(out) == [
        (PAIRS[0][0], PAIRS[0][1], 1),
        (PAIRS[1][0], PAIRS[1][1], 3),
        (PAIRS[2][0], PAIRS[2][1], 5),
    ]


def test_jsonl_bad_json_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.jsonl", '{"src": "a", "tgt": "b"}\n{"src": "c", "tgt": }\n')
    err = raises("invalid JSON", pairs=path)
    assert (err.path, err.line) == (str(path), 2)
    assert err.message == "invalid JSON: Expecting value (column 21)"


def test_jsonl_not_an_object(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.json", '[{"src": "a", "tgt": "b"}]\n')
    err = raises("expected one JSON object per line, got an array", pairs=path)
    assert (err.path, err.line) == (str(path), 1)


def test_jsonl_missing_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"src": "a", "tgt": "b"}, {"src": "c", "target": "d"}])
    err = raises("missing column", pairs=path)
    assert (err.path, err.line) == (str(path), 2)
    assert err.message == "missing column 'tgt' (columns present: 'src', 'target')"


def test_jsonl_null_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl.gz", [{"src": "a", "tgt": "b"}] * 3 + [{"src": None, "tgt": "d"}])
    err = raises("null value", pairs=path)
    assert (err.path, err.line) == (str(path), 4)
    assert err.message == "null value in column 'src'"


def test_jsonl_non_string_value(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"src": "a", "tgt": 3}])
    err = raises("column 'tgt' is a number, expected a string", pairs=path)
    assert err.line == 1


def test_jsonl_invalid_utf8_line_3(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "p.jsonl.zst", b'{"src":"a","tgt":"b"}\n{"src":"a","tgt":"b"}\n{"src":"\xff","tgt":"b"}\n'
    )
    err = raises("invalid UTF-8", pairs=path)
    assert (err.path, err.line) == (str(path), 3)


def test_jsonl_lone_surrogate_names_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "p.jsonl", '{"src": "a", "tgt": "b"}\n{"src": "ok", "tgt": "x\\ud800y"}\n')
    err = raises("lone surrogate", pairs=path)
    assert (err.path, err.line) == (str(path), 2)
    assert err.message == "invalid Unicode in column 'tgt': lone surrogate \\ud800"


@pytest.mark.parametrize("text", ["", "\n \n"])
def test_jsonl_empty_corpus(tmp_path: Path, text: str) -> None:
    path = write_text(tmp_path / "p.jsonl", text)
    err = raises("empty corpus", pairs=path)
    assert (err.message, err.path, err.line) == ("empty corpus: no sentence pairs", str(path), None)


# --- arguments ----------------------------------------------------------------------------------------------


def test_pairs_format_from_name() -> None:
    assert pairs_format("a.parquet.zst") == "parquet"
    assert pairs_format("a.feather") == "arrow"
    assert pairs_format("a.IPC.gz") == "arrow"
    assert pairs_format("a.json") == "jsonl"
    assert pairs_format("a.tsv.gz") == "text"
    assert pairs_format("a.en-fr") == "text"


def test_missing_files(tmp_path: Path) -> None:
    present = write_text(tmp_path / "a.en", "x\n")
    for kwargs, missing in [
        ({"pairs": tmp_path / "nope.tsv"}, tmp_path / "nope.tsv"),
        ({"pairs": tmp_path / "nope.parquet"}, tmp_path / "nope.parquet"),
        ({"src": present, "tgt": tmp_path / "nope.fr"}, tmp_path / "nope.fr"),
        ({"src": tmp_path / "nope.en.gz", "tgt": present}, tmp_path / "nope.en.gz"),
    ]:
        with pytest.raises(InputError) as info:
            read_parallel(**kwargs)  # raised at once, before iteration
        assert (info.value.message, info.value.path, info.value.line) == ("no such file", str(missing), None)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    err = raises("is a directory", pairs=tmp_path)
    assert err.path == str(tmp_path)


def test_bad_argument_combinations(tmp_path: Path) -> None:
    a = write_text(tmp_path / "a.en", "x\n")
    b = write_text(tmp_path / "a.tsv", "x\ty\n")
    with pytest.raises(InputError, match="either a pairs file or src and tgt files, not both") as info:
        read_parallel(src=a, pairs=b)
    assert info.value.path == str(b)
    with pytest.raises(InputError, match="src file given without a tgt file") as info:
        read_parallel(src=a)
    assert info.value.path == str(a)
    with pytest.raises(InputError, match="tgt file given without a src file"):
        read_parallel(tgt=a)
    with pytest.raises(InputError, match="no input"):
        read_parallel()
