"""Transformers causal LMs in alignment initialisation: load a model (or a config to start from), save the result
as a transformers model directory that the user's own trainer continues from.

``transformers`` is an optional extra (``pip install 'prealign-data[hf]'``); nothing here imports it before a
transformers model is asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from prealign.errors import InputError
from prealign.textio import temp_dir

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# tokenizer files copied beside the model when the tokenizer comes from a model directory
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise InputError(
            "--hf-model needs the transformers package, which is not installed: pip install 'prealign-data[hf]'"
        ) from None
    return transformers


def has_weights(path: Path) -> bool:
    """True when the model directory holds weights (else it is a config to initialise from)."""
    return any((path / name).is_file() for name in WEIGHT_FILES)


def load_hf_model(path: Path, seed: int) -> tuple[torch.nn.Module, bool]:
    """The causal LM in directory ``path`` in float32, and whether it was pretrained: its weights when the
    directory has them, else a random initialisation (seeded) from its ``config.json``."""
    transformers = _transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError("not a transformers model directory: no config.json", path)
    pretrained = has_weights(path)
    try:
        if pretrained:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        else:
            config = transformers.AutoConfig.from_pretrained(str(path))
            torch.manual_seed(seed)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"transformers cannot load a causal LM from it: {reason}", path) from None
    if model.get_output_embeddings() is None:
        raise InputError(f"{type(model).__name__} has no LM head (output embedding)", path)
    return model, pretrained


def hf_tokenizer_path(hf_model: Path, tokenizer: Path | None) -> Path:
    """``tokenizer`` when given, else the model directory's ``tokenizer.json``."""
    if tokenizer is not None:
        return Path(tokenizer)
    if not (Path(hf_model) / "tokenizer.json").is_file():
        raise InputError("no tokenizer.json in the model directory: give --tokenizer", hf_model)
    return Path(hf_model)


def save_hf_run(output: Path, model: torch.nn.Module, tokenizer_path: Path, record: dict[str, Any]) -> list[Path]:
    """Write ``model`` (``save_pretrained``, safetensors), its tokenizer files and ``run.json`` (``record``) into
    ``output``: everything is written into a temporary directory inside ``output`` first, then moved into place
    with ``run.json`` last, so a run directory with a ``run.json`` is whole. Returns the paths written."""
    output = Path(output)
    stage = temp_dir(output / "run", tag="hf")
    try:
        model.save_pretrained(str(stage), safe_serialization=True)
        if tokenizer_path.is_dir() and (tokenizer_path / "tokenizer_config.json").is_file():
            for name in TOKENIZER_FILES:  # the model's own tokenizer files, as they are
                if (tokenizer_path / name).is_file():
                    shutil.copyfile(tokenizer_path / name, stage / name)
        else:  # a bare tokenizer.json: the files AutoTokenizer needs, as export-model writes them
            from prealign.codeswitch.tokenizer import load_tokenizer, special_tokens
            from prealign.train.export_hf import tokenizer_files

            tok = load_tokenizer(tokenizer_path)
            max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 1_000_000
            for name, text in tokenizer_files(tok, special_tokens(tok, tokenizer_path), max_len).items():
                (stage / name).write_text(text, "utf-8")
        (stage / "run.json").write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", "utf-8")
        written = []
        for file in sorted(stage.iterdir(), key=lambda p: p.name == "run.json"):
            os.replace(file, output / file.name)
            written.append(output / file.name)
        return written
    finally:
        shutil.rmtree(stage, ignore_errors=True)
