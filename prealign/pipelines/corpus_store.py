"""The read stage of ``align`` and ``extract-lexicon``, streamed into a work directory, and the corpus it leaves.

The driver reads the input a batch at a time and sends each batch to a task that segments and hashes it,
and does what needs no state: the batch's own dictionary encoding, its LSH band tokens, the near-duplicate
matches within it. Each prepared batch goes, in input order, to the :class:`CorpusBuilder`: a stateful worker
pinned to the driver's machine (no CPU reserved) that removes duplicates (exact keys, then MinHash near
duplicates, with the whole-corpus results of :mod:`prealign.lexicon.incremental`), merges the kept pairs'
words and word pairs into the vocabularies and the pair table, and writes them to ``batch-NNNNN.npz`` in the
work directory; the driver then journals the batch as finished. The driver holds neither the text nor the
words nor the dedup state: a few batches in flight.

:class:`StoredCorpus` is the result, a :class:`~prealign.lexicon.builtin_aligner.CorpusSource`: the
vocabularies and the pair table in memory (O(vocabulary)), sentence ranges read from the batch files when
the EM asks for them, and the EM's checkpoint (parameters after each iteration, ``em-NNN.npz``).

Resuming: batches the journal names are not read again by a task (the reader skips over them) and the builder
takes its state back from their files; once the journal says ``corpus``, the whole stage is skipped; the EM
continues after its last saved iteration. Decoding and the final counts always run again (one E-step's work).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prealign.arrays import sorted_unique_counts
from prealign.lexicon import clean
from prealign.lexicon.builtin_aligner import Model, SentenceRange, sized_vocab
from prealign.lexicon.corpus import read_parallel
from prealign.lexicon.encode import EncodedCorpus, Vocab
from prealign.lexicon.executor import Executor
from prealign.lexicon.hmm import Params
from prealign.lexicon.links import pharaoh_text
from prealign.lexicon.prepare import Prepared, prepare_batch
from prealign.lexicon.spans import PhrasePairs, find_spans
from prealign.lexicon.symmetrize import sentence_links, split_keys
from prealign.pipelines import faults
from prealign.pipelines.corpus_builder import CORPUS_ARRAYS, CorpusBuilder, batch_file, read_words, save_arrays
from prealign.pipelines.progress import Progress
from prealign.pipelines.workdir import WorkDir
from prealign.text import SegmenterConfig, check_segmented, join_words
from prealign.textio import atomic_write


class EMFiles:
    """The EM's checkpoint in the work directory: ``em-NNN.npz`` after each iteration, the journal naming it."""

    def __init__(self, work: WorkDir) -> None:
        self.work = work

    def load(self) -> tuple[int, Model] | None:
        event = self.work.last("em")
        if event is None:
            return None
        with np.load(self.work.file(event["file"])) as z:
            params = [
                Params(
                    z[f"{d}_t"],
                    z[f"{d}_t_null"],
                    z[f"{d}_jump"] if f"{d}_jump" in z else None,
                    float(event["p0"]),
                    int(event["max_jump"]),
                )
                for d in ("forward", "backward")
            ]
        return int(event["em"]), Model(*params)

    def save(self, done: int, model: Model) -> None:
        arrays: dict[str, np.ndarray] = {}
        for d, p in (("forward", model.forward), ("backward", model.backward)):
            arrays[f"{d}_t"], arrays[f"{d}_t_null"] = p.t, p.t_null
            if p.jump is not None:
                arrays[f"{d}_jump"] = p.jump
        name = f"em-{done:03d}.npz"
        previous = self.work.last("em")
        save_arrays(self.work.file(name), **arrays)
        self.work.record({"em": done, "file": name, "p0": model.forward.p0, "max_jump": model.forward.max_jump})
        if previous is not None and previous["file"] != name:
            self.work.file(previous["file"]).unlink(missing_ok=True)
        faults.reached("em-iteration")


