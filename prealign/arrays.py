"""Small numpy helpers shared across packages."""

from __future__ import annotations

import numpy as np


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: numpy 2's ``np.unique`` (and ``intersect1d``, ``isin``) is tens of times
    slower than a sort on large int64 arrays here."""
    a = np.sort(a)
    if len(a) == 0:
        return a
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = a[1:] != a[:-1]
    return a[keep]


def sorted_unique_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values in ascending order and how often each occurs."""
    a = np.sort(a)
    if len(a) == 0:
        return a, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]]))
    return a[starts], np.diff(np.append(starts, len(a))).astype(np.int64)


def join_offsets(parts: list[np.ndarray]) -> np.ndarray:
    """Offsets (each starting at 0) of consecutive ragged parts, as the offsets of their concatenation."""
    if not parts:
        return np.zeros(1, dtype=np.int64)
    out = [parts[0]]
    base = parts[0][-1]
    for p in parts[1:]:
        out.append(p[1:] + base)
        base += p[-1]
    return np.concatenate(out)
