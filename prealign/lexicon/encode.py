"""Dictionary encoding of a segmented parallel corpus into flat integer arrays.

Every word gets an integer id (first-occurrence order, so ids are deterministic); :func:`candidate_grid`
numbers the slots of every sentence pair's source-by-target grid of candidate links. Encoding is hash-based
(pyarrow), never a sort over strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Vocab:
    """Word strings by id."""

    words: pa.Array

    def __len__(self) -> int:
        return len(self.words)

    def lookup(self, ids: np.ndarray) -> list[str]:
        return self.words.take(pa.array(ids)).to_pylist()


@dataclass
class EncodedCorpus:
    """Flat word ids with per-sentence offsets for both sides, and the vocabularies."""

    src_ids: np.ndarray  # int32, all source words of all sentences
    src_offsets: np.ndarray  # int64, n + 1
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    src_vocab: Vocab
    tgt_vocab: Vocab

    @property
    def n_sentences(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)


Sentences = Sequence[Sequence[str]] | pa.Array  # lists of words, or an Arrow list<string> array


def word_lists(sentences: list[list[str]]) -> pa.Array:
    """Words of each sentence as an Arrow ``list<large_string>`` array."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pa.array([w for s in sentences for w in s], type=pa.large_string())
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat)


def encode_side(sentences: Sentences) -> tuple[np.ndarray, np.ndarray, Vocab]:
    """One side's word ids (first-occurrence order), sentence offsets and vocabulary."""
    if not isinstance(sentences, pa.Array):
        sentences = word_lists(sentences)
    lengths = pc.fill_null(pc.list_value_length(sentences), 0).to_numpy().astype(np.int64)
    flat = sentences.flatten()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    encoded = pc.dictionary_encode(flat)
    ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return ids, offsets, Vocab(encoded.dictionary)


def candidate_grid(
    src_offsets: np.ndarray, tgt_offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every sentence's source-major I x J grid: (cand_offsets, sentence, i, j) of each slot."""
    src_len = np.diff(src_offsets)
    tgt_len = np.diff(tgt_offsets)
    sizes = src_len * tgt_len
    cand_offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=cand_offsets[1:])
    sent = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    k = np.arange(cand_offsets[-1], dtype=np.int64) - cand_offsets[sent]
    width = tgt_len[sent]
    return cand_offsets, sent, k // width, k % width


def encode_corpus(src: Sentences, tgt: Sentences) -> EncodedCorpus:
    """Encode segmented sentence pairs (lists of words, or Arrow list arrays) into an :class:`EncodedCorpus`."""
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source sentences but {len(tgt)} target sentences")
    src_ids, src_off, src_vocab = encode_side(src)
    tgt_ids, tgt_off, tgt_vocab = encode_side(tgt)
    return EncodedCorpus(src_ids, src_off, tgt_ids, tgt_off, src_vocab, tgt_vocab)
