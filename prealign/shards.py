"""Code-switched training shards: schema, atomic writer, manifest, and checks.

A shard directory holds ``manifest.json`` and ``shard-00000.arrow``, ... in Arrow IPC *stream* format (what
Hugging Face ``datasets`` reads with ``load_dataset("arrow", ...)``). Each row is a training sequence:

- ``input_ids: list<int32>``: the (code-switched) input tokens;
- ``labels: list<int32>``, same length, Hugging Face causal-LM convention: the model compares its prediction
  after position j-1 with ``labels[j]``; -100 means no loss; ``labels[0]`` is never used;
- ``switched: list<int8>``, same length: 1 where the input token belongs to a switched word.

Every file is written to a temporary name and renamed into place; a finished shard is never rewritten. The
manifest is written last, so a directory without one holds no finished run.

Every reader goes through :func:`read_manifest`, which refuses (one line naming ``manifest.json``) a manifest
that is not what this module writes: a shard ``file`` that is not a plain ``shard-NNNNN.arrow`` name (so no
reader ever opens a file outside the directory), row or token counts that are not non-negative integers, a
``schema_version`` other than this one, a tokenizer ``vocab_size`` that is not a positive integer.

Beside the manifest, :func:`write_dataset_card` writes a ``README.md`` whose YAML header names the shard files,
so that ``datasets.load_dataset(DIR)`` reads the shards and not ``manifest.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.errors import InputError
from prealign.textio import atomic_write, atomic_write_text

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CARD = "README.md"
CARD_MARK = "<!-- written by prealign-data: a dataset card for Hugging Face datasets -->"
SHARD_GLOB = "shard-*.arrow"
SHARD_FILE = re.compile(r"shard-[0-9]{5,}\.arrow")
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
    """The manifest of a shard directory, checked (InputError naming ``manifest.json`` when missing, unreadable
    or not a manifest this module writes; see the module doc)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError("not a shard directory: no manifest.json", directory)
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable manifest: {exc}", path) from exc
    problem = manifest_problem(manifest)
    if problem:
        raise InputError(f"bad manifest: {problem}", path)
    return manifest


def _count(value: Any) -> bool:
    """True for a non-negative JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    version = manifest.get("schema_version")
    if _count(version) and version > SCHEMA_VERSION:
        return f"schema_version {version} is newer than this prealign-data reads ({SCHEMA_VERSION}): upgrade it"
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return f"unsupported schema_version {version!r} (this prealign-data reads {SCHEMA_VERSION})"
    tokenizer = manifest.get("tokenizer")
    vocab = tokenizer.get("vocab_size") if isinstance(tokenizer, dict) else None
    if not _count(vocab) or vocab == 0:
        return f"tokenizer vocab_size {vocab!r} is not a positive integer"
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return "'shards' is not a list"
    seen: set[str] = set()
    for k, entry in enumerate(shards):
        problem = _entry_problem(entry)
        if problem is None and entry["file"] in seen:
            problem = f"file {entry['file']!r} is listed twice"
        if problem:
            return f"shards[{k}]: {problem}"
        seen.add(entry["file"])
    return None


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"not an object but {json.dumps(entry)}"
    for key in ("file", "rows", "tokens", "sha256"):
        if key not in entry:
            return f"no {key!r}"
    name = entry["file"]
    if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):
        return f"file {name!r} is not a shard file name (shard-NNNNN.arrow, in the directory itself)"
    for key in ("rows", "tokens"):
        if not _count(entry[key]):
            return f"{key} {entry[key]!r} is not a non-negative integer"
    if not isinstance(entry["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        return f"sha256 {entry['sha256']!r} is not a hex SHA-256"
    return None


def read_shard(path: Path) -> pa.Table:
    """One shard as an Arrow table."""
    try:
        with pa.OSFile(str(path), "rb") as fh:
            return pa.ipc.open_stream(fh).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"unreadable shard: {exc}", path) from exc


def check_shards(directory: Path) -> list[str]:
    """Problems found when checking every shard against the manifest (sha256, row and token counts, token ids
    inside the manifest's vocab_size); [] when sound. InputError for an unreadable manifest."""
    manifest = read_manifest(directory)
    vocab_size = manifest["tokenizer"]["vocab_size"]
    problems = []
    for entry in manifest["shards"]:
        path = Path(directory) / entry["file"]
        if not path.is_file():
            problems.append(f"{entry['file']}: missing")
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 differs from the manifest")
        try:
            rows = read_rows(path)
        except InputError as exc:
            problems.append(f"{entry['file']}: {exc.message}")
            continue
        if len(rows) != entry["rows"]:
            problems.append(f"{entry['file']}: {len(rows)} rows, manifest says {entry['rows']}")
        if len(rows.input_ids) != entry["tokens"]:
            problems.append(f"{entry['file']}: {len(rows.input_ids)} tokens, manifest says {entry['tokens']}")
        if len(rows.input_ids) and (int(rows.input_ids.min()) < 0 or int(rows.input_ids.max()) >= vocab_size):
            problems.append(
                f"{entry['file']}: token ids from {int(rows.input_ids.min())} to {int(rows.input_ids.max())}, "
                f"outside [0, {vocab_size}) (the manifest's tokenizer vocab_size)"
            )
    return problems


def require_sound_shards(directory: Path) -> None:
    """:func:`check_shards`, raising one :class:`InputError` ("damaged shard directory: ...", the first three
    problems) when a shard is missing, changed or unreadable; for commands that read every shard next."""
    try:
        problems = check_shards(directory)
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"damaged shard directory: {reason}", directory) from None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(f"damaged shard directory: {'; '.join(problems[:3])}{more}", directory)


