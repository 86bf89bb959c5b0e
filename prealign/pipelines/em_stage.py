"""The built-in aligner's EM over the chunk files: the loop, where the parameters live, the checkpoint.

The pure steps are in :mod:`prealign.lexicon.em`. Each iteration ``N`` (from 1) writes ``em/it-NNN/``:

- ``counts-CCCCC.npy`` + ``counts-CCCCC.npz``, one E-step task per chunk: the chunk's expected pair counts
  (forward in the chunk's source-major pair order, backward in its target-major order), and its empty-word and
  jump counts;
- ``table-D-PPP.npy``, one M-step task per direction D and shard P of the pairs: the shard
  sums each pair's counts over the chunks, in chunk order, normalises per state word (shards hold whole state
  words: source words forward, target words backward), and writes the new probabilities back *per chunk*:
  chunk C's values are the slice ``offsets[C]:offsets[C + 1]`` (``offsets`` from the shard's plan,
  ``em/plan-D-PPP.npz``, made once, and gathered for the E-steps in ``em/plan-D-offsets.npy``), in that
  chunk's own pair order. The next E-step
  reads its slices (memory-mapped), so no process ever holds the whole table;
- ``params.npz``, written last by the driver: the empty-word tables and jumps from the chunks' counts summed in
  chunk order. Its presence is the checkpoint: a restarted job continues after the last iteration that has one
  (and skips the finished tasks of the next); older iterations are removed.

The shards are cut once, from a sample of the chunks' pairs, so that each holds about ``SHARD_PAIRS`` chunk
pairs; the cut depends on the data only, and every sum runs in a fixed order, so the result is the same for
any number of workers.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prealign.lexicon import em
from prealign.lexicon.encode import EncodedCorpus
from prealign.lexicon.hmm import BACKWARD, FORWARD
from prealign.pipelines import faults
from prealign.pipelines.encode_stage import chunk_file, read_chunk, read_sentences, write_chunk
from prealign.pipelines.executor import Executor, LocalExecutor
from prealign.pipelines.progress import Progress
from prealign.pipelines.stages import StageRunner, Task, save_npy, save_npz
from prealign.textio import atomic_write

SHARD_PAIRS = 1 << 21  # chunk pairs per M-step shard (about 100 MB of memory in its task)
_SAMPLE = 1 << 20  # pairs sampled to cut the shards
_KEYS = (".keys.npy", ".bkeys.npy")  # each direction's sorted pairs of a chunk (state word in the high bits)


def iteration_dir(work: Path, it: int) -> Path:
    return Path(work) / "em" / f"it-{it:03d}"


def _table(work: Path, it: int, direction: int, shard: int) -> Path:
    return iteration_dir(work, it) / f"table-{direction}-{shard:03d}.npy"


def shard_bounds(work: Path, n_chunks: int) -> list[list[tuple[int, int]]]:
    """Per direction, the (lo, hi) key range of each shard: whole state words, about ``SHARD_PAIRS`` each."""
    out = []
    for suffix in _KEYS:
        sizes = [len(np.load(chunk_file(work, c, suffix), mmap_mode="r")) for c in range(n_chunks)]
        total = sum(sizes)
        shards = max(1, math.ceil(total / SHARD_PAIRS))
        step = max(1, total // _SAMPLE)
        parts = []
        for c in range(n_chunks):  # one file mapped at a time: its pages leave the process with the map
            keys = np.load(chunk_file(work, c, suffix), mmap_mode="r")
            parts.append(np.array(keys[::step]))
            del keys
        sample = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        cuts = [int(sample[len(sample) * s // shards]) >> 32 << 32 for s in range(1, shards)] if len(sample) else []
        edges = sorted(set([0, *cuts, (1 << 63) - 1]))  # keys stay below 2**63: word ids are int32
        out.append(list(zip(edges[:-1], edges[1:], strict=True)))
    return out


def _read_tables(work: Path, it: int, chunk: int, direction: int, shards: int, bperm: np.ndarray | None):
    """Chunk ``chunk``'s translation probabilities of one direction after iteration ``it``, in local order."""
    parts = []
    where = np.array(np.load(_offsets_file(work, direction), mmap_mode="r")[:, chunk : chunk + 2])  # [shards, 2]
    for p in range(shards):
        parts.append(np.load(_table(work, it, direction, p), mmap_mode="r")[where[p, 0] : where[p, 1]])
    values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if bperm is None:
        return np.ascontiguousarray(values, dtype=np.float32)
    local = np.empty(len(values), dtype=np.float32)
    local[bperm] = values
    return local


