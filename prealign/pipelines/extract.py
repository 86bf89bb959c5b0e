"""The ``align`` and ``extract-lexicon`` jobs: stages of file-writing tasks over the job's work directory.

Stages (each a list of tasks that read files and write one file each; :mod:`prealign.pipelines.stages`):
prepare, dedup and encode (:mod:`prealign.pipelines.corpus_stages`) -> EM of the built-in aligner over the
chunks (:mod:`prealign.pipelines.em_stage`), or another aligner on the whole corpus -> links and aligned
word pairs counted per chunk (:mod:`prealign.pipelines.count_stage`) -> one polars group-by -> scoring ->
atomic writes. docs/architecture.md lists the files each stage writes. Nothing is written beside the output
until every input record has been read and checked.

The work directory (``OUTPUT.work``) makes the job resumable: killed at any point and started again with the
same arguments, it skips every task whose file exists and ends with the same bytes as an uninterrupted run.
It is removed when the job succeeds, and when the input turns out to be bad; any other failure leaves it for
the next run (:mod:`prealign.pipelines.workdir`).

Before any of that, the job checks where it will write (:func:`prealign.outputs.check_outputs`, the lexicon
format), and whether it ran already: a finished job records its fingerprint and its outputs' sha256, and the
same job run again does nothing (:mod:`prealign.pipelines.job_outputs`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prealign import __version__
from prealign.errors import InputError, disk_full_is_input_error
from prealign.lexicon import clean, lexicon_io
from prealign.lexicon.em import BuiltinConfig, SentenceArrays
from prealign.lexicon.lexicon_io import write_lexicon
from prealign.lexicon.score import LexiconConfig, score_pairs
from prealign.lexicon.symmetrize import Method
from prealign.outputs import check_outputs
from prealign.pipelines import em_stage, job_outputs
from prealign.pipelines.corpus_stages import LEGACY_NAMES, READ_BATCH, WORK_DIRS, CorpusFiles, build_corpus
from prealign.pipelines.count_stage import chunk_links, count_file, count_task, merge_counts, summed_pairs, write_links
from prealign.pipelines.executor import LocalExecutor
from prealign.pipelines.progress import Progress
from prealign.pipelines.stages import StageRunner, StageTimes, Task, read_stats
from prealign.pipelines.workdir import WorkDir, file_identity, fingerprint, read_journal
from prealign.text import SegmenterConfig
from prealign.textio import atomic_write_text, remove_temporaries

ALIGN_MAX_WORDS = 200  # align's default limit on a side's words (the HMM's cost grows with I * J**2 per pair)


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
    backend: str = "builtin"  # the word aligner: builtin, eflomal, simalign, awesome (prealign.lexicon.aligners)
    backend_options: Any = None  # NeuralConfig for simalign/awesome, EflomalConfig (or None) for eflomal
    max_words: int | None = None  # align: a pair with a side longer is left unaligned (extract: clean.max_words)
    overwrite: bool = False  # replace an existing output that another run wrote


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
    max_span: int = 2  # >= 2: a word aligned to a run of up to this many words is one entry (docs/languages.md)

    @property
    def joiners(self) -> tuple[str, str]:
        """What joins the words of a multi-word entry, source and target side."""
        return self.src_segmenter.joiner, self.tgt_segmenter.joiner


def _inputs(job: AlignJob) -> dict[str, Any]:
    d = job.data
    return {"src": d.src, "tgt": d.tgt, "pairs": d.pairs, "src_column": d.src_column, "tgt_column": d.tgt_column}


def _input_files(job: AlignJob) -> list[Path]:
    return [Path(p) for p in (job.data.src, job.data.tgt, job.data.pairs) if p is not None]


def _described(job: AlignJob, cfg: clean.CleanConfig | None) -> dict[str, Any]:
    """The inputs and the options that change the corpus and the alignment (what both fingerprints hold)."""
    files = _input_files(job)
    for path in files:
        if not path.is_file():  # checked here, before a work directory is made for it
            raise InputError("no such file" if not path.exists() else "is a directory, not a file", path)
    described = {
        "inputs": [file_identity(p) for p in files],
        "columns": [job.data.src_column, job.data.tgt_column],
        "segmenters": [asdict(job.src_segmenter), asdict(job.tgt_segmenter)],
        "clean": asdict(cfg) if cfg is not None else None,
        "aligner": [job.backend, asdict(job.aligner), repr(job.backend_options)],
    }
    if cfg is None and job.max_words is not None:
        described["max_words"] = job.max_words
    return described


def _fingerprints(job: AlignJob, cfg: clean.CleanConfig | None, output_options: dict[str, Any]) -> tuple[str, str]:
    """The run's fingerprint (what the outputs depend on: ``output_options`` too, not how the input was cut
    into batches) and the work's (what the work directory holds: the batches too)."""
    described = _described(job, cfg)
    run_fp = fingerprint({**described, **output_options})
    return run_fp, fingerprint({**described, "read_batch": READ_BATCH})