def existing_run(directory: Path) -> bool:
    """True when ``directory`` holds another run's output (a manifest or shard files)."""
    directory = Path(directory)
    if not directory.exists():
        return False
    return (directory / MANIFEST).exists() or any(p.name.startswith("shard-") for p in directory.iterdir())


def card_config_name(manifest: dict[str, Any]) -> str:
    """The card's config name, ``shards-`` and a digest of every shard's sha256: datasets caches a card-configured
    directory under its name and config, not its files, so a shared name ("default") would hand back another
    directory's rows (seen with datasets 5.2: two ``shards/`` directories, the second read as the first)."""
    digest = hashlib.sha256("".join(s["sha256"] for s in manifest["shards"]).encode("ascii")).hexdigest()
    return f"shards-{digest[:16]}"


def card_text(manifest: dict[str, Any]) -> str:
    """A Hugging Face dataset card: its YAML ``configs`` block makes ``load_dataset(DIR)`` read the shards only."""
    return "\n".join(
        [
            "---",
            "configs:",
            f"- config_name: {card_config_name(manifest)}",
            "  default: true",
            "  data_files:",
            "  - split: train",
            f"    path: {SHARD_GLOB}",
            "---",
            CARD_MARK,
            "",
            "# Code-switched training shards",
            "",
            f"Written by prealign-data {manifest.get('version', '')}: {len(manifest['shards'])} shard(s), "
            f"{manifest.get('totals', {}).get('rows', '?')} rows; `manifest.json` records how they were made.",
            "Rows: `input_ids`, `labels` (Hugging Face causal-LM convention, -100: no loss), `switched`.",
            "",
            "```python",
            "from datasets import load_dataset",
            'ds = load_dataset("path/to/this/directory", split="train")',
            "```",
            "",
        ]
    )


def card_is_ours(path: Path) -> bool:
    """True when ``path`` (a README.md) is absent or a dataset card this module wrote (so it may be replaced)."""
    if not path.exists():
        return True
    try:
        return path.is_file() and CARD_MARK in path.read_text("utf-8", errors="replace")
    except OSError:
        return False


def write_dataset_card(directory: Path, manifest: dict[str, Any]) -> bool:
    """Write ``README.md`` (atomically) unless the directory holds a README.md that this module did not write;
    returns whether it was written."""
    path = Path(directory) / CARD
    if not card_is_ours(path):
        return False
    atomic_write_text(path, card_text(manifest))
    return True


