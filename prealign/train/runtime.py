"""Small pieces both training stages share: device choice, option checks and the learning-rate schedule."""

from __future__ import annotations

import math
import re

import torch

from prealign.errors import InputError

DEVICE_PATTERN = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


class TrainingDiverged(InputError):
    """The loss (or gradient norm) became NaN or infinite: training stops (exit code 2, one line)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked against
    what this machine has. Anything else, or a GPU that is not there, is an :class:`InputError`."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: no CUDA GPU is available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name!r}: MPS is not available on this machine")
    return device


def check_number(name: str, value: object, low: float, high: float = math.inf, open_low: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in ``[low, high]`` (``(low, high]`` when
    ``open_low``): NaN and infinities are refused whatever the bounds."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high  # type: ignore[operator]
    if not ok:
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        if math.isfinite(high):
            bound = f"in {'(' if open_low else '['}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def warmup_cosine(step: int, steps: int, warmup: int, lr: float, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step``, counted from 1 (the first update is step 1, the last ``steps``):
    linear warmup from ``lr / warmup`` to ``lr`` at step ``warmup``, then cosine down to ``min_lr_ratio * lr`` at
    ``steps``. Both trainers (pretraining and alignment initialisation) take their rates from here."""
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    floor = lr * min_lr_ratio
    return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))
