"""Stages of file-writing tasks, the way the corpus jobs run (``extract-lexicon``, ``align``).

A stage is a list of :class:`Task`: a function, its arguments and the one file it writes last. A task is done
when that file exists (every task writes to a temporary name and renames, so a file that exists is whole),
and a run that starts again skips it: that is the whole resume mechanism. Task functions are plain functions
of files: they run in this process or as Ray tasks alike (:mod:`prealign.pipelines.executor`), and return a
small stats dict, which they also store in their output (``.npz`` files hold it as ``stats``) so that a
skipped task's stats can be read back.

Every task checks first that the work directory is there, so that a cluster node which does not see the
driver's disk fails with a sentence that says so rather than a missing file further on.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prealign.pipelines import faults
from prealign.pipelines.executor import Executor
from prealign.pipelines.progress import Progress
from prealign.textio import atomic_write


@dataclass(frozen=True)
class Task:
    """``func(*args)`` writes ``output`` (last, atomically) and returns its stats."""

    output: Path
    func: Callable[..., dict[str, Any]]
    args: tuple = ()
    cost: float = 0.0  # tasks of a stage are submitted costliest first, so that the stage ends on short ones


@dataclass
class StageTimes:
    """Per stage, for the job's stats: seconds, this process's peak memory (MiB) and the work directory's size
    (MiB) at its end."""

    seconds: dict[str, float] = field(default_factory=dict)
    memory_mib: dict[str, float] = field(default_factory=dict)
    disk_mib: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float, work: Path | None = None) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 2)
        self.memory_mib[name] = peak_rss_mib()
        if work is not None:
            self.disk_mib[name] = max(self.disk_mib.get(name, 0.0), directory_mib(work))


def directory_mib(path: Path) -> float:
    """The size of the files under ``path``, MiB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:  # removed while we looked
                pass
    return round(total / 2**20, 1)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def save_npz(path: Path, stats: dict[str, Any] | None = None, **arrays: np.ndarray) -> None:
    """``arrays`` (and ``stats`` as JSON) into ``path``, atomically."""
    if stats is not None:
        arrays["stats"] = np.frombuffer(json.dumps(stats).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def save_npy(path: Path, array: np.ndarray) -> None:
    """One array into ``path`` (memory-mappable with ``np.load(mmap_mode="r")``), atomically."""
    atomic_write(path, lambda fh: np.save(fh, array))


def read_stats(path: Path) -> dict[str, Any]:
    """The stats a task stored in its ``.npz`` output ({} for other files)."""
    if Path(path).suffix != ".npz":
        return {}
    with np.load(path) as z:
        return json.loads(bytes(z["stats"]).decode("utf-8")) if "stats" in z.files else {}


def run_task(work: str, func: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one task where the work directory is visible (see the module doc)."""
    if not os.path.isdir(work):
        raise RuntimeError(
            f"the work directory {work} is not visible on this node ({os.uname().nodename}): on a cluster, "
            "write the output to storage that every node mounts at the same path (docs/cluster.md)"
        )
    return func(*args)


run_task.runs_stage_task = True  # type: ignore[attr-defined]  # read by the Ray test hook (ray_runtime)


class StageRunner:
    """Runs stages of :class:`Task` on an executor, skipping finished tasks, with a bar and times per stage."""

    def __init__(self, ex: Executor, work: Path, bar: Progress, times: StageTimes | None = None) -> None:
        self.ex, self.work, self.bar = ex, Path(work), bar
        self.times = times if times is not None else StageTimes()

    def run(self, name: str, tasks: Iterable[Task], desc: str | None = "") -> list[dict[str, Any]]:
        """Run the tasks whose output is missing (at most ``2 * workers`` submitted ahead of the one awaited);
        returns every task's stats, in task order. A bar named ``desc`` (default: ``name``) counts the tasks;
        ``desc=None``: no bar (the caller shows one)."""
        started = time.perf_counter()
        order: Iterable[tuple[int, Task]] = enumerate(tasks)
        if desc is not None:  # a list: submitted costliest first (stats still come back in task order)
            order = sorted(order, key=lambda it: (-it[1].cost, it[0]))
        stats: dict[int, dict[str, Any]] = {}
        window: deque[tuple[int, Any]] = deque()
        total = None if desc is None else len(order)
        with self.bar.stage(desc or name, total=total) if desc is not None else nullcontext(lambda: None) as tick:

            def settle() -> None:
                index, handle = window.popleft()
                stats[index] = self.ex.get([handle])[0]
                tick()
                faults.reached(f"stage-{name}")

            for index, task in order:
                if task.output.exists():
                    stats[index] = read_stats(task.output)
                    tick()
                    continue
                args = (str(self.work), task.func, *task.args)
                window.append((index, self.ex.map_handles(run_task, [args])[0]))
                while len(window) > 2 * self.ex.workers:
                    settle()
            while window:
                settle()
        self.times.add(name, time.perf_counter() - started, self.work)
        return [stats[i] for i in range(len(stats))]

    def run_one(self, name: str, task: Task) -> dict[str, Any]:
        """A stage of one task."""
        return self.run(name, [task])[0]


def words_arrays(prefix: str, words: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as two arrays (UTF-8 bytes and int64 offsets), to keep npz files free of pickles."""
    arr = pa.array(list(words), pa.large_string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1)
    data = arr.buffers()[2]
    return {f"{prefix}_offsets": offsets, f"{prefix}_data": np.frombuffer(data, np.uint8) if data else np.zeros(0)}


def read_words(z: Any, prefix: str) -> pa.Array:
    """The strings :func:`words_arrays` stored (``z``: the open npz)."""
    offsets = np.asarray(z[f"{prefix}_offsets"], dtype=np.int64)
    data = np.asarray(z[f"{prefix}_data"], dtype=np.uint8)
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
