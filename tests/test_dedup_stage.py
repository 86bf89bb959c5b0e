"""The read stage's dedup as file tasks (prepare, exact shards, near shards, resolve) decides every pair as the
whole-corpus functions of :mod:`prealign.lexicon.clean` do, for any number of shards."""

from __future__ import annotations

import random
from itertools import pairwise
from math import isqrt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import SHARED_DATA

from prealign.lexicon import clean
from prealign.lexicon.corpus import read_parallel
from prealign.lexicon.dedup import (
    _triangle,
    band_tokens,
    exact_duplicates,
    lsh_bands,
    matching_pairs,
    min_matches,
    near_duplicates,
)
from prealign.pipelines.dedup_stage import (
    batch_drops,
    exact_task,
    final_codes,
    near_task,
    prepare_task,
    read_prepared,
    read_resolved,
    read_stats,
    resolve_task,
    shard_bounds,
    signature_file,
)
from prealign.text import Segmenter, SegmenterConfig

EN, FR = SegmenterConfig(apostrophe="next"), SegmenterConfig(apostrophe="previous")
TATOEBA = SHARED_DATA / "parallel" / "tatoeba.en-fr.tsv"


def batches_of(pairs: list[tuple[str, str]], size: int) -> list[pa.RecordBatch]:
    out = []
    for lo in range(0, len(pairs), size):
        part = pairs[lo : lo + size]
        out.append(
            pa.RecordBatch.from_arrays(
                [pa.array([s for s, _ in part]), pa.array([t for _, t in part]), pa.array(range(lo, lo + len(part)))],
                names=["src", "tgt", "line"],
            )
        )
    return out


def run_stage(batches: list[pa.RecordBatch], cfg: clean.CleanConfig, shards: int, work: Path) -> dict:
    """Every task of the stage, in order; the final codes of the whole input and what the tasks wrote."""
    work.mkdir(parents=True, exist_ok=True)
    prep, starts, sizes = [], [], []
    row = 0
    for i, batch in enumerate(batches):
        prep.append(work / f"prep-{i:05d}.npz")
        stats = prepare_task(prep[-1], batch, EN, FR, cfg)
        assert stats == read_stats(prep[-1]) == {"rows": batch.num_rows, "over_max_words": 0}
        starts.append(row)
        sizes.append(batch.num_rows)
        row += batch.num_rows
    exact_files, near_files = [], []
    for k, (lo, hi) in enumerate(shard_bounds(shards)) if cfg.dedup else ():
        exact_files.append(work / f"exact-{k}.npy")
        exact_task(exact_files[-1], prep, starts, lo, hi)
    for k, (lo, hi) in enumerate(shard_bounds(shards)) if cfg.near_dedup else ():
        near_files.append(work / f"near-{k}.npy")
        near_task(near_files[-1], prep, starts, lo, hi, exact_files, min_matches(cfg))
    counts = resolve_task(work / "resolved.npz", near_files, exact_files)
    rows, reason = read_resolved(work / "resolved.npz")
    codes = [
        final_codes(read_prepared(p).codes, *batch_drops(rows, reason, start, n))
        for p, start, n in zip(prep, starts, sizes, strict=True)
    ]
    pairs = np.concatenate([np.zeros((2, 0), np.int64), *(np.load(f) for f in near_files)], axis=1)
    return {"codes": np.concatenate(codes), "counts": counts, "prep": prep, "pairs": pairs}


def segmented(batch: pa.RecordBatch) -> tuple[list[list[str]], list[list[str]]]:
    """The words of a batch's sides, as the prepare task segments them."""
    return (
        Segmenter(EN).segment_batch(batch.column("src").to_pylist()),
        Segmenter(FR).segment_batch(batch.column("tgt").to_pylist()),
    )


def blanked(sentences: list[list[str]], drop: np.ndarray) -> list[list[str]]:
    """``sentences`` with those where ``drop`` is true emptied (what the prepare task stores for them)."""
    return [[] if d else s for s, d in zip(sentences, drop.tolist(), strict=True)]


def references(batches: list[pa.RecordBatch], cfg: clean.CleanConfig) -> tuple[np.ndarray, list[dict]]:
    """The codes of the whole-corpus functions over the segmented words of all batches (combined as
    ``clean.drop_reasons`` combines them), and per batch the words and length codes the prepare task should
    store."""
    src: list[list[str]] = []
    tgt: list[list[str]] = []
    parts = []
    for batch in batches:
        s, t = segmented(batch)
        codes = clean.length_reasons(clean.side_lengths(s), clean.side_lengths(t), cfg)
        drop = codes != clean.KEPT
        parts.append({"src": blanked(s, drop), "tgt": blanked(t, drop), "codes": codes})
        src += s
        tgt += t
    expected = clean.length_reasons(clean.side_lengths(src), clean.side_lengths(tgt), cfg)
    np.testing.assert_array_equal(expected, np.concatenate([p["codes"] for p in parts]))
    if cfg.dedup:
        expected[clean.duplicate_mask(clean.pair_keys(src, tgt), keep=expected == clean.KEPT)] = clean.DUPLICATE
    if cfg.near_dedup:
        rows = np.flatnonzero(expected == clean.KEPT)
        sig = clean.minhash_signatures([src[i] for i in rows], [tgt[i] for i in rows], cfg)
        expected[rows[clean.near_duplicate_mask(sig, cfg)]] = clean.NEAR_DUPLICATE
    return expected, parts


