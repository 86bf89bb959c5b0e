"""Holding a run directory while a training command writes it.

A training command (``train align-init``, ``train pretrain``) takes an exclusive ``flock`` on the run directory
itself (no lock file is left behind), so a second command into the same directory fails at once with one line
instead of mixing its checkpoints in; the kernel drops the lock when the process dies, however it dies.

A fresh run (not ``--resume``) into a directory that already holds a run is refused unless ``overwrite``, which
removes the old run's files first. When a fresh run fails before it saved a checkpoint, the files it wrote
are removed again (and the directory, when the run created it): a failed command leaves nothing behind. Once
a checkpoint is saved, a failure (a full disk, a diverged loss) keeps it, to be continued with ``--resume``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prealign.errors import DiskFull, InputError, disk_full
from prealign.textio import remove_temporaries
from prealign.train import checkpoint
from prealign.train.checkpoint import OPTIMIZER, RUN, STATE, WEIGHTS

# what a training run writes into its directory besides checkpoint directories (STATE and OPTIMIZER: where
# runs of prealign-data 0.1 kept them)
RUN_FILES = (WEIGHTS, RUN, STATE, OPTIMIZER, "metrics.jsonl")
# what save_pretrained and the tokenizer add to a transformers run (align-init --hf-model)
HF_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class RunDirBusy(InputError):
    """Another training command holds the run directory."""


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds any file of a training run."""
    return any((run_dir / name).exists() for name in RUN_FILES) or bool(checkpoint.checkpoints(run_dir))


def _is_hf_run(run_dir: Path) -> bool:
    try:
        return "hf_model" in checkpoint.read_json(run_dir / RUN)
    except InputError:
        return False


def clear_run_files(run_dir: Path) -> None:
    """Remove a run's files, its checkpoint directories and what an interrupted save left; other files stay."""
    names = RUN_FILES + (HF_FILES if _is_hf_run(run_dir) else ())
    paths = [run_dir / name for name in names]
    for _, path in checkpoint.checkpoints(run_dir):
        shutil.rmtree(path)
    checkpoint.tidy(run_dir)
    for p in paths:
        p.unlink(missing_ok=True)
    remove_temporaries(paths)


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


@dataclass
class RunSession:
    """What :func:`run_session` yields: mark ``saved`` once a checkpoint is on disk."""

    path: Path
    saved: bool = False


def no_space(exc: BaseException, run_dir: Path) -> InputError | None:
    """The one-line error for a full disk (or quota) while writing ``run_dir``; None for other errors."""
    return DiskFull("no space left on device", run_dir) if disk_full(exc) else None


@contextmanager
def run_session(run_dir: Path, resume: bool = False, overwrite: bool = False) -> Iterator[RunSession]:
    """Lock ``run_dir`` (creating it) for one training command; see the module docstring.

    ``resume`` needs a checkpoint directory there; a fresh run needs an empty place, or ``overwrite``. A full disk
    inside the block becomes ``error: RUN: no space left on device``.
    """
    run_dir = Path(run_dir)
    created = _missing_dirs(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise no_space(exc, run_dir) or InputError(f"cannot create the run directory: {exc.strerror}", run_dir) from exc
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy("another training command is writing this run directory", run_dir) from None
    session = RunSession(run_dir)
    try:
        if resume:
            if checkpoint.latest_checkpoint(run_dir) is None:
                older = (run_dir / STATE).is_file()
                raise InputError(
                    "nothing to resume: no checkpoint-* directory"
                    + (
                        " (state.json beside the weights is the layout of prealign-data 0.1, which cannot be "
                        "resumed: start a new run, with --init RUN to take its weights)"
                        if older
                        else ""
                    ),
                    run_dir,
                )
        if not resume and holds_run(run_dir):
            if not overwrite:
                raise InputError("holds a run already: --resume continues it, --overwrite replaces it", run_dir)
            clear_run_files(run_dir)
        try:
            yield session
        except BaseException as exc:
            if not resume and not session.saved:
                clear_run_files(run_dir)
            full = no_space(exc, run_dir)
            if full is not None:
                raise full from exc
            raise
    except BaseException:
        if not session.saved:
            _remove_empty(created)
        raise
    finally:
        os.close(fd)


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories a failed command created (deepest first), while they are empty."""
    for p in directories:
        try:
            p.rmdir()
        except OSError:
            return
