"""Batched IBM Model 1 / HMM E-steps checked against brute-force enumeration (prealign.lexicon.hmm), and the
EM's steps built on them (prealign.lexicon.em): agreement, decoding, Model 1's likelihood."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from prealign.lexicon import em, hmm
from prealign.lexicon.em import BuiltinConfig, SentenceArrays
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.hmm import BACKWARD, FORWARD, Params, estep, make_chunk, transition_matrix
from prealign.lexicon.symmetrize import link_keys
from prealign.pipelines import em_stage
from prealign.pipelines.encode_stage import read_chunk

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


def sentences(corpus: EncodedCorpus, start: int = 0, stop: int | None = None) -> SentenceArrays:
    """Sentences [start, stop) of the corpus, numbered from ``start``."""
    stop = corpus.n_sentences if stop is None else stop
    so, to = corpus.src_offsets, corpus.tgt_offsets
    return SentenceArrays(
        corpus.src_ids[so[start] : so[stop]],
        so[start : stop + 1] - so[start],
        corpus.tgt_ids[to[start] : to[stop]],
        to[start : stop + 1] - to[start],
        start,
    )


def chunk_of(corpus: EncodedCorpus, start: int = 0, stop: int | None = None) -> hmm.Chunk:
    return make_chunk(sentences(corpus, start, stop), len(corpus.src_vocab), len(corpus.tgt_vocab))


def grid(corpus: EncodedCorpus) -> tuple[np.ndarray, np.ndarray]:
    """(first slot of each sentence + 1 at the end, pair key of every slot), slot (i, j) of sentence s being
    ``base[s] + i * J + j``: the layout spelled out in loops."""
    base, keys = [0], []
    for s in range(corpus.n_sentences):
        src = corpus.src_ids[corpus.src_offsets[s] : corpus.src_offsets[s + 1]]
        tgt = corpus.tgt_ids[corpus.tgt_offsets[s] : corpus.tgt_offsets[s + 1]]
        keys += [(int(a) << 32) | int(b) for a in src for b in tgt]
        base.append(len(keys))
    return np.array(base, np.int64), np.array(keys, np.int64)


@dataclass
class Tables:
    """One direction's parameters over every distinct pair of the corpus (``keys``, sorted)."""

    keys: np.ndarray
    t: np.ndarray
    t_null: np.ndarray
    jump: np.ndarray | None

    def local(self, chunk: hmm.Chunk) -> Params:
        """The parameters of a chunk: the table's values of the chunk's own pairs."""
        t = self.t[np.searchsorted(self.keys, chunk.pairs)]
        return Params(t, self.t_null, self.jump, P0, MAX_JUMP)


def random_tables(corpus: EncodedCorpus, direction: int, hmm_model: bool, seed: int) -> Tables:
    rng = np.random.default_rng(seed)
    keys = np.unique(grid(corpus)[1])
    v_obs = len(corpus.tgt_vocab) if direction == FORWARD else len(corpus.src_vocab)
    t = rng.uniform(0.05, 1.0, len(keys)).astype(np.float32)
    t_null = rng.uniform(0.05, 0.5, v_obs).astype(np.float32)
    jump = rng.uniform(0.1, 1.0, 2 * MAX_JUMP + 1).astype(np.float32) if hmm_model else None
    return Tables(keys, t, t_null, jump)


@dataclass
class Expected:
    posterior: np.ndarray  # per grid slot
    null: np.ndarray  # per observed word id
    null_at: np.ndarray  # per observed token (flat, in corpus order)
    pairs: np.ndarray  # per corpus pair (index into Tables.keys)
    jump: np.ndarray


def _bin(d: int) -> int:
    return int(np.clip(d, -MAX_JUMP, MAX_JUMP) + MAX_JUMP)


def sentence_view(corpus: EncodedCorpus, s: int, direction: int, tables: Tables):
    """(K, obs word ids [T], slot of (state k, obs t) [K, T], pair index of (k, t) [K, T], flat position of
    each observation [T]) of sentence s."""
    base, keys = grid(corpus)
    i_len, j_len = int(corpus.src_lengths[s]), int(corpus.tgt_lengths[s])
    if direction == FORWARD:
        k, t = i_len, j_len
        start = corpus.tgt_offsets[s]
        obs = corpus.tgt_ids[start : start + t]
        slot = base[s] + np.arange(k)[:, None] * j_len + np.arange(t)[None, :]
    else:
        k, t = j_len, i_len
        start = corpus.src_offsets[s]
        obs = corpus.src_ids[start : start + t]
        slot = base[s] + np.arange(t)[None, :] * j_len + np.arange(k)[:, None]
    return k, obs, slot, np.searchsorted(tables.keys, keys[slot]), start + np.arange(t)


