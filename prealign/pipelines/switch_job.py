"""The ``switch`` job: monolingual text -> code-switched, tokenised Arrow shards, over Ray tasks.

Stages: read documents in batches (driver, streaming) -> tokenise and switch each batch (parallel tasks; the
draws depend only on the seed and each document's global index) -> pack rows and write shards in input order
(driver) -> manifest. Shards are written into the work directory ``DIR/.work`` and moved into place only when
the whole run has succeeded, manifest last; a run that fails on bad input leaves the directory as it was.

Resume: every shard is journaled when written (:mod:`prealign.pipelines.workdir`) with where the stream
stands at its end: the first document of the batch that shard's last row ends in, how many tokens (rows,
without packing) of that batch's stream the shard already holds, and the totals before that batch. A job
killed at any point and started again with the same arguments re-reads the input up to that document (reading,
not switching), switches from there, drops what the finished shards hold, and carries on; finished shards are
never rewritten, and the end result is byte for byte that of an uninterrupted run. Killed while moving the
shards into place, it finishes the move (the manifest and the dataset card are written into the work directory
before the move starts, so the move itself needs no disk space).

The manifest records the job's fingerprint (inputs, options, tool version): the same command run again on its
finished output checks the shards against the manifest and, when they are intact, does nothing. Only another
run's output needs ``--overwrite``. A disk that fills up is one error line (:class:`prealign.errors.DiskFull`);
the work directory is kept (finished shards, no temporary file), so that the same command resumes once there
is space.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prealign import __version__
from prealign.arrays import join_offsets
from prealign.codeswitch.switch import Switched
from prealign.codeswitch.table import DEFAULT_LANGUAGE, LANG_COLUMN, SwitchConfig, build_table, check_words
from prealign.codeswitch.task import switch_task
from prealign.codeswitch.tokenizer import (
    SpecialTokens,
    iter_texts,
    load_tokenizer,
    special_tokens,
    tokenizer_file,
    tokenizer_info,
)
from prealign.errors import DiskFull, InputError, disk_full_is_input_error
from prealign.lexicon.lexicon_io import read_lexicon
from prealign.outputs import check_outputs
from prealign.pipelines import faults
from prealign.pipelines.executor import Executor
from prealign.pipelines.progress import Progress
from prealign.pipelines.ray_runtime import executor_for
from prealign.pipelines.workdir import WorkDir, WorkDirBusy, file_identity, fingerprint, read_journal
from prealign.shards import (
    CARD,
    IGNORE_INDEX,
    MANIFEST,
    SCHEMA_VERSION,
    SHARD_GLOB,
    Rows,
    card_is_ours,
    check_shards,
    existing_run,
    file_sha256,
    read_manifest,
    shard_name,
    write_dataset_card,
    write_manifest,
    write_shard,
)
from prealign.text import SegmenterConfig, check_segmented, require, segmenter_config
from prealign.textio import check_readable, remove_temporaries

DOC_BATCH = 4096
WORK = ".work"
TOTALS = ("documents", "words", "words_with_entry", "words_switched", "words_unswitchable")


@dataclass(frozen=True)
class SwitchJob:
    """Everything ``prealign-data switch`` needs.

    ``lexicon``: one lexicon (bilingual or multi-way), or several, joined on their pivot language
    (:func:`prealign.lexicon.multiway.combine`). ``lang_weights``: target language -> weight (a language not
    named weighs 1; 0: never switched into).
    """

    corpus: Sequence[Path]
    lexicon: Path | Sequence[Path]
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
    lang_weights: Mapping[str, float] | None = None
    lang: str | None = None  # the documents' language: chooses the segmenter (default: the lexicon's source side's)
    segmenter: str | None = None  # a segmenter named to override that choice
    bos: str | None = None  # --bos: a token of the tokenizer, or "none" (default: the tokenizer directory's config)
    eos: str | None = None  # --eos: likewise
    allow_low_coverage: bool = False  # write the shards even when few words have an entry or most are unswitchable

    @property
    def lexicons(self) -> list[Path]:
        """The lexicon file(s), as a list."""
        if isinstance(self.lexicon, str | os.PathLike):
            return [Path(self.lexicon)]
        return [Path(p) for p in self.lexicon]


@dataclass(frozen=True)
class SwitchLexicon:
    """The lexicon rows a switch job uses (with ``tgt_lang``), the target languages with their weights, and
    what the manifest records about the file(s)."""

    rows: Any  # pl.DataFrame
    weights: dict[str, float]  # every target language, in lexicon order
    src_lang: str | None
    metadata: list[dict[str, Any]]  # per file


def load_lexicons(paths: Sequence[Path], lang_weights: Mapping[str, float] | None) -> SwitchLexicon:
    """Read the lexicon(s) of a switch job and resolve the language weights.

    One file: a multi-way lexicon's languages come from its ``tgt_lang`` column; a bilingual one's from its
    metadata (``unknown`` when it has none, unless --lang-weights needs it). Several files are joined on the
    pivot language, each needing a known target language. InputError naming the file: a lexicon word with a tab
    or line break, a missing language, a repeated one, differing pivot languages; a weight for a language no
    lexicon has; every weight 0.
    """
    import polars as pl

    from prealign.lexicon.multiway import LexiconInput, combine, languages_of

    inputs = []
    for path in paths:
        frame, meta = read_lexicon(path)
        check_words(frame, path)
        inputs.append(LexiconInput(path, frame, meta))
    where = paths[0] if len(paths) == 1 else None
    if len(inputs) > 1:
        joined = combine(inputs)
        rows, languages, src_lang = joined.rows, joined.languages, joined.src_lang
    elif LANG_COLUMN in inputs[0].frame.columns:
        rows, languages = inputs[0].frame, languages_of(inputs[0].frame, inputs[0].metadata)
        src_lang = inputs[0].metadata.get("src_lang")
    else:
        lang = inputs[0].metadata.get("tgt_lang")
        if not isinstance(lang, str) or not lang:
            if lang_weights:
                raise InputError("no target language in its metadata (tgt_lang): --lang-weights cannot name it", where)
            lang = DEFAULT_LANGUAGE
        rows, languages = inputs[0].frame.with_columns(pl.lit(lang, dtype=pl.String).alias(LANG_COLUMN)), [lang]
        src_lang = inputs[0].metadata.get("src_lang")
    weights = dict(lang_weights or {})
    unknown = [lang for lang in weights if lang not in languages]
    if unknown:
        raise InputError(
            f"--lang-weights names language(s) {', '.join(unknown)} that no lexicon has (they have "
            f"{', '.join(languages)})",
            where,
        )
    resolved = {lang: float(weights.get(lang, 1.0)) for lang in languages}
    if resolved and not any(w > 0 for w in resolved.values()):
        raise InputError("every target language has weight 0 in --lang-weights: nothing would be switched", where)
    return SwitchLexicon(rows, resolved, src_lang, [dict(item.metadata) for item in inputs])


@dataclass
class Packer:
    """Turns switched documents into rows: packed into ``row_tokens`` with EOS after each document (the separator),
    or one document per row; BOS before each document when ``bos_id`` is set."""

    row_tokens: int | None  # None: one document per row
    eos_id: int | None  # after each document (None: nothing)
    pad_id: int
    bos_id: int | None = None  # before each document (None: nothing)
    ids: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    switched: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    padding: int = 0
    position: int = 0  # stream units (tokens with separators; documents without packing) added so far
    skip: int = 0  # units still to drop from the start of what is added (already in finished shards)

    def add(self, batch: Switched) -> Rows:
        """Add a batch of documents; return the rows completed by it."""
        if self.row_tokens is None:
            rows = Rows(*_with_separators(batch, self.bos_id, self.eos_id))
            self.position += len(rows)
            drop = min(self.skip, len(rows))
            self.skip -= drop
            return rows.slice(drop, len(rows))
        ids, lab, sw, _ = _with_separators(batch, self.bos_id, self.eos_id)
        self.position += len(ids)
        if self.skip:
            drop = min(self.skip, len(ids))
            ids, lab, sw = ids[drop:], lab[drop:], sw[drop:]
            self.skip -= drop
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


def _with_separators(
    batch: Switched, bos_id: int | None, eos_id: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The documents back to back, each preceded by BOS and followed by EOS (each labelled as itself, never
    switched; None: not there), and the documents' new offsets."""
    offsets = batch.offsets - batch.offsets[0]
    marks = [(offsets[:-1], bos_id), (offsets[1:], eos_id)]
    marks = [(at, token) for at, token in marks if token is not None]
    if not marks:
        return batch.input_ids, batch.labels, batch.switched, offsets
    n_docs = len(offsets) - 1
    # per document: its BOS, then its EOS, so that equal positions (an EOS and the next BOS) stay in that order
    at = np.stack([m[0] for m in marks], axis=1).reshape(-1)
    values = np.tile(np.array([m[1] for m in marks], np.int32), n_docs)
    new_offsets = offsets + np.arange(n_docs + 1, dtype=np.int64) * len(marks)
    return (
        np.insert(batch.input_ids, at, values).astype(np.int32),
        np.insert(batch.labels, at, values).astype(np.int32),
        np.insert(batch.switched, at, 0).astype(np.int8),
        new_offsets,
    )


