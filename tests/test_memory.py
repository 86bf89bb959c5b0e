"""Streaming: the driver's memory stays flat as the input grows, and the file stages give exactly what the
whole-corpus functions give (dedup decisions, word ids, the sentences of each chunk, pair counts merged over
chunks, the EM's M-step split in shards, links written part by part)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import LONG_EN, LONG_FR, psutil_module

from prealign.demo import write_corpus
from prealign.lexicon import clean
from prealign.lexicon.corpus import read_parallel
from prealign.lexicon.em import BuiltinConfig, SentenceArrays
from prealign.lexicon.encode import EncodedCorpus, encode_corpus
from prealign.lexicon.spans import find_spans
from prealign.lexicon.symmetrize import link_keys, symmetrize
from prealign.pipelines import corpus_stages, em_stage
from prealign.pipelines.corpus_stages import CorpusFiles, build_corpus
from prealign.pipelines.count_stage import (
    chunk_links,
    count_task,
    merge_counts,
    phrase_counts,
    word_pair_counts,
    write_links,
)
from prealign.pipelines.encode_stage import chunk_file, read_chunk, read_sentences
from prealign.pipelines.executor import LocalExecutor
from prealign.pipelines.progress import Progress
from prealign.pipelines.stages import StageRunner
from prealign.text import Segmenter, SegmenterConfig

EN, FR = SegmenterConfig(apostrophe="next"), SegmenterConfig(apostrophe="previous")

# the CLI with the corpus stages' READ_BATCH (input pairs per prepare task) from argv[1] and the EM's chunks of
# argv[2] sentences: several batches and chunks, full ones, even at 6,000 pairs
RUNNER = """
import inspect, sys
import prealign.pipelines.corpus_stages as corpus_stages
import prealign.pipelines.extract as extract

corpus_stages.READ_BATCH = int(sys.argv.pop(1))
chunk_sentences = int(sys.argv.pop(1))
build = extract.build_corpus

def build_in_small_chunks(*args, **kwargs):
    bound = inspect.signature(build).bind(*args, **kwargs)
    bound.arguments["chunk_sentences"] = chunk_sentences
    return build(*bound.args, **bound.kwargs)

