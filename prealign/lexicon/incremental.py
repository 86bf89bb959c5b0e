"""Deduplication and dictionary encoding one batch at a time, in input order, with the whole-corpus results.

A streaming job sees its input a batch at a time and must decide each batch before the next arrives.
:class:`StreamDeduplicator` keeps what :func:`~prealign.lexicon.clean.duplicate_mask` and
:func:`~prealign.lexicon.clean.near_duplicate_mask` would compute over the whole corpus: a pair is an exact
duplicate when an earlier kept pair has its key, a near duplicate when an earlier kept pair shares one of its
LSH bands (the bands of datasketch's ``MinHashLSH`` for the same threshold and permutations) and agrees on at
least ``threshold * perm`` signature values. Its state is every kept pair's key, band hashes and signature:
O(kept pairs), which is why the pipeline keeps it out of the driver process.

:class:`StreamEncoder` gives words and (source word, target word) pairs the ids that
:func:`~prealign.lexicon.encode.encode_corpus` gives them over the whole corpus (first occurrence order), so
that training on the streamed encoding is bit for bit training on the whole. Its state is the vocabularies
and the pair table: O(vocabulary), not O(input).

What needs no state (band tokens and matches within a batch; each batch's own dictionary encoding, see
:func:`near_prep` and :func:`encode_local`) can be computed in parallel before a batch reaches them, leaving
them the merges with the state. Both can be rebuilt from what each batch added (:meth:`StreamDeduplicator.restore`,
:meth:`StreamEncoder.restore`), which is how a resumed job gets back to where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prealign.lexicon import clean
from prealign.lexicon.encode import Vocab, candidate_grid

_U64 = np.uint64
_MIX = _U64(0xD6E8FEB86659FD93)


def _band_tokens(sig: np.ndarray, hashranges: list[tuple[int, int]]) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's values, salted by the band's index."""
    out = np.empty((len(sig), len(hashranges)), dtype=np.uint64)
    for b, (start, end) in enumerate(hashranges):
        key = np.full(len(sig), _U64(b + 1), dtype=np.uint64)
        for col in range(start, end):
            key = clean._fmix64(key * _MIX + sig[:, col])
        out[:, b] = key
    return out


def _merge_sorted(values: np.ndarray, new: np.ndarray, payload: np.ndarray | None = None, extra=None, order=None):
    """Insert ``new`` into the sorted ``values`` (and ``extra`` into ``payload`` at the same places);
    ``order``: ``new``'s sorting permutation, when known."""
    order = np.argsort(new, kind="stable") if order is None else order
    new = new[order]
    pos = np.searchsorted(values, new, side="right")  # sorted queries: fast
    merged = np.insert(values, pos, new)
    if payload is None:
        return merged
    return merged, np.insert(payload, pos, extra[order])


def _search(sorted_values: np.ndarray, queries: np.ndarray, side: str = "left", order=None) -> np.ndarray:
    """``np.searchsorted``, several times faster on many queries: they are looked up in sorted order
    (``order``: the queries' sorting permutation, when known)."""
    order = np.argsort(queries, kind="stable") if order is None else order
    pos = np.empty(len(queries), dtype=np.int64)
    pos[order] = np.searchsorted(sorted_values, queries[order], side=side)
    return pos


def _contains(sorted_values: np.ndarray, queries: np.ndarray, pos: np.ndarray | None = None) -> np.ndarray:
    """Which ``queries`` occur in ``sorted_values`` (``pos``: their left insertion points, when known)."""
    pos = _search(sorted_values, queries) if pos is None else pos
    found = pos < len(sorted_values)
    found[found] = sorted_values[pos[found]] == queries[found]
    return found


def lsh_bands(cfg: clean.CleanConfig) -> list[tuple[int, int]]:
    """The (start, end) signature columns of each LSH band for ``cfg`` (datasketch's choice)."""
    return [(int(a), int(b)) for a, b in clean._lsh_index(cfg).hashranges]


