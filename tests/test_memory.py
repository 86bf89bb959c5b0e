"""Streaming: the driver's memory stays flat as the input grows, and the streamed stages give exactly what the
whole-corpus functions give (dedup decisions, word and pair ids, the corpus ranges the EM reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import psutil_module
from test_pipeline import LONG_EN, LONG_FR
from test_resume import RUNNER

from prealign.demo import write_corpus
from prealign.lexicon import clean
from prealign.lexicon.builtin_aligner import sentence_range
from prealign.lexicon.encode import encode_corpus
from prealign.lexicon.incremental import StreamDeduplicator, StreamEncoder
from prealign.lexicon.prepare import concatenate, prepare_batch
from prealign.lexicon.symmetrize import link_keys
from prealign.pipelines.corpus_store import CorpusBuilder, StoredCorpus
from prealign.pipelines.workdir import WorkDir
from prealign.text import SegmenterConfig

EN, FR = SegmenterConfig(apostrophe="next"), SegmenterConfig(apostrophe="previous")


def peak_driver_memory(args: list[str], env: dict[str, str]) -> tuple[int, int, int]:
    """Run the command line in a child; sample its memory every 10 ms. Returns (peak RSS, peak RSS minus
    shared pages, samples). Shared pages are Ray's object store mapped into the driver (Ray's own memory
    monitor counts a process as RSS - SHR for that reason)."""
    psutil = psutil_module()
    cmd = [sys.executable, "-c", RUNNER, "4096", "40", *args]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def test_driver_memory_is_flat_from_1x_to_4x_input(tmp_path: Path) -> None:
    """6,000 then 24,000 pairs on embedded Ray with 2 workers: the driver reads, hands out and collects, but
    the text, the words, the dedup state and the corpus live in workers, the object store and the work
    directory. Before streaming (everything concatenated in the driver) the driver grew by ~5 KB a pair:
    some 80 MB here."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    peaks = {}
    for n in (6000, 24000):
        corpus = write_corpus(tmp_path / f"demo{n}.tsv", n, seed=n)
        out = tmp_path / f"lex{n}.parquet"
        args = ["extract-lexicon", str(corpus), "-o", str(out), "--workers", "2", "-q", "--hmm-iterations", "1"]
        args += ["--ibm1-iterations", "1"]
        peaks[n] = peak_driver_memory(args, env)
        assert peaks[n][2] > 100  # it was watched all along
        assert out.is_file() and not out.with_name(out.name + ".work").exists()
    (_, own1, _), (_, own4, _) = peaks[6000], peaks[24000]
    assert own4 - own1 < 30 << 20, {n: (p[0] >> 20, p[1] >> 20) for n, p in peaks.items()}


# --- the streamed stages equal the whole-corpus functions ----------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> list:
    """The demo corpus with planted duplicates and near duplicates, prepared in batches of 97 pairs."""
    path = write_corpus(tmp_path_factory.mktemp("stream") / "demo.tsv", 900, seed=5)
    lines = path.read_text("utf-8").splitlines()
    long_pair = f"{LONG_EN}\t{LONG_FR}"
    variants = [long_pair.replace("grandson", w) for w in ("granddaughter", "nephew", "niece")]
    lines = lines[:300] + [long_pair] + lines[300:600] + variants + [lines[5], lines[700]] + lines[600:]
    cfg = clean.CleanConfig(minhash_threshold=0.7)
    from prealign.lexicon.corpus import read_parallel

    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [prepare_batch(b, EN, FR, cfg) for b in read_parallel(pairs=path, batch_size=97)], cfg


def test_streamed_dedup_decides_as_the_whole_corpus_does(prepared) -> None:
    parts, cfg = prepared
    whole = concatenate(parts)
    expected = whole.codes.copy()
    expected[clean.duplicate_mask(whole.keys, keep=expected == clean.KEPT)] = clean.DUPLICATE
    keep = expected == clean.KEPT
    expected[clean.near_duplicate_mask(whole.signatures, cfg, keep=keep) & keep] = clean.NEAR_DUPLICATE
    assert (expected == clean.DUPLICATE).sum() >= 2 and (expected == clean.NEAR_DUPLICATE).sum() >= 2
    dedup = StreamDeduplicator(cfg)
    streamed = np.concatenate([dedup.add(p.codes, p.keys, p.signatures) for p in parts])
    np.testing.assert_array_equal(streamed, expected)
    # restarted after four batches from what those kept: the same decisions for the rest
    again = StreamDeduplicator(cfg)
    split = np.cumsum([len(p.codes) for p in parts])[:-1]
    for p, codes in zip(parts[:4], np.split(streamed, split)[:4], strict=True):
        rows = np.flatnonzero(codes == clean.KEPT)
        again.restore(p.keys[rows], p.signatures[rows])
    rest = np.concatenate([again.add(p.codes, p.keys, p.signatures) for p in parts[4:]])
    np.testing.assert_array_equal(rest, streamed[split[3] :])


