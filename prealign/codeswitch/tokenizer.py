"""Train, save, load and describe the byte-level BPE tokenizer that code-switched shards are made with.

Any Hugging Face tokenizer loads: a ``tokenizer.json``, or a directory as transformers saves it, whose
``tokenizer_config.json`` and ``special_tokens_map.json`` name its BOS, EOS and padding tokens
(:func:`special_tokens`).

Training input is streamed: text files a line at a time (plain, ``.gz`` or ``.zst``), JSON lines and Parquet
a column (``text_column``) at a time; blank lines and blank values are skipped. The trained tokenizer is
byte-level (every string round-trips exactly) with ``<|endoftext|>`` as id 0 and ``<|pad|>`` as id 1.
"""

from __future__ import annotations

import hashlib
import json
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


TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
NONE = "none"  # --bos none / --eos none


@dataclass(frozen=True)
class SpecialTokens:
    """The tokens a switch job puts around documents: BOS before each (when ``add_bos``), EOS after each when
    packing (the separator; also without packing when ``add_eos``), and the padding token.

    ``bos_from``/``eos_from`` say where each came from: ``"config"`` (the tokenizer directory's
    ``tokenizer_config.json``/``special_tokens_map.json``), ``"option"`` (``--bos``/``--eos``), ``"name"`` (EOS:
    the first of :data:`EOT_NAMES` among the added tokens), or None (no such token).
    """

    bos_token: str | None = None
    bos_id: int | None = None
    eos_token: str | None = None
    eos_id: int | None = None
    pad_token: str | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    bos_from: str | None = None
    eos_from: str | None = None
    config_files: tuple[str, ...] = ()

    @property
    def default(self) -> bool:
        """True when the choice is what a plain ``tokenizer.json`` always gave (no config file, no option): no BOS,
        EOS and padding found by name."""
        return not self.config_files and "option" not in (self.bos_from, self.eos_from)

    def record(self) -> dict[str, Any]:
        """The manifest's keys (``eot_id``/``eot_token``: the EOS, as before these existed)."""
        return {
            "eot_id": self.eos_id,
            "eot_token": self.eos_token,
            "pad_id": self.pad_id,
            "pad_token": self.pad_token,
            "bos_token": self.bos_token,
            "bos_id": self.bos_id,
            "eos_token": self.eos_token,
            "eos_id": self.eos_id,
            "add_bos": self.add_bos,
            "add_eos": self.add_eos,
            "bos_from": self.bos_from,
            "eos_from": self.eos_from,
            "config_files": list(self.config_files),
        }


def read_tokenizer_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The settings of a tokenizer directory as transformers saves it: ``tokenizer_config.json`` overridden by
    ``special_tokens_map.json`` (as ``from_pretrained`` does), with the file each key came from; ({}, {}) for a
    plain ``tokenizer.json`` or a directory without them. InputError naming the file: bad JSON, not an object."""
    path = Path(path)
    settings: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    if not path.is_dir():
        return settings, sources
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(read_all_bytes(file).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read tokenizer config: {exc}", file) from None
        if not isinstance(data, dict):
            raise InputError(f"cannot read tokenizer config: a JSON object expected, got {type(data).__name__}", file)
        for key, value in data.items():
            if value is not None or key not in settings:
                settings[key] = value
                sources[key] = file
    return settings, sources


def _token_string(value: Any, key: str, file: Path) -> str | None:
    """A special token as the config writes it: a string, an AddedToken dict (its ``content``) or null."""
    if isinstance(value, dict):
        value = value.get("content")
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{key} is {value!r}, not a token string", file)


def _token_id(tok: Tokenizer, token: str, what: str, where: str | Path) -> int:
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise InputError(f"{what} {token!r} is not a token of the tokenizer", where)
    return token_id


def special_tokens(
    tok: Tokenizer,
    path: str | Path,
    bos: str | None = None,
    eos: str | None = None,
    info: TokenizerInfo | None = None,
) -> SpecialTokens:
    """BOS, EOS and padding of the tokenizer at ``path`` (``tokenizer.json`` or its directory).

    A directory's ``tokenizer_config.json``/``special_tokens_map.json`` give ``bos_token``, ``eos_token``,
    ``pad_token`` and ``add_bos_token``/``add_eos_token`` (absent: false); without them EOS and padding are
    found by name (:func:`tokenizer_info`) and there is no BOS. ``bos``/``eos`` (``--bos``/``--eos``) override:
    a token of the tokenizer (``bos`` also turns BOS on), or ``"none"``. When the config names a ``bos_token``
    but has no ``add_bos_token`` (Llama-3), BOS is on when the tokenizer's own post-processor puts that token
    first (:func:`template_bos`). ``info``: :func:`tokenizer_info` of ``tok``, when already computed. InputError:
    a config token or an option that is not a token of the tokenizer, a bad config file.
    """
    settings, sources = read_tokenizer_config(path)
    info = info or tokenizer_info(tok)

    def configured(key: str) -> tuple[str | None, int | None]:
        token = _token_string(settings.get(key), key, sources.get(key, Path(path)))
        if token is None:
            return None, None
        return token, _token_id(tok, token, key, sources[key])

    def flag(key: str) -> bool:
        value = settings.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise InputError(f"{key} is {value!r}, not true or false", sources[key])
        return value

    if eos is not None:
        eos_token = None if eos == NONE else eos
        eos_id = None if eos_token is None else _token_id(tok, eos_token, "--eos", tokenizer_file(path))
        eos_from: str | None = "option"
    else:
        eos_token, eos_id = configured("eos_token")
        eos_from = "config" if eos_token is not None else None
        if eos_token is None and info.eot_token is not None:
            eos_token, eos_id, eos_from = info.eot_token, info.eot_id, "name"
    if bos is not None:
        bos_token = None if bos == NONE else bos
        bos_id = None if bos_token is None else _token_id(tok, bos_token, "--bos", tokenizer_file(path))
        add_bos, bos_from = bos_token is not None, "option"
    else:
        bos_token, bos_id = configured("bos_token")
        add_bos, bos_from = flag("add_bos_token"), "config" if bos_token is not None else None
        if "add_bos_token" not in settings and bos_token is not None and template_bos(tok) == bos_token:
            add_bos, bos_from = True, "post_processor"  # Llama-3: the config leaves it to tokenizer.json
        if add_bos and bos_token is None:
            raise InputError("add_bos_token is true but no bos_token is given", sources["add_bos_token"])
    add_eos = flag("add_eos_token") and eos_id is not None
    pad_token, pad_id = configured("pad_token")
    if pad_token is None:
        pad_token, pad_id = info.pad_token, info.pad_id
    files = sorted({str(p.resolve()) for p in sources.values()})
    return SpecialTokens(
        bos_token, bos_id, eos_token, eos_id, pad_token, pad_id, add_bos, add_eos, bos_from, eos_from, tuple(files)
    )


def template_bos(tok: Tokenizer) -> str | None:
    """The special token the tokenizer's ``TemplateProcessing`` post-processor puts before a single sequence
    (what ``add_special_tokens=True`` would add first), or None."""
    try:
        processor = json.loads(tok.to_str()).get("post_processor")
    except (ValueError, AttributeError):
        return None
    stack = [processor]
    while stack:
        p = stack.pop(0)
        if not isinstance(p, dict):
            continue
        if p.get("type") == "Sequence":
            stack.extend(p.get("processors") or [])
        elif p.get("type") == "TemplateProcessing":
            single = p.get("single") or []
            first = single[0] if single and isinstance(single[0], dict) else {}
            special = first.get("SpecialToken")
            return special.get("id") if isinstance(special, dict) else None
    return None
