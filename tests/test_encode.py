"""Dictionary encoding of a segmented parallel corpus and its candidate-link grid (prealign.lexicon.encode)."""

from __future__ import annotations

import numpy as np
import pytest

from prealign.lexicon.encode import candidate_grid, encode_corpus

SRC = [["the", "cat", "sleeps"], ["a", "cat"], ["the", "dog", "the"]]
TGT = [["le", "chat", "dort"], ["un", "chat"], ["le", "chien"]]


def grid_pairs(corpus, s: int) -> list[tuple[str, str]]:
    """(source word, target word) of each slot of sentence s's grid, read back through the pair ids."""
    slots = corpus.cand_pair[corpus.cand_offsets[s] : corpus.cand_offsets[s + 1]]
    src = corpus.src_vocab.lookup(corpus.pair_src[slots])
    tgt = corpus.tgt_vocab.lookup(corpus.pair_tgt[slots])
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
    assert c.cand_offsets.tolist() == [0, 9, 13, 19]
    assert len(c.cand_pair) == 19
    for s in range(3):
        expected = [(a, b) for a in SRC[s] for b in TGT[s]]  # slot i * J + j
        assert grid_pairs(c, s) == expected


def test_pair_ids_distinct_and_first_occurrence() -> None:
    c = encode_corpus(SRC, TGT)
    keys = list(zip(c.pair_src.tolist(), c.pair_tgt.tolist(), strict=True))
    assert len(set(keys)) == len(keys) == c.n_pairs
    # every pair id is used, and ids first appear in increasing order along the flat grid
    _, first = np.unique(c.cand_pair, return_index=True)
    assert np.all(np.diff(first) > 0)
    assert c.cand_pair.max() == c.n_pairs - 1
    # the same (source word, target word) in two sentences gets the same pair id: ("the", "le") in 0 and 2
    assert c.cand_pair[0] == c.cand_pair[13] == 0
    # "the" occurs twice in sentence 2, so its grid repeats the same ids on rows 0 and 2
    g2 = c.cand_pair[13:19].reshape(3, 2)
    assert (g2[0] == g2[2]).all()
    # distinct words (cat, chat) vs (the, chat) get distinct ids
    assert c.cand_pair[1] != c.cand_pair[4]


def test_empty_sentences_have_empty_grids() -> None:
    src = [["a", "b"], [], ["c"], ["a"]]
    tgt = [["x"], ["y", "z"], [], ["x", "y"]]
    c = encode_corpus(src, tgt)
    assert c.src_lengths.tolist() == [2, 0, 1, 1]
    assert c.tgt_lengths.tolist() == [1, 2, 0, 2]
    assert c.cand_offsets.tolist() == [0, 2, 2, 2, 4]
    assert grid_pairs(c, 0) == [("a", "x"), ("b", "x")]
    assert grid_pairs(c, 1) == [] and grid_pairs(c, 2) == []
    assert grid_pairs(c, 3) == [("a", "x"), ("a", "y")]
    # y and z still get ids although their sentence has no grid
    assert c.tgt_vocab.words.to_pylist() == ["x", "y", "z"]


def test_all_empty_and_no_sentences() -> None:
    c = encode_corpus([[], []], [[], []])
    assert c.n_sentences == 2 and c.n_pairs == 0 and c.cand_offsets.tolist() == [0, 0, 0]
    c = encode_corpus([], [])
    assert c.n_sentences == 0 and c.n_pairs == 0 and len(c.cand_pair) == 0


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="2 source sentences but 1 target"):
        encode_corpus([["a"], ["b"]], [["x"]])


def test_candidate_grid_function() -> None:
    cand_off, sent, i, j = candidate_grid(np.array([0, 2, 2, 5]), np.array([0, 3, 4, 5]))
    assert cand_off.tolist() == [0, 6, 6, 9]
    assert sent.tolist() == [0] * 6 + [2] * 3
    assert i.tolist() == [0, 0, 0, 1, 1, 1, 0, 1, 2]
    assert j.tolist() == [0, 1, 2, 0, 1, 2, 0, 0, 0]