def test_streamed_encoding_gives_the_whole_corpus_ids(prepared) -> None:
    parts, _ = prepared
    whole = concatenate(parts)
    corpus = encode_corpus(whole.src, whole.tgt)
    encoder = StreamEncoder()
    batches = [encoder.add(p.src, p.tgt) for p in parts]
    for name in ("src_ids", "tgt_ids", "cand_pair"):
        np.testing.assert_array_equal(np.concatenate([getattr(b, name) for b in batches]), getattr(corpus, name))
    np.testing.assert_array_equal(encoder.pair_table()[0], corpus.pair_src)
    np.testing.assert_array_equal(encoder.pair_table()[1], corpus.pair_tgt)
    src_vocab, tgt_vocab = encoder.vocabularies()
    assert src_vocab.words.to_pylist() == corpus.src_vocab.words.to_pylist()
    assert tgt_vocab.words.to_pylist() == corpus.tgt_vocab.words.to_pylist()
    # rebuilt from what each batch added, an encoder goes on with the same ids
    again = StreamEncoder()
    for b in batches[:5]:
        again.restore(b.new_src, b.new_tgt, b.new_pairs)
    later = [again.add(p.src, p.tgt) for p in parts[5:]]
    np.testing.assert_array_equal(np.concatenate([b.cand_pair for b in later]), corpus.cand_pair[-sum(
        len(b.cand_pair) for b in later) :])  # fmt: skip


def test_batches_prepared_in_tasks_give_what_whole_corpus_functions_give(prepared, tmp_path: Path) -> None:
    """The tasks' share (band tokens, matches within a batch, each batch encoded on its own) changes nothing:
    the builder's decisions and ids are those of dedup and encoding over the whole corpus, kept pairs only."""
    parts, cfg = prepared
    assert all(p.near is not None and p.local is not None for p in parts)
    dedup = StreamDeduplicator(cfg)
    expected = np.concatenate([dedup.add(p.codes, p.keys, p.signatures) for p in parts])
    work = WorkDir(tmp_path / "w", "f")
    with work.session():
        builder = CorpusBuilder(str(work.path), cfg)
        got = [builder.add(i, p)["reasons"] for i, p in enumerate(parts)]
        stored = StoredCorpus(work, builder.finish())
    assert np.sum(got, axis=0).tolist() == np.bincount(expected, minlength=len(clean.REASONS)).tolist()
    whole = concatenate(parts)
    rows = pa.array(np.flatnonzero(expected == clean.KEPT))
    corpus = encode_corpus(whole.src.take(rows), whole.tgt.take(rows))
    assert 0 < corpus.n_sentences < len(expected)
    got_range, want = stored.sentence_range(0, corpus.n_sentences), sentence_range(corpus, 0, corpus.n_sentences)
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets", "cand_pair"):
        np.testing.assert_array_equal(getattr(got_range, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(stored.pair_src, corpus.pair_src)
    np.testing.assert_array_equal(stored.pair_tgt, corpus.pair_tgt)
    assert stored.src_vocab.words.to_pylist() == corpus.src_vocab.words.to_pylist()


def test_first_kept_order_is_the_order_of_first_kept_occurrence() -> None:
    from prealign.lexicon.incremental import first_kept_order

    rng = np.random.default_rng(3)
    for _ in range(200):
        ids = pa.array(rng.integers(0, 12, rng.integers(0, 40))).dictionary_encode().indices.to_numpy()
        keep = rng.random(len(ids)) < 0.6
        seen = list(dict.fromkeys(ids[keep].tolist()))
        assert first_kept_order(ids, keep, int(ids.max(initial=-1)) + 1).tolist() == seen


def test_stored_corpus_reads_what_the_whole_corpus_holds(prepared, tmp_path: Path) -> None:
    parts, _ = prepared
    work = WorkDir(tmp_path / "w", "f")
    with work.session():
        builder = CorpusBuilder(str(work.path), None)
        for i, p in enumerate(parts):
            builder.add(i, p)
        stored = StoredCorpus(work, builder.finish())
        whole = concatenate(parts)
        corpus = encode_corpus(whole.src, whole.tgt)
        assert stored.n_sentences == corpus.n_sentences and stored.n_pairs == corpus.n_pairs
        for start, stop in ((0, 40), (90, 200), (150, 151), (0, corpus.n_sentences), (880, corpus.n_sentences)):
            got, want = stored.sentence_range(start, stop), sentence_range(corpus, start, stop)
            for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets", "cand_offsets", "cand_pair"):
                np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
            assert got.first == start and got.n_pairs == corpus.n_pairs
        # link counts, a batch at a time, as over the whole corpus
        rng = np.random.default_rng(0)
        sent = rng.integers(0, corpus.n_sentences, 3000)
        i = (rng.random(3000) * corpus.src_lengths[sent]).astype(np.int64)
        j = (rng.random(3000) * corpus.tgt_lengths[sent]).astype(np.int64)
        keys = np.unique(link_keys(sent, i, j))
        from prealign.pipelines.extract import count_pairs

        assert stored.count_pairs([keys]).equals(count_pairs(corpus, keys))
        shuffled = rng.permutation(keys)  # in parts of any order and size, as the chunks' links come
        assert stored.count_pairs(np.array_split(shuffled, 7)).equals(count_pairs(corpus, keys))
        loaded = stored.load()
        np.testing.assert_array_equal(loaded.cand_offsets, corpus.cand_offsets)
        assert loaded.src_vocab.words.equals(pa.array(corpus.src_vocab.words.to_pylist(), pa.large_string()))


def test_links_written_part_by_part_equal_the_whole_corpus_file(tmp_path: Path) -> None:
    from prealign.lexicon.links import write_pharaoh
    from prealign.lexicon.symmetrize import sentence_links
    from prealign.pipelines.corpus_store import write_links

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
