"""Read parallel text (sentence pairs) from the supported input formats as Arrow record batches.

Every reader yields batches with the schema :data:`SCHEMA`: ``src: string``, ``tgt: string`` and
``line: int64`` (the 1-based line of the record in its input file; for Parquet and Arrow the 1-based row
number). Bad input raises :class:`prealign.errors.InputError` naming the file and, where there is one, the
line or row.

Input modes (see :func:`read_parallel`):

* two line-aligned text files, ``src`` and ``tgt``;
* one ``pairs`` file, its format inferred from the name once ``.gz``/``.zst`` is stripped: ``.parquet``;
  ``.arrow``/``.feather``/``.ipc`` (Arrow IPC file or stream); ``.jsonl``/``.json`` (JSON lines); anything
  else is text, ``src ||| tgt`` or ``src<TAB>tgt`` per line, decided by the first non-blank line.

Text is streamed: it is read a block of about :data:`TEXT_BLOCK_BYTES` at a time and split and decoded in
Arrow (no Python object per line), so memory holds about one block and one batch. Text batches have
exactly ``batch_size`` rows but the last. Compressed Parquet or Arrow input is decompressed into memory
(they need random access); uncompressed, Parquet is read by row group and Arrow memory-mapped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import zip_longest

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prealign.errors import InputError
from prealign.textio import (
    check_readable,
    compression_suffix,
    count_lines,
    data_suffix,
    iter_line_arrays,
    json_objects,
    json_string,
    read_all_bytes,
)

PathLike = str | os.PathLike[str]

SCHEMA = pa.schema([("src", pa.string()), ("tgt", pa.string()), ("line", pa.int64())])
"""The schema of every batch :func:`read_parallel` yields."""

EMPTY_CORPUS = "empty corpus: no sentence pairs"
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
JSONL_SUFFIXES = (".jsonl", ".json")

_TRIPLE_BAR = "|||"
TEXT_BLOCK_BYTES = 1 << 20
"""Text is read and decoded in blocks of about this many bytes of whole lines."""


def pairs_format(path: PathLike) -> str:
    """The format of a pairs file from its name: ``"parquet"``, ``"arrow"``, ``"jsonl"`` or ``"text"``."""
    suffix = data_suffix(path)
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in ARROW_SUFFIXES:
        return "arrow"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return "text"


def read_parallel(
    src: PathLike | None = None,
    tgt: PathLike | None = None,
    pairs: PathLike | None = None,
    *,
    src_column: str = "src",
    tgt_column: str = "tgt",
    batch_size: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """Yield the sentence pairs of a parallel corpus as record batches of at most ``batch_size`` rows.

    Give either ``src`` and ``tgt`` (two line-aligned text files; an empty line is a pair with an empty side)
    or ``pairs`` (one file; ``src_column``/``tgt_column`` name the columns of Parquet, Arrow and JSONL input).
    In a text pairs file a blank line is an empty pair, so that ``line`` stays the input line; in JSONL a
    blank line is skipped and ``line`` is the line of the JSON object.

    The arguments and the existence of the files are checked at once; the content while iterating. Raises
    :class:`InputError` for mismatched line counts, invalid UTF-8, a text line without the separator, a
    missing column, a null or non-string value, a bad JSON line and a corpus without any pair.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if pairs is not None:
        if src is not None or tgt is not None:
            raise InputError("give either a pairs file or src and tgt files, not both", pairs)
        check_readable(pairs)
        fmt = pairs_format(pairs)
        if fmt == "parquet":
            return _read_parquet(pairs, src_column, tgt_column, batch_size)
        if fmt == "arrow":
            return _read_arrow(pairs, src_column, tgt_column, batch_size)
        if fmt == "jsonl":
            return _read_jsonl(pairs, src_column, tgt_column, batch_size)
        return _read_text_pairs(pairs, batch_size)
    if src is None and tgt is None:
        raise InputError("no input: give src and tgt files, or a pairs file")
    if tgt is None:
        raise InputError("src file given without a tgt file", src)
    if src is None:
        raise InputError("tgt file given without a src file", tgt)
    check_readable(src)
    check_readable(tgt)
    return _read_two_files(src, tgt, batch_size)


