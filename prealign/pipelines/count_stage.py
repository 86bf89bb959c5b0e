"""The last stages of the corpus jobs: links per chunk, aligned word pairs counted per chunk, one merge.

``count/chunk-CCCCC.npz`` (written last; its stats: links, phrase links) marks a chunk done; beside it:

- ``.links.npy``: the chunk's symmetrised link keys, sorted (what ``--links`` and ``align`` write out);
- ``.pairs.parquet``: aligned word pairs as (src_id, tgt_id, count) with the vocabularies' ids;
- ``.phrases.parquet``: phrase pairs (with ``max_span`` >= 2) as strings (src, tgt, count).

:func:`merge_counts` adds them up with one polars group-by each over every chunk's file; memory holds the
distinct pairs, not the links.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prealign.lexicon.em import SentenceArrays
from prealign.lexicon.encode import Vocab
from prealign.lexicon.links import pharaoh_text
from prealign.lexicon.spans import PhrasePairs, find_spans
from prealign.lexicon.symmetrize import Method, sentence_links, split_keys, symmetrize
from prealign.pipelines.encode_stage import read_vocab, vocab_file
from prealign.pipelines.stages import save_npy, save_npz
from prealign.text import join_words
from prealign.textio import atomic_write

PAIR_SCHEMA = {"src": pl.String, "tgt": pl.String, "count": pl.Int64}


def count_file(work: Path, chunk: int, suffix: str = ".npz") -> Path:
    return Path(work) / "count" / f"chunk-{chunk:05d}{suffix}"


def _span_ids(ids: np.ndarray, offsets: np.ndarray, sent: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The word ids of each span, one row per span, padded with -1 to the longest."""
    pos = np.arange(int((end - start).max()))
    valid = pos < (end - start)[:, None]
    idx = offsets[sent][:, None] + start[:, None] + pos
    return np.where(valid, ids[np.where(valid, idx, offsets[sent][:, None])], -1).astype(np.int64)


def phrase_counts(
    found: PhrasePairs, sentences: SentenceArrays, vocab: tuple[Vocab, Vocab], joiners: tuple[str, str]
) -> pl.DataFrame:
    """Phrase pairs (of sentences numbered from ``sentences.first``) as strings with their counts."""
    sent = found.sentence - sentences.first
    sides = ((sentences.src_ids, sentences.src_offsets), (sentences.tgt_ids, sentences.tgt_offsets))
    spans = ((found.src_start, found.src_end), (found.tgt_start, found.tgt_end))
    blocks = [_span_ids(ids, off, sent, lo, hi) for (ids, off), (lo, hi) in zip(sides, spans, strict=True)]
    rows, counts = np.unique(np.hstack(blocks), axis=0, return_counts=True)
    texts = []
    cut = blocks[0].shape[1]
    for block, words, joiner in ((rows[:, :cut], vocab[0], joiners[0]), (rows[:, cut:], vocab[1], joiners[1])):
        flat = words.lookup(block[block >= 0])
        ends = np.cumsum((block >= 0).sum(axis=1)).tolist()
        texts.append([join_words(flat[lo:hi], joiner) for lo, hi in zip([0, *ends[:-1]], ends, strict=True)])
    return pl.DataFrame({"src": texts[0], "tgt": texts[1], "count": counts.astype(np.int64)}, schema=PAIR_SCHEMA)


def word_pair_counts(sentences: SentenceArrays, keys: np.ndarray) -> pl.DataFrame:
    """The word pairs of link ``keys`` with how often each was linked: (src_id, tgt_id, count)."""
    sent, i, j = split_keys(keys)
    s = sent - sentences.first
    frame = pl.DataFrame(
        {
            "src_id": sentences.src_ids[sentences.src_offsets[s] + i].astype(np.uint32),
            "tgt_id": sentences.tgt_ids[sentences.tgt_offsets[s] + j].astype(np.uint32),
        }
    )
    return frame.group_by(["src_id", "tgt_id"]).agg(pl.len().cast(pl.Int64).alias("count"))


