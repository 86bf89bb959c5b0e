"""Tests for prealign.lexicon.clean: length filters, exact and MinHash near-duplicate removal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign.lexicon.clean import (
    DROP_REASONS,
    DUPLICATE,
    EMPTY,
    KEPT,
    LENGTH_RATIO,
    LSH_WEIGHTS,
    NEAR_DUPLICATE,
    REASONS,
    TOO_LONG,
    TOO_SHORT,
    CleanConfig,
    clean_pairs,
    drop_reasons,
    duplicate_mask,
    length_reasons,
    minhash_signatures,
    near_duplicate_mask,
    pair_keys,
    reason_counts,
    shingle_hashes,
    side_lengths,
)

LONG_EN = (
    "the old fisherman walked slowly along the quiet beach every morning before the small boats went out to sea again"
).split()
LONG_FR = (
    "le vieux pêcheur marchait lentement le long de la plage tranquille chaque matin avant que les "
    "petits bateaux ne repartent"
).split()
OTHER_EN = "my sister bought a red bicycle at the market on saturday because hers was stolen".split()
OTHER_FR = "ma sœur a acheté un vélo rouge au marché samedi parce que le sien avait été volé".split()


def w(text: str) -> list[str]:
    return text.split()


def test_reason_codes_match_names() -> None:
    assert REASONS == ("kept", *DROP_REASONS)
    assert [REASONS[c] for c in (KEPT, EMPTY, TOO_SHORT, TOO_LONG, LENGTH_RATIO, DUPLICATE, NEAR_DUPLICATE)] == [
        "kept",
        "empty",
        "too_short",
        "too_long",
        "length_ratio",
        "duplicate",
        "near_duplicate",
    ]


def test_length_reasons_by_hand() -> None:
    cfg = CleanConfig(min_words=2, max_words=10, max_ratio=3.0, ratio_min_words=6)
    cases = [
        ((3, 4), KEPT),
        ((0, 4), EMPTY),
        ((4, 0), EMPTY),
        ((0, 50), EMPTY),  # empty beats too_long
        ((1, 4), TOO_SHORT),
        ((1, 50), TOO_SHORT),  # too_short beats too_long
        ((11, 4), TOO_LONG),
        ((11, 2), TOO_LONG),  # too_long beats length_ratio
        ((4, 10), KEPT),  # at max_words, ratio 2.5
        ((6, 2), KEPT),  # ratio exactly 3 is allowed
        ((7, 2), LENGTH_RATIO),
        ((2, 7), LENGTH_RATIO),
        ((5, 2), KEPT),  # ratio 2.5
    ]
    src = np.array([c[0][0] for c in cases])
    tgt = np.array([c[0][1] for c in cases])
    got = length_reasons(src, tgt, cfg)
    assert got.tolist() == [c[1] for c in cases]


def test_length_ratio_exempts_short_pairs() -> None:
    cfg = CleanConfig(min_words=1, max_ratio=3.0, ratio_min_words=6)
    got = length_reasons(np.array([5, 6, 1]), np.array([1, 1, 5]), cfg)
    assert got.tolist() == [KEPT, LENGTH_RATIO, KEPT]
    cfg_all = CleanConfig(min_words=1, max_ratio=3.0, ratio_min_words=0)
    assert length_reasons(np.array([5, 1]), np.array([1, 5]), cfg_all).tolist() == [LENGTH_RATIO] * 2


def test_side_lengths_count_tokens_but_punctuation_only_is_empty() -> None:
    got = side_lengths([w("hello , world !"), w("? !"), [], w("42 ."), w("日 本")])
    assert got.tolist() == [4, 0, 0, 2, 2]


def test_clean_pairs_each_reason() -> None:
    cfg = CleanConfig(min_words=2, max_words=30)
    src = [
        w("the cat sleeps ."),  # kept
        w("..."),  # empty (punctuation only)
        w("hi"),  # too_short
        LONG_EN + LONG_EN,  # too_long (40 > 30)
        w("a b c d e f g"),  # length_ratio: 7 vs 2
        w("the cat sleeps ."),  # duplicate of 0
        LONG_EN,  # kept
        ["a" if x == "beach" else x for x in LONG_EN],  # near duplicate of 6
        OTHER_EN,  # kept
    ]
    tgt = [
        w("le chat dort ."),
        w("bonjour"),
        w("salut toi"),
        w("trop long"),
        w("x y"),
        w("le chat dort ."),
        LONG_FR,
        LONG_FR,
        OTHER_FR,
    ]
    codes = drop_reasons(src, tgt, cfg)
    assert [REASONS[c] for c in codes] == [
        "kept",
        "empty",
        "too_short",
        "too_long",
        "length_ratio",
        "duplicate",
        "kept",
        "near_duplicate",
        "kept",
    ]
    keep, counts = clean_pairs(src, tgt, cfg)
    assert keep.tolist() == [c == KEPT for c in codes]
    assert counts == {
        "input": 9,
        "kept": 3,
        "empty": 1,
        "too_short": 1,
        "too_long": 1,
        "length_ratio": 1,
        "duplicate": 1,
        "near_duplicate": 1,
    }


def test_switches_turn_dedup_off() -> None:
    src = [LONG_EN, LONG_EN, ["a" if x == "beach" else x for x in LONG_EN]]
    tgt = [LONG_FR, LONG_FR, LONG_FR]
    assert drop_reasons(src, tgt, CleanConfig()).tolist() == [KEPT, DUPLICATE, NEAR_DUPLICATE]
    # without exact dedup the exact copy is caught as a near duplicate (identical signature)
    assert drop_reasons(src, tgt, CleanConfig(dedup=False)).tolist() == [KEPT, NEAR_DUPLICATE, NEAR_DUPLICATE]
    assert drop_reasons(src, tgt, CleanConfig(near_dedup=False)).tolist() == [KEPT, DUPLICATE, KEPT]
    assert drop_reasons(src, tgt, CleanConfig(dedup=False, near_dedup=False)).tolist() == [KEPT] * 3


def test_exact_duplicates_keep_the_first() -> None:
    a, b = (w("good morning"), w("bonjour")), (w("thank you"), w("merci"))
    pairs = [b, a, b, a, a]
    keep, counts = clean_pairs([p[0] for p in pairs], [p[1] for p in pairs], CleanConfig(near_dedup=False))
    assert keep.tolist() == [True, True, False, False, False]
    assert counts["duplicate"] == 3 and counts["kept"] == 2


def test_duplicate_of_a_length_filtered_pair_is_not_a_duplicate() -> None:
    # the first copy is dropped for its length ratio... then so is the second, with the same reason
    cfg = CleanConfig(near_dedup=False)
    src, tgt = [w("a b c d e f g"), w("a b c d e f g"), w("a b")], [w("x y"), w("x y"), w("x y")]
    assert drop_reasons(src, tgt, cfg).tolist() == [LENGTH_RATIO, LENGTH_RATIO, KEPT]


def test_duplicate_mask_ignores_rows_not_kept() -> None:
    keys = np.array([7, 7, 7, 3, 3], dtype=np.uint64)
    assert duplicate_mask(keys).tolist() == [False, True, True, False, True]
    keep = np.array([False, True, True, True, False])
    assert duplicate_mask(keys, keep).tolist() == [False, False, True, False, False]


def test_pair_keys_are_unambiguous() -> None:
    src = [
        w("a b"),
        ["a b"],
        w("a"),
        w("a b"),
        ["a\x00b"],
        ["a", "b"],
        [],
        [""],
        ["a\x01", "b"],
        ["a", "\x01b"],
    ]
    tgt = [w("c"), w("c"), w("b c"), w("c"), w("c"), w("c"), [""], [], ["c"], ["c"]]
    keys = pair_keys(src, tgt)
    assert keys.dtype == np.uint64
    assert keys[0] == keys[3] and keys[0] == keys[5]
    distinct = [0, 1, 2, 4, 6, 7, 8, 9]
    assert len(set(keys[distinct].tolist())) == len(distinct)


def test_shingles_short_pair_is_one_shingle_and_separator_counts() -> None:
    cfg = CleanConfig(shingle_size=3)
    values, offsets = shingle_hashes([w("a"), w("a b c d"), w("a b"), w("a")], [[], w("e f"), w("c"), w("b c")], cfg)
    # tokens incl. separator: 2 (< 3: one shingle), 7 (5 shingles), 4 (2), 4 (2)
    assert np.diff(offsets).tolist() == [1, 5, 2, 2]
    # "a b | c" and "a | b c" share no 3-gram: the separator position is part of each shingle
    assert not set(values[offsets[2] : offsets[3]].tolist()) & set(values[offsets[3] : offsets[4]].tolist())


def test_signatures_match_datasketch_minhash() -> None:
    cfg = CleanConfig(minhash_perm=32, seed=7)
    src, tgt = [LONG_EN, w("a b"), OTHER_EN], [LONG_FR, w("c"), OTHER_FR]
    values, offsets = shingle_hashes(src, tgt, cfg)
    sig = minhash_signatures(src, tgt, cfg)
    assert sig.shape == (3, 32) and sig.dtype == np.uint64
    for i in range(3):
        m = MinHash(num_perm=32, seed=7, scheme="affine64", hashfunc=int)
        m.update_batch(values[offsets[i] : offsets[i + 1]].tolist())
        assert np.array_equal(sig[i], m.hashvalues)


def test_signature_agreement_estimates_jaccard() -> None:
    cfg = CleanConfig(minhash_perm=256)
    variant = ["a" if x == "beach" else x for x in LONG_EN]
    values, offsets = shingle_hashes([LONG_EN, variant], [LONG_FR, LONG_FR], cfg)
    a, b = set(values[offsets[0] : offsets[1]].tolist()), set(values[offsets[1] : offsets[2]].tolist())
    assert len(a) == 39 and len(a & b) == 36  # 20 + 1 + 20 tokens; one changed word changes 3 shingles
    sig = minhash_signatures([LONG_EN, variant], [LONG_FR, LONG_FR], cfg)
    assert abs((sig[0] == sig[1]).mean() - 36 / 42) < 0.08


def test_signatures_are_deterministic_and_shard_independent() -> None:
    cfg = CleanConfig()
    # includes pairs shorter than a shingle (2 tokens with the separator), followed by other pairs
    src = [LONG_EN, w("a"), OTHER_EN, w("a"), w("the cat sleeps ."), [], LONG_EN[:5]]
    tgt = [LONG_FR, [], OTHER_FR, w("b"), w("le chat dort ."), w("oui"), LONG_FR[:4]]
    whole = minhash_signatures(src, tgt, cfg)
    assert np.array_equal(whole, minhash_signatures(src, tgt, cfg))
    for cut in range(1, len(src)):
        halves = [
            minhash_signatures(src[:cut], tgt[:cut], cfg),
            minhash_signatures(src[cut:], tgt[cut:], cfg),
        ]
        assert np.array_equal(whole, np.concatenate(halves))
    assert not np.array_equal(whole, minhash_signatures(src, tgt, CleanConfig(seed=2)))


def test_keys_and_signatures_are_the_same_in_another_process() -> None:
    script = (
        "import json, sys; from prealign.lexicon.clean import CleanConfig, minhash_signatures, pair_keys\n"
        "src, tgt = json.loads(sys.stdin.read())\n"
        "sig = minhash_signatures(src, tgt, CleanConfig())\n"
        "print(json.dumps([pair_keys(src, tgt).tolist(), sig.tolist()]))\n"
    )
    src, tgt = [LONG_EN, w("été à l'eau")], [LONG_FR, w("summer")]
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps([src, tgt]),
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outs.append(json.loads(done.stdout))
    assert outs[0] == outs[1]
    assert outs[0][0] == pair_keys(src, tgt).tolist()
    assert outs[0][1] == minhash_signatures(src, tgt, CleanConfig()).tolist()


def test_one_word_of_twenty_is_a_near_duplicate_and_unrelated_is_not() -> None:
    variant = ["a" if x == "beach" else x for x in LONG_EN]
    assert len(LONG_EN) == 20 and sum(x != y for x, y in zip(LONG_EN, variant, strict=True)) == 1
    src, tgt = [LONG_EN, variant, OTHER_EN], [LONG_FR, LONG_FR, OTHER_FR]
    sig = minhash_signatures(src, tgt, CleanConfig())
    assert near_duplicate_mask(sig, CleanConfig()).tolist() == [False, True, False]


def _vocab_pairs(rng: np.random.Generator, n: int, length: int) -> tuple[list[list[str]], list[list[str]]]:
    vocab = [f"w{i}" for i in range(5000)]
    src = [list(rng.choice(vocab, length)) for _ in range(n)]
    tgt = [list(rng.choice(vocab, length)) for _ in range(n)]
    return src, tgt


def _one_word_variants(src: list[list[str]], rng: np.random.Generator) -> list[list[str]]:
    out = []
    for s in src:
        v = list(s)
        v[int(rng.integers(1, len(v) - 1))] = "changed"
        out.append(v)
    return out


def test_threshold_behaviour_long_versus_short_variants() -> None:
    """What the module docstring promises: a one-word change in 20 + 20 words (Jaccard 0.86) is almost always
    dropped at 0.8; in 5 + 5 words (Jaccard 0.5) almost never."""
    rng = np.random.default_rng(0)
    cfg = CleanConfig()
    dropped = {}
    for length in (20, 5):
        src, tgt = _vocab_pairs(rng, 200, length)
        sig = minhash_signatures(src + _one_word_variants(src, rng), tgt + tgt, cfg)
        drop = near_duplicate_mask(sig, cfg)
        assert not drop[:200].any()  # unrelated random pairs
        dropped[length] = drop[200:].mean()
    assert dropped[20] >= 0.75
    assert dropped[5] <= 0.05


def _reference_near_duplicates(sig: np.ndarray, cfg: CleanConfig, keep: np.ndarray) -> np.ndarray:
    """Every row through MinHashLSH, with no pre-filter."""
    from datasketch import LeanMinHash

    lsh = MinHashLSH(threshold=cfg.minhash_threshold, num_perm=cfg.minhash_perm, weights=LSH_WEIGHTS)
    drop = np.zeros(len(sig), dtype=bool)
    for i in range(len(sig)):
        if not keep[i]:
            continue
        m = LeanMinHash(seed=cfg.seed, hashvalues=sig[i], scheme="affine64")
        if any((sig[j] == sig[i]).mean() >= cfg.minhash_threshold for j in lsh.query(m)):
            drop[i] = True
        else:
            lsh.insert(i, m)
    return drop


def test_near_duplicate_mask_equals_plain_lsh_over_every_row() -> None:
    rng = np.random.default_rng(3)
    cfg = CleanConfig()
    base = rng.integers(0, 2**63, size=(40, 64), dtype=np.uint64)
    rows = [base[i % 40].copy() for i in range(400)]
    for r in rows:  # perturb a random number of positions: agreement from 64/64 down to ~34/64
        k = int(rng.integers(0, 30))
        r[rng.choice(64, k, replace=False)] = rng.integers(0, 2**63, size=k, dtype=np.uint64)
    sig = np.stack(rows)
    keep = rng.random(400) < 0.9
    got = near_duplicate_mask(sig, cfg, keep)
    assert got.sum() > 50 and (~got & keep).sum() > 40  # both outcomes occur
    assert np.array_equal(got, _reference_near_duplicates(sig, cfg, keep))


def test_near_duplicate_mask_order_keep_and_verification() -> None:
    cfg = CleanConfig()
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**63, size=64, dtype=np.uint64)
    b = a.copy()
    b[0:8] += np.uint64(1)  # 56/64 equal to a: near duplicate
    c = b.copy()
    c[8:16] += np.uint64(1)  # 56/64 equal to b, 48/64 to a: an LSH candidate of a, below 0.8
    sig = np.stack([a, b, c])
    # b is dropped (a kept first); c is only close to b, which was dropped and not indexed
    assert near_duplicate_mask(sig, cfg).tolist() == [False, True, False]
    # with a ignored, b is the first of its kind and c its near duplicate
    assert near_duplicate_mask(sig, cfg, np.array([False, True, True])).tolist() == [False, False, True]
    # later copies of a kept row are dropped, the first stays
    assert near_duplicate_mask(np.stack([c, a, c, c]), cfg).tolist() == [False, False, True, True]


def test_near_duplicate_mask_checks_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        near_duplicate_mask(np.zeros((3, 32), dtype=np.uint64), CleanConfig())
    with pytest.raises(ValueError, match="keep"):
        near_duplicate_mask(np.zeros((3, 64), dtype=np.uint64), CleanConfig(), np.ones(2, dtype=bool))


def test_reason_counts_has_every_reason() -> None:
    counts = reason_counts(np.array([0, 0, 5, 1], dtype=np.uint8))
    assert counts == {
        "input": 4,
        "kept": 2,
        "empty": 1,
        "too_short": 0,
        "too_long": 0,
        "length_ratio": 0,
        "duplicate": 1,
        "near_duplicate": 0,
    }
    assert reason_counts(np.array([], dtype=np.uint8))["input"] == 0
    with pytest.raises(ValueError):
        reason_counts(np.array([9]))


def test_empty_input_and_mismatched_sides() -> None:
    keep, counts = clean_pairs([], [], CleanConfig())
    assert keep.shape == (0,) and counts["input"] == 0 and sum(counts.values()) == 0
    assert minhash_signatures([], [], CleanConfig()).shape == (0, 64)
    with pytest.raises(ValueError, match="2 source"):
        clean_pairs([w("a"), w("b")], [w("c")], CleanConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_words": -1},
        {"min_words": 5, "max_words": 4},
        {"max_ratio": 0.5},
        {"minhash_threshold": 0.0},
        {"minhash_threshold": 1.5},
        {"minhash_perm": 1},
        {"shingle_size": 0},
    ],
)
def test_config_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CleanConfig(**kwargs)


sentences = st.lists(st.sampled_from(["a", "b", "c", ".", "!", "dd"]), min_size=0, max_size=9)


@settings(max_examples=80, deadline=None)
@given(
    pairs=st.lists(st.tuples(sentences, sentences), max_size=40),
    near=st.booleans(),
    threshold=st.sampled_from([0.3, 0.8, 1.0]),
)
def test_property_no_exact_duplicates_kept_and_counts_sum(pairs: list, near: bool, threshold: float) -> None:
    cfg = CleanConfig(max_words=7, near_dedup=near, minhash_threshold=threshold)
    src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
    codes = drop_reasons(src, tgt, cfg)
    keep, counts = clean_pairs(src, tgt, cfg)
    kept_pairs = [(tuple(s), tuple(t)) for s, t, k in zip(src, tgt, keep, strict=True) if k]
    assert len(kept_pairs) == len(set(kept_pairs))
    assert counts["input"] == len(pairs)
    assert sum(counts[r] for r in REASONS) == len(pairs)
    assert counts["kept"] == int(keep.sum())
    assert np.array_equal(keep, codes == KEPT)
    # every kept pair passes the length checks
    lengths = length_reasons(side_lengths(src), side_lengths(tgt), cfg)
    assert not lengths[keep].any()
    # and a pair dropped as a duplicate has an identical earlier kept pair
    for i in np.flatnonzero(codes == DUPLICATE):
        assert (tuple(src[i]), tuple(tgt[i])) in {
            (tuple(src[j]), tuple(tgt[j])) for j in range(i) if codes[j] in (KEPT, NEAR_DUPLICATE)
        }
