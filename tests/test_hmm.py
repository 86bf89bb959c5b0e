"""Batched IBM Model 1 / HMM E-steps checked against brute-force enumeration (prealign.lexicon.hmm)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from prealign.lexicon import hmm
from prealign.lexicon.builtin_aligner import BuiltinConfig, train_and_align
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.executor import LocalExecutor
from prealign.lexicon.hmm import BACKWARD, FORWARD, Params, estep, make_chunk, transition_matrix

MAX_JUMP = 2
P0 = 0.3
# (source length, target length); repeated lengths put several sentences (with different observation lengths,
# hence padding) in one batch in both directions, and lengths above MAX_JUMP + 1 exercise the clipping
LENGTHS = [(2, 3), (3, 1), (2, 3), (4, 2), (1, 4), (3, 3), (2, 1), (5, 4), (3, 2), (1, 1), (4, 5)]


def make_corpus(lengths: list[tuple[int, int]], seed: int = 0) -> EncodedCorpus:
    rng = np.random.default_rng(seed)
    src_words, tgt_words = ["a", "b", "c", "d"], ["w", "x", "y", "z", "v"]
    src = [[src_words[k] for k in rng.integers(0, len(src_words), n)] for n, _ in lengths]
    tgt = [[tgt_words[k] for k in rng.integers(0, len(tgt_words), m)] for _, m in lengths]
    return encode_corpus(src, tgt)


def random_params(corpus: EncodedCorpus, direction: int, hmm_model: bool, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    v_obs = len(corpus.tgt_vocab) if direction == FORWARD else len(corpus.src_vocab)
    t = rng.uniform(0.05, 1.0, corpus.n_pairs).astype(np.float32)
    t_null = rng.uniform(0.05, 0.5, v_obs).astype(np.float32)
    jump = rng.uniform(0.1, 1.0, 2 * MAX_JUMP + 1).astype(np.float32) if hmm_model else None
    return Params(t, t_null, jump, P0, MAX_JUMP)


@dataclass
class Expected:
    posterior: np.ndarray  # per grid slot
    null: np.ndarray  # per observed word id
    pairs: np.ndarray  # per global pair id
    jump: np.ndarray
    to_null: float
    transitions: float
    loglik: float


def _bin(d: int) -> int:
    return int(np.clip(d, -MAX_JUMP, MAX_JUMP) + MAX_JUMP)


def sentence_view(corpus: EncodedCorpus, s: int, direction: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(K, obs word ids [T], slot of (state k, obs t) [K, T], pair id of (k, t) [K, T]) of sentence s."""
    i_len, j_len = int(corpus.src_lengths[s]), int(corpus.tgt_lengths[s])
    base = int(corpus.cand_offsets[s])
    if direction == FORWARD:
        k, t = i_len, j_len
        obs = corpus.tgt_ids[corpus.tgt_offsets[s] : corpus.tgt_offsets[s + 1]]
        slot = base + np.arange(k)[:, None] * j_len + np.arange(t)[None, :]
    else:
        k, t = j_len, i_len
        obs = corpus.src_ids[corpus.src_offsets[s] : corpus.src_offsets[s + 1]]
        slot = base + np.arange(t)[None, :] * j_len + np.arange(k)[:, None]
    return k, obs, slot, corpus.cand_pair[slot]


def brute_force(corpus: EncodedCorpus, direction: int, params: Params) -> Expected:
    """Enumerate every hidden state sequence of every sentence (2K states: real i, and K + i' = empty
    remembering i')."""
    n_cand = len(corpus.cand_pair)
    posterior = np.zeros(n_cand)
    null = np.zeros(len(params.t_null))
    pairs = np.zeros(corpus.n_pairs)
    jump = np.zeros(2 * MAX_JUMP + 1)
    to_null = transitions = loglik = 0.0
    t_tab = params.t.astype(np.float64)
    t_null = params.t_null.astype(np.float64)
    for s in range(corpus.n_sentences):
        k, obs, slot, pair = sentence_view(corpus, s, direction)
        n_obs = len(obs)
        if k == 0 or n_obs == 0:
            continue
        emit = t_tab[pair]  # [K, T]
        if params.jump is None:  # Model 1: independent positions, empty word weighted like one more word
            total = emit.sum(0) + t_null[obs]
            post = emit / total
            posterior[slot] = post
            np.add.at(pairs, pair, post)
            np.add.at(null, obs, t_null[obs] / total)
            loglik += float(np.log(total).sum())
            continue
        jw = params.jump.astype(np.float64)
        real = np.array([[jw[_bin(i - ip)] for i in range(k)] for ip in range(k)])
        real = real / real.sum(1, keepdims=True) * (1 - P0)
        first = np.array([jw[_bin(i + 1)] for i in range(k)])
        first = first / first.sum() * (1 - P0)
        seqs = np.array(list(itertools.product(range(2 * k), repeat=n_obs)))  # [N, T]
        is_real = seqs < k
        where = np.where(is_real, seqs, seqs - k)  # real position, or the one remembered
        w = np.where(is_real[:, 0], first[where[:, 0]], P0 / k)
        for t in range(n_obs):
            if t > 0:
                # an empty state must remember the position it came from
                stay = np.where(where[:, t] == where[:, t - 1], P0, 0.0)
                w = w * np.where(is_real[:, t], real[where[:, t - 1], where[:, t]], stay)
            w = w * np.where(is_real[:, t], emit[where[:, t], t], t_null[obs[t]])
        z = w.sum()
        w = w / z
        loglik += float(np.log(z))
        for t in range(n_obs):
            for i in range(k):
                p = w[seqs[:, t] == i].sum()
                posterior[slot[i, t]] = p
                pairs[pair[i, t]] += p
            p_null = w[~is_real[:, t]].sum()
            null[obs[t]] += p_null
            to_null += p_null
            # jump bins of the moves into real states; the first move comes from position -1
            d = where[:, t] + 1 if t == 0 else where[:, t] - where[:, t - 1]
            bins = np.clip(d, -MAX_JUMP, MAX_JUMP) + MAX_JUMP
            jump += np.bincount(bins[is_real[:, t]], weights=w[is_real[:, t]], minlength=len(jump))
        transitions += n_obs
    return Expected(posterior, null, pairs, jump, to_null, transitions, loglik)


