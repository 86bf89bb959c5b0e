"""Run directories: model weights in safetensors, JSON for everything else; never unpickled.

A run directory holds ``model.safetensors`` (weights), ``run.json`` (model config, tokenizer sha256 and path,
what made the run), and, for resumable training, ``state.json`` plus ``optimizer.safetensors``. Writes are
atomic, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prealign.errors import InputError
from prealign.textio import atomic_write, atomic_write_text
from prealign.train.model import ModelConfig, Transformer

WEIGHTS, RUN, STATE, OPTIMIZER = "model.safetensors", "run.json", "state.json", "optimizer.safetensors"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(data, str(tmp))
    atomic_write(path, lambda fh: fh.write(tmp.read_bytes()))
    tmp.unlink()


def save_model(run_dir: Path, model: Transformer, info: dict[str, Any]) -> None:
    """Weights and ``run.json`` (``info`` plus the model config)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not (model.config.tie_embeddings and k == "lm_head.weight")}
    _save_tensors(run_dir / WEIGHTS, state)
    atomic_write_text(run_dir / RUN, json.dumps({**info, "model": model.config.to_dict()}, indent=2) + "\n")


def read_run(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN
    if not path.is_file():
        raise InputError("not a run directory: no run.json", run_dir)
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable run.json: {exc}", path) from exc


def load_model(
    run_dir: Path, device: str | torch.device = "cpu", min_seq_len: int | None = None
) -> tuple[Transformer, dict[str, Any]]:
    """The model of a run directory and its ``run.json``.

    ``min_seq_len`` raises the model's maximum length (rotary tables are not stored, so nothing else changes).
    """
    info = read_run(run_dir)
    cfg = ModelConfig(**info["model"])
    if min_seq_len is not None and min_seq_len > cfg.max_seq_len:
        cfg = replace(cfg, max_seq_len=min_seq_len)
    model = Transformer(cfg)
    try:
        weights = load_file(str(Path(run_dir) / WEIGHTS), device=str(device))
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"unreadable weights: {exc}", Path(run_dir) / WEIGHTS) from exc
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [m for m in missing if not (model.config.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise InputError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}", run_dir)
    return model.to(device), info


def save_state(run_dir: Path, state: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Training position (JSON) and optimizer tensors (safetensors), for ``--resume``."""
    flat, meta = {}, {}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{pid}.{k}"] = v
            else:
                meta[f"{pid}.{k}"] = v
    _save_tensors(run_dir / OPTIMIZER, flat)
    groups = optimizer.state_dict()["param_groups"]
    atomic_write_text(run_dir / STATE, json.dumps({**state, "optimizer_groups": groups, "optimizer_scalars": meta}))


def load_state(run_dir: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer and return the training position saved by :func:`save_state`."""
    try:
        state = json.loads((Path(run_dir) / STATE).read_text("utf-8"))
        flat = load_file(str(Path(run_dir) / OPTIMIZER))
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot resume: {exc}", run_dir) from exc
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    for key, value in state.pop("optimizer_scalars").items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_groups")})
    return state