def _before_work(job: AlignJob, outputs: dict[str, Path], hashed: dict[str, Path], record: Path, fps: tuple) -> Any:
    """Checks made before any work: the saved record when this job is done already (``hashed``, the files
    it records, unchanged: nothing to do); else None, once existing ``outputs`` of another run are refused
    (unless ``job.overwrite``). ``fps``: the fingerprints of the run and of its work."""
    run_fp, work_fp = fps
    done = job_outputs.already_done(record, hashed, run_fp)
    if done is not None:
        return done
    work = read_journal(work_dir_for(outputs["-o"]))
    if not (work and work[0].get("fingerprint") == work_fp):  # not this job's own interrupted run
        job_outputs.refuse_existing(outputs, job.overwrite)
    return None


@contextmanager
def _work_session(job: AlignJob, output: Path, work_fp: str, written: list[Path]) -> Iterator[WorkDir]:
    """The job's work directory beside ``output``: removed on success and on bad input, kept otherwise;
    the temporary files a killed write of ``written`` left are removed first."""
    with disk_full_is_input_error(output):
        with WorkDir(work_dir_for(output), work_fp, LEGACY_NAMES, WORK_DIRS).kept_unless_bad_input() as work:
            remove_temporaries(written)
            yield work


def work_dir_for(output: Path) -> Path:
    """Where a job writing ``output`` keeps its work: ``<output>.work`` beside it."""
    return Path(os.fspath(output) + ".work")


SMALL_INPUT = 32 << 20  # bytes of input below which starting Ray costs more than it brings (docs/benchmarks.md)


def choose_executor(job: AlignJob) -> tuple[int | None, str]:
    """The workers to use (0: in this process) and why. An explicit ``--workers`` or ``--ray-address`` is
    obeyed; by default the job runs in this process on a machine of one CPU or on an input under
    ``SMALL_INPUT`` (measured on 2 cores: Tatoeba's 10 MB take 20 s in one process and 35 s on Ray with its
    start; 30 MB break even; 120 MB take 158 s against 111 s), and on embedded Ray with every CPU otherwise."""
    if job.workers is not None or job.ray_address is not None:
        return job.workers, "as asked"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    size = sum(p.stat().st_size for p in _input_files(job))
    if cpus < 2:
        return 0, "1 CPU: Ray would not pay for itself"
    if size < SMALL_INPUT:
        return 0, f"input of {size / 2**20:.0f} MiB, under 32 MiB: Ray would not pay for itself; --workers N to use it"
    return None, f"{cpus} CPUs, input of {size / 2**20:.0f} MiB"


@contextmanager
def _executor(job: AlignJob, bar: Progress) -> Iterator[tuple[Any, str]]:
    """The job's executor, chosen by :func:`choose_executor`, and where it runs, in words (said on stderr
    unless quiet, when the job chose)."""
    from prealign.pipelines.ray_runtime import ray_session

    workers, why = choose_executor(job)
    if workers == 0:
        where = f"this process ({why})"
        if job.progress and why != "as asked":
            print(f"running in {where}", file=sys.stderr)
        yield LocalExecutor(), where
        return
    with ray_session(job.ray_address, workers) as ex:
        where = f"Ray with {ex.workers} worker{'s' if ex.workers > 1 else ''} ({why})"
        if job.progress and why != "as asked":
            print(f"running on {where}", file=sys.stderr)
        yield ex, where


def _corpus(job: AlignJob, runner: StageRunner, cfg: clean.CleanConfig | None, bar: Progress) -> CorpusFiles:
    """The corpus stages (or what is left of them) into the work directory."""
    segmenters = (job.src_segmenter, job.tgt_segmenter)
    max_words = job.max_words if cfg is None else None
    em = job.backend == "builtin"
    return build_corpus(runner, _inputs(job), segmenters, cfg, max_words, bar, job.aligner.chunk_sentences, em)


