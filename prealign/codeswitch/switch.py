"""Switch words of tokenised documents to their translations, in the input only.

Word boundaries are the tokenizer's own pre-tokenisation (``Encoding.word_ids``), so any Hugging Face
tokenizer works. A word is looked up by its text without surrounding whitespace, lowercased; its
capitalisation (Title, UPPER) is carried over to the translation, and its leading whitespace kept, before the
translation is tokenised.

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
from prealign.codeswitch.table import SwitchConfig, SwitchTable
from prealign.shards import IGNORE_INDEX

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
    """What a distinct word (identified by its token ids) is: lexicon entry, casing, whitespace prefix."""

    entry: int
    casing: int
    prefix: str
    is_word: bool


@dataclass
class WordCache:
    """Per-process cache: word hash -> WordInfo, and surface form -> token ids. Only speeds things up."""

    info: dict[int, WordInfo] = field(default_factory=dict)
    surface_ids: dict[str, np.ndarray] = field(default_factory=dict)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    entries: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    casings: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def add(self, infos: dict[int, WordInfo]) -> None:
        """Add newly described words and re-sort the lookup arrays."""
        self.info.update(infos)
        vals = list(infos.values())
        keys = np.concatenate([self.keys, np.fromiter(infos.keys(), dtype=np.uint64, count=len(infos))])
        entries = np.concatenate([self.entries, np.array([v.entry for v in vals], dtype=np.int64)])
        casings = np.concatenate([self.casings, np.array([v.casing for v in vals], dtype=np.int8)])
        words = np.concatenate([self.words, np.array([v.is_word for v in vals], dtype=bool)])
        order = np.argsort(keys, kind="stable")
        self.keys, self.entries, self.casings, self.words = keys[order], entries[order], casings[order], words[order]


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
    tokenizer: Tokenizer, table: SwitchTable, hashes: np.ndarray, id_lists: list[list[int]]
) -> dict[int, WordInfo]:
    """WordInfo of words seen for the first time (hash 0 marks tokens outside any word)."""
    texts = tokenizer.decode_batch(id_lists, skip_special_tokens=False)
    out = {}
    for h, text in zip(hashes.tolist(), texts, strict=True):
        core = text.strip()
        if h == 0 or not core:
            out[h] = WordInfo(-1, LOWER, "", False)
            continue
        prefix = text[: len(text) - len(text.lstrip())]
        is_word = core.isalpha() or _LETTER.search(core) is not None
        out[h] = WordInfo(table.index.get(core.lower(), -1), _casing(core), prefix, is_word)
    return out


def surface_ids(tokenizer: Tokenizer, surface: str, cache: WordCache) -> np.ndarray:
    """Token ids of a replacement surface form (whitespace prefix + cased translation), cached."""
    ids = cache.surface_ids.get(surface)
    if ids is None:
        ids = np.array(tokenizer.encode(surface, add_special_tokens=False).ids, dtype=np.int32)
        cache.surface_ids[surface] = ids
    return ids


def switch_batch(
    texts: list[str],
    first_doc: int,
    tokenizer: Tokenizer,
    table: SwitchTable,
    config: SwitchConfig,
    cache: WordCache | None = None,
) -> Switched:
    """Tokenise and switch documents ``first_doc, first_doc + 1, ...``.

    When the tokenizer runs single-threaded (``TOKENIZERS_PARALLELISM=false``, as in Ray workers), documents
    go in sub-batches: the tokenizer (which releases the GIL) encodes the next sub-batch in a helper thread
    while this one is switched, so tokenisation and the Python work overlap. With the tokenizer's own thread
    pool on, that overlap only competes for the same cores, so the batch is encoded at once.
    """
    cache = cache or WordCache()
    enabled = gc.isenabled()
    gc.disable()  # many short-lived lists and no cycles: the collector would only re-scan the word cache
    try:
        pool = _encoder()
        sub = (
            _SUB_BATCH if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("false", "0", "off") else len(texts)
        )
        sub = max(sub, 1)
        starts = list(range(0, len(texts), sub)) or [0]
        pending = pool.submit(tokenizer.encode_batch, texts[:sub], False)
        parts = []
        for k, start in enumerate(starts):
            encs = pending.result()
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                pending = pool.submit(tokenizer.encode_batch, texts[nxt : nxt + sub], False)
            parts.append(_switch_encoded(encs, first_doc + start, tokenizer, table, config, cache))
        return _concat(parts)
    finally:
        if enabled:
            gc.enable()


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
    )


def _switch_encoded(
    encs: list, first_doc: int, tokenizer: Tokenizer, table: SwitchTable, config: SwitchConfig, cache: WordCache
) -> Switched:
    ids_lists = [e.ids for e in encs]
    doc_len = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(encs))
    ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int64, count=int(doc_len.sum()))
    wid = np.array(list(chain.from_iterable(e.word_ids for e in encs)), dtype=np.float64)
    wid = np.where(np.isnan(wid), -1, wid).astype(np.int64)
    n_tok = len(ids)
    doc_off = np.zeros(len(encs) + 1, dtype=np.int64)
    np.cumsum(doc_len, out=doc_off[1:])
    doc_of_tok = np.repeat(np.arange(len(encs), dtype=np.int64), doc_len)

    # word units: a new unit where the document or the word id changes, and at every token without a word id
    new = np.ones(n_tok, dtype=bool)
    if n_tok:
        new[1:] = (wid[1:] != wid[:-1]) | (doc_of_tok[1:] != doc_of_tok[:-1]) | (wid[1:] < 0)
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n_tok)
    unit_doc = doc_of_tok[starts]
    unit_index = np.arange(len(starts)) - np.searchsorted(starts, doc_off[unit_doc])  # word number within its document

    # identify each unit by a hash of its token ids (position-salted), and describe unseen ones once
    pos_in_unit = np.arange(n_tok) - np.repeat(starts, ends - starts)
    with np.errstate(over="ignore"):
        tok_hash = splitmix64(ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + pos_in_unit.astype(np.uint64))
    unit_hash = np.add.reduceat(tok_hash, starts) if n_tok else np.zeros(0, np.uint64)
    unit_hash[wid[starts] < 0] = 0  # special tokens: never words
    slot, known = _lookup(cache, unit_hash)
    if not known.all():  # describe each new word once, from its first occurrence
        missing = np.flatnonzero(~known)
        order = np.argsort(unit_hash[missing], kind="stable")
        hashes = unit_hash[missing][order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        units = missing[order[first]]
        id_lists = [ids[starts[u] : ends[u]].tolist() for u in units.tolist()]
        cache.add(_describe_units(tokenizer, table, hashes[first], id_lists))
        slot, _ = _lookup(cache, unit_hash)
    entry = cache.entries[slot]
    is_word = cache.words[slot]

    has_entry = entry >= 0
    u_switch = uniforms(config.seed, unit_doc + first_doc, unit_index, 0)
    switch = has_entry & (u_switch < config.ratio)
    sw_units = np.flatnonzero(switch)
    if len(sw_units):
        u_pick = uniforms(config.seed, unit_doc[sw_units] + first_doc, unit_index[sw_units], 1)
        picks = table.pick(entry[sw_units], u_pick)
        casing = cache.casings[slot[sw_units]]
        replacement = []
        for unit, t, c in zip(sw_units.tolist(), picks.tolist(), casing.tolist(), strict=True):
            prefix = cache.info[int(unit_hash[unit])].prefix
            replacement.append(surface_ids(tokenizer, prefix + apply_casing(table.translations[t], c), cache))
    else:
        replacement = []
    out = _assemble(ids, starts, ends, sw_units, replacement, doc_off, config.labels == "input-only")
    return Switched(
        *out,
        words=int(is_word.sum()),
        words_with_entry=int(has_entry.sum()),
        words_switched=len(sw_units),
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
