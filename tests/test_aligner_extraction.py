"""Link extraction of the embedding aligners on hand-made matrices, and the subword-to-word bookkeeping
(prealign.lexicon.aligners.extraction, .neural, .base): no model needed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from prealign.lexicon.aligners.base import keys_from_sentence_links, sentence_strings
from prealign.lexicon.aligners.extraction import argmax_links, extract, itermax_links, match_links, softmax_links
from prealign.lexicon.aligners.neural import _take_ranges, side_pieces
from prealign.lexicon.symmetrize import split_keys

# 3 source x 4 target subwords. Worked by hand:
#   argmax: row bests (0,0) (1,0) (2,2); column bests (0,0) (0,1) (2,2) (2,3) -> mutual (0,0), (2,2).
#   itermax, round 2: pairs of two aligned words are out; rows 0, 2 and columns 0, 2 are aligned, so pairs with one
#     aligned word are weighted 0.9: row bests (0,1) 0.72, (1,0) 0.765, (2,3) 0.585; column bests (1,0) (0,1)
#     (1,2) (2,3) -> adds (0,1), (1,0), (2,3).
#   match: the best assignment is (0,1) + (1,0) + (2,2) = 2.35 (against 1.85 with (0,0)).
SIM = np.array(
    [
        [0.90, 0.80, 0.10, 0.00],
        [0.85, 0.20, 0.30, 0.10],
        [0.10, 0.20, 0.70, 0.65],
    ],
    dtype=np.float32,
)
ARGMAX = {(0, 0), (2, 2)}
ITERMAX = ARGMAX | {(0, 1), (1, 0), (2, 3)}
MATCH = {(0, 1), (1, 0), (2, 2)}
# softmax: row 0 puts ~1 on column 0; row 1 splits 0.73 / 0.27 between columns 1 and 2; row 2 is uniform (1/3),
# but each column's softmax gives row 2 at most 1.2e-4 < 1e-3. With threshold 0.5, (1, 2) (0.27) drops out.
SCORES = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 9.0], [0.0, 0.0, 0.0]], dtype=np.float32)


def pairs(links: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in links.nonzero().tolist()}


def test_methods_on_a_hand_made_similarity_matrix() -> None:
    assert pairs(argmax_links(SIM)) == ARGMAX
    assert pairs(itermax_links(SIM)) == ITERMAX
    assert pairs(itermax_links(SIM, rounds=1)) == ARGMAX
    assert pairs(match_links(SIM)) == MATCH
    assert pairs(softmax_links(SCORES)) == {(0, 0), (1, 1), (1, 2)}
    assert pairs(softmax_links(SCORES, threshold=0.5)) == {(0, 0), (1, 1)}


def test_itermax_never_links_two_words_that_are_both_aligned() -> None:
    # every word is aligned after round 1 (diagonal): nothing may be added however similar the rest is
    sim = np.array([[1.0, 0.99], [0.99, 1.0]], dtype=np.float32)
    assert pairs(itermax_links(sim, rounds=5)) == {(0, 0), (1, 1)}


@pytest.mark.parametrize("method", ["argmax", "itermax", "match", "softmax"])
def test_padding_never_changes_or_gets_links(method: str) -> None:
    """A batch of matrices padded to one shape gives each matrix's own links, none on the padding."""
    small = SIM[:2, :3]
    batch = torch.full((2, 4, 5), 5.0)  # padding values larger than any real one: must be ignored
    valid = torch.zeros((2, 4, 5), dtype=torch.bool)
    batch[0, :3, :4], valid[0, :3, :4] = torch.from_numpy(SIM), True
    batch[1, :2, :3], valid[1, :2, :3] = torch.from_numpy(small), True
    links = extract(method, batch, valid)
    assert not bool((links & ~valid).any())
    for b, matrix in enumerate((SIM, small)):
        alone = extract(method, torch.from_numpy(matrix), torch.ones(matrix.shape, dtype=torch.bool))
        m, n = matrix.shape
        assert pairs(links[b, :m, :n]) == pairs(alone)


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown extraction method"):
        extract("maxmatch", torch.from_numpy(SIM), torch.ones(SIM.shape, dtype=torch.bool))  # type: ignore[arg-type]


def test_side_pieces_maps_every_subword_to_its_word() -> None:
    # vocabulary: word 0 -> pieces [5], word 1 -> [6, 7, 8], word 2 -> [] (the tokenizer dropped it), word 3 -> [9, 10]
    piece_flat = np.array([5, 6, 7, 8, 9, 10], dtype=np.int32)
    piece_off = np.array([0, 1, 4, 4, 6], dtype=np.int64)
    # sentences: [1, 0, 3], [], [2, 1], [3]
    word_ids = np.array([1, 0, 3, 2, 1, 3], dtype=np.int32)
    sent_off = np.array([0, 3, 3, 5, 6], dtype=np.int64)
    pieces, offsets, words = side_pieces(word_ids, sent_off, piece_flat, piece_off)
    assert offsets.tolist() == [0, 6, 6, 9, 11]
    assert pieces.tolist() == [6, 7, 8, 5, 9, 10, 6, 7, 8, 9, 10]
    # word positions inside each sentence; the empty word 2 (position 0 of sentence 2) has no piece
    assert words.tolist() == [0, 0, 0, 1, 2, 2, 1, 1, 1, 0, 0]
    got = _take_ranges((pieces, offsets, words), np.array([3, 0]))
    assert got[0].tolist() == [9, 10, 6, 7, 8, 5, 9, 10]
    assert got[1].tolist() == [0, 2, 8]
    assert got[2].tolist() == [0, 0, 0, 0, 0, 1, 2, 2]


def test_sentence_strings_keep_one_token_per_word() -> None:
    words = pa.array(["a", "b\u00a0c", "d\x1ce", "x\ty", "é"], type=pa.large_string())
    out = sentence_strings(words, np.array([0, 1, 2, 3, 4, 0]), np.array([0, 2, 2, 6]))
    assert out == ["a b_c", "", "d_e x_y é a"]
    assert [len(s.split()) for s in out] == [2, 0, 4]


def test_keys_from_sentence_links() -> None:
    keys = keys_from_sentence_links([np.array([[1, 0], [0, 2]]), np.zeros((0, 2)), np.array([[3, 4]])], 10)
    sent, i, j = split_keys(keys)
    assert list(zip(sent.tolist(), i.tolist(), j.tolist(), strict=True)) == [(10, 0, 2), (10, 1, 0), (12, 3, 4)]