def _align(corpus: CorpusFiles, job: AlignJob, runner: StageRunner, bar: Progress, count: bool) -> tuple[dict, int]:
    """Align the corpus and leave, per part, its symmetrised links (and with ``count``, its counted word
    pairs) in ``count/``; returns the aligner's description and stats, and the number of parts (the chunks
    for the built-in aligner, one for the others)."""
    from prealign.lexicon.aligners import make_aligner
    from prealign.pipelines.neural_actors import pool_for

    (runner.work / "count").mkdir(exist_ok=True)
    spans = (getattr(job, "max_span", 1), getattr(job, "joiners", (" ", " ")))
    if corpus.n_chunks == 0:  # nothing to align (align on an empty input)
        return {"name": job.backend, "config": asdict(job.aligner) if job.backend == "builtin" else {}}, 0
    if job.backend == "builtin":
        with bar.stage("EM (both directions)", total=len(job.aligner.schedule)) as tick:
            last = em_stage.train(runner, corpus.n_chunks, corpus.sizes, job.aligner, lambda _msg: tick(), corpus.costs)
        args = (last, job.aligner, job.symmetrize, *spans, count)
        tasks = [
            Task(count_file(runner.work, c), em_stage.decode_task, (runner.work, c, *args), corpus.costs[c])
            for c in range(corpus.n_chunks)
        ]
        runner.run("decode_count", tasks, "decode + count")
        return {"name": "builtin", "config": asdict(job.aligner)}, corpus.n_chunks
    aligner = make_aligner(job.backend, job.backend_options)
    whole = corpus.load()
    started = time.perf_counter()
    with bar.stage(f"align ({aligner.name})", total=aligner.steps(whole)) as tick:
        out = aligner.align(whole, pool_for(aligner, runner.ex), progress=lambda _msg: tick())
    runner.times.add("align", time.perf_counter() - started)
    links = tuple(np.concatenate([p[d] for p in out.parts] or [np.zeros(0, np.int64)]) for d in (0, 1))
    sentences = SentenceArrays(whole.src_ids, whole.src_offsets, whole.tgt_ids, whole.tgt_offsets)
    task = Task(
        count_file(runner.work, 0), count_task, (runner.work, 0, sentences, links, job.symmetrize, *spans, count)
    )
    runner.run_one("count", task)
    return {"name": aligner.name, "config": aligner.describe(), **out.stats}, 1


def align(job: AlignJob, output: Path) -> dict[str, Any]:
    """Write Pharaoh links, one line per input pair, in input order, and their record ``OUT.stats.json``;
    returns a summary (the saved one, with ``already_done``, when this very job wrote them already)."""
    output = Path(output)
    record = stats_path(output)
    check_outputs(_input_files(job), {"-o": output, "the record (-o's .stats.json)": record})
    run_fp, work_fp = _fingerprints(job, None, {"symmetrize": job.symmetrize, "max_words": job.max_words})
    done = _before_work(job, {"-o": output}, {"-o": output}, record, (run_fp, work_fp))
    if done is not None:
        return {**done, "already_done": True}
    with _work_session(job, output, work_fp, [output, record]) as work:
        summary = _align_job(job, output, work)
        summary["job"] = job_outputs.recorded({"-o": output}, run_fp)
        atomic_write_text(record, json.dumps(summary, indent=2) + "\n")
    return summary


def _align_job(job: AlignJob, output: Path, work: WorkDir) -> dict[str, Any]:
    bar = Progress(job.progress)
    started = time.perf_counter()
    with _executor(job, bar) as (ex, where):
        runner = StageRunner(ex, work.path, bar)
        corpus = _corpus(job, runner, None, bar)
        aligner, parts = _align(corpus, job, runner, bar, count=False)
        n_links = write_links(chunk_links(work.path, parts), corpus.n_sentences, output)
    return {
        "input": job.data.describe(),
        "pairs": corpus.n_sentences,
        "links": n_links,
        "symmetrize": job.symmetrize,
        "max_words": job.max_words,
        "over_max_words": corpus.over_max_words,
        "aligner": aligner,
        "ran_on": where,
        "seconds": round(time.perf_counter() - started, 2),
        "output": str(output),
    }


def _phrase_stats(phrases: pl.DataFrame | None, lexicon: pl.DataFrame) -> dict[str, int]:
    """How many phrase pairs were linked, how many distinct, and how many lexicon entries are phrase pairs."""
    if phrases is None:
        return {"phrase_links": 0, "phrase_pairs": 0, "phrase_entries": 0}
    entries = lexicon.join(phrases.select("src", "tgt"), on=["src", "tgt"], how="semi").height
    return {"phrase_links": int(phrases["count"].sum()), "phrase_pairs": phrases.height, "phrase_entries": entries}


def stats_path(output: Path) -> Path:
    """Where the stats JSON of a lexicon goes: beside it, ``<name>.stats.json``."""
    return output.with_name(output.name + ".stats.json")