def _document_batches(
    paths: Sequence[Path], text_column: str, size: int, start: int = 0
) -> Iterator[tuple[list[str], int]]:
    """Lists of up to ``size`` documents with the index of their first, from document ``start`` on (the ones
    before are read and passed over)."""
    batch: list[str] = []
    first = start
    seen = 0
    for path in paths:
        for text in iter_texts(path, text_column):
            seen += 1
            if seen <= start:
                continue
            batch.append(text)
            if len(batch) == size:
                yield batch, first
                first += len(batch)
                batch = []
    if batch:
        yield batch, first


def _check_job(job: SwitchJob) -> None:
    """Refuse, before any work, missing inputs, bad numbers and an output directory that cannot be written or
    would hold an input."""
    for path in [*job.corpus, *job.lexicons]:
        check_readable(path)
    check_readable(tokenizer_file(job.tokenizer))
    check_outputs([*job.corpus, *job.lexicons, tokenizer_file(job.tokenizer)], {"-o": job.output}, directories=("-o",))
    if job.pack and (job.seq_len is None or job.seq_len < 1):
        raise InputError("--seq-len must be a positive number of tokens when packing", job.output)
    if job.shard_rows < 1:
        raise InputError("--shard-rows must be at least 1", job.output)


@dataclass
class _Stream:
    """Where the switched stream stands, so that each finished shard can say where a resumed run starts."""

    next_doc: int  # the first document not added yet
    position: int  # stream units added so far (see Packer.position)
    totals: dict[str, int]
    marks: deque[tuple[int, int, dict[str, int]]] = field(default_factory=deque)  # per batch: doc, start, totals

    def add(self, result: Switched, position: int) -> None:
        """Record a batch, added to the stream up to ``position``, and add it to the totals."""
        self.marks.append((self.next_doc, self.position, dict(self.totals)))
        self.position = position
        self.next_doc += len(result.offsets) - 1
        self.totals["documents"] += len(result.offsets) - 1
        self.totals["words"] += result.words
        self.totals["words_with_entry"] += result.words_with_entry
        self.totals["words_switched"] += result.words_switched
        self.totals["words_unswitchable"] += result.words_unswitchable
        for key, counts in (("lang_with_entry", result.lang_with_entry), ("lang_switched", result.lang_switched)):
            self.totals[key] = [a + int(b) for a, b in zip(self.totals[key], counts.tolist(), strict=True)]  # new list

    def resume_point(self, end: int) -> dict[str, Any]:
        """Where to start again once the stream up to ``end`` is in finished shards: the first document of the
        batch ``end`` falls in, how much of that batch's stream to drop, and the totals before it."""
        while self.marks and (self.marks[1][1] if len(self.marks) > 1 else self.position) <= end:
            self.marks.popleft()  # a batch wholly in finished shards
        if self.marks:
            doc, start, totals = self.marks[0]
            return {"doc": doc, "skip": end - start, "position": end, "totals": totals}
        return {"doc": self.next_doc, "skip": end - self.position, "position": end, "totals": dict(self.totals)}


