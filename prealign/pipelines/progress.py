"""Progress bars for job stages (tqdm on stderr; silent when disabled).

A stage that reads input files can show its progress in bytes against their total size
(:meth:`Progress.iterate_bytes`), which gives the user an ETA: :class:`BytesRead` tells how far this process
has read into the files, from the offsets of its open descriptors (``/proc/self/fdinfo``, Linux), whatever
reads them (text, compressed text, Parquet), so the readers need no change. Where that is not available the
bar counts items instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
PathLike = str | os.PathLike[str]


class BytesRead:
    """How many bytes of ``paths`` this process has read so far: per file, the largest offset seen on a
    descriptor open on it (a file read to the end and closed counts whole once :meth:`finish` is called)."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.seen = {os.path.realpath(p): 0 for p in paths}
        self.total = sum(os.path.getsize(p) for p in self.seen)

    @staticmethod
    def available() -> bool:
        return os.path.isdir("/proc/self/fdinfo")

    def __call__(self) -> int:
        """Bytes read so far (monotone), at most ``total``."""
        try:
            fds = os.listdir("/proc/self/fd")
        except OSError:
            return sum(self.seen.values())
        for fd in fds:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target in self.seen:
                    self.seen[target] = max(self.seen[target], _offset(fd))
            except (OSError, ValueError):  # closed meanwhile
                continue
        return min(sum(self.seen.values()), self.total)

    def finish(self) -> int:
        self.seen = {p: os.path.getsize(p) for p in self.seen}
        return self.total


def _offset(fd: str) -> int:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("pos:"):
                return int(line.split()[1])
    return 0


class Progress:
    """One bar per stage; ``enabled=False`` makes every method a no-op."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def iterate(self, items: Iterable[T], desc: str, unit: str = "batch") -> Iterator[T]:
        """Yield ``items`` while counting them on a bar."""
        if not self.enabled:
            yield from items
            return
        with tqdm(desc=desc, unit=unit, leave=True, dynamic_ncols=True) as bar:
            for item in items:
                yield item
                bar.update(1)

    def iterate_bytes(
        self, items: Iterable[T], desc: str, paths: Sequence[PathLike], unit: str = "batch"
    ) -> Iterator[T]:
        """Yield ``items`` (made by reading ``paths``) while showing the bytes read of the files' total size,
        with the items counted beside it; counts items alone where bytes cannot be known."""
        if not self.enabled or not paths or not BytesRead.available():
            yield from self.iterate(items, desc, unit)
            return
        read = BytesRead(paths)
        with tqdm(
            desc=desc, total=read.total, unit="B", unit_scale=True, unit_divisor=1024, leave=True, dynamic_ncols=True
        ) as bar:
            count = 0
            for item in items:
                yield item
                count += 1
                bar.set_postfix_str(f"{unit} {count}")
                bar.update(read() - bar.n)
            bar.update(read.finish() - bar.n)

    @contextmanager
    def stage(self, desc: str, total: int | None = None) -> Iterator[Callable[[], None]]:
        """A stage with ``total`` steps; the context gives a function that advances it by one."""
        if not self.enabled:
            yield lambda: None
            return
        with tqdm(desc=desc, total=total if total is not None else 1, leave=True, dynamic_ncols=True) as bar:
            yield lambda: bar.update(1)
            if total is None:
                bar.update(1)
