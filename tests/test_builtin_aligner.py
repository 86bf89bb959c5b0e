"""The built-in IBM Model 1 + HMM aligner on the synthetic demo corpus: the EM's pure steps
(prealign.lexicon.em) and its loop over chunk files (prealign.pipelines.em_stage.align_in_memory)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from prealign.demo import true_lexicon, write_corpus
from prealign.lexicon import em
from prealign.lexicon.em import BuiltinConfig
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.symmetrize import sentence_links, symmetrize
from prealign.pipelines import em_stage
from prealign.pipelines.em_stage import align_in_memory
from prealign.pipelines.encode_stage import chunk_file, chunk_pieces, read_chunk, read_sentences
from prealign.pipelines.executor import LocalExecutor
from prealign.text import Segmenter, SegmenterConfig, apostrophe_for

CONFIG = BuiltinConfig(ibm1_iterations=3, hmm_iterations=2, chunk_sentences=200)
TRUTH: dict[str, set[str]] = {}
for _e, _f in true_lexicon():
    TRUTH.setdefault(_e, set()).add(_f)


@dataclass
class Model:
    """What the EM left in a work directory: the shared parameters, and the translation tables of both
    directions over every distinct pair of the corpus (``keys``: source word << 32 | target word, sorted)."""

    globals_: em.Globals
    keys: np.ndarray
    forward: np.ndarray  # p(target word | source word) of each key
    backward: np.ndarray  # p(source word | target word) of each key
    n_chunks: int


def n_chunk_files(work: Path) -> int:
    return len(list((work / "encode").glob("chunk-*.npz")))


def read_model(work: Path) -> Model:
    """The last iteration's parameters, read back chunk by chunk as the E-step and decoding read them; checks on
    the way that a pair shared by several chunks has the same probability in each."""
    last = em_stage.last_iteration(work)
    shards = em_stage.shard_counts(work)
    n_chunks = n_chunk_files(work)
    keys, fwd, bwd = [], [], []
    globals_ = None
    for c in range(n_chunks):
        chunk = read_chunk(work, c)
        globals_, (t_fwd, t_bwd) = em_stage.chunk_params(work, last, chunk, c, shards, (0, 0))
        assert len(t_fwd) == len(t_bwd) == len(chunk.pairs)
        keys.append(chunk.pairs)
        fwd.append(t_fwd)
        bwd.append(t_bwd)
    all_keys = np.concatenate(keys)
    unique, first, inverse = np.unique(all_keys, return_index=True, return_inverse=True)
    t_fwd, t_bwd = np.concatenate(fwd), np.concatenate(bwd)
    assert np.array_equal(t_fwd, t_fwd[first][inverse]) and np.array_equal(t_bwd, t_bwd[first][inverse])
    assert globals_ is not None
    return Model(globals_, unique, t_fwd[first], t_bwd[first], n_chunks)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[list[list[str]], list[list[str]], EncodedCorpus]:
    path = write_corpus(Path(tmp_path_factory.mktemp("demo")) / "demo.tsv", n_pairs=800, seed=1)
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    en = Segmenter(SegmenterConfig(apostrophe=apostrophe_for("en"))).segment_batch([a for a, _ in lines])
    fr = Segmenter(SegmenterConfig(apostrophe=apostrophe_for("fr"))).segment_batch([b for _, b in lines])
    return en, fr, encode_corpus(en, fr)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    work = tmp_path_factory.mktemp("em")
    fwd, bwd = align_in_memory(demo[2], CONFIG, work)
    return work, fwd, bwd


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
    work, _, _ = trained
    model = read_model(work)
    assert model.n_chunks == 4
    src, tgt = model.keys >> 32, model.keys & 0xFFFFFFFF
    fwd_sums = np.bincount(src, weights=model.forward, minlength=len(corpus.src_vocab))
    bwd_sums = np.bincount(tgt, weights=model.backward, minlength=len(corpus.tgt_vocab))
    np.testing.assert_allclose(fwd_sums, 1.0, rtol=1e-4)
    np.testing.assert_allclose(bwd_sums, 1.0, rtol=1e-4)
    g = model.globals_
    assert len(g.t_null[0]) == len(corpus.tgt_vocab) and len(g.t_null[1]) == len(corpus.src_vocab)
    assert g.jump is not None
    for t_null, jump in zip(g.t_null, g.jump, strict=True):
        assert t_null.sum() == pytest.approx(1.0, rel=1e-4) and np.all(t_null > 0)
        assert jump.shape == (2 * CONFIG.max_jump + 1,)
        assert jump.sum() == pytest.approx(1.0, rel=1e-4)
        # French and English order are close: a step of +1 is the most likely jump
        assert int(np.argmax(jump)) == CONFIG.max_jump + 1
        assert jump[CONFIG.max_jump + 1] > 0.4


def test_only_the_last_iteration_is_kept(trained) -> None:
    work, _, _ = trained
    last = len(CONFIG.schedule)
    assert em_stage.last_iteration(work) == last
    assert sorted(p.name for p in (work / "em").glob("it-*")) == [f"it-{last:03d}"]
    assert (em_stage.iteration_dir(work, last) / "params.npz").exists()


def test_deterministic(demo, trained, tmp_path: Path) -> None:
    work, fwd, bwd = trained
    fwd2, bwd2 = align_in_memory(demo[2], CONFIG, tmp_path)
    assert np.array_equal(fwd, fwd2) and np.array_equal(bwd, bwd2)
    a, b = read_model(work), read_model(tmp_path)
    assert np.array_equal(a.keys, b.keys)
    assert np.array_equal(a.forward, b.forward) and np.array_equal(a.backward, b.backward)
    for x, y in ((a.globals_.t_null, b.globals_.t_null), (a.globals_.jump, b.globals_.jump)):
        assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


def test_chunk_size_does_not_change_the_links(demo, trained, tmp_path: Path) -> None:
    """Counts are summed chunk by chunk: chunks of 97 sentences and the whole corpus as one chunk give the
    same links as chunks of 200, and the same model up to float rounding."""
    _, _, corpus = demo
    work, fwd, bwd = trained
    reference = read_model(work)
    for size, chunks in ((97, 9), (corpus.n_sentences, 1)):
        out = tmp_path / str(size)
        got = align_in_memory(corpus, replace(CONFIG, chunk_sentences=size), out)
        assert n_chunk_files(out) == chunks
        assert np.array_equal(got[0], fwd) and np.array_equal(got[1], bwd), size
        model = read_model(out)
        assert np.array_equal(model.keys, reference.keys)
        np.testing.assert_allclose(model.forward, reference.forward, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(model.backward, reference.backward, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(model.globals_.jump[0], reference.globals_.jump[0], rtol=1e-4, atol=1e-7)


def test_model1_only_and_chunking(demo, tmp_path: Path) -> None:
    en, fr, _ = demo
    small = corpus_slice(en, fr, 300)
    config = BuiltinConfig(ibm1_iterations=2, hmm_iterations=0, chunk_sentences=300)
    links1 = align_in_memory(small, config, tmp_path / "one")
    one_chunk = read_model(tmp_path / "one")
    assert one_chunk.n_chunks == 1
    assert one_chunk.globals_.jump is None  # Model 1 saves no jumps
    links3 = align_in_memory(small, replace(config, chunk_sentences=97), tmp_path / "many")
    many = read_model(tmp_path / "many")
    assert many.n_chunks == 4
    # each chunk's sentences are numbered from its first sentence in the corpus
    assert [read_sentences(chunk_file(tmp_path / "many", c)).first for c in range(4)] == [0, 97, 194, 291]
    # counts are summed chunk by chunk: only float rounding may differ
    assert np.array_equal(many.keys, one_chunk.keys)
    np.testing.assert_allclose(many.forward, one_chunk.forward, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(many.globals_.t_null[1], one_chunk.globals_.t_null[1], rtol=1e-4, atol=1e-7)
    assert all(np.array_equal(a, b) for a, b in zip(links1, links3, strict=True))


def test_shards_and_workers_do_not_change_training(demo, trained, tmp_path: Path, monkeypatch, ray_local) -> None:
    """M-step shards of whole state words normalise on their own, and every sum runs in chunk order: many shards,
    in this process or on 2 Ray workers, give the very same model and links as one shard."""
    _, _, corpus = demo
    work, fwd, bwd = trained
    reference = read_model(work)
    monkeypatch.setattr(em_stage, "SHARD_PAIRS", 1500)
    for name, executor in (("local", LocalExecutor()), ("ray", ray_local.executor)):
        out = tmp_path / name
        got = align_in_memory(corpus, CONFIG, out, executor)
        shards = em_stage.shard_counts(out)
        assert min(shards) >= 4, shards
        assert np.array_equal(got[0], fwd) and np.array_equal(got[1], bwd), name
        model = read_model(out)
        assert np.array_equal(model.forward, reference.forward) and np.array_equal(model.backward, reference.backward)


def test_empty_sentences_do_not_break_training(tmp_path: Path) -> None:
    src = [["a", "b"], [], ["a"], ["b", "c"], ["c"]]
    tgt = [["x", "y"], ["z"], [], ["y", "w"], ["w"]]
    corpus = encode_corpus(src, tgt)
    fwd, _ = align_in_memory(corpus, BuiltinConfig(ibm1_iterations=3, hmm_iterations=2, chunk_sentences=2), tmp_path)
    per = sentence_links(fwd, corpus.n_sentences)
    assert per[1].shape == (0, 2) and per[2].shape == (0, 2)
    model = read_model(tmp_path)
    assert model.n_chunks == 3
    assert np.all(np.isfinite(model.forward)) and np.all(np.isfinite(model.backward))
    assert [0, 0] in per[4].tolist()  # c - w, alone together


def test_no_sentences(tmp_path: Path) -> None:
    fwd, bwd = align_in_memory(encode_corpus([], []), CONFIG, tmp_path)
    assert len(fwd) == len(bwd) == 0 and fwd.dtype == bwd.dtype == np.int64


def test_chunk_pieces() -> None:
    """Chunks of the kept pairs cut across the input batches (first kept pair, (batch, lo, hi) pieces)."""
    assert chunk_pieces([5], 2) == [(0, [(0, 0, 2)]), (2, [(0, 2, 4)]), (4, [(0, 4, 5)])]
    assert chunk_pieces([4], 4) == [(0, [(0, 0, 4)])]
    assert chunk_pieces([3, 0, 4], 5) == [(0, [(0, 0, 3), (2, 0, 2)]), (5, [(2, 2, 4)])]
    assert chunk_pieces([0, 0], 3) == [] and chunk_pieces([], 3) == []


def test_mstep_table_normalises_each_state_word_in_key_order() -> None:
    keys = np.array([(0 << 32) | 3, (0 << 32) | 7, (2 << 32) | 1, (5 << 32) | 0, (5 << 32) | 2, (5 << 32) | 9])
    totals = np.array([1.0, 3.0, 0.0, 2.0, 2.0, 4.0])
    t = em.mstep_table(keys, totals)
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, [0.25, 0.75, 0.0, 0.25, 0.25, 0.5])  # word 2's counts are all 0: 0, not NaN
    # a shard of whole state words normalises on its own: the same values as in the whole table
    np.testing.assert_array_equal(em.mstep_table(keys[3:], totals[3:]), t[3:])
    np.testing.assert_array_equal(em.mstep_table(keys[:2], totals[:2]), t[:2])
    # a state word is the high 32 bits only: word 1 with observed word 0 is not word 0's
    two = em.mstep_table(np.array([(0 << 32) | 5, 1 << 32]), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(two, [1.0, 1.0])
    assert em.mstep_table(np.zeros(0, np.int64), np.zeros(0)).shape == (0,)


def test_mstep_globals() -> None:
    config = BuiltinConfig(null_smoothing=1.0, jump_smoothing=0.5, max_jump=1)
    null = (np.array([1.0, 3.0, 0.0]), np.array([2.0, 2.0]))
    jump = (np.array([0.5, 1.5, 2.0]), np.array([0.0, 0.0, 0.0]))
    model1 = em.mstep_globals(null, jump, config, hmm=False)
    assert model1.jump is None
    np.testing.assert_allclose(model1.t_null[0], [2 / 7, 4 / 7, 1 / 7], rtol=1e-6)
    np.testing.assert_allclose(model1.t_null[1], [0.5, 0.5], rtol=1e-6)
    hmm = em.mstep_globals(null, jump, config, hmm=True)
    assert hmm.jump is not None
    np.testing.assert_allclose(hmm.jump[0], [1 / 5.5, 2 / 5.5, 2.5 / 5.5], rtol=1e-6)
    np.testing.assert_allclose(hmm.jump[1], [1 / 3] * 3, rtol=1e-6)  # no counts: the smoothing alone
    assert all(a.dtype == np.float32 for a in (*hmm.t_null, *hmm.jump))


def test_params_round_trip(tmp_path: Path) -> None:
    config = BuiltinConfig(max_jump=2)
    for globals_ in (em.initial_globals(3, 4), em.with_jumps(em.initial_globals(3, 4), config)):
        with open(tmp_path / "p.npz", "wb") as fh:
            em.save_params(fh, globals_)
        back = em.load_params(tmp_path / "p.npz")
        assert all(np.array_equal(a, b) for a, b in zip(back.t_null, globals_.t_null, strict=True))
        assert (back.jump is None) == (globals_.jump is None)
        if back.jump is not None:
            assert all(np.array_equal(a, b) for a, b in zip(back.jump, globals_.jump, strict=True))
    start = em.initial_globals(3, 4)
    assert len(start.t_null[0]) == 4 and len(start.t_null[1]) == 3  # forward observes target words
    jump = em.with_jumps(start, config).jump[0]
    assert int(np.argmax(jump)) == config.max_jump + 1 and jump.sum() == pytest.approx(1.0)


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
    assert BuiltinConfig(ibm1_iterations=2, hmm_iterations=1).schedule == ["Model 1", "Model 1", "HMM"]
