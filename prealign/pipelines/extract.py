"""The ``align`` and ``extract-lexicon`` jobs: pure lexicon functions composed over Ray tasks.

Stages: read the input in batches (driver, streaming) -> segment, measure, hash and encode each batch on its
own (parallel tasks) -> exact and near-duplicate removal and the merge into the vocabularies, in input order,
into batch files of a work directory (a stateful worker on the driver's machine;
:mod:`prealign.pipelines.corpus_store`) -> EM over fixed-size sentence chunks (parallel tasks, summed in chunk
order, parameters saved after each iteration) -> decoding and symmetrisation per chunk (parallel tasks) ->
counting aligned word pairs -> scoring -> atomic writes. Nothing is written beside the output until every
input record has been read and checked.

The work directory (``OUTPUT.work``) makes the job resumable: killed at any point and started again with the
same arguments, it skips what its journal records as finished (read batches, the corpus, EM iterations) and
ends with the same bytes as an uninterrupted run. It is removed when the job succeeds, and when the input
turns out to be bad; any other failure leaves it for the next run (:mod:`prealign.pipelines.workdir`).

Before any of that, the job checks where it will write (:func:`prealign.outputs.check_outputs`, the lexicon
format), and whether it ran already: a finished job records its fingerprint and its outputs' sha256, and the
same job run again does nothing (:mod:`prealign.pipelines.job_outputs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prealign import __version__
from prealign.arrays import sorted_unique_counts
from prealign.errors import InputError, disk_full_is_input_error
from prealign.lexicon import clean, lexicon_io
from prealign.lexicon.builtin_aligner import BuiltinConfig
from prealign.lexicon.encode import EncodedCorpus
from prealign.lexicon.executor import Executor
from prealign.lexicon.lexicon_io import write_lexicon
from prealign.lexicon.prepare import prepare_batch
from prealign.lexicon.score import LexiconConfig, score_pairs
from prealign.lexicon.spans import find_spans
from prealign.lexicon.symmetrize import Method, split_keys, symmetrize
from prealign.outputs import check_outputs
from prealign.pipelines import job_outputs
from prealign.pipelines.corpus_store import (
    PairCounts,
    StoredCorpus,
    build_corpus,
    phrase_counts,
    reason_totals,
    summed_pairs,
    work_dir_for,
    write_links,
)
from prealign.pipelines.progress import Progress
from prealign.pipelines.ray_runtime import executor_for
from prealign.pipelines.workdir import WorkDir, file_identity, fingerprint, read_journal
from prealign.text import SegmenterConfig
from prealign.textio import atomic_write_text, remove_temporaries

READ_BATCH = 16384
WORK_NAMES = ("batch-*.npz", "vocabulary.npz", "em-*.npz")  # what the job writes into its work directory
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
        with WorkDir(work_dir_for(output), work_fp, WORK_NAMES).kept_unless_bad_input() as work:
            remove_temporaries(written)
            yield work


def _read_corpus(job: AlignJob, ex: Executor, cfg: clean.CleanConfig | None, work: WorkDir, bar: Progress):
    """The read stage (or what is left of it) into the work directory; the corpus for the aligner."""
    segmenters = (job.src_segmenter, job.tgt_segmenter)
    max_words = job.max_words if cfg is None else None
    return build_corpus(_inputs(job), segmenters, cfg, ex, work, bar, READ_BATCH, prepare_batch, max_words)


def _for_aligner(corpus: StoredCorpus, job: AlignJob) -> Any:
    """What ``_align`` gets: the stored corpus for the built-in aligner (streamed from disk), the whole
    corpus in memory for the other backends (they need every sentence at once)."""
    return corpus if job.backend == "builtin" else corpus.load()


def _symmetrize_chunk(
    links: tuple[np.ndarray, np.ndarray], method: Method, max_span: int = 1
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The chunk's links by ``method``; with ``max_span`` >= 2, also its dense (grow-diag-final-and) links,
    where phrase pairs are looked for (:mod:`prealign.lexicon.spans`)."""
    keys = symmetrize(links[0], links[1], method)
    if max_span < 2:
        return keys
    dense = keys if method == "grow-diag-final-and" else symmetrize(links[0], links[1], "grow-diag-final-and")
    return keys, dense


