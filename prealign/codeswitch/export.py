"""Export a shard directory to other trainers' formats: nanoGPT's flat token files.

nanoGPT's ``train.py`` reads ``train.bin`` and ``val.bin``, flat arrays of token ids
(``np.memmap(path, dtype=np.uint16)``), samples windows ``x = ids[i:i+L]``, ``y = ids[i+1:i+1+L]``, and takes
``vocab_size`` from ``meta.pkl``. The export writes all three. ``val.bin`` holds the last rows of the shards in
manifest order (whole rows, ``val_fraction`` of them, at least one), ``train.bin`` the others: the same shards
and fraction always give the same files.

Input-only code-switching needs targets that differ from the inputs, so ``train_labels.bin`` and
``val_labels.bin`` (int32, same lengths) hold the rows' labels: ``y = labels[i+1:i+1+L]``, with -100 for no
loss; stock nanoGPT uses ``ids`` as targets and ignores -1, so it needs two lines changed to use them (see
docs/switching.md). Ids are uint16 when the vocabulary fits, else uint32, which stock nanoGPT does not read
unless the dtype in its ``get_batch`` is changed: the export then says so (``meta["warnings"]``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from prealign.errors import InputError, disk_full_is_input_error
from prealign.outputs import check_outputs
from prealign.shards import (
    IGNORE_INDEX,
    MANIFEST,
    check_shards,
    file_sha256,
    read_manifest,
    read_rows,
)
from prealign.textio import atomic_write, atomic_write_text, remove_temporaries, temp_file

TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
TRAIN_LABELS_FILE = "train_labels.bin"
VAL_LABELS_FILE = "val_labels.bin"
META_PICKLE = "meta.pkl"
META_FILE = "meta.json"
PARTS = {"train": (TRAIN_FILE, TRAIN_LABELS_FILE), "val": (VAL_FILE, VAL_LABELS_FILE)}  # ids, labels
BIN_FILES = (TRAIN_FILE, TRAIN_LABELS_FILE, VAL_FILE, VAL_LABELS_FILE)
OUTPUT_FILES = (*BIN_FILES, META_PICKLE, META_FILE)
STOCK_NANOGPT_VOCAB = 1 << 16  # ids that fit in the uint16 stock nanoGPT reads
NOTE = (
    "train.bin / val.bin: the input_ids of the rows, concatenated in manifest order (row boundaries are not "
    "marked; packed rows all have row_tokens tokens); val.bin holds the last val_rows rows. train_labels.bin / "
    "val_labels.bin: the rows' labels, int32, same lengths, Hugging Face convention (-100: no loss). nanoGPT-style "
    "windows: x = ids[i:i+L], y = labels[i+1:i+1+L], cross_entropy(..., ignore_index=-100). Little-endian."
)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32; little-endian."""
    return np.dtype("<u2") if vocab_size <= STOCK_NANOGPT_VOCAB else np.dtype("<u4")


