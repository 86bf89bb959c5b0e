"""Lexicon files: Parquet (default), TSV and JSONL, with metadata; export to PreAlign's JSON dictionary.

Every lexicon file holds the columns of :data:`prealign.lexicon.score.LEXICON_SCHEMA`, one row per (src, tgt).
Metadata (languages, aligner, corpus size, tool version, ...) is a JSON object: in Parquet it is stored in the
schema metadata under the key ``prealign``; the text formats get a sidecar ``<path>.meta.json``. The ``.json``
export is write-only: one ``{"words": "bank $ banque $ rive"}`` object per source word (the source word, then
its translations best first, joined by ``" $ "``), the dictionary format of the PreAlign reference code.
A multi-way lexicon (:mod:`prealign.lexicon.multiway`) has one more column, ``tgt_lang`` (the translation's
language); it is read, validated and written like the others, and its ``.json`` export lists every language's
translations of a word on one line (languages in the order of the metadata's ``tgt_langs``, then best first).
All writes are atomic: a temporary file in the target directory, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prealign.errors import InputError
from prealign.lexicon.score import LEXICON_SCHEMA, SORT_BY, SORT_DESCENDING
from prealign.textio import atomic_write

__all__ = [
    "WRITE_FORMATS",
    "READ_FORMATS",
    "METADATA_KEY",
    "check_write_format",
    "write_lexicon",
    "read_lexicon",
    "metadata_path",
    "LANG_COLUMN",
    "is_language",
]

WRITE_FORMATS = (".parquet", ".tsv", ".jsonl", ".json")
READ_FORMATS = (".parquet", ".tsv", ".jsonl")
METADATA_KEY = "prealign"
COLUMNS = list(LEXICON_SCHEMA)
LANG_COLUMN = "tgt_lang"  # the optional column of a multi-way lexicon
_EXPORT_SEP = " $ "
_LANGUAGE_PATTERN = r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*"
_LANGUAGE = re.compile(_LANGUAGE_PATTERN)


def is_language(code: Any) -> bool:
    """True for a language code as lexicons record it (``en``, ``zh-Hant``, ``pt_BR``): letters and digits in
    parts joined by ``-`` or ``_``, at most 35 characters."""
    return isinstance(code, str) and len(code) <= 35 and _LANGUAGE.fullmatch(code) is not None


def _language_ok(column: str = LANG_COLUMN) -> pl.Expr:
    """:func:`is_language`, vectorised (a null is not a language)."""
    col = pl.col(column)
    return (col.str.contains(f"^{_LANGUAGE_PATTERN}$") & (col.str.len_chars() <= 35)).fill_null(False)


def _columns(df: pl.DataFrame | list[str]) -> list[str]:
    """The lexicon columns ``df`` has: :data:`COLUMNS`, and ``tgt_lang`` when it is there."""
    names = df.columns if isinstance(df, pl.DataFrame) else df
    return [*COLUMNS, LANG_COLUMN] if LANG_COLUMN in names else COLUMNS


def metadata_path(path: str | os.PathLike) -> Path:
    """The metadata sidecar of a text-format lexicon: ``<path>.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _suffix(path: Path, allowed: tuple[str, ...]) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        found = path.suffix or "(none)"
        raise InputError(f"unsupported lexicon format {found!r}; use one of {', '.join(allowed)}", path)
    return suffix


def check_write_format(path: str | os.PathLike) -> str:
    """The format (suffix) a lexicon written to ``path`` gets; an unknown one is an :class:`InputError`
    (checked before a job starts, so that it never ends by failing to write)."""
    return _suffix(Path(path), WRITE_FORMATS)


