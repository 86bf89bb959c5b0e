"""Run directories: model weights in safetensors, JSON for everything else; never unpickled.

A run directory holds ``model.safetensors`` (weights), ``run.json`` (model config, tokenizer sha256 and path,
what made the run), and, for resumable training, ``state.json`` plus ``optimizer.safetensors``.

A checkpoint is written in two phases: every file goes to a temporary name first, and only when all are
written are they renamed into place (``state.json`` last). A failure while writing (a full disk, a kill)
therefore leaves the previous checkpoint whole. Both safetensors files record the checkpoint's step in their
metadata, as ``run.json`` and ``state.json`` do, so a checkpoint mixed from two saves is refused on resume.

Every read is checked: an unreadable, truncated or edited file is an :class:`InputError` naming it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from prealign.errors import InputError
from prealign.textio import json_type, temp_file
from prealign.train.model import ModelConfig, Transformer

WEIGHTS, RUN, STATE, OPTIMIZER = "model.safetensors", "run.json", "state.json", "optimizer.safetensors"


# --- writing -----------------------------------------------------------------------------------------------------


def _tensor_bytes(tensors: dict[str, torch.Tensor], step: int | None) -> bytes:
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return save(data, metadata=None if step is None else {"step": str(step)})


def write_files(files: dict[Path, bytes]) -> None:
    """Write every file under a temporary name beside it, then rename them into place in the given order.

    A failure while writing removes the temporary files and leaves every existing file as it was.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_file(path)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def _model_files(run_dir: Path, model: Transformer, info: dict[str, Any]) -> dict[Path, bytes]:
    tied = model.config.tie_embeddings
    state = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    step = info.get("step")
    run_json = json.dumps({**info, "model": model.config.to_dict()}, indent=2, allow_nan=False) + "\n"
    return {
        run_dir / WEIGHTS: _tensor_bytes(state, step if isinstance(step, int) else None),
        run_dir / RUN: run_json.encode("utf-8"),
    }


def save_model(run_dir: Path, model: Transformer, info: dict[str, Any]) -> None:
    """Weights and ``run.json`` (``info`` plus the model config)."""
    write_files(_model_files(Path(run_dir), model, info))


def save_checkpoint(
    run_dir: Path, model: Transformer, info: dict[str, Any], state: dict[str, Any], optimizer: torch.optim.Optimizer
) -> None:
    """Weights, ``run.json``, optimizer tensors and ``state.json`` (the training position, for ``--resume``)
    as one checkpoint: all written before any is renamed into place. ``state["step"]`` is the step."""
    run_dir = Path(run_dir)
    flat, meta = {}, {}
    optimizer_state = optimizer.state_dict()
    for pid, st in optimizer_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{pid}.{k}"] = v
            else:
                meta[f"{pid}.{k}"] = v
    groups = optimizer_state["param_groups"]
    state_json = json.dumps({**state, "optimizer_groups": groups, "optimizer_scalars": meta}, allow_nan=False)
    files = _model_files(run_dir, model, {**info, "step": state["step"]})
    files[run_dir / OPTIMIZER] = _tensor_bytes(flat, state["step"])
    files[run_dir / STATE] = state_json.encode("utf-8")
    write_files(files)


# --- reading -----------------------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else (missing, invalid JSON, NaN/Infinity, not an object) is an
    :class:`InputError` naming the file."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable: {exc}", path) from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise InputError(f"invalid JSON: {exc}", path) from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {json_type(obj)}", path)
    return obj


