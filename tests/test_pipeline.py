"""The extract-lexicon and align jobs end to end, in process: determinism across executors, record accounting,
the lexicon's schema and metadata, and the embedded Ray's loopback binding."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import LONG_EN, LONG_FR

import prealign
from prealign.errors import InputError
from prealign.lexicon.clean import DROP_REASONS, CleanConfig
from prealign.lexicon.em import BuiltinConfig
from prealign.lexicon.lexicon_io import read_lexicon
from prealign.lexicon.links import read_pharaoh
from prealign.pipelines import corpus_stages, em_stage
from prealign.pipelines.extract import AlignJob, ExtractJob, ParallelInput, align, extract_lexicon, stats_path
from prealign.pipelines.stages import StageRunner
from prealign.text import Segmenter, SegmenterConfig

EN = SegmenterConfig(apostrophe="next")
FR = SegmenterConfig(apostrophe="previous")
SMALL_EM = BuiltinConfig(chunk_sentences=150, ibm1_iterations=2, hmm_iterations=2)


def extract_job(corpus: Path, out: Path, workers: int, **kw) -> ExtractJob:
    return ExtractJob(
        data=ParallelInput(pairs=corpus),
        src_segmenter=EN,
        tgt_segmenter=FR,
        output=out,
        src_lang="en",
        tgt_lang="fr",
        workers=workers,
        progress=False,
        **kw,
    )


def stage_tasks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """From now on, the outputs of every stage's tasks (work-relative paths), per run of the stage: recorded
    where the driver lists the tasks, so for any executor."""
    seen: dict[str, list[list[str]]] = {}
    real = StageRunner.run

    def run(self: StageRunner, name: str, tasks, desc: str | None = ""):
        outputs: list[str] = []

        def listed():
            for task in tasks:
                outputs.append(str(task.output.relative_to(self.work)))
                yield task

        try:
            return real(self, name, listed(), desc)
        finally:
            seen.setdefault(name, []).append(outputs)

    monkeypatch.setattr(StageRunner, "run", run)
    return seen


def check_accounting(pairs: dict[str, int]) -> None:
    assert set(pairs) == {"input", "kept", *DROP_REASONS}
    assert pairs["input"] == pairs["kept"] + sum(pairs[r] for r in DROP_REASONS)


# --- Ray on loopback ---------------------------------------------------------------------------------------

PROBE = """
import json, sys
import ray  # a user's program that imported Ray before calling the pipeline
from ray._private import services
from prealign.pipelines.ray_runtime import ray_session

def init(*args, **kwargs):  # stands in for ray.init: what would the node bind to now?
    print(json.dumps({"ip": services.get_node_ip_address(), "address": kwargs.get("address")}))
    sys.exit(0)

ray.init = init
with ray_session(None, 1):
    pass
sys.exit(3)
"""


def test_embedded_ray_is_loopback_even_if_ray_was_imported_first() -> None:
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported: setting the variable later is not
    # enough, and Ray would bind to the machine's network address. Probe where Ray would bind, without
    # starting it, in a fresh interpreter whose environment lacks the variable.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"ip": "127.0.0.1", "address": "local"}


def test_ray_session_reuses_the_running_ray(ray_local) -> None:
    import ray

    from prealign.pipelines.ray_runtime import ray_session

    node = ray._private.worker.global_worker.node.unique_id
    with ray_session(None, 1) as ex:
        assert ex.workers == 1
        assert ex.map(lambda a, b: divmod(a, b), [(7, 2), (9, 4)]) == [(3, 1), (2, 1)]
        assert ray._private.worker.global_worker.node.unique_id == node
    assert ray.is_initialized()  # it did not start Ray, so it does not stop it


# --- determinism -------------------------------------------------------------------------------------------


def small_stages(monkeypatch: pytest.MonkeyPatch, read_batch: int) -> None:
    """Stages of many tasks on the demo corpus: read batches of ``read_batch`` pairs, several exact and near
    dedup shards (the driver cuts them, so this holds on Ray too)."""
    monkeypatch.setattr(corpus_stages, "READ_BATCH", read_batch)
    monkeypatch.setattr(corpus_stages, "SHARD_ROWS", 500)


SMALL_SHARDS = 4000  # M-step shards of about 4000 chunk pairs: 3 a direction on the demo corpus's 4 chunks
STAGES = {"prepare", "dedup_exact", "dedup_near", "dedup_resolve", "encode_batches", "encode_vocab",
          "encode_chunks", "em_plan", "em_estep", "em_mstep", "decode_count"}  # fmt: skip


def test_same_bytes_for_any_number_of_workers(ray_local, demo_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    # in process with the default M-step shards (one a direction here) and with small ones, and on the embedded
    # Ray with one and two workers: the same lexicon, links and stats; every stage of several tasks
    outputs: dict[str, tuple[bytes, bytes, dict]] = {}
    tasks: dict[str, dict[str, list[list[str]]]] = {}
    for run, workers, shard_pairs in (("default", 0, None), ("w0", 0, SMALL_SHARDS), ("w1", 1, SMALL_SHARDS),
                                      ("w2", 2, SMALL_SHARDS)):  # fmt: skip
        out = tmp_path / run / "lexicon.parquet"
        out.parent.mkdir()
        links = out.with_name("links.txt")
        job = extract_job(demo_corpus, out, workers, aligner=SMALL_EM, links_output=links)
        with monkeypatch.context() as m:
            if shard_pairs is not None:  # "default": one read batch, one dedup shard of each kind too
                small_stages(m, 128)
                m.setattr(em_stage, "SHARD_PAIRS", shard_pairs)
            tasks[run] = stage_tasks(m)
            stats = extract_lexicon(job)
        saved = json.loads(stats_path(out).read_text())
        assert saved["pairs"] == stats["pairs"]
        assert set(saved["seconds"]) == STAGES | {"merge_score_write", "total"}
        assert set(saved["memory_mib"]) == STAGES | {"merge_score_write"}
        assert not out.with_name("lexicon.parquet.work").exists()
        for key in ("seconds", "memory_mib", "job"):  # times, memory, the record of the outputs' sha256
            del saved[key]
        ran_on = saved.pop("ran_on", None)  # where it ran, in words
        assert ran_on is None or ran_on.startswith("this process" if workers == 0 else f"Ray with {workers} worker")
        saved.pop("work_dir_mib", None)  # what the work directory held at the end of each stage
        outputs[run] = (out.read_bytes(), links.read_bytes(), saved)

    lexicon, links, stats = outputs["default"]
    assert stats["lexicon_entries"] > 50 and stats["links"] > 1000
    for run in ("w0", "w1", "w2"):
        assert outputs[run][0] == lexicon, f"lexicon differs in run {run}"
        assert outputs[run][1] == links, f"links differ in run {run}"
        assert outputs[run][2] == stats, f"stats differ in run {run}"

    def sizes(run: str) -> dict[str, list[int]]:
        return {name: [len(listed) for listed in runs] for name, runs in tasks[run].items()}

    chunks = math.ceil(stats["aligned_pairs"] / 150)
    iterations = len(SMALL_EM.schedule)
    assert chunks == 4 and iterations == 4
    assert tasks["default"]["em_plan"] == [["em/plan-0-000.npz", "em/plan-1-000.npz"]]
    assert sizes("default")["prepare"] == sizes("default")["dedup_near"] == [1]
    plans = tasks["w0"]["em_plan"][0]
    assert [p for p in plans if p.startswith("em/plan-0")] == [f"em/plan-0-{s:03d}.npz" for s in range(3)]
    assert [p for p in plans if p.startswith("em/plan-1")] == [f"em/plan-1-{s:03d}.npz" for s in range(3)]
    assert sizes("w0") == {
        "prepare": [5],  # 600 pairs in batches of 128
        "dedup_exact": [2],  # 600 exact keys in shards of 500
        "dedup_near": [11],  # 600 pairs x 9 band tokens
        "dedup_resolve": [1],
        "encode_batches": [5],
        "encode_vocab": [1],
        "encode_chunks": [chunks],
        "em_plan": [6],
        "em_estep": [chunks] * iterations,
        "em_mstep": [6] * iterations,
        "decode_count": [chunks],
    }
    assert tasks["w1"] == tasks["w2"] == tasks["w0"]  # the same tasks, whoever runs them


def test_align_same_bytes_in_process_and_on_ray(ray_local, demo_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    small_stages(monkeypatch, 200)
    monkeypatch.setattr(em_stage, "SHARD_PAIRS", SMALL_SHARDS)
    texts = {}
    for workers in (0, 2):
        job = AlignJob(ParallelInput(pairs=demo_corpus), EN, FR, SMALL_EM, workers=workers, progress=False)
        summary = align(job, tmp_path / f"links{workers}.txt")
        assert summary["pairs"] == 600  # align does not clean: the corpus has one duplicate pair
        texts[workers] = (tmp_path / f"links{workers}.txt").read_bytes()
    assert texts[0] == texts[2]
    assert texts[0].count(b"\n") == 600


# --- accounting --------------------------------------------------------------------------------------------


def planted_lines(base: list[tuple[str, str]]) -> tuple[list[str], dict[str, int]]:
    """Lines to append to ``base`` and how many of each outcome they add."""
    long_src = " ".join(f"word{i}" for i in range(90))
    lines = [
        f"{base[5][0]}\t{base[5][1]}",  # duplicate
        f"{base[17][0]}\t{base[17][1]}",  # duplicate
        f"{base[5][0].upper()}\t  {base[5][1].upper()} ",  # duplicate once lowercased and segmented
        "",  # empty
        "Hello.\t",  # empty target side
        "...\t!!! ?",  # no word on either side: empty
        "Yes\tOui",  # too short (min_words=2)
        f"{long_src}\t{' '.join(long_src.split()[:10])}",  # too long, also a bad ratio: the first check wins
        f"{long_src}\t{' '.join(long_src.split()[:10])}",  # again: too long, not a duplicate of a dropped pair
        "Yes .\tOui , oui , oui , oui , oui , oui .",  # length ratio 13:2
        f"{LONG_EN}\t{LONG_FR}",  # kept
        f"{LONG_EN.replace('grandson', 'granddaughter')}\t{LONG_FR}",  # near duplicate of the line above
    ]
    added = {"empty": 3, "too_short": 1, "too_long": 2, "length_ratio": 1, "duplicate": 3, "near_duplicate": 1}
    added["kept"] = 1
    added["input"] = len(lines)
    return lines, added


def test_every_input_record_is_accounted_for(demo_pairs: list[tuple[str, str]], tmp_path: Path) -> None:
    base = demo_pairs[:200]
    base_lines = [f"{s}\t{t}" for s, t in base]
    cleaning = CleanConfig(min_words=2)
    (tmp_path / "base.tsv").write_text("\n".join(base_lines) + "\n", encoding="utf-8")
    before = extract_lexicon(extract_job(tmp_path / "base.tsv", tmp_path / "base.parquet", 0, clean=cleaning))
    check_accounting(before["pairs"])
    assert before["pairs"]["input"] == 200

    extra, added = planted_lines(base)
    corpus = tmp_path / "planted.tsv"
    corpus.write_text("\n".join(base_lines + extra) + "\n", encoding="utf-8")
    links = tmp_path / "links.txt"
    job = extract_job(corpus, tmp_path / "planted.parquet", 0, clean=cleaning, links_output=links)
    stats = extract_lexicon(job)
    pairs = stats["pairs"]
    check_accounting(pairs)
    assert pairs == {r: before["pairs"][r] + added.get(r, 0) for r in before["pairs"]}
    assert json.loads(stats_path(job.output).read_text())["pairs"] == pairs
    assert stats["aligned_pairs"] == pairs["kept"]

    # one links line per kept pair, in input order: every link falls inside its own pair's sentences
    kept_pairs = base + [(LONG_EN, LONG_FR)]
    kept_pairs = list(dict.fromkeys(kept_pairs))  # the demo's own duplicates are dropped too
    assert len(kept_pairs) == pairs["kept"]
    src = Segmenter(EN).segment_batch([s for s, _ in kept_pairs])
    tgt = Segmenter(FR).segment_batch([t for _, t in kept_pairs])
    sentences = read_pharaoh(links)
    assert len(sentences) == pairs["kept"]
    for n, (ln, s, t) in enumerate(zip(sentences, src, tgt, strict=True)):
        assert len(ln) > 0, n
        assert ln[:, 0].max() < len(s) and ln[:, 1].max() < len(t), (n, ln, s, t)
    assert len(sentences[-1]) >= 20  # the long pair, last kept, has links all along


def test_nothing_written_when_cleaning_leaves_no_pair(tmp_path: Path) -> None:
    corpus = tmp_path / "c.tsv"
    corpus.write_text("Yes\tOui\n\t\nNo\tNon\n", encoding="utf-8")
    out = tmp_path / "out" / "lexicon.parquet"
    out.parent.mkdir()
    job = extract_job(corpus, out, 0, clean=CleanConfig(min_words=2), links_output=out.with_name("links.txt"))
    with pytest.raises(InputError, match=r'"too_short": 2') as info:
        extract_lexicon(job)
    assert '"empty": 1' in str(info.value) and str(corpus) in str(info.value)
    assert list(out.parent.iterdir()) == []


# --- the lexicon file --------------------------------------------------------------------------------------


def test_lexicon_columns_dtypes_and_metadata(demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lexicon.parquet"
    stats = extract_lexicon(extract_job(demo_corpus, out, 0, links_output=tmp_path / "links.txt"))

    table = pq.read_table(out)
    schema = table.schema
    assert schema.names == ["src", "tgt", "count", "p_tgt_given_src", "p_src_given_tgt", "score"]
    for name in ("src", "tgt"):
        assert pa.types.is_string(schema.field(name).type) or pa.types.is_large_string(schema.field(name).type)
    assert schema.field("count").type == pa.int64()
    for name in ("p_tgt_given_src", "p_src_given_tgt", "score"):
        assert schema.field(name).type == pa.float32()

    meta = json.loads(schema.metadata[b"prealign"])
    assert meta["src_lang"] == "en" and meta["tgt_lang"] == "fr"
    assert meta["aligner"] == "builtin" and meta["aligner_config"]["ibm1_iterations"] == 5
    assert meta["version"] == prealign.__version__ and meta["tool"] == "prealign-data"
    assert meta["corpus_pairs"] == 600 == stats["pairs"]["input"]
    assert meta["aligned_pairs"] == stats["pairs"]["kept"] == stats["aligned_pairs"]

    lex, meta_read = read_lexicon(out)
    assert meta_read == meta
    assert lex.height == stats["lexicon_entries"] and lex["src"].n_unique() == stats["lexicon_src_words"]
    assert lex.select(["src", "tgt"]).is_duplicated().sum() == 0
    assert lex["count"].min() >= 2  # default --min-count
    assert lex["p_tgt_given_src"].min() >= 0.01  # default --min-prob
    totals = lex.group_by("src").agg(pl.col("p_tgt_given_src").sum())
    assert totals["p_tgt_given_src"].max() <= 1.0 + 1e-5
    # default score: Wilson lower bound of p(tgt|src) over the source word's links (count / p(tgt|src))
    p = lex["p_tgt_given_src"].to_numpy().astype(np.float64)
    n = np.round(lex["count"].to_numpy() / p)
    z = 1.959964
    expected_score = (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    np.testing.assert_allclose(lex["score"].to_numpy(), expected_score, rtol=1e-4)
    best = dict(lex.sort("score", descending=True).unique("src", keep="first").select("src", "tgt").iter_rows())
    assert best["cat"] == "chat" and best["house"] == "maison" and best["sees"] == "voit"

    assert len(read_pharaoh(tmp_path / "links.txt")) == stats["pairs"]["kept"]


# --- where the job runs by default ---------------------------------------------------------------------------


def test_the_default_runs_in_this_process_where_ray_would_not_pay(tmp_path: Path, monkeypatch) -> None:
    """No --workers, no --ray-address: one CPU or a small input runs in this process (and the job says why); a
    large input on several CPUs gets Ray with every CPU; an explicit choice is obeyed as given."""
    from prealign.pipelines import extract

    small = tmp_path / "small.tsv"
    small.write_text("a b\tc d\n" * 10, encoding="utf-8")
    job = AlignJob(ParallelInput(pairs=small))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    workers, why = extract.choose_executor(job)
    assert workers == 0 and "under 32 MiB" in why and "--workers N" in why
    monkeypatch.setattr(extract, "SMALL_INPUT", small.stat().st_size)  # the file is now as large as the limit
    assert extract.choose_executor(job) == (None, "4 CPUs, input of 0 MiB")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert extract.choose_executor(job) == (0, "1 CPU: Ray would not pay for itself")
    assert extract.choose_executor(AlignJob(ParallelInput(pairs=small), workers=2)) == (2, "as asked")
    assert extract.choose_executor(AlignJob(ParallelInput(pairs=small), ray_address="auto")) == (None, "as asked")


def test_the_cli_says_where_the_default_ran(demo_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lex.parquet"
    env = {**os.environ, "PYTHONPATH": str(Path(prealign.__file__).parents[1])}
    command = [sys.executable, "-m", "prealign.cli", "extract-lexicon", str(demo_corpus), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "running in this process (input of 0 MiB, under 32 MiB: Ray would not pay" in done.stderr
    assert "in this process (input of 0 MiB" in done.stdout  # the summary's time line
    assert json.loads(stats_path(out).read_text("utf-8"))["ran_on"].startswith("this process (input of 0 MiB")