def _extract_outputs(job: ExtractJob) -> dict[str, Path]:
    """The files the job writes, by option name (the lexicon, its links, a text lexicon's metadata)."""
    outputs = {"-o": Path(job.output)}
    if job.links_output is not None:
        outputs["--links"] = Path(job.links_output)
    if lexicon_io.check_write_format(job.output) != ".parquet":
        outputs["the metadata (-o's .meta.json)"] = lexicon_io.metadata_path(job.output)
    return outputs


def extract_lexicon(job: ExtractJob) -> dict[str, Any]:
    """Run the whole extraction; writes the lexicon and its stats JSON, returns the stats (the saved ones,
    with ``already_done``, when this very job wrote the lexicon already)."""
    outputs = _extract_outputs(job)
    record = stats_path(job.output)
    check_outputs(_input_files(job), {**outputs, "the stats (-o's .stats.json)": record})
    described = {"symmetrize": job.symmetrize, "lexicon": asdict(job.lexicon), "langs": [job.src_lang, job.tgt_lang]}
    if job.max_span > 1:  # absent: 1, the fingerprint of a run without spans stays what it was
        described["max_span"] = job.max_span
    run_fp, work_fp = _fingerprints(job, job.clean, {"links": job.links_output is not None, **described})
    hashed = {name: outputs[name] for name in ("-o", "--links") if name in outputs}
    done = _before_work(job, outputs, hashed, record, (run_fp, work_fp))
    if done is not None:
        return {**done, "already_done": True}
    with _work_session(job, job.output, work_fp, [*outputs.values(), record]) as work:
        return _extract(job, work, hashed, run_fp)


def _extract(job: ExtractJob, work: WorkDir, hashed: dict[str, Path], run_fp: str) -> dict[str, Any]:
    bar = Progress(job.progress)
    started = time.perf_counter()
    times = StageTimes()
    with _executor(job, bar) as (ex, where):
        runner = StageRunner(ex, work.path, bar, times)
        corpus = _corpus(job, runner, job.clean, bar)
        pairs = corpus.reasons
        if pairs["kept"] == 0:
            raise InputError("no sentence pair left after cleaning: " + json.dumps(pairs), job.data.describe())
        aligner, parts = _align(corpus, job, runner, bar, count=True)
        t = time.perf_counter()
        with bar.stage("merge + score + write"):
            n_links = sum(int(s["links"]) for s in (read_stats(count_file(work.path, c)) for c in range(parts)))
            if job.links_output is not None:
                write_links(chunk_links(work.path, parts), corpus.n_sentences, job.links_output)
            vocab = corpus.vocab()
            words, phrases = merge_counts(work.path, parts, vocab)
            lexicon = score_pairs(words if phrases is None else summed_pairs([words, phrases]), config=job.lexicon)
            stats = {
                "input": job.data.describe(),
                "pairs": pairs,
                "aligned_pairs": corpus.n_sentences,
                "src_vocab": len(vocab[0]),
                "tgt_vocab": len(vocab[1]),
                "links": n_links,
                "lexicon_entries": lexicon.height,
                "lexicon_src_words": lexicon["src"].n_unique(),
                "aligner": aligner,
                "ran_on": where,
            }
            if job.max_span > 1:  # absent: 1 (so that a run without spans writes what it always wrote)
                stats["max_span"] = job.max_span
                stats.update(_phrase_stats(phrases, lexicon))
            metadata = {
                "tool": "prealign-data",
                "version": __version__,
                "src_lang": job.src_lang,
                "tgt_lang": job.tgt_lang,
                "src_segmenter": asdict(job.src_segmenter),  # what switch segments documents with
                "tgt_segmenter": asdict(job.tgt_segmenter),
                "aligner": aligner["name"],
                "aligner_config": aligner["config"],
                "symmetrize": job.symmetrize,
                "clean": asdict(job.clean),
                "lexicon_filters": asdict(job.lexicon),
                "corpus_pairs": stats["pairs"]["input"],
                "aligned_pairs": corpus.n_sentences,
            }
            if job.max_span > 1:
                metadata["max_span"] = job.max_span
            write_lexicon(lexicon, job.output, metadata)
        times.add("merge_score_write", time.perf_counter() - t)
    stats["seconds"] = {**times.seconds, "total": round(time.perf_counter() - started, 2)}
    stats["memory_mib"] = times.memory_mib  # this process's peak resident memory at the end of each stage
    stats["work_dir_mib"] = times.disk_mib  # the work directory's size at the end of each stage
    stats["job"] = job_outputs.recorded(hashed, run_fp)
    atomic_write_text(stats_path(job.output), json.dumps(stats, indent=2) + "\n")
    return stats
