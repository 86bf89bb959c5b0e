"""The built-in aligner's EM, as pure steps: IBM Model 1 then an HMM, both directions, with agreement.

The caller owns the loop, where the chunks live and the checkpoint (``prealign.pipelines.em_stage``); this
module computes, without knowing how it is scheduled:

- :func:`estep`: one chunk's expected counts, both directions, from the parameters of the chunk's own pairs;
- :func:`mstep_table`: the translation table of a set of pairs from their summed counts (one shard of the
  pairs, or all of them): ``t(obs | state) = count / sum over the pairs of the same state word``. Pairs are
  int64 keys ``state word << 32 | observed word`` sorted ascending, so one state word's pairs are adjacent and
  a shard made of whole state words normalises on its own;
- :func:`mstep_globals`: the empty-word table and the jump distribution from their summed counts;
- :func:`decode`: one chunk's links in both directions;
- :func:`save_params` / :func:`load_params`: the small parameters (empty word, jumps) as a file.

Every sum over chunks is made by the caller in chunk order, so the result does not depend on how many workers
computed what. With ``agreement`` on, the translation counts of both directions come from the product of the
two directions' link posteriors (Liang, Taskar & Klein 2006, "Alignment by Agreement"). Links are decoded by
posterior: every word links to its most probable counterpart when that beats the empty word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from prealign.arrays import join_offsets
from prealign.lexicon.encode import candidate_grid
from prealign.lexicon.hmm import BACKWARD, FORWARD, Chunk, Params
from prealign.lexicon.hmm import estep as _hmm_estep
from prealign.lexicon.symmetrize import link_keys


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

    @property
    def schedule(self) -> list[str]:
        """The model trained at each iteration."""
        return ["Model 1"] * self.ibm1_iterations + ["HMM"] * self.hmm_iterations


@dataclass
class Globals:
    """The parameters every chunk shares, per direction: the empty-word table and the jumps (None: Model 1)."""

    t_null: tuple[np.ndarray, np.ndarray]  # float32 [V_obs] of each direction
    jump: tuple[np.ndarray, np.ndarray] | None  # float32 [2 * max_jump + 1] of each direction


def initial_globals(n_src: int, n_tgt: int) -> Globals:
    """Uniform empty-word tables (forward observes target words, backward source words)."""
    return Globals(tuple(np.full(max(v, 1), 1.0 / max(v, 1), np.float32) for v in (n_tgt, n_src)), None)


def initial_table(n_pairs: int, n_obs: int) -> np.ndarray:
    """A uniform translation table over ``n_pairs`` pairs: 1 / (observed vocabulary size)."""
    return np.full(n_pairs, 1.0 / max(n_obs, 1), dtype=np.float32)


def initial_jump(max_jump: int) -> np.ndarray:
    """A start that prefers monotone steps: exp(-|d - 1| / 2)."""
    d = np.arange(-max_jump, max_jump + 1)
    j = np.exp(-0.5 * np.abs(d - 1))
    return (j / j.sum()).astype(np.float32)


def with_jumps(globals_: Globals, config: BuiltinConfig) -> Globals:
    """``globals_`` ready for an HMM iteration: the initial jumps when Model 1 left none."""
    if globals_.jump is not None:
        return globals_
    return Globals(globals_.t_null, (initial_jump(config.max_jump), initial_jump(config.max_jump)))


def chunk_params(t: tuple[np.ndarray, np.ndarray], globals_: Globals, config: BuiltinConfig) -> tuple[Params, Params]:
    """Both directions' parameters for one chunk, from its pairs' translation probabilities (local order)."""
    return tuple(
        Params(
            t[d], globals_.t_null[d], None if globals_.jump is None else globals_.jump[d], config.p0, config.max_jump
        )
        for d in (FORWARD, BACKWARD)
    )


@dataclass
class ChunkCounts:
    """One chunk's expected counts, both directions: pair counts in local pair order, empty word, jumps."""

    pairs: tuple[np.ndarray, np.ndarray]  # float64 [chunk pairs]
    null: tuple[np.ndarray, np.ndarray]  # float64 [V_obs]
    jump: tuple[np.ndarray, np.ndarray]  # float64 [2 * max_jump + 1]


