"""``prealign-data export-model``: a run's model as a Hugging Face Llama directory.

Our :class:`~prealign.train.model.Transformer` is a Llama in all but names: RMSNorm before attention and MLP,
rotary positions rotating the two halves of each head (Llama's ``rotate_half``, so no permutation of the query
and key rows is needed), SwiGLU, grouped-query attention where query head ``h`` reads key/value head
``h // (n_heads / n_kv_heads)``. Only the fused matrices are split: ``qkv`` into ``q_proj``/``k_proj``/``v_proj``
and ``gate_up`` into ``gate_proj``/``up_proj``.

The directory holds ``config.json`` (a ``LlamaConfig``), ``model.safetensors`` and the run's tokenizer
(``tokenizer.json`` as the run recorded it, plus ``tokenizer_config.json``/``special_tokens_map.json`` naming
BOS, EOS and padding for ``PreTrainedTokenizerFast``). Writing needs only torch and safetensors; loading it
needs ``transformers``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from tokenizers import Tokenizer

from prealign.codeswitch.tokenizer import (
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    SpecialTokens,
    special_tokens,
)
from prealign.errors import InputError, disk_full_is_input_error
from prealign.outputs import check_outputs
from prealign.textio import dir_mode, temp_dir
from prealign.train.checkpoint import load_model, run_tokenizer
from prealign.train.model import ModelConfig, Transformer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --- the model ---------------------------------------------------------------------------------------------------


def llama_config(cfg: ModelConfig, dtype: str, specials: SpecialTokens) -> dict[str, Any]:
    """``config.json`` of a ``LlamaForCausalLM`` with ``cfg``'s shape. Absent special tokens are written as null:
    left out, ``LlamaConfig`` would default to BOS 1 and EOS 2, which are other tokens of our tokenizers."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
        "head_dim": cfg.dim // cfg.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": specials.bos_id,
        "eos_token_id": specials.eos_id,
        "pad_token_id": specials.pad_id,
        "torch_dtype": dtype,
    }


