"""Batched E-steps of IBM Model 1 and the HMM alignment model, over chunks of an encoded corpus.

A *chunk* is a fixed range of sentences. Inside it, sentences are grouped by the length of the side that
supplies the hidden states, so that every batch shares one transition matrix and the forward-backward
recursion is a batched matrix product per observed position. Expected counts are returned per chunk and
summed by the caller in chunk order, which makes training independent of how many workers run the chunks.

The HMM follows Vogel et al. (1996) with Och & Ney's empty word: 2K states for K source words, state
K + i being "empty, last real position i". Transitions depend only on the jump width i - i'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from prealign.lexicon.encode import candidate_grid

if TYPE_CHECKING:
    from prealign.lexicon.em import SentenceArrays

FORWARD, BACKWARD = 0, 1  # forward: states are source words, target words observed; backward: the reverse
_BATCH_ELEMENTS = 1 << 18  # padded B * T * K per batch
_FLOOR = 1e-12


@dataclass
class Batch:
    """Sentences sharing K hidden states, observations padded to T; arrays are time-major.

    Padding points at sentinels whose probability is 1 (the chunk's last pair index, the observed vocabulary
    size), so padded steps leave the recursions unchanged; ``mask`` removes them from the counts.
    """

    k: int
    cidx: np.ndarray  # int32 [T, B, K] chunk-local candidate index (sentinel: n_candidates)
    obs: np.ndarray  # int32 [T, B] observed word id (sentinel: observed vocabulary size)
    mask: np.ndarray  # bool [T, B]


@dataclass
class Chunk:
    """A run of sentences, prepared for both directions."""

    pairs: np.ndarray  # int64 sorted keys (source word << 32 | target word) of the chunk's pairs
    cand_local: np.ndarray  # int32 chunk-local pair index of each candidate (+ a sentinel at the end)
    batches: tuple[list[Batch], list[Batch]] = field(default_factory=lambda: ([], []))

    @property
    def n_candidates(self) -> int:
        return len(self.cand_local) - 1


@dataclass
class Params:
    """One direction's parameters for one chunk: translation table over its pairs, empty word, jumps, p0."""

    t: np.ndarray  # float32 [chunk pairs]: p(obs | state word) of each chunk-local pair
    t_null: np.ndarray  # float32 [V_obs]: p(obs | empty)
    jump: np.ndarray | None  # float32 [2 * max_jump + 1] over d = i - i' (clipped), None for Model 1
    p0: float
    max_jump: int


@dataclass
class Counts:
    """Expected counts from one chunk and one direction."""

    pairs: np.ndarray  # float64 [chunk pairs]
    null: np.ndarray  # float64 [V_obs]
    jump: np.ndarray  # float64 [2 * max_jump + 1]
    posterior: np.ndarray | None = None  # float32 [chunk candidates] p(link) per grid slot
    best: np.ndarray | None = None  # int64 chunk-local grid slots of the decoded links (with ``decode``)


