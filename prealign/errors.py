"""The one error type that user-facing commands turn into a one-line message and exit code 2."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class InputError(Exception):
    """Bad user input: names the file and, where known, the 1-based line (or row)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message


_FULL = ("No space left on device", "StorageFull", "Disk quota exceeded")


def disk_full(exc: BaseException) -> str | None:
    """``PATH: no space left on device`` when ``exc`` (or what caused it: an OSError from Python, pyarrow's or
    safetensors' own IO errors, a Ray task's wrapped error) is a full disk or quota; None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            where = current.filename
            return f"{where}: no space left on device" if where else "no space left on device"
        if any(text in str(current) for text in _FULL):
            return "no space left on device"
        current = current.__cause__ or current.__context__
    return None


class DiskFull(InputError):
    """No space left on the device (or over quota) while writing: one line naming the file, exit code 2."""


@contextmanager
def disk_full_is_input_error(where: str | Path) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFull` naming the file that did not fit (or
    ``where`` when the error does not say); other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        path, named, _ = full.rpartition(": ")
        raise DiskFull("no space left on device", path if named else where) from None