def chunk_params(
    work: Path,
    it: int,
    chunk: Any,
    index: int,
    shards: tuple[int, int],
    sizes: tuple[int, int],
    bperm: np.ndarray | None = None,
):
    """The shared parameters and the chunk's translation probabilities after iteration ``it`` (0: the uniform
    start); ``bperm``: the chunk's ``.bperm.npy``, when the caller has it already."""
    if it == 0:
        globals_ = em.initial_globals(*sizes)
        t = (em.initial_table(len(chunk.pairs), sizes[1]), em.initial_table(len(chunk.pairs), sizes[0]))
    else:
        globals_ = em.load_params(iteration_dir(work, it) / "params.npz")
        bperm = np.load(chunk_file(work, index, ".bperm.npy")) if bperm is None else bperm
        t = (
            _read_tables(work, it, index, FORWARD, shards[FORWARD], None),
            _read_tables(work, it, index, BACKWARD, shards[BACKWARD], bperm),
        )
    return globals_, t


def estep_task(
    work: Path, it: int, index: int, shards: tuple[int, int], sizes: tuple[int, int], config: em.BuiltinConfig
) -> dict[str, Any]:
    """Iteration ``it + 1``'s E-step on chunk ``index`` (see the module doc for what it writes)."""
    chunk = read_chunk(work, index)
    bperm = np.load(chunk_file(work, index, ".bperm.npy"))
    globals_, t = chunk_params(work, it, chunk, index, shards, sizes, bperm)
    if config.schedule[it] == "HMM":
        globals_ = em.with_jumps(globals_, config)
    counts = em.estep(chunk, em.chunk_params(t, globals_, config), config.agreement and it > 0)
    out = iteration_dir(work, it + 1)
    save_npy(out / f"counts-{index:05d}.npy", np.stack([counts.pairs[FORWARD], counts.pairs[BACKWARD][bperm]]))
    sparse = {}
    for name, null in (("fwd", counts.null[FORWARD]), ("bwd", counts.null[BACKWARD])):
        seen = np.flatnonzero(null)  # the chunk's observed words: adding the others' zeros would change nothing
        sparse.update({f"null_{name}_at": seen.astype(np.int32), f"null_{name}": null[seen]})
    save_npz(
        out / f"counts-{index:05d}.npz", {}, jump_fwd=counts.jump[FORWARD], jump_bwd=counts.jump[BACKWARD], **sparse
    )
    return {}


def _plan_file(work: Path, direction: int, shard: int) -> Path:
    return Path(work) / "em" / f"plan-{direction}-{shard:03d}.npz"


def _offsets_file(work: Path, direction: int) -> Path:
    """Every shard's plan offsets of one direction in one array [shards, chunks + 1] (what an E-step reads)."""
    return Path(work) / "em" / f"plan-{direction}-offsets.npy"


def plan_task(work: Path, direction: int, shard: int, bounds: tuple[int, int], n_chunks: int) -> dict[str, Any]:
    """Once per direction and shard: where each chunk's pairs of the shard are (``lo``, and ``offsets`` into
    the concatenation over chunks), the shard's distinct pairs and each concatenated entry's index among them
    (what every M-step of the shard needs; the pairs do not change between iterations)."""
    keys, lo, offsets = [], [], [0]
    for c in range(n_chunks):
        chunk_keys = np.load(chunk_file(work, c, _KEYS[direction]), mmap_mode="r")
        a, b = np.searchsorted(chunk_keys, np.array(bounds, dtype=np.int64))
        keys.append(np.asarray(chunk_keys[a:b]))
        lo.append(int(a))
        offsets.append(offsets[-1] + int(b - a))
    unique, inverse = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.int64), return_inverse=True)
    stats = {"pairs": len(unique), "entries": offsets[-1]}
    arrays = {"unique": unique, "inverse": inverse.astype(np.int32), "lo": np.asarray(lo, np.int64)}
    save_npz(_plan_file(work, direction, shard), stats, offsets=np.asarray(offsets, np.int64), **arrays)
    return stats