def _group_batches(lens_state: np.ndarray, lens_obs: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Sentence indices (chunk-local) grouped by state length, sorted by obs length, split by size."""
    out = []
    order = np.lexsort((lens_obs, lens_state))
    ks = lens_state[order]
    bounds = np.flatnonzero(np.diff(ks)) + 1
    for group in np.split(order, bounds):
        if len(group) == 0 or lens_state[group[0]] == 0:
            continue
        k = int(lens_state[group[0]])
        start = 0
        while start < len(group):
            stop = start + 1
            while stop < len(group) and (stop - start + 1) * int(lens_obs[group[stop]]) * k <= _BATCH_ELEMENTS:
                stop += 1
            out.append((k, group[start:stop]))
            start = stop
    return out


def make_chunk(sentences: SentenceArrays, n_src: int, n_tgt: int) -> Chunk:
    """Prepare a run of sentence pairs (word ids of vocabularies of ``n_src`` and ``n_tgt`` words) for both
    directions. The chunk's pairs are the distinct ``source word << 32 | target word`` keys of its candidate
    links, sorted."""
    src_off, tgt_off = sentences.src_offsets, sentences.tgt_offsets
    cand_offsets, sent, i, j = candidate_grid(src_off, tgt_off)
    keys = (sentences.src_ids[src_off[sent] + i].astype(np.int64) << 32) | sentences.tgt_ids[tgt_off[sent] + j]
    del sent, i, j
    encoded = pc.dictionary_encode(pa.array(keys))  # hashing, then a sort of the distinct keys only
    distinct = encoded.dictionary.to_numpy()
    order = np.argsort(distinct)
    pairs = distinct[order]
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    cand_local = np.empty(len(keys) + 1, dtype=np.int32)
    np.take(rank, encoded.indices.to_numpy(zero_copy_only=False), out=cand_local[:-1])
    cand_local[-1] = len(pairs)  # sentinel pair index, whose probability is 1
    start, stop, c0, c1 = 0, sentences.n_sentences, 0, len(keys)
    chunk = Chunk(pairs, cand_local)
    src_len, tgt_len = np.diff(src_off), np.diff(tgt_off)
    off = cand_offsets[start:stop] - c0
    sentinel = c1 - c0
    for direction in (FORWARD, BACKWARD):
        k_len, t_len = (src_len, tgt_len) if direction == FORWARD else (tgt_len, src_len)
        obs_ids, obs_off, obs_vocab = (
            (sentences.tgt_ids, tgt_off[start:stop], n_tgt)
            if direction == FORWARD
            else (sentences.src_ids, src_off[start:stop], n_src)
        )
        for k, rows in _group_batches(k_len, t_len):
            tl = t_len[rows]
            t_max = int(tl.max()) if len(rows) else 0
            if t_max == 0:
                continue
            tt = np.arange(t_max)[:, None, None]
            kk = np.arange(k)[None, None, :]
            mask = np.arange(t_max)[:, None] < tl[None, :]  # [T, B]
            width = tgt_len[rows][None, :, None]
            base = off[rows][None, :, None]
            # grid slot of (source i, target j) is i * J + j
            cidx = base + (kk * width + tt if direction == FORWARD else tt * width + kk)
            cidx = np.where(mask[:, :, None], cidx, sentinel).astype(np.int32)
            pos = np.minimum(obs_off[rows][None, :] + np.arange(t_max)[:, None], len(obs_ids) - 1)
            obs = np.where(mask, obs_ids[pos], obs_vocab).astype(np.int32)
            chunk.batches[direction].append(Batch(k, cidx, obs, mask))
    return chunk


def transition_matrix(params: Params, k: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The real-to-real transition block R (K x K, rows sum to 1 - p0), the initial distribution over real
    positions (sums to 1 - p0) and the jump-bin index of each (i', i).

    From real position i' (or the empty state remembering i') the chain moves to real i with R[i', i] and to
    the empty state remembering i' with p0.
    """
    d = np.arange(k)[None, :] - np.arange(k)[:, None]
    bins = np.clip(d, -params.max_jump, params.max_jump) + params.max_jump
    jump = params.jump[bins].astype(np.float64)
    real = jump / jump.sum(axis=1, keepdims=True) * (1.0 - params.p0)
    first = params.jump[np.clip(np.arange(k) + 1, -params.max_jump, params.max_jump) + params.max_jump]
    first = first / first.sum() * (1.0 - params.p0)
    return torch.from_numpy(real.astype(np.float32)), torch.from_numpy(first.astype(np.float32)), bins


def estep(chunk: Chunk, direction: int, params: Params, decode: float | None = None) -> Counts:
    """Expected counts and link posteriors for one chunk and direction.

    With ``decode`` (a threshold), also the links: each observed word's most probable state, where that is
    a real word (more probable than the empty word) with posterior at least the threshold.

    Gathers and scatters run in numpy (``np.take`` is several times faster than torch's advanced indexing
    here); the recursions run in torch.
    """
    local_t = np.empty(len(chunk.pairs) + 1, dtype=np.float32)
    np.maximum(params.t, _FLOOR, out=local_t[:-1])
    local_t[-1] = 1.0
    t_null = np.empty(len(params.t_null) + 1, dtype=np.float32)
    np.maximum(params.t_null, _FLOOR, out=t_null[:-1])
    t_null[-1] = 1.0
    null_counts = np.zeros(len(t_null), dtype=np.float64)
    jump_counts = np.zeros(2 * params.max_jump + 1, dtype=np.float64)
    post = np.zeros(chunk.n_candidates + 1, dtype=np.float32)
    best: list[np.ndarray] = []
    for batch in chunk.batches[direction]:
        mask = torch.from_numpy(batch.mask.copy())  # a private copy: object-store arrays are read-only
        emit = torch.from_numpy(np.take(local_t, np.take(chunk.cand_local, batch.cidx)))  # [T, B, K]
        emit_null = torch.from_numpy(np.take(t_null, batch.obs))  # [T, B]
        if params.jump is None:
            total = emit.sum(-1).add_(emit_null)
            inv = total.reciprocal()
            gamma = emit.mul_(inv[..., None])
            gamma_null = emit_null.mul_(inv)
        else:
            gamma, gamma_null, jump = _forward_backward(params, batch.k, emit, emit_null, mask)
            jump_counts += jump
        post[batch.cidx] = gamma.numpy()  # padded slots all write the sentinel, dropped below
        if decode is not None:
            top, arg = gamma.max(-1)
            keep = ((top > gamma_null) & (top >= decode) & (top > 0) & mask).numpy()
            slots = np.take_along_axis(batch.cidx, arg.numpy()[..., None], axis=-1)[..., 0]
            best.append(slots[keep].astype(np.int64))
        null_counts += np.bincount(batch.obs.reshape(-1), weights=gamma_null.numpy().reshape(-1), minlength=len(t_null))
    post_np = post[:-1]
    pair_counts = np.bincount(chunk.cand_local[:-1], weights=post_np, minlength=len(chunk.pairs))
    links = np.sort(np.concatenate(best)) if best else (np.zeros(0, np.int64) if decode is not None else None)
    return Counts(pair_counts, null_counts[:-1], jump_counts, post_np, links)


def _forward_backward(
    params: Params, k: int, emit: torch.Tensor, emit_null: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Scaled forward-backward for a batch sharing K real states (time-major tensors).

    Rows of the 2K x 2K transition matrix for real i' and for "empty, remembering i'" are equal, so the
    recursions run on K-vectors: the position distribution s = alpha_real + alpha_empty moves by R, the
    empty states' forward mass at t is s(t-1) times a per-sentence factor, and the backward vector is shared
    by both kinds of state. Padded steps have emission 1 and leave every vector unchanged.
    """
    r_mat, first, bins = transition_matrix(params, k)
    p0 = params.p0
    t_max, b_size, _ = emit.shape
    null_w = emit_null * p0  # [T, B]: p0 * p(obs | empty)
    alpha = torch.empty(t_max, b_size, k)
    pos = torch.empty(t_max, b_size, k)  # s(t) = alpha_real(t) + alpha_empty(t)
    scale = torch.empty(t_max, b_size)
    nu = torch.empty(t_max, b_size)  # alpha_empty(t) = s(t - 1) * nu(t) for t >= 1
    torch.mul(emit[0], first, out=alpha[0])
    torch.add(alpha[0].sum(-1), null_w[0], out=scale[0])
    inv = scale[0].reciprocal()
    alpha[0].mul_(inv[:, None])
    nu[0] = null_w[0] * inv / k  # at t = 0 the empty word's mass is spread evenly over the K memories
    torch.add(alpha[0], nu[0][:, None], out=pos[0])
    step = torch.empty(b_size, k)
    for t in range(1, t_max):
        torch.mm(pos[t - 1], r_mat, out=step)
        step.mul_(emit[t])
        torch.add(step.sum(-1), null_w[t], out=scale[t])
        inv = scale[t].reciprocal()
        torch.mul(step, inv[:, None], out=alpha[t])
        torch.mul(null_w[t], inv, out=nu[t])
        torch.addcmul(alpha[t], pos[t - 1], nu[t][:, None], out=pos[t])
    inv_scale = scale.reciprocal()
    emit_scaled = emit.mul_(inv_scale[..., None])  # emission / scale, in place: emit is not used again
    null_scaled = null_w.mul_(inv_scale)  # p0 * p(obs | empty) / scale
    beta = torch.empty(t_max, b_size, k)
    beta[t_max - 1] = 1.0
    r_t = r_mat.T.contiguous()
    for t in range(t_max - 1, 0, -1):
        torch.addmm(beta[t] * null_scaled[t][:, None], emit_scaled[t] * beta[t], r_t, out=beta[t - 1])
    gamma = alpha.mul_(beta)
    alpha_null = torch.empty(t_max, b_size, k)
    alpha_null[0] = nu[0][:, None]
    alpha_null[1:] = pos[:-1] * nu[1:, :, None]
    gamma_null = (alpha_null * beta).sum(-1)
    jump = np.zeros(2 * params.max_jump + 1)
    if t_max > 1:
        m = mask[1:, :, None]
        w_real = emit_scaled[1:] * beta[1:] * m  # emission * beta / scale: the right factor of xi
        s = pos[:-1].reshape(-1, k).T @ w_real.reshape(-1, k)
        real_xi = (s * r_mat).double().numpy()
        jump += np.bincount(bins.reshape(-1), weights=real_xi.reshape(-1), minlength=len(jump))
    start = (gamma[0] * mask[0, :, None]).double().numpy().sum(axis=0)
    first_bins = np.clip(np.arange(k) + 1, -params.max_jump, params.max_jump) + params.max_jump
    jump += np.bincount(first_bins, weights=start, minlength=len(jump))
    return gamma, gamma_null, jump
