"""Multi-way lexicons: bilingual lexicons joined on their pivot (source) language.

A multi-way lexicon is a lexicon (:data:`prealign.lexicon.score.LEXICON_SCHEMA`) with one more column,
``tgt_lang``: one row per (pivot word, language, translation), each row keeping the score and probabilities of
the bilingual lexicon it came from. Rows are sorted by ``src``, then language (in the order of the metadata's
``tgt_langs``, the order the inputs were given in), then the lexicon's usual order (score desc, count desc,
tgt asc). Its metadata records ``src_lang``, ``tgt_langs`` and, per input, its file name, sha256, languages,
rows and own metadata. Pivot words are matched as exact strings.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prealign.errors import InputError
from prealign.lexicon.lexicon_io import COLUMNS, LANG_COLUMN, is_language
from prealign.lexicon.score import SORT_BY, SORT_DESCENDING

__all__ = [
    "KIND",
    "Combined",
    "LexiconInput",
    "combine",
    "languages_of",
    "merge_files",
    "parse_lang_weights",
    "parse_languages",
    "sort_multiway",
]

KIND = "multi-way"
UNKNOWN = "unknown"  # the name of a single bilingual lexicon's language when its metadata does not say


@dataclass(frozen=True)
class LexiconInput:
    """One lexicon file as read: its path, rows and metadata."""

    path: Path
    frame: pl.DataFrame
    metadata: Mapping[str, Any]


def parse_languages(text: str) -> list[str | None]:
    """``"fr,-,zh"`` -> ``["fr", None, "zh"]`` (``-``: from the lexicon's metadata); ValueError when malformed."""
    out: list[str | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "-":
            out.append(None)
        elif is_language(part):
            out.append(part)
        else:
            raise ValueError(f"{part!r} is not a language code (like fr, zh-Hant) or '-'")
    return out


def parse_lang_weights(text: str) -> dict[str, float]:
    """``"fr=1,zh=2.5"`` -> ``{"fr": 1.0, "zh": 2.5}``; ValueError for a malformed item, a repeated language or a
    weight that is negative or not finite (0 is allowed: never switch into that language)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        lang, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not is_language(lang):
            raise ValueError(f"{item.strip()!r} is not LANG=WEIGHT (like fr=1)")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{item.strip()!r}: the weight {value!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{item.strip()!r}: a weight must be a finite number >= 0")
        if lang in out:
            raise ValueError(f"language {lang!r} is given twice")
        out[lang] = weight
    return out


def languages_of(frame: pl.DataFrame, metadata: Mapping[str, Any]) -> list[str]:
    """The languages of a multi-way lexicon's rows: in the order of ``metadata["tgt_langs"]`` where it lists
    them, the others alphabetically after."""
    found = sorted(set(frame[LANG_COLUMN].unique().to_list()))
    listed = metadata.get("tgt_langs")
    order = [lang for lang in listed if lang in found] if isinstance(listed, list) else []
    return order + [lang for lang in found if lang not in order]


def sort_multiway(frame: pl.DataFrame, languages: Sequence[str]) -> pl.DataFrame:
    """Rows by src, then language in ``languages`` order, then score desc, count desc, tgt asc."""
    rank = pl.col(LANG_COLUMN).replace_strict(list(languages), list(range(len(languages))), return_dtype=pl.Int64)
    by = ["src", "_rank", *SORT_BY[1:]]
    return (
        frame.with_columns(rank.alias("_rank")).sort(by, descending=[False, False, *SORT_DESCENDING[1:]]).drop("_rank")
    )


@dataclass(frozen=True)
class Combined:
    """Lexicons joined on the pivot language."""

    rows: pl.DataFrame  # every input's rows, with tgt_lang, in input order
    languages: list[str]  # in input order
    src_lang: str | None  # None when no input's metadata says
    per_input: list[list[str]]  # each input's languages


def combine(inputs: Sequence[LexiconInput], tgt_langs: Sequence[str | None] | None = None) -> Combined:
    """Join lexicons on the pivot language.

    A bilingual input's language is ``tgt_langs[i]`` or its metadata's ``tgt_lang`` (both given: they must agree);
    a multi-way input keeps its ``tgt_lang`` column (``tgt_langs[i]`` must be None). InputError naming the file:
    no known target language, a language already given by another input, a pivot language that differs.
    """
    if tgt_langs is not None and len(tgt_langs) != len(inputs):
        raise InputError(f"--tgt-langs lists {len(tgt_langs)} language(s) for {len(inputs)} lexicon(s)")
    frames: list[pl.DataFrame] = []
    languages: list[str] = []
    owner: dict[str, Path] = {}
    src_lang: str | None = None
    src_owner: Path | None = None
    per_input: list[list[str]] = []
    for i, item in enumerate(inputs):
        given = tgt_langs[i] if tgt_langs is not None else None
        meta = item.metadata
        frame = item.frame
        if LANG_COLUMN in frame.columns:
            if given is not None:
                raise InputError(
                    f"is already multi-way (a {LANG_COLUMN} column): give '-' for it in --tgt-langs", item.path
                )
            langs = languages_of(frame, meta)
        else:
            recorded = meta.get("tgt_lang")
            if recorded is not None and not is_language(recorded):
                raise InputError(f"its metadata's tgt_lang {recorded!r} is not a language code", item.path)
            if given is not None and recorded is not None and given != recorded:
                raise InputError(f"--tgt-langs says {given!r} but its metadata says tgt_lang {recorded!r}", item.path)
            lang = given or recorded
            if lang is None:
                raise InputError(
                    "no target language: its metadata has no tgt_lang; give it with --tgt-langs", item.path
                )
            langs = [lang]
            frame = frame.with_columns(pl.lit(lang, dtype=pl.String).alias(LANG_COLUMN))
        for lang in langs:
            if lang in owner:
                raise InputError(f"target language {lang!r} again (already in {owner[lang]})", item.path)
            owner[lang] = item.path
        languages += langs
        src = meta.get("src_lang")
        if src is not None:
            if src_lang is not None and src != src_lang:
                raise InputError(
                    f"pivot language {src!r} differs from {src_lang!r} of {src_owner}: lexicons join on one "
                    "source language",
                    item.path,
                )
            src_lang, src_owner = src, item.path
        frames.append(frame.select([*COLUMNS, LANG_COLUMN]))
        per_input.append(langs)
    if not frames:
        raise InputError("no lexicon given")
    return Combined(pl.concat(frames), languages, src_lang, per_input)


def require_all(frame: pl.DataFrame, languages: Sequence[str]) -> pl.DataFrame:
    """Only the pivot words with a translation in every one of ``languages``."""
    n = pl.col(LANG_COLUMN).n_unique().over("src")
    return frame.filter(n == len(languages))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def merge_files(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tgt_langs: Sequence[str | None] | None = None,
    keep_complete_only: bool = False,
) -> dict[str, Any]:
    """``prealign-data lexicon merge``: read the lexicons, join them, write the multi-way lexicon (format by
    ``output``'s extension, :func:`prealign.lexicon.lexicon_io.write_lexicon`); returns a summary."""
    from prealign import __version__
    from prealign.lexicon.lexicon_io import check_write_format, read_lexicon, write_lexicon

    check_write_format(output)
    inputs = [LexiconInput(Path(p), *read_lexicon(p)) for p in paths]
    joined = combine(inputs, tgt_langs)
    languages, src_lang = joined.languages, joined.src_lang
    rows = require_all(joined.rows, languages) if keep_complete_only else joined.rows
    rows = sort_multiway(rows, languages)
    described = [
        {
            "file": item.path.name,
            "sha256": _sha256(item.path),
            "rows": item.frame.height,
            "tgt_langs": langs,
            "metadata": dict(item.metadata),
        }
        for item, langs in zip(inputs, joined.per_input, strict=True)
    ]
    metadata = {
        "tool": "prealign-data",
        "version": __version__,
        "kind": KIND,
        "src_lang": src_lang,
        "tgt_langs": languages,
        "require_all": keep_complete_only,
        "inputs": described,
    }
    write_lexicon(rows, output, metadata)
    per_lang = rows.group_by(LANG_COLUMN).agg(pl.col("src").n_unique().alias("words"), pl.len().alias("rows"))
    counts = {lang: (0, 0) for lang in languages}
    for lang, words, n in per_lang.iter_rows():
        counts[lang] = (words, n)
    return {
        "output": str(output),
        "src_lang": src_lang,
        "languages": {lang: {"pivot_words": w, "rows": n} for lang, (w, n) in counts.items()},
        "pivot_words": rows["src"].n_unique() if rows.height else 0,
        "rows": rows.height,
    }
