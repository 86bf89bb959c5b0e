"""A job's work directory: what it finished, on disk, so that a killed job can be started again and resume.

The directory holds the job's intermediate files and ``journal.jsonl``. Every file is written under a
temporary name and renamed into place (:func:`prealign.textio.atomic_write`); only then does the journal
record it as finished, one JSON line appended and flushed to disk. A kill at any moment therefore leaves
either a finished file that the journal names, or a file (or temporary file) that it does not name, which
the next run ignores and writes again. The journal's first line is the job's fingerprint (its inputs, with
their sizes and modification times, and every option that changes the work): a directory left by a job with
other arguments is cleared, never resumed. A torn last line (a crash in mid-write) is ignored.

While a job runs it holds an exclusive ``flock`` on ``lock`` in the directory, so a second run of the same
job fails at once instead of mixing its files in; the kernel drops the lock when the process dies, however
it dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prealign import __version__
from prealign.errors import InputError

JOURNAL = "journal.jsonl"
LOCK = "lock"


class WorkDirBusy(InputError):
    """Another run of the same job holds the work directory (its files are left alone)."""


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the fingerprint records of an input file: resolved path, size, modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(job: dict[str, Any]) -> str:
    """A stable digest of a job description (JSON-able values; the tool version is added)."""
    text = json.dumps({"tool_version": __version__, **job}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class WorkDir:
    """The journal and files of one job; use :meth:`session` to hold it while the job runs."""

    def __init__(self, path: Path, job_fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = job_fingerprint
        self.events: list[dict[str, Any]] = []
        self._lock: int | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def session(self) -> Iterator[WorkDir]:
        """Lock the directory (creating it), load the journal, or start a new one for another job."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkDirBusy("another run of this job is using its work directory", self.path) from None
        self._lock = fd
        try:
            self._load()
            yield self
        finally:
            self._lock = None
            os.close(fd)

    def _load(self) -> None:
        events = read_journal(self.path)
        if events and events[0].get("fingerprint") == self.fingerprint:
            self.events = events[1:]
            return
        for p in self.path.iterdir():  # another job's work, or none: start afresh
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        self.events = []
        self._append({"fingerprint": self.fingerprint})

    @property
    def resumed(self) -> bool:
        """True when the journal had finished work in it when the session began."""
        return bool(self.events)

    def record(self, event: dict[str, Any]) -> None:
        """Append one finished step to the journal (durably: flushed and fsynced)."""
        self._append(event)
        self.events.append(event)

    def _append(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event) + "\n").encode("utf-8")
        fd = os.open(self.path / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The latest event with the key ``kind``, or None."""
        for event in reversed(self.events):
            if kind in event:
                return event
        return None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if kind in e]

    def remove(self) -> None:
        """Delete the directory (the job is done, or its input was bad: nothing worth resuming)."""
        shutil.rmtree(self.path, ignore_errors=True)

    @contextmanager
    def kept_unless_bad_input(self) -> Iterator[WorkDir]:
        """:meth:`session`, then: removed when the job succeeds or fails on bad input (nothing to resume),
        kept when it fails otherwise (killed, interrupted, a lost cluster) for the next run to resume."""
        try:
            with self.session():
                yield self
        except WorkDirBusy:
            raise
        except InputError:
            self.remove()
            raise
        self.remove()


def read_journal(directory: Path) -> list[dict[str, Any]]:
    """The journal's events (the fingerprint first), up to the first line that is not a whole JSON object."""
    path = Path(directory) / JOURNAL
    if not path.is_file():
        return []
    events = []
    for line in path.read_bytes().split(b"\n"):
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            break
        if not isinstance(event, dict):
            break
        events.append(event)
    return events