def brute_force(corpus: EncodedCorpus, direction: int, tables: Tables) -> Expected:
    """Enumerate every hidden state sequence of every sentence (2K states: real i, and K + i' = empty
    remembering i')."""
    n_cand = len(grid(corpus)[1])
    posterior = np.zeros(n_cand)
    null = np.zeros(len(tables.t_null))
    n_tokens = len(corpus.tgt_ids) if direction == FORWARD else len(corpus.src_ids)
    null_at = np.zeros(n_tokens)
    pairs = np.zeros(len(tables.keys))
    jump = np.zeros(2 * MAX_JUMP + 1)
    t_tab = tables.t.astype(np.float64)
    t_null = tables.t_null.astype(np.float64)
    for s in range(corpus.n_sentences):
        k, obs, slot, pair, where_obs = sentence_view(corpus, s, direction, tables)
        n_obs = len(obs)
        if k == 0 or n_obs == 0:
            continue
        emit = t_tab[pair]  # [K, T]
        if tables.jump is None:  # Model 1: independent positions, empty word weighted like one more word
            total = emit.sum(0) + t_null[obs]
            post = emit / total
            posterior[slot] = post
            np.add.at(pairs, pair, post)
            np.add.at(null, obs, t_null[obs] / total)
            null_at[where_obs] = t_null[obs] / total
            continue
        jw = tables.jump.astype(np.float64)
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
        w = w / w.sum()
        for t in range(n_obs):
            for i in range(k):
                p = w[seqs[:, t] == i].sum()
                posterior[slot[i, t]] = p
                pairs[pair[i, t]] += p
            p_null = w[~is_real[:, t]].sum()
            null[obs[t]] += p_null
            null_at[where_obs[t]] = p_null
            # jump bins of the moves into real states; the first move comes from position -1
            d = where[:, t] + 1 if t == 0 else where[:, t] - where[:, t - 1]
            bins = np.clip(d, -MAX_JUMP, MAX_JUMP) + MAX_JUMP
            jump += np.bincount(bins[is_real[:, t]], weights=w[is_real[:, t]], minlength=len(jump))
    return Expected(posterior, null, null_at, pairs, jump)


