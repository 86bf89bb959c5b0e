"""Directional decoding of link posteriors and symmetrisation (prealign.lexicon.symmetrize)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign.lexicon.symmetrize import (
    METHODS,
    directional_links,
    grow_diag_final_and,
    link_keys,
    sentence_links,
    split_keys,
    symmetrize,
)


def keys(*links: tuple[int, int, int]) -> np.ndarray:
    """Sorted corpus keys from (sentence, i, j) triples."""
    arr = np.array(links, dtype=np.int64).reshape(-1, 3)
    return np.sort(link_keys(arr[:, 0], arr[:, 1], arr[:, 2]))


def triples(k: np.ndarray) -> set[tuple[int, int, int]]:
    s, i, j = split_keys(np.asarray(k, dtype=np.int64))
    return set(zip(s.tolist(), i.tolist(), j.tolist(), strict=True))


# Sentence 0 (4 x 4): the directions agree on 0-0 and 1-1 and disagree on the rest.
#   forward  (one source word per target word): 0-0 1-1 3-2 2-3
#   backward (one target word per source word): 0-0 1-1 2-2 3-3
# Koehn's grow-diag from the intersection {0-0, 1-1}: 2-2 is a diagonal neighbour of 1-1 in the union with
# source 2 unaligned -> added; then 3-2 and 2-3 are neighbours of 2-2 with source 3 / target 3 unaligned ->
# added; 3-3 now has both words aligned -> not added. Final-and adds nothing (no directional link is left with
# both words unaligned).
# Sentence 1 (4 x 4): forward 0-0 1-1 2-3, backward 0-0 3-0.
# Grow: 1-1 is the diagonal neighbour of 0-0 -> added. 2-3 and 3-0 touch no aligned point. Final-and: forward
# 2-3 has both words unaligned -> added; backward 3-0 has target 0 aligned -> not added (plain "final" would).
# Sentence 2: no links at all. Sentence 3: forward only, 0-1 -> final-and adds it.
FWD = keys((0, 0, 0), (0, 1, 1), (0, 3, 2), (0, 2, 3), (1, 0, 0), (1, 1, 1), (1, 2, 3), (3, 0, 1))
BWD = keys((0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3), (1, 0, 0), (1, 3, 0))


def test_intersect_and_union() -> None:
    assert triples(symmetrize(FWD, BWD, "intersect")) == {(0, 0, 0), (0, 1, 1), (1, 0, 0)}
    union = symmetrize(FWD, BWD, "union")
    assert triples(union) == {
        (0, 0, 0),
        (0, 1, 1),
        (0, 3, 2),
        (0, 2, 3),
        (0, 2, 2),
        (0, 3, 3),
        (1, 0, 0),
        (1, 1, 1),
        (1, 2, 3),
        (1, 3, 0),
        (3, 0, 1),
    }
    assert np.all(np.diff(union) > 0)


def test_forward_and_backward_pass_through() -> None:
    assert np.array_equal(symmetrize(FWD, BWD, "forward"), FWD)
    assert np.array_equal(symmetrize(FWD, BWD, "backward"), BWD)


def test_grow_diag_final_and_by_hand() -> None:
    out = symmetrize(FWD, BWD, "grow-diag-final-and")
    assert triples(out) == {
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
        (0, 3, 2),
        (0, 2, 3),
        (1, 0, 0),
        (1, 1, 1),
        (1, 2, 3),
        (3, 0, 1),
    }
    assert np.all(np.diff(out) > 0)
    assert np.array_equal(out, grow_diag_final_and(FWD, BWD))


def test_grow_diag_final_and_edge_cases() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert len(grow_diag_final_and(empty, empty)) == 0
    # one direction empty: nothing to grow from, final-and keeps the other direction's links where both words
    # are still free (here the second link shares target 0 with the first)
    only = keys((2, 0, 0), (2, 1, 0), (2, 2, 2))
    assert triples(grow_diag_final_and(only, empty)) == {(2, 0, 0), (2, 2, 2)}
    assert triples(grow_diag_final_and(empty, only)) == {(2, 0, 0), (2, 2, 2)}
    # identical directions: the result is that alignment
    assert np.array_equal(grow_diag_final_and(FWD, FWD), FWD)


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown symmetrisation 'grow'"):
        symmetrize(FWD, BWD, "grow")  # type: ignore[arg-type]
    assert set(METHODS) == {"intersect", "union", "grow-diag-final-and", "forward", "backward"}


@st.composite
def directional_pair(draw):
    """Random forward (<= 1 source word per target word) and backward (<= 1 target per source) links."""
    fwd, bwd = [], []
    for s in range(draw(st.integers(1, 3))):
        n_i, n_j = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        for j in range(n_j):
            i = draw(st.integers(-1, n_i - 1))
            if i >= 0:
                fwd.append((s, i, j))
        for i in range(n_i):
            j = draw(st.integers(-1, n_j - 1))
            if j >= 0:
                bwd.append((s, i, j))
    return keys(*fwd), keys(*bwd)


@settings(max_examples=150, deadline=None)
@given(directional_pair())
def test_grow_diag_final_and_invariants(pair) -> None:
    fwd, bwd = pair
    out = triples(grow_diag_final_and(fwd, bwd))
    inter, union = triples(np.intersect1d(fwd, bwd)), triples(np.union1d(fwd, bwd))
    assert inter <= out <= union
    # final-and leaves no directional link whose two words are both unaligned
    src_done = {(s, i) for s, i, _ in out}
    tgt_done = {(s, j) for s, _, j in out}
    for s, i, j in union - out:
        assert (s, i) in src_done or (s, j) in tgt_done


# --- directional decoding --------------------------------------------------------------------------------

# Three sentences, given as a chunk that starts at word 10 (source) / 20 (target):
#   A: 2 x 3 grid, B: 2 x 0 (no grid), C: 1 x 2 grid.
SRC_OFF = np.array([10, 12, 14, 15])
TGT_OFF = np.array([20, 23, 23, 25])
GRID_A = np.array([[0.6, 0.1, 0.2], [0.3, 0.2, 0.5]])
GRID_C = np.array([[0.4, 0.9]])
POSTERIOR = np.concatenate([GRID_A.ravel(), GRID_C.ravel()]).astype(np.float32)


def test_directional_links_forward() -> None:
    out = directional_links(POSTERIOR, SRC_OFF, TGT_OFF, forward=True, first_sentence=5)
    # A: column 0 -> source 0 (0.6 beats empty 0.1); column 1: best 0.2 < empty 0.7 -> no link;
    #    column 2 -> source 1 (0.5 beats empty 0.3). C (sentence 7): column 0: 0.4 < 0.6 -> none; column 1 -> 0.
    assert triples(out) == {(5, 0, 0), (5, 1, 2), (7, 0, 1)}
    assert np.all(np.diff(out) > 0) and out.dtype == np.int64


def test_directional_links_backward() -> None:
    out = directional_links(POSTERIOR, SRC_OFF, TGT_OFF, forward=False, first_sentence=5)
    # A: row 0 -> target 0 (0.6 > 0.1); row 1 -> target 2 (0.5 > 0.0). C: row 0 -> target 1.
    assert triples(out) == {(5, 0, 0), (5, 1, 2), (7, 0, 1)}
    # a row whose mass sits mostly on the empty word gets no link
    grid = np.array([[0.6, 0.1, 0.2], [0.15, 0.1, 0.2]], dtype=np.float32)
    out = directional_links(grid.ravel(), SRC_OFF[:2], TGT_OFF[:2], forward=False)
    assert triples(out) == {(0, 0, 0)}
    # the same grid decoded forward: columns 1 and 2 lose to the empty word (0.8, 0.6), column 0 -> 0
    out = directional_links(grid.ravel(), SRC_OFF[:2], TGT_OFF[:2], forward=True)
    assert triples(out) == {(0, 0, 0)}


def test_directional_links_must_beat_the_empty_word() -> None:
    # exactly representable values: column 0 holds 0.5 against an empty word of exactly 0.5 -> a tie, no link
    grid = np.array([[0.5, 0.25]], dtype=np.float32)
    src_off, tgt_off = np.array([0, 1]), np.array([0, 2])
    assert len(directional_links(grid.ravel(), src_off, tgt_off, forward=True)) == 0
    # backward the row's empty word is 0.25, so 0.5 wins
    assert triples(directional_links(grid.ravel(), src_off, tgt_off, forward=False)) == {(0, 0, 0)}


def test_directional_links_threshold_and_numbering() -> None:
    out = directional_links(POSTERIOR, SRC_OFF, TGT_OFF, forward=True, threshold=0.55, first_sentence=0)
    assert triples(out) == {(0, 0, 0), (2, 0, 1)}
    out = directional_links(POSTERIOR, SRC_OFF, TGT_OFF, forward=True, threshold=0.95)
    assert len(out) == 0
    assert len(directional_links(np.zeros(0, np.float32), np.array([3, 3]), np.array([4, 5]), True)) == 0


def test_directional_links_one_link_per_observed_word() -> None:
    rng = np.random.default_rng(0)
    n_src = rng.integers(0, 6, 40)
    n_tgt = rng.integers(0, 6, 40)
    src_off = np.concatenate([[0], np.cumsum(n_src)])
    tgt_off = np.concatenate([[0], np.cumsum(n_tgt)])
    total = int((n_src * n_tgt).sum())
    post = (rng.random(total) * 0.5).astype(np.float32)
    fwd = directional_links(post, src_off, tgt_off, forward=True, first_sentence=100)
    bwd = directional_links(post, src_off, tgt_off, forward=False, first_sentence=100)
    assert len(fwd) > 0 and len(bwd) > 0
    for out, key_of in ((fwd, lambda t: (t[0], t[2])), (bwd, lambda t: (t[0], t[1]))):
        ts = sorted(triples(out))
        assert len({key_of(t) for t in ts}) == len(ts)
        for s, i, j in ts:
            assert 100 <= s < 140 and i < n_src[s - 100] and j < n_tgt[s - 100]
    # each forward link is the best of its column, and beats that column's empty word
    off = np.concatenate([[0], np.cumsum(n_src * n_tgt)])
    for s, i, j in triples(fwd):
        grid = post[off[s - 100] : off[s - 99]].reshape(n_src[s - 100], n_tgt[s - 100])
        col = grid[:, j]
        assert col[i] == col.max() and col[i] > 1.0 - col.sum()


def test_sentence_links_round_trip() -> None:
    triple_list = [(0, 2, 1), (0, 0, 3), (2, 1, 1), (4, 0, 0), (4, 300, 4000)]
    k = keys(*triple_list)
    per = sentence_links(k[::-1].copy(), 6)
    assert len(per) == 6
    assert per[0].tolist() == [[0, 3], [2, 1]]
    assert per[1].shape == (0, 2) and per[3].shape == (0, 2) and per[5].shape == (0, 2)
    assert per[2].tolist() == [[1, 1]]
    assert per[4].tolist() == [[0, 0], [300, 4000]]
    assert all(p.dtype == np.int32 for p in per)
    back = {(s, int(a), int(b)) for s, p in enumerate(per) for a, b in p}
    assert back == set(triple_list)
    assert [p.shape for p in sentence_links(np.zeros(0, np.int64), 2)] == [(0, 2), (0, 2)]
