"""Checks on where a command will write, made before any work starts.

Every command calls :func:`check_outputs` with its input files and its output paths (by option name) before it
reads anything: an output that is one of the inputs (same resolved path, or the same inode through another
name or a hard link), two outputs that are one file, an output whose place is a directory (or a file where a
directory is wanted), or a place the user may not write into, is refused at once with one line naming the path
(:class:`prealign.errors.InputError`, exit code 2), so that a long job never ends by failing to write, and never
writes over its own input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from prealign.errors import InputError

PathLike = str | os.PathLike[str]


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same resolved path, or the same existing inode."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet)
        return False


def _nearest_existing(path: Path) -> Path:
    p = path.resolve().parent
    while not p.exists():
        p = p.parent
    return p


def check_writable_place(path: PathLike, what: str = "file") -> None:
    """Refuse ``path`` as an output ``what`` ("file" or "directory") when it cannot be written there.

    A file output must not be an existing directory; a directory output must not be an existing file; the
    nearest existing ancestor must be a directory this process may write into (missing parents are created by
    the writer).
    """
    p = Path(path)
    if what == "file" and p.is_dir():
        raise InputError("is a directory; the output must be a file path", p)
    if what == "directory" and p.exists() and not p.is_dir():
        raise InputError("exists and is not a directory", p)
    if p.exists():
        target = p if p.is_dir() else p.parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError("permission denied: cannot write here", p)
        return
    parent = _nearest_existing(p)
    if not parent.is_dir():
        raise InputError(f"cannot create it: {parent} is not a directory", p)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"permission denied: cannot create it in {parent}", p)


def check_outputs(
    inputs: Iterable[PathLike | None],
    outputs: Mapping[str, PathLike | None],
    directories: Iterable[str] = (),
) -> None:
    """Refuse, before any work, outputs that are inputs, that coincide, or that cannot be written.

    ``outputs`` maps an option name (``"-o"``, ``"--links"``) to its path (``None``: not given);
    ``directories`` names the options whose output is a directory (an input inside it is refused too).
    """
    ins = [Path(p) for p in inputs if p is not None]
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    dirs = set(directories)
    for name, out in outs:
        for src in ins:
            if same_file(out, src):
                raise InputError(f"{name} is also an input file: choose another output path", out)
            if name in dirs and src.resolve().is_relative_to(out.resolve()):
                raise InputError(f"{name} would hold an input file ({src}): choose another output directory", out)
        check_writable_place(out, "directory" if name in dirs else "file")
    for k, (name, out) in enumerate(outs):
        for other, path in outs[k + 1 :]:
            if same_file(out, path):
                raise InputError(f"{name} and {other} are the same path: give each its own", out)