class StoredCorpus:
    """The encoded corpus in a work directory (see the module doc)."""

    def __init__(self, work: WorkDir, meta: dict[str, Any]) -> None:
        self.work = work
        self.kept = [int(k) for k in meta["batches"]]
        self.starts = np.concatenate([[0], np.cumsum(self.kept, dtype=np.int64)])
        with np.load(work.file("vocabulary.npz")) as z:
            self.src_vocab, self.tgt_vocab = Vocab(read_words(z, "src")), Vocab(read_words(z, "tgt"))
            self.pair_src, self.pair_tgt = z["pair_src"], z["pair_tgt"]
        self.checkpoint = EMFiles(work)
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    @property
    def n_sentences(self) -> int:
        return int(self.starts[-1])

    @property
    def n_pairs(self) -> int:
        return len(self.pair_src)

    def _batch(self, index: int, names: Sequence[str] = CORPUS_ARRAYS) -> dict[str, np.ndarray]:
        """Arrays of one batch file (the last two batches read are kept: ranges go through them in order)."""
        if index not in self._cache or any(n not in self._cache[index] for n in names):
            with np.load(batch_file(self.work.path, index)) as z:
                self._cache[index] = {n: z[n] for n in names}
            while len(self._cache) > 2:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[index]

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(batch, first, stop) of each batch's share of sentences [start, stop), local indices."""
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        out = []
        for b in range(max(first, 0), len(self.kept)):
            lo, hi = max(start, self.starts[b]), min(stop, self.starts[b + 1])
            if lo >= stop:
                break
            if hi > lo:
                out.append((b, int(lo - self.starts[b]), int(hi - self.starts[b])))
        return out

    def sentence_range(self, start: int, stop: int) -> SentenceRange:
        parts: dict[str, list[np.ndarray]] = {n: [] for n in CORPUS_ARRAYS}
        for b, lo, hi in self._pieces(start, stop):
            a = self._batch(b)
            so, to = a["src_offsets"], a["tgt_offsets"]
            cand = np.concatenate([[0], np.cumsum(np.diff(so) * np.diff(to))])
            parts["src_ids"].append(a["src_ids"][so[lo] : so[hi]])
            parts["tgt_ids"].append(a["tgt_ids"][to[lo] : to[hi]])
            parts["src_offsets"].append(np.diff(so[lo : hi + 1]))
            parts["tgt_offsets"].append(np.diff(to[lo : hi + 1]))
            parts["cand_pair"].append(a["cand_pair"][cand[lo] : cand[hi]])

        def offsets(lengths: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(np.concatenate(lengths or [np.zeros(0, np.int64)]))]).astype(np.int64)

        src_off, tgt_off = offsets(parts["src_offsets"]), offsets(parts["tgt_offsets"])
        empty32 = np.zeros(0, np.int32)
        return SentenceRange(
            src_ids=np.concatenate(parts["src_ids"] or [empty32]),
            src_offsets=src_off,
            tgt_ids=np.concatenate(parts["tgt_ids"] or [empty32]),
            tgt_offsets=tgt_off,
            src_vocab=sized_vocab(len(self.src_vocab)),
            tgt_vocab=sized_vocab(len(self.tgt_vocab)),
            cand_offsets=np.concatenate([[0], np.cumsum(np.diff(src_off) * np.diff(tgt_off))]).astype(np.int64),
            cand_pair=np.concatenate(parts["cand_pair"] or [empty32]),
            pair_src=empty32,
            pair_tgt=empty32,
            first=start,
            pairs_total=self.n_pairs,
        )

    def load(self) -> EncodedCorpus:
        """The whole corpus in memory (for aligners that need every sentence at once)."""
        whole = self.sentence_range(0, self.n_sentences)
        return EncodedCorpus(
            whole.src_ids,
            whole.src_offsets,
            whole.tgt_ids,
            whole.tgt_offsets,
            self.src_vocab,
            self.tgt_vocab,
            whole.cand_offsets,
            whole.cand_pair,
            self.pair_src,
            self.pair_tgt,
        )

    def count_pairs(
        self,
        parts: Iterable[np.ndarray],
        dense: Iterable[np.ndarray] | None = None,
        max_span: int = 1,
        joiners: tuple[str, str] = (" ", " "),
    ) -> pl.DataFrame:
        """Aligned word pairs with how often they were linked (see :class:`PairCounts`; ``dense``: each part's
        dense links, for phrase pairs up to ``max_span`` words)."""
        counts = PairCounts(self, max_span, joiners)
        more = repeat(None) if dense is None else iter(dense)
        for keys in parts:
            counts.add(keys, next(more))
        return counts.frame()


def _sorted(keys: np.ndarray) -> np.ndarray:
    return keys if np.all(keys[1:] >= keys[:-1]) else np.sort(keys)


