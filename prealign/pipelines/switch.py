"""The ``switch`` job: monolingual text -> code-switched, tokenised Arrow shards, over Ray tasks.

Stages: read documents in batches (driver, streaming) -> tokenise and switch each batch (parallel tasks; the
draws depend only on the seed and each document's global index) -> pack rows and write shards in input order
(driver) -> manifest. Shards are written into ``DIR/.partial-*`` and moved into place only when the whole run
has succeeded, manifest last; a failed run leaves the directory as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prealign import __version__
from prealign.arrays import join_offsets
from prealign.codeswitch.switch import Switched
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.codeswitch.task import switch_task
from prealign.codeswitch.tokenizer import iter_texts, load_tokenizer, tokenizer_file, tokenizer_info
from prealign.errors import InputError
from prealign.lexicon.executor import Executor
from prealign.lexicon.lexicon_io import read_lexicon
from prealign.pipelines.progress import Progress
from prealign.pipelines.ray_runtime import executor_for
from prealign.shards import (
    IGNORE_INDEX,
    SCHEMA_VERSION,
    Rows,
    clear_run,
    existing_run,
    file_sha256,
    shard_name,
    write_manifest,
    write_shard,
)

DOC_BATCH = 4096


@dataclass(frozen=True)
class SwitchJob:
    """Everything ``prealign-data switch`` needs."""

    corpus: Sequence[Path]
    lexicon: Path
    tokenizer: Path
    output: Path
    config: SwitchConfig
    text_column: str = "text"
    seq_len: int | None = 1024
    pack: bool = True
    shard_rows: int = 8192
    overwrite: bool = False
    ray_address: str | None = None
    workers: int | None = None
    progress: bool = True


@dataclass
class Packer:
    """Turns switched documents into rows: packed into ``row_tokens`` with end-of-text between documents,
    or one document per row."""

    row_tokens: int | None  # None: one document per row
    eot_id: int | None
    pad_id: int
    ids: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    switched: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    padding: int = 0

    def add(self, batch: Switched) -> Rows:
        """Add a batch of documents; return the rows completed by it."""
        if self.row_tokens is None:
            return Rows(batch.input_ids, batch.labels, batch.switched, batch.offsets - batch.offsets[0])
        ids, lab, sw = _with_separators(batch, self.eot_id)
        self.ids.append(ids)
        self.labels.append(lab)
        self.switched.append(sw)
        self.buffered += len(ids)
        return self._cut(final=False)

    def finish(self) -> Rows:
        """The last, partial row, padded with ``pad_id`` (labels -100)."""
        if self.row_tokens is None:
            return _empty_rows()
        return self._cut(final=True)

    def _cut(self, final: bool) -> Rows:
        n_rows = self.buffered // self.row_tokens
        rest = self.buffered - n_rows * self.row_tokens
        if final and rest:
            pad = self.row_tokens - rest
            self.ids.append(np.full(pad, self.pad_id, np.int32))
            self.labels.append(np.full(pad, IGNORE_INDEX, np.int32))
            self.switched.append(np.zeros(pad, np.int8))
            self.buffered += pad
            self.padding += pad
            n_rows += 1
        if n_rows == 0:
            return _empty_rows()
        ids, lab, sw = (np.concatenate(x) for x in (self.ids, self.labels, self.switched))
        used = n_rows * self.row_tokens
        self.ids, self.labels, self.switched = [ids[used:]], [lab[used:]], [sw[used:]]
        self.buffered -= used
        offsets = np.arange(n_rows + 1, dtype=np.int64) * self.row_tokens
        return Rows(ids[:used], lab[:used], sw[:used], offsets)


def _empty_rows() -> Rows:
    return Rows(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), np.zeros(1, np.int64))


def _with_separators(batch: Switched, eot_id: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The documents back to back, each followed by end-of-text (labelled as itself)."""
    if eot_id is None:
        return batch.input_ids, batch.labels, batch.switched
    ends = batch.offsets[1:] - batch.offsets[0]
    return (
        np.insert(batch.input_ids, ends, eot_id).astype(np.int32),
        np.insert(batch.labels, ends, eot_id).astype(np.int32),
        np.insert(batch.switched, ends, 0).astype(np.int8),
    )


def _document_batches(paths: Sequence[Path], text_column: str, size: int) -> Iterator[tuple[list[str], int]]:
    batch: list[str] = []
    first = 0
    for path in paths:
        for text in iter_texts(path, text_column):
            batch.append(text)
            if len(batch) == size:
                yield batch, first
                first += len(batch)
                batch = []
    if batch:
        yield batch, first


def _check_job(job: SwitchJob) -> None:
    for path in job.corpus:
        if not Path(path).is_file():
            raise InputError("no such file", path)
    if job.pack and (job.seq_len is None or job.seq_len < 1):
        raise InputError("--seq-len must be a positive number of tokens when packing", job.output)
    if job.shard_rows < 1:
        raise InputError("--shard-rows must be at least 1", job.output)
    if existing_run(job.output) and not job.overwrite:
        raise InputError("holds another run's shards; pass --overwrite to replace them", job.output)


