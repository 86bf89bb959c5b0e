"""Word-alignment links: Pharaoh files (``0-0 1-2`` per sentence) and gold standards (``i-j`` / ``ipj``).

A sentence's links are a numpy ``int32`` array of shape ``(k, 2)``: column 0 is the source word index,
column 1 the target word index, both 0-based; rows are sorted lexicographically and unique. Every reader here
returns that form whatever order or duplicates the file holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from prealign.errors import InputError
from prealign.textio import atomic_write_text

__all__ = ["empty_links", "normalize_links", "format_pharaoh", "write_pharaoh", "read_pharaoh", "read_gold"]

# the first whitespace-separated token that is not a link (indices of at most 9 digits fit in int32)
_BAD_PHARAOH = re.compile(rb"(?<!\S)(?!\d{1,9}-\d{1,9}(?!\S))\S+")
_BAD_GOLD = re.compile(rb"(?<!\S)(?!\d{1,9}[-p]\d{1,9}(?!\S))\S+")
_INT32_MAX = np.iinfo(np.int32).max


def empty_links() -> np.ndarray:
    """A sentence without links: an ``int32`` array of shape ``(0, 2)``."""
    return np.zeros((0, 2), dtype=np.int32)


def _flatten(all_links: Sequence[np.ndarray | Sequence[Sequence[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """(sentence id, (n, 2) int64 links) over all sentences; ValueError on a bad shape or index."""
    arrays = []
    for n, links in enumerate(all_links):
        arr = np.asarray(links)
        if arr.size == 0:
            arr = np.zeros((0, 2), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"sentence {n}: links must be integers of shape (k, 2), not {arr.dtype} {arr.shape}")
        arrays.append(arr)
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    sent = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros((0, 2), dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() > _INT32_MAX):
        raise ValueError("link indices must be in [0, 2**31)")
    return sent, flat


def _sort_unique(sent: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, ...]:
    """The (sentence, i, j) triples sorted lexicographically, duplicates dropped."""
    bits = [max(int(x.max()), 0).bit_length() if len(x) else 0 for x in (sent, i, j)]
    if sum(bits) <= 63:
        key = (sent << (bits[1] + bits[2])) | (i << bits[2]) | j
        order = np.argsort(key, kind="stable")
        key = key[order]
        keep = np.ones(len(key), dtype=bool)
        keep[1:] = key[1:] != key[:-1]
    else:
        order = np.lexsort((j, i, sent))
        keep = np.ones(len(order), dtype=bool)
        s, a, b = sent[order], i[order], j[order]
        keep[1:] = (s[1:] != s[:-1]) | (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    order = order[keep]
    return sent[order], i[order], j[order]


def _group(n_sent: int, sent: np.ndarray, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Split flat (sentence, i, j) triples into one sorted, unique ``(k, 2)`` int32 array per sentence."""
    sent, i, j = _sort_unique(sent, i, j)
    pairs = np.stack([i, j], axis=1).astype(np.int32)
    bounds = np.searchsorted(sent, np.arange(n_sent + 1))
    return [pairs[bounds[s] : bounds[s + 1]] for s in range(n_sent)]


