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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from prealign.lexicon.encode import EncodedCorpus

FORWARD, BACKWARD = 0, 1  # forward: states are source words, target words observed; backward: the reverse
_BATCH_ELEMENTS = 1 << 18  # padded B * T * K per batch
_FLOOR = 1e-12


@dataclass
class Batch:
    """Sentences sharing K hidden states, observations padded to T."""

    k: int
    cidx: np.ndarray  # int32 [B, T, K] chunk-local candidate index; padding points at the sentinel
    obs: np.ndarray  # int32 [B, T] observed word id; padding is 0 (masked)
    mask: np.ndarray  # bool [B, T]


@dataclass
class Chunk:
    """A fixed range of sentences, prepared for both directions."""

    start: int
    stop: int
    cand_start: int
    pairs: np.ndarray  # int32 global pair id of each chunk-local pair index
    cand_local: np.ndarray  # int32 chunk-local pair index of each candidate (+ a sentinel at the end)
    batches: tuple[list[Batch], list[Batch]] = field(default_factory=lambda: ([], []))

    @property
    def n_candidates(self) -> int:
        return len(self.cand_local) - 1


@dataclass
class Params:
    """One direction's parameters: translation table over pair ids, empty-word table, jumps, p0."""

    t: np.ndarray  # float32 [n_pairs]: p(obs | state word) for each pair id
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
    to_null: float
    transitions: float
    loglik: float
    posterior: np.ndarray | None = None  # float32 [chunk candidates] p(link) per grid slot


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


def make_chunk(corpus: EncodedCorpus, start: int, stop: int) -> Chunk:
    """Prepare sentences [start, stop) of the corpus for both directions."""
    c0, c1 = int(corpus.cand_offsets[start]), int(corpus.cand_offsets[stop])
    enc = pc.dictionary_encode(pa.array(corpus.cand_pair[c0:c1]))
    cand_local = np.empty(c1 - c0 + 1, dtype=np.int32)
    cand_local[:-1] = enc.indices.to_numpy(zero_copy_only=False)
    pairs = enc.dictionary.to_numpy().astype(np.int32)
    cand_local[-1] = len(pairs)  # sentinel pair index, whose probability is 1
    chunk = Chunk(start, stop, c0, pairs, cand_local)
    src_len = corpus.src_lengths[start:stop]
    tgt_len = corpus.tgt_lengths[start:stop]
    off = corpus.cand_offsets[start:stop] - c0
    sentinel = c1 - c0
    for direction in (FORWARD, BACKWARD):
        k_len, t_len = (src_len, tgt_len) if direction == FORWARD else (tgt_len, src_len)
        obs_ids, obs_off = (
            (corpus.tgt_ids, corpus.tgt_offsets[start:stop])
            if direction == FORWARD
            else (corpus.src_ids, corpus.src_offsets[start:stop])
        )
        for k, rows in _group_batches(k_len, t_len):
            tl = t_len[rows]
            t_max = int(tl.max()) if len(rows) else 0
            if t_max == 0:
                continue
            tt = np.arange(t_max)
            kk = np.arange(k)
            mask = tt[None, :] < tl[:, None]
            width = tgt_len[rows][:, None, None]
            if direction == FORWARD:  # state i, observation j: slot i * J + j
                cidx = off[rows][:, None, None] + kk[None, None, :] * width + tt[None, :, None]
            else:  # state j, observation i
                cidx = off[rows][:, None, None] + tt[None, :, None] * width + kk[None, None, :]
            cidx = np.where(mask[:, :, None], cidx, sentinel).astype(np.int32)
            pos = np.minimum(obs_off[rows][:, None] + tt[None, :], len(obs_ids) - 1)
            obs = np.where(mask, obs_ids[pos], 0).astype(np.int32)
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