def switch_corpus(job: SwitchJob) -> dict[str, Any]:
    """Run the switch job; returns the manifest it wrote."""
    started = time.perf_counter()
    _check_job(job)
    tokenizer = load_tokenizer(job.tokenizer)
    info = tokenizer_info(tokenizer)
    lexicon, lex_meta = read_lexicon(job.lexicon)
    table = build_table(lexicon, job.config)
    if len(table) == 0:
        raise InputError("no lexicon entry left after the filters (--min-prob, --min-count)", job.lexicon)
    if job.pack and info.eot_id is None:
        raise InputError("the tokenizer has no end-of-text token to separate packed documents", job.tokenizer)
    pad_id = info.pad_id if info.pad_id is not None else (info.eot_id if info.eot_id is not None else 0)
    packer = Packer(job.seq_len + 1 if job.pack else None, info.eot_id, pad_id)
    bar = Progress(job.progress)
    created = not job.output.exists()
    job.output.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=job.output))
    totals = {"documents": 0, "words": 0, "words_with_entry": 0, "words_switched": 0}
    shards: list[dict[str, Any]] = []
    pending: list[Rows] = []
    try:
        with executor_for(job.ray_address, job.workers) as ex:
            tok_key = (str(tokenizer_file(job.tokenizer).resolve()), info.sha256)
            table_h = ex.put(table)
            batches = _document_batches(job.corpus, job.text_column, DOC_BATCH)
            args = ((texts, first, tok_key, table_h, job.config) for texts, first in batches)
            for result in bar.iterate(_ordered(ex, switch_task, args), "switch", unit="batch"):
                totals["documents"] += len(result.offsets) - 1
                totals["words"] += result.words
                totals["words_with_entry"] += result.words_with_entry
                totals["words_switched"] += result.words_switched
                pending.append(packer.add(result))
                _flush(pending, partial, shards, job.shard_rows, final=False)
        pending.append(packer.finish())
        _flush(pending, partial, shards, job.shard_rows, final=True)
        if totals["documents"] == 0:
            raise InputError("empty corpus: no non-blank document", job.corpus[0])
        manifest = _manifest(job, info, lexicon.height, lex_meta, totals, shards, packer)
        if job.overwrite:
            clear_run(job.output)
        for entry in shards:
            os.replace(partial / entry["file"], job.output / entry["file"])
        write_manifest(job.output, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if created:
            shutil.rmtree(job.output, ignore_errors=True)
        raise
    shutil.rmtree(partial, ignore_errors=True)
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def _ordered(ex: Executor, func, args) -> Iterator[Switched]:
    """Results of ``func`` over ``args`` in input order, fetched one at a time as they are needed."""
    window = max(2, 2 * getattr(ex, "workers", 1))
    handles: list[Any] = []
    for a in args:
        handles.extend(ex.map_handles(func, [a]))
        if len(handles) > window:
            yield ex.get([handles.pop(0)])[0]
    while handles:
        yield ex.get([handles.pop(0)])[0]


def _flush(pending: list[Rows], directory: Path, shards: list[dict[str, Any]], shard_rows: int, final: bool) -> None:
    """Write every full shard of the pending rows (and, when final, the rest)."""
    rows = _concat(pending)
    pending.clear()
    start = 0
    while len(rows) - start >= shard_rows or (final and len(rows) > start):
        stop = min(start + shard_rows, len(rows))
        shards.append(write_shard(directory / shard_name(len(shards)), rows.slice(start, stop)))
        start = stop
    pending.append(rows.slice(start, len(rows)))


def _concat(parts: list[Rows]) -> Rows:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty_rows()
    return Rows(
        np.concatenate([p.input_ids for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.switched for p in parts]),
        join_offsets([p.offsets for p in parts]),
    )


def _manifest(job, info, lexicon_rows, lex_meta, totals, shards, packer) -> dict[str, Any]:
    tokens = sum(s["tokens"] for s in shards)
    with_entry = totals["words_with_entry"]
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "arrow-ipc-stream",
        "tool": "prealign-data",
        "version": __version__,
        "tokenizer": {"path": str(tokenizer_file(job.tokenizer).resolve()), **info.to_dict()},
        "lexicon": {
            "path": str(Path(job.lexicon).resolve()),
            "sha256": file_sha256(Path(job.lexicon)),
            "entries": lexicon_rows,
            "src_lang": lex_meta.get("src_lang"),
            "tgt_lang": lex_meta.get("tgt_lang"),
        },
        "inputs": [str(p) for p in job.corpus],
        "ratio": job.config.ratio,
        "seed": job.config.seed,
        "choice": job.config.choice,
        "min_prob": job.config.min_prob,
        "min_count": job.config.min_count,
        "labels": job.config.labels,
        "label_convention": "huggingface-causal-lm: labels[j] is compared with the prediction after j-1; -100 no loss",
        "seq_len": job.seq_len if job.pack else None,
        "packed": job.pack,
        "row_tokens": packer.row_tokens,
        "totals": {
            **totals,
            "tokens": tokens,
            "padding_tokens": packer.padding,
            "rows": sum(s["rows"] for s in shards),
        },
        "rates": {
            "switched_per_word_with_entry": totals["words_switched"] / with_entry if with_entry else 0.0,
            "switched_per_word": totals["words_switched"] / totals["words"] if totals["words"] else 0.0,
        },
        "shards": shards,
    }
