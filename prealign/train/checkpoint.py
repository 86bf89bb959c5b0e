"""Run directories: model weights in safetensors, JSON for everything else; never unpickled.

A run directory holds ``model.safetensors`` (weights) and ``run.json`` (model config, tokenizer sha256 and path,
what made the run): the model that ``--init``, ``export-model`` and ``train eval`` read. A pretraining run also
holds its latest resumable checkpoint, one directory ``checkpoint-NNNNNNNN`` (the step) with the weights,
``run.json``, ``optimizer.safetensors`` and ``state.json`` (step, data position, RNG states).

A checkpoint is written whole into a hidden staging directory, then renamed into place in one step: a kill at
any moment leaves either the previous checkpoint or the new one, never a mix. Then older checkpoints are
retired (renamed to a hidden name, then removed) and the top-level ``model.safetensors`` and ``run.json`` are
replaced by hard links to the new checkpoint's files (``run.json`` last). Readers take the newest checkpoint
directory when there is one, so a kill between those last steps is invisible to them, and the next save or
resume finishes the job (:func:`tidy`). A staging or retired directory left by a kill is removed then too.

Every read is checked: an unreadable, truncated or edited file is an :class:`InputError` naming it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from prealign.errors import InputError
from prealign.textio import json_type, remove_temporaries, temp_dir, temp_file
from prealign.train.model import ModelConfig, Transformer

WEIGHTS, RUN, STATE, OPTIMIZER = "model.safetensors", "run.json", "state.json", "optimizer.safetensors"
CHECKPOINT = re.compile(r"checkpoint-(\d{8})")
# hidden names of a checkpoint being written or retired (temp_dir's ".NAME.TAG-*")
STAGING = re.compile(r"\.checkpoint-\d{8}\.(saving|retired)-.+")


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


def _model_files(model: Transformer, info: dict[str, Any]) -> dict[str, bytes]:
    """The weights and ``run.json`` of ``model``, by file name."""
    tied = model.config.tie_embeddings
    state = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    step = info.get("step")
    run_json = json.dumps({**info, "model": model.config.to_dict()}, indent=2, allow_nan=False) + "\n"
    return {
        WEIGHTS: _tensor_bytes(state, step if isinstance(step, int) else None),
        RUN: run_json.encode("utf-8"),
    }


def save_model(run_dir: Path, model: Transformer, info: dict[str, Any]) -> None:
    """Weights and ``run.json`` (``info`` plus the model config)."""
    write_files({Path(run_dir) / name: data for name, data in _model_files(model, info).items()})


def write_bytes(path: Path, data: bytes) -> None:
    """Write a new file (every write of a checkpoint goes through here)."""
    with open(path, "xb") as fh:
        fh.write(data)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The checkpoint directories of ``run_dir``, oldest first, as (step, path)."""
    found = []
    if Path(run_dir).is_dir():
        for p in Path(run_dir).iterdir():
            m = CHECKPOINT.fullmatch(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint directory of ``run_dir`` (None when there is none)."""
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def _retire(path: Path) -> None:
    """Remove a directory: first renamed to a hidden name in one step (so it is never seen half-removed)."""
    hidden = temp_dir(path, tag="retired")
    os.rename(path, hidden / path.name)
    shutil.rmtree(hidden)


def _publish(run_dir: Path, source: Path) -> None:
    """Make the top-level weights and run.json the files of checkpoint ``source`` (hard links; copies where the
    file system has no links), run.json last."""
    for name in (WEIGHTS, RUN):
        fd, tmp = temp_file(run_dir / name)
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source / name, tmp)
        except OSError:
            shutil.copyfile(source / name, tmp)
        os.replace(tmp, run_dir / name)


def tidy(run_dir: Path) -> None:
    """Finish what a killed save left: remove staging and retired directories and older checkpoints, and make
    the top-level model the newest checkpoint's."""
    run_dir = Path(run_dir)
    for p in list(run_dir.iterdir()) if run_dir.is_dir() else []:
        if STAGING.fullmatch(p.name) and p.is_dir():
            shutil.rmtree(p)
    remove_temporaries([run_dir / WEIGHTS, run_dir / RUN])  # a link made for _publish, not yet renamed
    found = checkpoints(run_dir)
    for _, old in found[:-1]:
        _retire(old)
    if found:
        newest = found[-1][1]
        if not all((run_dir / n).is_file() and os.path.samefile(run_dir / n, newest / n) for n in (WEIGHTS, RUN)):
            _publish(run_dir, newest)


def save_checkpoint(
    run_dir: Path, model: Transformer, info: dict[str, Any], state: dict[str, Any], optimizer: torch.optim.Optimizer
) -> Path:
    """Weights, ``run.json``, optimizer tensors and ``state.json`` (the training position, for ``--resume``) as
    one checkpoint directory (see the module docstring); returns it. ``state["step"]`` is the step."""
    run_dir = Path(run_dir)
    step = int(state["step"])
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
    files = _model_files(model, {**info, "step": step})
    files[OPTIMIZER] = _tensor_bytes(flat, step)
    files[STATE] = state_json.encode("utf-8")
    target = run_dir / f"checkpoint-{step:08d}"
    stage = temp_dir(target, tag="saving")
    try:
        for name, data in files.items():
            write_bytes(stage / name, data)
        if target.exists():  # the same step saved again (a resumed run that stops where it started)
            _retire(target)
        os.rename(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    tidy(run_dir)
    return target


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


def model_dir(run_dir: Path) -> Path:
    """Where a run's model is read: its newest checkpoint directory, else the run directory itself."""
    return latest_checkpoint(run_dir) or Path(run_dir)


def read_run(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run (from :func:`model_dir`; a directory without one is not a run)."""
    path = model_dir(run_dir) / RUN
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
    run_dir = model_dir(run_dir)
    info = read_run(run_dir)
    if "hf_model" in info:
        raise InputError(
            "a transformers model directory (made by align-init --hf-model): load it with transformers "
            "(AutoModelForCausalLM.from_pretrained) and continue with your own trainer",
            run_dir,
        )
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
    """Restore the optimizer and return the training position saved by :func:`save_checkpoint` in the newest
    checkpoint directory of ``run_dir``."""
    found = latest_checkpoint(run_dir)
    if found is None:
        raise InputError("nothing to resume: no checkpoint-* directory", run_dir)
    run_dir = found
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


# --- a run against a tokenizer -----------------------------------------------------------------------------------


def tokenizer_sha(info: dict[str, Any]) -> str | None:
    """The tokenizer sha256 a run recorded (``tokenizer_sha256``, or the shard manifest's ``tokenizer`` record)."""
    record = info.get("tokenizer")
    return info.get("tokenizer_sha256") or (record.get("sha256") if isinstance(record, dict) else None)


def check_model_fits(model: Transformer, info: dict[str, Any], tok: dict[str, Any], source: Path | None) -> None:
    """A run's model against a shard manifest's ``tokenizer`` record: made with that tokenizer (when ``source``,
    the run, is given) and holding its whole vocabulary."""
    if source is not None and tokenizer_sha(info) != tok["sha256"]:
        raise InputError(
            f"tokenizer mismatch: the run was made with tokenizer sha256 {tokenizer_sha(info)}, "
            f"the shards with {tok['sha256']}",
            source,
        )
    if model.config.vocab_size < int(tok["vocab_size"]):
        raise InputError(
            f"model vocabulary {model.config.vocab_size} < the shards' tokenizer's {tok['vocab_size']}",
            None if source is None else model_dir(source) / RUN,
        )


def run_tokenizer(run_dir: Path, info: dict[str, Any]) -> tuple[Any, Path]:
    """The tokenizer a run names (``tokenizer_path``) and its path, checked against the sha256 it recorded: one
    line when it is not recorded, has moved or has changed since."""
    from prealign.codeswitch.tokenizer import load_tokenizer, tokenizer_info

    path, sha = info.get("tokenizer_path"), tokenizer_sha(info)
    if not isinstance(path, str) or not path:
        raise InputError("the run records no tokenizer_path", run_dir)
    if not isinstance(sha, str):
        raise InputError("the run records no tokenizer_sha256: cannot check its tokenizer", run_dir)
    try:
        tok = load_tokenizer(path)
    except InputError as exc:
        raise InputError(f"the run's tokenizer cannot be loaded (moved?): {exc.message}", exc.path) from None
    found = tokenizer_info(tok).sha256
    if found != sha:
        raise InputError(
            f"the run's tokenizer changed since the run: sha256 {found}, the run was made with {sha}", path
        )
    return tok, Path(path)