def read_parallel_table(
    src: PathLike | None = None,
    tgt: PathLike | None = None,
    pairs: PathLike | None = None,
    *,
    src_column: str = "src",
    tgt_column: str = "tgt",
    batch_size: int = 65536,
) -> pa.Table:
    """All of :func:`read_parallel`'s batches as one table (schema :data:`SCHEMA`)."""
    batches = read_parallel(src, tgt, pairs, src_column=src_column, tgt_column=tgt_column, batch_size=batch_size)
    return pa.Table.from_batches(list(batches), schema=SCHEMA)


def _make_batch(srcs: list[str], tgts: list[str], lines: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(srcs, pa.string()), pa.array(tgts, pa.string()), pa.array(lines, pa.int64())],
        schema=SCHEMA,
    )


def _line_numbers(first: int, n: int) -> pa.Array:
    return pa.array(np.arange(first, first + n, dtype=np.int64))


# --- text ---------------------------------------------------------------------------------------------------


def _line_batches(path: PathLike, batch_size: int) -> Iterator[pa.StringArray]:
    """The lines of a text file in arrays of exactly ``batch_size`` lines (the last one may be shorter)."""
    pending: list[pa.Array] = []
    have = 0
    for _, lines in iter_line_arrays(path, TEXT_BLOCK_BYTES):
        pending.append(lines)
        have += len(lines)
        if have < batch_size:
            continue
        whole = pa.concat_arrays(pending) if len(pending) > 1 else pending[0]
        start = 0
        while have - start >= batch_size:
            yield whole.slice(start, batch_size)
            start += batch_size
        pending = [whole.slice(start)] if start < have else []
        have -= start
    if have:
        yield pa.concat_arrays(pending) if len(pending) > 1 else pending[0]


def _read_two_files(src: PathLike, tgt: PathLike, batch_size: int) -> Iterator[pa.RecordBatch]:
    n = 0
    for a, b in zip_longest(_line_batches(src, batch_size), _line_batches(tgt, batch_size)):
        len_a = 0 if a is None else len(a)
        len_b = 0 if b is None else len(b)
        if len_a != len_b:
            raise _mismatch(src, tgt, short_is_src=len_a < len_b, n_short=n + min(len_a, len_b))
        yield pa.RecordBatch.from_arrays([a, b, _line_numbers(n + 1, len_a)], schema=SCHEMA)
        n += len_a
    if n == 0:
        raise InputError(EMPTY_CORPUS, src)


def _mismatch(src: PathLike, tgt: PathLike, *, short_is_src: bool, n_short: int) -> InputError:
    short, long = (src, tgt) if short_is_src else (tgt, src)
    short_side, long_side = ("src", "tgt") if short_is_src else ("tgt", "src")
    n_long = count_lines(long)
    return InputError(
        f"line count mismatch: {short_side} file ends after {n_short} lines but {long_side} file "
        f"{os.fspath(long)} has {n_long} lines (they must be line-aligned)",
        short,
        n_short if n_short > 0 else None,
    )


def _is_blank(lines: pa.Array) -> pa.BooleanArray:
    return pc.equal(pc.utf8_trim_whitespace(lines), "")