def _fingerprint(
    job: SwitchJob,
    tokenizer_sha: str,
    weights: Mapping[str, float],
    segmenter: SegmenterConfig,
    specials: SpecialTokens | None = None,
) -> str:
    shas = [file_sha256(p) for p in job.lexicons]
    described: dict[str, Any] = {} if all(w == 1.0 for w in weights.values()) else {"lang_weights": dict(weights)}
    if specials is not None and not specials.default:  # BOS/EOS other than a plain tokenizer.json's (no BOS)
        described["special_tokens"] = {
            "bos": specials.bos_id if specials.add_bos else None,
            "eos": specials.eos_id,
            "add_eos": specials.add_eos,
            "pad": specials.pad_id,
        }
    described["segmenter"] = asdict(segmenter)
    return fingerprint(
        {
            **described,
            "inputs": [file_identity(p) for p in job.corpus],
            "text_column": job.text_column,
            "lexicon": shas[0] if len(shas) == 1 else shas,
            "tokenizer": tokenizer_sha,
            "config": asdict(job.config),
            "seq_len": job.seq_len,
            "pack": job.pack,
            "shard_rows": job.shard_rows,
            "schema_version": SCHEMA_VERSION,
        }
    )


MIN_ENTRY_SHARE = 0.01  # below this share of words with a lexicon entry, a run stops (--allow-low-coverage)
MAX_UNSWITCHABLE_SHARE = 0.5  # above this share of unswitchable words, likewise