def read_run(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run directory (a directory without one is not a run)."""
    path = Path(run_dir) / RUN
    if not path.is_file():
        raise InputError("not a run directory: no run.json", run_dir)
    return read_json(path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def model_config_of(info: dict[str, Any], path: Path) -> ModelConfig:
    """The :class:`ModelConfig` recorded in ``run.json``, every field type-checked."""
    recorded = info.get("model")
    if not isinstance(recorded, dict):
        raise InputError(f"'model' is {json_type(recorded)}, expected an object", path)
    names = {f.name: f for f in fields(ModelConfig)}
    unknown = sorted(set(recorded) - set(names))
    if unknown:
        raise InputError(f"'model' has unknown field(s) {unknown}", path)
    for key, value in recorded.items():
        kind = str(names[key].type)
        ok = {
            "int": _is_int(value) and value > 0,
            "int | None": value is None or (_is_int(value) and value > 0),
            "float": _is_number(value) and value > 0,
            "bool": isinstance(value, bool),
        }.get(kind, True)
        if not ok:
            raise InputError(f"'model.{key}' is {value!r}, not a valid {kind}", path)
    try:
        return ModelConfig(**recorded)
    except ValueError as exc:
        raise InputError(f"'model': {exc}", path) from None


def _load_tensors(path: Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; a missing, truncated or corrupt file is an InputError."""
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            return {key: fh.get_tensor(key) for key in fh.keys()}, fh.metadata() or {}
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"corrupt or truncated safetensors file: {reason}", path) from None


def load_model(
    run_dir: Path, device: str | torch.device = "cpu", min_seq_len: int | None = None
) -> tuple[Transformer, dict[str, Any]]:
    """The model of a run directory and its ``run.json``.

    ``min_seq_len`` raises the model's maximum length (rotary tables are not stored, so nothing else changes).
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    cfg = model_config_of(info, run_dir / RUN)
    if min_seq_len is not None and min_seq_len > cfg.max_seq_len:
        cfg = replace(cfg, max_seq_len=min_seq_len)
    model = Transformer(cfg)
    weights, metadata = _load_tensors(run_dir / WEIGHTS, str(device))
    if "step" in metadata and "step" in info and str(info["step"]) != metadata["step"]:
        raise InputError(
            f"'step' {info['step']} does not match {WEIGHTS} (step {metadata['step']}): a torn or edited checkpoint",
            run_dir / RUN,
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights and not (cfg.tie_embeddings and k == "lm_head.weight")]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise InputError(
            f"weights do not fit run.json's model: missing {missing[:3]}, unexpected {unexpected[:3]}",
            run_dir / WEIGHTS,
        )
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(
                f"weights do not fit run.json's model: {key} has shape {list(tensor.shape)}, "
                f"run.json's model wants {list(expected[key].shape)}",
                run_dir / WEIGHTS,
            )
    model.load_state_dict(weights, strict=False)
    return model.to(device), info


def _check_state(state: dict[str, Any], path: Path) -> None:
    """The fields of ``state.json`` that training reads, with their types and ranges."""
    checks = {
        "step": lambda v: _is_int(v) and v >= 0,
        "tokens": lambda v: _is_int(v) and v >= 0,
        "data": lambda v: (
            isinstance(v, dict) and all(_is_int(v.get(k)) and v[k] >= 0 for k in ("epoch", "rows_consumed"))
        ),
        "rng": lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("torch"), list)
            and all(_is_int(x) and 0 <= x < 256 for x in v["torch"])
        ),
        "optimizer_groups": lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
        "optimizer_scalars": lambda v: isinstance(v, dict),
    }
    for key, ok in checks.items():
        if key not in state:
            raise InputError(f"'{key}' is missing", path)
        if not ok(state[key]):
            raise InputError(f"'{key}' is not valid: {json.dumps(state[key])[:80]}", path)


def load_state(run_dir: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer and return the training position saved by :func:`save_checkpoint`."""
    run_dir = Path(run_dir)
    path = run_dir / STATE
    state = read_json(path)
    _check_state(state, path)
    flat, metadata = _load_tensors(run_dir / OPTIMIZER)
    if "step" in metadata and metadata["step"] != str(state["step"]):
        raise InputError(
            f"'step' {state['step']} does not match {OPTIMIZER} (step {metadata['step']}): a torn or edited checkpoint",
            path,
        )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param: dict[int, dict[str, Any]] = {}
    try:
        for key, value in flat.items():
            pid, name = key.split(".", 1)
            if value.dim() and tuple(value.shape) != tuple(params[int(pid)].shape):
                raise InputError(f"{key} has shape {list(value.shape)}, not the model's", run_dir / OPTIMIZER)
            per_param.setdefault(int(pid), {})[name] = value
        for key, value in state.pop("optimizer_scalars").items():
            pid, name = key.split(".", 1)
            per_param.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("optimizer_groups")})
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"the optimizer state does not fit the model: {reason}", path) from None
    return state
