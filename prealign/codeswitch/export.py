"""Export a shard directory to other trainers' formats: nanoGPT's flat token files.

nanoGPT reads ``train.bin``, a flat array of token ids (``np.memmap(path, dtype=np.uint16)``), and samples
windows ``x = ids[i:i+L]``, ``y = ids[i+1:i+1+L]``. Input-only code-switching needs targets that differ from the
inputs, so ``labels.bin`` (int32, same length) holds the rows' labels: ``y = labels[i+1:i+1+L]``, with -100 for
no loss (nanoGPT's own loss ignores -1; pass ``ignore_index=-100``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from prealign.errors import InputError
from prealign.shards import IGNORE_INDEX, MANIFEST, check_shards, file_sha256, read_manifest, read_rows
from prealign.textio import atomic_write_text

TRAIN_FILE = "train.bin"
LABELS_FILE = "labels.bin"
META_FILE = "meta.json"
NOTE = (
    "train.bin: the input_ids of every row, concatenated in manifest order (row boundaries are not marked; "
    "packed rows all have row_tokens tokens). labels.bin: the rows' labels, int32, same length, Hugging Face "
    "convention (-100: no loss). nanoGPT-style windows: x = train[i:i+L], y = labels[i+1:i+1+L], "
    "cross_entropy(..., ignore_index=-100). Little-endian."
)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; little-endian."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def export_nanogpt(directory: Path, output_dir: Path) -> dict[str, Any]:
    """Write ``train.bin``, ``labels.bin`` and ``meta.json`` into ``output_dir``; returns the meta.

    Refuses (InputError) a directory whose shards fail :func:`prealign.shards.check_shards`, or an id outside the
    tokenizer's vocabulary. Each file appears whole or not at all (temporary name, then rename; ``meta.json``
    last), so a directory with ``meta.json`` holds a finished export.
    """
    directory, output_dir = Path(directory), Path(output_dir)
    manifest = read_manifest(directory)
    problems = check_shards(directory)
    if problems:
        raise InputError("unsound shard directory: " + "; ".join(problems), directory)
    tokenizer = manifest.get("tokenizer") or {}
    vocab_size = tokenizer.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size < 1:
        raise InputError("the manifest records no tokenizer vocab_size", directory / MANIFEST)
    dtype = token_dtype(vocab_size)

    output_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[str, str] = {}
    tokens = rows = 0
    try:
        for name in (TRAIN_FILE, LABELS_FILE):
            fd, temps[name] = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=output_dir)
            os.close(fd)
        with open(temps[TRAIN_FILE], "wb") as ids_out, open(temps[LABELS_FILE], "wb") as labels_out:
            for entry in manifest["shards"]:
                path = directory / entry["file"]
                shard = read_rows(path, entry["rows"])
                ids = shard.input_ids
                if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
                    raise InputError(f"token ids outside [0, {vocab_size}) (the tokenizer's vocab_size)", path)
                ids.astype(dtype).tofile(ids_out)
                shard.labels.astype("<i4").tofile(labels_out)
                tokens += len(ids)
                rows += len(shard)
        (output_dir / META_FILE).unlink(missing_ok=True)  # an old meta.json must not describe the new files
        for name in (TRAIN_FILE, LABELS_FILE):
            os.replace(temps.pop(name), output_dir / name)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)

    meta = {
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eot_id": tokenizer.get("eot_id"),
        "pad_id": tokenizer.get("pad_id"),
        "tokens": tokens,
        "rows": rows,
        "row_tokens": manifest.get("row_tokens"),
        "seq_len": manifest.get("seq_len"),
        "labels_policy": manifest.get("labels"),
        "source": str(directory.resolve()),
        "source_manifest_sha256": file_sha256(directory / MANIFEST),
        "tokenizer_sha256": tokenizer.get("sha256"),
        "train_file": TRAIN_FILE,
        "labels_file": LABELS_FILE,
        "labels_dtype": "int32",
        "ignore_index": IGNORE_INDEX,
        "byteorder": "little",
        "note": NOTE,
    }
    atomic_write_text(output_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta
