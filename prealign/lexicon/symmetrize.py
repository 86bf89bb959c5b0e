"""From link posteriors to directional alignments, and symmetrisation of the two directions.

Links of a whole corpus are kept as sorted int64 keys ``sentence << 32 | i << 16 | j`` (source index i,
target index j), so intersection and union are array set operations. ``grow-diag-final-and`` follows
Koehn et al. (2003) and runs per sentence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from prealign.lexicon.encode import candidate_grid

Method = Literal["intersect", "union", "grow-diag-final-and", "forward", "backward"]
METHODS = ("intersect", "union", "grow-diag-final-and", "forward", "backward")
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def link_keys(sent: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return (sent.astype(np.int64) << 32) | (i.astype(np.int64) << 16) | j.astype(np.int64)


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return keys >> 32, (keys >> 16) & 0xFFFF, keys & 0xFFFF


def directional_links(
    posterior: np.ndarray,
    src_offsets: np.ndarray,
    tgt_offsets: np.ndarray,
    forward: bool,
    threshold: float = 0.0,
    first_sentence: int = 0,
) -> np.ndarray:
    """Keys of the best link of each observed word, where it beats the empty word and the threshold.

    ``posterior`` holds one value per slot of the sentences' source-major grids (see ``candidate_grid``).
    Forward (states = source words): each target word links to at most one source word; backward the reverse.
    Sentence numbers in the keys start at ``first_sentence``.
    """
    if len(posterior) == 0:
        return np.zeros(0, dtype=np.int64)
    src_offsets = src_offsets - src_offsets[0]
    tgt_offsets = tgt_offsets - tgt_offsets[0]
    _, sent, i, j = candidate_grid(src_offsets, tgt_offsets)
    group = tgt_offsets[sent] + j if forward else src_offsets[sent] + i
    order = np.lexsort((-posterior, group))
    g = group[order]
    first = np.ones(len(g), dtype=bool)
    first[1:] = g[1:] != g[:-1]
    best = order[first]
    totals = np.bincount(group, weights=posterior, minlength=int(group.max()) + 1)
    null = 1.0 - totals[group[best]]
    p = posterior[best]
    keep = (p > null) & (p >= threshold) & (p > 0)
    best = best[keep]
    return np.sort(link_keys(sent[best] + first_sentence, i[best], j[best]))


def grow_diag_final_and(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Koehn's grow-diag-final-and over corpus link keys."""
    inter = np.intersect1d(fwd, bwd)
    union = np.union1d(fwd, bwd)
    out: list[np.ndarray] = []
    u_sent = union >> 32
    bounds = np.searchsorted(u_sent, np.arange(int(u_sent[-1]) + 2)) if len(union) else np.zeros(1, int)
    f_sent, b_sent, i_sent = fwd >> 32, bwd >> 32, inter >> 32
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        if lo == hi:
            continue
        union_s = {(int(k >> 16) & 0xFFFF, int(k) & 0xFFFF) for k in union[lo:hi]}
        sel = slice(*np.searchsorted(i_sent, [s, s + 1]))
        align = {(int(k >> 16) & 0xFFFF, int(k) & 0xFFFF) for k in inter[sel]}
        src_done = {a for a, _ in align}
        tgt_done = {b for _, b in align}
        grown = True
        while grown:
            grown = False
            for a, b in sorted(align):
                for da, db in _NEIGHBOURS:
                    cand = (a + da, b + db)
                    if cand in union_s and cand not in align and (cand[0] not in src_done or cand[1] not in tgt_done):
                        align.add(cand)
                        src_done.add(cand[0])
                        tgt_done.add(cand[1])
                        grown = True
        for keys, ks in ((fwd, f_sent), (bwd, b_sent)):
            part = keys[slice(*np.searchsorted(ks, [s, s + 1]))]
            for k in part:
                cand = (int(k >> 16) & 0xFFFF, int(k) & 0xFFFF)
                if cand[0] not in src_done and cand[1] not in tgt_done:
                    align.add(cand)
                    src_done.add(cand[0])
                    tgt_done.add(cand[1])
        arr = np.array(sorted(align), dtype=np.int64).reshape(-1, 2)
        out.append(link_keys(np.full(len(arr), s), arr[:, 0], arr[:, 1]))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def symmetrize(fwd: np.ndarray, bwd: np.ndarray, method: Method) -> np.ndarray:
    """Combine forward and backward link keys by ``method``."""
    if method == "intersect":
        return np.intersect1d(fwd, bwd)
    if method == "union":
        return np.union1d(fwd, bwd)
    if method == "grow-diag-final-and":
        return grow_diag_final_and(fwd, bwd)
    if method == "forward":
        return fwd
    if method == "backward":
        return bwd
    raise ValueError(f"unknown symmetrisation {method!r}; choose from {', '.join(METHODS)}")


def sentence_links(keys: np.ndarray, n_sentences: int) -> list[np.ndarray]:
    """Per-sentence (k, 2) int32 arrays of (source index, target index) from corpus link keys."""
    sent, i, j = split_keys(np.sort(keys))
    bounds = np.searchsorted(sent, np.arange(n_sentences + 1))
    pairs = np.stack([i, j], axis=1).astype(np.int32)
    return [pairs[bounds[s] : bounds[s + 1]] for s in range(n_sentences)]
