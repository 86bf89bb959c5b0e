"""Switch words of tokenised documents to their translations, in the input only.

Words are the project's own segmenter's (:mod:`prealign.text`, the lexicon's source-side segmenter, so that
documents are cut into the lexicon's units in every language), mapped onto the tokenizer's tokens by character
offsets (:mod:`prealign.codeswitch.words`), so any Hugging Face tokenizer works; a word whose tokens straddle
its boundaries is left as it is and counted as unswitchable. A word is looked up by its text without
surrounding whitespace, normalised as the segmenter normalises (NFKC, lowercase, Chinese script conversion);
its capitalisation (Title, UPPER) is carried over to the translation, and its leading whitespace kept, before
the translation is tokenised.

Randomness is counter-based: the draw for word w of document d is a hash of (seed, d, w, stream), so the
output depends only on the seed and the documents' global indices, never on batching or worker count.

Labels (Hugging Face causal-LM convention, ``labels[j]`` is compared with the prediction after j-1):

- ``input-only``: every word's first input position is labelled with the *original* word's first token; the
  other positions of an unswitched word with their own tokens; the other positions of a switched word with
  -100. So the model, reading mixed input, is always asked for the original text, and never for the tokens
  of a translation.
- ``switched``: ``labels = input_ids``.
"""

from __future__ import annotations

import functools
import gc
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
from tokenizers import Tokenizer

from prealign.arrays import join_offsets
from prealign.codeswitch.phrases import PhraseIndex, find_phrases, merge_units, phrase_index
from prealign.codeswitch.surface import MidText, mid_text_tokenizer, surface_ids
from prealign.codeswitch.table import SwitchConfig, SwitchTable
from prealign.codeswitch.words import Units, word_units
from prealign.shards import IGNORE_INDEX
from prealign.text import FlatSpans, Segmenter, is_word, needs_space