def _read_text_pairs(path: PathLike, batch_size: int) -> Iterator[pa.RecordBatch]:
    sep: str | None = None  # "|||" or "\t", decided by the first non-blank line
    leading_blank = 0  # blank lines before the format is known: emitted once it is (so as not to yield, then fail)
    n = 0
    for lines in _line_batches(path, batch_size):
        first = n + 1
        n += len(lines)
        if sep is None:
            blank = _is_blank(lines)
            index = pc.index(blank, False).as_py()
            if index < 0:
                leading_blank += len(lines)
                continue
            text = lines[index].as_py()
            if f" {_TRIPLE_BAR} " in text:
                sep = _TRIPLE_BAR
            elif "\t" in text:
                sep = "\t"
            else:
                raise InputError("no separator: expected 'src ||| tgt' or 'src<TAB>tgt'", path, first + index)
            for start in range(0, leading_blank, batch_size):
                size = min(batch_size, leading_blank - start)
                empty = pa.repeat("", size).cast(pa.string())
                yield pa.RecordBatch.from_arrays([empty, empty, _line_numbers(start + 1, size)], schema=SCHEMA)
        yield _split_pairs(lines, sep, path, first)
    if sep is None:
        msg = EMPTY_CORPUS if leading_blank == 0 else f"{EMPTY_CORPUS} (all {leading_blank} lines are blank)"
        raise InputError(msg, path)


def _split_pairs(lines: pa.StringArray, sep: str, path: PathLike, first: int) -> pa.RecordBatch:
    """Split lines on ``sep`` (``|||``: exactly one, sides stripped; tab: two columns); blank: empty pair."""
    has = pc.match_substring(lines, sep)
    if has.true_count < len(lines):
        bad = pc.invert(pc.or_(has, _is_blank(lines)))
        index = pc.index(bad, True).as_py()
        if index >= 0:
            if sep == _TRIPLE_BAR:
                msg = "no '|||' separator (this file is 'src ||| tgt', as its first pair is)"
            else:
                msg = "no tab separator (this file is 'src<TAB>tgt', as its first pair is)"
            raise InputError(msg, path, first + index)
        lines = pc.if_else(has, lines, sep)  # a blank line becomes an empty pair
    if sep == _TRIPLE_BAR:
        _refuse_third_field(lines, path, first)
    parts = pc.split_pattern(lines, sep, max_splits=1 if sep == _TRIPLE_BAR else 2)
    src = pc.list_element(parts, 0)
    tgt = pc.list_element(parts, 1)
    if sep == _TRIPLE_BAR:
        src = pc.utf8_trim_whitespace(src)
        tgt = pc.utf8_trim_whitespace(tgt)
    return pa.RecordBatch.from_arrays([src, tgt, _line_numbers(first, len(lines))], schema=SCHEMA)


def _refuse_third_field(lines: pa.StringArray, path: PathLike, first: int) -> None:
    """A ``src ||| tgt`` line with a second ``|||`` (a third field) is an error naming the line: joining it to
    the target would align text that is not the translation."""
    extra = pc.greater(pc.count_substring(lines, _TRIPLE_BAR), 1)
    index = pc.index(extra, True).as_py()
    if index >= 0:
        raise InputError("a third field: more than one '|||' on the line (expected 'src ||| tgt')", path, first + index)


# --- JSON lines ---------------------------------------------------------------------------------------------


