"""Train, save, load and describe the byte-level BPE tokenizer that code-switched shards are made with.

Training input is streamed: text files a line at a time (plain, ``.gz`` or ``.zst``), JSON lines and Parquet
a column (``text_column``) at a time; blank lines and blank values are skipped. The trained tokenizer is
byte-level (every string round-trips exactly) with ``<|endoftext|>`` as id 0 and ``<|pad|>`` as id 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from prealign.errors import InputError
from prealign.outputs import check_outputs
from prealign.textio import (
    atomic_write,
    check_readable,
    compression_suffix,
    data_suffix,
    json_objects,
    json_string,
    open_lines,
    read_all_bytes,
)

EOT_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOT_TOKEN, PAD_TOKEN)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
EOT_NAMES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<|end_of_text|>", "<|eot_id|>")
PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]")
_BATCH = 1024


def iter_texts(path: Path, text_column: str = "text") -> Iterator[str]:
    """The non-blank texts of one file: lines of text, or ``text_column`` of ``.jsonl``/``.json``/``.parquet``."""
    check_readable(path)
    suffix = data_suffix(path)
    if suffix == ".parquet":
        return _parquet_texts(path, text_column)
    if suffix in (".jsonl", ".json"):
        return _jsonl_texts(path, text_column)
    return (text for _, text in open_lines(path) if text.strip())


def _jsonl_texts(path: Path, column: str) -> Iterator[str]:
    for n, obj in json_objects(path):
        value = json_string(obj, column, path, n)
        if value.strip():
            yield value


def _parquet_texts(path: Path, column: str) -> Iterator[str]:
    try:
        source = pa.BufferReader(read_all_bytes(path)) if compression_suffix(path) else str(path)
        pf = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet: {exc}", path) from None
    names = pf.schema_arrow.names
    if column not in names:
        raise InputError(f"missing column {column!r} (columns present: {', '.join(map(repr, names)) or 'none'})", path)
    kind = pf.schema_arrow.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"column {column!r} is {kind}, not a string", path)
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH, columns=[column]):
        values = batch.column(0).to_pylist()
        for i, value in enumerate(values):
            if value is None:
                raise InputError(f"null value in column {column!r}", path, row + i + 1)
            if value.strip():
                yield value
        row += len(values)


def _batches(files: Sequence[Path], text_column: str, seen: list[int] | None = None) -> Iterator[list[str]]:
    """All files' texts in order, in lists of up to ``_BATCH`` strings (cheaper to hand to Rust); ``seen[0]``
    counts the texts."""
    batch: list[str] = []
    for path in files:
        for text in iter_texts(Path(path), text_column):
            if seen is not None:
                seen[0] += 1
            batch.append(text)
            if len(batch) == _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def train_tokenizer(
    files: Sequence[Path],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    text_column: str = "text",
    show_progress: bool = False,
    pre_tokenizer: pre_tokenizers.PreTokenizer | None = None,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` tokens (specials included) on ``files``.

    ``pre_tokenizer`` replaces the GPT-2 byte-level split (it must end in a byte-level step).

    The same files in the same order give a byte-identical tokenizer. Raises ``ValueError`` for a vocabulary
    too small to hold the specials and the 256 bytes, :class:`InputError` for missing or bad input, or for files
    with no non-blank text at all (which would give a tokenizer of the bytes alone).
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), "
            f"got {vocab_size}"
        )
    if not files:
        raise InputError("no training files given")
    for path in files:
        check_readable(path)  # fail before training starts
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    seen = [0]
    tok.train_from_iterator(_batches(files, text_column, seen), trainer=trainer)
    if seen[0] == 0:
        raise InputError("empty corpus: no non-blank text to train on", ", ".join(map(str, files)))
    return tok


def train_tokenizer_file(
    files: Sequence[Path],
    output: Path,
    vocab_size: int,
    *,
    min_frequency: int = 2,
    text_column: str = "text",
    show_progress: bool = False,
) -> TokenizerInfo:
    """``prealign-data tokenizer train``: check the output first (not one of ``files``, writable), train
    (:func:`train_tokenizer`), then write ``output`` atomically; returns the tokenizer's info."""
    for path in files:
        check_readable(path)
    check_outputs(files, {"-o": output})
    tok = train_tokenizer(
        files, vocab_size, min_frequency=min_frequency, text_column=text_column, show_progress=show_progress
    )
    save_tokenizer(tok, output)
    return tokenizer_info(tok)


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write ``tok`` as a Hugging Face ``tokenizer.json`` (atomically)."""
    text = tok.to_str()
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def tokenizer_file(path: str | Path) -> Path:
    """``path`` itself, or the ``tokenizer.json`` in directory ``path``."""
    path = Path(path)
    return path / "tokenizer.json" if path.is_dir() else path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a Hugging Face ``tokenizer.json``, or the one in directory ``path``; raises :class:`InputError`."""
    file = tokenizer_file(path)
    if not file.is_file():
        raise InputError("cannot load tokenizer: no such file", file)
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises plain Exception for every parse/IO error
        raise InputError(f"cannot load tokenizer: {exc}", file) from None


@dataclass(frozen=True)
class TokenizerInfo:
    """What a manifest records about a tokenizer.

    ``sha256`` is the hex SHA-256 of ``tok.to_str()`` (the tokenizer's canonical JSON, no indentation) encoded
    as UTF-8; it is not the hash of a file on disk, which may be pretty-printed.
    """

    sha256: str
    vocab_size: int
    eot_id: int | None
    pad_id: int | None
    eot_token: str | None
    pad_token: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenizer_info(tok: Tokenizer) -> TokenizerInfo:
    """Hash, vocabulary size (added tokens included) and the end-of-text and padding tokens found by name."""
    added: dict[str, int] = {}
    for i, t in sorted(tok.get_added_tokens_decoder().items()):
        added.setdefault(t.content, i)
    eot = next((name for name in EOT_NAMES if name in added), None)
    pad = next((name for name in PAD_NAMES if name in added), None)
    return TokenizerInfo(
        sha256=hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest(),
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        eot_id=None if eot is None else added[eot],
        pad_id=None if pad is None else added[pad],
        eot_token=eot,
        pad_token=pad,
    )