def coverage_problem(totals: Mapping[str, Any]) -> str | None:
    """Why the run switches next to nothing (few words with a lexicon entry, most words unswitchable, no word
    at all), or None; no documents is not a coverage problem (the empty-corpus error)."""
    words, with_entry, unswitchable = totals["words"], totals["words_with_entry"], totals.get("words_unswitchable", 0)
    if totals["documents"] == 0:
        return None
    if words == 0:
        return f"the {totals['documents']:,} document(s) hold no word: is --lang/--segmenter right for them?"
    if unswitchable > MAX_UNSWITCHABLE_SHARE * words:
        return (
            f"{unswitchable:,} ({100 * unswitchable / words:.1f}%) of {words:,} words are unswitchable (the "
            "tokenizer's tokens straddle their boundaries): do the tokenizer and the segmenter (--lang, --segmenter) "
            "fit the documents?"
        )
    if with_entry < MIN_ENTRY_SHARE * words:
        share = "none" if with_entry == 0 else f"only {with_entry:,} ({100 * with_entry / words:.1f}%)"
        return (
            f"{share} of {words:,} words have a lexicon entry: is the lexicon's source language the corpus's? "
            "(--lang, --segmenter)"
        )
    return None


def check_coverage(totals: Mapping[str, Any], allowed: bool, where: Path) -> None:
    """InputError saying why, when :func:`coverage_problem` finds one and --allow-low-coverage was not given."""
    problem = coverage_problem(totals)
    if problem and not allowed:
        raise InputError(f"{problem}; pass --allow-low-coverage to write the shards anyway", where)


def _committing(work_path: Path, job_fingerprint: str) -> bool:
    """True when ``work_path`` holds this job's work and the job was moving its shards into place."""
    events = read_journal(work_path)
    return bool(events) and events[0].get("fingerprint") == job_fingerprint and any("commit" in e for e in events)


