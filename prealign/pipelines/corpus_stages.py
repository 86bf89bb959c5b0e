"""The corpus stages of ``extract-lexicon`` and ``align``: prepare, dedup, encode, into the work directory.

1. prepare (``prepare/batch-NNNNN.npz``): the driver reads the input a batch at a time; one task per batch
   segments it, applies the length filter and hashes it (exact key, MinHash signature, LSH band tokens);
2. dedup (``dedup/``, with cleaning only): exact duplicates by key range, near duplicates by band-token range,
   in parallel shards, then one task applies the rule in input order (:mod:`prealign.pipelines.dedup_stage`);
3. encode (``encode/``): word ids per batch, the vocabularies in input order, the chunks of sentences
   (:mod:`prealign.pipelines.encode_stage`).

What a stage needs of the others travels as files; the driver holds the list of files, the batches' row
counts and the dropped rows (O(duplicates)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prealign.lexicon import clean
from prealign.lexicon.corpus import read_parallel
from prealign.lexicon.dedup import lsh_bands, min_matches
from prealign.lexicon.em import concat_sentences
from prealign.lexicon.encode import EncodedCorpus, Vocab
from prealign.pipelines import dedup_stage, encode_stage, faults
from prealign.pipelines.progress import Progress
from prealign.pipelines.stages import StageRunner, Task
from prealign.text import SegmenterConfig, check_segmented

READ_BATCH = 16384  # input pairs per prepare task
SHARD_ROWS = 1 << 20  # exact keys or band tokens per dedup shard (about 50 MB in its task)
# the stage directories of a work directory, with the files each may hold (docs/architecture.md)
WORK_DIRS = {
    "prepare": ("batch-*",),
    "dedup": ("exact-*.npy", "near-*.npy", "dropped.npz"),
    "encode": ("local-*.npz", "map-*.npz", "vocab.npz", "chunk-*"),
    "em": ("plan-*.npz", "plan-*-offsets.npy", "it-*/counts-*", "it-*/table-*", "it-*/params.npz"),
    "count": ("chunk-*",),
}
LEGACY_NAMES = ("batch-*.npz", "vocabulary.npz", "em-*.npz")  # what versions before the stages left at the top


@dataclass
class CorpusFiles:
    """What the corpus stages leave: how many chunks, the vocabularies' sizes, the pairs by outcome."""

    work: Path
    n_chunks: int
    n_sentences: int
    sizes: tuple[int, int]
    reasons: dict[str, int]
    over_max_words: int
    costs: list[int]  # per chunk: its candidate links (what the EM's work on it grows with)

    def vocab(self) -> tuple[Vocab, Vocab]:
        return encode_stage.read_vocab(encode_stage.vocab_file(self.work))

    def load(self) -> EncodedCorpus:
        """The whole corpus in memory (for the aligners that need every sentence at once)."""
        parts = [encode_stage.read_sentences(encode_stage.chunk_file(self.work, c)) for c in range(self.n_chunks)]
        whole = concat_sentences(parts)
        return EncodedCorpus(whole.src_ids, whole.src_offsets, whole.tgt_ids, whole.tgt_offsets, *self.vocab())


def _prepare_file(work: Path, index: int) -> Path:
    return work / "prepare" / f"batch-{index:05d}.npz"


def prepare(
    runner: StageRunner,
    paths: dict[str, Any],
    segmenters: tuple[SegmenterConfig, SegmenterConfig],
    cfg: clean.CleanConfig | None,
    max_words: int | None,
    bar: Progress,
) -> list[dict[str, Any]]:
    """Stage 1, streaming the input; returns each batch's stats (rows, over_max_words)."""
    work = runner.work
    (work / "prepare").mkdir(exist_ok=True)
    files = [p for p in (paths.get("src"), paths.get("tgt"), paths.get("pairs")) if p is not None]

    def tasks():
        batches = read_parallel(**paths, batch_size=READ_BATCH)
        for index, batch in enumerate(bar.iterate_bytes(batches, "read + prepare", files)):
            if index == 0:
                for side, config in zip(("src", "tgt"), segmenters, strict=True):
                    check_segmented(config, batch.column(side).to_pylist(), f"--{side}-lang", f"--{side}-segmenter")
            out = _prepare_file(work, index)
            yield Task(out, dedup_stage.prepare_task, (out, batch, *segmenters, cfg, max_words))

    return runner.run("prepare", tasks(), desc=None)


