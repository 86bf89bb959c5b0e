"""Small pieces both training stages share: device choice and the learning-rate schedule."""

from __future__ import annotations

import math

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_cosine(step: int, steps: int, warmup: int, lr: float, min_lr_ratio: float) -> float:
    """Learning rate of (1-based) ``step``: linear warmup over ``warmup`` steps, then cosine down to
    ``min_lr_ratio * lr`` at ``steps``."""
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    floor = lr * min_lr_ratio
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))
