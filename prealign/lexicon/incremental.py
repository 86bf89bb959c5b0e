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

Both can be rebuilt from what each batch added (:meth:`StreamDeduplicator.restore`,
:meth:`StreamEncoder.restore`), which is how a resumed job gets back to where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class StreamDeduplicator:
    """Exact and MinHash near-duplicate removal over batches given in input order (see the module doc)."""

    def __init__(self, cfg: clean.CleanConfig) -> None:
        self.cfg = cfg
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted exact keys of kept pairs
        self.hashranges = [tuple(r) for r in clean._lsh_index(cfg).hashranges]
        self.tokens = np.zeros(0, dtype=np.uint64)  # sorted band tokens of kept pairs ...
        self.token_rows = np.zeros(0, dtype=np.int64)  # ... and the kept pair (row of ``sigs``) of each
        self.sigs = np.zeros((0, cfg.minhash_perm), dtype=np.uint64)
        self.n_sigs = 0
        self.need = math.ceil(cfg.minhash_threshold * cfg.minhash_perm - 1e-9)

    def add(self, codes: np.ndarray, keys: np.ndarray | None, sigs: np.ndarray | None) -> np.ndarray:
        """Final codes of one batch (length-filter codes in, ``DUPLICATE``/``NEAR_DUPLICATE`` added)."""
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
            sig = np.ascontiguousarray(np.asarray(sigs, dtype=np.uint64)[rows])
            drop, tokens = self._near(sig)
            codes[rows[drop]] = clean.NEAR_DUPLICATE
            self._index(sig[~drop], tokens[~drop])
        return codes

    def restore(self, keys: np.ndarray | None, sigs: np.ndarray | None) -> None:
        """Take back the kept pairs of a batch decided earlier (their keys and signatures)."""
        if keys is not None:
            self.keys = _merge_sorted(self.keys, np.asarray(keys, dtype=np.uint64))
        if sigs is not None:
            self._index(np.ascontiguousarray(sigs, dtype=np.uint64))

    def _matches(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a == b).sum(axis=1) >= self.need

    def _near(self, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which of these rows (in order) are near duplicates of a kept pair before them; their band tokens."""
        n, bands = len(sig), len(self.hashranges)
        drop = np.zeros(n, dtype=bool)
        tok = _band_tokens(sig, self.hashranges)
        if n == 0:
            return drop, tok
        # candidates among the pairs kept by earlier batches
        flat = tok.reshape(-1)
        order = np.argsort(flat, kind="stable")
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
        # candidates earlier in this batch: rows sharing a band token, decided in input order
        sorted_tok, row_of = flat[order], order // bands
        starts = np.flatnonzero(np.concatenate([[True], sorted_tok[1:] != sorted_tok[:-1]]))
        sizes = np.diff(np.append(starts, len(sorted_tok)))
        before: dict[int, set[int]] = {}
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
            group = sorted(set(row_of[start : start + size].tolist()))
            for x in range(1, len(group)):
                before.setdefault(group[x], set()).update(group[:x])
        for i in sorted(before):
            if drop[i]:
                continue
            earlier = [j for j in sorted(before[i]) if not drop[j]]
            if earlier and self._matches(sig[[i] * len(earlier)], sig[earlier]).any():
                drop[i] = True
        return drop, tok

    def _index(self, sig: np.ndarray, tok: np.ndarray | None = None) -> None:
        """Add kept pairs to the index (``tok``: their band tokens, when known)."""
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
        self.tokens, self.token_rows = _merge_sorted(
            self.tokens, tok.reshape(-1), self.token_rows, np.repeat(rows, len(self.hashranges))
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


class _Words:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, sentences: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
        lengths = pc.fill_null(pc.list_value_length(sentences), 0).to_numpy().astype(np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        encoded = pc.dictionary_encode(sentences.flatten())
        local = encoded.dictionary.to_pylist()
        first_new = len(self.words)
        ids = np.fromiter((self._id(w) for w in local), dtype=np.int32, count=len(local))
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return ids[indices], offsets, self.words[first_new:]

    def _id(self, word: str) -> int:
        i = self.index.get(word)
        if i is None:
            i = self.index[word] = len(self.words)
            self.words.append(word)
        return i

    def restore(self, words: list[str]) -> None:
        for w in words:
            self._id(w)


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
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} source sentences but {len(tgt)} target sentences")
        src_ids, src_off, new_src = self.src.encode(src)
        tgt_ids, tgt_off, new_tgt = self.tgt.encode(tgt)
        _, sent, i, j = candidate_grid(src_off, tgt_off)
        keys = (src_ids[src_off[sent] + i].astype(np.int64) << 32) | tgt_ids[tgt_off[sent] + j].astype(np.int64)
        del sent, i, j
        encoded = pc.dictionary_encode(pa.array(keys))
        del keys
        local = encoded.dictionary.to_numpy()
        order = np.argsort(local)  # distinct keys: any sort is stable
        pos = _search(self.pair_keys, local, order=order)
        found = _contains(self.pair_keys, local, pos)
        ids = np.empty(len(local), dtype=np.int32)
        ids[found] = self.pair_ids[pos[found]]
        new = local[~found]
        ids[~found] = np.arange(self.n_pairs, self.n_pairs + len(new), dtype=np.int32)
        new_order = np.flatnonzero(~found[order])  # positions in ``order`` of the new keys, still sorted ...
        rank = np.cumsum(~found) - 1  # ... mapped to their index in ``new``
        self._add_pairs(new, rank[order[new_order]])
        cand_pair = ids[encoded.indices.to_numpy(zero_copy_only=False)]
        return EncodedBatch(src_ids, src_off, tgt_ids, tgt_off, cand_pair, new_src, new_tgt, new)

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
