"""Word segmentation shared by the lexicon and code-switching code.

Built on the ``tokenizers`` pre-tokenizers: whitespace split, punctuation isolated, CJK ideographs and kana
split one character a word, and a configurable treatment of apostrophes inside words (French elision
``l'homme`` -> ``l'`` ``homme``; English clitics ``Tom's`` -> ``Tom`` ``'s``). Unicode NFKC normalisation and
optional lowercasing run first (in Python's ``unicodedata``, which is several times faster here than a
per-string call into the library's normalizers).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from tokenizers import Regex, Tokenizer
from tokenizers import pre_tokenizers as pre
from tokenizers.models import WordLevel

Apostrophe = Literal["previous", "next", "split", "keep"]
APOSTROPHES = ("previous", "next", "split", "keep")

_APOS = "'’"
# punctuation (anything neither a word character nor space), except an apostrophe between two word characters
_PUNCT = rf"[^\w\s{_APOS}]|(?<!\w)[{_APOS}]|[{_APOS}](?!\w)"
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"
_APOS_BEHAVIOUR = {"previous": "merged_with_previous", "next": "merged_with_next", "split": "isolated"}


@dataclass(frozen=True)
class SegmenterConfig:
    """How text becomes words.

    ``pretokenized`` keeps the input's own whitespace tokens untouched (after normalisation), which is what
    gold-standard alignment files need. ``apostrophe`` says where an apostrophe inside a word goes:
    ``previous`` (French: ``l'`` ``homme``), ``next`` (English: ``Tom`` ``'s``), ``split`` (its own word) or
    ``keep`` (the word stays whole).
    """

    lowercase: bool = True
    normalize: bool = True
    apostrophe: Apostrophe = "previous"
    pretokenized: bool = False

    def __post_init__(self) -> None:
        if self.apostrophe not in APOSTROPHES:
            raise ValueError(f"apostrophe must be one of {APOSTROPHES}, not {self.apostrophe!r}")


class Segmenter:
    """Splits strings into words; ``segment_batch`` runs the library's pre-tokenizer in parallel."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()

    @cached_property
    def _tokenizer(self) -> Tokenizer:
        steps: list = [pre.WhitespaceSplit()]
        if not self.config.pretokenized:
            steps.append(pre.Split(Regex(_PUNCT), "isolated"))
            steps.append(pre.Split(Regex(_CJK), "isolated"))
            if self.config.apostrophe != "keep":
                steps.append(pre.Split(Regex(f"[{_APOS}]"), _APOS_BEHAVIOUR[self.config.apostrophe]))
        tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre.Sequence(steps)
        return tok

    def normalize(self, text: str) -> str:
        """NFKC and lowercasing as configured."""
        if self.config.normalize:
            text = unicodedata.normalize("NFKC", text)
        if self.config.lowercase:
            text = text.lower()
        return text

    def segment(self, text: str) -> list[str]:
        """The words of one string."""
        return self.segment_batch([text])[0]

    def segment_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """The words of each string, in order."""
        norm = [self.normalize(t) for t in texts]
        if self.config.pretokenized:  # the pre-tokenizer would only split on whitespace: str.split does that
            return [t.split() for t in norm]
        encodings = self._tokenizer.encode_batch(norm, add_special_tokens=False)
        return [[s[a:b] for a, b in enc.offsets] for s, enc in zip(norm, encodings, strict=False)]


def is_word(token: str) -> bool:
    """True when a token holds at least one letter (not only punctuation, digits or symbols)."""
    return any(ch.isalpha() for ch in token)


# Where an apostrophe inside a word goes, by language: elision languages glue it to the word before
# (l'homme -> l' homme), English to the word after (Tom's -> Tom 's), others keep it as its own token.
_APOSTROPHE_BY_LANG = {"fr": "previous", "it": "previous", "ca": "previous", "oc": "previous", "en": "next"}


def apostrophe_for(lang: str | None) -> Apostrophe:
    """The apostrophe rule for an ISO 639-1 language code (``split`` when unknown or None)."""
    if lang is None:
        return "split"
    return _APOSTROPHE_BY_LANG.get(lang.lower().split("-")[0].split("_")[0], "split")  # type: ignore[return-value]