class PairCounts:
    """The word pairs of a stored corpus's links and how often each was linked, from link keys added a part
    at a time (any order), read a batch at a time: memory holds one part, one batch and the distinct pairs.

    With ``max_span`` >= 2, a part comes with its dense links too, and phrase pairs
    (:func:`prealign.lexicon.spans.find_spans`) are counted as strings joined by ``joiners`` (source, target)
    in place of the precise links they replace."""

    def __init__(self, corpus: StoredCorpus, max_span: int = 1, joiners: tuple[str, str] = (" ", " ")) -> None:
        self.corpus = corpus
        self.max_span, self.joiners = max_span, joiners
        self.width = max(len(corpus.tgt_vocab), 1)
        self.bounds = corpus.starts.astype(np.int64) << 32  # the first key of each batch
        self.uniq, self.counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.phrases: pl.DataFrame | None = None

    def add(self, keys: np.ndarray, dense: np.ndarray | None = None) -> None:
        keys = _sorted(keys)
        at = np.searchsorted(keys, self.bounds)
        spans = self.max_span >= 2 and dense is not None
        if spans:
            dense = _sorted(dense)
        dense_at = np.searchsorted(dense, self.bounds) if spans else at
        busy = (at[1:] > at[:-1]) | (dense_at[1:] > dense_at[:-1])
        for b in np.flatnonzero(busy).tolist():
            part = keys[at[b] : at[b + 1]]
            a = self.corpus._batch(b, ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"))
            first = int(self.corpus.starts[b])
            if spans:
                part = self._add_phrases(part, dense[dense_at[b] : dense_at[b + 1]], a, first)
            sent, i, j = split_keys(part)
            s = sent - first
            s_word = a["src_ids"][a["src_offsets"][s] + i].astype(np.int64)
            t_word = a["tgt_ids"][a["tgt_offsets"][s] + j].astype(np.int64)
            u, c = sorted_unique_counts(s_word * self.width + t_word)
            both, where = np.unique(np.concatenate([self.uniq, u]), return_inverse=True)
            weights = np.concatenate([self.counts, c])
            self.counts = np.bincount(where, weights=weights, minlength=len(both)).astype(np.int64)
            self.uniq = both

    def _add_phrases(self, part: np.ndarray, dense: np.ndarray, a: dict[str, np.ndarray], first: int) -> np.ndarray:
        """Count the phrase pairs of one batch's links; the precise links left to count as words."""
        found = find_spans(part, dense, self.max_span)
        if len(found):
            c = self.corpus
            src = (a["src_ids"], a["src_offsets"], c.src_vocab)
            tgt = (a["tgt_ids"], a["tgt_offsets"], c.tgt_vocab)
            frame = phrase_counts(found, first, src, tgt, self.joiners)
            self.phrases = summed_pairs([frame] if self.phrases is None else [self.phrases, frame])
        return part[~found.replaced]

    def frame(self) -> pl.DataFrame:
        """Columns src, tgt, count."""
        corpus = self.corpus
        words = pl.DataFrame(
            {
                "src": corpus.src_vocab.lookup(self.uniq // self.width),
                "tgt": corpus.tgt_vocab.lookup(self.uniq % self.width),
                "count": self.counts,
            },
            schema=PAIR_SCHEMA,
        )
        return words if self.phrases is None else summed_pairs([words, self.phrases])


PAIR_SCHEMA = {"src": pl.String, "tgt": pl.String, "count": pl.Int64}


def summed_pairs(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The rows of ``frames`` with each (src, tgt) once, counts summed, in order of first appearance."""
    return pl.concat(frames).group_by(["src", "tgt"], maintain_order=True).agg(pl.col("count").sum())


def _span_ids(ids: np.ndarray, offsets: np.ndarray, sent: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The word ids of each span, one row per span, padded with -1 to the longest."""
    pos = np.arange(int((end - start).max()))
    valid = pos < (end - start)[:, None]
    idx = offsets[sent][:, None] + start[:, None] + pos
    return np.where(valid, ids[np.where(valid, idx, offsets[sent][:, None])], -1).astype(np.int64)


def phrase_counts(
    found: PhrasePairs,
    first: int,
    src: tuple[np.ndarray, np.ndarray, Vocab],
    tgt: tuple[np.ndarray, np.ndarray, Vocab],
    joiners: tuple[str, str],
) -> pl.DataFrame:
    """Phrase pairs (a :class:`~prealign.lexicon.spans.PhrasePairs` of sentences numbered from ``first``) as
    strings with their counts; ``src``/``tgt``: (word ids, sentence offsets, vocabulary) of each side."""
    sent = found.sentence - first
    blocks = [
        _span_ids(ids, offsets, sent, lo, hi)
        for (ids, offsets, _), lo, hi in ((src, found.src_start, found.src_end), (tgt, found.tgt_start, found.tgt_end))
    ]
    rows, counts = np.unique(np.hstack(blocks), axis=0, return_counts=True)
    texts = []
    cut = blocks[0].shape[1]
    for block, vocab, joiner in ((rows[:, :cut], src[2], joiners[0]), (rows[:, cut:], tgt[2], joiners[1])):
        words = vocab.lookup(block[block >= 0])
        ends = np.cumsum((block >= 0).sum(axis=1)).tolist()
        texts.append([join_words(words[lo:hi], joiner) for lo, hi in zip([0, *ends[:-1]], ends, strict=True)])
    return pl.DataFrame({"src": texts[0], "tgt": texts[1], "count": counts.astype(np.int64)}, schema=PAIR_SCHEMA)


class LinksWriter:
    """Pharaoh links, one line per sentence (:func:`~prealign.lexicon.links.pharaoh_text`), from link keys
    given part by part in sentence order (each part's sentences after the previous part's), written ``step``
    sentences at a time to ``fh``; :meth:`finish` writes the empty lines of the sentences left."""

    def __init__(self, fh: Any, n_sentences: int, step: int = 1 << 16) -> None:
        self.fh, self.n_sentences, self.step = fh, n_sentences, step
        self.next = 0  # the first sentence not written yet

    def add(self, keys: np.ndarray) -> None:
        keys = _sorted(keys)
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
    """Pharaoh links of ``n_sentences`` sentences from parts in sentence order (see :class:`LinksWriter`),
    into a temporary file renamed into place; returns how many links."""
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


def reason_totals(work: WorkDir) -> dict[str, int]:
    """Input pairs by outcome over the journaled batches (``input``, ``kept`` and every drop reason)."""
    tally = np.zeros(len(clean.REASONS), dtype=np.int64)
    for event in work.all("batch"):
        tally += np.asarray(event["reasons"], dtype=np.int64)
    return {"input": int(tally.sum()), **{name: int(c) for name, c in zip(clean.REASONS, tally, strict=True)}}


def build_corpus(
    paths: dict[str, Any],
    segmenters: tuple[SegmenterConfig, SegmenterConfig],
    cfg: clean.CleanConfig | None,
    ex: Executor,
    work: WorkDir,
    bar: Progress,
    batch_size: int,
    prepare: Callable[..., Prepared] = prepare_batch,
    max_words: int | None = None,
) -> StoredCorpus:
    """Run (or finish) the read stage into ``work``; ``paths``: the keyword arguments of ``read_parallel``,
    ``prepare``: the task run on each batch, ``max_words``: its limit on a side when ``cfg`` is None."""
    finished = work.last("corpus")
    if finished is not None:
        return StoredCorpus(work, finished["corpus"])
    done = len(work.all("batch"))
    builder = ex.actor(CorpusBuilder, str(work.path), cfg)
    try:
        if done:
            ex.get([builder.call("restore", done)])
        window: deque[tuple[int, Any]] = deque()

        def settle() -> None:
            index, handle = window.popleft()
            counts = ex.get([handle])[0]
            work.record({"batch": index, **counts})
            faults.reached("extract-batch")

        batches = read_parallel(**paths, batch_size=batch_size)
        files = [p for p in (paths.get("src"), paths.get("tgt"), paths.get("pairs")) if p is not None]
        for index, batch in enumerate(bar.iterate_bytes(batches, "read + segment", files)):
            if index < done:
                continue
            if index == 0:
                for side, config in zip(("src", "tgt"), segmenters, strict=True):
                    check_segmented(config, batch.column(side).to_pylist(), f"--{side}-lang", f"--{side}-segmenter")
            prep = ex.map_handles(prepare, [(batch, *segmenters, cfg, max_words)])[0]
            window.append((index, builder.call("add", index, prep)))
            del prep, batch
            while len(window) > 2 * ex.workers:
                settle()
        while window:
            settle()
        meta = ex.get([builder.call("finish")])[0]
    finally:
        builder.stop()
    work.record({"corpus": meta})
    faults.reached("extract-corpus")
    return StoredCorpus(work, meta)


def work_dir_for(output: Path) -> Path:
    """Where a job writing ``output`` keeps its work: ``<output>.work`` beside it."""
    return Path(os.fspath(output) + ".work")