def switch_corpus(job: SwitchJob) -> dict[str, Any]:
    """Run the switch job (or finish an interrupted run of it); returns the manifest it wrote, or the manifest of
    this very job's intact output with ``"already_done": True`` (nothing written)."""
    started = time.perf_counter()
    _check_job(job)
    tokenizer = load_tokenizer(job.tokenizer)
    info = tokenizer_info(tokenizer)
    specials = special_tokens(tokenizer, job.tokenizer, job.bos, job.eos, info)
    lex = load_lexicons(job.lexicons, job.lang_weights)
    segmenter = document_segmenter(job, lex)
    table = build_table(lex.rows, job.config, lex.weights)
    if len(table) == 0:
        raise InputError("no lexicon entry left after the filters (--min-prob, --min-count)", job.lexicons[0])
    if job.pack and specials.eos_id is None:
        why = "--eos none" if specials.eos_from == "option" else "the tokenizer has no end-of-text token"
        raise InputError(f"{why}: packed documents need a separator (pass --eos TOKEN, or --no-pack)", job.tokenizer)
    job_fingerprint = _fingerprint(job, info.sha256, lex.weights, segmenter, specials)
    work = WorkDir(job.output / WORK, job_fingerprint, names=(SHARD_GLOB, MANIFEST, CARD))
    if not job.overwrite and _finished(job.output, job_fingerprint):
        work.remove()  # what a kill after the manifest was moved into place left: the job's own files go
        return {**read_manifest(job.output), "already_done": True}
    if existing_run(job.output) and not job.overwrite and not _committing(work.path, job_fingerprint):
        raise InputError("holds another run's shards; pass --overwrite to replace them", job.output)
    created = not job.output.exists()
    try:
        with disk_full_is_input_error(job.output), work.kept_unless_bad_input():  # a full disk keeps the work
            run = (table, lex, segmenter, job_fingerprint)
            manifest = _run(job, work, tokenizer_file(job.tokenizer), info, specials, *run)
    except InputError as exc:
        if created and not isinstance(exc, WorkDirBusy | DiskFull):
            shutil.rmtree(job.output, ignore_errors=True)
        raise
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    return manifest


def document_segmenter(job: SwitchJob, lex: SwitchLexicon) -> SegmenterConfig:
    """The segmenter of the documents: the lexicon's source side's (recorded by extract-lexicon) unless --lang or
    --segmenter choose one (checked on the first batch of documents the job reads, :func:`_checked`)."""
    recorded = lex.metadata[0].get("src_segmenter") if len(lex.metadata) == 1 else None
    if job.lang is None and job.segmenter is None and isinstance(recorded, dict):
        try:
            config = SegmenterConfig(**recorded)
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad src_segmenter in its metadata: {exc}", job.lexicons[0]) from None
        require(config.kind, f"the lexicon's source segmenter ({config.kind})")
    else:
        config = segmenter_config(job.lang or lex.src_lang, job.segmenter, option="--lang")
    return config


def _checked(batches: Iterator[tuple[list[str], int]], segmenter: SegmenterConfig) -> Iterator[tuple[list[str], int]]:
    """``batches``, the first checked to be cut by a segmenter fit for its script (text mostly in a script written
    without spaces needs a real segmenter, see :func:`prealign.text.check_segmented`)."""
    for k, (texts, first) in enumerate(batches):
        if k == 0:
            check_segmented(segmenter, texts, "--lang", "--segmenter")
        yield texts, first


def switch_report(manifest: dict[str, Any], output: Path) -> str:
    """What the command prints: the run's summary, or that the same run had already been done."""
    from prealign.pipelines.report import switch_summary

    if manifest.get("already_done"):
        return f"switch: already done (same inputs and options; shards checked) -> {output}"
    summary = switch_summary(manifest, output)
    if manifest.get("coverage_warning"):
        summary += (
            f"\nWARNING: LOW COVERAGE, shards written anyway (--allow-low-coverage): {manifest['coverage_warning']}"
        )
    return summary


def _finished(output: Path, job_fingerprint: str) -> bool:
    """True when ``output`` holds this job's finished run with every shard intact; InputError when it holds this
    job's run with shards that do not match its manifest. Temporary files of the run's names are removed."""
    if not (output / MANIFEST).is_file():
        return False
    try:
        manifest = read_manifest(output)
    except InputError:
        return False  # not a manifest this job wrote
    if manifest.get("job_fingerprint") != job_fingerprint:
        return False
    problems = check_shards(output)
    if problems:
        more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
        raise InputError(
            f"holds this run's output, but it is damaged ({problems[0]}{more}): pass --overwrite to write it again",
            output,
        )
    remove_temporaries(output / n for n in [MANIFEST, CARD, *(e["file"] for e in manifest["shards"])])
    return True


