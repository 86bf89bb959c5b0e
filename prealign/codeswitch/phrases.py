"""Multi-word lexicon entries as switching units ('no one' -> 'personne', 'last night' -> '昨晚').

A lexicon entry whose source side the segmenter cuts into several words is a *phrase*. In a document, a run of
consecutive switchable words whose words are a phrase's becomes one unit with that phrase's entry, longest
match first, left to right; it is then switched (or not) as one word is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from prealign.text import Segmenter


@dataclass(frozen=True)
class PhraseIndex:
    """The phrases of a switch table: their words -> entry, the words phrases start with, the longest phrase."""

    entries: dict[tuple[str, ...], int]
    firsts: frozenset[str]
    longest: int


def phrase_index(index: dict[str, int], segmenter: Segmenter) -> PhraseIndex:
    """The phrases among the keys of a switch table's ``index`` (key -> entry), cut by ``segmenter``."""
    keys = list(index)
    entries = {}
    for key, words in zip(keys, segmenter.segment_batch(keys), strict=True):
        if len(words) > 1:
            entries.setdefault(tuple(words), index[key])
    return PhraseIndex(entries, frozenset(w[0] for w in entries), max(map(len, entries), default=1))


def find_phrases(
    candidates: np.ndarray,
    is_word_unit: np.ndarray,
    unit_doc: np.ndarray,
    key_of: Callable[[int], str],
    phrases: PhraseIndex,
) -> list[tuple[int, int, int]]:
    """(first unit, last unit, entry) of each phrase found, starting at ``candidates`` (units whose word starts
    a phrase, in order), over consecutive word units of one document; matches do not overlap."""
    found = []
    free = 0  # the first unit not inside a phrase found already
    n_units = len(is_word_unit)
    for u in candidates.tolist():
        if u < free:
            continue
        words = [key_of(u)]
        best = None
        v = u
        while len(words) < phrases.longest:
            v += 1
            if v >= n_units or not is_word_unit[v] or unit_doc[v] != unit_doc[u]:
                break
            words.append(key_of(v))
            entry = phrases.entries.get(tuple(words))
            if entry is not None:
                best = (u, v, entry)
        if best is not None:
            found.append(best)
            free = best[1] + 1
    return found


def merge_units(found: list[tuple[int, int, int]], n_units: int) -> np.ndarray:
    """A mask of the units that remain once each phrase's units after its first are merged into it."""
    keep = np.ones(n_units, dtype=bool)
    for u, v, _ in found:
        keep[u + 1 : v + 1] = False
    return keep
