"""What the pretraining loop reads: the held-out split, the training row stream, and batches made ahead.

Split. Rows are numbered globally in manifest order (shard by shard). ``max(1, round(eval_fraction * rows))``
rows (never all of them; none with ``eval_fraction`` 0 or a single row) are held out for evaluation, evenly
spaced over the whole corpus, so every input file of a ``switch a.txt b.txt`` run is evaluated, whatever its
place in the shards. Evaluation reads ``limit`` of them, again evenly spaced, always the same ones: eval
losses are comparable across steps, seeds and runs.

Training rows. Each epoch is one global permutation of the training rows of every shard, drawn from
``(seed, epoch)`` (:func:`prealign.shards.plan_rows`), so a batch mixes all inputs. The position in the stream
is (epoch, rows consumed), from which the order is replayed exactly on resume.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from prealign.errors import InputError
from prealign.shards import ShardReader, plan_rows
from prealign.train.batches import Row

T = TypeVar("T")


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``k`` distinct indices in ``[0, n)``, evenly spaced (``k <= n``)."""
    return (np.arange(k, dtype=np.int64) * n + n // 2) // k if k else np.zeros(0, np.int64)


@dataclass
class Split:
    """The rows of a shard directory: files and row counts by shard, held-out and training global row numbers."""

    files: list[str]
    shard_rows: list[int]
    eval_rows: np.ndarray
    train_rows: np.ndarray


def split_rows(manifest: dict[str, Any], eval_fraction: float) -> Split:
    """Hold out evenly spaced rows of the whole corpus (see the module docstring)."""
    files = [str(s["file"]) for s in manifest["shards"]]
    shard_rows = [int(s["rows"]) for s in manifest["shards"]]
    total = sum(shard_rows)
    if not total:
        raise InputError("the shard directory holds no rows", manifest.get("_dir"))
    k = 0 if eval_fraction <= 0 or total < 2 else min(total - 1, max(1, round(eval_fraction * total)))
    held = evenly_spaced(total, k)
    keep = np.ones(total, dtype=bool)
    keep[held] = False
    return Split(files, shard_rows, held, np.flatnonzero(keep))


def eval_rows(directory: Path, split: Split, limit: int) -> list[Row]:
    """``limit`` held-out rows, evenly spaced over them (copies, in corpus order)."""
    chosen = split.eval_rows[evenly_spaced(len(split.eval_rows), min(limit, len(split.eval_rows)))]
    shard, row = plan_rows(split.shard_rows, shuffle=False, seed=0, epoch=0, rows=chosen)
    reader = ShardReader(directory, split.files, split.shard_rows)
    out = []
    for i, r in zip(shard.tolist(), row.tolist(), strict=True):
        ids, labels, _ = reader.row(i, r)
        out.append((ids.copy(), labels.copy()))
    return out


class TrainStream:
    """Training rows, epoch after epoch, in one global shuffled order per epoch; ``position`` says where it is."""

    def __init__(self, directory: Path, split: Split, seed: int) -> None:
        self.split, self.seed = split, seed
        self.reader = ShardReader(directory, split.files, split.shard_rows)
        self.rows_per_epoch = len(split.train_rows)
        self.epoch, self.consumed = 0, 0
        self._order: tuple[np.ndarray, np.ndarray] | None = None

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "rows_consumed": self.consumed}

    def seek(self, epoch: int, rows_consumed: int) -> None:
        """Continue at row ``rows_consumed`` of ``epoch``'s order."""
        self.epoch, self.consumed = epoch, rows_consumed
        self._order = None

    def take(self, n: int) -> list[Row]:
        out: list[Row] = []
        while len(out) < n:
            if self.consumed >= self.rows_per_epoch:
                self.seek(self.epoch + 1, 0)
            if self._order is None:
                self._order = plan_rows(
                    self.split.shard_rows, shuffle=True, seed=self.seed, epoch=self.epoch, rows=self.split.train_rows
                )
            shard, row = self._order
            stop = min(self.rows_per_epoch, self.consumed + n - len(out))
            for i, r in zip(shard[self.consumed : stop].tolist(), row[self.consumed : stop].tolist(), strict=True):
                ids, labels, _ = self.reader.row(i, r)
                out.append((ids, labels))
            self.consumed = stop
        return out


class Prefetcher(Generic[T]):
    """Items of ``make()`` made ``depth`` ahead in a background thread (``depth`` 0: made on demand, in the
    caller's thread). Order is kept, so the training order does not depend on it. ``close()`` stops the thread."""

    def __init__(self, make: Callable[[], T], depth: int) -> None:
        self.make, self.depth = make, depth
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="prealign-prefetch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: tuple[bool, Any] = (True, self.make())
            except BaseException as exc:  # handed to the consumer, raised there
                item = (False, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return

    def next(self) -> T:
        if self._thread is None:
            return self.make()
        ok, value = self._queue.get()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