def estep(chunk: Chunk, direction: int, params: Params) -> Counts:
    """Expected counts and link posteriors for one chunk and direction."""
    local_t = np.empty(len(chunk.pairs) + 1, dtype=np.float32)
    local_t[:-1] = np.maximum(params.t[chunk.pairs], _FLOOR)
    local_t[-1] = 1.0
    t_cand = torch.from_numpy(local_t[chunk.cand_local])
    t_null = torch.from_numpy(np.maximum(params.t_null, _FLOOR).astype(np.float32))
    null_counts = np.zeros(len(params.t_null), dtype=np.float64)
    jump_counts = np.zeros(2 * params.max_jump + 1, dtype=np.float64)
    to_null = transitions = loglik = 0.0
    post = torch.zeros(chunk.n_candidates + 1, dtype=torch.float32)
    for batch in chunk.batches[direction]:
        cidx = torch.from_numpy(batch.cidx)
        mask = torch.from_numpy(batch.mask)
        obs = torch.from_numpy(batch.obs)
        emit = t_cand[cidx]  # [B, T, K]
        emit_null = t_null[obs]  # [B, T]
        if params.jump is None:
            total = emit.sum(-1) + emit_null
            gamma = emit / total[..., None]
            gamma_null = emit_null / total
            loglik += float(torch.log(total[mask]).sum())
        else:
            gamma, gamma_null, stats = _forward_backward(params, batch.k, emit, emit_null, mask)
            jump_counts += stats[0]
            to_null += stats[1]
            transitions += stats[2]
            loglik += stats[3]
        post[cidx] = gamma  # padded slots all write the sentinel, dropped below
        gamma_null = (gamma_null * mask).reshape(-1).numpy()
        null_counts += np.bincount(batch.obs.reshape(-1), weights=gamma_null, minlength=len(null_counts))
    post_np = post.numpy()[:-1]
    pair_counts = np.bincount(chunk.cand_local[:-1], weights=post_np, minlength=len(chunk.pairs))
    return Counts(pair_counts, null_counts, jump_counts, to_null, transitions, loglik, post_np)


def _forward_backward(
    params: Params, k: int, emit: torch.Tensor, emit_null: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, float, float, float]]:
    """Scaled forward-backward for a batch sharing K real states.

    Rows of the 2K x 2K transition matrix for real i' and for "empty, remembering i'" are equal, so the
    recursions run on K-vectors: the position distribution s = alpha_real + alpha_empty moves by R, and
    the backward vector is shared by both kinds of state.
    """
    r_mat, first, bins = transition_matrix(params, k)
    p0 = params.p0
    b_size, t_max, _ = emit.shape
    emit = torch.where(mask[..., None], emit, 1.0)
    emit_null = torch.where(mask, emit_null, 1.0)
    alpha = torch.empty(b_size, t_max, k)
    alpha_null = torch.empty(b_size, t_max, k)
    scale = torch.empty(b_size, t_max)
    real = first[None, :] * emit[:, 0]
    null = (p0 / k) * emit_null[:, 0, None].expand(-1, k)
    scale[:, 0] = real.sum(-1) + p0 * emit_null[:, 0]
    alpha[:, 0] = real / scale[:, 0, None]
    alpha_null[:, 0] = null / scale[:, 0, None]
    for t in range(1, t_max):
        pos = alpha[:, t - 1] + alpha_null[:, t - 1]
        real = (pos @ r_mat) * emit[:, t]
        sc = real.sum(-1) + p0 * emit_null[:, t]
        scale[:, t] = sc
        alpha[:, t] = real / sc[:, None]
        alpha_null[:, t] = pos * (p0 * emit_null[:, t] / sc)[:, None]
    beta = torch.empty(b_size, t_max, k)
    beta[:, t_max - 1] = 1.0
    w_real = torch.empty(b_size, t_max, k)  # emission * beta / scale: the right factor of the expected transitions
    w_null = torch.empty(b_size, t_max, k)
    r_t = r_mat.T.contiguous()
    for t in range(t_max - 1, 0, -1):
        inv = 1.0 / scale[:, t, None]
        w_real[:, t] = emit[:, t] * beta[:, t] * inv
        w_null[:, t] = beta[:, t] * (emit_null[:, t, None] * inv)
        beta[:, t - 1] = w_real[:, t] @ r_t + p0 * w_null[:, t]
    gamma = alpha * beta
    gamma_null = (alpha_null * beta).sum(-1)
    loglik = float(torch.log(scale[mask]).sum())
    jump = np.zeros(2 * params.max_jump + 1)
    to_null = transitions = 0.0
    if t_max > 1:
        m = mask[:, 1:, None]
        pos = (alpha[:, :-1] + alpha_null[:, :-1]).reshape(-1, k)
        s = pos.T @ (w_real[:, 1:] * m).reshape(-1, k)
        real_xi = (s * r_mat).double().numpy()
        jump += np.bincount(bins.reshape(-1), weights=real_xi.reshape(-1), minlength=len(jump))
        to_null = float(p0 * (pos * (w_null[:, 1:] * m).reshape(-1, k)).double().sum())
        transitions = float(real_xi.sum()) + to_null
    start = (gamma[:, 0] * mask[:, 0, None]).double().numpy().sum(axis=0)
    first_bins = np.clip(np.arange(k) + 1, -params.max_jump, params.max_jump) + params.max_jump
    jump += np.bincount(first_bins, weights=start, minlength=len(jump))
    to_null += float((gamma_null[:, 0] * mask[:, 0]).sum())
    transitions += float(mask[:, 0].sum())
    return gamma, gamma_null, (jump, to_null, transitions, loglik)