def _run(
    job: SwitchJob,
    work: WorkDir,
    tok_path: Path,
    info,
    specials: SpecialTokens,
    table,
    lex: SwitchLexicon,
    segmenter: SegmenterConfig,
    job_fingerprint: str,
) -> dict:
    """Switch what is left to switch into ``work``, then move the shards into place (see the module doc)."""
    shards = [e["shard"] for e in work.all("shard")]
    pad_id = next((i for i in (specials.pad_id, specials.eos_id) if i is not None), 0)
    eos_id = specials.eos_id if job.pack or specials.add_eos else None
    bos_id = specials.bos_id if specials.add_bos else None
    packer = Packer(job.seq_len + 1 if job.pack else None, eos_id, pad_id, bos_id)
    done = work.last("done")
    if done is None:
        last = work.last("shard")
        start = (
            last["resume"] if last else {"doc": 0, "skip": 0, "position": 0, "totals": _zero_totals(len(lex.weights))}
        )
        packer.skip, packer.position = start["skip"], start["position"] - start["skip"]
        stream = _Stream(start["doc"], packer.position, _with_languages(start["totals"], len(lex.weights)))
        unit = packer.row_tokens or 1

        def finished(entry: dict[str, Any]) -> None:
            shards.append(entry)
            work.record({"shard": entry, "resume": stream.resume_point(len(shards) * job.shard_rows * unit)})
            faults.reached("switch-shard")

        pending: list[Rows] = []
        checked = False
        bar = Progress(job.progress)
        with executor_for(job.ray_address, job.workers) as ex:
            tok_key = (str(tok_path.resolve()), info.sha256)
            table_h = ex.put(table)
            batches = _checked(_document_batches(job.corpus, job.text_column, DOC_BATCH, stream.next_doc), segmenter)
            args = ((texts, first, tok_key, table_h, job.config, segmenter) for texts, first in batches)
            for result in bar.iterate_bytes(_ordered(ex, switch_task, args), "switch", job.corpus, unit="batch"):
                pending.append(packer.add(result))
                stream.add(result, packer.position)
                if not checked:  # a hopeless run stops on its first batch, before any shard is written
                    check_coverage(stream.totals, job.allow_low_coverage, job.corpus[0])
                    checked = True
                _flush(pending, work.path, len(shards), job.shard_rows, finished, final=False)
        if stream.totals["documents"] == 0:
            raise InputError("empty corpus: no non-blank document", job.corpus[0])
        check_coverage(stream.totals, job.allow_low_coverage, job.corpus[0])
        pending.append(packer.finish())
        last_shards: list[dict[str, Any]] = []  # journaled with "done": a half-recorded end is done again
        _flush(pending, work.path, len(shards), job.shard_rows, last_shards.append, final=True)
        done = {"done": {"totals": stream.totals, "padding": packer.padding, "shards": last_shards}}
        work.record(done)
    shards += done["done"]["shards"]
    end = done["done"]
    manifest = _manifest(job, info, specials, lex, end["totals"], shards, packer.row_tokens, end["padding"])
    manifest["segmenter"] = asdict(segmenter)
    manifest["job_fingerprint"] = job_fingerprint
    _commit(job, work, shards, manifest)
    return manifest


def _zero_totals(n_languages: int) -> dict[str, Any]:
    return {**dict.fromkeys(TOTALS, 0), "lang_with_entry": [0] * n_languages, "lang_switched": [0] * n_languages}


def _with_languages(totals: dict[str, Any], n_languages: int) -> dict[str, Any]:
    """Totals with the per-language counts (a journal written before they existed lacks them: with one language
    they are the words with an entry and the words switched)."""
    out = dict(totals)
    out.setdefault("words_unswitchable", 0)
    if "lang_switched" not in out:
        one = n_languages == 1
        out["lang_with_entry"] = [out["words_with_entry"] if one else 0] * n_languages
        out["lang_switched"] = [out["words_switched"] if one else 0] * n_languages
    return out


