"""The default segmenter's words, found by numpy over character classes instead of a regex per document.

The classes come from the same regex engine the ``tokenizers`` pre-tokenizer uses (so ``\\w``, ``\\s`` and
``\\p{M}`` mean exactly what they mean there): one table for the Basic Multilingual Plane, built once per
process (about 0.2 s), and characters beyond it classified when first met. A text is then cut in a few array
passes (`spans`): what :class:`prealign.text.Segmenter` does with its pre-tokenizer (whitespace split,
punctuation isolated, Han and kana one character a word, apostrophes inside words by language), several times
faster, on whole batches at once. Where Han, kana or Thai characters meet an apostrophe inside a word (``東'x``),
the regex's leftmost-first matching and these passes may cut differently; the tests compare the two on random
text of every other kind, and on Brown and both Tatoeba files (identical).
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from tokenizers import Regex
from tokenizers import pre_tokenizers as pre

# flags of a character (a character with none of them is punctuation: neither \w nor space nor an apostrophe)
WORD, MARK, CJK, UNSPACED, SPACE, APOS = 1, 2, 4, 8, 16, 32
UNKNOWN = 255
_APOS = "'’"
_PATTERNS = [
    (WORD, r"\w"),
    (MARK, r"\p{M}"),
    (CJK, r"[\p{Han}\p{Hiragana}\p{Katakana}]"),
    (UNSPACED, r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"),
]
_lock = threading.Lock()


def _classify(chars: str) -> np.ndarray:
    """The flags of each character of ``chars`` (no surrogates), by the tokenizers regex engine."""
    out = np.zeros(len(chars), dtype=np.uint8)
    for flag, pattern in _PATTERNS:
        hits = pre.Split(Regex(pattern), "removed", invert=True).pre_tokenize_str(chars)
        out[[a for _, (a, _) in hits]] |= flag
    words = pre.WhitespaceSplit().pre_tokenize_str(chars)  # what WhitespaceSplit keeps is not space
    space = np.ones(len(chars), dtype=bool)
    for _, (a, b) in words:
        space[a:b] = False
    out[space] |= SPACE
    for ch in _APOS:
        for at in (i for i, c in enumerate(chars) if c == ch):
            out[at] |= APOS
    return out


@functools.cache
def _table() -> np.ndarray:
    """Flags of every code point; the BMP filled, the rest UNKNOWN until met."""
    table = np.full(0x110000, UNKNOWN, dtype=np.uint8)
    cps = np.r_[0:0xD800, 0xE000:0x10000]
    table[cps] = _classify("".join(map(chr, cps.tolist())))
    return table


def classes(codes: np.ndarray) -> np.ndarray:
    """The flags of each code point of ``codes`` (uint32), classifying the ones not met before."""
    table = _table()
    cls = table[codes]
    unknown = cls == UNKNOWN
    if unknown.any():
        with _lock:
            new = np.unique(codes[unknown])
            new = new[table[new] == UNKNOWN]
            if len(new):
                table[new] = _classify("".join(map(chr, new.tolist())))
        cls = table[codes]
    return cls


def _before(a: np.ndarray) -> np.ndarray:
    """``a`` shifted right by one (what the previous character has), False first."""
    return np.r_[False, a[:-1]]


def spans(text: str, apostrophe: str, unspaced_chars: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) character offsets of the words of ``text`` as the default segmenter cuts them (``chars``:
    ``unspaced_chars``, Thai, Lao, Khmer and Myanmar one character a word too); ``apostrophe`` as in
    :class:`prealign.text.SegmenterConfig`."""
    cls = classes(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
    n = len(cls)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    word, mark, space = (cls & WORD) > 0, (cls & MARK) > 0, (cls & SPACE) > 0
    apos = (cls & APOS) > 0
    inner = apos & _before(word) & np.r_[word[1:], False]  # an apostrophe inside a word
    punct = ~(word | space | inner)  # what is neither \w nor space, and any other apostrophe
    solid = ~space
    # pieces of one character (Han, kana; with unspaced_chars also Thai...) and the marks after it
    single = (cls & (CJK | UNSPACED if unspaced_chars else CJK)) > 0
    see_through = mark & ~single  # a mark outside those scripts belongs to whatever piece is before it
    last = np.maximum.accumulate(np.where(see_through, -1, np.arange(n)))
    in_single = (last >= 0) & single[np.maximum(last, 0)]
    continues = mark & _before(in_single)  # a mark right after such a piece is part of it
    starts = solid & ~_before(solid)  # after whitespace, or at the start
    starts |= punct | _before(punct)
    starts |= single & ~continues
    starts |= _before(in_single) & ~continues
    if apostrophe == "next":  # tom 's
        starts |= inner
    elif apostrophe == "previous":  # l' homme
        starts |= _before(inner)
    elif apostrophe == "split":
        starts |= inner | _before(inner)
    starts &= solid
    ends = solid & (np.r_[space[1:], True] | np.r_[starts[1:], False])
    return np.flatnonzero(starts), np.flatnonzero(ends) + 1
