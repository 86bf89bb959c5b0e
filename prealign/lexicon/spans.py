"""Multi-word lexicon entries: a word aligned to a contiguous run of words on the other side.

Two link sets of the same sentences are compared (corpus link keys, see
:mod:`prealign.lexicon.symmetrize`): a *dense* one (grow-diag-final-and) that shows the runs, and the
lexicon's *precise* one (e.g. intersect) that anchors them. A source word ``i`` becomes a phrase pair with
target words ``j .. j+k-1`` when, in the dense set, its links are exactly those ``k`` words (``2 <= k <=
max_span``, contiguous), each of them linked to ``i`` only, and at least one of those links is in the
precise set; the reverse (a target word and a run of source words) likewise. The precise links of the
phrase's single word in that sentence are replaced by the phrase pair; every other precise link stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prealign.arrays import sorted_unique
from prealign.lexicon.symmetrize import split_keys

__all__ = ["PhrasePairs", "find_spans"]


@dataclass(frozen=True)
class PhrasePairs:
    """Phrase pairs (ends exclusive: one side always spans one word) and the precise links they replace."""

    sentence: np.ndarray  # int64
    src_start: np.ndarray
    src_end: np.ndarray
    tgt_start: np.ndarray
    tgt_end: np.ndarray
    replaced: np.ndarray  # bool, one per precise link (in the order given)

    def __len__(self) -> int:
        return len(self.sentence)


def _runs(
    sent: np.ndarray, one: np.ndarray, many: np.ndarray, anchored: np.ndarray, max_span: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Words on the ``one`` side linked to a contiguous run of 2..max_span words on the ``many`` side, each
    of those linked to that word only, at least one link anchored: (sentence, word, run start, run end)."""
    empty = np.zeros(0, np.int64)
    if len(sent) == 0:
        return empty, empty, empty, empty
    key_one, key_many = (sent << 16) | one, (sent << 16) | many
    _, inv_many, deg_many = np.unique(key_many, return_inverse=True, return_counts=True)
    order = np.lexsort((many, key_one))
    k = key_one[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    starts = np.flatnonzero(first)
    size = np.diff(np.append(starts, len(k)))
    lo = np.minimum.reduceat(many[order], starts)
    hi = np.maximum.reduceat(many[order], starts)
    shared = np.add.reduceat((deg_many[inv_many] != 1)[order].astype(np.int64), starts)
    anchors = np.add.reduceat(anchored[order].astype(np.int64), starts)
    ok = (size >= 2) & (size <= max_span) & (hi - lo + 1 == size) & (shared == 0) & (anchors > 0)
    word = k[starts[ok]]
    return word >> 16, word & 0xFFFF, lo[ok], hi[ok] + 1


def find_spans(precise: np.ndarray, dense: np.ndarray, max_span: int) -> PhrasePairs:
    """The phrase pairs of the sentences in ``precise`` and ``dense`` (link keys; see the module doc), sorted by
    sentence, source start, target start; ``max_span`` < 2 finds none."""
    precise = np.asarray(precise, dtype=np.int64)
    dense = sorted_unique(np.asarray(dense, dtype=np.int64)) if max_span >= 2 else np.zeros(0, np.int64)
    sent, i, j = split_keys(dense)
    anchored = np.isin(dense, precise)
    f_sent, f_src, f_lo, f_hi = _runs(sent, i, j, anchored, max_span)
    r_sent, r_tgt, r_lo, r_hi = _runs(sent, j, i, anchored, max_span)
    p_sent, p_i, p_j = split_keys(precise)
    replaced = np.isin((p_sent << 16) | p_i, (f_sent << 16) | f_src)
    replaced |= np.isin((p_sent << 16) | p_j, (r_sent << 16) | r_tgt)
    sentence = np.concatenate([f_sent, r_sent])
    src_start, src_end = np.concatenate([f_src, r_lo]), np.concatenate([f_src + 1, r_hi])
    tgt_start, tgt_end = np.concatenate([f_lo, r_tgt]), np.concatenate([f_hi, r_tgt + 1])
    order = np.lexsort((tgt_start, src_start, sentence))
    return PhrasePairs(sentence[order], src_start[order], src_end[order], tgt_start[order], tgt_end[order], replaced)
