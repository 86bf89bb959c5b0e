"""English-Clone: English written in a disjoint alphabet, so the true alignment of every word is known.

A fixed bijection maps each printable ASCII character to a character of another script with the same Unicode
general category (letters to Cyrillic with case kept, digits to Devanagari digits, each punctuation mark or
symbol to one of the same category from the Supplemental Punctuation, Mathematical Operators, Currency,
Spacing Modifier and General Punctuation blocks). Whitespace and any character outside printable ASCII are
left as they are. Every image is stable under NFKC, so normalisation never folds the Clone back into English.

:func:`clone_tokenizer` turns an English byte-level BPE tokenizer into a joint English + Clone tokenizer in
which Clone text tokenises *exactly* as its (ASCII) English original, token for token, with disjoint ids (only
whitespace tokens and the special tokens are shared): English ids are unchanged, each Clone character is first
built from its UTF-8 bytes by merges ranked before every other merge, then every English merge has a Clone twin.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, pre_tokenizers

from prealign.errors import InputError
from prealign.text import Segmenter, SegmenterConfig
from prealign.textio import open_lines, temp_dir

# where images of punctuation and symbols are looked for, in order
_SYMBOL_BLOCKS = (
    range(0x2E00, 0x2E80),
    range(0x2200, 0x2300),
    range(0x20A0, 0x20C1),
    range(0x02C2, 0x02E0),
    range(0x203F, 0x2055),
)
# the GPT-2 split without its English clitic rules ('s, 't, ...), so every script is split alike
SYMMETRIC_SPLIT = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _stable(ch: str) -> bool:
    return unicodedata.normalize("NFKC", ch) == ch and ch.lower() == ch and ch.upper() == ch


@cache
def clone_map() -> dict[str, str]:
    """The bijection, printable ASCII (space excluded) -> Clone character."""
    out: dict[str, str] = {}
    for i, ch in enumerate(string.ascii_lowercase):
        out[ch] = chr(0x0430 + i)
        out[ch.upper()] = chr(0x0410 + i)
    for i, ch in enumerate(string.digits):
        out[ch] = chr(0x0966 + i)
    used: set[str] = set()
    for ch in string.punctuation:
        category = unicodedata.category(ch)
        for block in _SYMBOL_BLOCKS:
            found = next(
                (c for c in map(chr, block) if c not in used and unicodedata.category(c) == category and _stable(c)),
                None,
            )
            if found:
                break
        if found is None:  # pragma: no cover - a property of the Unicode tables, asserted by the tests
            raise RuntimeError(f"no Clone image for {ch!r} (category {category})")
        used.add(found)
        out[ch] = found
    return out


@cache
def _tables() -> tuple[dict[int, str], dict[int, str]]:
    forward = clone_map()
    return str.maketrans(forward), str.maketrans({v: k for k, v in forward.items()})


def clone_text(text: str) -> str:
    """``text`` in the Clone script (whitespace and non-ASCII characters unchanged)."""
    return text.translate(_tables()[0])


def unclone_text(text: str) -> str:
    """The inverse of :func:`clone_text`."""
    return text.translate(_tables()[1])


def clone_characters_in(text: str) -> str:
    """The characters of ``text`` that are Clone images (an input must have none for the Clone to be disjoint)."""
    images = _clone_chars()
    return "".join(sorted({c for c in text if c in images}))


@cache
def _clone_chars() -> frozenset[str]:
    return frozenset(clone_map().values())


# ---- tokenizer --------------------------------------------------------------------------------------------------


def symmetric_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Byte-level pre-tokenisation that splits English and Clone alike (no English-only clitic rules)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SYMMETRIC_SPLIT), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


@cache
def _byte_level() -> tuple[dict[int, str], dict[str, int]]:
    """The byte <-> printable character table byte-level BPE writes tokens in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    to_char = {b: chr(c) for b, c in zip(printable, chars, strict=True)}
    return to_char, {c: b for b, c in to_char.items()}


def _token_bytes(token: str) -> bytes:
    return bytes(_byte_level()[1][c] for c in token)


def _byte_token(data: bytes) -> str:
    to_char = _byte_level()[0]
    return "".join(to_char[b] for b in data)


def _clone_token(token: str) -> str | None:
    """The Clone twin of a byte-level token, or None when it has nothing to map (whitespace, partial UTF-8)."""
    try:
        text = _token_bytes(token).decode("ascii")
    except (UnicodeDecodeError, KeyError):
        return None
    cloned = clone_text(text)
    return None if cloned == text else _byte_token(cloned.encode("utf-8"))


