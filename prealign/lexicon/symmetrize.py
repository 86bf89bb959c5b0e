"""From link posteriors to directional alignments, and symmetrisation of the two directions.

Links of a whole corpus are kept as sorted int64 keys ``sentence << 32 | i << 16 | j`` (source index i,
target index j), so intersection and union are array set operations. ``grow-diag-final-and`` follows
Koehn et al. (2003) and runs per sentence.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from prealign.arrays import sorted_unique
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


def _by_sentence(keys: np.ndarray, sentences: np.ndarray) -> list[list[tuple[int, int]]]:
    """The (i, j) links of each listed sentence (``sentences`` sorted), from sorted corpus keys."""
    bounds_lo = np.searchsorted(keys >> 32, sentences, side="left")
    bounds_hi = np.searchsorted(keys >> 32, sentences, side="right")
    _, i, j = split_keys(keys)
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    return [pairs[lo:hi] for lo, hi in zip(bounds_lo.tolist(), bounds_hi.tolist(), strict=True)]


def _gdfa_sentence(
    inter: list[tuple[int, int]], union: set[tuple[int, int]], fwd: list[tuple[int, int]], bwd: list[tuple[int, int]]
) -> set[tuple[int, int]]:
    align = set(inter)
    src_done = {a for a, _ in align}
    tgt_done = {b for _, b in align}
    grown = True
    while grown:
        grown = False
        for a, b in sorted(align):
            for da, db in _NEIGHBOURS:
                cand = (a + da, b + db)
                if cand in union and cand not in align and (cand[0] not in src_done or cand[1] not in tgt_done):
                    align.add(cand)
                    src_done.add(cand[0])
                    tgt_done.add(cand[1])
                    grown = True
    for cand in (*fwd, *bwd):  # final-and: a directional link whose two words are both still unaligned
        if cand[0] not in src_done and cand[1] not in tgt_done:
            align.add(cand)
            src_done.add(cand[0])
            tgt_done.add(cand[1])
    return align


def grow_diag_final_and(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Koehn's grow-diag-final-and over corpus link keys.

    Sentences whose two directions agree are their intersection already; only the others run the
    (per-sentence, Python) growing.
    """
    fwd, bwd = sorted_unique(fwd), sorted_unique(bwd)
    inter = np.intersect1d(fwd, bwd, assume_unique=True)
    union = sorted_unique(np.concatenate([fwd, bwd]))
    todo = sorted_unique(np.setdiff1d(union, inter, assume_unique=True) >> 32)
    if len(todo) == 0:
        return inter
    grown = []
    parts = zip(
        todo.tolist(),
        _by_sentence(inter, todo),
        _by_sentence(union, todo),
        _by_sentence(fwd, todo),
        _by_sentence(bwd, todo),
        strict=True,
    )
    for s, inter_s, union_s, fwd_s, bwd_s in parts:
        links = sorted(_gdfa_sentence(inter_s, set(union_s), fwd_s, bwd_s))
        grown.append((s << 32) | (np.array([i for i, _ in links], dtype=np.int64) << 16) | [j for _, j in links])
    pos = np.minimum(np.searchsorted(todo, inter >> 32), len(todo) - 1)
    keep = inter[todo[pos] != inter >> 32]
    return np.sort(np.concatenate([keep, *grown]))


def symmetrize(fwd: np.ndarray, bwd: np.ndarray, method: Method) -> np.ndarray:
    """Combine forward and backward link keys by ``method``."""
    if method == "intersect":
        return np.intersect1d(sorted_unique(fwd), sorted_unique(bwd), assume_unique=True)
    if method == "union":
        return sorted_unique(np.concatenate([fwd, bwd]))
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
