"""The built-in statistical word aligner: IBM Model 1 then an HMM, both directions, trained by EM.

Training runs over fixed-size chunks of sentences through an :class:`~prealign.lexicon.executor.Executor`
(this process by default, Ray tasks in ``prealign.pipelines``). Counts are summed in chunk order, so the
result does not depend on the number of workers.

With ``agreement`` on, the translation counts of both directions come from the product of the two
directions' link posteriors (Liang, Taskar & Klein 2006, "Alignment by Agreement"), which pushes both
models towards links they agree on. Each direction's links are then decoded by posterior: every word
links to its most probable counterpart when that beats the empty word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prealign.lexicon.encode import EncodedCorpus, candidate_grid
from prealign.lexicon.executor import Executor, LocalExecutor
from prealign.lexicon.hmm import BACKWARD, FORWARD, Chunk, Counts, Params, estep, make_chunk
from prealign.lexicon.symmetrize import link_keys

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltinConfig:
    """Training schedule and model options of the built-in aligner."""

    ibm1_iterations: int = 5
    hmm_iterations: int = 5
    agreement: bool = True
    p0: float = 0.2
    max_jump: int = 30
    jump_smoothing: float = 0.5
    null_smoothing: float = 1.0
    chunk_sentences: int = 16384
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.ibm1_iterations < 1 or self.hmm_iterations < 0:
            raise ValueError("need at least one Model 1 iteration and zero or more HMM iterations")
        if not 0.0 <= self.p0 < 1.0:
            raise ValueError(f"p0 must be in [0, 1), not {self.p0}")
        if self.chunk_sentences < 1 or self.max_jump < 1:
            raise ValueError("chunk_sentences and max_jump must be positive")


@dataclass
class Model:
    """Trained parameters of both directions."""

    forward: Params
    backward: Params


def _chunk_counts(chunk: Chunk, fwd: Params, bwd: Params, agreement: bool) -> tuple[Counts, Counts]:
    torch.set_num_threads(1)
    counts = (estep(chunk, FORWARD, fwd), estep(chunk, BACKWARD, bwd))
    if agreement:
        joint = counts[0].posterior * counts[1].posterior
        paired = np.bincount(chunk.cand_local[:-1], weights=joint, minlength=len(chunk.pairs))
        for c in counts:
            c.pairs = paired
    for c in counts:
        c.posterior = None
    return counts


def _chunk_links(chunk: Chunk, corpus: EncodedCorpus, model: Model, threshold: float) -> tuple[np.ndarray, ...]:
    """Both directions' decoded links of one chunk, as corpus link keys."""
    torch.set_num_threads(1)
    s0, s1 = chunk.start, chunk.stop
    src_off = corpus.src_offsets[s0 : s1 + 1] - corpus.src_offsets[s0]
    tgt_off = corpus.tgt_offsets[s0 : s1 + 1] - corpus.tgt_offsets[s0]
    _, sent, i, j = candidate_grid(src_off, tgt_off)
    out = []
    for direction, params in ((FORWARD, model.forward), (BACKWARD, model.backward)):
        slots = estep(chunk, direction, params, decode=threshold).best
        out.append(np.sort(link_keys(sent[slots] + s0, i[slots], j[slots])))
    return tuple(out)


def _normalise(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    totals = np.bincount(groups, weights=values, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = values / totals[groups]
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _mstep(
    corpus: EncodedCorpus,
    chunk_pairs: list[np.ndarray],
    results: list[tuple[Counts, Counts]],
    direction: int,
    old: Params,
    config: BuiltinConfig,
    hmm: bool,
) -> Params:
    pair_counts = np.zeros(corpus.n_pairs, dtype=np.float64)
    null = np.zeros(len(old.t_null), dtype=np.float64)
    jump = np.zeros(2 * config.max_jump + 1)
    for pairs, res in zip(chunk_pairs, results, strict=False):
        c = res[direction]
        pair_counts[pairs] += c.pairs
        null += c.null
        jump += c.jump
    if direction == FORWARD:
        t = _normalise(pair_counts, corpus.pair_src, len(corpus.src_vocab))
    else:
        t = _normalise(pair_counts, corpus.pair_tgt, len(corpus.tgt_vocab))
    null += config.null_smoothing
    t_null = (null / null.sum()).astype(np.float32)
    if not hmm:
        return Params(t, t_null, old.jump, old.p0, old.max_jump)
    jump += config.jump_smoothing
    return Params(t, t_null, (jump / jump.sum()).astype(np.float32), old.p0, old.max_jump)


def _initial(corpus: EncodedCorpus, direction: int, config: BuiltinConfig) -> Params:
    v_obs = max(len(corpus.tgt_vocab) if direction == FORWARD else len(corpus.src_vocab), 1)
    t = np.full(corpus.n_pairs, 1.0 / v_obs, dtype=np.float32)
    t_null = np.full(v_obs, 1.0 / v_obs, dtype=np.float32)
    return Params(t, t_null, None, config.p0, config.max_jump)


def _initial_jump(max_jump: int) -> np.ndarray:
    """A start that prefers monotone steps: exp(-|d - 1| / 2)."""
    d = np.arange(-max_jump, max_jump + 1)
    j = np.exp(-0.5 * np.abs(d - 1))
    return (j / j.sum()).astype(np.float32)


def chunk_bounds(n_sentences: int, chunk_sentences: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_sentences, n_sentences)) for s in range(0, n_sentences, chunk_sentences)]


def train_and_align(
    corpus: EncodedCorpus,
    config: BuiltinConfig = BuiltinConfig(),
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> tuple[Model, list[Any]]:
    """Train both directions, then decode: the model and, per chunk, a handle to (forward, backward) keys."""
    ex = executor or LocalExecutor()
    corpus_h = ex.put(corpus)
    bounds = chunk_bounds(corpus.n_sentences, config.chunk_sentences)
    chunk_hs = ex.map_handles(make_chunk, [(corpus_h, s0, s1) for s0, s1 in bounds])
    chunk_pairs = ex.map(_chunk_pairs, [(h,) for h in chunk_hs])
    fwd, bwd = _initial(corpus, FORWARD, config), _initial(corpus, BACKWARD, config)
    schedule = ["Model 1"] * config.ibm1_iterations + ["HMM"] * config.hmm_iterations
    for it, stage in enumerate(schedule):
        hmm = stage == "HMM"
        if hmm and fwd.jump is None:
            for p in (fwd, bwd):
                p.jump = _initial_jump(config.max_jump)
        agree = config.agreement and it > 0
        fwd_h, bwd_h = ex.put(fwd), ex.put(bwd)
        results = ex.map(_chunk_counts, [(h, fwd_h, bwd_h, agree) for h in chunk_hs])
        fwd = _mstep(corpus, chunk_pairs, results, FORWARD, fwd, config, hmm)
        bwd = _mstep(corpus, chunk_pairs, results, BACKWARD, bwd, config, hmm)
        if progress is not None:
            progress(f"{stage} iteration {it + 1}/{len(schedule)}")
    model = Model(fwd, bwd)
    model_h = ex.put(model)
    links = ex.map_handles(_chunk_links, [(h, corpus_h, model_h, config.threshold) for h in chunk_hs])
    return model, links


def _chunk_pairs(chunk: Chunk) -> np.ndarray:
    return chunk.pairs