def assert_same_decisions(batches, cfg, shard_counts, work: Path, at_least: dict[int, int]) -> list[dict]:
    expected, parts = references(batches, cfg)
    for code, n in at_least.items():
        assert (expected == code).sum() >= n, (clean.REASONS[code], (expected == code).sum())
    runs = []
    for shards in shard_counts:
        run = run_stage(batches, cfg, shards, work / f"shards-{shards}")
        np.testing.assert_array_equal(run["codes"], expected)
        assert run["counts"] == {
            "duplicate": int((expected == clean.DUPLICATE).sum()),
            "near_duplicate": int((expected == clean.NEAR_DUPLICATE).sum()),
        }
        runs.append(run)
    # what was prepared: the segmented words (emptied where the length filter drops) and the length codes
    for path, part in zip(runs[0]["prep"], parts, strict=True):
        back = read_prepared(path)
        assert back.src.type == back.tgt.type == pa.large_list(pa.large_string())
        assert back.src.to_pylist() == part["src"] and back.tgt.to_pylist() == part["tgt"]
        np.testing.assert_array_equal(back.codes, part["codes"])
    return runs


# --- a corpus made of duplicates ----------------------------------------------------------------------------------


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))


def planted_corpus(seed: int = 3) -> list[tuple[str, str]]:
    """Pairs of 10 to 25 random words a side; one-word variants of them (one side or both), variants of
    variants (chains, where the greedy order matters), exact repeats of all of these, and pairs the length
    filter drops (an empty side, a side over 80 words, a repeat of those), shuffled."""
    rng = random.Random(seed)
    base = []
    for _ in range(300):
        n = rng.randint(10, 25)
        base.append(([_word(rng) for _ in range(n)], [_word(rng) for _ in range(n + rng.randint(-2, 2))]))

    def variant(pair: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
        src, tgt = list(pair[0]), list(pair[1])
        src[rng.randrange(len(src))] = _word(rng)
        if rng.random() < 0.5:
            tgt[rng.randrange(len(tgt))] = _word(rng)
        return src, tgt

    pairs = list(base)
    for pair in rng.sample(base, 150):
        chain = [pair]
        for _ in range(rng.randint(1, 4)):
            chain.append(variant(rng.choice(chain) if rng.random() < 0.3 else chain[-1]))
        pairs += chain[1:]
    pairs += [rng.choice(pairs) for _ in range(200)]
    long_pair = ([_word(rng) for _ in range(90)], [_word(rng) for _ in range(85)])
    pairs += [long_pair, long_pair, (["!"], ["x"]), ([], ["y"])]
    rng.shuffle(pairs)
    return [(" ".join(s), " ".join(t)) for s, t in pairs]


@pytest.fixture(scope="module")
def planted() -> list[pa.RecordBatch]:
    return batches_of(planted_corpus(), 97)


def test_tasks_decide_as_the_whole_corpus(planted, tmp_path: Path) -> None:
    cfg = clean.CleanConfig()
    at_least = {clean.DUPLICATE: 150, clean.NEAR_DUPLICATE: 100, clean.TOO_LONG: 2, clean.EMPTY: 2}
    runs = assert_same_decisions(planted, cfg, (1, 3), tmp_path, at_least)
    # the greedy order matters here: some pair matches a row that was itself dropped (and so is kept)
    codes, (later, earlier) = runs[0]["codes"], runs[0]["pairs"]
    near = codes == clean.NEAR_DUPLICATE
    assert (~near[later] & near[earlier]).any()
    # pairs found once, whatever the sharding (a pair shares several bands, maybe in several shards)
    union = [np.unique(r["pairs"], axis=1) for r in runs]
    np.testing.assert_array_equal(union[0], union[1])


@pytest.mark.parametrize(
    "cfg",
    [clean.CleanConfig(near_dedup=False), clean.CleanConfig(dedup=False), clean.CleanConfig(minhash_threshold=0.6)],
    ids=["exact-only", "near-only", "threshold-0.6"],
)
def test_each_rule_alone_and_another_threshold(planted, cfg: clean.CleanConfig, tmp_path: Path) -> None:
    at_least = {clean.DUPLICATE: 150} if cfg.dedup else {}
    if cfg.near_dedup:
        at_least[clean.NEAR_DUPLICATE] = 100
    assert_same_decisions(planted, cfg, (2,), tmp_path, at_least)


def test_tatoeba_first_20000_lines(tmp_path: Path) -> None:
    if not TATOEBA.is_file():
        pytest.skip(f"{TATOEBA} is missing")
    with TATOEBA.open(encoding="utf-8") as fh:
        head = [next(fh) for _ in range(20000)]
    (tmp_path / "head.tsv").write_text("".join(head), encoding="utf-8")
    batches = list(read_parallel(pairs=tmp_path / "head.tsv", batch_size=4096))
    assert sum(b.num_rows for b in batches) == 20000 and len(batches) == 5
    at_least = {clean.DUPLICATE: 1, clean.NEAR_DUPLICATE: 20}
    assert_same_decisions(batches, clean.CleanConfig(), (1, 4), tmp_path, at_least)


# --- a large bucket -------------------------------------------------------------------------------------------


def brute_force_pairs(sig: np.ndarray, tok: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    later, earlier = [], []
    for i in range(1, len(sig)):
        ok = (tok[:i] == tok[i]).any(axis=1) & ((sig[:i] == sig[i]).sum(axis=1) >= need)
        later.append(np.full(ok.sum(), i))
        earlier.append(np.flatnonzero(ok))
    return np.concatenate(later), np.concatenate(earlier)


def test_a_bucket_of_3000_near_identical_pairs(tmp_path: Path) -> None:
    rng = random.Random(11)
    src, tgt = [_word(rng) for _ in range(30)], [_word(rng) for _ in range(30)]
    pairs = []
    for k in range(3000):
        s, t = list(src), list(tgt)
        s[k % 30] = f"v{k}"
        if k % 3 == 0:
            t[(k * 7) % 30] = f"w{k}"
        pairs.append((" ".join(s), " ".join(t)))
    pairs += [(" ".join(src), " ".join(tgt))] * 3  # the original last, and repeated
    cfg = clean.CleanConfig()
    batches = batches_of(pairs, 700)
    assert_same_decisions(batches, cfg, (2,), tmp_path, {clean.NEAR_DUPLICATE: 2500, clean.DUPLICATE: 2})
    # the pairs themselves, against all pairs checked one by one, with blocks smaller than a bucket
    sig = np.concatenate([np.load(signature_file(p)) for p in sorted((tmp_path / "shards-2").glob("prep-*.npz"))])
    sig = sig[:3000]
    tok = band_tokens(sig, lsh_bands(cfg))
    assert np.unique(tok, return_counts=True)[1].max() >= 1000  # a big bucket
    expected = brute_force_pairs(sig, tok, min_matches(cfg))
    assert len(expected[0]) > 500_000
    rows = np.repeat(np.arange(3000), tok.shape[1])
    for block in (977,):  # (the stage above ran with the default block)
        later, earlier = matching_pairs(tok.reshape(-1), rows, lambda r: sig[r], min_matches(cfg), block=block)
        np.testing.assert_array_equal(later, expected[0])
        np.testing.assert_array_equal(earlier, expected[1])


# --- the rules on their own ---------------------------------------------------------------------------------------


def test_exact_duplicates_keep_the_smallest_row() -> None:
    keys = np.array([5, 3, 5, 2**64 - 1, 3, 5, 2**64 - 1], dtype=np.uint64)
    rows = np.array([40, 7, 12, 3, 2, 90, 1])
    np.testing.assert_array_equal(exact_duplicates(keys, rows), [3, 7, 40, 90])


def greedy(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    dropped: set[int] = set()
    for i, j in sorted(set(zip(later.tolist(), earlier.tolist(), strict=True))):
        if i not in dropped and j not in dropped:
            dropped.add(i)
    return np.array(sorted(dropped), dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_near_duplicates_is_the_greedy_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    # random pairs, plus long chains (i, i - 1) that take many rounds, given in any order and repeated
    a, b = rng.integers(0, n, 4000), rng.integers(0, n, 4000)
    chain = np.arange(1000 + seed, 2500)
    later = np.concatenate([np.maximum(a, b)[a != b], chain, chain[::3]])
    earlier = np.concatenate([np.minimum(a, b)[a != b], chain - 1, chain[::3] - 1])
    order = rng.permutation(len(later))
    later, earlier = later[order] * 1000 + 7, earlier[order] * 1000 + 7  # sparse rows
    expected = greedy(later, earlier)
    np.testing.assert_array_equal(near_duplicates(later, earlier), expected)
    assert 0 < len(expected) < len(np.unique(later))
    with pytest.raises(ValueError):
        near_duplicates(earlier, later)


def test_shard_bounds_cover_the_uint64_range_once() -> None:
    for n in (1, 3, 4, 7):
        bounds = shard_bounds(n)
        assert bounds[0][0] == 0 and bounds[-1][1] == 2**64 and len(bounds) == n
        assert all(hi == lo for (_, hi), (lo, _) in pairwise(bounds))
    values = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    rows = np.arange(4)
    # a value exactly at a bound, and the largest value, land in exactly one shard
    assert sorted(
        r for lo, hi in shard_bounds(2) for r in rows[(values >= np.uint64(lo)) & ((hi >= 2**64) | (values < hi))]
    ) == [0, 1, 2, 3]


# --- files ----------------------------------------------------------------------------------------------------


def test_outputs_are_atomic_and_read_back(planted, tmp_path: Path) -> None:
    cfg = clean.CleanConfig()
    run = run_stage(planted[:4], cfg, 2, tmp_path / "stage")
    written = sorted(p.name for p in (tmp_path / "stage").iterdir())
    assert not [n for n in written if n.startswith(".") or n.endswith(".tmp")], written
    assert {"resolved.npz", "exact-0.npy", "exact-1.npy", "near-0.npy", "near-1.npy"} <= set(written)
    assert len([n for n in written if n.endswith(".sig.npy")]) == 4
    sig = np.load(signature_file(run["prep"][0]), mmap_mode="r")
    assert isinstance(sig, np.memmap) and sig.shape == (97, cfg.minhash_perm) and sig.dtype == np.uint64
    # a task whose input lacks what it needs fails without leaving an output
    prep = tmp_path / "exact-less.npz"
    prepare_task(prep, planted[0], EN, FR, clean.CleanConfig(dedup=False, near_dedup=False))
    assert not signature_file(prep).exists()
    with pytest.raises(ValueError, match="key.npy is missing"):
        exact_task(tmp_path / "exact.npy", [prep], [0], 0, 2**64)
    assert not list(tmp_path.glob("exact.npy*")) and not list(tmp_path.glob(".exact.npy*"))


def test_without_cleaning_long_pairs_are_emptied_and_counted(planted, tmp_path: Path) -> None:
    batch = batches_of(planted_corpus(), 2000)[0]
    stats = prepare_task(tmp_path / "p.npz", batch, EN, FR, None, max_words=24)
    src, tgt = segmented(batch)
    over = (np.array([len(w) for w in src]) > 24) | (np.array([len(w) for w in tgt]) > 24)
    back = read_prepared(tmp_path / "p.npz")
    assert stats == back.stats == {"rows": batch.num_rows, "over_max_words": int(over.sum())}
    assert 10 < over.sum() < batch.num_rows
    assert back.src.to_pylist() == blanked(src, over) and back.tgt.to_pylist() == blanked(tgt, over)
    assert back.codes.dtype == np.uint8 and not back.codes.any()
    assert not [p.name for p in tmp_path.glob("p.*.npy")]


def test_signatures_are_gathered_by_global_row(planted, tmp_path: Path) -> None:
    """Rows in any order, over batches of several sizes."""
    from prealign.pipelines import dedup_stage

    cfg = clean.CleanConfig()
    prep, starts, row = [], [], 0
    for i, batch in enumerate([planted[0], planted[1].slice(0, 5), planted[2], planted[3].slice(0, 1)]):
        prep.append(tmp_path / f"prep-{i}.npz")
        prepare_task(prep[-1], batch, EN, FR, cfg)
        starts.append(row)
        row += batch.num_rows
    whole = np.concatenate([np.load(signature_file(p)) for p in prep])
    gather = dedup_stage._Signatures(prep, starts)
    rows = np.random.default_rng(0).permutation(row)
    rows = np.concatenate([rows, rows[:50]])
    np.testing.assert_array_equal(gather(rows), whole[rows])
    assert whole[np.flatnonzero(read_prepared(prep[0]).codes == clean.KEPT)].any(axis=1).all()


def test_candidate_pairs_are_numbered_exactly_even_far_out() -> None:
    """The q-th pair of a bucket, (a, b) with a > b, for q up to 10**17 (a bucket of 450 M rows): past 2**53
    float square roots round either way."""
    a_true = np.array(
        [2, 3, 1000, 2**20 + 7, 44_721_360, *range(94_906_260, 94_906_270), *range(447_213_590, 447_213_600)]
    )
    tri = a_true * (a_true - 1) // 2
    q = np.concatenate([tri, tri - 1, tri + a_true - 1])  # first, the one before, last of each
    a, b = _triangle(q)
    expected_a = np.array([(1 + isqrt(1 + 8 * int(v))) // 2 for v in q])
    np.testing.assert_array_equal(a, expected_a)
    np.testing.assert_array_equal(b, q - expected_a * (expected_a - 1) // 2)
    assert ((b >= 0) & (b < a)).all()
