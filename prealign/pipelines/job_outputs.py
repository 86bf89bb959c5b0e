"""What a job checks of its outputs: done already, another run's, left-over temporary files, a full disk.

A finished ``align`` or ``extract-lexicon`` records, beside its output, the job's fingerprint and the sha256 of
each file it wrote (the stats JSON of a lexicon, ``OUT.stats.json`` for links). Run again with the same inputs
and options, it finds both unchanged and does nothing (:func:`already_done`). An existing output that is not
that (another run's, or changed since) is replaced only with ``--overwrite`` (:func:`refuse_existing`), checked
before any work. A run killed while writing leaves hidden ``.NAME.*.tmp`` files beside its outputs; the next
run removes those of the names it writes (:func:`prealign.textio.remove_temporaries`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prealign.errors import InputError
from prealign.shards import file_sha256


def recorded(outputs: Mapping[str, Path], fingerprint: str) -> dict[str, Any]:
    """What the record beside the outputs holds: the job's fingerprint and each output's sha256."""
    return {"fingerprint": fingerprint, "sha256": {name: file_sha256(path) for name, path in outputs.items()}}


def _read_record(record: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    job = saved.get("job") if isinstance(saved, dict) else None
    return saved if isinstance(job, dict) else None


def already_done(record: Path, outputs: Mapping[str, Path], fingerprint: str) -> dict[str, Any] | None:
    """The saved record (the stats JSON) when ``record`` says this very job wrote ``outputs`` and none of
    them changed since; else None."""
    saved = _read_record(record)
    if saved is None or saved["job"].get("fingerprint") != fingerprint:
        return None
    sums = saved["job"].get("sha256")
    if not isinstance(sums, dict) or set(sums) != set(outputs):
        return None
    for name, path in outputs.items():
        if not path.is_file() or file_sha256(path) != sums[name]:
            return None
    return saved


def refuse_existing(outputs: Mapping[str, Path], overwrite: bool) -> None:
    """Without ``overwrite``, an output that exists already (another run's) is refused with one line."""
    if overwrite:
        return
    for name, path in outputs.items():
        if path.exists():
            message = f"{name} exists (another run's output, or changed since): pass --overwrite to replace it"
            raise InputError(message, path)