def _commit(job: SwitchJob, work: WorkDir, shards: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    """Move the shards, the dataset card and the manifest (last) into place; safe to run again after a kill.

    The manifest and the card are written into the work directory first, so that the moves need no space.
    """
    if work.last("commit") is None:
        write_dataset_card(work.path, manifest)
        write_manifest(work.path, manifest)
        work.record({"commit": True})
    ours = {entry["file"] for entry in shards}
    if job.overwrite:  # another run's manifest and shards go (ours may be there already, from a killed commit)
        for p in job.output.iterdir():
            if p.name == MANIFEST or (p.name.startswith("shard-") and p.suffix == ".arrow" and p.name not in ours):
                os.unlink(p)
    for entry in shards:
        source = work.path / entry["file"]
        if source.exists():
            os.replace(source, job.output / entry["file"])
            faults.reached("switch-commit")
    card = work.path / CARD
    if card.exists():
        if card_is_ours(job.output / CARD):
            os.replace(card, job.output / CARD)
        else:  # the user's own README.md stays
            card.unlink()
    if (work.path / MANIFEST).exists():
        os.replace(work.path / MANIFEST, job.output / MANIFEST)
    remove_temporaries(job.output / n for n in [MANIFEST, CARD, *ours])


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


def _flush(
    pending: list[Rows],
    directory: Path,
    first: int,
    shard_rows: int,
    finished: Callable[[dict[str, Any]], None],
    final: bool,
) -> None:
    """Write every full shard of the pending rows (and, when final, the rest), numbered from ``first``;
    ``finished`` gets each one's manifest entry once it is written."""
    rows = _concat(pending)
    pending.clear()
    start = 0
    while len(rows) - start >= shard_rows or (final and len(rows) > start):
        stop = min(start + shard_rows, len(rows))
        finished(write_shard(directory / shard_name(first), rows.slice(start, stop)))
        first += 1
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


def _lexicon_record(job: SwitchJob, lex: SwitchLexicon) -> dict[str, Any]:
    """The manifest's ``lexicon``: as it always was for one file (path, sha256, rows, languages); for several, the
    same keys with a list of paths and of sha256s, and the rows of all."""
    paths = job.lexicons
    record: dict[str, Any] = {
        "path": str(paths[0].resolve()),
        "sha256": file_sha256(paths[0]),
        "entries": lex.rows.height,
        "src_lang": lex.src_lang,
        "tgt_lang": lex.metadata[0].get("tgt_lang"),
    }
    if len(paths) > 1:
        record.update(path=[str(p.resolve()) for p in paths], sha256=[file_sha256(p) for p in paths], tgt_lang=None)
    record["tgt_langs"] = list(lex.weights)
    return record


def _languages(lex: SwitchLexicon, totals: dict[str, Any]) -> dict[str, Any]:
    """Per target language: its weight, the words with a translation in it, the words switched into it and their
    share of all words with an entry."""
    totals = _with_languages(totals, len(lex.weights))
    with_entry = totals["words_with_entry"]
    return {
        lang: {
            "weight": weight,
            "words_with_entry": totals["lang_with_entry"][k],
            "words_switched": totals["lang_switched"][k],
            "rate_over_words_with_entry": totals["lang_switched"][k] / with_entry if with_entry else 0.0,
        }
        for k, (lang, weight) in enumerate(lex.weights.items())
    }


def _manifest(job, info, specials: SpecialTokens, lex: SwitchLexicon, totals, shards, row_tokens, padding):
    tokens = sum(s["tokens"] for s in shards)
    with_entry = totals["words_with_entry"]
    languages = _languages(lex, totals)
    totals = {k: totals[k] for k in TOTALS}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": "arrow-ipc-stream",
        "tool": "prealign-data",
        "version": __version__,
        "tokenizer": {"path": str(tokenizer_file(job.tokenizer).resolve()), **info.to_dict(), **specials.record()},
        "lexicon": _lexicon_record(job, lex),
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
        "row_tokens": row_tokens,
        "totals": {
            **totals,
            "tokens": tokens,
            "padding_tokens": padding,
            "rows": sum(s["rows"] for s in shards),
        },
        "rates": {
            "switched_per_word_with_entry": totals["words_switched"] / with_entry if with_entry else 0.0,
            "switched_per_word": totals["words_switched"] / totals["words"] if totals["words"] else 0.0,
        },
        "languages": languages,
        "allow_low_coverage": job.allow_low_coverage,
        "coverage_warning": coverage_problem(totals),
        "shards": shards,
    }