def min_matches(cfg: clean.CleanConfig) -> int:
    """How many equal signature values make two pairs near duplicates."""
    return math.ceil(cfg.minhash_threshold * cfg.minhash_perm - 1e-9)


@dataclass
class NearPrep:
    """What the near-duplicate search needs of one batch besides its state: the band tokens of every row,
    their sorting permutation (flat), and the pairs of rows (later, earlier) that share a band and match."""

    tokens: np.ndarray  # (n, bands) uint64
    order: np.ndarray  # int64, stable argsort of tokens.reshape(-1)
    later: np.ndarray  # int64, sorted (by later, then earlier)
    earlier: np.ndarray  # int64


def near_prep(sig: np.ndarray, hashranges: list[tuple[int, int]], need: int, rows: np.ndarray) -> NearPrep:
    """:class:`NearPrep` of a batch's signatures; only ``rows`` (sorted) can be in a matching pair."""
    sig = np.ascontiguousarray(sig, dtype=np.uint64)
    bands = len(hashranges)
    tok = _band_tokens(sig, hashranges)
    order = np.argsort(tok.reshape(-1), kind="stable")
    sub = _subset_order(order, bands, rows, len(sig))
    sorted_tok, row_of = tok[rows].reshape(-1)[sub], rows[sub // bands]
    starts = np.flatnonzero(np.concatenate([[True], sorted_tok[1:] != sorted_tok[:-1]]))
    sizes = np.diff(np.append(starts, len(sorted_tok)))
    later: list[int] = []
    earlier: list[int] = []
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        group = sorted(set(row_of[start : start + size].tolist()))
        for x in range(1, len(group)):
            later += [group[x]] * x
            earlier += group[:x]
    i, j = np.asarray(later, dtype=np.int64), np.asarray(earlier, dtype=np.int64)
    key = np.unique(i * max(len(sig), 1) + j)  # sorted by (later, earlier), each pair once
    i, j = key // max(len(sig), 1), key % max(len(sig), 1)
    ok = (sig[i] == sig[j]).sum(axis=1) >= need
    return NearPrep(tok, order, i[ok], j[ok])


def _subset_order(order: np.ndarray, bands: int, rows: np.ndarray, n: int) -> np.ndarray:
    """The stable argsort of ``tokens[rows].reshape(-1)``, given ``order``, that of ``tokens.reshape(-1)``
    (``tokens``: n rows of ``bands``)."""
    rank = np.full(n, -1, dtype=np.int64)
    rank[rows] = np.arange(len(rows))
    r = rank[order // bands]
    sel = r >= 0
    return r[sel] * bands + order[sel] % bands


class StreamDeduplicator:
    """Exact and MinHash near-duplicate removal over batches given in input order (see the module doc)."""

    def __init__(self, cfg: clean.CleanConfig) -> None:
        self.cfg = cfg
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted exact keys of kept pairs
        self.tokens = np.zeros(0, dtype=np.uint64)  # sorted band tokens of kept pairs ...
        self.token_rows = np.zeros(0, dtype=np.int64)  # ... and the kept pair (row of ``sigs``) of each
        self.sigs = np.zeros((0, cfg.minhash_perm), dtype=np.uint64)
        self.n_sigs = 0
        self.need = min_matches(cfg)

    @cached_property
    def hashranges(self) -> list[tuple[int, int]]:
        return lsh_bands(self.cfg)

    def add(
        self, codes: np.ndarray, keys: np.ndarray | None, sigs: np.ndarray | None, near: NearPrep | None = None
    ) -> np.ndarray:
        """Final codes of one batch (length-filter codes in, ``DUPLICATE``/``NEAR_DUPLICATE`` added);
        ``near``: the batch's :func:`near_prep` (computed here when not given)."""
        codes = np.array(codes, dtype=np.uint8)
        if self.cfg.dedup and keys is not None:
            rows = np.flatnonzero(codes == clean.KEPT)
            k = np.asarray(keys, dtype=np.uint64)[rows]
            _, first = np.unique(k, return_index=True)
            dup = np.ones(len(rows), dtype=bool)
            dup[first] = False
            dup |= _contains(self.keys, k)
            codes[rows[dup]] = clean.DUPLICATE
            self.keys = _merge_sorted(self.keys, k[~dup])
        if self.cfg.near_dedup and sigs is not None:
            rows = np.flatnonzero(codes == clean.KEPT)
            sigs = np.asarray(sigs, dtype=np.uint64)
            near = near_prep(sigs, self.hashranges, self.need, rows) if near is None else near
            drop = self._near(sigs, rows, near)
            codes[rows[drop]] = clean.NEAR_DUPLICATE
            kept = rows[~drop]
            bands = near.tokens.shape[1]
            self._index(sigs[kept], near.tokens[kept], _subset_order(near.order, bands, kept, len(sigs)))
        return codes

    def restore(self, keys: np.ndarray | None, sigs: np.ndarray | None) -> None:
        """Take back the kept pairs of a batch decided earlier (their keys and signatures)."""
        if keys is not None:
            self.keys = _merge_sorted(self.keys, np.asarray(keys, dtype=np.uint64))
        if sigs is not None:
            self._index(np.ascontiguousarray(sigs, dtype=np.uint64))

    def _matches(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a == b).sum(axis=1) >= self.need

    def _near(self, sigs: np.ndarray, rows: np.ndarray, near: NearPrep) -> np.ndarray:
        """Which ``rows`` (in order) are near duplicates of a kept pair before them."""
        n, bands = len(rows), near.tokens.shape[1]
        drop = np.zeros(n, dtype=bool)
        if n == 0:
            return drop
        # candidates among the pairs kept by earlier batches
        sig = sigs[rows]
        flat = near.tokens[rows].reshape(-1)
        order = _subset_order(near.order, bands, rows, len(sigs))
        lo = _search(self.tokens, flat, "left", order)
        hi = _search(self.tokens, flat, "right", order)
        hits = hi - lo
        if hits.any():
            query = np.repeat(np.arange(len(flat)) // bands, hits)
            starts = np.repeat(lo, hits)
            offset = np.arange(len(query)) - np.repeat(np.cumsum(hits) - hits, hits)
            cand = self.token_rows[starts + offset]
            ok = self._matches(sig[query], self.sigs[cand])
            drop[query[ok]] = True
        # earlier in this batch: matching pairs of rows, decided in input order
        out = np.zeros(len(sigs), dtype=bool)
        out[rows[drop]] = True
        live = np.zeros(len(sigs), dtype=bool)
        live[rows] = True
        for i, j in zip(near.later.tolist(), near.earlier.tolist(), strict=True):
            if live[i] and live[j] and not out[i] and not out[j]:
                out[i] = True
        return out[rows]

    def _index(self, sig: np.ndarray, tok: np.ndarray | None = None, order: np.ndarray | None = None) -> None:
        """Add kept pairs to the index (``tok``: their band tokens, ``order``: their sorting permutation, flat,
        when known)."""
        if len(sig) == 0:
            return
        if self.n_sigs + len(sig) > len(self.sigs):
            grown = np.zeros((max(2 * len(self.sigs), self.n_sigs + len(sig)), self.cfg.minhash_perm), np.uint64)
            grown[: self.n_sigs] = self.sigs[: self.n_sigs]
            self.sigs = grown
        rows = np.arange(self.n_sigs, self.n_sigs + len(sig), dtype=np.int64)
        self.sigs[rows] = sig
        self.n_sigs += len(sig)
        tok = _band_tokens(sig, self.hashranges) if tok is None else tok
        bands = tok.shape[1]
        self.tokens, self.token_rows = _merge_sorted(
            self.tokens, tok.reshape(-1), self.token_rows, np.repeat(rows, bands), order
        )


@dataclass
class EncodedBatch:
    """One batch of sentence pairs with global ids, and what it added to the vocabularies and pair table."""

    src_ids: np.ndarray  # int32
    src_offsets: np.ndarray  # int64, n + 1
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    cand_pair: np.ndarray  # int32 global pair id of each candidate link (source-major grids)
    new_src: list[str]
    new_tgt: list[str]
    new_pairs: np.ndarray  # int64 (source id << 32 | target id) of the pair ids this batch created, in order


@dataclass
class LocalEncoding:
    """One batch encoded on its own (ids numbered by first occurrence in the batch): what
    :meth:`StreamEncoder.add_local` turns into global ids, computed without the encoder's state."""

    src_words: pa.Array  # the batch's distinct source words, by local id
    src_ids: np.ndarray  # int32 local id of every source word of every sentence
    src_offsets: np.ndarray  # int64, n + 1
    tgt_words: pa.Array
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    pair_keys: np.ndarray  # int64 (local source id << 32 | local target id) of each local pair id
    cand_pair: np.ndarray  # int32 local pair id of each candidate link (source-major grids)


def _encode_words(sentences: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    lengths = pc.fill_null(pc.list_value_length(sentences), 0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    encoded = pc.dictionary_encode(sentences.flatten())
    return encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), offsets


def encode_local(src: pa.Array, tgt: pa.Array) -> LocalEncoding:
    """Encode one batch of segmented pairs (``list<string>`` arrays of the same length) on its own."""
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source sentences but {len(tgt)} target sentences")
    src_words, src_ids, src_off = _encode_words(src)
    tgt_words, tgt_ids, tgt_off = _encode_words(tgt)
    _, sent, i, j = candidate_grid(src_off, tgt_off)
    keys = (src_ids[src_off[sent] + i].astype(np.int64) << 32) | tgt_ids[tgt_off[sent] + j].astype(np.int64)
    del sent, i, j
    encoded = pc.dictionary_encode(pa.array(keys))
    cand_pair = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return LocalEncoding(
        src_words, src_ids, src_off, tgt_words, tgt_ids, tgt_off, encoded.dictionary.to_numpy(), cand_pair
    )


def first_kept_order(ids: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    """The ids (``0..n-1``, numbered by first occurrence in ``ids``) that occur where ``keep``, in the order
    of their first occurrence there."""
    if len(ids) == 0 or keep.all():
        return np.arange(n if len(ids) else 0)
    peak = np.maximum.accumulate(ids)
    first = np.flatnonzero(np.concatenate([[True], peak[1:] > peak[:-1]]))  # where each id first occurs
    good = keep[first]
    if good.all():
        return np.arange(n)
    late = np.flatnonzero(keep & ~good[ids])  # kept places of the ids first seen where not kept
    ids_late, at = np.unique(ids[late], return_index=True)
    order = np.argsort(late[at], kind="stable")
    good_ids = np.flatnonzero(good)
    return np.insert(good_ids, np.searchsorted(first[good_ids], late[at][order]), ids_late[order])


class _Words:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, words: pa.Array, ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Global ids of the kept ``ids`` (local ids into ``words``), and the words new to the vocabulary."""
        order = first_kept_order(ids, keep, len(words))
        first_new = len(self.words)
        glob = np.zeros(len(words), dtype=np.int32)
        local = words.take(pa.array(order)).to_pylist()
        glob[order] = np.fromiter((self._id(w) for w in local), dtype=np.int32, count=len(local))
        return glob, self.words[first_new:]

    def _id(self, word: str) -> int:
        i = self.index.get(word)
        if i is None:
            i = self.index[word] = len(self.words)
            self.words.append(word)
        return i

    def restore(self, words: list[str]) -> None:
        for w in words:
            self._id(w)


def _kept_offsets(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.diff(offsets)[rows], out=out[1:])
    return out


class StreamEncoder:
    """Word and pair ids over batches given in input order, equal to ``encode_corpus`` of their concatenation."""

    def __init__(self) -> None:
        self.src, self.tgt = _Words(), _Words()
        self.pair_keys = np.zeros(0, dtype=np.int64)  # sorted (source << 32 | target) ...
        self.pair_ids = np.zeros(0, dtype=np.int32)  # ... and the pair id of each
        self.pairs: list[np.ndarray] = []  # keys of the pair ids, in id order, a batch at a time
        self.n_pairs = 0

    def add(self, src: pa.Array, tgt: pa.Array) -> EncodedBatch:
        """Encode one batch of segmented pairs (``list<string>`` arrays of the same length)."""
        return self.add_local(encode_local(src, tgt), np.arange(len(src)))

    def add_local(self, local: LocalEncoding, rows: np.ndarray) -> EncodedBatch:
        """Encode the sentence pairs ``rows`` (sorted) of a batch encoded on its own."""
        n = len(local.src_offsets) - 1
        keep = np.zeros(n, dtype=bool)
        keep[rows] = True
        src_len, tgt_len = np.diff(local.src_offsets), np.diff(local.tgt_offsets)
        src_keep, tgt_keep = np.repeat(keep, src_len), np.repeat(keep, tgt_len)
        src_glob, new_src = self.src.encode(local.src_words, local.src_ids, src_keep)
        tgt_glob, new_tgt = self.tgt.encode(local.tgt_words, local.tgt_ids, tgt_keep)
        slot_keep = np.repeat(keep, src_len * tgt_len)
        present = first_kept_order(local.cand_pair, slot_keep, len(local.pair_keys))
        lk = local.pair_keys[present]
        keys = (src_glob[lk >> 32].astype(np.int64) << 32) | tgt_glob[lk & 0xFFFFFFFF].astype(np.int64)
        order = np.argsort(keys)  # distinct keys: any sort is stable
        pos = _search(self.pair_keys, keys, order=order)
        found = _contains(self.pair_keys, keys, pos)
        ids = np.empty(len(keys), dtype=np.int32)
        ids[found] = self.pair_ids[pos[found]]
        new = keys[~found]
        ids[~found] = np.arange(self.n_pairs, self.n_pairs + len(new), dtype=np.int32)
        new_order = np.flatnonzero(~found[order])  # positions in ``order`` of the new keys, still sorted ...
        rank = np.cumsum(~found) - 1  # ... mapped to their index in ``new``
        self._add_pairs(new, rank[order[new_order]])
        glob_pair = np.zeros(len(local.pair_keys), dtype=np.int32)
        glob_pair[present] = ids
        return EncodedBatch(
            src_glob[local.src_ids[src_keep]],
            _kept_offsets(local.src_offsets, rows),
            tgt_glob[local.tgt_ids[tgt_keep]],
            _kept_offsets(local.tgt_offsets, rows),
            glob_pair[local.cand_pair[slot_keep]],
            new_src,
            new_tgt,
            new,
        )

    def _add_pairs(self, new: np.ndarray, order: np.ndarray | None = None) -> None:
        ids = np.arange(self.n_pairs, self.n_pairs + len(new), dtype=np.int32)
        self.pair_keys, self.pair_ids = _merge_sorted(self.pair_keys, new, self.pair_ids, ids, order)
        self.pairs.append(new)
        self.n_pairs += len(new)

    def restore(self, new_src: list[str], new_tgt: list[str], new_pairs: np.ndarray) -> None:
        """Take back what an earlier batch added (in the order the batches came)."""
        self.src.restore(new_src)
        self.tgt.restore(new_tgt)
        self._add_pairs(np.asarray(new_pairs, dtype=np.int64))

    def vocabularies(self) -> tuple[Vocab, Vocab]:
        return Vocab(pa.array(self.src.words, pa.large_string())), Vocab(pa.array(self.tgt.words, pa.large_string()))

    def pair_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and target word id of each pair id (int32)."""
        keys = np.concatenate(self.pairs) if self.pairs else np.zeros(0, np.int64)
        return (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32)
