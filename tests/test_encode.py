"""Dictionary encoding of a segmented parallel corpus and its candidate-link grid (prealign.lexicon.encode)."""

from __future__ import annotations

import numpy as np
import pytest

from prealign.lexicon.em import SentenceArrays
from prealign.lexicon.encode import candidate_grid, encode_corpus
from prealign.lexicon.hmm import make_chunk

SRC = [["the", "cat", "sleeps"], ["a", "cat"], ["the", "dog", "the"]]
TGT = [["le", "chat", "dort"], ["un", "chat"], ["le", "chien"]]


def grid_pairs(corpus, s: int) -> list[tuple[str, str]]:
    """(source word, target word) of each slot of sentence s's grid, read back through the word ids."""
    cand_offsets, sent, i, j = candidate_grid(corpus.src_offsets, corpus.tgt_offsets)
    slots = np.arange(cand_offsets[s], cand_offsets[s + 1])
    assert (sent[slots] == s).all()
    src = corpus.src_vocab.lookup(corpus.src_ids[corpus.src_offsets[s] + i[slots]])
    tgt = corpus.tgt_vocab.lookup(corpus.tgt_ids[corpus.tgt_offsets[s] + j[slots]])
    return list(zip(src, tgt, strict=True))


def test_ids_in_first_occurrence_order() -> None:
    c = encode_corpus(SRC, TGT)
    assert c.src_vocab.words.to_pylist() == ["the", "cat", "sleeps", "a", "dog"]
    assert c.tgt_vocab.words.to_pylist() == ["le", "chat", "dort", "un", "chien"]
    assert c.src_ids.tolist() == [0, 1, 2, 3, 1, 0, 4, 0]
    assert c.tgt_ids.tolist() == [0, 1, 2, 3, 1, 0, 4]
    assert c.src_ids.dtype == np.int32 and c.tgt_ids.dtype == np.int32
    assert len(c.src_vocab) == 5 and len(c.tgt_vocab) == 5
    assert c.src_vocab.lookup(np.array([4, 0])) == ["dog", "the"]


def test_offsets_and_lengths() -> None:
    c = encode_corpus(SRC, TGT)
    assert c.n_sentences == 3
    assert c.src_offsets.tolist() == [0, 3, 5, 8]
    assert c.tgt_offsets.tolist() == [0, 3, 5, 7]
    assert c.src_lengths.tolist() == [3, 2, 3]
    assert c.tgt_lengths.tolist() == [3, 2, 2]
    for s in range(3):
        words = c.src_vocab.lookup(c.src_ids[c.src_offsets[s] : c.src_offsets[s + 1]])
        assert words == SRC[s]
        words = c.tgt_vocab.lookup(c.tgt_ids[c.tgt_offsets[s] : c.tgt_offsets[s + 1]])
        assert words == TGT[s]


def test_candidate_grid_is_source_major() -> None:
    c = encode_corpus(SRC, TGT)
    cand_offsets, sent, _, _ = candidate_grid(c.src_offsets, c.tgt_offsets)
    assert cand_offsets.tolist() == [0, 9, 13, 19]
    assert len(sent) == 19
    for s in range(3):
        expected = [(a, b) for a in SRC[s] for b in TGT[s]]  # slot i * J + j
        assert grid_pairs(c, s) == expected


def test_pairs_of_the_grid() -> None:
    """The EM's pairs over the grid (prealign.lexicon.hmm.make_chunk): one per distinct (source word, target
    word), sorted by source then target id, and every slot of the grid pointing at its own."""
    c = encode_corpus(SRC, TGT)
    sentences = SentenceArrays(c.src_ids, c.src_offsets, c.tgt_ids, c.tgt_offsets)
    chunk = make_chunk(sentences, len(c.src_vocab), len(c.tgt_vocab))
    pair = chunk.cand_local[:-1]
    assert len(pair) == 19 and pair.max() == len(chunk.pairs) - 1
    words = [(c.src_vocab.lookup([k >> 32])[0], c.tgt_vocab.lookup([k & 0xFFFFFFFF])[0]) for k in chunk.pairs]
    src_id = {w: k for k, w in enumerate(c.src_vocab.words.to_pylist())}
    tgt_id = {w: k for k, w in enumerate(c.tgt_vocab.words.to_pylist())}
    assert words == sorted(set(words), key=lambda w: (src_id[w[0]], tgt_id[w[1]]))
    assert [words[p] for p in pair] == [wp for s in range(3) for wp in grid_pairs(c, s)]
    # the same (source word, target word) in two sentences is the same pair: ("the", "le") in 0 and 2
    assert pair[0] == pair[13] == 0
    # "the" occurs twice in sentence 2, so its grid repeats the same pairs on rows 0 and 2
    g2 = pair[13:19].reshape(3, 2)
    assert (g2[0] == g2[2]).all()
    # distinct words (cat, chat) vs (the, chat) are distinct pairs
    assert pair[1] != pair[4]


def test_empty_sentences_have_empty_grids() -> None:
    src = [["a", "b"], [], ["c"], ["a"]]
    tgt = [["x"], ["y", "z"], [], ["x", "y"]]
    c = encode_corpus(src, tgt)
    assert c.src_lengths.tolist() == [2, 0, 1, 1]
    assert c.tgt_lengths.tolist() == [1, 2, 0, 2]
    assert candidate_grid(c.src_offsets, c.tgt_offsets)[0].tolist() == [0, 2, 2, 2, 4]
    assert grid_pairs(c, 0) == [("a", "x"), ("b", "x")]
    assert grid_pairs(c, 1) == [] and grid_pairs(c, 2) == []
    assert grid_pairs(c, 3) == [("a", "x"), ("a", "y")]
    # y and z still get ids although their sentence has no grid
    assert c.tgt_vocab.words.to_pylist() == ["x", "y", "z"]


def test_all_empty_and_no_sentences() -> None:
    c = encode_corpus([[], []], [[], []])
    cand_offsets, sent, _, _ = candidate_grid(c.src_offsets, c.tgt_offsets)
    assert c.n_sentences == 2 and cand_offsets.tolist() == [0, 0, 0] and len(sent) == 0
    assert len(c.src_vocab) == len(c.tgt_vocab) == 0
    c = encode_corpus([], [])
    cand_offsets, sent, _, _ = candidate_grid(c.src_offsets, c.tgt_offsets)
    assert c.n_sentences == 0 and cand_offsets.tolist() == [0] and len(sent) == 0


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 source sentences but 1 target"):
        encode_corpus([["a"], ["b"]], [["x"]])


def test_candidate_grid_function() -> None:
    cand_off, sent, i, j = candidate_grid(np.array([0, 2, 2, 5]), np.array([0, 3, 4, 5]))
    assert cand_off.tolist() == [0, 6, 6, 9]
    assert sent.tolist() == [0] * 6 + [2] * 3
    assert i.tolist() == [0, 0, 0, 1, 1, 1, 0, 1, 2]
    assert j.tolist() == [0, 1, 2, 0, 1, 2, 0, 0, 0]
