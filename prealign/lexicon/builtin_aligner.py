"""The built-in statistical word aligner: IBM Model 1 then an HMM, both directions, trained by EM.

Training runs over fixed-size chunks of sentences. ``map_fn`` runs a function over a list of argument
tuples and returns the results in order: the builtin ``map`` (one process) by default, a Ray map in
``prealign.pipelines``. Counts are summed in chunk order, so results do not depend on the number of workers.

With ``agreement`` on, the translation counts of both directions come from the product of the two
directions' link posteriors (Liang, Taskar & Klein 2006, "Alignment by Agreement"), which pushes both
models towards links they agree on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prealign.lexicon.encode import EncodedCorpus
from prealign.lexicon.hmm import BACKWARD, FORWARD, Chunk, Counts, Params, estep, make_chunk

MapFn = Callable[[Callable[..., Any], Sequence[tuple]], Iterable[Any]]


def local_map(func: Callable[..., Any], args: Sequence[tuple]) -> list[Any]:
    """Run ``func(*a)`` for each argument tuple in this process."""
    return [func(*a) for a in args]


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
    chunk_sentences: int = 8192
    threshold: float = 0.0  # minimum posterior of a directional link


@dataclass
class Model:
    """Trained parameters of both directions and the chunks they were trained on."""

    forward: Params
    backward: Params
    chunks: list[Chunk]


def make_chunks(corpus: EncodedCorpus, chunk_sentences: int, map_fn: MapFn = local_map) -> list[Chunk]:
    n = corpus.n_sentences
    bounds = [(corpus, s, min(s + chunk_sentences, n)) for s in range(0, n, chunk_sentences)]
    return list(map_fn(make_chunk, bounds))


def _chunk_estep(chunk: Chunk, fwd: Params, bwd: Params, agreement: bool, posterior: bool) -> list[Counts]:
    torch.set_num_threads(1)
    counts = [estep(chunk, FORWARD, fwd), estep(chunk, BACKWARD, bwd)]
    if agreement:
        joint = counts[0].posterior * counts[1].posterior
        paired = np.bincount(chunk.cand_local[:-1], weights=joint, minlength=len(chunk.pairs))
        for c in counts:
            c.pairs = paired
    if not posterior:
        for c in counts:
            c.posterior = None
    return counts


def _normalise(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    totals = np.bincount(groups, weights=values, minlength=n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = values / totals[groups]
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _mstep(
    corpus: EncodedCorpus, chunks: list[Chunk], results: list[list[Counts]], direction: int, old: Params,
    config: BuiltinConfig, hmm: bool,
) -> Params:
    pair_counts = np.zeros(corpus.n_pairs, dtype=np.float64)
    null = np.zeros_like(old.t_null, dtype=np.float64)
    jump = np.zeros(2 * config.max_jump + 1)
    to_null = transitions = 0.0
    for chunk, res in zip(chunks, results):
        c = res[direction]
        pair_counts[chunk.pairs] += c.pairs
        null += c.null
        jump += c.jump
        to_null += c.to_null
        transitions += c.transitions
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
    v_obs = len(corpus.tgt_vocab) if direction == FORWARD else len(corpus.src_vocab)
    t = np.full(corpus.n_pairs, 1.0 / max(v_obs, 1), dtype=np.float32)
    t_null = np.full(v_obs, 1.0 / max(v_obs, 1), dtype=np.float32)
    return Params(t, t_null, None, config.p0, config.max_jump)


def _initial_jump(max_jump: int) -> np.ndarray:
    d = np.arange(-max_jump, max_jump + 1)
    j = np.exp(-0.5 * np.abs(d - 1)).astype(np.float32)
    return j / j.sum()


def train(
    corpus: EncodedCorpus,
    config: BuiltinConfig = BuiltinConfig(),
    map_fn: MapFn = local_map,
    progress: Callable[[str, float], None] | None = None,
) -> Model:
    """Train Model 1 then the HMM in both directions; ``progress(stage, loglik)`` after each iteration."""
    chunks = make_chunks(corpus, config.chunk_sentences, map_fn)
    fwd, bwd = _initial(corpus, FORWARD, config), _initial(corpus, BACKWARD, config)
    schedule = ["ibm1"] * config.ibm1_iterations + ["hmm"] * config.hmm_iterations
    for it, stage in enumerate(schedule):
        hmm = stage == "hmm"
        if hmm and fwd.jump is None:
            for p in (fwd, bwd):
                p.jump = _initial_jump(config.max_jump)
        agree = config.agreement and it > 0
        results = list(map_fn(_chunk_estep, [(c, fwd, bwd, agree, False) for c in chunks]))
        fwd = _mstep(corpus, chunks, results, FORWARD, fwd, config, hmm)
        bwd = _mstep(corpus, chunks, results, BACKWARD, bwd, config, hmm)
        if progress is not None:
            progress(f"{stage} {it + 1}/{len(schedule)}", sum(r[0].loglik + r[1].loglik for r in results))
    return Model(fwd, bwd, chunks)


def link_posteriors(model: Model, map_fn: MapFn = local_map) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of every candidate link (flat over the corpus grid) under each direction."""
    results = list(map_fn(_chunk_estep, [(c, model.forward, model.backward, False, True) for c in model.chunks]))
    fwd = np.concatenate([r[0].posterior for r in results]) if results else np.zeros(0, np.float32)
    bwd = np.concatenate([r[1].posterior for r in results]) if results else np.zeros(0, np.float32)
    return fwd, bwd
