"""Evaluation: alignment error rate (AER) against gold links; lexicon precision at k against a dictionary."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from prealign.arrays import sorted_unique
from prealign.errors import InputError

__all__ = ["alignment_scores", "lexicon_precision", "read_gold_lexicon", "sentences_beyond", "link_extent"]

_IDX_BITS = 20
_SENT_BITS = 63 - 2 * _IDX_BITS


def _link_keys(all_links: Sequence[np.ndarray], what: str) -> np.ndarray:
    """Sorted unique int64 keys ``sentence << 40 | i << 20 | j`` over all sentences' links."""
    if len(all_links) >= 1 << _SENT_BITS:
        raise ValueError(f"{what}: too many sentences to score ({len(all_links)})")
    arrays = [np.asarray(a).reshape(-1, 2) for a in all_links]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    flat = np.concatenate(arrays).astype(np.int64)
    if flat.min() < 0 or flat.max() >= 1 << _IDX_BITS:
        raise ValueError(f"{what}: link indices must be in [0, {1 << _IDX_BITS})")
    sent = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    return sorted_unique((sent << (2 * _IDX_BITS)) | (flat[:, 0] << _IDX_BITS) | flat[:, 1])


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def alignment_scores(
    pred: Sequence[np.ndarray], sure: Sequence[np.ndarray], possible: Sequence[np.ndarray]
) -> dict[str, float | int]:
    """Micro-averaged AER, precision and recall of predicted links A against gold sure S and possible P.

    ``AER = 1 - (|A∩S| + |A∩P|) / (|A| + |S|)``, ``precision = |A∩P| / |A|``,
    ``recall = |A∩S| / |S|``, counted over the whole corpus. ``possible`` should include the sure links (as
    :func:`read_gold` returns them); sure links are added to it here anyway, so P ⊇ S always holds.
    Duplicated links count once.

    When ``pred`` has more sentences than the gold, only the first ``len(sure)`` are scored (the standard
    setting aligns the gold pairs first, then extra data); fewer is a ``ValueError``. A ratio whose
    denominator is 0 is NaN.

    Returns ``aer``, ``precision``, ``recall``, ``links`` (|A| over scored sentences), ``sure_links`` (|S|),
    ``possible_links`` (|P|), ``sentences`` (number scored) and ``ignored_sentences`` (extra pred sentences).
    """
    if len(sure) != len(possible):
        raise ValueError(f"sure has {len(sure)} sentences but possible has {len(possible)}")
    n = len(sure)
    if len(pred) < n:
        raise ValueError(f"prediction has {len(pred)} sentences, fewer than the gold's {n}")
    a = _link_keys(pred[:n], "pred")
    s = _link_keys(sure, "sure")
    p = sorted_unique(np.concatenate([_link_keys(possible, "possible"), s]))
    a_s = len(np.intersect1d(a, s, assume_unique=True))
    a_p = len(np.intersect1d(a, p, assume_unique=True))
    return {
        "aer": 1.0 - _ratio(a_s + a_p, len(a) + len(s)),
        "precision": _ratio(a_p, len(a)),
        "recall": _ratio(a_s, len(s)),
        "links": int(len(a)),
        "sure_links": int(len(s)),
        "possible_links": int(len(p)),
        "sentences": n,
        "ignored_sentences": len(pred) - n,
    }