def rows_from_lists(sequences: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Rows:
    """Rows from per-row (input_ids, labels, switched) arrays."""
    lengths = np.array([len(s[0]) for s in sequences], dtype=np.int64)
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(i: int, dtype: type) -> np.ndarray:
        return np.concatenate([s[i] for s in sequences]).astype(dtype) if sequences else np.zeros(0, dtype)

    return Rows(cat(0, np.int32), cat(1, np.int32), cat(2, np.int8), offsets)


# --- Reading rows back: memory-mapped shards, plain iteration, a PyTorch dataset ---------------------------------


def _list_column(table: pa.Table, name: str, path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64, flat values) of a list column, zero-copy where Arrow allows."""
    if name not in table.column_names:
        raise InputError(f"shard has no column {name!r} (columns: {', '.join(table.column_names)})", path)
    column = table.column(name)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise InputError(f"column {name!r} is {column.type}, not a list", path)
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if array.null_count:
        raise InputError(f"column {name!r} has null rows", path)
    # ``offsets`` honours a slice offset; ``values`` is the whole child, which the offsets index into
    return array.offsets.to_numpy().astype(np.int64), array.values.to_numpy(zero_copy_only=False)


def table_rows(table: pa.Table, path: Path | None = None) -> Rows:
    """A shard table as :class:`Rows` (flat arrays, offsets from 0). A missing ``switched`` column reads as 0s."""
    offsets, input_ids = _list_column(table, "input_ids", path)
    label_offsets, labels = _list_column(table, "labels", path)
    if not np.array_equal(offsets - offsets[0], label_offsets - label_offsets[0]):
        raise InputError("labels and input_ids differ in length on some row", path)
    lo, hi = int(offsets[0]), int(offsets[-1])
    input_ids, labels = input_ids[lo:hi], labels[label_offsets[0] : label_offsets[-1]]
    if "switched" in table.column_names:
        sw_offsets, switched = _list_column(table, "switched", path)
        if not np.array_equal(offsets - offsets[0], sw_offsets - sw_offsets[0]):
            raise InputError("switched and input_ids differ in length on some row", path)
        switched = switched[sw_offsets[0] : sw_offsets[-1]]
    else:
        switched = np.zeros(hi - lo, dtype=np.int8)
    return Rows(input_ids, labels, switched, offsets - lo)


def read_rows(path: Path, expected_rows: int | None = None) -> Rows:
    """One shard, memory-mapped, as :class:`Rows` (InputError when unreadable or not ``expected_rows`` long)."""
    try:
        with pa.memory_map(str(path), "r") as source:
            table = pa.ipc.open_stream(source).read_all()
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"unreadable shard: {exc}", path) from exc
    rows = table_rows(table, path)
    if expected_rows is not None and len(rows) != expected_rows:
        raise InputError(f"{len(rows)} rows, manifest says {expected_rows}", path)
    return rows


def iter_rows(directory: Path) -> Iterator[dict[str, np.ndarray]]:
    """Every row of a shard directory in manifest order: ``input_ids``/``labels`` (int32), ``switched`` (int8).

    Shards are read one at a time (memory-mapped); the arrays are read-only views into the shard.
    """
    directory = Path(directory)
    for entry in read_manifest(directory)["shards"]:
        rows = read_rows(directory / entry["file"], entry["rows"])
        o = rows.offsets
        for r in range(len(rows)):
            lo, hi = o[r], o[r + 1]
            yield {"input_ids": rows.input_ids[lo:hi], "labels": rows.labels[lo:hi], "switched": rows.switched[lo:hi]}


def check_tokenizer(directory: Path, sha256: str) -> dict[str, Any]:
    """The manifest's tokenizer record; InputError unless it records ``sha256`` (see ``TokenizerInfo.sha256``)."""
    manifest = read_manifest(directory)
    recorded = (manifest.get("tokenizer") or {}).get("sha256")
    path = Path(directory) / MANIFEST
    if not recorded:
        raise InputError("the manifest records no tokenizer sha256", path)
    if recorded != sha256:
        raise InputError(
            f"shards were made with another tokenizer (sha256 {recorded[:12]}..., this one is {sha256[:12]}...)", path
        )
    return manifest["tokenizer"]


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else torch.distributed's when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialised else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
    return rank, world_size


def plan_rows(
    shard_rows: Sequence[int],
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    part: int = 0,
    parts: int = 1,
    limit: int | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows part ``part`` of ``parts`` reads, in order: (manifest shard index, row index in the shard) arrays.

    The global order is one permutation of all rows of all shards (of ``rows``, global row numbers in manifest
    order, when given), drawn from ``SeedSequence((seed, epoch))``; the manifest order when ``shuffle`` is false.
    A global permutation mixes every input in every batch, where shard-by-shard reading would give batches of
    one input file at a time. Position g of that order belongs to part ``g % parts``; positions from ``limit``
    on are dropped. Memory: 8 bytes per row while the order is made (80 MB for ten million rows).
    """
    starts = np.zeros(len(shard_rows) + 1, dtype=np.int64)
    np.cumsum(np.asarray(shard_rows, dtype=np.int64), out=starts[1:])
    order = np.arange(starts[-1], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if shuffle:
        order = order[np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(len(order))]
    order = order[: len(order) if limit is None else limit][part::parts]
    shard = np.searchsorted(starts, order, side="right") - 1
    return shard, order - starts[shard]


class ShardReader:
    """Rows of a shard directory by (shard, row): each shard memory-mapped on first use and kept mapped, so random
    access across shards costs no copy (the operating system pages rows in and out)."""

    def __init__(self, directory: Path, files: Sequence[str], shard_rows: Sequence[int]) -> None:
        self.directory, self.files, self.shard_rows = Path(directory), list(files), list(shard_rows)
        self._open: dict[int, Rows] = {}

    def shard(self, i: int) -> Rows:
        rows = self._open.get(i)
        if rows is None:
            rows = self._open[i] = read_rows(self.directory / self.files[i], self.shard_rows[i])
        return rows

    def row(self, i: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, labels, switched) of row ``r`` of shard ``i``: read-only views into the mapped shard."""
        rows = self.shard(i)
        lo, hi = rows.offsets[r], rows.offsets[r + 1]
        return rows.input_ids[lo:hi], rows.labels[lo:hi], rows.switched[lo:hi]


@functools.cache
def _define_shard_dataset() -> type:
    """Build :class:`ShardDataset` (subclassing torch's IterableDataset, so torch is imported only here)."""
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class ShardDataset(IterableDataset):
        """The rows of a shard directory as ``{"input_ids", "labels": LongTensor[L], "switched": BoolTensor[L]}``.

        Each epoch has one global row order (see :func:`plan_rows`): all rows of all shards permuted from
        ``(seed, epoch)``, or the manifest order when ``shuffle`` is false.
        Position g of that order goes to rank ``g % world_size``, and
        within a rank to DataLoader worker ``(g // world_size) % num_workers``: the parts are disjoint and together
        hold every row once, and the rows a rank sees do not depend on its number of workers. ``rank`` and
        ``world_size`` default to torch.distributed's (when initialised at construction) or 0 and 1.
        ``drop_last`` drops the last ``rows % world_size`` rows of each epoch's order, so every rank gets the
        same number of rows (and, with equal workers and batch size, the same number of batches).

        Shards are memory-mapped on first use (:class:`ShardReader`). Call :meth:`set_epoch` before each epoch
        (with ``persistent_workers`` the workers keep the epoch they started with).
        """

        def __init__(
            self,
            directory: Path | str,
            *,
            shuffle: bool = True,
            seed: int = 0,
            epoch: int = 0,
            rank: int | None = None,
            world_size: int | None = None,
            drop_last: bool = False,
        ) -> None:
            super().__init__()
            self.directory = Path(directory)
            self.manifest = read_manifest(self.directory)
            self.files = [str(s["file"]) for s in self.manifest["shards"]]
            self.shard_rows = [int(s["rows"]) for s in self.manifest["shards"]]
            self.shuffle, self.seed, self.epoch, self.drop_last = shuffle, seed, epoch, drop_last
            self.rank, self.world_size = resolve_rank(rank, world_size)

        def set_epoch(self, epoch: int) -> None:
            """Use the row order of ``epoch`` from the next iteration on."""
            self.epoch = epoch

        def _limit(self) -> int:
            total = sum(self.shard_rows)
            return total - total % self.world_size if self.drop_last else total

        def __len__(self) -> int:
            """Rows this rank gets in an epoch (over all its workers)."""
            return max(0, (self._limit() - self.rank + self.world_size - 1) // self.world_size)

        def __iter__(self) -> Iterator[dict[str, Any]]:
            info = get_worker_info()
            worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
            plan = plan_rows(
                self.shard_rows,
                shuffle=self.shuffle,
                seed=self.seed,
                epoch=self.epoch,
                part=worker * self.world_size + self.rank,
                parts=workers * self.world_size,
                limit=self._limit(),
            )
            reader = ShardReader(self.directory, self.files, self.shard_rows)
            for i, r in zip(*(a.tolist() for a in plan), strict=True):
                ids, labels, switched = reader.row(i, r)
                yield {
                    "input_ids": torch.from_numpy(ids.astype(np.int64)),
                    "labels": torch.from_numpy(labels.astype(np.int64)),
                    "switched": torch.from_numpy(switched != 0),
                }

    # importable (and picklable, for spawned DataLoader workers) as prealign.shards.ShardDataset
    ShardDataset.__qualname__ = "ShardDataset"
    ShardDataset.__module__ = __name__
    return ShardDataset


def __getattr__(name: str) -> Any:
    # ShardDataset is built on first use, so that importing this module does not import torch (about a second)
    if name == "ShardDataset":
        globals()[name] = cls = _define_shard_dataset()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