def normalize_links(links: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Any ``(k, 2)`` array-like of integer pairs -> sorted, unique ``int32`` links (else ValueError)."""
    arr = np.asarray(links)
    if arr.size == 0:
        return empty_links()
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"links must be integers of shape (k, 2), not {arr.dtype} {arr.shape}")
    if arr.min() < 0 or arr.max() > _INT32_MAX:
        raise ValueError("link indices must be in [0, 2**31)")
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    keep = np.ones(len(arr), dtype=bool)
    keep[1:] = (arr[1:] != arr[:-1]).any(axis=1)
    return arr[keep].astype(np.int32)


def format_pharaoh(links: np.ndarray | Sequence[Sequence[int]]) -> str:
    """One sentence's links as a Pharaoh line without newline, e.g. ``"0-0 1-2"`` (sorted, unique)."""
    return " ".join(f"{i}-{j}" for i, j in normalize_links(links).tolist())


def pharaoh_text(all_links: Sequence[np.ndarray]) -> str:
    """One Pharaoh line per sentence (0-indexed ``i-j``, sorted, unique), each ending in a newline; a sentence
    without links is an empty line."""
    sent, flat = _flatten(all_links)
    sent, i, j = _sort_unique(sent, flat[:, 0], flat[:, 1])
    lines = pl.Series("line", [""] * len(all_links), dtype=pl.String)
    if len(sent):
        per_sentence = (
            pl.DataFrame({"s": sent, "i": i, "j": j})
            .group_by("s", maintain_order=True)
            .agg(pl.format("{}-{}", "i", "j").str.join(" ").alias("line"))
        )
        lines = lines.scatter(per_sentence["s"], per_sentence["line"])
    return lines.str.join("\n").item() + "\n" if len(lines) else ""


def write_pharaoh(all_links: Sequence[np.ndarray], path: str | os.PathLike) -> None:
    """Write :func:`pharaoh_text` of ``all_links``. Atomic: a temporary file in the same directory, then
    ``os.replace``."""
    atomic_write_text(Path(path), pharaoh_text(all_links))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", path) from None


def _table(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


_WHITESPACE = _table(b" \t\n\r\x0b\x0c")
_DIGITS = _table(b"0123456789")


def _check(buf: np.ndarray, is_sep: np.ndarray, ws: np.ndarray, digit: np.ndarray) -> bool:
    """True when every whitespace-separated token is ``digits SEP digits`` with at most 9 digits a side."""
    if not (ws | digit | is_sep).all():
        return False
    seps = np.flatnonzero(is_sep)
    if len(seps) and (seps[0] == 0 or seps[-1] == len(buf) - 1):
        return False
    if not (digit[seps - 1] & digit[seps + 1]).all():
        return False
    starts = ~ws & np.concatenate([[True], ws[:-1]])
    if int(starts.sum()) != len(seps):
        return False
    token = np.searchsorted(np.flatnonzero(starts), seps, side="right") - 1
    if (np.bincount(token, minlength=len(seps)) != 1).any():
        return False
    run_start = np.flatnonzero(digit & ~np.concatenate([[False], digit[:-1]]))
    run_end = np.flatnonzero(digit & ~np.concatenate([digit[1:], [False]]))
    return bool((run_end - run_start < 9).all())


def _parse(path: Path, gold: bool) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a link file: (number of lines, sentence ids, i, j, is_possible) over all links in the file.

    Vectorised over the file's bytes: a numpy check of the token structure (a regex scan names the first
    malformed token only when that check fails), each separator's line from the newline positions, and each
    number from its digits.
    """
    data = _read_bytes(path)
    n_lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    buf = np.frombuffer(data, dtype=np.uint8)
    is_p = buf == ord("p") if gold else np.zeros(len(buf), dtype=bool)
    is_sep = (buf == ord("-")) | is_p
    digit = _DIGITS[buf]
    if not _check(buf, is_sep, _WHITESPACE[buf], digit):
        bad = (_BAD_GOLD if gold else _BAD_PHARAOH).search(data)
        if bad is None:  # the two checks agree; kept as a safe fallback
            raise InputError("malformed link file", path)
        token = bad.group().decode("utf-8", errors="replace")
        raise InputError(f"bad link {token!r}", path, data.count(b"\n", 0, bad.start()) + 1)

    seps = np.flatnonzero(is_sep)
    sent = np.searchsorted(np.flatnonzero(buf == ord("\n")), seps).astype(np.int64)
    # each number is a run of digits: value = sum of digit * 10 ** (places before the run's end)
    pos = np.flatnonzero(digit)
    run_start = digit & ~np.concatenate([[False], digit[:-1]])
    run = np.cumsum(run_start[pos]) - 1
    run_end = np.flatnonzero(digit & ~np.concatenate([digit[1:], [False]]))
    weights = (buf[pos] - ord("0")) * 10.0 ** (run_end[run] - pos)
    numbers = np.rint(np.bincount(run, weights=weights, minlength=2 * len(seps))).astype(np.int64)
    return n_lines, sent, numbers[0::2], numbers[1::2], is_p[seps]


def _shift(path: Path, sent: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert 1-based indices to 0-based; an index 0 (negative after conversion) is an error."""
    i, j = i - 1, j - 1
    bad = (i < 0) | (j < 0)
    if bad.any():
        line = int(sent[np.argmax(bad)]) + 1
        raise InputError("index 0 in a 1-indexed link file (negative after conversion)", path, line)
    return i, j


def read_pharaoh(path: str | os.PathLike, one_indexed: bool = False) -> list[np.ndarray]:
    """Read a Pharaoh file (``i-j`` tokens, one line per sentence) into one links array per line.

    With ``one_indexed`` the file's indices are 1-based and are converted to 0-based. Malformed tokens,
    bad UTF-8 and (when 1-indexed) index 0 raise :class:`InputError` naming the file and line.
    """
    path = Path(path)
    n, sent, i, j, _ = _parse(path, gold=False)
    if one_indexed:
        i, j = _shift(path, sent, i, j)
    return _group(n, sent, i, j)


def read_gold(
    path: str | os.PathLike, index_base: Literal["auto", 0, 1] = "auto"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read a gold alignment file: ``i-j`` tokens are sure links, ``ipj`` possible ones.

    Returns ``(sure, possible)``, one links array per line, where ``possible`` includes the sure links
    (the AER convention S ⊆ P). ``index_base`` is 0, 1, or ``"auto"``: 1-based when no index 0 appears
    anywhere in the file, else 0-based. ``i`` indexes the source side.
    """
    if index_base not in ("auto", 0, 1):
        raise ValueError(f"index_base must be 'auto', 0 or 1, not {index_base!r}")
    path = Path(path)
    n, sent, i, j, is_p = _parse(path, gold=True)
    one_based = index_base == 1 or (index_base == "auto" and not ((i == 0).any() or (j == 0).any()))
    if one_based:
        i, j = _shift(path, sent, i, j)
    sure = ~is_p
    return _group(n, sent[sure], i[sure], j[sure]), _group(n, sent, i, j)