def link_extent(all_links: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence, 1 + the largest source and target index of its links (0 and 0 for a sentence without)."""
    src = np.zeros(len(all_links), dtype=np.int64)
    tgt = np.zeros(len(all_links), dtype=np.int64)
    for s, links in enumerate(all_links):
        a = np.asarray(links).reshape(-1, 2)
        if len(a):
            src[s], tgt[s] = a[:, 0].max() + 1, a[:, 1].max() + 1
    return src, tgt


def sentences_beyond(pred: Sequence[np.ndarray], src_len: np.ndarray, tgt_len: np.ndarray) -> int:
    """How many of the first ``len(src_len)`` sentences of ``pred`` have a link at or past the given lengths
    (sentences whose lengths are 0, unknown, are skipped)."""
    p_src, p_tgt = link_extent(pred[: len(src_len)])
    known = (src_len > 0) & (tgt_len > 0)
    return int((known & ((p_src > src_len) | (p_tgt > tgt_len))).sum())


def _require_columns(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {df.columns}")


def lexicon_precision(
    lexicon: pl.DataFrame,
    gold: pl.DataFrame,
    ks: Sequence[int] = (1, 5),
    min_count: int = 0,
    src_counts: pl.DataFrame | None = None,
) -> dict[str, float | int]:
    """Precision at k of a lexicon against a gold dictionary (a source word may have several translations).

    ``lexicon`` has columns ``src``, ``tgt``, ``score`` (``count`` optional); each source word's
    translations are ranked by score desc, then count desc, then tgt asc. ``gold`` has ``src``, ``tgt``.
    Strings are compared exactly: lowercase both sides first when the gold is lowercased.

    *Eligible* gold words: the distinct gold source words, or, when ``src_counts`` (columns ``src``,
    ``count``: corpus frequency) is given, those with frequency >= ``min_count`` (a word absent from
    ``src_counts`` has frequency 0). ``min_count > 0`` without ``src_counts`` is a ``ValueError``.
    *Evaluated* words: eligible words that have at least one lexicon entry.

    Returns ``p@k`` for each k (the share of evaluated words with a gold translation among their top k; NaN
    when none is evaluated), ``evaluated``, ``gold_words`` (number of eligible words) and
    ``coverage = evaluated / gold_words`` (NaN when there is no eligible word).
    """
    _require_columns(lexicon, ("src", "tgt", "score"), "lexicon")
    _require_columns(gold, ("src", "tgt"), "gold")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, not {list(ks)}")
    if min_count > 0 and src_counts is None:
        raise ValueError("min_count > 0 needs src_counts (the corpus frequency of each source word)")

    gold = gold.select(pl.col("src").cast(pl.String), pl.col("tgt").cast(pl.String)).unique()
    eligible = gold.select("src").unique()
    if src_counts is not None:
        _require_columns(src_counts, ("src", "count"), "src_counts")
        freq = src_counts.group_by(pl.col("src").cast(pl.String)).agg(pl.col("count").sum())
        eligible = (
            eligible.join(freq, on="src", how="left").filter(pl.col("count").fill_null(0) >= min_count).select("src")
        )

    has_count = "count" in lexicon.columns
    lex = lexicon.select(
        pl.col("src").cast(pl.String),
        pl.col("tgt").cast(pl.String),
        pl.col("score").cast(pl.Float64),
        (pl.col("count") if has_count else pl.lit(0)).cast(pl.Int64).alias("count"),
    ).join(eligible, on="src", how="semi")
    lex = (
        lex.sort(["src", "score", "count", "tgt"], descending=[False, True, True, False], nulls_last=True)
        .unique(["src", "tgt"], keep="first", maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over("src").alias("rank"))
    )
    best = lex.join(gold, on=["src", "tgt"], how="semi").group_by("src").agg(pl.col("rank").min())
    words = lex.select("src").unique().join(best, on="src", how="left")

    evaluated = words.height
    n_gold = eligible.height
    out: dict[str, float | int] = {}
    ranks = words["rank"]
    for k in ks:
        hits = int((ranks < k).sum()) if evaluated else 0
        out[f"p@{k}"] = _ratio(hits, evaluated)
    out["evaluated"] = evaluated
    out["gold_words"] = n_gold
    out["coverage"] = _ratio(evaluated, n_gold)
    return out


def read_gold_lexicon(path: str | os.PathLike) -> pl.DataFrame:
    """Read a ``src<TAB>tgt`` dictionary (extra columns ignored) into distinct (``src``, ``tgt``) rows.

    Fields are stripped; blank lines and rows with an empty field are dropped; a non-blank line without a tab
    is an :class:`InputError` naming the file and line. Row order follows the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None
    except UnicodeDecodeError as exc:
        raise InputError("not valid UTF-8", path, path.read_bytes().count(b"\n", 0, exc.start) + 1) from None
    src: list[str] = []
    tgt: list[str] = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise InputError(f"expected 'src<TAB>tgt', got {line.strip()[:60]!r}", path, n)
        s, t = parts[0].strip(), parts[1].strip()
        if s and t:
            src.append(s)
            tgt.append(t)
    df = pl.DataFrame({"src": src, "tgt": tgt}, schema={"src": pl.String, "tgt": pl.String})
    return df.unique(maintain_order=True)
