"""The built-in IBM Model 1 + HMM aligner on the synthetic demo corpus (prealign.lexicon.builtin_aligner)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from prealign.demo import true_lexicon, write_corpus
from prealign.lexicon.builtin_aligner import BuiltinConfig, Model, chunk_bounds, train_and_align
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.executor import LocalExecutor
from prealign.lexicon.symmetrize import sentence_links, symmetrize
from prealign.text import Segmenter, SegmenterConfig, apostrophe_for

CONFIG = BuiltinConfig(ibm1_iterations=3, hmm_iterations=2, chunk_sentences=200)
TRUTH: dict[str, set[str]] = {}
for _e, _f in true_lexicon():
    TRUTH.setdefault(_e, set()).add(_f)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[list[list[str]], list[list[str]], EncodedCorpus]:
    path = write_corpus(Path(tmp_path_factory.mktemp("demo")) / "demo.tsv", n_pairs=800, seed=1)
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    en = Segmenter(SegmenterConfig(apostrophe=apostrophe_for("en"))).segment_batch([a for a, _ in lines])
    fr = Segmenter(SegmenterConfig(apostrophe=apostrophe_for("fr"))).segment_batch([b for _, b in lines])
    return en, fr, encode_corpus(en, fr)


@pytest.fixture(scope="module")
def trained(demo) -> tuple[Model, np.ndarray, np.ndarray]:
    model, handles = train_and_align(demo[2], CONFIG)
    fwd, bwd = zip(*LocalExecutor().get(handles), strict=True)
    return model, np.concatenate(fwd), np.concatenate(bwd)


def linked_counts(en, fr, keys: np.ndarray) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for s, links in enumerate(sentence_links(keys, len(en))):
        for i, j in links:
            out.setdefault(en[s][i], Counter())[fr[s][j]] += 1
    return out


def corpus_slice(en, fr, n: int) -> EncodedCorpus:
    return encode_corpus(en[:n], fr[:n])


@pytest.mark.parametrize("method", ["forward", "backward", "intersect", "grow-diag-final-and"])
def test_most_frequent_link_is_the_true_translation(demo, trained, method: str) -> None:
    en, fr, _ = demo
    _, fwd, bwd = trained
    counts = linked_counts(en, fr, symmetrize(fwd, bwd, method))
    seen = [e for e in TRUTH if any(e in s for s in en)]
    assert len(seen) >= 50
    good = [e for e in seen if e in counts and counts[e].most_common(1)[0][0] in TRUTH[e]]
    assert len(good) >= 0.9 * len(seen), sorted(set(seen) - set(good))
    assert counts["cat"].most_common(1)[0][0] == "chat"


def test_links_of_most_sentences_are_right(demo, trained) -> None:
    """Each content word whose translation occurs once in the target sentence is linked to it."""
    en, fr, corpus = demo
    _, fwd, bwd = trained
    for keys in (fwd, bwd, symmetrize(fwd, bwd, "grow-diag-final-and")):
        per = sentence_links(keys, corpus.n_sentences)
        hit = total = 0
        for s, (a, b) in enumerate(zip(en, fr, strict=True)):
            links = {(int(i), int(j)) for i, j in per[s]}
            for i, word in enumerate(a):
                targets = [j for j, x in enumerate(b) if x in TRUTH.get(word, ())]
                if len(targets) == 1:
                    total += 1
                    hit += (i, targets[0]) in links
        assert total > 2000
        assert hit >= 0.9 * total


def test_link_keys_are_valid(demo, trained) -> None:
    _, _, corpus = demo
    _, fwd, bwd = trained
    for keys, per_obs in ((fwd, "tgt"), (bwd, "src")):
        assert np.all(np.diff(keys) > 0)
        per = sentence_links(keys, corpus.n_sentences)
        assert sum(len(p) for p in per) == len(keys)
        for s, links in enumerate(per):
            assert np.all(links[:, 0] < corpus.src_lengths[s]) and np.all(links[:, 1] < corpus.tgt_lengths[s])
            col = links[:, 1] if per_obs == "tgt" else links[:, 0]
            assert len(np.unique(col)) == len(col)  # at most one link per observed word
        # sentences of every chunk are numbered globally
        assert (keys >> 32).max() >= 600


def test_model_tables_are_distributions(demo, trained) -> None:
    _, _, corpus = demo
    model, _, _ = trained
    fwd_sums = np.bincount(corpus.pair_src, weights=model.forward.t, minlength=len(corpus.src_vocab))
    bwd_sums = np.bincount(corpus.pair_tgt, weights=model.backward.t, minlength=len(corpus.tgt_vocab))
    np.testing.assert_allclose(fwd_sums, 1.0, rtol=1e-4)
    np.testing.assert_allclose(bwd_sums, 1.0, rtol=1e-4)
    for p in (model.forward, model.backward):
        assert p.t_null.sum() == pytest.approx(1.0, rel=1e-4) and np.all(p.t_null > 0)
        assert p.jump is not None and p.jump.shape == (2 * CONFIG.max_jump + 1,)
        assert p.jump.sum() == pytest.approx(1.0, rel=1e-4)
        # French and English order are close: a step of +1 is the most likely jump
        assert int(np.argmax(p.jump)) == CONFIG.max_jump + 1
        assert p.jump[CONFIG.max_jump + 1] > 0.4
        assert p.p0 == CONFIG.p0


def test_deterministic(demo, trained) -> None:
    model, fwd, bwd = trained
    model2, handles = train_and_align(demo[2], CONFIG)
    fwd2 = np.concatenate([h[0] for h in handles])
    bwd2 = np.concatenate([h[1] for h in handles])
    assert np.array_equal(fwd, fwd2) and np.array_equal(bwd, bwd2)
    for a, b in ((model.forward, model2.forward), (model.backward, model2.backward)):
        assert np.array_equal(a.t, b.t) and np.array_equal(a.t_null, b.t_null) and np.array_equal(a.jump, b.jump)


def test_model1_only_and_chunking(demo) -> None:
    en, fr, corpus = demo
    small = corpus_slice(en, fr, 300)
    config = BuiltinConfig(ibm1_iterations=2, hmm_iterations=0, chunk_sentences=300)
    one_chunk, links1 = train_and_align(small, config)
    assert one_chunk.forward.jump is None and one_chunk.backward.jump is None
    assert len(links1) == 1
    many, links3 = train_and_align(small, BuiltinConfig(ibm1_iterations=2, hmm_iterations=0, chunk_sentences=97))
    assert len(links3) == 4
    # counts are summed chunk by chunk: only float rounding may differ
    np.testing.assert_allclose(many.forward.t, one_chunk.forward.t, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(many.backward.t_null, one_chunk.backward.t_null, rtol=1e-4, atol=1e-7)


def test_empty_sentences_do_not_break_training() -> None:
    src = [["a", "b"], [], ["a"], ["b", "c"], ["c"]]
    tgt = [["x", "y"], ["z"], [], ["y", "w"], ["w"]]
    corpus = encode_corpus(src, tgt)
    model, handles = train_and_align(corpus, BuiltinConfig(ibm1_iterations=3, hmm_iterations=2, chunk_sentences=2))
    per = sentence_links(np.concatenate([h[0] for h in handles]), corpus.n_sentences)
    assert per[1].shape == (0, 2) and per[2].shape == (0, 2)
    assert np.all(np.isfinite(model.forward.t)) and np.all(np.isfinite(model.backward.t))
    assert [0, 0] in per[4].tolist()  # c - w, alone together


def test_chunk_bounds() -> None:
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(4, 4) == [(0, 4)]
    assert chunk_bounds(0, 3) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p0": 1.0},
        {"p0": 1.5},
        {"p0": -0.1},
        {"ibm1_iterations": 0},
        {"hmm_iterations": -1},
        {"chunk_sentences": 0},
        {"max_jump": 0},
    ],
)
def test_config_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        BuiltinConfig(**kwargs)


def test_config_accepts_edge_values() -> None:
    assert BuiltinConfig(p0=0.0, hmm_iterations=0, ibm1_iterations=1, chunk_sentences=1, max_jump=1).p0 == 0.0
