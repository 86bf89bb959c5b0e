"""The encode stage of the corpus jobs: word ids, the vocabularies, and the EM's chunks, as files.

Three steps, after prepare and dedup (:mod:`prealign.pipelines.dedup_stage`):

1. ``encode/local-NNNNN.npz``, one task per input batch: the batch's kept pairs encoded on their own (its
   distinct words in order of first occurrence, each word a local id), with the batch's count per outcome.
2. ``encode/vocab.npz``, one task: the batches' words merged in input order into the two vocabularies (ids
   by first occurrence over the whole kept corpus), and beside it ``encode/map-NNNNN.npz`` per batch, the
   global id of each local word. Memory: the vocabularies.
3. ``encode/chunk-NNNNN.npz``, one task per chunk of ``chunk_sentences`` kept pairs: the chunk's word ids
   (``sentences``) and, for the built-in aligner, its EM chunk (``chunk-NNNNN.pkl``) and its pairs sorted
   both ways (``.keys.npy``, ``.bkeys.npy`` and ``.bperm.npy``, memory-mapped by the EM's reduce tasks).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.lexicon import clean
from prealign.lexicon.em import SentenceArrays, concat_sentences
from prealign.lexicon.encode import Vocab, encode_side
from prealign.lexicon.hmm import Chunk, make_chunk
from prealign.pipelines.dedup_stage import final_codes, read_prepared
from prealign.pipelines.stages import read_stats, read_words, save_npy, save_npz, words_arrays
from prealign.textio import atomic_write


def local_file(work: Path, batch: int) -> Path:
    return Path(work) / "encode" / f"local-{batch:05d}.npz"


def map_file(work: Path, batch: int) -> Path:
    return Path(work) / "encode" / f"map-{batch:05d}.npz"


def vocab_file(work: Path) -> Path:
    return Path(work) / "encode" / "vocab.npz"


def chunk_file(work: Path, chunk: int, suffix: str = ".npz") -> Path:
    """A chunk's files: ``.npz`` (its sentences; written last), ``.pkl`` (the EM chunk), ``.keys.npy``, ..."""
    return Path(work) / "encode" / f"chunk-{chunk:05d}{suffix}"


def local_task(out: Path, prepared: Path, dropped_rows: np.ndarray, dropped_reasons: np.ndarray) -> dict[str, Any]:
    """Step 1 for one batch: its kept pairs (length filter passed, not ``dropped_rows``, batch-local) encoded."""
    batch = read_prepared(prepared)
    codes = final_codes(batch.codes, dropped_rows, dropped_reasons)
    kept = np.flatnonzero(codes == clean.KEPT)
    take = pa.array(kept)
    arrays: dict[str, np.ndarray] = {}
    for side, words in (("src", batch.src), ("tgt", batch.tgt)):
        ids, offsets, vocab = encode_side(words.take(take))
        arrays.update(
            words_arrays(f"{side}_words", vocab.words.to_pylist()), **{f"{side}_ids": ids, f"{side}_off": offsets}
        )
    reasons = np.bincount(codes.astype(np.int64), minlength=len(clean.REASONS))
    stats = {"kept": len(kept), "reasons": reasons.tolist(), "over_max_words": batch.stats.get("over_max_words", 0)}
    save_npz(out, stats, **arrays)
    return stats


class _Words:
    """A vocabulary growing in order of first occurrence."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.words: list[str] = []

    def ids(self, words: list[str]) -> np.ndarray:
        index, known = self.index, self.words
        out = np.empty(len(words), dtype=np.int32)
        for n, w in enumerate(words):
            i = index.get(w)
            if i is None:
                i = index[w] = len(known)
                known.append(w)
            out[n] = i
        return out


def vocab_task(out: Path, locals_: Sequence[Path], maps: Sequence[Path]) -> dict[str, Any]:
    """Step 2: the vocabularies over the batches in input order, and each batch's local-to-global ids."""
    sides = {"src": _Words(), "tgt": _Words()}
    for local, target in zip(locals_, maps, strict=True):
        with np.load(local) as z:
            words = {side: read_words(z, f"{side}_words").to_pylist() for side in sides}
        save_npz(target, None, **{side: sides[side].ids(words[side]) for side in sides})
    stats = {"src_vocab": len(sides["src"].words), "tgt_vocab": len(sides["tgt"].words)}
    arrays = {k: v for side in sides for k, v in words_arrays(side, sides[side].words).items()}
    save_npz(out, stats, **arrays)
    return stats


