"""Alignment extraction from subword similarity matrices, batched (torch).

Each function takes ``sim`` of shape ``(B, M, N)`` (or one ``(M, N)`` matrix) and ``valid`` of the same shape
(False on padding) and returns a boolean link matrix of that shape.

- ``argmax`` (SimAlign, Jalili Sabet et al. 2020): i and j are linked when j is i's most similar target and
  i is j's most similar source (mutual argmax).
- ``itermax`` (SimAlign): argmax, then again on the similarities reweighted by 0 where both words are
  already aligned, ``alpha`` where one is, 1 where neither is; the new mutual argmaxes are added (2 rounds).
  Expects similarities in [0, 1] (the caller maps cosine ``c`` to ``(c + 1) / 2``).
- ``match`` (SimAlign): a maximum-weight bipartite matching (Hungarian algorithm, scipy).
- ``softmax`` (awesome-align, Dou & Neubig 2021): softmax of the scores over the target side and over the
  source side; linked where both probabilities exceed ``threshold`` (1e-3).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Method = Literal["argmax", "itermax", "match", "softmax"]
METHODS = ("argmax", "itermax", "match", "softmax")
SIMALIGN_METHODS = ("argmax", "itermax", "match")


def _batched(sim: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None) -> tuple[torch.Tensor, ...]:
    sim = torch.as_tensor(sim, dtype=torch.float32)
    valid = torch.ones_like(sim, dtype=torch.bool) if valid is None else torch.as_tensor(valid, dtype=torch.bool)
    if sim.dim() == 2:
        sim, valid = sim.unsqueeze(0), valid.unsqueeze(0)
    return sim, valid


def _shaped(links: torch.Tensor, like: torch.Tensor | np.ndarray) -> torch.Tensor:
    return links[0] if like.ndim == 2 else links


def _mutual_argmax(sim: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    s = sim.masked_fill(~valid, float("-inf"))
    rows = torch.zeros_like(valid)
    rows.scatter_(2, s.argmax(dim=2, keepdim=True), True)  # each source's best target
    cols = torch.zeros_like(valid)
    cols.scatter_(1, s.argmax(dim=1, keepdim=True), True)  # each target's best source
    return rows & cols & valid


def argmax_links(sim: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """Mutual argmax."""
    s, v = _batched(sim, valid)
    return _shaped(_mutual_argmax(s, v), sim)


def itermax_links(
    sim: torch.Tensor | np.ndarray,
    valid: torch.Tensor | np.ndarray | None = None,
    rounds: int = 2,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Argmax repeated ``rounds`` times over the words that are not both aligned yet."""
    s, v = _batched(sim, valid)
    links = _mutual_argmax(s, v)
    for _ in range(rounds - 1):
        row_done = links.any(dim=2, keepdim=True)
        col_done = links.any(dim=1, keepdim=True)
        both, one = row_done & col_done, row_done ^ col_done
        weight = torch.where(both, 0.0, torch.where(one, alpha, 1.0))
        new = _mutual_argmax(s * weight, v & ~both)
        if not bool((new & ~links).any()):
            break
        links = links | new
    return _shaped(links, sim)


def match_links(sim: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """Maximum-weight bipartite matching of each matrix's valid block (which starts at row 0, column 0)."""
    from scipy.optimize import linear_sum_assignment

    s, v = _batched(sim, valid)
    links = torch.zeros_like(v)
    rows_n = v.any(dim=2).sum(dim=1).tolist()
    cols_n = v.any(dim=1).sum(dim=1).tolist()
    for b, (m, n) in enumerate(zip(rows_n, cols_n, strict=True)):
        if m and n:
            r, c = linear_sum_assignment(s[b, :m, :n].double().cpu().numpy(), maximize=True)
            links[b, torch.as_tensor(r), torch.as_tensor(c)] = True
    return _shaped(links & v, sim)


def softmax_links(
    scores: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None, threshold: float = 1e-3
) -> torch.Tensor:
    """awesome-align's extraction: both directions' softmax probabilities above ``threshold``."""
    s, v = _batched(scores, valid)
    s = s.masked_fill(~v, float("-inf"))
    forward = torch.softmax(s, dim=2)  # each source subword over the target subwords
    backward = torch.softmax(s, dim=1)  # each target subword over the source subwords
    links = (forward > threshold) & (backward > threshold) & v
    return _shaped(links, scores)


def extract(
    method: Method, sim: torch.Tensor, valid: torch.Tensor, threshold: float = 1e-3, rounds: int = 2, alpha: float = 0.9
) -> torch.Tensor:
    """Links of ``method`` over a batch of similarity matrices."""
    if method == "argmax":
        return argmax_links(sim, valid)
    if method == "itermax":
        return itermax_links(sim, valid, rounds, alpha)
    if method == "match":
        return match_links(sim, valid)
    if method == "softmax":
        return softmax_links(sim, valid, threshold)
    raise ValueError(f"unknown extraction method {method!r}; choose from {', '.join(METHODS)}")
