"""Words: the one definition of a word shared by extract-lexicon, align, switch and align-init.

A :class:`SegmenterConfig` says how text becomes words; :func:`segmenter_config` chooses it from a language code.
Scripts written with spaces (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Hangul, ...) go through the
``tokenizers`` pre-tokenizers: whitespace split, punctuation isolated, and a per-language treatment of apostrophes
inside words (French elision ``l'homme`` -> ``l'`` ``homme``; English clitics ``Tom's`` -> ``Tom`` ``'s``).
Chinese, Japanese and Thai, written without spaces, need a dictionary word segmenter, each an optional extra:
jieba (``[zh]``), sudachipy with sudachidict-core in mode C (``[ja]``), pythainlp's newmm (``[th]``); the choice
and its measurements are in docs/languages.md. Asking for one that is not installed is an :class:`InputError`
naming the extra, never a silent fallback to characters. Unicode NFKC normalisation (with Thai SARA AM
recomposed) and optional lowercasing run first; Chinese text can also be mapped between Traditional and
Simplified forms (OpenCC) before it is segmented.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Literal

import numpy as np
from tokenizers import Regex, Tokenizer
from tokenizers import pre_tokenizers as pre
from tokenizers.models import WordLevel

from prealign import charclass
from prealign.errors import InputError

Apostrophe = Literal["previous", "next", "split", "keep"]
APOSTROPHES = ("previous", "next", "split", "keep")
# default: the tokenizers pre-tokenizer (Han and kana one character a word, for the odd name in other text;
# text mostly in such scripts is refused by check_segmented); chars: the same with Thai, Lao, Khmer and Myanmar
# characters too, chosen on purpose; whitespace: the input's own whitespace tokens; jieba, sudachi, pythainlp:
# dictionary segmenters
SEGMENTERS = ("default", "chars", "whitespace", "jieba", "sudachi", "pythainlp")
SCRIPT_CONVERSIONS = ("t2s", "s2t")  # OpenCC: Traditional -> Simplified Chinese, and back
Span = tuple[int, int]

_APOS = "'’"
# punctuation (anything neither a word character nor space), except an apostrophe between two word characters
_PUNCT = rf"[^\w\s{_APOS}]|(?<!\w)[{_APOS}]|[{_APOS}](?!\w)"
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"  # the default splits these one character a word (mixed-script text)
_UNSPACED = _CJK + r"\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
# an apostrophe between two word characters: with the word before it (l' homme), with the one after (tom 's), alone
_APOS_PIECE = {"previous": rf"\w+[{_APOS}](?=\w)", "next": rf"[{_APOS}]\w+", "split": f"[{_APOS}]"}
_SARA_AM = ("\u0e4d\u0e32", "\u0e33")  # NFKC decomposes Thai SARA AM; segmenters expect it whole

# package to import, the extra that installs it, the language it serves
_PACKAGES = {"jieba": ("jieba", "zh", "Chinese"), "sudachi": ("sudachipy", "ja", "Japanese")}
_PACKAGES["pythainlp"] = ("pythainlp", "th", "Thai")


@dataclass(frozen=True)
class SegmenterConfig:
    """How text becomes words (picklable: it travels to the workers that segment).

    ``method`` is one of :data:`SEGMENTERS`; ``pretokenized`` is the older spelling of ``method="whitespace"``,
    which keeps the input's own whitespace tokens untouched (after normalisation), as gold-standard alignment
    files need. ``apostrophe`` says where an apostrophe inside a word goes: ``previous`` (French: ``l'``
    ``homme``), ``next`` (English: ``Tom`` ``'s``), ``split`` (its own word) or ``keep`` (the word stays whole).
    ``script`` maps Chinese characters with OpenCC before segmenting (``t2s`` or ``s2t``). ``lang`` is recorded.
    """

    lowercase: bool = True
    normalize: bool = True
    apostrophe: Apostrophe = "previous"
    pretokenized: bool = False
    method: str = "default"
    script: str | None = None
    lang: str | None = None

    def __post_init__(self) -> None:
        if self.apostrophe not in APOSTROPHES:
            raise ValueError(f"apostrophe must be one of {APOSTROPHES}, not {self.apostrophe!r}")
        if self.method not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {SEGMENTERS}, not {self.method!r}")
        if self.script is not None and self.script not in SCRIPT_CONVERSIONS:
            raise ValueError(f"script conversion must be one of {SCRIPT_CONVERSIONS}, not {self.script!r}")

    @property
    def kind(self) -> str:
        """The segmenter that runs: ``method``, with ``pretokenized`` meaning ``whitespace``."""
        return "whitespace" if self.pretokenized else self.method

    @property
    def joiner(self) -> str:
        """What joins the words of a multi-word unit: nothing for scripts written without spaces."""
        return "" if self.kind in ("chars", "jieba", "sudachi", "pythainlp") else " "


class Segmenter:
    """Splits strings into words (``segment_batch``) or into word spans of the text as given (``spans_batch``)."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()

    @cached_property
    def _tokenizer(self) -> Tokenizer:
        kind = self.config.kind
        steps: list = [pre.WhitespaceSplit()]
        if kind in ("default", "chars"):  # one regex step: each alternative is a piece of its own
            pieces = [_PUNCT, f"[{_UNSPACED if kind == 'chars' else _CJK}]\\p{{M}}*"]
            if self.config.apostrophe != "keep":
                pieces.append(_APOS_PIECE[self.config.apostrophe])
            steps.append(pre.Split(Regex("|".join(pieces)), "isolated"))
        tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre.Sequence(steps)
        return tok

    @cached_property
    def _dictionary(self) -> Callable[[str], list[Span]] | None:
        kind = self.config.kind
        return _DICTIONARIES[kind]() if kind in _DICTIONARIES else None

    @cached_property
    def _convert(self) -> Callable[[str], str] | None:
        return _opencc(self.config.script) if self.config.script else None

    def normalize(self, text: str) -> str:
        """Script conversion, NFKC and lowercasing as configured (never changes where words are)."""
        if self._convert is not None:
            text = self._convert(text)
        if self.config.normalize:
            text = unicodedata.normalize("NFKC", text)
            if _SARA_AM[0] in text:
                text = text.replace(*_SARA_AM)
        if self.config.lowercase:
            text = text.lower()
        return text

    def segment(self, text: str) -> list[str]:
        """The words of one string."""
        return self.segment_batch([text])[0]

    def segment_batch(self, texts: Sequence[str]) -> list[list[str]]:
        """The normalised words of each string, in order."""
        norm = [self.normalize(t) for t in texts]
        if self.config.kind == "whitespace":  # the pre-tokenizer would only split on whitespace: str.split does that
            return [t.split() for t in norm]
        flat = self._flat(norm)
        joined = "\n".join(norm)
        words = [joined[a:b] for a, b in zip(flat.start.tolist(), flat.end.tolist(), strict=True)]
        bounds = np.zeros(len(norm) + 1, dtype=np.int64)
        np.cumsum(flat.counts, out=bounds[1:])
        return [words[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]

    def spans_batch(self, texts: Sequence[str]) -> list[list[Span]]:
        """Each string's words as (start, end) character offsets into the string as given (see
        :meth:`flat_spans`)."""
        flat = self.flat_spans(texts)
        base = np.repeat(layout(texts), flat.counts)
        pairs = list(zip((flat.start - base).tolist(), (flat.end - base).tolist(), strict=True))
        bounds = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(flat.counts, out=bounds[1:])
        return [pairs[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]

    def flat_spans(self, texts: Sequence[str]) -> FlatSpans:
        """The words of all ``texts`` as offsets into the texts joined by one separator character (the layout
        of :func:`layout`), segmented as given: without NFKC or lowercasing (they may change lengths) but after
        script conversion, as the lexicon's words were (a conversion that changes a string's length is not
        applied to that string)."""
        if self._convert is not None:
            texts = [c if len(c) == len(t) else t for t, c in zip(texts, map(self._convert, texts), strict=True)]
        return self._flat(texts)

    def _flat(self, texts: Sequence[str]) -> FlatSpans:
        kind = self.config.kind
        base = layout(texts)
        if kind in ("default", "chars"):
            start, end = charclass.spans("\n".join(texts), self.config.apostrophe, kind == "chars")
            counts = np.diff(np.searchsorted(start, np.append(base, np.iinfo(np.int64).max)))
            return FlatSpans(start, end, counts)
        if self._dictionary is not None:
            per_text = [self._dictionary(t) for t in texts]
        else:  # whitespace
            per_text = [enc.offsets for enc in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        return flatten(per_text, base)


@dataclass(frozen=True)
class FlatSpans:
    """Words of several texts: ``start``/``end`` offsets in the texts joined by one separator character
    (:func:`layout`), ``counts`` words per text."""

    start: np.ndarray
    end: np.ndarray
    counts: np.ndarray


def flatten(per_text: Sequence[Sequence[tuple[int, int]]], base: np.ndarray) -> FlatSpans:
    """Per-text (start, end) offsets (a segmenter's words, a tokenizer's tokens) as :class:`FlatSpans`, each text's
    shifted by where it starts (``base``, from :func:`layout`)."""
    counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(per_text)), np.int64, count=2 * int(counts.sum()))
    shift = np.repeat(base, counts)
    return FlatSpans(flat[0::2] + shift, flat[1::2] + shift, counts)


def layout(texts: Sequence[str]) -> np.ndarray:
    """Where each text starts when ``texts`` are joined by one separator character ("\\n".join)."""
    base = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        np.cumsum(np.fromiter((len(t) + 1 for t in texts[:-1]), dtype=np.int64, count=len(texts) - 1), out=base[1:])
    return base


def join_words(words: Sequence[str], joiner: str) -> str:
    """The words of a multi-word unit as one string: ``joiner`` between them (a space, or nothing for scripts
    written without spaces), except beside an apostrophe the segmenter split off inside a word, so that
    ``aujourd'`` ``hui`` gives ``aujourd'hui`` and ``o`` ``'clock`` gives ``o'clock``."""
    if not joiner or len(words) < 2:
        return joiner.join(words)
    out = [words[0]]
    for left, right in zip(words, words[1:], strict=False):
        glued = (left[-1:] in _APOS and len(left) > 1) or (right[:1] in _APOS and len(right) > 1)
        out.append(right if glued else joiner + right)
    return "".join(out)


def needs_space(left: str, right: str) -> bool:
    """Whether two words written side by side need a space between them: both meet at a letter or digit of a
    script written with spaces (``bank`` ``computer``; not ``银行`` ``bank``, not ``bank`` ``,``)."""
    a, b = left[-1:], right[:1]
    return a.isalnum() and b.isalnum() and not any(p.match(a) or p.match(b) for p in _SCRIPT_RES.values())


def is_word(token: str) -> bool:
    """True when a token holds at least one letter (not only punctuation, digits or symbols)."""
    return any(ch.isalpha() for ch in token)


# --- languages -----------------------------------------------------------------------------------------------

# Where an apostrophe inside a word goes, by language: elision languages glue it to the word before
# (l'homme -> l' homme), English to the word after (Tom's -> Tom 's), others keep it as its own token.
_APOSTROPHE_BY_LANG = {"fr": "previous", "it": "previous", "ca": "previous", "oc": "previous", "en": "next"}
_SEGMENTER_BY_LANG = {"zh": "jieba", "ja": "sudachi", "th": "pythainlp"}
_NO_SEGMENTER = {"lo": "Lao", "km": "Khmer", "my": "Burmese", "bo": "Tibetan", "dz": "Dzongkha"}
_ISO639_3 = {"zho": "zh", "chi": "zh", "cmn": "zh", "jpn": "ja", "tha": "th", "eng": "en", "fra": "fr", "fre": "fr"}
_ISO639_3 |= {"lao": "lo", "khm": "km", "mya": "my", "bur": "my", "bod": "bo", "tib": "bo", "dzo": "dz"}


def base_language(lang: str | None) -> str | None:
    """The ISO 639-1 code of a language tag (``zh-Hant`` -> ``zh``, ``ja_JP`` -> ``ja``, ``cmn`` -> ``zh``)."""
    if not lang:
        return None
    base = re.split(r"[-_]", lang.strip().lower())[0]
    return _ISO639_3.get(base, base)


def apostrophe_for(lang: str | None) -> Apostrophe:
    """The apostrophe rule for a language code (``split`` when unknown or None)."""
    return _APOSTROPHE_BY_LANG.get(base_language(lang) or "", "split")  # type: ignore[return-value]


def segmenter_for(lang: str | None) -> str:
    """The segmenter a language code chooses: a dictionary segmenter for zh, ja, th; ``default`` otherwise."""
    return _SEGMENTER_BY_LANG.get(base_language(lang) or "", "default")


def segmenter_config(
    lang: str | None,
    segmenter: str | None = None,
    *,
    lowercase: bool = True,
    pretokenized: bool = False,
    script: str | None = None,
    option: str = "--lang",
) -> SegmenterConfig:
    """The segmenter of one side: chosen by ``lang`` unless ``segmenter`` names one, checked to be installed.

    InputError (exit 2), never a silent fallback, when the language needs a segmenter that is missing or that
    this tool does not have (Lao, Khmer, Burmese, Tibetan: say ``--segmenter chars`` to split them per character).
    """
    base = base_language(lang)
    if segmenter is None and pretokenized:
        segmenter = "whitespace"
    if segmenter is None and base in _NO_SEGMENTER:
        raise InputError(
            f"{option} {lang}: no word segmenter for {_NO_SEGMENTER[base]} here; pass the segmenter option with "
            "'chars' to split per character, or 'whitespace' when the text is already segmented"
        )
    method = segmenter or segmenter_for(lang)
    if method not in SEGMENTERS:
        raise InputError(f"unknown segmenter {method!r}: one of {', '.join(SEGMENTERS)}")
    require(method, f"{option} {lang}" if segmenter is None else f"segmenter {method}")
    if script is not None:
        require_opencc(script)
    return SegmenterConfig(
        lowercase=lowercase,
        apostrophe=apostrophe_for(lang),
        pretokenized=method == "whitespace",
        method="default" if method == "whitespace" else method,
        script=script,
        lang=lang,
    )


_CHINESE_SCRIPTS = {"simplified": "t2s", "traditional": "s2t"}


def side_segmenters(
    src: tuple[str | None, str | None],
    tgt: tuple[str | None, str | None],
    *,
    lowercase: bool = True,
    pretokenized: bool = False,
    chinese_script: str | None = None,
) -> tuple[SegmenterConfig, SegmenterConfig]:
    """The two sides' segmenters of a parallel-text job from (language, segmenter override) each;
    ``chinese_script`` (``simplified`` or ``traditional``) applies to the Chinese side(s) and is an InputError
    when neither side is Chinese (an option that would do nothing)."""
    script = _CHINESE_SCRIPTS[chinese_script] if chinese_script else None
    chinese = [base_language(lang) == "zh" for lang, _ in (src, tgt)]
    if script and not any(chinese):
        raise InputError("--chinese-script applies to a Chinese side, and neither --src-lang nor --tgt-lang is zh")
    return tuple(  # type: ignore[return-value]
        segmenter_config(
            lang,
            override,
            lowercase=lowercase,
            pretokenized=pretokenized,
            script=script if zh else None,
            option=f"--{side}-lang",
        )
        for (lang, override), zh, side in zip((src, tgt), chinese, ("src", "tgt"), strict=True)
    )


def require(method: str, why: str) -> None:
    """InputError naming the extra to install when ``method``'s package is missing."""
    if method not in _PACKAGES:
        return
    package, extra, language = _PACKAGES[method]
    if not _importable(package):
        raise InputError(
            f"{why} needs the {language} word segmenter {method}, which is not installed: "
            f"pip install 'prealign-data[{extra}]'"
        )


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def require_opencc(script: str) -> None:
    """InputError naming the extra when OpenCC (Chinese script conversion) is missing."""
    if not _importable("opencc"):
        raise InputError(f"Chinese script conversion {script} needs OpenCC: pip install 'prealign-data[zh]'")


_SCRIPTS = {
    "Han (Chinese or Japanese)": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f",
    "kana (Japanese)": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Thai": "\u0e00-\u0e7f",
    "Lao, Khmer or Burmese": "\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f",
}
_SCRIPT_RES = {name: re.compile(f"[{chars}]") for name, chars in _SCRIPTS.items()}
UNSPACED_SHARE = 0.3  # above this share of letters in scripts written without spaces, a plain split is refused


def check_segmented(config: SegmenterConfig, texts: Sequence[str], lang_option: str, segmenter_option: str) -> None:
    """InputError when ``texts`` (a sample of one side) are mostly in a script written without spaces but the
    segmenter is the plain ``default`` one, which would make whole phrases (or, with ``chars``, single
    characters) the words: the user must name the language or choose ``chars`` on purpose."""
    if config.kind != "default":
        return
    sample = "".join(texts[:2000])
    letters = sum(ch.isalpha() for ch in sample)
    counts = {name: len(pattern.findall(sample)) for name, pattern in _SCRIPT_RES.items()}
    script = max(counts, key=counts.__getitem__)
    if letters and sum(counts.values()) / letters > UNSPACED_SHARE:
        raise InputError(
            f"{sum(counts.values()) / letters:.0%} of the letters are in scripts written without spaces (mostly "
            f"{script}) but no word segmenter was chosen for them: give {lang_option} (zh, ja or th), or "
            f"{segmenter_option} chars to make every character a word on purpose"
        )


# --- dictionary segmenters: loaded once per process, each returns word spans of a string --------------------


def _spans_of(text: str, words: Sequence[str]) -> list[Span]:
    """Spans of ``words``, found in order in ``text``; whitespace-only words dropped."""
    out, pos = [], 0
    for w in words:
        if not w.strip():
            pos += len(w) if text.startswith(w, pos) else 0
            continue
        start = text.find(w, pos)
        if start < 0:  # a segmenter that altered the word (never seen): keep its place, skip it
            continue
        out.append((start, start + len(w)))
        pos = start + len(w)
    return out


@functools.cache
def _jieba() -> Callable[[str], list[Span]]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.initialize()
    return lambda text: [(a, b) for w, a, b in tok.tokenize(text) if w.strip()]


_SUDACHI_MAX = 12_000  # characters a call: sudachipy refuses inputs over 49,149 bytes


def _cut(text: str, start: int, limit: int) -> int:
    """Where to cut ``text[start:limit]`` for a segmenter with an input limit: after the last sentence end or
    whitespace in its second half, else at the limit."""
    found = max(text.rfind(ch, start + (limit - start) // 2, limit) for ch in "。！？.!?\n ")
    return found + 1 if found >= 0 else limit


@functools.cache
def _sudachi() -> Callable[[str], list[Span]]:
    from sudachipy import Dictionary, SplitMode

    dictionary = Dictionary(dict="core")
    make = getattr(dictionary, "tokenizer", None) or dictionary.create  # create: sudachipy before 0.6.8
    tok = make(mode=SplitMode.C)

    def spans(text: str) -> list[Span]:
        out: list[Span] = []
        start = 0
        while start < len(text):
            end = len(text) if len(text) - start <= _SUDACHI_MAX else _cut(text, start, start + _SUDACHI_MAX)
            out += [(start + m.begin(), start + m.end()) for m in tok.tokenize(text[start:end]) if m.surface().strip()]
            start = end
        return out

    return spans


@functools.cache
def _pythainlp() -> Callable[[str], list[Span]]:
    from pythainlp.tokenize import word_tokenize

    return lambda text: _spans_of(text, word_tokenize(text, engine="newmm", keep_whitespace=False))


_DICTIONARIES: dict[str, Callable[[], Callable[[str], list[Span]]]] = {
    "jieba": _jieba,
    "sudachi": _sudachi,
    "pythainlp": _pythainlp,
}


@functools.cache
def _opencc(script: str) -> Callable[[str], str]:
    import opencc

    return opencc.OpenCC(script).convert
