"""The read stage's deduplication as independent tasks over files (the rules are :mod:`prealign.lexicon.dedup`).

Each task reads files, writes one final output file atomically and returns a small dict of counts; it is
done when its output exists. Memory is bounded by a batch, a shard or the duplicates, never the corpus:

1. :func:`prepare_task`, one per input batch: segment, length codes, exact keys, MinHash signatures and band
   tokens. Writes its side files first (:func:`side_file`, :func:`signature_file`), then ``prep.npz``.
2. :func:`exact_task`, one per range of key values (:func:`shard_bounds`): the exact duplicates whose key is
   in the range (``.npy``, sorted global rows).
3. :func:`near_task`, one per range of band token values: the matching pairs whose shared token is in the
   range, among the pairs that are not exact duplicates (``.npy``, int64 [2, m]: later, earlier).
4. :func:`resolve_task`, once: the near duplicates from all pairs, in row order, with the exact ones
   (``.npz``: ``rows`` and ``reason``); :func:`batch_drops` and :func:`final_codes` give a batch its codes.

``prep.npz`` holds, for ``n`` pairs: ``src_words_data`` (uint8, UTF-8 of all words), ``src_words_offsets``
(int64, words + 1), ``src_offsets`` (int64, n + 1: the words of each sentence), the same for ``tgt``; ``codes``
(uint8, n: length-filter codes, :data:`~prealign.lexicon.clean.REASONS`); ``stats`` (JSON as uint8 bytes:
``{"rows": n, "over_max_words": k}``). Side files (``.npy``, memory-mapped by the shard tasks, which read only
their slice of each): with exact dedup ``prep.key.npy`` (uint64) and ``prep.key_rows.npy`` (int64, local rows
of the length-kept pairs, sorted by key then row); with near dedup ``prep.tok.npy`` and ``prep.tok_rows.npy``:
the band tokens of the length-kept pairs, sorted by token then row, and ``prep.sig.npy``, (n, minhash_perm)
uint64, zeros for the pairs the length filter dropped. Global rows are local rows plus the batch's first
global row (``starts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.lexicon import clean
from prealign.lexicon.dedup import band_tokens, exact_duplicates, lsh_bands, matching_pairs, near_duplicates
from prealign.pipelines.stages import read_stats, read_words, save_npy, save_npz, words_arrays
from prealign.text import Segmenter, SegmenterConfig

_TOP = 1 << 64  # the end of the uint64 range: hashes are below it


def side_file(prepared: Path, name: str) -> Path:
    """A side file of the batch :func:`prepare_task` writes to ``prepared``: ``key``/``key_rows`` (exact keys
    sorted, with their rows), ``tok``/``tok_rows`` (band tokens sorted, with their rows)."""
    return Path(prepared).with_suffix(f".{name}.npy")


def signature_file(prepared: Path) -> Path:
    """Where :func:`prepare_task` puts the signatures of the batch it writes to ``prepared``."""
    return Path(prepared).with_suffix(".sig.npy")


# ---------------------------------------------------------------------------------------------- prepare


def _blank(sentences: list[list[str]], rows: np.ndarray) -> list[list[str]]:
    """``sentences`` with those of ``rows`` emptied."""
    if len(rows) == 0:
        return sentences
    out = list(sentences)
    for r in rows.tolist():
        out[r] = []
    return out


def _lengths(sentences: list[list[str]]) -> np.ndarray:
    return np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))


def _words_arrays(prefix: str, sentences: list[list[str]]) -> dict[str, np.ndarray]:
    """The words of ``sentences`` (flat, :func:`~prealign.pipelines.stages.words_arrays`) and sentence offsets."""
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(_lengths(sentences), out=offsets[1:])
    return {**words_arrays(f"{prefix}_words", [w for s in sentences for w in s]), f"{prefix}_offsets": offsets}


def _read_words(z: Any, prefix: str) -> pa.Array:
    """A side's sentences as ``large_list<large_string>`` (see :func:`_words_arrays`)."""
    words = read_words(z, f"{prefix}_words")
    return pa.LargeListArray.from_arrays(pa.array(np.asarray(z[f"{prefix}_offsets"], dtype=np.int64)), words)


def _sorted_by_value(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, values))
    return values[order], rows[order]


