"""Reading text and binary input that may be plain, gzip (``.gz``) or zstandard (``.zst``) compressed.

Compression is decided by the file name. Text is decoded strictly as UTF-8, and an invalid byte is reported
with the 1-based line it is on (:class:`prealign.errors.InputError`). :func:`open_lines` gives Python strings
a line at a time; :func:`iter_line_arrays` gives blocks of lines as Arrow arrays, for bulk reading.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from prealign.errors import InputError

_SUFFIXES = {".gz": ".gz", ".zst": ".zst", ".zstd": ".zst"}
_KIND = {".gz": "gzip", ".zst": "zstandard"}
_DECOMPRESS_ERRORS = (OSError, EOFError, zstandard.ZstdError)
_BOM = "\ufeff"
_BOM_BYTES = _BOM.encode("utf-8")


def compression_suffix(path: str | os.PathLike[str]) -> str:
    """Return ``".gz"``, ``".zst"`` (also for ``.zstd``) or ``""`` from the file name (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    return _SUFFIXES.get(suffix, "")


def strip_compression_suffix(path: str | os.PathLike[str]) -> str:
    """The file name without its compression suffix: ``a.en.zst`` -> ``a.en``."""
    name = Path(path).name
    if compression_suffix(name):
        return name[: -len(Path(name).suffix)]
    return name


def data_suffix(path: str | os.PathLike[str]) -> str:
    """The lower-cased format suffix, after any compression suffix: ``x.jsonl.gz`` -> ``.jsonl``."""
    return Path(strip_compression_suffix(path)).suffix.lower()


def check_readable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless ``path`` exists and is not a directory."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path)
    if p.is_dir():
        raise InputError("is a directory, not a file", path)


def open_binary(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading decompressed bytes (buffered; supports ``readline`` and iteration).

    Raises :class:`InputError` if the file is missing or unreadable.
    """
    check_readable(path)
    suffix = compression_suffix(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path) from exc
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if suffix == ".zst":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return raw


def read_all_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole decompressed content of ``path`` (for formats that need random access, e.g. Parquet)."""
    with open_binary(path) as fh:
        try:
            return fh.read()
        except _DECOMPRESS_ERRORS as exc:
            raise _corrupt(path, None, exc) from exc


def _corrupt(path: str | os.PathLike[str], line: int | None, exc: BaseException) -> InputError:
    kind = _KIND.get(compression_suffix(path))
    what = f"corrupt or truncated {kind} data" if kind else "read error"
    return InputError(f"{what}: {exc}", path, line)


def _bad_utf8(path: str | os.PathLike[str], first: int, data: bytes, exc: UnicodeDecodeError) -> InputError:
    """The error for invalid UTF-8 at ``exc.start`` in ``data``, whose first line is line ``first``."""
    line = first + data.count(b"\n", 0, exc.start)
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    byte = data[exc.start : exc.start + 1].hex()
    return InputError(f"invalid UTF-8 (byte 0x{byte} at byte {column} of the line)", path, line)


def open_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path``: 1-based, without the trailing newline.

    Lines are split on ``\\n`` only; a ``\\r`` before it is dropped too. A UTF-8 byte-order mark at the
    start of line 1 is dropped. A final line without a newline counts as a line; an empty file has no lines.
    The file is opened at once (a missing file raises here), read lazily, and closed when the iterator is
    exhausted or discarded. Raises :class:`InputError` (with ``line``) on invalid UTF-8 or corrupt
    compressed data.
    """
    return _lines(path, open_binary(path))


def _lines(path: str | os.PathLike[str], fh: BinaryIO) -> Iterator[tuple[int, str]]:
    lineno = 0
    with fh:
        try:
            for raw in fh:
                lineno += 1
                if raw.endswith(b"\n"):
                    raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
                elif raw.endswith(b"\r"):
                    raw = raw[:-1]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _bad_utf8(path, lineno, raw, exc) from None
                if lineno == 1 and text.startswith(_BOM):
                    text = text[1:]
                yield lineno, text
        except _DECOMPRESS_ERRORS as exc:
            raise _corrupt(path, lineno + 1, exc) from exc


def iter_line_arrays(path: str | os.PathLike[str], block_bytes: int = 1 << 20) -> Iterator[tuple[int, pa.StringArray]]:
    """Yield ``(first_line_number, lines)`` for consecutive blocks of about ``block_bytes`` of whole lines.

    ``lines`` is an Arrow ``string`` array holding the lines exactly as :func:`open_lines` gives them, made
    without a Python object per line (several times faster for bulk reading). UTF-8 is validated a block at
    a time; an error names the line. The file is opened at once (a missing file raises here).
    """
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be at least 1, got {block_bytes}")
    return _line_arrays(path, open_binary(path), block_bytes)


def _line_arrays(path: str | os.PathLike[str], fh: BinaryIO, block_bytes: int) -> Iterator[tuple[int, pa.StringArray]]:
    first = 1
    with fh:
        while True:
            try:
                data = fh.read(block_bytes)
                if data and not data.endswith(b"\n"):
                    data += fh.readline()
            except _DECOMPRESS_ERRORS as exc:
                raise _corrupt(path, first, exc) from exc
            if not data:
                return
            if first == 1 and data.startswith(_BOM_BYTES):
                data = data[len(_BOM_BYTES) :]
                if not data:  # the file is just a BOM (and so one empty line, as open_lines sees it)
                    data = b"\n"
            try:
                block = pa.array([data], pa.binary()).cast(pa.string())
            except pa.ArrowInvalid:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _bad_utf8(path, first, data, exc) from None
                raise
            lines = pc.split_pattern(block, "\n").flatten()
            if data.endswith(b"\n"):
                lines = lines.slice(0, len(lines) - 1)
            if b"\r" in data:
                lines = pc.replace_substring_regex(lines, "\r$", "")
            yield first, lines
            first += len(lines)


def count_lines(path: str | os.PathLike[str]) -> int:
    """Number of lines in ``path`` as :func:`open_lines` counts them (no decoding; fast)."""
    n = 0
    last = b"\n"
    with open_binary(path) as fh:
        try:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        except _DECOMPRESS_ERRORS as exc:
            raise _corrupt(path, None, exc) from exc
    return n if last == b"\n" else n + 1


def current_umask() -> int:
    """The process's file-creation mask (read without changing it for more than an instant)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary tool gives a new file: 0666 less the umask (0644 under the usual 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode an ordinary tool gives a new directory: 0777 less the umask."""
    return 0o777 & ~current_umask()


def temp_file(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (a hidden ``.NAME.*.tmp``) with the mode an ordinary file gets:
    ``mkstemp`` alone makes it 0600, which would leave every output unreadable to the user's group."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())
    return fd, tmp


def remove_temporaries(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Delete the hidden temporary files (:func:`temp_file`) that a killed write of ``paths`` left beside
    them; nothing else is touched."""
    for path in map(Path, paths):
        if path.parent.is_dir():
            literal = "".join(f"[{c}]" if c in "*?[" else c for c in path.name)
            for tmp in path.parent.glob(f".{literal}.*.tmp"):
                if tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)


def temp_dir(path: Path, tag: str = "partial") -> Path:
    """A new staging directory beside ``path`` with the mode an ordinary directory gets (not mkdtemp's 0700)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}-", dir=path.parent))
    os.chmod(staging, dir_mode())
    return staging


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failed write leaves no file behind. A missing parent
    directory is created. The file gets 0666 less the umask, as files written by ordinary tools do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc  # say which file did not fit
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


def json_type(value: object) -> str:
    """How a JSON value is named in error messages ("null", "a number", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict]]:
    """The objects of a JSON-lines file with their line numbers; blank lines are skipped.

    A line that is not JSON, or not an object, is an :class:`InputError` naming the line.
    """
    decode = json.JSONDecoder().decode
    for n, text in open_lines(path):
        if not text.strip():
            continue
        try:
            obj = decode(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg} (column {exc.colno})", path, n) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected one JSON object per line, got {json_type(obj)}", path, n)
        yield n, obj


def json_string(obj: dict, column: str, path: str | os.PathLike[str], line: int) -> str:
    """``obj[column]`` when it is a string; a missing column or another type is an InputError."""
    try:
        value = obj[column]
    except KeyError:
        present = ", ".join(repr(k) for k in obj) or "none"
        raise InputError(f"missing column {column!r} (columns present: {present})", path, line) from None
    if not isinstance(value, str):
        if value is None:
            raise InputError(f"null value in column {column!r}", path, line)
        raise InputError(f"column {column!r} is {json_type(value)}, expected a string", path, line)
    return value