def mstep_task(work: Path, it: int, direction: int, shard: int, n_chunks: int) -> dict[str, Any]:
    """Iteration ``it``'s M-step of one direction's shard of the pairs (see the module doc)."""
    with np.load(_plan_file(work, direction, shard)) as plan:
        unique, inverse, lo, offsets = plan["unique"], plan["inverse"], plan["lo"], plan["offsets"]
    counts = np.empty(len(inverse), dtype=np.float64)
    for c in range(n_chunks):
        n = offsets[c + 1] - offsets[c]
        row = np.load(iteration_dir(work, it) / f"counts-{c:05d}.npy", mmap_mode="r")[direction]
        counts[offsets[c] : offsets[c + 1]] = row[lo[c] : lo[c] + n]
    totals = np.bincount(inverse, weights=counts, minlength=len(unique))  # in chunk order: any worker count
    t = em.mstep_table(unique, totals)
    save_npy(_table(work, it, direction, shard), t[inverse])
    return {}


def _globals(work: Path, it: int, n_chunks: int, sizes: tuple[int, int], config: em.BuiltinConfig) -> em.Globals:
    """The shared parameters after iteration ``it``: the chunks' counts summed in chunk order (each chunk's
    empty-word counts are stored for its observed words only)."""
    null = [np.zeros(max(sizes[1], 1)), np.zeros(max(sizes[0], 1))]  # forward observes target words
    jump: list[Any] = [0.0, 0.0]
    for c in range(n_chunks):
        with np.load(iteration_dir(work, it) / f"counts-{c:05d}.npz") as z:
            for d, name in ((FORWARD, "fwd"), (BACKWARD, "bwd")):
                null[d][z[f"null_{name}_at"]] += z[f"null_{name}"]
                jump[d] = jump[d] + z[f"jump_{name}"]
    return em.mstep_globals(tuple(null), tuple(jump), config, config.schedule[it - 1] == "HMM")


def last_iteration(work: Path) -> int:
    """The last iteration whose parameters were saved (0: none)."""
    done = [int(p.parent.name[3:]) for p in (Path(work) / "em").glob("it-*/params.npz")]
    return max(done, default=0)


def train(
    runner: StageRunner,
    n_chunks: int,
    sizes: tuple[int, int],
    config: em.BuiltinConfig,
    progress: Callable[[str], None] | None = None,
    costs: Sequence[int] = (),
) -> int:
    """Run (or finish) the EM over the chunk files of ``runner.work``; returns the last iteration. ``costs``:
    each chunk's candidate links (E-steps go out costliest first)."""
    work = runner.work
    bounds = shard_bounds(work, n_chunks)
    shards = (len(bounds[FORWARD]), len(bounds[BACKWARD]))
    schedule = config.schedule
    plans = [
        Task(_plan_file(work, d, p), plan_task, (work, d, p, bounds[d][p], n_chunks))
        for d in (FORWARD, BACKWARD)
        for p in range(shards[d])
    ]
    runner.run("em_plan", plans, "M-step plan")
    for d in (FORWARD, BACKWARD):
        if not _offsets_file(work, d).exists():
            offsets = []
            for p in range(shards[d]):
                with np.load(_plan_file(work, d, p)) as plan:
                    offsets.append(plan["offsets"])
            save_npy(_offsets_file(work, d), np.stack(offsets))
    done = last_iteration(work)
    for it in range(done):
        if progress is not None:
            progress(f"{schedule[it]} iteration {it + 1}/{len(schedule)} (saved)")
    for it in range(done, len(schedule)):
        iteration_dir(work, it + 1).mkdir(parents=True, exist_ok=True)
        out = iteration_dir(work, it + 1)
        tasks = [
            Task(out / f"counts-{c:05d}.npz", estep_task, (work, it, c, shards, sizes, config), cost)
            for c, cost in enumerate(list(costs) or [0] * n_chunks)
        ]
        runner.run("em_estep", tasks, f"E-step {it + 1}/{len(schedule)}")
        msteps = [
            Task(_table(work, it + 1, d, p), mstep_task, (work, it + 1, d, p, n_chunks))
            for d in (FORWARD, BACKWARD)
            for p in range(shards[d])
        ]
        runner.run("em_mstep", msteps, f"M-step {it + 1}/{len(schedule)}")
        globals_ = _globals(work, it + 1, n_chunks, sizes, config)
        atomic_write(out / "params.npz", lambda fh, g=globals_: em.save_params(fh, g))
        if it > 0:
            shutil.rmtree(iteration_dir(work, it), ignore_errors=True)
        faults.reached("em-iteration")
        if progress is not None:
            progress(f"{schedule[it]} iteration {it + 1}/{len(schedule)}")
    return len(schedule)