extract.build_corpus = build_in_small_chunks
from prealign.cli import main
sys.argv[0] = "prealign-data"
main()
"""


def peak_memory(args: list[str], env: dict[str, str]) -> tuple[int, int, int]:
    """Run the command line in a child; sample its memory every 10 ms. Returns (peak RSS, peak RSS minus
    shared pages, samples). Shared pages are Ray's object store mapped into the driver, when it runs on Ray
    (Ray's own memory monitor counts a process as RSS - SHR for that reason)."""
    psutil = psutil_module()
    cmd = [sys.executable, "-c", RUNNER, "4096", "2048", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(proc.pid)
    rss = own = samples = 0
    while proc.poll() is None:
        try:
            m = watched.memory_info()
        except psutil.NoSuchProcess:
            break
        rss, own, samples = max(rss, m.rss), max(own, m.rss - m.shared), samples + 1
        time.sleep(0.01)
    _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    return rss, own, samples


def test_job_memory_is_flat_from_1x_to_4x_input(tmp_path: Path) -> None:
    """6,000 then 24,000 pairs in one process (``--workers 0``): every stage's task holds a batch, a shard or
    a chunk, and the driver a list of files and the dropped rows, so that once the chunks are full (2,048
    sentences here) the whole job's memory stops growing with the input. Before streaming (everything
    concatenated in the driver) the driver grew by ~5 KB a pair: some 80 MB here.

    The same check on embedded Ray (``--workers 2``, where the driver only hands out and collects) passes the
    same bound (278 then 281 MiB) but takes some 50 s on 2 CPUs, three times this one: it is left out."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    peaks = {}
    for n in (6000, 24000):
        corpus = write_corpus(tmp_path / f"demo{n}.tsv", n, seed=n)
        out = tmp_path / f"lex{n}.parquet"
        args = ["extract-lexicon", str(corpus), "-o", str(out), "--workers", "0", "-q"]
        args += ["--ibm1-iterations", "1", "--hmm-iterations", "1"]
        peaks[n] = peak_memory(args, env)
        assert peaks[n][2] > 100  # it was watched all along
        assert out.is_file() and not out.with_name(out.name + ".work").exists()
    (_, own1, _), (_, own4, _) = peaks[6000], peaks[24000]
    assert own4 - own1 < 30 << 20, {n: (p[0] >> 20, p[1] >> 20) for n, p in peaks.items()}


# --- the file stages equal the whole-corpus functions ----------------------------------------------------------

CHUNK = 128  # sentences per chunk: chunks that span prepare batches (of 97 pairs) and cut them


def demo_lines(path: Path) -> Path:
    """The demo corpus with planted duplicates and near duplicates (a long pair and three one-word variants)."""
    write_corpus(path, 900, seed=5)
    lines = path.read_text("utf-8").splitlines()
    long_pair = f"{LONG_EN}\t{LONG_FR}"
    variants = [long_pair.replace("grandson", w) for w in ("granddaughter", "nephew", "niece")]
    lines = lines[:300] + [long_pair] + lines[300:600] + variants + [lines[5], lines[700]] + lines[600:]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def built(path: Path, work: Path, cfg: clean.CleanConfig | None) -> CorpusFiles:
    """The corpus stages over ``path`` in this process, in batches of 97 pairs and chunks of ``CHUNK``."""
    work.mkdir(parents=True)
    runner = StageRunner(LocalExecutor(), work, Progress(False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpus_stages, "READ_BATCH", 97)
        return build_corpus(runner, {"pairs": path}, (EN, FR), cfg, None, Progress(False), CHUNK, True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The corpus, its segmented words, and its stage files with cleaning (threshold 0.7) and without."""
    root = tmp_path_factory.mktemp("stream")
    path = demo_lines(root / "demo.tsv")
    batches = list(read_parallel(pairs=path, batch_size=97))
    src = [w for b in batches for w in Segmenter(EN).segment_batch(b.column("src").to_pylist())]
    tgt = [w for b in batches for w in Segmenter(FR).segment_batch(b.column("tgt").to_pylist())]
    cfg = clean.CleanConfig(minhash_threshold=0.7)
    return {
        "src": src,
        "tgt": tgt,
        "cfg": cfg,
        "batches": len(batches),
        "cleaned": built(path, root / "cleaned", cfg),
        "all": built(path, root / "all", None),
    }


def assert_same_corpus(files: CorpusFiles, corpus: EncodedCorpus) -> None:
    """The chunk files hold the corpus's sentences, in order, with its word ids."""
    assert files.n_sentences == corpus.n_sentences and files.n_chunks == -(-corpus.n_sentences // CHUNK)
    loaded = files.load()
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(corpus, name), err_msg=name)
    for side in ("src_vocab", "tgt_vocab"):
        assert getattr(loaded, side).words.to_pylist() == getattr(corpus, side).words.to_pylist()
    for c in range(files.n_chunks):
        got = read_sentences(chunk_file(files.work, c))
        first, stop = c * CHUNK, min((c + 1) * CHUNK, corpus.n_sentences)
        assert got.first == first and got.n_sentences == stop - first
        so, to = corpus.src_offsets, corpus.tgt_offsets
        np.testing.assert_array_equal(got.src_ids, corpus.src_ids[so[first] : so[stop]])
        np.testing.assert_array_equal(got.tgt_ids, corpus.tgt_ids[to[first] : to[stop]])
        np.testing.assert_array_equal(got.src_offsets, so[first : stop + 1] - so[first])
        np.testing.assert_array_equal(got.tgt_offsets, to[first : stop + 1] - to[first])


def test_stages_drop_and_encode_as_the_whole_corpus_functions(demo) -> None:
    """Prepared in batches, deduplicated in shards, encoded per batch and merged: the decisions are those of
    ``clean.drop_reasons`` over the whole corpus and the ids those of ``encode_corpus`` over the kept pairs."""
    src, tgt, cfg = demo["src"], demo["tgt"], demo["cfg"]
    assert demo["batches"] >= 9
    expected = clean.drop_reasons(src, tgt, cfg)
    assert (expected == clean.DUPLICATE).sum() >= 2 and (expected == clean.NEAR_DUPLICATE).sum() >= 2
    files = demo["cleaned"]
    assert files.reasons == clean.reason_counts(expected)
    kept = np.flatnonzero(expected == clean.KEPT).tolist()
    corpus = encode_corpus([src[i] for i in kept], [tgt[i] for i in kept])
    assert 0 < corpus.n_sentences < len(expected)
    assert_same_corpus(files, corpus)


def test_stages_without_cleaning_encode_every_pair(demo) -> None:
    files = demo["all"]
    assert files.reasons["input"] == files.reasons["kept"] == len(demo["src"]) == files.n_sentences
    assert_same_corpus(files, encode_corpus(demo["src"], demo["tgt"]))


def random_links(corpus: EncodedCorpus, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward links (each target word to a source word near the diagonal) and backward links (each source
    word to a target word near it): what two directions of an aligner give, with runs where lengths differ."""
    rng = np.random.default_rng(seed)
    ls, lt = corpus.src_lengths, corpus.tgt_lengths
    out = []
    for many, few in ((lt, ls), (ls, lt)):  # forward: one link per target word; backward: per source word
        sent = np.repeat(np.arange(corpus.n_sentences), many)
        pos = np.arange(len(sent)) - np.repeat(np.cumsum(many) - many, many)
        other = np.clip(pos * few[sent] // np.maximum(many[sent], 1) + rng.integers(-1, 2, len(sent)), 0, None)
        other = np.minimum(other, few[sent] - 1)
        keep = rng.random(len(sent)) < 0.9  # some words left unaligned
        i, j = (other, pos) if many is lt else (pos, other)
        out.append(np.unique(link_keys(sent[keep], i[keep], j[keep])))
    return out[0], out[1]


def named(frame: pl.DataFrame, files: CorpusFiles) -> pl.DataFrame:
    """Word pair counts by id as strings, sorted."""
    src_vocab, tgt_vocab = files.vocab()
    return pl.DataFrame(
        {
            "src": src_vocab.lookup(frame["src_id"].to_numpy()),
            "tgt": tgt_vocab.lookup(frame["tgt_id"].to_numpy()),
            "count": frame["count"],
        }
    ).sort("src", "tgt")


def test_counts_merged_over_chunks_equal_counting_all_links_at_once(demo) -> None:
    """Every chunk's links counted by its own task into files, then merged: the word pairs and phrase pairs
    counted over the whole corpus's links at once."""
    files = demo["cleaned"]
    work, corpus = files.work, files.load()
    fwd, bwd = random_links(corpus, seed=1)
    assert files.n_chunks >= 6
    (work / "count").mkdir(exist_ok=True)
    bounds = np.array([c * CHUNK for c in range(files.n_chunks + 1)], dtype=np.int64) << 32
    for c in range(files.n_chunks):
        sentences = read_sentences(chunk_file(work, c))
        part = [keys[np.searchsorted(keys, bounds[c]) : np.searchsorted(keys, bounds[c + 1])] for keys in (fwd, bwd)]
        count_task(work, c, sentences, (part[0], part[1]), "intersect", max_span=3, joiners=(" ", " "))
    words, phrases = merge_counts(work, files.n_chunks, files.vocab())

    whole = SentenceArrays(corpus.src_ids, corpus.src_offsets, corpus.tgt_ids, corpus.tgt_offsets, 0)
    precise = symmetrize(fwd, bwd, "intersect")
    found = find_spans(precise, symmetrize(fwd, bwd, "grow-diag-final-and"), 3)
    assert len(found) >= 50 and found.replaced.sum() >= 50
    want_words = named(word_pair_counts(whole, precise[~found.replaced]), files)
    want_phrases = phrase_counts(found, whole, files.vocab(), (" ", " ")).sort("src", "tgt")
    assert want_words.height > 500 and want_words["count"].max() > 1 and want_phrases.height >= 20
    assert words.sort("src", "tgt").rows() == want_words.rows()
    assert phrases is not None and phrases.sort("src", "tgt").rows() == want_phrases.rows()
    # every precise link counted once: as a word pair, or in the phrase pair that replaced it
    assert words["count"].sum() == len(precise) - found.replaced.sum() and phrases["count"].sum() == len(found)
    # the chunks' links, in chunk order, are the whole corpus's links
    np.testing.assert_array_equal(np.concatenate(list(chunk_links(work, files.n_chunks))), precise)


def shards(work: Path, it: int) -> list[int]:
    """How many M-step shards each direction had at iteration ``it``."""
    return [len(list(em_stage.iteration_dir(work, it).glob(f"table-{d}-*.npy"))) for d in (0, 1)]


def test_em_shards_give_the_links_of_one_shard(demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The M-step split by state word into several shards per direction (each summing its pairs over every
    chunk) gives the same links, byte for byte, as one shard holding every pair."""
    corpus = demo["cleaned"].load()
    config = BuiltinConfig(ibm1_iterations=2, hmm_iterations=2, chunk_sentences=200)
    work = (tmp_path / "one", tmp_path / "split")
    one = em_stage.align_in_memory(corpus, config, work[0])
    assert shards(work[0], len(config.schedule)) == [1, 1]
    keys = list((work[0] / "encode").glob("chunk-*.keys.npy"))
    assert len(keys) >= 4

    monkeypatch.setattr(em_stage, "SHARD_PAIRS", sum(len(np.load(p)) for p in keys) // 5)
    split = em_stage.align_in_memory(corpus, config, work[1])
    assert min(shards(work[1], len(config.schedule))) >= 3, shards(work[1], len(config.schedule))
    assert len(one[0]) > corpus.n_sentences and len(one[1]) > corpus.n_sentences
    for a, b in zip(one, split, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    # so do the parameters the last iteration left: every chunk's translation table, read from the shards'
    # files, and the shared empty-word and jump tables
    last = len(config.schedule)
    for c in range(len(keys)):
        chunk = read_chunk(work[0], c)
        params = [em_stage.chunk_params(w, last, chunk, c, tuple(shards(w, last)), (0, 0)) for w in work]
        (g0, t0), (g1, t1) = params
        assert len(t0[0]) == len(chunk.pairs) and t0[0].any()
        for a, b in zip((*t0, *g0.t_null, *g0.jump), (*t1, *g1.t_null, *g1.jump), strict=True):
            assert a.tobytes() == b.tobytes()


def test_links_written_part_by_part_equal_the_whole_corpus_file(tmp_path: Path) -> None:
    from prealign.lexicon.links import write_pharaoh
    from prealign.lexicon.symmetrize import sentence_links

    rng = np.random.default_rng(3)
    n = 700  # sentences, some without links, the last ones too
    sent = np.sort(rng.choice(n - 40, size=1500))
    keys = np.unique((sent << 32) | (rng.integers(0, 30, len(sent)) << 16) | rng.integers(0, 30, len(sent)))
    write_pharaoh(sentence_links(keys, n), tmp_path / "whole.txt")
    cuts = np.searchsorted(keys, np.array([0, 100, 101, 350, n], dtype=np.int64) << 32)
    parts = [rng.permutation(keys[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]  # one part empty
    assert write_links(iter(parts), n, tmp_path / "parts.txt") == len(keys)
    assert (tmp_path / "parts.txt").read_bytes() == (tmp_path / "whole.txt").read_bytes()
    assert {p.name for p in tmp_path.iterdir()} == {"whole.txt", "parts.txt"}  # no scratch file left
    with pytest.raises(RuntimeError, match="after sentence"):
        write_links(iter([parts[2], parts[0]]), n, tmp_path / "bad.txt")
    assert not (tmp_path / "bad.txt").exists()
    assert {p.name for p in tmp_path.iterdir()} == {"whole.txt", "parts.txt"}
