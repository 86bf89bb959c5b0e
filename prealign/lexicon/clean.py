"""Clean and deduplicate segmented sentence pairs before word alignment.

Every input pair is either kept or dropped with exactly one reason; the first failing check wins, in this
order (the codes are what :func:`drop_reasons` returns, ``REASONS[code]`` names them):

====  ==================  =================================================================================
code  reason              dropped when
====  ==================  =================================================================================
0     ``kept``            (every check passed)
1     ``empty``           a side has no word: no token holding a letter or a digit (see :func:`side_lengths`)
2     ``too_short``       a side has fewer than ``min_words`` words
3     ``too_long``        a side has more than ``max_words`` words
4     ``length_ratio``    ``max(len_src, len_tgt) / min(...) > max_ratio``, checked only when the longer side
                          has at least ``ratio_min_words`` words
5     ``duplicate``       the same (segmented, normalised) pair was already kept earlier in the input
6     ``near_duplicate``  the MinHash estimate of the pair's Jaccard similarity to a pair kept earlier is at
                          least ``minhash_threshold``
====  ==================  =================================================================================

Lengths count the segmenter's tokens (words and punctuation), which is what the aligner sees. The text is
normalised by the segmenter (NFKC, lowercase) before any of this runs; dedup compares the token sequences.

Defaults and why:

- ``min_words=1``, ``max_words=80``: aligners are quadratic in sentence length and long "sentences" are
  usually paragraphs or mis-split lines; Tatoeba's longest side has 63 tokens, so nothing real is lost there.
- ``max_ratio=3.0`` with ``ratio_min_words=6``: a pair whose sides differ three-fold is usually a misalignment
  or a partial translation. Short pairs are exempt because their ratio is noise: ``run ! / prenez vos jambes
  à vos cous !`` (2 vs 7 tokens) is a fine idiomatic pair. With the longer side at 6 tokens or more, a ratio
  above 3 means the shorter side has at most a third of the tokens.
- ``dedup=True``: exact repeats add no information but re-weight the alignment statistics.
- ``near_dedup=True``, ``minhash_threshold=0.8`` on word 3-gram shingles of ``src + <sep> + tgt``,
  ``minhash_perm=64``. Changing one word inside a pair replaces (up to) the 3 shingles that cover it, so for a
  pair of ``S = len_src + len_tgt - 1`` shingles the Jaccard similarity becomes ``(S - 3) / (S + 3)``; it
  reaches 0.8 only when ``S >= 27``, i.e. about 28 tokens in the pair (14 a side). When the translation of the
  changed word changes too (a consistent one-word variant), 6 shingles change and the similarity is
  ``(S - 6) / (S + 6)``, which needs ``S >= 54``. Tatoeba-like corpora are full of short one-word variants
  (``i like cats . / j' aime les chats .`` and the same with dogs; median 7-8 tokens a side, similarity around
  0.4-0.6): at 0.8 these are *kept*, which is what a lexicon wants (minimal pairs are what teaches an aligner
  which word translates which), while long near-verbatim repeats (one changed word in a 20-word sentence with
  a 20-word translation: ``(39 - 3) / (39 + 3) = 0.86``) are dropped. The cut is soft: the estimate from 64
  permutations has a standard deviation of about 0.05 there, so of one-word variants of random pairs, about
  89% are dropped at 20 + 20 words (similarity 0.86), 13% at 10 + 10 (0.73) and none at 5 + 5 (0.5). On the
  Tatoeba en-fr corpus this drops 1.7% of the pairs (20 tokens a pair at the median, against 15 for the
  corpus), typically the same English with a French that differs in one agreement (``surpris``/``surprise``)
  or one word. To thin out short variants too, lower the threshold or
  the shingle size (a larger shingle size makes one changed word count for more).

MinHash signatures follow datasketch's ``"affine64"`` scheme exactly (same permutation parameters for a given
seed, MurmurHash3 finalizer pre-mix, ``a * h + b mod 2**64``), with each shingle's 64-bit hash as the input
value (``hashfunc`` the identity); they are computed in numpy, many pairs at once, because a ``MinHash``
object per pair is far slower. Word hashes are BLAKE2b digests of the UTF-8 words, so signatures (and
:func:`pair_keys`) are the same in every process and for every way of splitting the input into shards. The
near-duplicate search uses datasketch's ``MinHashLSH`` with weights tilted towards recall, and every LSH
candidate is verified on the full signature, so the threshold means "estimated Jaccard >= threshold".
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

DROP_REASONS = ("empty", "too_short", "too_long", "length_ratio", "duplicate", "near_duplicate")
REASONS = ("kept", *DROP_REASONS)
KEPT, EMPTY, TOO_SHORT, TOO_LONG, LENGTH_RATIO, DUPLICATE, NEAR_DUPLICATE = range(len(REASONS))

MINHASH_SCHEME = "affine64"
# (false positive, false negative) weights for datasketch's choice of LSH bands: candidates are verified on
# the whole signature, so a false positive costs one comparison while a false negative is a missed duplicate.
LSH_WEIGHTS = (0.1, 0.9)

_WORD_CHAR = re.compile(r"[^\W_]")
_U64 = np.uint64
_SEP = _U64(0x9E3779B97F4A7C15)  # hash of the separator between the two sides (no word's hash in practice)
_MIX = _U64(0xD6E8FEB86659FD93)
_BLOCK_VALUES = 1 << 17  # shingles x permutations per block (1 MiB: cache-sized blocks are ~4x faster)

Words = Sequence[Sequence[str]]


@dataclass(frozen=True)
class CleanConfig:
    """What :func:`clean_pairs` keeps; the defaults are explained in the module docstring.

    ``max_ratio`` applies only when the longer side has at least ``ratio_min_words`` words (short pairs'
    ratios are noise). ``shingle_size`` is the word n-gram size over ``src words + <sep> + tgt words``; a
    pair with fewer tokens than that (separator included) is one shingle.
    """

    min_words: int = 1
    max_words: int = 80
    max_ratio: float = 3.0
    ratio_min_words: int = 6
    dedup: bool = True
    near_dedup: bool = True
    minhash_threshold: float = 0.8
    minhash_perm: int = 64
    shingle_size: int = 3
    seed: int = 1

    def __post_init__(self) -> None:
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ValueError(f"need 0 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if not self.max_ratio >= 1.0:
            raise ValueError(f"max_ratio must be at least 1, not {self.max_ratio}")
        if not 0.0 < self.minhash_threshold <= 1.0:
            raise ValueError(f"minhash_threshold must be in (0, 1], not {self.minhash_threshold}")
        if self.minhash_perm < 2:
            raise ValueError(f"minhash_perm must be at least 2, not {self.minhash_perm}")
        if self.shingle_size < 1:
            raise ValueError(f"shingle_size must be at least 1, not {self.shingle_size}")


# ---------------------------------------------------------------------------------------------- lengths


def side_lengths(words: Words) -> np.ndarray:
    """Token count of each sentence (int64), or 0 when no token holds a letter or a digit."""
    return np.fromiter((len(ws) if ws and _WORD_CHAR.search("".join(ws)) else 0 for ws in words), np.int64, len(words))


def length_reasons(src_len: np.ndarray, tgt_len: np.ndarray, cfg: CleanConfig) -> np.ndarray:
    """Per pair, a uint8 code: 0 (kept), or ``EMPTY``/``TOO_SHORT``/``TOO_LONG``/``LENGTH_RATIO``."""
    s = np.asarray(src_len, dtype=np.int64)
    t = np.asarray(tgt_len, dtype=np.int64)
    if s.shape != t.shape:
        raise ValueError(f"src_len and tgt_len differ in shape: {s.shape} vs {t.shape}")
    short, long_ = np.minimum(s, t), np.maximum(s, t)
    ratio_bad = (long_ >= cfg.ratio_min_words) & (long_ > cfg.max_ratio * np.maximum(short, 1))
    codes = np.zeros(s.shape, dtype=np.uint8)
    # assign in reverse priority so that the first failing check wins
    codes[ratio_bad] = LENGTH_RATIO
    codes[long_ > cfg.max_words] = TOO_LONG
    codes[short < cfg.min_words] = TOO_SHORT
    codes[short == 0] = EMPTY
    return codes


# ---------------------------------------------------------------------------------------------- exact dedup


def _pair_bytes(src: Sequence[str], tgt: Sequence[str]) -> bytes:
    text = f"{len(src)},{len(tgt)}\x01" + "\x00".join(src) + "\x01" + "\x00".join(tgt)
    if text.count("\x00") == max(len(src) - 1, 0) + max(len(tgt) - 1, 0) and text.count("\x01") == 2:
        return text.encode("utf-8", "surrogatepass")
    # a word holds a separator: length-prefix every word (starts with \x02, so never equal to the above)
    parts = [f"\x02{len(src)},{len(tgt)};"] + [f"{len(w)}:{w}" for w in (*src, *tgt)]
    return "".join(parts).encode("utf-8", "surrogatepass")


def pair_keys(src_words: Words, tgt_words: Words) -> np.ndarray:
    """A uint64 key per pair (BLAKE2b-64 of an unambiguous encoding of both token lists): equal pairs, equal
    keys, in every process."""
    _check_same_length(src_words, tgt_words)
    digests = b"".join(
        hashlib.blake2b(_pair_bytes(s, t), digest_size=8).digest() for s, t in zip(src_words, tgt_words, strict=True)
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def duplicate_mask(keys: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """True for each row whose key already occurred in an earlier row (rows with ``keep == False`` are
    ignored: never marked, never the first occurrence)."""
    keys = np.asarray(keys)
    rows = np.arange(len(keys)) if keep is None else np.flatnonzero(keep)
    out = np.zeros(len(keys), dtype=bool)
    if len(rows):
        _, first = np.unique(keys[rows], return_index=True)  # stable: index of the first occurrence
        out[rows] = True
        out[rows[first]] = False
    return out


# ---------------------------------------------------------------------------------------------- MinHash


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (the pre-mix of datasketch's affine64 scheme)."""
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _word_hashes(words: Words) -> tuple[np.ndarray, np.ndarray]:
    """BLAKE2b-64 of each token (flat, uint64) and the token count of each sentence."""
    lens = np.fromiter((len(ws) for ws in words), np.int64, len(words))
    flat = [w for ws in words for w in ws]
    if not flat:
        return np.zeros(0, dtype=np.uint64), lens
    enc = pa.array(flat, pa.large_string()).dictionary_encode()
    uniq = enc.dictionary.to_pylist()
    table = np.fromiter((_blake64(w) for w in uniq), np.uint64, len(uniq))
    return table[enc.indices.to_numpy()], lens