_SUB_BATCH = 1024
_LETTER = re.compile(r"[^\W\d_]")
LOWER, TITLE, UPPER = 0, 1, 2


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit mixing function (SplitMix64's finaliser), elementwise on uint64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniforms(seed: int, doc: np.ndarray, word: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) draws, one per (document index, word index), for a seed and a stream number."""
    with np.errstate(over="ignore"):
        key = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + np.uint64(stream) * np.uint64(0x632BE59BD9B4E019))
        h = splitmix64(key ^ splitmix64(doc.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) + word.astype(np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class WordInfo:
    """What a distinct word (identified by its token ids) is: lexicon entry, casing, whether it has a letter."""

    entry: int
    casing: int
    is_word: bool
    phrase_word: int = -1  # its number among the words of multi-word entries (PhraseIndex.word_id), or -1


@dataclass
class WordCache:
    """Per-process cache: word hash -> WordInfo, and surface form -> token ids. Only speeds things up."""

    info: dict[int, WordInfo] = field(default_factory=dict)
    surfaces: dict[str, np.ndarray] = field(default_factory=dict)  # translation in a text -> token ids
    first_surfaces: dict[str, np.ndarray] = field(default_factory=dict)  # ... as a document's first word
    mid_text: MidText | None = None  # the tokenizer without its leading space marker (surface.py)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    casings: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    phrase_words: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    phrases: PhraseIndex | None = None  # the table's multi-word entries, built on first use

    def add(self, infos: dict[int, WordInfo]) -> None:
        """Add newly described words and re-sort the lookup arrays."""
        self.info.update(infos)
        vals = list(infos.values())
        keys = np.concatenate([self.keys, np.fromiter(infos.keys(), dtype=np.uint64, count=len(infos))])
        entries = np.concatenate([self.entries, np.array([v.entry for v in vals], dtype=np.int64)])
        casings = np.concatenate([self.casings, np.array([v.casing for v in vals], dtype=np.int8)])
        words = np.concatenate([self.words, np.array([v.is_word for v in vals], dtype=bool)])
        phrase_words = np.concatenate([self.phrase_words, np.array([v.phrase_word for v in vals], dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self.keys, self.entries, self.casings = keys[order], entries[order], casings[order]
        self.words, self.phrase_words = words[order], phrase_words[order]


@dataclass
class Switched:
    """Switched documents: flat arrays with per-document offsets, and counts."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    switched: np.ndarray  # int8
    offsets: np.ndarray  # int64, documents + 1
    words: int
    words_with_entry: int
    words_switched: int
    words_unswitchable: int = 0  # words (with a letter) that tokens straddling their boundaries leave unswitchable
    # per target language (SwitchTable.languages): words with a translation in it, words switched into it
    lang_with_entry: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    lang_switched: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))


def _casing(core: str) -> int:
    if len(core) > 1 and core.isupper():
        return UPPER
    if core[:1].isupper():
        return TITLE
    return LOWER


def apply_casing(word: str, casing: int) -> str:
    """Carry a casing class over to a (lowercase) translation."""
    if casing == UPPER:
        return word.upper()
    if casing == TITLE:
        return word[:1].upper() + word[1:]
    return word


def _lookup(cache: WordCache, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each hash's slot in the cache's sorted keys, and whether it is there."""
    if len(cache.keys) == 0:
        return np.zeros(len(hashes), dtype=np.int64), np.zeros(len(hashes), dtype=bool)
    slot = np.minimum(np.searchsorted(cache.keys, hashes), len(cache.keys) - 1)
    return slot, cache.keys[slot] == hashes


def _describe_units(
    table: SwitchTable, segmenter: Segmenter, phrases: PhraseIndex, hashes: np.ndarray, words: list[str]
) -> dict[int, WordInfo]:
    """WordInfo of words seen for the first time, from their text (hash 0 marks tokens outside any word)."""
    out = {}
    for h, core in zip(hashes.tolist(), words, strict=True):
        if h == 0 or not core:
            out[h] = WordInfo(-1, LOWER, False)
            continue
        is_word = core.isalpha() or _LETTER.search(core) is not None
        key = segmenter.normalize(core).lower()
        out[h] = WordInfo(table.index.get(key, -1), _casing(core), is_word, phrases.word_id.get(key, -1))
    return out


def switch_batch(
    texts: list[str],
    first_doc: int,
    tokenizer: Tokenizer,
    table: SwitchTable,
    config: SwitchConfig,
    cache: WordCache | None = None,
    segmenter: Segmenter | None = None,
) -> Switched:
    """Tokenise and switch documents ``first_doc, first_doc + 1, ...``; words are ``segmenter``'s (the lexicon's
    source-side segmenter; the default one when None).

    When the tokenizer runs single-threaded (``TOKENIZERS_PARALLELISM=false``, as in Ray workers), documents
    go in sub-batches: the tokenizer (which releases the GIL) encodes the next sub-batch in a helper thread
    while this one is switched, so tokenisation and the Python work overlap. With the tokenizer's own thread
    pool on, that overlap only competes for the same cores, so the batch is encoded at once.
    """
    cache = cache or WordCache()
    segmenter = segmenter or Segmenter()
    enabled = gc.isenabled()
    gc.disable()  # many short-lived lists and no cycles: the collector would only re-scan the word cache
    try:
        pool = _encoder()
        sub = (
            _SUB_BATCH if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("false", "0", "off") else len(texts)
        )
        sub = max(sub, 1)
        starts = list(range(0, len(texts), sub)) or [0]
        pending = pool.submit(_encode, tokenizer, segmenter, texts[:sub])
        parts = []
        for k, start in enumerate(starts):
            encs, spans = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = pool.submit(_encode, tokenizer, segmenter, texts[nxt : nxt + sub])
            part = texts[start : start + sub]
            args = (tokenizer, table, config, cache, segmenter)
            parts.append(_switch_encoded(encs, spans, part, first_doc + start, *args))
        return _concat(parts)
    finally:
        if enabled:
            gc.enable()


def _encode(tokenizer: Tokenizer, segmenter: Segmenter, texts: list[str]) -> tuple[list, FlatSpans]:
    """The tokenizer's encodings and the segmenter's words of ``texts``."""
    return tokenizer.encode_batch(texts, add_special_tokens=False), segmenter.flat_spans(texts)


@functools.cache
def _encoder() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="prealign-encode")


def _concat(parts: list[Switched]) -> Switched:
    if len(parts) == 1:
        return parts[0]
    return Switched(
        np.concatenate([p.input_ids for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.switched for p in parts]),
        join_offsets([p.offsets for p in parts]),
        words=sum(p.words for p in parts),
        words_with_entry=sum(p.words_with_entry for p in parts),
        words_switched=sum(p.words_switched for p in parts),
        words_unswitchable=sum(p.words_unswitchable for p in parts),
        lang_with_entry=np.sum([p.lang_with_entry for p in parts], axis=0),
        lang_switched=np.sum([p.lang_switched for p in parts], axis=0),
    )


def _switch_encoded(
    encs: list,
    spans: FlatSpans,
    texts: list[str],
    first_doc: int,
    tokenizer: Tokenizer,
    table: SwitchTable,
    config: SwitchConfig,
    cache: WordCache,
    segmenter: Segmenter,
) -> Switched:
    ids_lists = [e.ids for e in encs]
    doc_len = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(encs))
    ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int64, count=int(doc_len.sum()))
    n_tok = len(ids)
    doc_off = np.zeros(len(encs) + 1, dtype=np.int64)
    np.cumsum(doc_len, out=doc_off[1:])
    if cache.phrases is None:
        cache.phrases = phrase_index(table.index, segmenter)
    phrases = cache.phrases
    special = np.isin(ids, _special_ids(tokenizer))
    units = word_units(texts, [e.offsets for e in encs], spans, special)
    joined = "\n".join(texts)  # the layout of the units' character offsets
    starts = units.starts
    ends = np.append(starts[1:], n_tok)
    unit_word = units.word
    word_unit = unit_word >= 0
    unit_doc = units.word_doc[unit_word]  # meaningful for word units only (the others are never switched)
    unit_index = units.word_index[unit_word]

    # identify each unit by a hash of its token ids (position-salted), and describe unseen ones once
    pos_in_unit = np.arange(n_tok) - np.repeat(starts, ends - starts)
    with np.errstate(over="ignore"):
        tok_hash = splitmix64(ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + pos_in_unit.astype(np.uint64))
    unit_hash = np.add.reduceat(tok_hash, starts) if n_tok else np.zeros(0, np.uint64)
    unit_hash[~word_unit] = 0  # tokens outside a switchable word: never switched
    slot, known = _lookup(cache, unit_hash)
    if not known.all():  # describe each new word once, from its first occurrence
        missing = np.flatnonzero(~known)
        order = np.argsort(unit_hash[missing], kind="stable")
        hashes = unit_hash[missing][order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        new_words = unit_word[missing[order[first]]]
        spans = zip(units.word_start[new_words].tolist(), units.word_end[new_words].tolist(), strict=True)
        cache.add(_describe_units(table, segmenter, phrases, hashes[first], [joined[a:b] for a, b in spans]))
        slot, _ = _lookup(cache, unit_hash)
    entry = cache.entries[slot]
    n_words = int(cache.words[slot].sum())  # before phrases are merged: a phrase's words are words
    if phrases.longest > 1:  # runs of words that are a multi-word entry become one unit
        found = find_phrases(np.where(word_unit, cache.phrase_words[slot], -1), unit_doc, phrases)
        if found:
            entry = entry.copy()
            entry[[u for u, _, _ in found]] = [e for _, _, e in found]
            keep = merge_units(found, len(starts))
            starts, entry, slot, unit_hash, unit_doc, unit_index, unit_word = (
                a[keep] for a in (starts, entry, slot, unit_hash, unit_doc, unit_index, unit_word)
            )
            ends = np.append(starts[1:], n_tok)

    has_entry = entry >= 0
    u_switch = uniforms(config.seed, unit_doc + first_doc, unit_index, 0)
    switch = has_entry & (u_switch < config.ratio)
    sw_units = np.flatnonzero(switch)
    if len(sw_units):
        u_pick = uniforms(config.seed, unit_doc[sw_units] + first_doc, unit_index[sw_units], 1)
        picks = table.pick(entry[sw_units], u_pick)
        lang_switched = np.bincount(table.lang[picks], minlength=len(table.languages))
        casing = cache.casings[slot[sw_units]]
        # the whitespace before each switched word in the text: after the token before its unit (which may cover
        # it, or not: a tokenizer that splits at whitespace puts it in no token), or the document's start
        doc_first = starts[sw_units] == doc_off[unit_doc[sw_units]]
        before = np.maximum(starts[sw_units] - 1, 0)
        prefix_from = np.where(doc_first, units.doc_start[unit_doc[sw_units]], units.tok_end[before]).tolist()
        prefix_to = units.word_start[unit_word[sw_units]].tolist()
        if cache.mid_text is None:
            cache.mid_text = mid_text_tokenizer(tokenizer)
        mid = cache.mid_text
        replacement = []
        previous = (-2, "")  # the last switched unit and its translation
        for k, (unit, t, c) in enumerate(zip(sw_units.tolist(), picks.tolist(), casing.tolist(), strict=True)):
            prefix = joined[prefix_from[k] : prefix_to[k]]
            if prefix and mid.one_space:
                prefix = " "
            word = apply_casing(table.translations[t], c)
            adjacent = unit == previous[0] + 1 and unit_doc[unit] == unit_doc[previous[0]]
            if adjacent and not prefix and needs_space(previous[1], word):
                prefix = " "  # two translations into a spaced script, side by side in text without spaces
            if doc_first[k]:  # as the tokenizer encodes a document's start (a space marker added, if it adds one)
                replacement.append(surface_ids(tokenizer, prefix + word, cache.first_surfaces))
            else:
                replacement.append(surface_ids(mid.tokenizer, prefix + word, cache.surfaces))
            previous = (unit, word)
    else:
        replacement = []
        lang_switched = np.zeros(len(table.languages), np.int64)
    lang_with_entry = table.entry_langs[entry[has_entry]].sum(axis=0, dtype=np.int64)
    out = _assemble(ids, starts, ends, sw_units, replacement, doc_off, config.labels == "input-only")
    unswitchable = _unswitchable_words(joined, units)
    return Switched(
        *out,
        words=n_words + unswitchable,
        words_unswitchable=unswitchable,
        words_with_entry=int(has_entry.sum()),
        words_switched=len(sw_units),
        lang_with_entry=lang_with_entry,
        lang_switched=lang_switched.astype(np.int64),
    )


def _special_ids(tokenizer: Tokenizer) -> np.ndarray:
    """The ids of the tokenizer's special added tokens (never part of a word)."""
    return np.array([i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special], dtype=np.int64)


def _unswitchable_words(joined: str, units: Units) -> int:
    """How many words that tokens leave unswitchable hold a letter (they are counted as words too); ``joined``:
    the batch's documents joined by one separator character, the layout of the units' offsets."""
    bad = np.flatnonzero(~units.clean)
    if len(bad) == 0:
        return 0
    return sum(
        is_word(joined[a:b]) for a, b in zip(units.word_start[bad].tolist(), units.word_end[bad].tolist(), strict=True)
    )


def _assemble(
    ids: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    sw_units: np.ndarray,
    replacement: list[np.ndarray],
    doc_off: np.ndarray,
    input_only: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Splice the replacements in (vectorised); labels per the policy; document offsets in the output."""
    n_units = len(starts)
    unit_len = ends - starts
    rep_len = np.array([len(r) for r in replacement], dtype=np.int64)
    new_len = unit_len.copy()
    new_len[sw_units] = rep_len
    out_start = np.zeros(n_units + 1, dtype=np.int64)
    np.cumsum(new_len, out=out_start[1:])
    total = int(out_start[-1])
    out_ids = np.empty(total, dtype=np.int32)
    out_sw = np.zeros(total, dtype=np.int8)
    switched_unit = np.zeros(n_units, dtype=bool)
    switched_unit[sw_units] = True
    tok_unit = np.repeat(np.arange(n_units), unit_len)
    keep = ~switched_unit[tok_unit]
    dest = out_start[tok_unit] + (np.arange(len(ids)) - starts[tok_unit])
    out_ids[dest[keep]] = ids[keep]
    out_lab = out_ids.copy()
    if len(sw_units):
        rep_flat = np.concatenate(replacement)
        rep_unit = np.repeat(sw_units, rep_len)
        first = np.zeros(len(sw_units) + 1, dtype=np.int64)
        np.cumsum(rep_len, out=first[1:])
        rep_dest = out_start[rep_unit] + (np.arange(len(rep_flat)) - np.repeat(first[:-1], rep_len))
        out_ids[rep_dest] = rep_flat
        out_sw[rep_dest] = 1
        if input_only:  # first position: the original word's first token; the rest of the translation: -100
            out_lab[rep_dest] = IGNORE_INDEX
            out_lab[out_start[sw_units]] = ids[starts[sw_units]]
        else:
            out_lab[rep_dest] = rep_flat
    # documents: the output offset of a document's first unit (units never cross documents)
    first_unit = np.searchsorted(starts, doc_off)
    return out_ids, out_lab, out_sw, out_start[first_unit]
