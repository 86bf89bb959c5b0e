"""The stateful end of the read stage of ``align`` and ``extract-lexicon``, kept light to import (no torch).

:class:`CorpusBuilder` runs as a stateful worker on the driver's machine (see
:mod:`prealign.pipelines.corpus_store`): it takes the prepared batches in input order, removes duplicates,
encodes the kept pairs (merging the batch's own encoding, made by the task that prepared it, into the
vocabularies and the pair table) and writes each batch to ``batch-NNNNN.npz`` in the work directory, with what a
resumed run needs to rebuild its state (the kept pairs' keys and signatures, the words and pairs the batch
added to the vocabularies).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.lexicon import clean
from prealign.lexicon.incremental import StreamDeduplicator, StreamEncoder, encode_local
from prealign.lexicon.prepare import Prepared
from prealign.textio import atomic_write

CORPUS_ARRAYS = ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets", "cand_pair")


def batch_file(directory: Path, index: int) -> Path:
    return Path(directory) / f"batch-{index:05d}.npz"


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def words_arrays(prefix: str, words: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as two arrays (UTF-8 bytes and int64 offsets), to keep npz files free of pickles."""
    arr = pa.array(list(words), pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1)
    data = arr.buffers()[2]
    return {f"{prefix}_offsets": offsets, f"{prefix}_data": np.frombuffer(data, np.uint8) if data else np.zeros(0)}


def read_words(z: Any, prefix: str) -> pa.Array:
    offsets = np.asarray(z[f"{prefix}_offsets"], dtype=np.int64)
    data = np.asarray(z[f"{prefix}_data"], dtype=np.uint8)
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


class CorpusBuilder:
    """Dedup, encoding and batch files of the read stage, one batch at a time in input order (see the module
    doc). ``cfg`` None: no cleaning (``align``), every pair is kept."""

    def __init__(self, directory: str, cfg: clean.CleanConfig | None) -> None:
        self.directory = Path(directory)
        self.dedup = StreamDeduplicator(cfg) if cfg is not None else None
        self.encoder = StreamEncoder()
        self.kept: list[int] = []

    def add(self, index: int, prep: Prepared) -> dict[str, Any]:
        """Decide, encode and write batch ``index``; returns its counts by reason."""
        if index != len(self.kept):
            raise RuntimeError(f"batch {index} arrived, batch {len(self.kept)} expected")
        codes = prep.codes
        if self.dedup is not None:
            codes = self.dedup.add(prep.codes, prep.keys, prep.signatures, prep.near)
        rows = np.flatnonzero(codes == clean.KEPT)
        local = prep.local if prep.local is not None else encode_local(prep.src, prep.tgt)
        enc = self.encoder.add_local(local, rows)
        arrays = {name: getattr(enc, name) for name in CORPUS_ARRAYS}
        arrays["new_pairs"] = enc.new_pairs
        arrays.update(words_arrays("new_src", enc.new_src), **words_arrays("new_tgt", enc.new_tgt))
        if prep.keys is not None and self.dedup is not None:
            arrays["keys"] = np.asarray(prep.keys)[rows]
        if prep.signatures is not None and self.dedup is not None:
            arrays["signatures"] = np.asarray(prep.signatures)[rows]
        save_arrays(batch_file(self.directory, index), **arrays)
        self.kept.append(len(rows))
        reasons = np.bincount(codes.astype(np.int64), minlength=len(clean.REASONS))
        counts = {"reasons": reasons.tolist(), "kept": len(rows)}
        if prep.over_max_words:
            counts["over_max_words"] = prep.over_max_words
        return counts

    def restore(self, batches: int) -> None:
        """Take back the state after the first ``batches`` batches, from their files."""
        for index in range(batches):
            with np.load(batch_file(self.directory, index)) as z:
                if self.dedup is not None:
                    self.dedup.restore(z.get("keys"), z.get("signatures"))
                new_src, new_tgt = read_words(z, "new_src").to_pylist(), read_words(z, "new_tgt").to_pylist()
                self.encoder.restore(new_src, new_tgt, z["new_pairs"])
                self.kept.append(len(z["src_offsets"]) - 1)

    def finish(self) -> dict[str, Any]:
        """Write the vocabularies and the pair table; returns what :class:`StoredCorpus` needs."""
        src, tgt = self.encoder.vocabularies()
        pair_src, pair_tgt = self.encoder.pair_table()
        arrays = {**words_arrays("src", src.words.to_pylist()), **words_arrays("tgt", tgt.words.to_pylist())}
        save_arrays(self.directory / "vocabulary.npz", pair_src=pair_src, pair_tgt=pair_tgt, **arrays)
        return {"batches": self.kept, "src_vocab": len(src), "tgt_vocab": len(tgt), "pairs": len(pair_src)}