def validation_rows(total_rows: int, val_fraction: float, directory: Path) -> int:
    """How many of the last rows go to val.bin: ``round(val_fraction * rows)``, at least 1 when the fraction is
    positive; InputError for a fraction outside [0, 1) or one that leaves no training row."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), not {val_fraction}", directory)
    if val_fraction == 0.0:
        return 0
    n_val = max(1, round(val_fraction * total_rows))
    if n_val >= total_rows:
        raise InputError(
            f"--val-fraction {val_fraction} leaves no training rows (the shards hold {total_rows} row(s))", directory
        )
    return n_val


def export_nanogpt(directory: Path, output_dir: Path, val_fraction: float = 0.01) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin``, their labels, ``meta.pkl`` and ``meta.json`` into ``output_dir``; returns
    the meta (with ``warnings``: what stock nanoGPT needs changed to read these files, if anything).

    Checked before anything is written: the output directory (not the shard directory, writable), every shard
    against the manifest (:func:`prealign.shards.check_shards`: sha256, rows, ids inside the vocabulary) and the
    fraction. Each file appears whole or not at all (temporary name, then rename; ``meta.json`` last), so a
    directory with ``meta.json`` holds a finished export; a failed export leaves no directory it created, and a
    full disk is one InputError.
    """
    directory, output_dir = Path(directory), Path(output_dir)
    manifest = read_manifest(directory)
    inputs = [directory / MANIFEST, *(directory / entry["file"] for entry in manifest["shards"])]
    check_outputs(inputs, {"-o": output_dir}, directories=("-o",))
    problems = check_shards(directory)
    if problems:
        raise InputError("unsound shard directory: " + "; ".join(problems), directory)
    n_val = validation_rows(sum(entry["rows"] for entry in manifest["shards"]), val_fraction, directory)
    created = _first_missing(output_dir)
    try:
        with disk_full_is_input_error(output_dir):
            output_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(output_dir / n for n in OUTPUT_FILES)  # left by a killed export
            return _export(directory, manifest, output_dir, n_val, val_fraction)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost directory that ``mkdir(parents=True)`` would create for ``path``, or None."""
    path = path.absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def _export(directory: Path, manifest: dict[str, Any], output_dir: Path, n_val: int, val_fraction: float) -> dict:
    tokenizer = manifest["tokenizer"]
    vocab_size = tokenizer["vocab_size"]
    dtype = token_dtype(vocab_size)
    split = sum(entry["rows"] for entry in manifest["shards"]) - n_val  # rows before it go to train.bin
    temps: dict[str, str] = {}
    counts = {"train": [0, 0], "val": [0, 0]}  # rows, tokens
    try:
        for name in BIN_FILES:
            fd, temps[name] = temp_file(output_dir / name)
            os.close(fd)
        outs: dict[str, BinaryIO] = {name: open(temps[name], "wb") for name in BIN_FILES}  # noqa: SIM115
        try:
            first = 0
            for entry in manifest["shards"]:
                shard = read_rows(directory / entry["file"], entry["rows"])
                cut = min(max(split - first, 0), len(shard))
                at = int(shard.offsets[cut])
                for part, lo, hi, n in (("train", 0, at, cut), ("val", at, len(shard.input_ids), len(shard) - cut)):
                    ids_file, labels_file = PARTS[part]
                    outs[ids_file].write(shard.input_ids[lo:hi].astype(dtype).tobytes())
                    outs[labels_file].write(shard.labels[lo:hi].astype("<i4").tobytes())
                    counts[part][0] += n
                    counts[part][1] += hi - lo
                first += len(shard)
        finally:
            for fh in outs.values():
                fh.close()
        for name in (META_FILE, META_PICKLE):  # an old meta must not describe the new files
            (output_dir / name).unlink(missing_ok=True)
        for name in BIN_FILES:
            os.replace(temps.pop(name), output_dir / name)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
    meta = _meta(directory, manifest, dtype, counts, val_fraction)
    atomic_write(output_dir / META_PICKLE, lambda fh: pickle.dump({"vocab_size": vocab_size}, fh))
    atomic_write_text(output_dir / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def _meta(
    directory: Path, manifest: dict[str, Any], dtype: np.dtype, counts: dict[str, list[int]], val_fraction: float
) -> dict[str, Any]:
    tokenizer = manifest["tokenizer"]
    vocab_size = tokenizer["vocab_size"]
    warnings = []
    if vocab_size > STOCK_NANOGPT_VOCAB:
        warnings.append(
            f"vocab_size {vocab_size:,} does not fit in uint16: train.bin and val.bin hold uint32 ids, which stock "
            "nanoGPT misreads; change np.uint16 to np.uint32 in get_batch() of its train.py"
        )
    return {
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eot_id": tokenizer.get("eot_id"),
        "pad_id": tokenizer.get("pad_id"),
        "tokens": counts["train"][1] + counts["val"][1],
        "rows": counts["train"][0] + counts["val"][0],
        "train_rows": counts["train"][0],
        "train_tokens": counts["train"][1],
        "val_rows": counts["val"][0],
        "val_tokens": counts["val"][1],
        "val_fraction": val_fraction,
        "split": "val.bin holds the last val_rows rows in manifest order (whole rows), train.bin the others",
        "row_tokens": manifest.get("row_tokens"),
        "seq_len": manifest.get("seq_len"),
        "labels_policy": manifest.get("labels"),
        "source": str(directory.resolve()),
        "source_manifest_sha256": file_sha256(directory / MANIFEST),
        "tokenizer_sha256": tokenizer.get("sha256"),
        "train_file": TRAIN_FILE,
        "val_file": VAL_FILE,
        "train_labels_file": TRAIN_LABELS_FILE,
        "val_labels_file": VAL_LABELS_FILE,
        "meta_pickle": META_PICKLE,
        "labels_dtype": "int32",
        "ignore_index": IGNORE_INDEX,
        "byteorder": "little",
        "warnings": warnings,
        "note": NOTE,
    }
