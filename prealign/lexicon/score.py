"""Score aligned word pairs into a lexicon: translation probabilities both ways and a score.

Two scores are offered (``LexiconConfig.score``):

- ``lower-bound`` (the default): the Wilson 95% lower confidence bound of p(tgt|src) given the source word's
  links. Within one source word it ranks translations exactly as p(tgt|src) does, and across words it
  discounts thin evidence: a pair seen once out of one link (p = 1) scores 0.21, one seen 80 times out of 100
  scores 0.71. Measured on Tatoeba en-fr against FreeDict, ranking by p(tgt|src) gives P@1 0.68 where the
  geometric mean gives 0.64 (docs/benchmarks.md): the geometric mean prefers rare inflected forms whose
  p(src|tgt) is near 1.
- ``geometric``: ``sqrt(p(tgt|src) * p(src|tgt))``, symmetric in the two languages and high only when each
  word is a likely translation of the other, so "garbage collector" pairs (a frequent word linked to many
  targets) score low.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from prealign.text import is_word

__all__ = ["LEXICON_SCHEMA", "LexiconConfig", "score_pairs"]

LEXICON_SCHEMA: dict[str, pl.DataType] = {
    "src": pl.String(),
    "tgt": pl.String(),
    "count": pl.Int64(),
    "p_tgt_given_src": pl.Float32(),
    "p_src_given_tgt": pl.Float32(),
    "score": pl.Float32(),
}
"""The lexicon's columns, in order, with their exact dtypes."""

SORT_BY = ["src", "score", "count", "tgt"]
SCORES = ("lower-bound", "geometric")
_Z = 1.959964  # two-sided 95% normal quantile
SORT_DESCENDING = [False, True, True, False]


@dataclass(frozen=True)
class LexiconConfig:
    """Which scored pairs make the lexicon.

    Filters run after the probabilities are computed, in this order: ``words_only`` (drop pairs whose src or
    tgt has no letter, by :func:`prealign.text.is_word`), ``min_count`` (pair count), ``min_p_tgt_given_src``
    and ``min_p_src_given_tgt`` (inclusive thresholds), then ``top_k`` best translations per source word
    (0 keeps all).
    """

    min_count: int = 2
    min_p_tgt_given_src: float = 0.01
    min_p_src_given_tgt: float = 0.0
    top_k: int = 0
    words_only: bool = True
    score: str = "lower-bound"

    def __post_init__(self) -> None:
        if self.min_count < 0:
            raise ValueError(f"min_count must be >= 0, not {self.min_count}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, not {self.score!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, not {self.top_k}")
        for name in ("min_p_tgt_given_src", "min_p_src_given_tgt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")


def _check_columns(df: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {df.columns}")
    nulls = [c for c in columns if df[c].null_count()]
    if nulls:
        raise ValueError(f"{what} has null values in column(s) {nulls}")


def _encode(words: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The distinct words in sorted order, and each row's index into them (so codes sort like the strings).

    One hashing pass: a cast to a Categorical with its own fresh categories (polars >= 1.32), whose codes are
    then renumbered in sorted order; older polars take the slower ``unique`` + ``replace_strict`` route.
    """
    try:
        phys = words.cast(pl.Categorical(pl.Categories.random())).to_physical().to_numpy().astype(np.int64)
    except (AttributeError, TypeError):
        return _encode_portable(words)
    size = int(phys.max()) + 1 if len(phys) else 0
    example = np.full(size, -1, dtype=np.int64)
    example[phys] = np.arange(len(phys))  # some row holding each code
    present = np.flatnonzero(example >= 0)
    unsorted = words.gather(example[present])
    order = unsorted.arg_sort().to_numpy()
    rank = np.full(size, -1, dtype=np.int64)
    rank[present[order]] = np.arange(len(order))
    return unsorted.gather(order), rank[phys]


def _encode_portable(words: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """:func:`_encode` without Categorical: two hashing passes."""
    vocab = words.unique().sort()
    ids = pl.int_range(len(vocab), eager=True, dtype=pl.UInt32)
    codes = words.replace_strict(vocab, ids, return_dtype=pl.UInt32)
    return vocab, codes.to_numpy().astype(np.int64)


def _totals(
    vocab: pl.Series, codes: np.ndarray, counts: np.ndarray, given: pl.DataFrame | None, key: str
) -> np.ndarray:
    """Total links of each word of ``vocab``: summed over the pairs, or from ``given`` (NaN if absent)."""
    if given is None:
        return np.bincount(codes, weights=counts, minlength=len(vocab))
    what = f"{key}_totals"
    _check_columns(given, (key, "count"), what)
    table = given.group_by(pl.col(key).cast(pl.String)).agg(pl.col("count").cast(pl.Float64).sum())
    looked_up = pl.DataFrame({key: vocab}).join(table, on=key, how="left", maintain_order="left")
    return looked_up["count"].fill_null(float("nan")).to_numpy()


def _word_mask(vocab: pl.Series) -> np.ndarray:
    """Which entries of ``vocab`` are words (:func:`prealign.text.is_word`); ``isalpha`` is a fast path."""
    return np.fromiter((w.isalpha() or is_word(w) for w in vocab.to_list()), dtype=bool, count=len(vocab))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where den is 0 (a word whose every link has count 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, 0.0)


def _order(sc: np.ndarray, score: np.ndarray, count: np.ndarray, tc: np.ndarray) -> np.ndarray:
    """Row order by src asc, score desc, count desc, tgt asc (codes sort like the strings they stand for)."""
    if len(count) and count.max() < 2**31:
        # two stable radix-friendly argsorts over packed int64 keys; a float32 >= 0 sorts like its bits
        by_score = (sc << 32) | (0xFFFFFFFF - score.view(np.uint32).astype(np.int64))
        by_count = ((2**31 - 1 - count) << 32) | tc
        order = np.argsort(by_count, kind="stable")
        return order[np.argsort(by_score[order], kind="stable")]
    cols = pl.DataFrame({"s": sc, "score": score, "count": count, "t": tc})
    order = cols.select(pl.arg_sort_by(["s", "score", "count", "t"], descending=SORT_DESCENDING))
    return order.to_series().to_numpy()


def wilson_lower_bound(p: np.ndarray, n: np.ndarray, z: float = _Z) -> np.ndarray:
    """Wilson score interval's lower end for a proportion ``p`` observed over ``n`` trials (0 where n is 0)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2n = z * z / n
        centre = p + z2n / 2
        spread = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n))
        out = (centre - spread) / (1 + z2n)
    return np.where(n > 0, np.clip(out, 0.0, 1.0), 0.0)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=LEXICON_SCHEMA)