def global_pairs(chunk: hmm.Chunk, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """A chunk's pair counts (its local order) placed on the corpus pairs ``keys``."""
    out = np.zeros(len(keys))
    out[np.searchsorted(keys, chunk.pairs)] += counts
    return out


@pytest.fixture(scope="module")
def corpus() -> EncodedCorpus:
    return make_corpus(LENGTHS)


@pytest.fixture(scope="module")
def expected(corpus: EncodedCorpus) -> dict[tuple[int, bool], tuple[Tables, Expected]]:
    out = {}
    for direction in (FORWARD, BACKWARD):
        for hmm_model in (False, True):
            tables = random_tables(corpus, direction, hmm_model, seed=10 + 2 * direction + hmm_model)
            out[direction, hmm_model] = (tables, brute_force(corpus, direction, tables))
    return out


CASES = [(d, m) for d in (FORWARD, BACKWARD) for m in (False, True)]
IDS = [f"{'fwd' if d == FORWARD else 'bwd'}-{'hmm' if m else 'ibm1'}" for d, m in CASES]


def test_make_chunk_pairs_are_the_sorted_distinct_keys(corpus) -> None:
    _, keys = grid(corpus)
    chunk = chunk_of(corpus)
    assert chunk.pairs.dtype == np.int64 and chunk.cand_local.dtype == np.int32
    assert np.array_equal(chunk.pairs, np.unique(keys))  # sorted, distinct, source word in the high bits
    assert chunk.n_candidates == len(keys)
    assert np.array_equal(chunk.pairs[chunk.cand_local[:-1]], keys)  # every slot points at its own pair
    assert chunk.cand_local[-1] == len(chunk.pairs)  # the sentinel
    # a chunk mid-corpus: its own pairs only, its slots from 0
    base, _ = grid(corpus)
    part = chunk_of(corpus, 4, 7)
    own = keys[base[4] : base[7]]
    assert np.array_equal(part.pairs, np.unique(own)) and len(part.pairs) < len(chunk.pairs)
    assert np.array_equal(part.pairs[part.cand_local[:-1]], own)


@pytest.mark.parametrize(("direction", "hmm_model"), CASES, ids=IDS)
def test_estep_matches_brute_force(corpus, expected, direction: int, hmm_model: bool) -> None:
    tables, exp = expected[direction, hmm_model]
    chunk = chunk_of(corpus)
    assert any(b.cidx.shape[1] > 1 for b in chunk.batches[direction])  # batches of several sentences, padded
    assert any(not b.mask.all() for b in chunk.batches[direction])
    got = estep(chunk, direction, tables.local(chunk))
    assert got.posterior is not None and got.posterior.shape == (len(exp.posterior),)
    assert got.best is None
    np.testing.assert_allclose(got.posterior, exp.posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.null, exp.null, rtol=1e-4, atol=1e-6)
    assert got.pairs.shape == chunk.pairs.shape
    np.testing.assert_allclose(global_pairs(chunk, got.pairs, tables.keys), exp.pairs, rtol=1e-4, atol=1e-6)
    # per observed word, link posteriors plus the empty word sum to one
    n_obs = int((corpus.tgt_lengths if direction == FORWARD else corpus.src_lengths).sum())
    assert got.posterior.sum() + got.null.sum() == pytest.approx(n_obs, rel=1e-5)
    if hmm_model:
        np.testing.assert_allclose(got.jump, exp.jump, rtol=1e-4, atol=1e-6)
        # every observed word makes exactly one move: into a real position (a jump) or into the empty word
        assert got.jump.sum() + got.null.sum() == pytest.approx(n_obs, rel=1e-5)
    else:
        assert not got.jump.any()


@pytest.mark.parametrize(("direction", "hmm_model"), CASES, ids=IDS)
def test_estep_independent_of_batching_and_chunking(corpus, expected, monkeypatch, direction, hmm_model) -> None:
    tables, exp = expected[direction, hmm_model]
    # one sentence per batch: no padding at all
    monkeypatch.setattr(hmm, "_BATCH_ELEMENTS", 1)
    chunk = chunk_of(corpus)
    assert len(chunk.batches[direction]) == sum(
        1 for s, t in LENGTHS if (s if direction == FORWARD else t) > 0 and (t if direction == FORWARD else s) > 0
    )
    got = estep(chunk, direction, tables.local(chunk))
    np.testing.assert_allclose(got.posterior, exp.posterior, rtol=1e-4, atol=1e-6)
    monkeypatch.undo()
    # chunks that start mid-corpus: posteriors on their own slots, counts add up to the whole
    base, _ = grid(corpus)
    bounds = [(0, 3), (3, 4), (4, 9), (9, corpus.n_sentences)]
    post, null, pairs, jump = [], np.zeros_like(exp.null), np.zeros(len(tables.keys)), np.zeros_like(exp.jump)
    for s0, s1 in bounds:
        ch = chunk_of(corpus, s0, s1)
        c = estep(ch, direction, tables.local(ch))
        assert len(c.posterior) == base[s1] - base[s0]
        post.append(c.posterior)
        null += c.null
        pairs += global_pairs(ch, c.pairs, tables.keys)
        jump += c.jump
    np.testing.assert_allclose(np.concatenate(post), exp.posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(null, exp.null, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pairs, exp.pairs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jump, exp.jump, rtol=1e-4, atol=1e-6)


def test_empty_sides_contribute_nothing() -> None:
    src = [["a", "b"], [], ["c", "a"], ["b"]]
    tgt = [["x", "y"], ["y", "z"], [], ["x"]]
    with_empty = encode_corpus(src, tgt)
    without = encode_corpus([src[0], src[3]], [tgt[0], tgt[3]])
    # a, b / x, y get the same ids in both encodings, so the kept sentences make the same chunk pairs
    a_chunk = make_chunk(sentences(with_empty), 3, 3)
    b_chunk = make_chunk(sentences(without), 3, 3)
    assert np.array_equal(a_chunk.pairs, b_chunk.pairs) and np.array_equal(a_chunk.cand_local, b_chunk.cand_local)
    for direction in (FORWARD, BACKWARD):
        v_obs = 3  # src a, b, c / tgt x, y, z
        params = Params(
            np.linspace(0.2, 0.9, len(a_chunk.pairs), dtype=np.float32),
            np.full(v_obs, 0.1, np.float32),
            np.array([0.1, 0.2, 0.3, 0.3, 0.1], np.float32),
            P0,
            MAX_JUMP,
        )
        a = estep(a_chunk, direction, params)
        b = estep(b_chunk, direction, params)
        np.testing.assert_allclose(a.posterior, b.posterior, rtol=1e-6)
        np.testing.assert_allclose(a.null[:2], b.null[:2], rtol=1e-6, atol=1e-9)
        assert a.null[2] == 0.0
        np.testing.assert_allclose(a.jump, b.jump, rtol=1e-6, atol=1e-9)


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


def both(expected, hmm_model: bool, chunk: hmm.Chunk) -> tuple[Params, Params]:
    return tuple(expected[d, hmm_model][0].local(chunk) for d in (FORWARD, BACKWARD))


@pytest.mark.parametrize("hmm_model", [False, True], ids=["ibm1", "hmm"])
def test_estep_with_agreement(corpus, expected, hmm_model: bool) -> None:
    """Agreement: both directions' pair counts are the product of the two directions' link posteriors, summed
    per pair; without it, each direction's own counts. The empty-word and jump counts stay each direction's."""
    chunk = chunk_of(corpus)
    params = both(expected, hmm_model, chunk)
    fwd_exp, bwd_exp = expected[FORWARD, hmm_model][1], expected[BACKWARD, hmm_model][1]
    joint = np.zeros(len(expected[FORWARD, hmm_model][0].keys))
    keys = expected[FORWARD, hmm_model][0].keys
    np.add.at(joint, np.searchsorted(keys, grid(corpus)[1]), fwd_exp.posterior * bwd_exp.posterior)
    agreed = em.estep(chunk, params, agreement=True)
    for d in (FORWARD, BACKWARD):
        np.testing.assert_allclose(global_pairs(chunk, agreed.pairs[d], keys), joint, rtol=1e-4, atol=1e-6)
    alone = em.estep(chunk, params, agreement=False)
    for d, exp in ((FORWARD, fwd_exp), (BACKWARD, bwd_exp)):
        np.testing.assert_allclose(global_pairs(chunk, alone.pairs[d], keys), exp.pairs, rtol=1e-4)
        for counts in (agreed, alone):
            np.testing.assert_allclose(counts.null[d], exp.null, rtol=1e-4, atol=1e-6)
            if hmm_model:
                np.testing.assert_allclose(counts.jump[d], exp.jump, rtol=1e-4, atol=1e-6)
    assert agreed.pairs[FORWARD].sum() < alone.pairs[FORWARD].sum()  # a product of probabilities below 1


def expected_links(corpus: EncodedCorpus, direction: int, exp: Expected, tables: Tables, threshold: float, first: int):
    """Link keys of each observed word's most probable real state, where it beats the empty word."""
    out = []
    for s in range(corpus.n_sentences):
        k, _, slot, _, where_obs = sentence_view(corpus, s, direction, tables)
        if k == 0:
            continue
        for t in range(len(where_obs)):
            post = exp.posterior[slot[:, t]]
            best = int(np.argmax(post))
            if post[best] > exp.null_at[where_obs[t]] and post[best] >= threshold and post[best] > 0:
                i, j = (best, t) if direction == FORWARD else (t, best)
                out.append(int(link_keys(np.array([s + first]), np.array([i]), np.array([j]))[0]))
    return np.sort(np.array(out, np.int64))


@pytest.mark.parametrize("hmm_model", [False, True], ids=["ibm1", "hmm"])
@pytest.mark.parametrize("threshold", [0.0, 0.4])
def test_decode_links_the_most_probable_state(corpus, expected, hmm_model: bool, threshold: float) -> None:
    first = 1000  # link keys carry the corpus sentence numbers: the chunk's first sentence plus its own
    part = sentences(corpus)
    part.first = first
    chunk = make_chunk(part, len(corpus.src_vocab), len(corpus.tgt_vocab))
    config = BuiltinConfig(p0=P0, max_jump=MAX_JUMP, threshold=threshold)
    got = em.decode(chunk, part, both(expected, hmm_model, chunk), config)
    for d in (FORWARD, BACKWARD):
        tables, exp = expected[d, hmm_model]
        want = expected_links(corpus, d, exp, tables, threshold, first)
        assert len(want) >= 3
        assert np.array_equal(got[d], want), d
    if threshold > 0:
        everything = em.decode(chunk, part, both(expected, hmm_model, chunk), BuiltinConfig(threshold=0.0))
        assert set(got[0]) < set(everything[0])


def model1_loglik(corpus: EncodedCorpus, keys: np.ndarray, t: np.ndarray, t_null: np.ndarray, direction: int):
    """Model 1's log-likelihood of the observed side (up to a constant): per observed word,
    log(sum over states of t(obs | state) + t(obs | empty))."""
    total = 0.0
    for s in range(corpus.n_sentences):
        src = corpus.src_ids[corpus.src_offsets[s] : corpus.src_offsets[s + 1]].astype(np.int64)
        tgt = corpus.tgt_ids[corpus.tgt_offsets[s] : corpus.tgt_offsets[s + 1]].astype(np.int64)
        if len(src) == 0 or len(tgt) == 0:
            continue
        pair = np.searchsorted(keys, (src[:, None] << 32) | tgt[None, :])  # [I, J]
        emit = t[pair].astype(np.float64)
        if direction == FORWARD:
            total += float(np.log(emit.sum(0) + t_null[tgt]).sum())
        else:
            total += float(np.log(emit.sum(1) + t_null[src]).sum())
    return total


def test_model1_em_never_decreases_loglik(tmp_path: Path) -> None:
    """EM over chunks with the pure steps (E-step per chunk, counts summed per pair, M-step per state word)
    raises Model 1's likelihood at every iteration; the stage loop (align_in_memory) ends at the same tables."""
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
    n_src, n_tgt = len(corpus.src_vocab), len(corpus.tgt_vocab)
    chunks = [chunk_of(corpus, a, min(a + 40, corpus.n_sentences)) for a in range(0, corpus.n_sentences, 40)]
    keys, inverse = np.unique(np.concatenate([c.pairs for c in chunks]), return_inverse=True)
    bkeys = (keys << 32) | (keys >> 32)  # the same pairs, target word in the high bits
    border = np.argsort(bkeys)
    t = (em.initial_table(len(keys), n_tgt), em.initial_table(len(keys), n_src))
    globals_ = em.initial_globals(n_src, n_tgt)
    ll: list[list[float]] = [[], []]
    for _ in config.schedule:
        for d in (FORWARD, BACKWARD):
            ll[d].append(model1_loglik(corpus, keys, t[d], globals_.t_null[d], d))
        totals = [np.zeros(len(keys)), np.zeros(len(keys))]
        null = [np.zeros(n_tgt), np.zeros(n_src)]
        for c in chunks:
            local = np.searchsorted(keys, c.pairs)
            counts = em.estep(c, em.chunk_params((t[0][local], t[1][local]), globals_, config), False)
            for d in (FORWARD, BACKWARD):
                totals[d][local] += counts.pairs[d]
                null[d] += counts.null[d]
        backward = np.empty(len(keys), np.float32)
        backward[border] = em.mstep_table(bkeys[border], totals[BACKWARD][border])
        t = (em.mstep_table(keys, totals[FORWARD]), backward)
        globals_ = em.mstep_globals(tuple(null), (np.zeros(1), np.zeros(1)), config, hmm=False)
    for d in (FORWARD, BACKWARD):
        ll[d].append(model1_loglik(corpus, keys, t[d], globals_.t_null[d], d))
        got = np.array(ll[d])
        assert np.all(np.diff(got) >= -1e-6 * np.abs(got[:-1])), got
        assert got[-1] > got[0] + 1.0
    assert len(inverse) == sum(len(c.pairs) for c in chunks) > len(keys)  # chunks share pairs
    # the stage loop over chunk files: the same tables
    links = em_stage.align_in_memory(corpus, config, tmp_path)
    assert len(links[0]) > 0 and len(links[1]) > 0
    last = em_stage.last_iteration(tmp_path)
    stored = em.load_params(em_stage.iteration_dir(tmp_path, last) / "params.npz")
    for d in (FORWARD, BACKWARD):
        np.testing.assert_allclose(stored.t_null[d], globals_.t_null[d], rtol=1e-5)
    shards = em_stage.shard_counts(tmp_path)
    for c, chunk in enumerate(chunks):
        assert np.array_equal(read_chunk(tmp_path, c).pairs, chunk.pairs)
        _, (t_fwd, t_bwd) = em_stage.chunk_params(tmp_path, last, chunk, c, shards, (0, 0))
        local = np.searchsorted(keys, chunk.pairs)
        np.testing.assert_allclose(t_fwd, t[FORWARD][local], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(t_bwd, t[BACKWARD][local], rtol=1e-5, atol=1e-8)