def llama_weights(model: Transformer, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face Llama names, cast to ``dtype`` (each its own contiguous copy);
    ``lm_head.weight`` only when the embeddings are not tied."""
    cfg = model.config
    head_dim = cfg.dim // cfg.n_heads
    q_rows, kv_rows = cfg.n_heads * head_dim, (cfg.n_kv_heads or cfg.n_heads) * head_dim
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed.weight}
    for i, block in enumerate(model.blocks):
        pre = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.split([q_rows, kv_rows, kv_rows], dim=0)
        gate, up = block.mlp.gate_up.weight.chunk(2, dim=0)
        out |= {
            pre + "input_layernorm.weight": block.attn_norm.weight,
            pre + "self_attn.q_proj.weight": q,
            pre + "self_attn.k_proj.weight": k,
            pre + "self_attn.v_proj.weight": v,
            pre + "self_attn.o_proj.weight": block.attn.out.weight,
            pre + "post_attention_layernorm.weight": block.mlp_norm.weight,
            pre + "mlp.gate_proj.weight": gate,
            pre + "mlp.up_proj.weight": up,
            pre + "mlp.down_proj.weight": block.mlp.down.weight,
        }
    out["model.norm.weight"] = model.norm.weight
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    return {name: t.detach().to("cpu", dtype=dtype, copy=True).contiguous() for name, t in out.items()}


# --- the tokenizer -----------------------------------------------------------------------------------------------


def _recorded_specials(tok: Tokenizer, record: dict[str, Any], where: Path) -> SpecialTokens:
    """The special tokens a shard manifest recorded (a pretrain run's ``tokenizer``), checked against ``tok``."""
    names = {
        "bos": record.get("bos_token"),
        "eos": record.get("eos_token", record.get("eot_token")),
        "pad": record.get("pad_token"),
    }
    ids: dict[str, int | None] = {}
    for what, token in names.items():
        if token is not None and not isinstance(token, str):
            raise InputError(f"the recorded {what} token is {token!r}, not a string", where)
        ids[what] = None if token is None else tok.token_to_id(token)
        if token is not None and ids[what] is None:
            raise InputError(f"the recorded {what} token {token!r} is not a token of the run's tokenizer", where)
    return SpecialTokens(
        names["bos"],
        ids["bos"],
        names["eos"],
        ids["eos"],
        names["pad"],
        ids["pad"],
        add_bos=bool(record.get("add_bos")) and names["bos"] is not None,
        add_eos=bool(record.get("add_eos")) and names["eos"] is not None,
    )


def tokenizer_and_specials(run_dir: Path, info: dict[str, Any]) -> tuple[Tokenizer, SpecialTokens, Path]:
    """The run's tokenizer (checked against the sha256 the run recorded), its special tokens and its path.

    The special tokens are those the shards were made with when the run recorded them (pretraining), else
    those of the tokenizer's directory (:func:`special_tokens`)."""
    record = info.get("tokenizer") if isinstance(info.get("tokenizer"), dict) else None
    tok, path = run_tokenizer(run_dir, info)
    if record is not None and ("eos_token" in record or "eot_token" in record):
        specials = _recorded_specials(tok, record, run_dir)
    else:
        specials = special_tokens(tok, path)
    return tok, specials, path


def tokenizer_files(tok: Tokenizer, specials: SpecialTokens, max_len: int) -> dict[str, str]:
    """``tokenizer.json`` (the tokenizer's canonical JSON, so its sha256 is the run's), ``tokenizer_config.json``
    and ``special_tokens_map.json`` for ``PreTrainedTokenizerFast``. ``add_bos_token``/``add_eos_token`` are
    written only when the training data had them (written false, transformers 5 would replace the tokenizer's
    own post-processor, which may add BOS itself, as Llama 3's does)."""
    tokens = {
        key: value
        for key, value in (
            ("bos_token", specials.bos_token),
            ("eos_token", specials.eos_token),
            ("pad_token", specials.pad_token),
        )
        if value is not None
    }
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **tokens,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    if specials.add_bos:
        config["add_bos_token"] = True
    if specials.add_eos:
        config["add_eos_token"] = True
    return {
        "tokenizer.json": tok.to_str(),
        TOKENIZER_CONFIG: json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        SPECIAL_TOKENS_MAP: json.dumps(tokens, indent=2, ensure_ascii=False) + "\n",
    }


# --- the directory -----------------------------------------------------------------------------------------------


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise InputError("exists and is not a directory", output)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise InputError("exists and is not empty (use --overwrite to replace it)", output)


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    for parent in path.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def write_directory(output: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a new staging directory beside ``output``, then rename it to ``output`` (an existing
    ``output`` is moved aside first and removed after). A failure leaves ``output`` as it was and removes the
    staging directory and any parent directory it created."""
    created = _missing_parents(output)
    for parent in reversed(created):
        parent.mkdir(mode=dir_mode())
    staging: Path | None = None
    old: Path | None = None
    try:
        staging = temp_dir(output, "partial")
        with disk_full_is_input_error(output):
            for name, data in files.items():
                (staging / name).write_bytes(data)
        if output.exists():
            old = temp_dir(output, "old")
            os.replace(output, old / "dir")
        os.replace(staging, output)
        staging = None
    except BaseException:
        if old is not None and (old / "dir").exists():
            os.replace(old / "dir", output)  # put the previous directory back
        for path in (staging, old):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        for parent in created:
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(run_dir: Path, output: Path, dtype: str = "float32", overwrite: bool = False) -> dict[str, Any]:
    """``prealign-data export-model``: write the run's model and tokenizer to ``output`` as a directory that
    ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained`` load. Returns a summary.

    Refused (:class:`InputError`) before anything is written: an unknown ``dtype``, an ``output`` that exists and
    is not empty (without ``overwrite``), that is a file, or that holds the run or its tokenizer; a run that is
    not one; a tokenizer whose sha256 is not the run's."""
    run_dir, output = Path(run_dir), Path(output)
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    check_outputs([run_dir], {"-o": output}, directories=("-o",))
    _check_output(output, overwrite)
    model, info = load_model(run_dir, device="cpu")
    tok, specials, tok_path = tokenizer_and_specials(run_dir, info)
    check_outputs([run_dir, tok_path], {"-o": output}, directories=("-o",))
    cfg = model.config
    weights = llama_weights(model, DTYPES[dtype])
    files = {name: text.encode("utf-8") for name, text in tokenizer_files(tok, specials, cfg.max_seq_len).items()}
    files["config.json"] = (json.dumps(llama_config(cfg, dtype, specials), indent=2) + "\n").encode("utf-8")
    files["model.safetensors"] = save(weights, metadata={"format": "pt"})
    write_directory(output, files)
    return {
        "output": str(output),
        "dtype": dtype,
        "parameters": model.num_parameters(),
        "tensors": len(weights),
        "tied": cfg.tie_embeddings,
        "bos_token": specials.bos_token,
        "eos_token": specials.eos_token,
        "pad_token": specials.pad_token,
        "files": sorted(files),
    }