def _blake64(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for each count."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def shingle_hashes(src_words: Words, tgt_words: Words, cfg: CleanConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shingle hashes of all pairs, flat (uint64; repeats within a pair are harmless), and ``offsets``
    (int64, n + 1) such that pair i's shingles are ``values[offsets[i]:offsets[i + 1]]``.

    A pair's tokens are its source token hashes, a separator, then its target token hashes; a shingle is
    each window of ``shingle_size`` tokens (the whole sequence when it is shorter), hashed by chaining.
    """
    _check_same_length(src_words, tgt_words)
    n_gram = cfg.shingle_size
    hs, ls = _word_hashes(src_words)
    ht, lt = _word_hashes(tgt_words)
    seq_len = ls + lt + 1
    seq_start = np.cumsum(seq_len) - seq_len
    seq = np.empty(int(seq_len.sum()) + n_gram, dtype=np.uint64)
    seq[-n_gram:] = 0
    seq[np.repeat(seq_start, ls) + _ragged_arange(ls)] = hs
    seq[seq_start + ls] = _SEP
    seq[np.repeat(seq_start + ls + 1, lt) + _ragged_arange(lt)] = ht

    n_shingles = np.maximum(seq_len - n_gram + 1, 1)
    offsets = np.zeros(len(seq_len) + 1, dtype=np.int64)
    np.cumsum(n_shingles, out=offsets[1:])
    first = np.repeat(seq_start, n_shingles) + _ragged_arange(n_shingles)
    width = np.repeat(np.minimum(seq_len, n_gram), n_shingles)
    values = seq[first].copy()
    for k in range(1, n_gram):
        step = _fmix64(values * _MIX + seq[first + k])
        values = np.where(k < width, step, values)
    return _fmix64(values ^ width.astype(np.uint64)), offsets


@lru_cache(maxsize=16)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters (a, b) for the affine64 scheme."""
    from datasketch import MinHash  # imported when needed: it takes half a second

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=MINHASH_SCHEME).permutations
    return np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(b, dtype=np.uint64)


