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
    over_max_words: int = 0  # pairs kept without their words (``max_words`` with no cleaning): left unaligned


def _blank(sentences: list[list[str]], rows: np.ndarray) -> list[list[str]]:
    """``sentences`` with those of ``rows`` emptied (nothing per pair is built for them afterwards)."""
    if len(rows) == 0:
        return sentences
    out = list(sentences)
    for r in rows.tolist():
        out[r] = []
    return out


def prepare_batch(
    batch: pa.RecordBatch,
    src_seg: SegmenterConfig,
    tgt_seg: SegmenterConfig,
    cfg: clean.CleanConfig | None,
    max_words: int | None = None,
) -> Prepared:
    """Segment one batch and encode it on its own; with ``cfg``, also length codes, exact keys, MinHash
    signatures and what the near-duplicate search can know of the batch alone. Pairs the length filter
    drops (with ``cfg``), or with a side over ``max_words`` (without), are emptied right after segmentation,
    so that a very long line costs nothing more (a pair's candidate links grow as the product of its
    lengths); the latter stay in the batch as empty pairs (an empty links line), counted in ``over_max_words``."""
    src = Segmenter(src_seg).segment_batch(batch.column("src").to_pylist())
    tgt = Segmenter(tgt_seg).segment_batch(batch.column("tgt").to_pylist())
    if cfg is None:
        over = np.zeros(len(src), dtype=bool)
        if max_words is not None:
            over = (_lengths(src) > max_words) | (_lengths(tgt) > max_words)
            src, tgt = _blank(src, np.flatnonzero(over)), _blank(tgt, np.flatnonzero(over))
        src_words, tgt_words = word_lists(src), word_lists(tgt)
        local = encode_local(src_words, tgt_words)
        return Prepared(src_words, tgt_words, np.zeros(len(src), np.uint8), None, None, local, None, int(over.sum()))
    codes = clean.length_reasons(clean.side_lengths(src), clean.side_lengths(tgt), cfg)
    dropped = np.flatnonzero(codes != clean.KEPT)  # never kept: their keys and signatures are not used either
    src, tgt = _blank(src, dropped), _blank(tgt, dropped)
    src_words, tgt_words = word_lists(src), word_lists(tgt)
    local = encode_local(src_words, tgt_words)
    keys = clean.pair_keys(src, tgt) if cfg.dedup else None
    sig = clean.minhash_signatures(src, tgt, cfg) if cfg.near_dedup else None
    near = None
    if sig is not None:
        rows = np.flatnonzero(codes == clean.KEPT)
        if keys is not None:  # a repeated key is a duplicate whatever came before: only its first can match
            rows = rows[np.sort(np.unique(np.asarray(keys)[rows], return_index=True)[1])]
        near = near_prep(sig, lsh_bands(cfg), min_matches(cfg), rows)
    return Prepared(src_words, tgt_words, codes, keys, sig, local, near)


def _lengths(sentences: list[list[str]]) -> np.ndarray:
    return np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))


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
