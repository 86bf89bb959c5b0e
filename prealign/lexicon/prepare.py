"""One batch of parallel text made ready for deduplication and alignment (runs in parallel workers).

Kept free of torch and polars so that workers start this stage quickly. Words travel as Arrow list arrays,
which cross process boundaries without per-string pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from prealign.lexicon import clean
from prealign.lexicon.encode import word_lists
from prealign.lexicon.incremental import LocalEncoding, NearPrep, encode_local, lsh_bands, min_matches, near_prep
from prealign.text import Segmenter, SegmenterConfig


@dataclass
class Prepared:
    """Segmented pairs of one batch (or of the whole corpus, once concatenated), with what dedup needs."""

    src: pa.Array  # list<large_string>: the words of each source sentence
    tgt: pa.Array
    codes: np.ndarray  # uint8 length-filter code per pair (clean.REASONS)
    keys: np.ndarray | None  # exact-dedup key per pair
    signatures: np.ndarray | None  # MinHash signature per pair
    local: LocalEncoding | None = field(default=None, repr=False)  # the batch encoded on its own
    near: NearPrep | None = field(default=None, repr=False)  # band tokens and matches within the batch


def prepare_batch(
    batch: pa.RecordBatch, src_seg: SegmenterConfig, tgt_seg: SegmenterConfig, cfg: clean.CleanConfig | None
) -> Prepared:
    """Segment one batch and encode it on its own; with ``cfg``, also length codes, exact keys, MinHash
    signatures and what the near-duplicate search can know of the batch alone."""
    src = Segmenter(src_seg).segment_batch(batch.column("src").to_pylist())
    tgt = Segmenter(tgt_seg).segment_batch(batch.column("tgt").to_pylist())
    src_words, tgt_words = word_lists(src), word_lists(tgt)
    local = encode_local(src_words, tgt_words)
    if cfg is None:
        return Prepared(src_words, tgt_words, np.zeros(len(src), np.uint8), None, None, local)
    codes = clean.length_reasons(clean.side_lengths(src), clean.side_lengths(tgt), cfg)
    keys = clean.pair_keys(src, tgt) if cfg.dedup else None
    sig = clean.minhash_signatures(src, tgt, cfg) if cfg.near_dedup else None
    near = None
    if sig is not None:
        rows = np.flatnonzero(codes == clean.KEPT)
        if keys is not None:  # a repeated key is a duplicate whatever came before: only its first can match
            rows = rows[np.sort(np.unique(np.asarray(keys)[rows], return_index=True)[1])]
        near = near_prep(sig, lsh_bands(cfg), min_matches(cfg), rows)
    return Prepared(src_words, tgt_words, codes, keys, sig, local, near)


def concatenate(parts: list[Prepared]) -> Prepared:
    """The batches in order, as one."""
    if not parts:
        empty = pa.array([], type=pa.large_list(pa.large_string()))
        return Prepared(empty, empty, np.zeros(0, np.uint8), None, None)
    keys = np.concatenate([p.keys for p in parts]) if parts[0].keys is not None else None
    sig = np.concatenate([p.signatures for p in parts]) if parts[0].signatures is not None else None
    return Prepared(
        pa.concat_arrays([p.src for p in parts]),
        pa.concat_arrays([p.tgt for p in parts]),
        np.concatenate([p.codes for p in parts]),
        keys,
        sig,
    )