def signatures_from_shingles(values: np.ndarray, offsets: np.ndarray, cfg: CleanConfig) -> np.ndarray:
    """MinHash signatures (n, minhash_perm) uint64 of the shingle sets ``values[offsets[i]:offsets[i+1]]``,
    equal to datasketch ``MinHash(scheme="affine64", hashfunc=int)`` updated with the same values."""
    a, b = _permutations(cfg.minhash_perm, cfg.seed)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    if n and counts.min() < 1:
        raise ValueError("every pair needs at least one shingle")
    out = np.empty((n, cfg.minhash_perm), dtype=np.uint64)
    mixed = _fmix64(np.asarray(values, dtype=np.uint64))
    block_shingles = max(1, _BLOCK_VALUES // cfg.minhash_perm)
    lo = 0
    while lo < n:
        # a block of whole pairs holding about block_shingles shingles (at least one pair)
        hi = int(np.searchsorted(offsets, offsets[lo] + block_shingles, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        start = offsets[lo]
        block = mixed[start : offsets[hi], None] * a + b
        out[lo:hi] = np.minimum.reduceat(block, offsets[lo:hi] - start, axis=0)
        lo = hi
    return out


def minhash_signatures(src_words: Words, tgt_words: Words, cfg: CleanConfig) -> np.ndarray:
    """MinHash signature of each pair's shingle set: shape (n, minhash_perm), uint64. A pure function of its
    inputs and ``cfg`` (row i depends on pair i only), so shards may be signed separately."""
    values, offsets = shingle_hashes(src_words, tgt_words, cfg)
    return signatures_from_shingles(values, offsets, cfg)


def _band_shared(sig: np.ndarray, hashranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """True for each row that shares some LSH band (a hash of it) with another row."""
    shared = np.zeros(len(sig), dtype=bool)
    for start, end in hashranges:
        key = np.zeros(len(sig), dtype=np.uint64)
        for col in range(start, end):
            key = _fmix64(key * _MIX + sig[:, col])
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        shared |= counts[inverse.ravel()] > 1
    return shared


def _lsh_index(cfg: CleanConfig) -> Any:
    """datasketch's ``MinHashLSH`` for ``cfg`` (its bands are what the near-duplicate search uses)."""
    from datasketch import MinHashLSH

    try:
        return MinHashLSH(threshold=cfg.minhash_threshold, num_perm=cfg.minhash_perm, weights=LSH_WEIGHTS)
    except ValueError:  # datasketch wants one band for thresholds near 1 but accepts no fewer than two
        return MinHashLSH(num_perm=cfg.minhash_perm, params=(2, cfg.minhash_perm // 2))


def near_duplicate_mask(signatures: np.ndarray, cfg: CleanConfig, keep: np.ndarray | None = None) -> np.ndarray:
    """True for each row that is a near duplicate of a row kept before it.

    Rows are visited in input order; a row is dropped when an LSH candidate among the rows kept so far has an
    estimated Jaccard similarity (share of equal signature values) of at least ``cfg.minhash_threshold``, and
    is otherwise kept and indexed. Rows with ``keep == False`` are ignored entirely (never indexed, never
    marked). Only rows that share a band with another row can be or have a candidate, so only those go
    through the (per-row, Python-speed) ``MinHashLSH``; the result is the same as indexing every row.
    """
    sig = np.asarray(signatures)
    if sig.ndim != 2 or sig.shape[1] != cfg.minhash_perm:
        raise ValueError(f"signatures must have shape (n, {cfg.minhash_perm}), not {sig.shape}")
    sig = np.ascontiguousarray(sig, dtype=np.uint64)
    n = len(sig)
    if keep is not None and len(keep) != n:
        raise ValueError(f"keep has {len(keep)} rows, signatures {n}")
    from datasketch import LeanMinHash

    rows = np.arange(n) if keep is None else np.flatnonzero(keep)
    lsh = _lsh_index(cfg)
    rows = rows[_band_shared(sig[rows], lsh.hashranges)]
    need = math.ceil(cfg.minhash_threshold * cfg.minhash_perm - 1e-9)  # equal values for a match
    drop = np.zeros(n, dtype=bool)
    for i in rows.tolist():
        m = LeanMinHash(seed=cfg.seed, hashvalues=sig[i], scheme=MINHASH_SCHEME)
        cands = lsh.query(m)
        if cands and int((sig[cands] == sig[i]).sum(axis=1).max()) >= need:
            drop[i] = True
        else:
            lsh.insert(i, m, check_duplication=False)
    return drop


# ---------------------------------------------------------------------------------------------- together


def drop_reasons(src_words: Words, tgt_words: Words, cfg: CleanConfig | None = None) -> np.ndarray:
    """Per pair, a uint8 code: 0 kept, else the first failing check (``REASONS[code]`` names it)."""
    cfg = cfg or CleanConfig()
    _check_same_length(src_words, tgt_words)
    codes = length_reasons(side_lengths(src_words), side_lengths(tgt_words), cfg)
    if cfg.dedup:
        codes[duplicate_mask(pair_keys(src_words, tgt_words), keep=codes == KEPT)] = DUPLICATE
    if cfg.near_dedup:
        rows = np.flatnonzero(codes == KEPT)
        sig = minhash_signatures([src_words[i] for i in rows], [tgt_words[i] for i in rows], cfg)
        codes[rows[near_duplicate_mask(sig, cfg)]] = NEAR_DUPLICATE
    return codes


def reason_counts(codes: np.ndarray) -> dict[str, int]:
    """Counts by reason: ``input``, ``kept`` and every one of ``DROP_REASONS`` (zeros included)."""
    codes = np.asarray(codes)
    tally = np.bincount(codes.astype(np.int64).ravel(), minlength=len(REASONS))
    if len(tally) > len(REASONS):
        raise ValueError(f"unknown reason code {len(tally) - 1}")
    return {"input": int(codes.size), **{name: int(c) for name, c in zip(REASONS, tally, strict=True)}}


def clean_pairs(
    src_words: Words, tgt_words: Words, cfg: CleanConfig | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Length filters, then exact dedup, then near dedup, in input order: the keep mask and counts by reason
    (``input``, ``kept`` and all ``DROP_REASONS``; ``kept`` plus the drops equals ``input``)."""
    codes = drop_reasons(src_words, tgt_words, cfg)
    return codes == KEPT, reason_counts(codes)


def _check_same_length(src_words: Words, tgt_words: Words) -> None:
    if len(src_words) != len(tgt_words):
        raise ValueError(f"{len(src_words)} source sentences but {len(tgt_words)} target sentences")