class Links:
    """The symmetrised link keys of the corpus, one part per chunk in sentence order (the built-in aligner's
    chunks; the other aligners return one part), left where the tasks made them (executor handles) and fetched
    a part at a time, so that the driver never holds them all."""

    def __init__(self, ex: Executor, handles: list[Any]) -> None:
        self.ex, self.handles = ex, handles
        self.total = 0  # how many links, once a pass over the parts has ended

    def parts(self) -> Iterator[np.ndarray]:
        for keys, _ in self.both():
            yield keys

    def both(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Each part's links and its dense links (None unless the links were made with ``max_span`` >= 2)."""
        total = 0
        for handle in self.handles:
            got = self.ex.get([handle])[0]
            keys, dense = got if isinstance(got, tuple) else (got, None)
            total += len(keys)
            yield keys, dense
        self.total = total


def _passing(parts: Iterable[tuple[np.ndarray, Any]], func: Callable[..., None]) -> Iterator[np.ndarray]:
    """The links of ``parts`` ((links, dense links) pairs), each pair handed to ``func`` on its way."""
    for keys, dense in parts:
        func(keys, dense)
        yield keys


def _align(
    corpus: EncodedCorpus | StoredCorpus, job: AlignJob, ex: Executor, bar: Progress, max_span: int = 1
) -> tuple[Links, dict]:
    """The corpus's links, symmetrised (with their dense links too when ``max_span`` >= 2), and the
    aligner's description and stats."""
    from prealign.lexicon.aligners import make_aligner
    from prealign.pipelines.neural_actors import pool_for

    aligner = make_aligner(job.backend, job.aligner, job.backend_options)
    stage = "EM (both directions)" if aligner.name == "builtin" else f"align ({aligner.name})"
    total = aligner.steps(corpus)
    with bar.stage(stage, total=total) as tick:
        out = aligner.align(corpus, ex, pool_for(aligner, ex), progress=lambda _msg: tick())
    handles = ex.map_handles(_symmetrize_chunk, [(h, job.symmetrize, max_span) for h in out.parts])
    links = Links(ex, handles)
    return links, {"name": aligner.name, "config": aligner.describe(), **out.stats}


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
    with executor_for(job.ray_address, job.workers) as ex:
        corpus = _read_corpus(job, ex, None, work, bar)
        links, aligner = _align(_for_aligner(corpus, job), job, ex, bar)
        n_links = write_links(links.parts(), corpus.n_sentences, output)
    return {
        "input": job.data.describe(),
        "pairs": corpus.n_sentences,
        "links": n_links,
        "symmetrize": job.symmetrize,
        "max_words": job.max_words,
        "over_max_words": sum(int(e.get("over_max_words", 0)) for e in work.all("batch")),
        "aligner": aligner,
        "seconds": round(time.perf_counter() - started, 2),
        "output": str(output),
    }


def count_pairs(
    corpus: EncodedCorpus | StoredCorpus,
    keys: np.ndarray,
    dense: np.ndarray | None = None,
    max_span: int = 1,
    joiners: tuple[str, str] = (" ", " "),
) -> pl.DataFrame:
    """Aligned word pairs with how often they were linked: columns src, tgt, count. With ``dense`` links and
    ``max_span`` >= 2, phrase pairs too (:func:`prealign.lexicon.spans.find_spans`), their words joined by
    ``joiners`` (source, target), in place of the links they replace."""
    if isinstance(corpus, StoredCorpus):
        return corpus.count_pairs([keys], None if dense is None else [dense], max_span, joiners)
    phrases = None
    if dense is not None and max_span >= 2:
        found = find_spans(keys, dense, max_span)
        src = (corpus.src_ids, corpus.src_offsets, corpus.src_vocab)
        tgt = (corpus.tgt_ids, corpus.tgt_offsets, corpus.tgt_vocab)
        phrases = phrase_counts(found, 0, src, tgt, joiners) if len(found) else None
        keys = keys[~found.replaced]
    words = _count_words(corpus, keys)
    return words if phrases is None else summed_pairs([words, phrases])


def _count_words(corpus: EncodedCorpus, keys: np.ndarray) -> pl.DataFrame:
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
    timings: dict[str, float] = {}
    with executor_for(job.ray_address, job.workers) as ex:
        t = time.perf_counter()
        corpus = _read_corpus(job, ex, job.clean, work, bar)
        pairs = reason_totals(work)
        timings["read_clean_encode"] = time.perf_counter() - t
        if pairs["kept"] == 0:
            raise InputError("no sentence pair left after cleaning: " + json.dumps(pairs), job.data.describe())
        t = time.perf_counter()
        links, aligner = _align(_for_aligner(corpus, job), job, ex, bar, job.max_span)
        timings["align"] = time.perf_counter() - t
        t = time.perf_counter()
        with bar.stage("score + write"):
            counts = PairCounts(corpus, job.max_span, job.joiners)
            if job.links_output is None:
                for keys, dense in links.both():
                    counts.add(keys, dense)
            else:  # one pass over the links for both (the file gets the precise links only)
                write_links(_passing(links.both(), counts.add), corpus.n_sentences, job.links_output)
            lexicon = score_pairs(counts.frame(), config=job.lexicon)
            stats = {
                "input": job.data.describe(),
                "pairs": pairs,
                "aligned_pairs": corpus.n_sentences,
                "src_vocab": len(corpus.src_vocab),
                "tgt_vocab": len(corpus.tgt_vocab),
                "links": links.total,
                "lexicon_entries": lexicon.height,
                "lexicon_src_words": lexicon["src"].n_unique(),
                "aligner": aligner,
            }
            if job.max_span > 1:  # absent: 1 (so that a run without spans writes what it always wrote)
                stats["max_span"] = job.max_span
                stats.update(_phrase_stats(counts.phrases, lexicon))
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
            timings["score_write"] = time.perf_counter() - t
    stats["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    stats["seconds"]["total"] = round(time.perf_counter() - started, 2)
    stats["job"] = job_outputs.recorded(hashed, run_fp)
    atomic_write_text(stats_path(job.output), json.dumps(stats, indent=2) + "\n")
    return stats