def estep(chunk: Chunk, params: tuple[Params, Params], agreement: bool) -> ChunkCounts:
    """Expected counts of one chunk in both directions (``params``: forward, backward, over its pairs)."""
    torch.set_num_threads(1)
    fwd, bwd = (_hmm_estep(chunk, d, params[d]) for d in (FORWARD, BACKWARD))
    pairs = (fwd.pairs, bwd.pairs)
    if agreement:
        joint = fwd.posterior * bwd.posterior
        paired = np.bincount(chunk.cand_local[:-1], weights=joint, minlength=len(chunk.pairs))
        pairs = (paired, paired)
    return ChunkCounts(pairs, (fwd.null, bwd.null), (fwd.jump, bwd.jump))


def mstep_table(keys: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Translation probabilities (float32) of the pairs ``keys`` (sorted, distinct, state word in the high 32
    bits) from their summed counts: each state word's counts divided by their sum, in key order; 0 where a
    state word's counts are all 0."""
    if len(keys) == 0:
        return np.zeros(0, np.float32)
    group = keys >> 32
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    index = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(keys))))
    sums = np.bincount(index, weights=totals, minlength=len(starts))[index]
    out = np.zeros(len(totals), dtype=np.float64)
    np.divide(totals, sums, out=out, where=sums != 0)
    return out.astype(np.float32)


def mstep_globals(
    null: tuple[np.ndarray, np.ndarray], jump: tuple[np.ndarray, np.ndarray], config: BuiltinConfig, hmm: bool
) -> Globals:
    """The empty-word tables (and after an HMM iteration, the jumps) from the counts summed over chunks."""
    smoothed = [n + config.null_smoothing for n in null]
    t_null = tuple((n / n.sum()).astype(np.float32) for n in smoothed)
    if not hmm:
        return Globals(t_null, None)
    jumps = [j + config.jump_smoothing for j in jump]
    return Globals(t_null, tuple((j / j.sum()).astype(np.float32) for j in jumps))


def decode(chunk: Chunk, sentences: SentenceArrays, params: tuple[Params, Params], config: BuiltinConfig):
    """Both directions' links of one chunk as link keys (sentences numbered from ``sentences.first``)."""
    torch.set_num_threads(1)
    _, sent, i, j = candidate_grid(sentences.src_offsets, sentences.tgt_offsets)
    out = []
    for d in (FORWARD, BACKWARD):
        slots = _hmm_estep(chunk, d, params[d], decode=config.threshold).best
        out.append(np.sort(link_keys(sent[slots] + sentences.first, i[slots], j[slots])))
    return tuple(out)


@dataclass
class SentenceArrays:
    """A run of sentence pairs as word ids: flat ids with per-sentence offsets (from 0), numbered from ``first``."""

    src_ids: np.ndarray  # int32
    src_offsets: np.ndarray  # int64, n + 1
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    first: int = 0

    @property
    def n_sentences(self) -> int:
        return len(self.src_offsets) - 1


def concat_sentences(parts: Sequence[SentenceArrays], first: int | None = None) -> SentenceArrays:
    """Runs of sentences in order, as one, numbered from ``first`` (default: the first part's)."""

    empty = np.zeros(0, np.int32)
    return SentenceArrays(
        np.concatenate([p.src_ids for p in parts] or [empty]),
        join_offsets([np.asarray(p.src_offsets, dtype=np.int64) for p in parts]),
        np.concatenate([p.tgt_ids for p in parts] or [empty]),
        join_offsets([np.asarray(p.tgt_offsets, dtype=np.int64) for p in parts]),
        first if first is not None else (parts[0].first if parts else 0),
    )


def save_params(fh: BinaryIO, globals_: Globals) -> None:
    """Write the shared parameters to ``fh`` as an .npz (the caller makes the write atomic)."""
    arrays = {"null_fwd": globals_.t_null[0], "null_bwd": globals_.t_null[1]}
    if globals_.jump is not None:
        arrays.update(jump_fwd=globals_.jump[0], jump_bwd=globals_.jump[1])
    np.savez(fh, **arrays)


def load_params(path: Path) -> Globals:
    with np.load(path) as z:
        jump = (z["jump_fwd"], z["jump_bwd"]) if "jump_fwd" in z else None
        return Globals((z["null_fwd"], z["null_bwd"]), jump)