def _read_jsonl(path: PathLike, src_column: str, tgt_column: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    srcs: list[str] = []
    tgts: list[str] = []
    lines: list[int] = []
    seen = False
    for n, obj in json_objects(path):
        pair = [json_string(obj, column, path, n) for column in (src_column, tgt_column)]
        srcs.append(pair[0])
        tgts.append(pair[1])
        lines.append(n)
        seen = True
        if len(lines) == batch_size:
            yield _json_batch(srcs, tgts, lines, path, (src_column, tgt_column))
            srcs, tgts, lines = [], [], []
    if lines:
        yield _json_batch(srcs, tgts, lines, path, (src_column, tgt_column))
    elif not seen:
        raise InputError(EMPTY_CORPUS, path)


def _json_batch(
    srcs: list[str], tgts: list[str], lines: list[int], path: PathLike, columns: tuple[str, str]
) -> pa.RecordBatch:
    """The batch, or an :class:`InputError` for a string that is not valid Unicode (lone surrogate escape)."""
    try:
        return _make_batch(srcs, tgts, lines)
    except UnicodeEncodeError:
        for s, t, line in zip(srcs, tgts, lines, strict=True):
            for value, column in ((s, columns[0]), (t, columns[1])):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    bad = f"\\u{ord(value[exc.start]):04x}"
                    msg = f"invalid Unicode in column {column!r}: lone surrogate {bad}"
                    raise InputError(msg, path, line) from None
        raise


# --- Parquet and Arrow --------------------------------------------------------------------------------------


def _open_source(path: PathLike) -> pa.NativeFile:
    """A random-access Arrow source: memory-mapped, or the decompressed bytes of a ``.gz``/``.zst`` file."""
    if compression_suffix(path):
        return pa.BufferReader(read_all_bytes(path))
    return pa.memory_map(os.fspath(path), "r")


def _check_columns(names: list[str], path: PathLike, src_column: str, tgt_column: str) -> None:
    for column in (src_column, tgt_column):
        if column not in names:
            present = ", ".join(repr(k) for k in names) or "none"
            raise InputError(f"missing column {column!r} (columns present: {present})", path)


def _read_parquet(path: PathLike, src_column: str, tgt_column: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    source = _open_source(path)
    try:
        pf = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        source.close()
        raise InputError(f"not a readable Parquet file ({exc})", path) from None
    try:
        _check_columns(pf.schema_arrow.names, path, src_column, tgt_column)
    except InputError:
        source.close()
        raise
    columns = list(dict.fromkeys((src_column, tgt_column)))
    return _columnar(
        pf.iter_batches(batch_size=batch_size, columns=columns),
        source,
        path,
        src_column,
        tgt_column,
        batch_size,
    )


def _read_arrow(path: PathLike, src_column: str, tgt_column: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    source = _open_source(path)
    batches: Iterable[pa.RecordBatch]
    try:
        reader = pa.ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (pa.ArrowException, OSError):
        try:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            batches = reader
        except (pa.ArrowException, OSError) as exc:
            source.close()
            raise InputError(f"not an Arrow IPC file or stream ({exc})", path) from None
    try:
        _check_columns(reader.schema.names, path, src_column, tgt_column)
    except InputError:
        source.close()
        raise
    return _columnar(batches, source, path, src_column, tgt_column, batch_size)


def _columnar(
    batches: Iterable[pa.RecordBatch],
    source: pa.NativeFile,
    path: PathLike,
    src_column: str,
    tgt_column: str,
    batch_size: int,
) -> Iterator[pa.RecordBatch]:
    """Re-slice ``batches`` to at most ``batch_size`` rows with the output schema; numbers rows from 1."""
    row = 0
    with source:
        it = iter(batches)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"cannot read data after row {row} ({exc})", path) from None
            for offset in range(0, batch.num_rows, batch_size):
                chunk = batch.slice(offset, batch_size)
                s = _strings(chunk.column(src_column), src_column, path, row)
                t = _strings(chunk.column(tgt_column), tgt_column, path, row)
                n = chunk.num_rows
                line = pa.array(np.arange(row + 1, row + n + 1, dtype=np.int64))
                row += n
                yield pa.RecordBatch.from_arrays([s, t, line], schema=SCHEMA)
    if row == 0:
        raise InputError(EMPTY_CORPUS, path)


def _strings(arr: pa.Array, column: str, path: PathLike, first_row: int) -> pa.Array:
    """``arr`` as a valid ``string`` array without nulls, or an :class:`InputError` naming the bad row."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    kind = arr.type
    is_string = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    is_binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
    if not (is_string or is_binary):
        raise InputError(f"column {column!r} has type {kind}, expected strings", path)
    if arr.null_count:
        index = pc.index(arr.is_null(), True).as_py()
        raise InputError(f"null value in column {column!r}", path, first_row + index + 1)
    try:
        out = arr if pa.types.is_string(kind) else arr.cast(pa.string())
        out.validate(full=True)  # Arrow IPC readers do not check that strings are UTF-8
    except pa.ArrowInvalid:
        for index, value in enumerate(arr.cast(pa.large_binary()).to_pylist()):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"invalid UTF-8 in column {column!r}", path, first_row + index + 1) from None
        raise
    return out
