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

A work directory only ever loses files the job made: the journal and the lock, the files its events name
(``"file"`` keys, at any depth), files matching the job's naming scheme (``names``, glob patterns such as
``batch-*.npz``) and the temporary files of all of these (``.NAME.*.tmp``, :func:`prealign.textio.temp_file`),
and the subdirectories the job names (``dirs``: one per stage, each with the patterns of the files it may hold,
relative to it; a stage directory holding anything else is refused like a foreign file).
A work directory that is a symbolic link, is not a directory, or holds anything else (another subdirectory, a
symbolic link, a file of another name) is refused before
anything is touched (:class:`WorkDirRefused`, one line, exit code 2): it is not the job's to empty.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prealign import __version__
from prealign.errors import InputError

JOURNAL = "journal.jsonl"
LOCK = "lock"


class WorkDirBusy(InputError):
    """Another run of the same job holds the work directory (its files are left alone)."""


class WorkDirRefused(InputError):
    """The work directory is not one this job may use: a symbolic link, not a directory, or holding files the
    job did not make (nothing in it is touched)."""


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
    """The journal and files of one job; use :meth:`session` to hold it while the job runs. ``names``: glob
    patterns of the files the job writes into it besides those its journal events name (see the module doc)."""

    def __init__(
        self,
        path: Path,
        job_fingerprint: str,
        names: Iterable[str] = (),
        dirs: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.fingerprint = job_fingerprint
        self.names = tuple(names)
        self.dirs = {name: tuple(patterns) for name, patterns in (dirs or {}).items()}
        self.events: list[dict[str, Any]] = []
        self._lock: int | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    def owns(self, name: str, named: set[str] | frozenset[str] = frozenset()) -> bool:
        """True when the entry ``name`` of the directory is one the job made (``named``: the files the
        journal's events name)."""
        if name.startswith(".") and name.endswith(".tmp"):  # a temporary file of one of the job's names
            name = name[1:].rsplit(".", 2)[0]
        if name in (JOURNAL, LOCK) or name in named:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.names)

    def check(self) -> None:
        """Refuse a work directory that is a symbolic link, not a directory, or holds files the job did not
        make (:class:`WorkDirRefused`); a missing one is fine."""
        if self.path.is_symlink():
            raise WorkDirRefused("the work directory is a symbolic link: remove it (nothing was deleted)", self.path)
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise WorkDirRefused("is in the way of the job's work directory: not a directory", self.path)
        named = journal_files(read_journal(self.path))
        foreign = sorted(p.name for p in self.path.iterdir() if not self._owned_entry(p, named))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise WorkDirRefused(
                f"the work directory holds files this job did not make ({foreign[0]}{more}): move them away "
                "(nothing was deleted)",
                self.path,
            )

    def _owned_entry(self, p: Path, named: set[str]) -> bool:
        if p.is_symlink():
            return False
        if p.is_dir():
            return p.name in self.dirs and self._stage_files_only(p, self.dirs[p.name])
        return self.owns(p.name, named)

    @staticmethod
    def _stage_files_only(directory: Path, patterns: tuple[str, ...]) -> bool:
        """True when everything under a stage directory matches its patterns (temporary files of them too)."""
        for root, subdirs, files in os.walk(directory):
            if any(os.path.islink(os.path.join(root, d)) for d in subdirs):
                return False
            for name in files:
                if os.path.islink(os.path.join(root, name)):
                    return False
                if name.startswith(".") and name.endswith(".tmp"):
                    name = name[1:].rsplit(".", 2)[0]
                relative = os.path.relpath(os.path.join(root, name), directory)
                if not any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns):
                    return False
        return True

    def _clear(self) -> None:
        """Delete the job's own files and stage directories (what :meth:`owns` says), keeping the lock."""
        named = journal_files(read_journal(self.path))
        for p in self.path.iterdir():
            if p.name != LOCK and self._owned_entry(p, named):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)

    @contextmanager
    def session(self) -> Iterator[WorkDir]:
        """Lock the directory (creating it), load the journal, or start a new one for another job."""
        self.check()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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
        self._clear()  # another job's work, or none: start afresh
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
        """Delete the job's files and the directory, once empty (the job is done, or its input was bad:
        nothing worth resuming). Files the job did not make are left, and the directory with them."""
        if self.path.is_symlink() or not self.path.is_dir():
            return
        self._clear()
        (self.path / LOCK).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # something else appeared in it while the job ran: not the job's to delete
            pass

    @contextmanager
    def kept_unless_bad_input(self) -> Iterator[WorkDir]:
        """:meth:`session`, then: removed when the job succeeds or fails on bad input (nothing to resume),
        kept when it fails otherwise (killed, interrupted, a lost cluster) for the next run to resume."""
        try:
            with self.session():
                yield self
        except (WorkDirBusy, WorkDirRefused):
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


def journal_files(events: list[dict[str, Any]]) -> set[str]:
    """The file names the events record: every ``"file"`` string, at any depth of an event."""
    names: set[str] = set()
    stack: list[Any] = list(events)
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("file"), str):
                names.add(value["file"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return names