def global_pairs(chunk: hmm.Chunk, counts: hmm.Counts, n_pairs: int) -> np.ndarray:
    out = np.zeros(n_pairs)
    out[chunk.pairs] += counts.pairs
    return out


@pytest.fixture(scope="module")
def corpus() -> EncodedCorpus:
    return make_corpus(LENGTHS)


@pytest.fixture(scope="module")
def expected(corpus: EncodedCorpus) -> dict[tuple[int, bool], tuple[Params, Expected]]:
    out = {}
    for direction in (FORWARD, BACKWARD):
        for hmm_model in (False, True):
            params = random_params(corpus, direction, hmm_model, seed=10 + 2 * direction + hmm_model)
            out[direction, hmm_model] = (params, brute_force(corpus, direction, params))
    return out


CASES = [(d, m) for d in (FORWARD, BACKWARD) for m in (False, True)]
IDS = [f"{'fwd' if d == FORWARD else 'bwd'}-{'hmm' if m else 'ibm1'}" for d, m in CASES]


@pytest.mark.parametrize(("direction", "hmm_model"), CASES, ids=IDS)
def test_estep_matches_brute_force(corpus, expected, direction: int, hmm_model: bool) -> None:
    params, exp = expected[direction, hmm_model]
    chunk = make_chunk(corpus, 0, corpus.n_sentences)
    assert any(b.cidx.shape[0] > 1 for b in chunk.batches[direction])  # batches of several sentences, padded
    assert any(not b.mask.all() for b in chunk.batches[direction])
    got = estep(chunk, direction, params)
    assert got.posterior is not None and got.posterior.shape == (len(corpus.cand_pair),)
    np.testing.assert_allclose(got.posterior, exp.posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.null, exp.null, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(global_pairs(chunk, got, corpus.n_pairs), exp.pairs, rtol=1e-4, atol=1e-6)
    assert got.loglik == pytest.approx(exp.loglik, rel=1e-4, abs=1e-4)
    if hmm_model:
        np.testing.assert_allclose(got.jump, exp.jump, rtol=1e-4, atol=1e-6)
        assert got.to_null == pytest.approx(exp.to_null, rel=1e-4)
        assert got.transitions == pytest.approx(exp.transitions, rel=1e-5)
        # every observed word makes exactly one move: into a real position (a jump) or into the empty word
        assert got.jump.sum() + got.to_null == pytest.approx(exp.transitions, rel=1e-5)
    else:
        assert not got.jump.any()
    # per observed word, link posteriors plus the empty word sum to one
    n_obs = int((corpus.tgt_lengths if direction == FORWARD else corpus.src_lengths).sum())
    assert got.posterior.sum() + got.null.sum() == pytest.approx(n_obs, rel=1e-5)


@pytest.mark.parametrize(("direction", "hmm_model"), CASES, ids=IDS)
def test_estep_independent_of_batching_and_chunking(corpus, expected, monkeypatch, direction, hmm_model) -> None:
    params, exp = expected[direction, hmm_model]
    # one sentence per batch: no padding at all
    monkeypatch.setattr(hmm, "_BATCH_ELEMENTS", 1)
    chunk = make_chunk(corpus, 0, corpus.n_sentences)
    assert len(chunk.batches[direction]) == sum(
        1 for s, t in LENGTHS if (s if direction == FORWARD else t) > 0 and (t if direction == FORWARD else s) > 0
    )
    got = estep(chunk, direction, params)
    np.testing.assert_allclose(got.posterior, exp.posterior, rtol=1e-4, atol=1e-6)
    monkeypatch.undo()
    # chunks that start mid-corpus: posteriors land on their own slots, counts add up to the whole
    bounds = [(0, 3), (3, 4), (4, 9), (9, corpus.n_sentences)]
    post, null, pairs, loglik = [], np.zeros_like(exp.null), np.zeros(corpus.n_pairs), 0.0
    for s0, s1 in bounds:
        ch = make_chunk(corpus, s0, s1)
        assert ch.cand_start == corpus.cand_offsets[s0]
        c = estep(ch, direction, params)
        assert len(c.posterior) == corpus.cand_offsets[s1] - corpus.cand_offsets[s0]
        post.append(c.posterior)
        null += c.null
        pairs += global_pairs(ch, c, corpus.n_pairs)
        loglik += c.loglik
    np.testing.assert_allclose(np.concatenate(post), exp.posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(null, exp.null, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pairs, exp.pairs, rtol=1e-4, atol=1e-6)
    assert loglik == pytest.approx(exp.loglik, rel=1e-4)


def test_empty_sides_contribute_nothing() -> None:
    src = [["a", "b"], [], ["c", "a"], ["b"]]
    tgt = [["x", "y"], ["y", "z"], [], ["x"]]
    with_empty = encode_corpus(src, tgt)
    without = encode_corpus([src[0], src[3]], [tgt[0], tgt[3]])
    # both encodings give a, b / x, y the same ids and the kept sentences the same pair ids
    assert with_empty.cand_pair[[0, 1, 2, 3, 4]].tolist() == without.cand_pair.tolist()
    for direction in (FORWARD, BACKWARD):
        v_obs = 3  # src a, b, c / tgt x, y, z
        params = Params(
            np.linspace(0.2, 0.9, with_empty.n_pairs, dtype=np.float32),
            np.full(v_obs, 0.1, np.float32),
            np.array([0.1, 0.2, 0.3, 0.3, 0.1], np.float32),
            P0,
            MAX_JUMP,
        )
        a = estep(make_chunk(with_empty, 0, 4), direction, params)
        p2 = Params(params.t[: without.n_pairs], params.t_null, params.jump, P0, MAX_JUMP)
        b = estep(make_chunk(without, 0, 2), direction, p2)
        assert a.loglik == pytest.approx(b.loglik, rel=1e-6)
        np.testing.assert_allclose(a.posterior[[0, 1, 2, 3, 4]], b.posterior, rtol=1e-6)
        np.testing.assert_allclose(a.null[:2], b.null[:2], rtol=1e-6, atol=1e-9)
        assert a.null[2] == 0.0
        np.testing.assert_allclose(a.jump, b.jump, rtol=1e-6, atol=1e-9)
        assert a.transitions == pytest.approx(b.transitions)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_transition_matrix(k: int) -> None:
    jump = np.array([0.5, 0.1, 0.9, 0.3, 0.2], dtype=np.float32)
    params = Params(np.ones(1, np.float32), np.ones(1, np.float32), jump, P0, MAX_JUMP)
    real, first, bins = transition_matrix(params, k)
    real, first = real.numpy().astype(np.float64), first.numpy().astype(np.float64)
    assert real.shape == (k, k) and first.shape == (k,) and bins.shape == (k, k)
    np.testing.assert_allclose(real.sum(1), 1 - P0, rtol=1e-6)
    assert first.sum() == pytest.approx(1 - P0, rel=1e-6)
    for ip in range(k):
        for i in range(k):
            assert bins[ip, i] == _bin(i - ip)
    # within a row, R is proportional to the jump weights of its bins
    for ip in range(k):
        ratio = real[ip] / jump[bins[ip]]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    ratio = first / jump[[_bin(i + 1) for i in range(k)]]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)


class SpyExecutor(LocalExecutor):
    """Records the results of every E-step map."""

    def __init__(self) -> None:
        self.estep_results: list[list] = []

    def map(self, func, args):
        out = super().map(func, args)
        if func.__name__ == "_chunk_counts":
            self.estep_results.append(out)
        return out


def test_model1_em_never_decreases_loglik() -> None:
    rng = np.random.default_rng(3)
    src_words = [f"s{i}" for i in range(12)]
    tgt_words = [f"t{i}" for i in range(12)]
    src, tgt = [], []
    for _ in range(150):
        n = int(rng.integers(2, 7))
        ids = rng.integers(0, 12, n)
        src.append([src_words[i] for i in ids])
        # a noisy, shuffled translation: a word's translation is its own index, sometimes a random word
        noisy = [i if rng.random() < 0.8 else int(rng.integers(0, 12)) for i in rng.permutation(ids)]
        tgt.append([tgt_words[i] for i in noisy])
    corpus = encode_corpus(src, tgt)
    # pure maximum likelihood (no smoothing pseudo-counts): EM's guarantee applies exactly
    config = BuiltinConfig(ibm1_iterations=5, hmm_iterations=0, agreement=False, null_smoothing=0.0, chunk_sentences=40)
    spy = SpyExecutor()
    messages: list[str] = []
    train_and_align(corpus, config, executor=spy, progress=messages.append)
    assert len(spy.estep_results) == 5
    assert len(messages) == 5
    for direction in (FORWARD, BACKWARD):
        ll = np.array([sum(res[direction].loglik for res in it) for it in spy.estep_results])
        assert np.all(np.diff(ll) >= -1e-5 * np.abs(ll[:-1])), ll
        assert ll[-1] > ll[0] + 1.0