def prepare_task(
    out: Path,
    batch: pa.RecordBatch,
    src_seg: SegmenterConfig,
    tgt_seg: SegmenterConfig,
    cfg: clean.CleanConfig | None,
    max_words: int | None = None,
) -> dict[str, int]:
    """Segment one batch (columns ``src`` and ``tgt``) and write what the later tasks need to ``out`` (see the
    module doc). With ``cfg``, pairs the length filter drops are emptied; without, pairs with a side over
    ``max_words`` words are emptied and counted in ``over_max_words`` (kept, with no words). Returns the
    stats stored in the file."""
    out = Path(out)
    src = Segmenter(src_seg).segment_batch(batch.column("src").to_pylist())
    tgt = Segmenter(tgt_seg).segment_batch(batch.column("tgt").to_pylist())
    n = len(src)
    arrays: dict[str, np.ndarray] = {}
    over = 0
    if cfg is None:
        codes = np.zeros(n, dtype=np.uint8)
        if max_words is not None:
            blank = np.flatnonzero((_lengths(src) > max_words) | (_lengths(tgt) > max_words))
            src, tgt, over = _blank(src, blank), _blank(tgt, blank), len(blank)
    else:
        codes = clean.length_reasons(clean.side_lengths(src), clean.side_lengths(tgt), cfg)
        dropped = np.flatnonzero(codes != clean.KEPT)
        src, tgt = _blank(src, dropped), _blank(tgt, dropped)
        kept = np.flatnonzero(codes == clean.KEPT)
        kept_src, kept_tgt = [src[i] for i in kept.tolist()], [tgt[i] for i in kept.tolist()]
        # side files, written before ``out`` (the task is done only when all exist), memory-mapped by the shards
        if cfg.dedup:
            keys, rows = _sorted_by_value(clean.pair_keys(kept_src, kept_tgt), kept)
            save_npy(side_file(out, "key"), keys)
            save_npy(side_file(out, "key_rows"), rows)
        if cfg.near_dedup:
            sig = np.zeros((n, cfg.minhash_perm), dtype=np.uint64)
            sig[kept] = clean.minhash_signatures(kept_src, kept_tgt, cfg)
            tok = band_tokens(sig[kept], lsh_bands(cfg))
            tokens, rows = _sorted_by_value(tok.reshape(-1), np.repeat(kept, tok.shape[1]))
            save_npy(side_file(out, "tok"), tokens)
            save_npy(side_file(out, "tok_rows"), rows)
            save_npy(signature_file(out), sig)
    stats = {"rows": n, "over_max_words": int(over)}
    arrays.update(_words_arrays("src", src), **_words_arrays("tgt", tgt))
    arrays["codes"] = codes
    save_npz(out, stats, **arrays)
    return stats


@dataclass
class PreparedFile:
    """What :func:`read_prepared` gives back of a batch: its words, length codes and stats."""

    src: pa.Array  # large_list<large_string>: the words of each source sentence
    tgt: pa.Array
    codes: np.ndarray  # uint8 length-filter code per pair
    stats: dict[str, int]


def read_prepared(path: Path) -> PreparedFile:
    """The words, codes and stats of a file written by :func:`prepare_task`."""
    with np.load(path) as z:
        stats = read_stats(path)
        return PreparedFile(_read_words(z, "src"), _read_words(z, "tgt"), np.asarray(z["codes"]), stats)


# ---------------------------------------------------------------------------------------------- shards