def score_pairs(
    pair_counts: pl.DataFrame,
    src_totals: pl.DataFrame | None = None,
    tgt_totals: pl.DataFrame | None = None,
    config: LexiconConfig = LexiconConfig(),  # noqa: B008 - frozen, so a shared default is safe
) -> pl.DataFrame:
    """Turn linked-pair counts into a scored, filtered lexicon.

    ``pair_counts`` has columns ``src``, ``tgt``, ``count`` (times the pair was linked; rows repeating a
    (src, tgt) are summed). ``p_tgt_given_src = count / total links of src`` and ``p_src_given_tgt = count /
    total links of tgt``, with totals over all pairs before any filter, or taken from ``src_totals`` (``src``,
    ``count``) / ``tgt_totals`` (``tgt``, ``count``) when given (a kept pair whose word is missing there, or
    whose count exceeds that total, is a ValueError). ``score`` as ``config.score`` says (see the module doc).

    Returns the columns of :data:`LEXICON_SCHEMA` in that order, sorted by src asc, score desc, count desc,
    tgt asc, after the filters of ``config``.
    """
    _check_columns(pair_counts, ("src", "tgt", "count"), "pair_counts")
    if pair_counts.height == 0:
        return _empty()
    count = pair_counts["count"].cast(pl.Int64).to_numpy()
    if count.min() < 0:
        raise ValueError("pair_counts has negative counts")
    src_vocab, sc = _encode(pair_counts["src"].cast(pl.String))
    tgt_vocab, tc = _encode(pair_counts["tgt"].cast(pl.String))
    src_total = _totals(src_vocab, sc, count, src_totals, "src")
    tgt_total = _totals(tgt_vocab, tc, count, tgt_totals, "tgt")

    # sum the rows that repeat a pair (codes are < 2**32, so a pair packs into one int64)
    key = (sc << 32) | tc
    sorted_key = np.sort(key)
    if (sorted_key[1:] == sorted_key[:-1]).any():
        order = np.argsort(key, kind="stable")
        first = np.ones(len(key), dtype=bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        starts = np.flatnonzero(first)
        count = np.add.reduceat(count[order], starts)
        key = sorted_key[starts]
        sc, tc = key >> 32, key & 0xFFFFFFFF

    keep = count >= config.min_count
    if config.words_only:
        keep &= _word_mask(src_vocab)[sc]
        keep &= _word_mask(tgt_vocab)[tc]
    idx = np.flatnonzero(keep)
    sc, tc, count = sc[idx], tc[idx], count[idx]
    for side, codes, totals, vocab in (("src", sc, src_total, src_vocab), ("tgt", tc, tgt_total, tgt_vocab)):
        bad = ~(totals[codes] >= count)  # also catches NaN: a word missing from the given totals
        if bad.any():
            word = vocab[int(codes[np.argmax(bad)])]
            raise ValueError(f"{side}_totals: the total for {word!r} is missing or below its pair count")

    p_ts = _ratio(count, src_total[sc])
    p_st = _ratio(count, tgt_total[tc])
    # thresholds compare the float64 probabilities, so that e.g. 1/100 passes a 0.01 threshold
    keep = (p_ts >= config.min_p_tgt_given_src) & (p_st >= config.min_p_src_given_tgt)
    sc, tc, count, p_ts, p_st = sc[keep], tc[keep], count[keep], p_ts[keep], p_st[keep]
    if config.score == "geometric":
        score = np.sqrt(p_ts * p_st).astype(np.float32)
    else:
        score = wilson_lower_bound(p_ts, src_total[sc]).astype(np.float32)

    order = _order(sc, score, count, tc)
    if config.top_k:
        s_sorted = sc[order]
        start = np.ones(len(order), dtype=bool)
        start[1:] = s_sorted[1:] != s_sorted[:-1]
        pos = np.arange(len(order))
        rank = pos - np.maximum.accumulate(np.where(start, pos, 0))
        order = order[rank < config.top_k]

    return pl.DataFrame(
        {
            "src": src_vocab.gather(sc[order]),
            "tgt": tgt_vocab.gather(tc[order]),
            "count": count[order],
            "p_tgt_given_src": p_ts[order].astype(np.float32),
            "p_src_given_tgt": p_st[order].astype(np.float32),
            "score": score[order],
        },
        schema=LEXICON_SCHEMA,
    )
