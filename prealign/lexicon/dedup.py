"""The deduplication rules of the read stage, as functions over arrays (no file IO: the stage tasks are in
:mod:`prealign.pipelines.dedup_stage`).

Rows are global pair numbers (input order). Both rules only look at the pairs the length filter kept
(:func:`~prealign.lexicon.clean.length_reasons`) and give what :func:`~prealign.lexicon.clean.drop_reasons`
gives over the whole corpus:

- exact (:func:`exact_duplicates`): pairs with equal keys (:func:`~prealign.lexicon.clean.pair_keys`); the
  first occurrence (smallest global row) wins, every later one is a ``duplicate``.
- near (:func:`matching_pairs`, then :func:`near_duplicates`): among the pairs that are neither dropped by the
  length filter nor exact duplicates, in row order, a pair is a ``near_duplicate`` when it shares an LSH band
  with an earlier pair that was kept, and agrees with it on at least :func:`min_matches` signature values.
  The bands are datasketch's for the same threshold and permutations (``clean._lsh_index``); two pairs share a
  band when their :func:`band_tokens` for it are equal (a 64-bit hash of the band's values, salted by the
  band's index, so that tokens of different bands never meet).

Both rules split by hash value: a key or a band token is the whole of what decides which pairs meet, so each
range of values can be searched on its own (a shard), and the matching pairs of all shards are then resolved
once, in row order (:func:`near_duplicates`), which is the only sequential step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from prealign.lexicon import clean

_U64 = np.uint64
_MIX = _U64(0xD6E8FEB86659FD93)
BLOCK_PAIRS = 1 << 14  # candidate pairs verified at once by matching_pairs (2 x 8 MiB of signatures at 64 perm)


def lsh_bands(cfg: clean.CleanConfig) -> list[tuple[int, int]]:
    """The (start, end) signature columns of each LSH band for ``cfg`` (datasketch's choice)."""
    return [(int(a), int(b)) for a, b in clean._lsh_index(cfg).hashranges]


def min_matches(cfg: clean.CleanConfig) -> int:
    """How many equal signature values make two pairs near duplicates."""
    return math.ceil(cfg.minhash_threshold * cfg.minhash_perm - 1e-9)


def band_tokens(sig: np.ndarray, hashranges: list[tuple[int, int]]) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's values, salted by the band's index."""
    sig = np.asarray(sig, dtype=np.uint64)
    out = np.empty((len(sig), len(hashranges)), dtype=np.uint64)
    for b, (start, end) in enumerate(hashranges):
        key = np.full(len(sig), _U64(b + 1), dtype=np.uint64)
        for col in range(start, end):
            key = clean._fmix64(key * _MIX + sig[:, col])
        out[:, b] = key
    return out


def exact_duplicates(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The ``rows`` (sorted, int64) that are not the first (smallest row) of their key."""
    keys, rows = np.asarray(keys, dtype=np.uint64), np.asarray(rows, dtype=np.int64)
    if keys.shape != rows.shape:
        raise ValueError(f"{len(keys)} keys but {len(rows)} rows")
    order = np.lexsort((rows, keys))
    k = keys[order]
    later = np.zeros(len(k), dtype=bool)
    later[1:] = k[1:] == k[:-1]
    return np.sort(rows[order][later])


def _first_of_runs(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts, in a sorted array."""
    starts = np.ones(len(values), dtype=bool)
    starts[1:] = values[1:] != values[:-1]
    return np.flatnonzero(starts)


def _unique_pairs(later: np.ndarray, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs sorted by (later, earlier), each once."""
    if len(later) == 0:
        return later.astype(np.int64), earlier.astype(np.int64)
    order = np.lexsort((earlier, later))
    later, earlier = later[order], earlier[order]
    keep = np.ones(len(later), dtype=bool)
    keep[1:] = (later[1:] != later[:-1]) | (earlier[1:] != earlier[:-1])
    return later[keep], earlier[keep]


def _triangle(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``q``-th pair (a, b), a > b >= 0, in the order (1, 0), (2, 0), (2, 1), (3, 0), ..."""
    a = np.floor((1.0 + np.sqrt(1.0 + 8.0 * q.astype(np.float64))) / 2.0).astype(np.int64)
    a -= a * (a - 1) // 2 > q  # float rounding, either way
    a += (a + 1) * a // 2 <= q
    return a, q - a * (a - 1) // 2


def matching_pairs(
    tokens: np.ndarray,
    rows: np.ndarray,
    signature_of: Callable[[np.ndarray], np.ndarray],
    need: int,
    block: int = BLOCK_PAIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of distinct rows (later > earlier) that share a token and whose signatures agree on at least
    ``need`` values, as (later, earlier) int64 arrays sorted by (later, earlier), each pair once.

    ``signature_of(rows)`` gives the signatures (k, perm) of sorted distinct rows. Candidate pairs are made and
    verified ``block`` at a time, so memory is that of a block plus the matching pairs found, even for a bucket
    of many rows (a bucket of k rows has k(k-1)/2 candidates).
    """
    tokens, rows = np.asarray(tokens, dtype=np.uint64), np.asarray(rows, dtype=np.int64)
    if tokens.shape != rows.shape:
        raise ValueError(f"{len(tokens)} tokens but {len(rows)} rows")
    order = np.lexsort((rows, tokens))
    tokens, rows = tokens[order], rows[order]
    distinct = np.ones(len(rows), dtype=bool)  # a (token, row) given twice counts once
    distinct[1:] = (tokens[1:] != tokens[:-1]) | (rows[1:] != rows[:-1])
    tokens, rows = tokens[distinct], rows[distinct]
    del order, distinct
    starts = _first_of_runs(tokens)
    sizes = np.diff(np.append(starts, len(tokens)))
    big = sizes > 1
    starts, sizes = starts[big], sizes[big]
    n_pairs = sizes * (sizes - 1) // 2
    ends = np.cumsum(n_pairs)  # candidate p belongs to the first bucket whose end is > p
    total = int(ends[-1]) if len(ends) else 0
    found_later: list[np.ndarray] = []
    found_earlier: list[np.ndarray] = []
    held = compacted = 0
    for p0 in range(0, total, block):
        p = np.arange(p0, min(p0 + block, total), dtype=np.int64)
        bucket = np.searchsorted(ends, p, side="right")
        a, b = _triangle(p - (ends[bucket] - n_pairs[bucket]))
        later, earlier = rows[starts[bucket] + a], rows[starts[bucket] + b]  # rows ascend within a bucket
        wanted = np.unique(np.concatenate([later, earlier]))
        sig = np.asarray(signature_of(wanted))
        agree = (sig[np.searchsorted(wanted, later)] == sig[np.searchsorted(wanted, earlier)]).sum(axis=1)
        ok = agree >= need
        if ok.any():
            found_later.append(later[ok])
            found_earlier.append(earlier[ok])
            held += int(ok.sum())
        if held > 2 * compacted + block:  # a pair sharing several bands is found once per band: keep it once
            merged = _unique_pairs(np.concatenate(found_later), np.concatenate(found_earlier))
            found_later, found_earlier = [merged[0]], [merged[1]]
            held = compacted = len(merged[0])
    if not found_later:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _unique_pairs(np.concatenate(found_later), np.concatenate(found_earlier))


def near_duplicates(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """The rows (sorted, int64) dropped by the greedy rule: going through rows in increasing order, row i is a
    near duplicate iff some pair (i, j), j < i, has j not itself a near duplicate.

    Rows that are never the later of a pair are kept, which decides most rows at once; what is left (chains
    of pairs) is resolved by rounds of the same reasoning, and finally one pass in row order."""
    later, earlier = _unique_pairs(np.asarray(later, dtype=np.int64), np.asarray(earlier, dtype=np.int64))
    if np.any(later <= earlier):
        raise ValueError("every pair must be (later, earlier) with later > earlier")
    ids, inverse = np.unique(np.concatenate([later, earlier]), return_inverse=True)
    li, ei = inverse[: len(later)], inverse[len(later) :]
    state = np.zeros(len(ids), dtype=np.int8)  # 0 undecided, 1 kept, 2 dropped
    state[np.setdiff1d(ei, li)] = 1  # never the later of a pair: kept
    live = np.ones(len(li), dtype=bool)
    while live.any():
        li_live, ei_live = li[live], ei[live]
        before = int(live.sum())
        state[li_live[state[ei_live] == 1]] = 2  # matches a kept row
        # every pair of a still undecided row points at a dropped row: kept
        undecided = state[li_live] == 0
        blocked = np.zeros(len(ids), dtype=bool)
        blocked[li_live[undecided & (state[ei_live] != 2)]] = True
        free = li_live[undecided & ~blocked[li_live]]
        state[free] = 1
        live &= state[li] == 0
        if before - int(live.sum()) < max(before // 10, 1):
            break
    if live.any():  # the rest in row order: a row's earlier rows are decided before it
        dropped = bytearray((state == 2).tobytes())
        for i, j in zip(li[live].tolist(), ei[live].tolist(), strict=True):
            if not dropped[i] and not dropped[j]:
                dropped[i] = 1
        state[np.frombuffer(bytes(dropped), dtype=bool)] = 2
    return ids[state == 2]