def dedup(runner: StageRunner, cfg: clean.CleanConfig, batch_files: list[Path], rows: list[int]) -> list[tuple]:
    """Stage 2: the dropped rows of each batch, (rows, reasons) in batch-local numbering."""
    work = runner.work
    (work / "dedup").mkdir(exist_ok=True)
    starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).tolist()
    exact: list[Path] = []
    if cfg.dedup:
        bounds = dedup_stage.shard_bounds(max(1, math.ceil(starts[-1] / SHARD_ROWS)))
        exact = [work / "dedup" / f"exact-{s:03d}.npy" for s in range(len(bounds))]
        tasks = [
            Task(out, dedup_stage.exact_task, (out, batch_files, starts[:-1], lo, hi))
            for out, (lo, hi) in zip(exact, bounds, strict=True)
        ]
        runner.run("dedup_exact", tasks, "dedup: exact")
    near: list[Path] = []
    if cfg.near_dedup:
        bands = len(lsh_bands(cfg))
        bounds = dedup_stage.shard_bounds(max(1, math.ceil(starts[-1] * bands / SHARD_ROWS)))
        near = [work / "dedup" / f"near-{s:03d}.npy" for s in range(len(bounds))]
        need = min_matches(cfg)
        tasks = [
            Task(out, dedup_stage.near_task, (out, batch_files, starts[:-1], lo, hi, exact, need))
            for out, (lo, hi) in zip(near, bounds, strict=True)
        ]
        runner.run("dedup_near", tasks, "dedup: near")
    out = work / "dedup" / "dropped.npz"
    runner.run_one("dedup_resolve", Task(out, dedup_stage.resolve_task, (out, near, exact)))
    dropped, reasons = dedup_stage.read_resolved(out)
    return [dedup_stage.batch_drops(dropped, reasons, starts[b], rows[b]) for b in range(len(batch_files))]


def encode(
    runner: StageRunner, batch_files: list[Path], drops: list[tuple], chunk_sentences: int, em: bool
) -> tuple[list[dict[str, Any]], dict[str, Any], list[int], int]:
    """Stage 3: per-batch stats, the vocabularies' stats, each chunk's cost, the number of kept pairs."""
    work = runner.work
    (work / "encode").mkdir(exist_ok=True)
    locals_ = [encode_stage.local_file(work, b) for b in range(len(batch_files))]
    tasks = [
        Task(out, encode_stage.local_task, (out, prepared, *drop))
        for out, prepared, drop in zip(locals_, batch_files, drops, strict=True)
    ]
    per_batch = runner.run("encode_batches", tasks, "encode: batches")
    maps = [encode_stage.map_file(work, b) for b in range(len(batch_files))]
    vocab = encode_stage.vocab_file(work)
    sizes = runner.run_one("encode_vocab", Task(vocab, encode_stage.vocab_task, (vocab, locals_, maps)))
    kept = [int(s["kept"]) for s in per_batch]
    plan = encode_stage.chunk_pieces(kept, chunk_sentences)
    n = (sizes["src_vocab"], sizes["tgt_vocab"])
    tasks = [
        Task(
            encode_stage.chunk_file(work, c),
            encode_stage.chunk_task,
            (work, c, [(locals_[b], maps[b], lo, hi) for b, lo, hi in pieces], first, n, em),
        )
        for c, (first, pieces) in enumerate(plan)
    ]
    chunks = runner.run("encode_chunks", tasks, "encode: chunks")
    faults.reached("extract-corpus")
    return per_batch, sizes, [int(c.get("candidates", 0)) for c in chunks], sum(kept)


def build_corpus(
    runner: StageRunner,
    paths: dict[str, Any],
    segmenters: tuple[SegmenterConfig, SegmenterConfig],
    cfg: clean.CleanConfig | None,
    max_words: int | None,
    bar: Progress,
    chunk_sentences: int,
    em: bool,
) -> CorpusFiles:
    """Run (or finish) the three corpus stages (see the module doc)."""
    work = runner.work
    prepared = prepare(runner, paths, segmenters, cfg, max_words, bar)
    batch_files = [_prepare_file(work, b) for b in range(len(prepared))]
    rows = [int(s["rows"]) for s in prepared]
    if cfg is not None and (cfg.dedup or cfg.near_dedup):
        drops = dedup(runner, cfg, batch_files, rows)
    else:
        drops = [(np.zeros(0, np.int64), np.zeros(0, np.uint8))] * len(batch_files)
    per_batch, sizes, costs, n_sentences = encode(runner, batch_files, drops, chunk_sentences, em)
    tally = np.zeros(len(clean.REASONS), dtype=np.int64)
    for s in per_batch:
        tally += np.asarray(s["reasons"], dtype=np.int64)
    reasons = {"input": int(tally.sum()), **{name: int(c) for name, c in zip(clean.REASONS, tally, strict=True)}}
    over = sum(int(s.get("over_max_words", 0)) for s in per_batch)
    vocab = (sizes["src_vocab"], sizes["tgt_vocab"])
    return CorpusFiles(work, len(costs), n_sentences, vocab, reasons, over, costs)