def _canonical(df: pl.DataFrame) -> pl.DataFrame:
    """The lexicon columns in order and with the exact dtypes (ValueError when one is missing); ``tgt_lang``
    is kept when there."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"lexicon lacks column(s) {missing}; it has {df.columns}")
    if LANG_COLUMN in df.columns:
        bad = df.filter(~_language_ok()) if df[LANG_COLUMN].dtype == pl.String else df
        if bad.height:
            raise ValueError(f"bad {LANG_COLUMN!r} value {bad[LANG_COLUMN][0]!r} (a language code like fr, zh-Hant)")
        return df.select(_columns(df)).cast({**LEXICON_SCHEMA, LANG_COLUMN: pl.String()})
    return df.select(COLUMNS).cast(LEXICON_SCHEMA)


def write_lexicon(df: pl.DataFrame, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Write a lexicon, its format chosen by the extension: ``.parquet``, ``.tsv``, ``.jsonl`` or ``.json``.

    ``metadata`` must be JSON-serialisable. Row order is kept (``.json`` orders each word's translations by
    score desc, count desc, tgt asc, and source words alphabetically; a multi-way lexicon's languages in the
    order of ``metadata["tgt_langs"]``, else alphabetical). Words may not contain tabs or line
    breaks (the TSV would be ambiguous), nor, for ``.json``, be ``$`` or hold a space in the source word or
    `` $ `` in a translation: ValueError. An unknown extension is an :class:`InputError`.
    """
    path = Path(path)
    suffix = _suffix(path, WRITE_FORMATS)
    df = _canonical(df)
    meta_json = json.dumps(dict(metadata or {}), ensure_ascii=False, sort_keys=True, allow_nan=False)
    bad = df.filter(pl.col("src").str.contains(r"[\t\n\r]") | pl.col("tgt").str.contains(r"[\t\n\r]"))
    if bad.height:
        raise ValueError(f"lexicon words may not contain tabs or line breaks: {bad.row(0)[:2]!r}")

    if suffix == ".parquet":
        table = df.to_arrow()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: meta_json})
        atomic_write(path, lambda fh: pq.write_table(table, fh, compression="zstd"))
        return
    if suffix == ".tsv":
        atomic_write(path, lambda fh: df.write_csv(fh, separator="\t", quote_style="never"))
    elif suffix == ".jsonl":
        atomic_write(path, lambda fh: df.write_ndjson(fh))
    else:
        text = _export_json(df, (metadata or {}).get("tgt_langs"))
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    atomic_write(metadata_path(path), lambda fh: fh.write((meta_json + "\n").encode("utf-8")))


def _export_json(df: pl.DataFrame, languages: Any = None) -> str:
    """PreAlign's dictionary: ``{"words": "src $ tgt1 $ tgt2"}`` per source word, translations best first; in a
    multi-way lexicon, by language (``languages`` order, else alphabetical), then best first, each word once."""
    bad = df.filter((pl.col("src") == "$") | (pl.col("tgt") == "$") | pl.col("src").str.contains(" ", literal=True))
    bad = pl.concat([bad, df.filter(pl.col("tgt").str.contains(" $ ", literal=True))])
    if bad.height:
        raise ValueError(f"the .json export cannot hold the word pair {bad.row(0)[:2]!r} (' $ ' separates words)")
    if LANG_COLUMN in df.columns:
        found = sorted(set(df[LANG_COLUMN].to_list()))
        order = [lang for lang in languages if lang in found] if isinstance(languages, list) else []
        order += [lang for lang in found if lang not in order]
        rank = pl.col(LANG_COLUMN).replace_strict(order, list(range(len(order))), return_dtype=pl.Int64)
        df = df.with_columns(rank.alias("_rank")).sort(
            ["src", "_rank", *SORT_BY[1:]], descending=[False, False, *SORT_DESCENDING[1:]]
        )
        grouped = df.group_by("src", maintain_order=True).agg(pl.col("tgt").unique(maintain_order=True))
    else:
        grouped = df.sort(SORT_BY, descending=SORT_DESCENDING).group_by("src", maintain_order=True).agg(pl.col("tgt"))
    lines = [
        json.dumps({"words": _EXPORT_SEP.join([src, *tgts])}, ensure_ascii=False) + "\n"
        for src, tgts in grouped.iter_rows()
    ]
    return "".join(lines)