def shard_counts(work: Path) -> tuple[int, int]:
    """How many M-step shards each direction has (their plans)."""
    return tuple(len(list((Path(work) / "em").glob(f"plan-{d}-[0-9]*.npz"))) for d in (FORWARD, BACKWARD))


def decode_task(
    work: Path,
    index: int,
    it: int,
    config: em.BuiltinConfig,
    method: str,
    max_span: int,
    joiners: tuple[str, str],
    count: bool,
) -> dict[str, Any]:
    """Chunk ``index``'s links after the last iteration ``it``, symmetrised and counted
    (:func:`prealign.pipelines.count_stage.count_task`)."""
    from prealign.pipelines.count_stage import count_task

    chunk = read_chunk(work, index)
    sentences = read_sentences(chunk_file(work, index))
    globals_, t = chunk_params(work, it, chunk, index, shard_counts(work), (0, 0))
    links = em.decode(chunk, sentences, em.chunk_params(t, globals_, config), config)
    return count_task(work, index, sentences, links, method, max_span, joiners, count)


def align_in_memory(
    corpus: EncodedCorpus, config: em.BuiltinConfig, work: Path, executor: Executor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The built-in aligner on a corpus in memory (the API for small corpora, tests and benchmarks): chunk
    files in ``work`` (an empty directory), the EM, decoding; both directions' link keys, sorted."""
    work = Path(work)
    (work / "encode").mkdir(parents=True, exist_ok=True)
    sizes = (len(corpus.src_vocab), len(corpus.tgt_vocab))
    bounds = list(range(0, corpus.n_sentences, config.chunk_sentences))
    for c, first in enumerate(bounds):
        stop = min(first + config.chunk_sentences, corpus.n_sentences)
        so, to = corpus.src_offsets, corpus.tgt_offsets
        part = em.SentenceArrays(
            corpus.src_ids[so[first] : so[stop]],
            so[first : stop + 1] - so[first],
            corpus.tgt_ids[to[first] : to[stop]],
            to[first : stop + 1] - to[first],
            first,
        )
        write_chunk(work, c, part, sizes, True)
    if not bounds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    runner = StageRunner(executor or LocalExecutor(), work, Progress(False))
    last = train(runner, len(bounds), sizes, config)
    links: list[list[np.ndarray]] = [[], []]
    for c in range(len(bounds)):
        chunk = read_chunk(work, c)
        globals_, t = chunk_params(work, last, chunk, c, shard_counts(work), (0, 0))
        fwd, bwd = em.decode(chunk, read_sentences(chunk_file(work, c)), em.chunk_params(t, globals_, config), config)
        links[0].append(fwd)
        links[1].append(bwd)
    return np.concatenate(links[0]), np.concatenate(links[1])