def read_vocab(path: Path) -> tuple[Vocab, Vocab]:
    with np.load(path) as z:
        return Vocab(read_words(z, "src")), Vocab(read_words(z, "tgt"))


def _rows(local: Path, mapping: Path, lo: int, hi: int) -> SentenceArrays:
    """Kept pairs [lo, hi) of one batch, with global word ids."""
    with np.load(local) as z, np.load(mapping) as m:
        sides = []
        for side in ("src", "tgt"):
            off = z[f"{side}_off"]
            sides += [m[side][z[f"{side}_ids"][off[lo] : off[hi]]].astype(np.int32), off[lo : hi + 1] - off[lo]]
    return SentenceArrays(*sides)


def chunk_task(
    work: Path, index: int, pieces: Sequence[tuple[Path, Path, int, int]], first: int, sizes: tuple[int, int], em: bool
) -> dict[str, Any]:
    """Step 3 for chunk ``index``: its sentences from ``pieces`` ((local file, map file, lo, hi) of each batch
    it spans), numbered from ``first``; with ``em``, its EM chunk over vocabularies of ``sizes`` words."""
    return write_chunk(work, index, concat_sentences([_rows(*piece) for piece in pieces], first), sizes, em)


def write_chunk(work: Path, index: int, sentences: SentenceArrays, sizes: tuple[int, int], em: bool) -> dict[str, Any]:
    """Chunk ``index``'s files (see the module doc) from its sentences; returns its stats."""
    stats: dict[str, Any] = {"sentences": sentences.n_sentences, "first": sentences.first}
    if em:
        chunk = make_chunk(sentences, *sizes)
        backward = (chunk.pairs << 32) | (chunk.pairs >> 32)  # target-major keys of the same pairs
        bperm = np.argsort(backward, kind="stable")
        save_npy(chunk_file(work, index, ".keys.npy"), chunk.pairs)
        save_npy(chunk_file(work, index, ".bkeys.npy"), backward[bperm])
        save_npy(chunk_file(work, index, ".bperm.npy"), bperm)
        atomic_write(chunk_file(work, index, ".pkl"), lambda fh: pickle.dump(chunk, fh, protocol=5))
        stats["pairs"] = len(chunk.pairs)
        stats["candidates"] = chunk.n_candidates  # what an E-step's work grows with
    arrays = {
        "src_ids": sentences.src_ids,
        "src_off": sentences.src_offsets,
        "tgt_ids": sentences.tgt_ids,
        "tgt_off": sentences.tgt_offsets,
    }
    save_npz(chunk_file(work, index), stats, **arrays)
    return stats


def read_sentences(path: Path) -> SentenceArrays:
    first = int(read_stats(path)["first"])
    with np.load(path) as z:
        return SentenceArrays(z["src_ids"], z["src_off"], z["tgt_ids"], z["tgt_off"], first)


def read_chunk(work: Path, chunk: int) -> Chunk:
    with open(chunk_file(work, chunk, ".pkl"), "rb") as fh:
        return pickle.load(fh)


def chunk_pieces(kept: Sequence[int], chunk_sentences: int) -> list[tuple[int, list[tuple[int, int, int]]]]:
    """For each chunk: its first kept pair, and (batch, lo, hi) of each batch's share of it (batch-local)."""
    starts = np.concatenate([[0], np.cumsum(np.asarray(kept, dtype=np.int64))])
    total = int(starts[-1])
    out = []
    for first in range(0, total, chunk_sentences):
        stop = min(first + chunk_sentences, total)
        pieces = []
        b = int(np.searchsorted(starts, first, side="right")) - 1
        while b < len(kept) and starts[b] < stop:
            lo, hi = max(first, int(starts[b])), min(stop, int(starts[b + 1]))
            if hi > lo:
                pieces.append((b, lo - int(starts[b]), hi - int(starts[b])))
            b += 1
        out.append((first, pieces))
    return out