def read_lexicon(path: str | os.PathLike) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read a ``.parquet``, ``.tsv`` or ``.jsonl`` lexicon and its metadata (``{}`` when there is none).

    The columns are validated and cast to the exact dtypes; extra columns are dropped, except ``tgt_lang`` (a
    multi-way lexicon), which is kept and must hold a language code on every row. A missing file, a missing
    column, a value of the wrong type, an empty word, a probability outside [0, 1], a non-finite score, a
    negative count or a bad ``tgt_lang`` is an :class:`InputError` naming the file (and, for text formats, the
    line; for Parquet, the 1-based row).
    """
    path = Path(path)
    suffix = _suffix(path, READ_FORMATS)
    if not path.exists():
        raise InputError("no such file", path)
    if not path.is_file():
        raise InputError("not a regular file", path)
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".tsv":
        df = _read_tsv(path)
    else:
        df = _read_jsonl(path)
    return df, _read_sidecar(path)


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = metadata_path(path)
    if not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"bad metadata JSON: {exc}", side) from None
    if not isinstance(meta, dict):
        raise InputError("metadata must be a JSON object", side)
    return meta


def _read_parquet(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet: {exc}", path) from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY.encode())
    meta: dict[str, Any] = {}
    if raw is not None:
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"bad '{METADATA_KEY}' metadata: {exc}", path) from None
        if not isinstance(meta, dict):
            raise InputError(f"'{METADATA_KEY}' metadata must be a JSON object", path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"missing column(s) {missing}; found {table.column_names}", path)
    df = pl.from_arrow(table.select(_columns(table.column_names)))
    assert isinstance(df, pl.DataFrame)
    return _validate(df, path, first_line=1, line_word="row"), meta


def _validate(df: pl.DataFrame, path: Path, first_line: int | list[int], line_word: str = "line") -> pl.DataFrame:
    """Cast ``df`` (all lexicon columns, any dtypes) to the schema and check its values.

    ``first_line`` is the line of row 0 (rows follow one a line), or a list with each row's line.
    """

    def fail(row: int, message: str) -> None:
        line = first_line[row] if isinstance(first_line, list) else first_line + row
        if line_word == "line":
            raise InputError(message, path, line)
        raise InputError(f"{line_word} {line}: {message}", path)

    for col, dtype in LEXICON_SCHEMA.items():
        series = df[col]
        if series.dtype == dtype:
            continue
        if dtype == pl.String and series.dtype != pl.String:
            cast = pl.Series(col, [None] * len(series), dtype=pl.String)  # non-strings are errors
        elif dtype == pl.Int64 and series.dtype.is_float():
            whole = series.is_not_null() & series.is_finite() & (series == series.floor())
            cast = pl.select(pl.when(whole).then(series.cast(pl.Int64, strict=False))).to_series()
        else:
            cast = series.cast(dtype, strict=False)
        bad = (cast.is_null() & series.is_not_null()).arg_true()
        if len(bad):
            row = int(bad[0])
            fail(row, f"column {col!r}: {series[row]!r} is not {dtype}")
        df = df.with_columns(cast.alias(col))

    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("src").is_null() | (pl.col("src") == ""), "empty or missing 'src'"),
        (pl.col("tgt").is_null() | (pl.col("tgt") == ""), "empty or missing 'tgt'"),
        (pl.col("count").is_null() | (pl.col("count") < 0), "missing or negative 'count'"),
        (~pl.col("score").is_finite().fill_null(False), "missing or non-finite 'score'"),
    ]
    for col in ("p_tgt_given_src", "p_src_given_tgt"):
        in_range = pl.col(col).is_between(0.0, 1.0).fill_null(False)
        checks.append((~in_range, f"missing or out-of-range {col!r} (must be in [0, 1])"))
    flags = df.select([expr.alias(f"c{n}") for n, (expr, _) in enumerate(checks)])
    for n, (_, message) in enumerate(checks):
        bad = flags[f"c{n}"].arg_true()
        if len(bad):
            fail(int(bad[0]), message)
    if LANG_COLUMN in df.columns:
        langs = df[LANG_COLUMN]
        if langs.dtype != pl.String:
            fail(0, f"column {LANG_COLUMN!r}: {langs[0]!r} is not String (a language code like fr, zh-Hant)")
        bad = df.select(~_language_ok()).to_series().arg_true()
        if len(bad):
            fail(int(bad[0]), _bad_lang(langs[int(bad[0])]))
    return df


def _bad_lang(value: Any) -> str:
    return f"column {LANG_COLUMN!r}: {value!r} is not a language code (like fr, zh-Hant)"


def _read_text(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without terminators (a final newline does not make an extra line)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("not valid UTF-8", path, data.count(b"\n", 0, exc.start) + 1) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _fast_tsv(path: Path) -> pl.DataFrame | None:
    """The TSV read by polars when the file is clean (else None, and the line-by-line reader says what's wrong)."""
    data = path.read_bytes()
    if b"\r" in data:
        return None
    header = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").split("\t")
    if any(c not in header for c in COLUMNS) or len(set(header)) != len(header):
        return None
    try:
        df = pl.read_csv(data, separator="\t", quote_char=None, infer_schema=False, has_header=True)
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None
    if df.columns != header or df.height != _line_count(data) - 1:
        return None
    columns = _columns(header)
    df = df.select(columns).with_columns(pl.col(c).str.strip_chars() for c in columns[2:])
    if any(df[c].null_count() for c in columns):
        return None
    return df


def _read_tsv(path: Path) -> pl.DataFrame:
    fast = _fast_tsv(path)
    if fast is not None:
        return _validate(fast, path, first_line=2)
    lines = _read_text(path)
    if not lines:
        raise InputError("empty file: expected a header row " + "\t".join(COLUMNS), path, 1)
    header = lines[0].split("\t")
    missing = [c for c in COLUMNS if c not in header]
    if missing or len(set(header)) != len(header):
        raise InputError(f"header must name the columns {COLUMNS} once each; got {header}", path, 1)
    body = pl.Series("line", lines[1:], dtype=pl.String)
    numbers = pl.Series("n", range(2, len(lines) + 1), dtype=pl.Int64)
    keep = body.str.strip_chars() != ""
    body, numbers = body.filter(keep), numbers.filter(keep)
    fields = body.str.split("\t")
    wrong = (fields.list.len() != len(header)).arg_true()
    if len(wrong):
        row = int(wrong[0])
        got = len(fields[row])
        raise InputError(f"expected {len(header)} tab-separated fields, got {got}", path, int(numbers[row]))
    columns = _columns(header)
    df = pl.DataFrame({c: fields.list.get(header.index(c)) for c in columns})
    df = df.with_columns(pl.col(c).str.strip_chars() for c in columns[2:])
    return _validate(df, path, numbers.to_list())


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_JSON_CHECKS: dict[str, Callable[[Any], bool]] = {
    "src": _is_str,
    "tgt": _is_str,
    "count": _is_int64,
    "p_tgt_given_src": _is_number,
    "p_src_given_tgt": _is_number,
    "score": _is_number,
}


_JSON_SCHEMA = {"src": pl.String, "tgt": pl.String, "count": pl.Int64, **{c: pl.Float64 for c in COLUMNS[3:]}}
_JSON_NON_STRING_WORD = re.compile(rb'"(?:src|tgt|tgt_lang)"\s*:\s*[^"\s]')


def _fast_jsonl(path: Path) -> pl.DataFrame | None:
    """The JSONL read by polars when the file is clean (else None, and the line-by-line reader says what's wrong)."""
    data = path.read_bytes()
    if _JSON_NON_STRING_WORD.search(data):  # polars would turn a number or boolean word into a string
        return None
    schema = {**_JSON_SCHEMA, LANG_COLUMN: pl.String} if f'"{LANG_COLUMN}"'.encode() in data else _JSON_SCHEMA
    try:  # with a schema polars refuses a value of another type (a word is checked above)
        df = pl.read_ndjson(data, schema=schema)
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return None
    if df.height != _line_count(data) or any(df[c].null_count() for c in df.columns):
        return None
    return df


def _read_jsonl(path: Path) -> pl.DataFrame:
    fast = _fast_jsonl(path)
    if fast is not None:
        return _validate(fast, path, first_line=1)
    lines = _read_text(path)
    values: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    langs: list[Any] = []  # tgt_lang per row (None: no such key)
    numbers: list[int] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"bad JSON: {exc.msg}", path, n) from None
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object", path, n)
        missing = [c for c in COLUMNS if c not in obj]
        if missing:
            raise InputError(f"missing key(s) {missing}", path, n)
        for c in COLUMNS:
            v = obj[c]
            if not _JSON_CHECKS[c](v):
                raise InputError(f"key {c!r}: {v!r} is not {LEXICON_SCHEMA[c]}", path, n)
            values[c].append(v)
        langs.append(obj.get(LANG_COLUMN))
        numbers.append(n)
    df = pl.DataFrame(values, schema=_JSON_SCHEMA)
    if any(lang is not None for lang in langs):
        bad = next((k for k, lang in enumerate(langs) if not is_language(lang)), None)
        if bad is not None:
            raise InputError(_bad_lang(langs[bad]), path, numbers[bad])
        df = df.with_columns(pl.Series(LANG_COLUMN, langs, dtype=pl.String))
    return _validate(df, path, numbers)
