"""Code-switched training shards: schema, atomic writer, manifest, and checks.

A shard directory holds ``manifest.json`` and ``shard-00000.arrow``, ... in Arrow IPC *stream* format (what
Hugging Face ``datasets`` reads with ``load_dataset("arrow", ...)``). Each row is a training sequence:

- ``input_ids: list<int32>``: the (code-switched) input tokens;
- ``labels: list<int32>``, same length, Hugging Face causal-LM convention: the model compares its prediction
  after position j-1 with ``labels[j]``; -100 means no loss; ``labels[0]`` is never used;
- ``switched: list<int8>``, same length: 1 where the input token belongs to a switched word.

Every file is written to a temporary name and renamed into place; a finished shard is never rewritten. The
manifest is written last, so a directory without one holds no finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.errors import InputError
from prealign.textio import atomic_write, atomic_write_text

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IGNORE_INDEX = -100
SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("switched", pa.list_(pa.int8()), nullable=False),
    ]
)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Rows:
    """Rows as flat arrays with offsets (row r is ``[offsets[r], offsets[r + 1])``)."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    switched: np.ndarray  # int8
    offsets: np.ndarray  # int64, n_rows + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def slice(self, start: int, stop: int) -> Rows:
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return Rows(
            self.input_ids[lo:hi], self.labels[lo:hi], self.switched[lo:hi], self.offsets[start : stop + 1] - lo
        )

    def to_table(self) -> pa.Table:
        off = pa.array(self.offsets.astype(np.int32))
        cols = [
            pa.ListArray.from_arrays(off, pa.array(self.input_ids, pa.int32())),
            pa.ListArray.from_arrays(off, pa.array(self.labels, pa.int32())),
            pa.ListArray.from_arrays(off, pa.array(self.switched, pa.int8())),
        ]
        return pa.Table.from_arrays(cols, schema=SCHEMA)


def write_shard(path: Path, rows: Rows) -> dict[str, Any]:
    """Write one shard atomically; returns its manifest entry (file, rows, tokens, sha256)."""
    table = rows.to_table()

    def write(fh) -> None:
        with pa.ipc.new_stream(fh, SCHEMA) as writer:
            writer.write_table(table, max_chunksize=max(len(rows), 1))

    atomic_write(path, write)
    return {"file": path.name, "rows": len(rows), "tokens": int(len(rows.input_ids)), "sha256": file_sha256(path)}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (the last file of a run)."""
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a shard directory (InputError when missing or unreadable)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError("not a shard directory: no manifest.json", directory)
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable manifest: {exc}", path) from exc
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"unsupported schema_version {manifest.get('schema_version')!r}", path)
    return manifest


def read_shard(path: Path) -> pa.Table:
    """One shard as an Arrow table."""
    try:
        with pa.OSFile(str(path), "rb") as fh:
            return pa.ipc.open_stream(fh).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"unreadable shard: {exc}", path) from exc


def shard_paths(directory: Path) -> list[Path]:
    """The manifest's shard files, in order."""
    manifest = read_manifest(directory)
    return [Path(directory) / s["file"] for s in manifest["shards"]]


def check_shards(directory: Path) -> list[str]:
    """Problems found when checking every shard against the manifest (row counts, sha256); [] when sound."""
    manifest = read_manifest(directory)
    problems = []
    for entry in manifest["shards"]:
        path = Path(directory) / entry["file"]
        if not path.is_file():
            problems.append(f"{entry['file']}: missing")
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 differs from the manifest")
        rows = read_shard(path).num_rows
        if rows != entry["rows"]:
            problems.append(f"{entry['file']}: {rows} rows, manifest says {entry['rows']}")
    return problems


def existing_run(directory: Path) -> bool:
    """True when ``directory`` holds another run's output (a manifest or shard files)."""
    directory = Path(directory)
    if not directory.exists():
        return False
    return (directory / MANIFEST).exists() or any(p.name.startswith("shard-") for p in directory.iterdir())


def clear_run(directory: Path) -> None:
    """Remove a previous run's manifest and shards (for ``--overwrite``); other files stay."""
    for p in Path(directory).iterdir():
        if p.name == MANIFEST or (p.name.startswith("shard-") and p.suffix == ".arrow"):
            os.unlink(p)


def rows_from_lists(sequences: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Rows:
    """Rows from per-row (input_ids, labels, switched) arrays."""
    lengths = np.array([len(s[0]) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(i: int, dtype: type) -> np.ndarray:
        return np.concatenate([s[i] for s in sequences]).astype(dtype) if sequences else np.zeros(0, dtype)

    return Rows(cat(0, np.int32), cat(1, np.int32), cat(2, np.int8), offsets)