def count_task(
    work: Path,
    index: int,
    sentences: SentenceArrays,
    links: tuple[np.ndarray, np.ndarray],
    method: Method,
    max_span: int = 1,
    joiners: tuple[str, str] = (" ", " "),
    count: bool = True,
) -> dict[str, Any]:
    """Symmetrise one chunk's ``links`` (forward, backward) by ``method`` and, with ``count``, count its
    aligned word pairs (and phrase pairs up to ``max_span`` words, found in the dense links)."""
    keys = symmetrize(links[0], links[1], method)
    stats: dict[str, Any] = {"links": len(keys), "phrase_links": 0}
    save_npy(count_file(work, index, ".links.npy"), keys)
    if count:
        precise = keys
        if max_span >= 2:
            dense = keys if method == "grow-diag-final-and" else symmetrize(links[0], links[1], "grow-diag-final-and")
            found = find_spans(keys, dense, max_span)
            if len(found):
                phrases = phrase_counts(found, sentences, read_vocab(vocab_file(work)), joiners)
                stats["phrase_links"] = int(phrases["count"].sum())
                atomic_write(count_file(work, index, ".phrases.parquet"), phrases.write_parquet)
                precise = keys[~found.replaced]
        atomic_write(count_file(work, index, ".pairs.parquet"), word_pair_counts(sentences, precise).write_parquet)
    save_npz(count_file(work, index), stats)
    return stats


def merge_counts(work: Path, n_chunks: int, vocab: tuple[Vocab, Vocab]) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Every chunk's word pairs summed (columns src, tgt, count), and the phrase pairs summed (or None)."""
    pair_files = [str(count_file(work, c, ".pairs.parquet")) for c in range(n_chunks)]
    ids = pl.scan_parquet(pair_files).group_by(["src_id", "tgt_id"]).agg(pl.col("count").sum()).collect()
    words = pl.DataFrame(
        {
            "src": vocab[0].lookup(ids["src_id"].to_numpy()),
            "tgt": vocab[1].lookup(ids["tgt_id"].to_numpy()),
            "count": ids["count"],
        },
        schema=PAIR_SCHEMA,
    )
    phrase_files = [str(p) for c in range(n_chunks) if (p := count_file(work, c, ".phrases.parquet")).exists()]
    if not phrase_files:
        return words, None
    phrases = pl.scan_parquet(phrase_files).group_by(["src", "tgt"]).agg(pl.col("count").sum()).collect()
    return words, phrases


def summed_pairs(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The rows of ``frames`` with each (src, tgt) once, counts summed."""
    return pl.concat(frames).group_by(["src", "tgt"]).agg(pl.col("count").sum())


def chunk_links(work: Path, n_chunks: int) -> Iterator[np.ndarray]:
    """Each chunk's symmetrised links, in chunk (sentence) order."""
    for c in range(n_chunks):
        yield np.load(count_file(work, c, ".links.npy"))


class LinksWriter:
    """Pharaoh links, one line per sentence (:func:`~prealign.lexicon.links.pharaoh_text`), from link keys
    given part by part in sentence order, written ``step`` sentences at a time to ``fh``; :meth:`finish`
    writes the empty lines of the sentences left."""

    def __init__(self, fh: Any, n_sentences: int, step: int = 1 << 16) -> None:
        self.fh, self.n_sentences, self.step = fh, n_sentences, step
        self.next = 0  # the first sentence not written yet

    def add(self, keys: np.ndarray) -> None:
        keys = np.sort(keys)
        if len(keys) == 0:
            return
        if int(keys[0] >> 32) < self.next:
            raise RuntimeError(f"links of sentence {int(keys[0] >> 32)} after sentence {self.next - 1} was written")
        self._write(keys, int(keys[-1] >> 32) + 1)

    def finish(self) -> None:
        self._write(np.zeros(0, np.int64), self.n_sentences)

    def _write(self, keys: np.ndarray, stop: int) -> None:
        for start in range(self.next, stop, self.step):
            end = min(start + self.step, stop)
            lo, hi = np.searchsorted(keys, np.array([start, end], dtype=np.int64) << 32)
            text = pharaoh_text(sentence_links(keys[lo:hi] - (np.int64(start) << 32), end - start))
            self.fh.write(text.encode("utf-8"))
        self.next = max(self.next, stop)


def write_links(parts: Iterable[np.ndarray], n_sentences: int, path: Path) -> int:
    """Pharaoh links of ``n_sentences`` sentences from parts in sentence order, into a temporary file renamed
    into place; returns how many links."""
    total = 0

    def write(fh: Any) -> None:
        nonlocal total
        writer = LinksWriter(fh, n_sentences)
        for keys in parts:
            writer.add(keys)
            total += len(keys)
        writer.finish()

    atomic_write(path, write)
    return total
