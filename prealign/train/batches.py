"""Batches of shard rows for a causal LM: right-padded tensors, and the count of label tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prealign.shards import IGNORE_INDEX

# on a GPU, sequence lengths are padded up to a multiple of this (tensor-core friendly shapes; padding carries
# no loss). Not on a CPU, where padding is only more work.
PAD_MULTIPLE = 8

Row = tuple[np.ndarray, np.ndarray]


def padded_length(longest: int, max_len: int, multiple: int = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to ``multiple``, but never beyond ``max_len`` (rows are cut there)."""
    return min(max_len, -(-longest // multiple) * multiple)


def collate(
    rows: Sequence[Row], max_len: int, pad_id: int = 0, gpu: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(input_ids, labels, real tokens): right-padded (labels -100) to the longest row, truncated to
    ``max_len``. For a ``gpu``: padded to a multiple of :data:`PAD_MULTIPLE` and in pinned memory (for
    asynchronous copies)."""
    longest = max(len(ids) for ids, _ in rows)
    length = padded_length(longest, max_len) if gpu else min(longest, max_len)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    labels = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
    tokens = 0
    for i, (x, y) in enumerate(rows):
        n = min(length, len(x))
        ids[i, :n] = x[:n]
        labels[i, :n] = y[:n]
        tokens += n
    ids_t, labels_t = torch.from_numpy(ids), torch.from_numpy(labels)
    if gpu:
        ids_t, labels_t = ids_t.pin_memory(), labels_t.pin_memory()
    return ids_t, labels_t, tokens


def label_count(labels: torch.Tensor) -> int:
    """Label positions that carry loss (the model shifts, so ``labels[:, 0]`` never does)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