def _char_merges(chars: Iterable[str]) -> list[tuple[str, str]]:
    """Merges that build each (multi-byte) character from its bytes, left to right; shared prefixes once."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for ch in chars:
        data = ch.encode("utf-8")
        for k in range(1, len(data)):
            pair = (_byte_token(data[:k]), _byte_token(data[k : k + 1]))
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
    return merges


def clone_tokenizer(english: Tokenizer) -> tuple[Tokenizer, dict[int, int]]:
    """A joint English + Clone tokenizer built from a byte-level BPE ``english`` tokenizer.

    Returns the tokenizer and the map from each English id that has a Clone twin to the twin's id. English
    text gets the same ids as under ``english``; ``clone_text(t)`` gets the mapped ids of ``t``'s tokens
    (whitespace-only tokens map to themselves). Raises ``ValueError`` for a tokenizer that is not byte-level BPE.
    """
    spec = json.loads(english.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or spec.get("decoder", {}).get("type") != "ByteLevel":
        raise ValueError("the English-Clone tokenizer is built from a byte-level BPE tokenizer")
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    specials = {t["content"] for t in spec.get("added_tokens", [])}

    def add(token: str) -> int:
        if token not in vocab:
            vocab[token] = len(vocab)
        return vocab[token]

    char_merges = _char_merges(clone_map().values())
    for a, b in char_merges:
        add(a + b)
    id_map: dict[int, int] = {}
    for token, index in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        twin = None if token in specials else _clone_token(token)
        if twin is not None:
            id_map[index] = add(twin)
    joint_merges: list[tuple[str, str]] = list(char_merges)
    for a, b in merges:
        joint_merges.append((a, b))
        ca, cb = _clone_token(a) or a, _clone_token(b) or b
        if (ca, cb) != (a, b):
            joint_merges.append((ca, cb))
    model["vocab"] = vocab
    model["merges"] = [list(m) for m in joint_merges]
    spec["model"] = model
    if len(vocab) != len(set(vocab.values())):  # pragma: no cover - guarded by construction
        raise ValueError("token ids collide in the joint vocabulary")
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)), id_map


# ---- clone make -------------------------------------------------------------------------------------------------


def read_english(path: Path, max_lines: int | None = None) -> list[str]:
    """Non-blank lines of an English text file (plain, .gz, .zst), stripped; a line holding a Clone character
    is an :class:`InputError` naming it (the Clone would not be disjoint from the input)."""
    lines: list[str] = []
    for number, line in open_lines(path):
        text = line.strip()
        if not text:
            continue
        if "\x00" in text:
            raise InputError("a NUL byte: this is a binary file, not English text", path, number)
        found = clone_characters_in(text)
        if found:
            raise InputError(
                f"the text already holds Clone characters {found!r}; the Clone would not be disjoint", path, number
            )
        lines.append(text)
        if max_lines is not None and len(lines) >= max_lines:
            break
    if not lines:
        raise InputError("no text lines", path)
    return lines


def true_lexicon(lines: Sequence[str]) -> list[tuple[str, str, int]]:
    """(word, clone of word, count) for every distinct word of ``lines`` as the aligner segments them
    (lowercased, NFKC, apostrophes split alike on both sides), most frequent first."""
    segmenter = Segmenter(SegmenterConfig(apostrophe="split"))
    counts: Counter[str] = Counter()
    for start in range(0, len(lines), 4096):
        for words in segmenter.segment_batch(lines[start : start + 4096]):
            counts.update(words)
    return [(w, clone_text(w), c) for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def make_clone(corpus: Path, output: Path, max_lines: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """``clone make``: write ``en.txt`` and ``clone.txt`` (line-aligned), ``lexicon.tsv`` (the true lexicon:
    word, clone, count) and ``clone.json`` (the character map and counts) into ``output``, all or nothing."""
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise InputError("exists and is not empty (pass --overwrite to replace it)", output)
    lines = read_english(corpus, max_lines)
    lexicon = true_lexicon(lines)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(output)
    try:
        (staging / "en.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        (staging / "clone.txt").write_text("".join(clone_text(line) + "\n" for line in lines), encoding="utf-8")
        (staging / "lexicon.tsv").write_text("".join(f"{w}\t{c}\t{n}\n" for w, c, n in lexicon), encoding="utf-8")
        summary = {
            "corpus": str(corpus),
            "lines": len(lines),
            "words": len(lexicon),
            "tokens": sum(n for *_, n in lexicon),
        }
        (staging / "clone.json").write_text(
            json.dumps({**summary, "map": clone_map()}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {**summary, "output": str(output)}
