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
    """The 2K x 2K transition matrix, the initial distribution, and the jump-bin index of each (i', i)."""
    d = np.arange(k)[None, :] - np.arange(k)[:, None]
    bins = np.clip(d, -params.max_jump, params.max_jump) + params.max_jump
    jump = params.jump[bins].astype(np.float64)
    real = jump / jump.sum(axis=1, keepdims=True) * (1.0 - params.p0)
    eye = np.eye(k) * params.p0
    a = np.block([[real, eye], [real, eye]])
    first = params.jump[np.clip(np.arange(k) + 1, -params.max_jump, params.max_jump) + params.max_jump]
    first = first / first.sum() * (1.0 - params.p0)
    pi = np.concatenate([first, np.full(k, params.p0 / k)])
    return torch.from_numpy(a.astype(np.float32)), torch.from_numpy(pi.astype(np.float32)), bins


def estep(chunk: Chunk, direction: int, params: Params, posterior: bool = False) -> Counts:
    """Expected counts (and optionally link posteriors) for one chunk and direction."""
    local_t = np.empty(len(chunk.pairs) + 1, dtype=np.float32)
    local_t[:-1] = np.maximum(params.t[chunk.pairs], _FLOOR)
    local_t[-1] = 1.0
    t_cand = torch.from_numpy(local_t[chunk.cand_local])
    t_null = torch.from_numpy(np.maximum(params.t_null, _FLOOR).astype(np.float32))
    n_jump = 2 * params.max_jump + 1
    pair_counts = np.zeros(len(chunk.pairs) + 1, dtype=np.float64)
    null_counts = np.zeros(len(params.t_null), dtype=np.float64)
    jump_counts = np.zeros(n_jump, dtype=np.float64)
    to_null = transitions = loglik = 0.0
    post = np.zeros(chunk.n_candidates + 1, dtype=np.float32) if posterior else None
    hmm = params.jump is not None
    for batch in chunk.batches[direction]:
        k = batch.k
        cidx = torch.from_numpy(batch.cidx).long()
        mask = torch.from_numpy(batch.mask)
        emit = t_cand[cidx]  # [B, T, K]
        emit_null = t_null[torch.from_numpy(batch.obs).long()]  # [B, T]
        if not hmm:
            total = emit.sum(-1) + emit_null
            gamma = emit / total[..., None]
            gamma_null = emit_null / total
            loglik += float(torch.log(total[mask]).sum())
        else:
            gamma, gamma_null, stats = _forward_backward(params, k, emit, emit_null, mask)
            jump_counts += stats[0]
            to_null += stats[1]
            transitions += stats[2]
            loglik += stats[3]
        gamma = gamma * mask[..., None]
        gamma_null = gamma_null * mask
        flat_c = batch.cidx.reshape(-1)
        g = gamma.reshape(-1).numpy().astype(np.float64)
        pair_counts += np.bincount(chunk.cand_local[flat_c], weights=g, minlength=len(pair_counts))
        null_counts += np.bincount(
            batch.obs.reshape(-1), weights=gamma_null.reshape(-1).numpy(), minlength=len(null_counts)
        )
        if post is not None:
            post[flat_c] = gamma.reshape(-1).numpy()
    return Counts(
        pairs=pair_counts[:-1],
        null=null_counts,
        jump=jump_counts,
        to_null=to_null,
        transitions=transitions,
        loglik=loglik,
        posterior=None if post is None else post[:-1],
    )


def _forward_backward(
    params: Params, k: int, emit: torch.Tensor, emit_null: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[np.ndarray, float, float, float]]:
    """Scaled forward-backward for a batch sharing K states; returns posteriors and transition counts."""
    a_mat, pi, bins = transition_matrix(params, k)
    b_size, t_max, _ = emit.shape
    full = torch.cat([emit, emit_null[..., None].expand(-1, -1, k)], dim=-1)
    full = torch.where(mask[..., None], full, torch.ones(()))
    alpha = torch.empty(b_size, t_max, 2 * k)
    scale = torch.empty(b_size, t_max)
    cur = pi[None, :] * full[:, 0]
    scale[:, 0] = cur.sum(-1)
    alpha[:, 0] = cur / scale[:, 0, None]
    for t in range(1, t_max):
        cur = (alpha[:, t - 1] @ a_mat) * full[:, t]
        scale[:, t] = cur.sum(-1)
        alpha[:, t] = cur / scale[:, t, None]
    beta = torch.empty_like(alpha)
    beta[:, t_max - 1] = 1.0
    a_t = a_mat.T.contiguous()
    weighted = torch.empty_like(alpha)  # emission * beta / scale, the right factor of xi
    for t in range(t_max - 1, 0, -1):
        weighted[:, t] = full[:, t] * beta[:, t] / scale[:, t, None]
        beta[:, t - 1] = weighted[:, t] @ a_t
    gamma = alpha * beta
    loglik = float(torch.log(scale[mask]).sum())
    # transition counts: xi(i', i) = alpha[t-1, i'] * A[i', i] * weighted[t, i], summed over batch and t
    stats_jump = np.zeros(2 * params.max_jump + 1)
    if t_max > 1:
        w = weighted[:, 1:] * mask[:, 1:, None]
        s = alpha[:, :-1].reshape(-1, 2 * k).T @ w.reshape(-1, 2 * k)
        xi = (s * a_mat).double().numpy()
        real = xi[:k, :k] + xi[k:, :k]
        stats_jump += np.bincount(bins.reshape(-1), weights=real.reshape(-1), minlength=len(stats_jump))
        to_null = float(np.trace(xi[:k, k:]) + np.trace(xi[k:, k:]))
        transitions = float(xi.sum())
    else:
        to_null = transitions = 0.0
    first = (gamma[:, 0] * mask[:, 0, None]).double().numpy().sum(axis=0)
    first_bins = np.clip(np.arange(k) + 1, -params.max_jump, params.max_jump) + params.max_jump
    stats_jump += np.bincount(first_bins, weights=first[:k], minlength=len(stats_jump))
    to_null += float(first[k:].sum())
    transitions += float(mask[:, 0].sum())
    real_post = gamma[..., :k]
    null_post = gamma[..., k:].sum(-1)
    return real_post, null_post, (stats_jump, to_null, transitions, loglik)
