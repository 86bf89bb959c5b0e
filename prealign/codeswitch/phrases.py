"""Multi-word lexicon entries as switching units ('no one' -> 'personne', 'last night' -> '昨晚').

A lexicon entry whose source side the segmenter cuts into several words is a *phrase*. In a document, a run of
consecutive switchable words whose words are a phrase's becomes one unit with that phrase's entry, longest
match first, left to right; it is then switched (or not) as one word is. Matching is vectorised: every word
of a phrase has a number, each run of n units a hash of its numbers, looked up among the phrases' hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prealign.text import Segmenter

_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class PhraseIndex:
    """The phrases of a switch table: ``word_id`` numbers the words that occur in phrases; ``entries`` maps a
    phrase's word numbers to its entry; ``hashes[n]``/``by_hash[n]``: the sorted hashes of the n-word phrases
    and their word numbers in the same order."""

    word_id: dict[str, int]
    entries: dict[tuple[int, ...], int]
    longest: int
    hashes: dict[int, np.ndarray] = field(default_factory=dict)


def _hash(columns: list[np.ndarray]) -> np.ndarray:
    """One uint64 per row of word numbers (given column by column)."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in columns:
            h = (h ^ col.astype(np.uint64)) * _MIX + np.uint64(1)
    return h


def phrase_index(index: dict[str, int], segmenter: Segmenter) -> PhraseIndex:
    """The phrases among the keys of a switch table's ``index`` (key -> entry), cut by ``segmenter``."""
    keys = list(index)
    word_id: dict[str, int] = {}
    entries: dict[tuple[int, ...], int] = {}
    for key, words in zip(keys, segmenter.segment_batch(keys), strict=True):
        if len(words) > 1:
            ids = tuple(word_id.setdefault(w, len(word_id)) for w in words)
            entries.setdefault(ids, index[key])
    hashes = {}
    for n in {len(ids) for ids in entries}:
        rows = np.array([ids for ids in entries if len(ids) == n], dtype=np.int64)
        hashes[n] = np.sort(_hash([rows[:, k] for k in range(n)]))
    return PhraseIndex(word_id, entries, max(map(len, entries), default=1), hashes)


def find_phrases(words: np.ndarray, unit_doc: np.ndarray, phrases: PhraseIndex) -> list[tuple[int, int, int]]:
    """(first unit, last unit, entry) of each phrase found among consecutive units of one document; ``words``:
    each unit's phrase word number (-1: not a word of any phrase, or not a switchable word). Longest match first,
    left to right; matches do not overlap."""
    n_units = len(words)
    found: list[tuple[int, int, int]] = []  # (start, -length, entry) of every match, resolved below
    for n, table in phrases.hashes.items():
        if n_units < n:
            continue
        starts = np.arange(n_units - n + 1)
        ok = (unit_doc[starts] == unit_doc[starts + n - 1]) & (words[starts] >= 0)
        for k in range(1, n):
            ok &= words[starts + k] >= 0
        starts = starts[ok]
        h = _hash([words[starts + k] for k in range(n)])
        pos = np.minimum(np.searchsorted(table, h), len(table) - 1)
        for s in starts[table[pos] == h].tolist():
            entry = phrases.entries.get(tuple(words[s : s + n].tolist()))  # exact: a hash collision is no match
            if entry is not None:
                found.append((s, -n, entry))
    out, free = [], 0
    for s, neg_n, entry in sorted(found):
        if s >= free:
            out.append((s, s - neg_n - 1, entry))
            free = s - neg_n
    return out


def merge_units(found: list[tuple[int, int, int]], n_units: int) -> np.ndarray:
    """A mask of the units that remain once each phrase's units after its first are merged into it."""
    keep = np.ones(n_units, dtype=bool)
    for u, v, _ in found:
        keep[u + 1 : v + 1] = False
    return keep