def shard_bounds(n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` equal ranges [lo, hi) of 64-bit hash values, covering them all (Python ints; the last
    ``hi`` is 2**64)."""
    if n_shards < 1:
        raise ValueError(f"need at least one shard, not {n_shards}")
    return [(i * _TOP // n_shards, (i + 1) * _TOP // n_shards) for i in range(n_shards)]


def _value_range(sorted_values: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """The slice of the sorted uint64 ``sorted_values`` that lies in [lo, hi)."""
    a = int(np.searchsorted(sorted_values, np.uint64(lo), side="left"))
    b = len(sorted_values) if hi >= _TOP else int(np.searchsorted(sorted_values, np.uint64(hi), side="left"))
    return a, b


def _shard(batch_files: list[Path], starts: list[int], name: str, lo: int, hi: int):
    """The values in [lo, hi) of every batch's sorted side file ``name`` and their global rows (memory-mapped:
    a shard reads its slice of each batch, not the whole)."""
    if len(batch_files) != len(starts):
        raise ValueError(f"{len(batch_files)} batch files but {len(starts)} starts")
    values, rows = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)]
    for path, start in zip(batch_files, starts, strict=True):
        if not side_file(path, name).exists():
            raise ValueError(f"{side_file(path, name)} is missing (was the batch prepared without this dedup?)")
        sorted_values = np.load(side_file(path, name), mmap_mode="r")
        a, b = _value_range(sorted_values, lo, hi)
        values.append(np.array(sorted_values[a:b]))
        rows.append(np.load(side_file(path, f"{name}_rows"), mmap_mode="r")[a:b].astype(np.int64) + start)
        del sorted_values  # unmapped: its pages leave this process
    return np.concatenate(values), np.concatenate(rows)


def _read_rows(files: list[Path]) -> np.ndarray:
    """The sorted union of the row arrays in ``files`` (``.npy``)."""
    return np.unique(np.concatenate([np.zeros(0, np.int64), *(np.load(f) for f in files)]).astype(np.int64))


def exact_task(out: Path, batch_files: list[Path], starts: list[int], lo: int, hi: int) -> dict[str, int]:
    """The exact duplicates (sorted global rows) among the pairs whose key is in [lo, hi), to ``out`` (.npy)."""
    keys, rows = _shard(batch_files, starts, "key", lo, hi)
    dup = exact_duplicates(keys, rows)
    save_npy(out, dup)
    return {"duplicates": len(dup)}


class _Signatures:
    """Signatures by global row, read from the batches' signature files one batch at a time (each file mapped
    only while its rows are copied out, so that the pages read do not stay in this process)."""

    def __init__(self, batch_files: list[Path], starts: list[int]) -> None:
        self.files = [signature_file(p) for p in batch_files]
        self.starts = np.asarray(starts, dtype=np.int64)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # rows come sorted: then this costs next to nothing
        batch_of = np.searchsorted(self.starts, rows[order], side="right") - 1
        firsts = np.flatnonzero(np.diff(batch_of, prepend=-1))  # where each batch's rows start, in ``order``
        out: np.ndarray | None = None
        for first, end in zip(firsts.tolist(), [*firsts[1:].tolist(), len(rows)], strict=True):
            batch, at = int(batch_of[first]), order[first:end]
            sig = np.load(self.files[batch], mmap_mode="r")
            if out is None:
                out = np.empty((len(rows), sig.shape[1]), dtype=np.uint64)
            out[at] = sig[rows[at] - self.starts[batch]]
            del sig
        return out if out is not None else np.zeros((0, 0), dtype=np.uint64)


def near_task(
    out: Path,
    batch_files: list[Path],
    starts: list[int],
    lo: int,
    hi: int,
    exact_files: list[Path],
    need: int,
) -> dict[str, int]:
    """The matching pairs (int64 [2, m]: later, earlier global rows) that share a band token in [lo, hi),
    among the pairs that are not exact duplicates (``exact_files``: every :func:`exact_task` output), to
    ``out`` (.npy). ``need``: :func:`~prealign.lexicon.dedup.min_matches` of the config."""
    tokens, rows = _shard(batch_files, starts, "tok", lo, hi)
    exact = _read_rows(exact_files)
    if len(exact):
        pos = np.minimum(np.searchsorted(exact, rows), len(exact) - 1)
        eligible = exact[pos] != rows
        tokens, rows = tokens[eligible], rows[eligible]
    later, earlier = matching_pairs(tokens, rows, _Signatures(batch_files, starts), need)
    save_npy(out, np.stack([later, earlier]).astype(np.int64))
    return {"tokens": len(tokens), "pairs": len(later)}


def resolve_task(out: Path, near_files: list[Path], exact_files: list[Path]) -> dict[str, int]:
    """Every dropped row, sorted, with its reason (``DUPLICATE`` or ``NEAR_DUPLICATE``), to ``out`` (.npz:
    ``rows`` int64, ``reason`` uint8), from the outputs of all the exact and near tasks."""
    exact = _read_rows(exact_files)
    pairs = [np.load(f) for f in near_files]
    later = np.concatenate([np.zeros(0, np.int64), *(p[0] for p in pairs)])
    earlier = np.concatenate([np.zeros(0, np.int64), *(p[1] for p in pairs)])
    del pairs
    near = near_duplicates(later, earlier)  # sorts and makes the pairs unique first
    if len(np.intersect1d(near, exact)):
        raise ValueError("a near-duplicate pair names an exact duplicate: the near tasks were given other exact files")
    rows = np.concatenate([exact, near])
    reason = np.concatenate(
        [np.full(len(exact), clean.DUPLICATE, np.uint8), np.full(len(near), clean.NEAR_DUPLICATE, np.uint8)]
    )
    order = np.argsort(rows, kind="stable")
    stats = {"duplicate": len(exact), "near_duplicate": len(near)}
    save_npz(out, stats, rows=rows[order], reason=reason[order])
    return stats


def read_resolved(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The dropped rows and their reasons, as :func:`resolve_task` wrote them."""
    with np.load(path) as z:
        return np.asarray(z["rows"], dtype=np.int64), np.asarray(z["reason"], dtype=np.uint8)


def batch_drops(rows: np.ndarray, reason: np.ndarray, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The dropped rows (local) and reasons of the batch of ``n`` pairs whose first global row is ``start``."""
    a, b = np.searchsorted(rows, [start, start + n])
    return rows[a:b] - start, reason[a:b]


def final_codes(prepared_codes: np.ndarray, dropped_rows_in_batch: np.ndarray, reasons: np.ndarray) -> np.ndarray:
    """A batch's final codes: its length codes with the dedup reasons of its dropped (local) rows."""
    codes = np.array(prepared_codes, dtype=np.uint8)
    rows = np.asarray(dropped_rows_in_batch, dtype=np.int64)
    if np.any(codes[rows] != clean.KEPT):
        raise ValueError("a deduplicated row was already dropped by the length filter")
    codes[rows] = np.asarray(reasons, dtype=np.uint8)
    return codes
