"""Dictionary encoding of a segmented parallel corpus into flat integer arrays.

Every word gets an integer id (first-occurrence order, so ids are deterministic), every sentence pair's
source-by-target grid of candidate links gets a slot in one flat array, and every distinct (source word,
target word) pair seen in some grid gets a pair id. Encoding is hash-based (pyarrow), never a sort over
strings or pair keys.
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
    """Flat word ids with per-sentence offsets for both sides, and the candidate-link grid."""

    src_ids: np.ndarray  # int32, all source words of all sentences
    src_offsets: np.ndarray  # int64, n + 1
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    src_vocab: Vocab
    tgt_vocab: Vocab
    cand_offsets: np.ndarray  # int64, n + 1: sentence s's grid is cand_offsets[s] .. +I*J, source-major
    cand_pair: np.ndarray  # int32 pair id of each candidate link
    pair_src: np.ndarray  # int32 source word id of each pair id
    pair_tgt: np.ndarray  # int32 target word id of each pair id

    @property
    def n_sentences(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    @property
    def n_pairs(self) -> int:
        return len(self.pair_src)


Sentences = Sequence[Sequence[str]] | pa.Array  # lists of words, or an Arrow list<string> array


def word_lists(sentences: list[list[str]]) -> pa.Array:
    """Words of each sentence as an Arrow ``list<large_string>`` array."""
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pa.array([w for s in sentences for w in s], type=pa.large_string())
    return pa.LargeListArray.from_arrays(pa.array(offsets), flat)


def _encode_side(sentences: Sentences) -> tuple[np.ndarray, np.ndarray, Vocab]:
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
    src_ids, src_off, src_vocab = _encode_side(src)
    tgt_ids, tgt_off, tgt_vocab = _encode_side(tgt)
    cand_off, sent, i, j = candidate_grid(src_off, tgt_off)
    s_word = src_ids[src_off[sent] + i].astype(np.int64)
    t_word = tgt_ids[tgt_off[sent] + j].astype(np.int64)
    del sent, i, j
    keys = pc.dictionary_encode(pa.array(s_word * max(len(tgt_vocab), 1) + t_word))
    del s_word, t_word
    cand_pair = keys.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    uniq = keys.dictionary.to_numpy()
    width = max(len(tgt_vocab), 1)
    return EncodedCorpus(
        src_ids=src_ids,
        src_offsets=src_off,
        tgt_ids=tgt_ids,
        tgt_offsets=tgt_off,
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        cand_offsets=cand_off,
        cand_pair=cand_pair,
        pair_src=(uniq // width).astype(np.int32),
        pair_tgt=(uniq % width).astype(np.int32),
    )
