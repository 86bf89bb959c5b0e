"""The ``align`` and ``extract-lexicon`` jobs: pure lexicon functions composed over Ray tasks.

Stages: read the input in batches (driver, streaming) -> segment, measure and hash each batch (parallel
tasks) -> exact and near-duplicate removal (driver, in input order) -> dictionary encoding -> EM over
fixed-size sentence chunks (parallel tasks, summed in chunk order) -> decoding and symmetrisation per chunk
(parallel tasks) -> counting aligned word pairs -> scoring -> atomic writes. Nothing is written until every
input record has been read and checked.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from prealign import __version__
from prealign.arrays import sorted_unique_counts
from prealign.lexicon import clean
from prealign.lexicon.builtin_aligner import BuiltinConfig, train_and_align
from prealign.lexicon.corpus import read_parallel
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.executor import Executor
from prealign.lexicon.lexicon_io import write_lexicon
from prealign.lexicon.links import write_pharaoh
from prealign.lexicon.prepare import Prepared, concatenate, prepare_batch
from prealign.lexicon.score import LexiconConfig, score_pairs
from prealign.lexicon.symmetrize import Method, sentence_links, split_keys, symmetrize
from prealign.pipelines.progress import Progress
from prealign.pipelines.ray_runtime import executor_for
from prealign.text import SegmenterConfig
from prealign.textio import atomic_write_text

READ_BATCH = 16384


@dataclass(frozen=True)
class ParallelInput:
    """Where the parallel text is: two line-aligned files, or one file of pairs."""

    src: Path | None = None
    tgt: Path | None = None
    pairs: Path | None = None
    src_column: str = "src"
    tgt_column: str = "tgt"

    def describe(self) -> str:
        return str(self.pairs) if self.pairs else f"{self.src} + {self.tgt}"


@dataclass(frozen=True)
class AlignJob:
    """Everything ``align`` and ``extract-lexicon`` share."""

    data: ParallelInput
    src_segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tgt_segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    aligner: BuiltinConfig = field(default_factory=BuiltinConfig)
    symmetrize: Method = "grow-diag-final-and"
    ray_address: str | None = None
    workers: int | None = None  # None: all CPUs; 0: no Ray, everything in this process
    progress: bool = True


@dataclass(frozen=True)
class ExtractJob(AlignJob):
    """``extract-lexicon``: cleaning, alignment, scoring, and where the lexicon goes."""

    symmetrize: Method = "intersect"  # precision first: a lexicon wants few wrong pairs
    output: Path = Path("lexicon.parquet")
    clean: clean.CleanConfig = field(default_factory=clean.CleanConfig)
    lexicon: LexiconConfig = field(default_factory=LexiconConfig)
    links_output: Path | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None


def _read_and_prepare(job: AlignJob, ex: Executor, cfg: clean.CleanConfig | None, bar: Progress) -> Prepared:
    d = job.data
    batches = read_parallel(
        d.src, d.tgt, d.pairs, src_column=d.src_column, tgt_column=d.tgt_column, batch_size=READ_BATCH
    )
    args = ((b, job.src_segmenter, job.tgt_segmenter, cfg) for b in bar.iterate(batches, "read + segment"))
    return concatenate(ex.map(prepare_batch, args))


def _dedup(prep: Prepared, cfg: clean.CleanConfig) -> np.ndarray:
    codes = prep.codes.copy()
    if prep.keys is not None:
        codes[clean.duplicate_mask(prep.keys, keep=codes == clean.KEPT)] = clean.DUPLICATE
    if prep.signatures is not None:
        keep = codes == clean.KEPT
        codes[clean.near_duplicate_mask(prep.signatures, cfg, keep=keep) & keep] = clean.NEAR_DUPLICATE
    return codes


def _symmetrize_chunk(links: tuple[np.ndarray, np.ndarray], method: Method) -> np.ndarray:
    return symmetrize(links[0], links[1], method)


def _align(corpus: EncodedCorpus, job: AlignJob, ex: Executor, bar: Progress) -> np.ndarray:
    """Link keys of the whole corpus, symmetrised."""
    total = job.aligner.ibm1_iterations + job.aligner.hmm_iterations
    with bar.stage("EM (both directions)", total=total) as tick:
        _, handles = train_and_align(corpus, job.aligner, ex, progress=lambda _msg: tick())
    parts = ex.map(_symmetrize_chunk, [(h, job.symmetrize) for h in handles])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def align(job: AlignJob, output: Path) -> dict[str, Any]:
    """Write Pharaoh links, one line per input pair, in input order; returns a summary."""
    bar = Progress(job.progress)
    started = time.perf_counter()
    with executor_for(job.ray_address, job.workers) as ex:
        prep = _read_and_prepare(job, ex, None, bar)
        corpus = encode_corpus(prep.src, prep.tgt)
        keys = _align(corpus, job, ex, bar)
    write_pharaoh(sentence_links(keys, corpus.n_sentences), output)
    return {
        "pairs": corpus.n_sentences,
        "links": int(len(keys)),
        "symmetrize": job.symmetrize,
        "seconds": round(time.perf_counter() - started, 2),
        "output": str(output),
    }


def count_pairs(corpus: EncodedCorpus, keys: np.ndarray) -> pl.DataFrame:
    """Aligned word pairs with how often they were linked: columns src, tgt, count."""
    sent, i, j = split_keys(keys)
    s_word = corpus.src_ids[corpus.src_offsets[sent] + i].astype(np.int64)
    t_word = corpus.tgt_ids[corpus.tgt_offsets[sent] + j].astype(np.int64)
    width = max(len(corpus.tgt_vocab), 1)
    uniq, counts = sorted_unique_counts(s_word * width + t_word)
    return pl.DataFrame(
        {
            "src": corpus.src_vocab.lookup(uniq // width),
            "tgt": corpus.tgt_vocab.lookup(uniq % width),
            "count": counts.astype(np.int64),
        },
        schema={"src": pl.String, "tgt": pl.String, "count": pl.Int64},
    )


def stats_path(output: Path) -> Path:
    """Where the stats JSON of a lexicon goes: beside it, ``<name>.stats.json``."""
    return output.with_name(output.name + ".stats.json")


def extract_lexicon(job: ExtractJob) -> dict[str, Any]:
    """Run the whole extraction; writes the lexicon and its stats JSON, returns the stats."""
    bar = Progress(job.progress)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with executor_for(job.ray_address, job.workers) as ex:
        t = time.perf_counter()
        prep = _read_and_prepare(job, ex, job.clean, bar)
        timings["read_segment"] = time.perf_counter() - t
        t = time.perf_counter()
        with bar.stage("deduplicate"):
            codes = _dedup(prep, job.clean)
        timings["dedup"] = time.perf_counter() - t
        kept = np.flatnonzero(codes == clean.KEPT)
        if len(kept) == 0:
            from prealign.errors import InputError

            raise InputError(
                "no sentence pair left after cleaning: " + json.dumps(clean.reason_counts(codes)), job.data.describe()
            )
        t = time.perf_counter()
        corpus = encode_corpus(prep.src.take(pa.array(kept)), prep.tgt.take(pa.array(kept)))
        del prep
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        keys = _align(corpus, job, ex, bar)
        timings["align"] = time.perf_counter() - t
    t = time.perf_counter()
    with bar.stage("score + write"):
        lexicon = score_pairs(count_pairs(corpus, keys), config=job.lexicon)
        stats = {
            "input": job.data.describe(),
            "pairs": clean.reason_counts(codes),
            "aligned_pairs": corpus.n_sentences,
            "src_vocab": len(corpus.src_vocab),
            "tgt_vocab": len(corpus.tgt_vocab),
            "links": int(len(keys)),
            "lexicon_entries": lexicon.height,
            "lexicon_src_words": lexicon["src"].n_unique(),
        }
        metadata = {
            "tool": "prealign-data",
            "version": __version__,
            "src_lang": job.src_lang,
            "tgt_lang": job.tgt_lang,
            "aligner": "builtin",
            "aligner_config": asdict(job.aligner),
            "symmetrize": job.symmetrize,
            "clean": asdict(job.clean),
            "lexicon_filters": asdict(job.lexicon),
            "corpus_pairs": stats["pairs"]["input"],
            "aligned_pairs": corpus.n_sentences,
        }
        if job.links_output is not None:
            write_pharaoh(sentence_links(keys, corpus.n_sentences), job.links_output)
        write_lexicon(lexicon, job.output, metadata)
    timings["score_write"] = time.perf_counter() - t
    stats["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    stats["seconds"]["total"] = round(time.perf_counter() - started, 2)
    atomic_write_text(stats_path(job.output), json.dumps(stats, indent=2) + "\n")
    return stats
