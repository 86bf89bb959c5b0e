"""The built-in statistical word aligner: IBM Model 1 then an HMM, both directions, trained by EM.

Training runs over fixed-size chunks of sentences through an :class:`~prealign.lexicon.executor.Executor`.
Each chunk is built once (by a task, kept where the executor keeps task results); every iteration puts the
parameters once and runs one E-step task per chunk, and the driver adds the chunks' expected counts one
chunk at a time, in chunk order, so the result does not depend on the number of workers nor on which worker
ran which chunk, and the driver never holds more than one chunk's counts besides the O(pairs) totals. On Ray
a task whose worker dies is retried and a chunk lost with its node is rebuilt from its lineage. Decoding is
one more task per chunk.

The corpus is an :class:`~prealign.lexicon.encode.EncodedCorpus` in memory, or any :class:`CorpusSource`
(sizes, the pair table, and ranges of sentences on demand, e.g. read from disk), which may carry an
:class:`EMCheckpoint`: the parameters are saved after every iteration, and training resumes after the last
saved one, with the same result as an uninterrupted run.

With ``agreement`` on, the translation counts of both directions come from the product of the two
directions' link posteriors (Liang, Taskar & Klein 2006, "Alignment by Agreement"), which pushes both
models towards links they agree on. Each direction's links are then decoded by posterior: every word
links to its most probable counterpart when that beats the empty word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import torch

from prealign.lexicon.encode import EncodedCorpus, Vocab, candidate_grid
from prealign.lexicon.executor import Executor, LocalExecutor
from prealign.lexicon.hmm import BACKWARD, FORWARD, Chunk, Counts, Params, estep, make_chunk
from prealign.lexicon.symmetrize import link_keys

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltinConfig:
    """Training schedule and model options of the built-in aligner."""

    ibm1_iterations: int = 5
    hmm_iterations: int = 5
    agreement: bool = True
    p0: float = 0.2
    max_jump: int = 30
    jump_smoothing: float = 0.5
    null_smoothing: float = 1.0
    chunk_sentences: int = 16384
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.ibm1_iterations < 1 or self.hmm_iterations < 0:
            raise ValueError("need at least one Model 1 iteration and zero or more HMM iterations")
        if not 0.0 <= self.p0 < 1.0:
            raise ValueError(f"p0 must be in [0, 1), not {self.p0}")
        if self.chunk_sentences < 1 or self.max_jump < 1:
            raise ValueError("chunk_sentences and max_jump must be positive")


@dataclass
class Model:
    """Trained parameters of both directions."""

    forward: Params
    backward: Params


def _chunk_counts(chunk: Chunk, fwd: Params, bwd: Params, agreement: bool) -> tuple[Counts, Counts]:
    torch.set_num_threads(1)
    counts = (estep(chunk, FORWARD, fwd), estep(chunk, BACKWARD, bwd))
    if agreement:
        joint = counts[0].posterior * counts[1].posterior
        paired = np.bincount(chunk.cand_local[:-1], weights=joint, minlength=len(chunk.pairs))
        for c in counts:
            c.pairs = paired
    for c in counts:
        c.posterior = None
    return counts


def _chunk_links(
    chunk: Chunk, corpus: EncodedCorpus, model: Model, threshold: float, first: int = 0
) -> tuple[np.ndarray, ...]:
    """Both directions' decoded links of one chunk, as corpus link keys (sentences numbered from ``first``)."""
    torch.set_num_threads(1)
    s0, s1 = chunk.start, chunk.stop
    src_off = corpus.src_offsets[s0 : s1 + 1] - corpus.src_offsets[s0]
    tgt_off = corpus.tgt_offsets[s0 : s1 + 1] - corpus.tgt_offsets[s0]
    _, sent, i, j = candidate_grid(src_off, tgt_off)
    out = []
    for direction, params in ((FORWARD, model.forward), (BACKWARD, model.backward)):
        slots = estep(chunk, direction, params, decode=threshold).best
        out.append(np.sort(link_keys(sent[slots] + s0 + first, i[slots], j[slots])))
    return tuple(out)


def _normalise(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    totals = np.bincount(groups, weights=values, minlength=n_groups)[groups]
    out = np.zeros(len(values), dtype=np.float64)  # 0 where a group's total is 0 (its values are 0 too)
    np.divide(values, totals, out=out, where=totals != 0)
    return out.astype(np.float32)


class _Totals:
    """One direction's expected counts, added chunk by chunk (in chunk order: the float sums then do not
    depend on who computed what)."""

    def __init__(self, n_pairs: int, old: Params, max_jump: int) -> None:
        self.pairs = np.zeros(n_pairs, dtype=np.float64)
        self.null = np.zeros(len(old.t_null), dtype=np.float64)
        self.jump = np.zeros(2 * max_jump + 1)

    def add(self, pairs: np.ndarray, counts: Counts) -> None:
        self.pairs[pairs] += counts.pairs
        self.null += counts.null
        self.jump += counts.jump


def _mstep(
    corpus: CorpusSource, totals: _Totals, direction: int, old: Params, config: BuiltinConfig, hmm: bool
) -> Params:
    if direction == FORWARD:
        t = _normalise(totals.pairs, corpus.pair_src, len(corpus.src_vocab))
    else:
        t = _normalise(totals.pairs, corpus.pair_tgt, len(corpus.tgt_vocab))
    null = totals.null + config.null_smoothing
    t_null = (null / null.sum()).astype(np.float32)
    if not hmm:
        return Params(t, t_null, old.jump, old.p0, old.max_jump)
    jump = totals.jump + config.jump_smoothing
    return Params(t, t_null, (jump / jump.sum()).astype(np.float32), old.p0, old.max_jump)


def _initial(corpus: CorpusSource, direction: int, config: BuiltinConfig) -> Params:
    v_obs = max(len(corpus.tgt_vocab) if direction == FORWARD else len(corpus.src_vocab), 1)
    t = np.full(corpus.n_pairs, 1.0 / v_obs, dtype=np.float32)
    t_null = np.full(v_obs, 1.0 / v_obs, dtype=np.float32)
    return Params(t, t_null, None, config.p0, config.max_jump)


def _initial_jump(max_jump: int) -> np.ndarray:
    """A start that prefers monotone steps: exp(-|d - 1| / 2)."""
    d = np.arange(-max_jump, max_jump + 1)
    j = np.exp(-0.5 * np.abs(d - 1))
    return (j / j.sum()).astype(np.float32)


def chunk_bounds(n_sentences: int, chunk_sentences: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_sentences, n_sentences)) for s in range(0, n_sentences, chunk_sentences)]


# --- corpora that are not in memory ------------------------------------------------------------------------


@dataclass
class SentenceRange(EncodedCorpus):
    """Sentences ``[first, first + n_sentences)`` of a corpus as an EncodedCorpus of their own: offsets from 0,
    word and pair ids of the whole corpus, vocabularies that know only their sizes, no pair table."""

    first: int = 0
    pairs_total: int = 0

    @property
    def n_pairs(self) -> int:
        return self.pairs_total


def sized_vocab(n: int) -> Vocab:
    """A vocabulary of ``n`` words that does not hold them (for a :class:`SentenceRange`)."""
    return Vocab(pa.nulls(n))


def sentence_range(corpus: EncodedCorpus, start: int, stop: int) -> SentenceRange:
    """Sentences ``[start, stop)`` of an in-memory corpus (views, no copy)."""
    so, to, co = corpus.src_offsets, corpus.tgt_offsets, corpus.cand_offsets
    empty = np.zeros(0, np.int32)
    return SentenceRange(
        src_ids=corpus.src_ids[so[start] : so[stop]],
        src_offsets=so[start : stop + 1] - so[start],
        tgt_ids=corpus.tgt_ids[to[start] : to[stop]],
        tgt_offsets=to[start : stop + 1] - to[start],
        src_vocab=sized_vocab(len(corpus.src_vocab)),
        tgt_vocab=sized_vocab(len(corpus.tgt_vocab)),
        cand_offsets=co[start : stop + 1] - co[start],
        cand_pair=corpus.cand_pair[co[start] : co[stop]],
        pair_src=empty,
        pair_tgt=empty,
        first=start,
        pairs_total=corpus.n_pairs,
    )


class EMCheckpoint(Protocol):
    """Where training saves its parameters after each iteration, and finds them again after a restart."""

    def load(self) -> tuple[int, Model] | None:
        """(iterations done, parameters after them), or None when nothing was saved."""
        ...

    def save(self, done: int, model: Model) -> None:
        """Record the parameters after ``done`` iterations (atomically: a crash keeps the previous ones)."""
        ...


class CorpusSource(Protocol):
    """What training needs of a corpus it does not hold: sizes, the pair table, sentence ranges on demand,
    and optionally a ``checkpoint`` (an :class:`EMCheckpoint`, or None)."""

    src_vocab: Any  # len() is the vocabulary size
    tgt_vocab: Any
    pair_src: np.ndarray
    pair_tgt: np.ndarray

    @property
    def n_sentences(self) -> int: ...

    @property
    def n_pairs(self) -> int: ...

    def sentence_range(self, start: int, stop: int) -> SentenceRange: ...


class InMemory:
    """An :class:`~prealign.lexicon.encode.EncodedCorpus` as a :class:`CorpusSource` (no checkpoint)."""

    checkpoint = None

    def __init__(self, corpus: EncodedCorpus) -> None:
        self.corpus = corpus
        self.src_vocab, self.tgt_vocab = corpus.src_vocab, corpus.tgt_vocab
        self.pair_src, self.pair_tgt = corpus.pair_src, corpus.pair_tgt

    @property
    def n_sentences(self) -> int:
        return self.corpus.n_sentences

    @property
    def n_pairs(self) -> int:
        return self.corpus.n_pairs

    def sentence_range(self, start: int, stop: int) -> SentenceRange:
        return sentence_range(self.corpus, start, stop)


# --- where the chunks live -----------------------------------------------------------------------------------


def _build_chunk(part: SentenceRange) -> Chunk:
    """One task: a chunk built from its sentences (kept in the object store for the whole training)."""
    return make_chunk(part, 0, part.n_sentences)


def _chunk_estep(chunk: Chunk, fwd: Params, bwd: Params, agreement: bool) -> tuple[np.ndarray, Counts, Counts]:
    """One E-step task: the chunk's pair ids and both directions' expected counts."""
    return (chunk.pairs, *_chunk_counts(chunk, fwd, bwd, agreement))


def _decode(chunk: Chunk, part: SentenceRange, model: Model, threshold: float) -> tuple[np.ndarray, ...]:
    """One decoding task: both directions' link keys of a chunk."""
    return _chunk_links(chunk, part, model, threshold, part.first)


class _LocalChunks:
    """All chunks in this process; each iteration maps the E-step over them."""

    def __init__(self, ex: Executor, source: CorpusSource, bounds: Sequence[tuple[int, int]]) -> None:
        self.ex = ex
        self.parts = [source.sentence_range(s0, s1) for s0, s1 in bounds]
        self.chunks = [make_chunk(p, 0, p.n_sentences) for p in self.parts]

    def counts(self, fwd: Params, bwd: Params, agree: bool) -> Iterator[tuple[np.ndarray, Counts, Counts]]:
        fwd_h, bwd_h = self.ex.put(fwd), self.ex.put(bwd)
        results = self.ex.map(_chunk_counts, [(c, fwd_h, bwd_h, agree) for c in self.chunks])
        for chunk, (f, b) in zip(self.chunks, results, strict=True):
            yield chunk.pairs, f, b

    def decode(self, model: Model, threshold: float) -> list[Any]:
        args = [(c, p, model, threshold, p.first) for c, p in zip(self.chunks, self.parts, strict=True)]
        return self.ex.map_handles(_chunk_links, args)


class _RemoteChunks:
    """Chunks built once each by a task and kept in the object store; every E-step is one task per chunk
    (placed where its chunk is, retried when its worker dies; a chunk lost with a node is rebuilt from its
    lineage). Tasks go out most expensive chunk first, so that an iteration ends on short ones; the driver
    fetches the counts one chunk at a time, in chunk order."""

    def __init__(self, ex: Executor, source: CorpusSource, bounds: Sequence[tuple[int, int]]) -> None:
        self.ex, self.source, self.bounds = ex, source, list(bounds)
        self.parts: list[Any] = []
        self.chunks: list[Any] = []
        self.order: list[int] = []

    def _build(self) -> None:
        costs = []
        for s0, s1 in self.bounds:
            part = self.source.sentence_range(s0, s1)
            costs.append(len(part.cand_pair))  # the E-step's work grows with the candidate links
            self.parts.append(self.ex.put(part))
            del part
        self.order = sorted(range(len(self.bounds)), key=lambda c: (-costs[c], c))
        self.chunks = self._in_order(_build_chunk, [(p,) for p in self.parts])

    def _in_order(self, func: Callable[..., Any], args: list[tuple]) -> list[Any]:
        """Handles of ``func`` over ``args`` (one per chunk), submitted by cost, returned in chunk order."""
        handles = self.ex.map_handles(func, [args[c] for c in self.order])
        out: list[Any] = [None] * len(args)
        for c, h in zip(self.order, handles, strict=True):
            out[c] = h
        return out

    def counts(self, fwd: Params, bwd: Params, agree: bool) -> Iterator[tuple[np.ndarray, Counts, Counts]]:
        if not self.chunks:
            self._build()
        fwd_h, bwd_h = self.ex.put(fwd), self.ex.put(bwd)
        handles = self._in_order(_chunk_estep, [(c, fwd_h, bwd_h, agree) for c in self.chunks])
        for i in range(len(handles)):
            result = self.ex.get([handles[i]])[0]
            handles[i] = None  # the object store may free it now
            yield result

    def decode(self, model: Model, threshold: float) -> list[Any]:
        if not self.chunks:
            self._build()
        model_h = self.ex.put(model)
        args = [(c, p, model_h, threshold) for c, p in zip(self.chunks, self.parts, strict=True)]
        return self._in_order(_decode, args)


def train_and_align(
    corpus: EncodedCorpus | CorpusSource,
    config: BuiltinConfig = BuiltinConfig(),
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> tuple[Model, list[Any]]:
    """Train both directions, then decode: the model and, per chunk, a handle to (forward, backward) keys."""
    ex = executor or LocalExecutor()
    source: CorpusSource = InMemory(corpus) if isinstance(corpus, EncodedCorpus) else corpus
    checkpoint: EMCheckpoint | None = getattr(source, "checkpoint", None)
    bounds = chunk_bounds(source.n_sentences, config.chunk_sentences)
    schedule = ["Model 1"] * config.ibm1_iterations + ["HMM"] * config.hmm_iterations
    saved = checkpoint.load() if checkpoint is not None else None
    done, (fwd, bwd) = (0, (_initial(source, FORWARD, config), _initial(source, BACKWARD, config)))
    if saved is not None:
        done, (fwd, bwd) = saved[0], (saved[1].forward, saved[1].backward)
        for it in range(done):
            if progress is not None:
                progress(f"{schedule[it]} iteration {it + 1}/{len(schedule)} (saved)")
    chunks = _LocalChunks(ex, source, bounds) if isinstance(ex, LocalExecutor) else _RemoteChunks(ex, source, bounds)
    for it in range(done, len(schedule)):
        hmm = schedule[it] == "HMM"
        if hmm and fwd.jump is None:
            for p in (fwd, bwd):
                p.jump = _initial_jump(config.max_jump)
        totals = (_Totals(source.n_pairs, fwd, config.max_jump), _Totals(source.n_pairs, bwd, config.max_jump))
        for pairs, f, b in chunks.counts(fwd, bwd, config.agreement and it > 0):
            totals[FORWARD].add(pairs, f)
            totals[BACKWARD].add(pairs, b)
        fwd = _mstep(source, totals[FORWARD], FORWARD, fwd, config, hmm)
        bwd = _mstep(source, totals[BACKWARD], BACKWARD, bwd, config, hmm)
        del totals
        if checkpoint is not None:
            checkpoint.save(it + 1, Model(fwd, bwd))
        if progress is not None:
            progress(f"{schedule[it]} iteration {it + 1}/{len(schedule)}")
    model = Model(fwd, bwd)
    return model, chunks.decode(model, config.threshold)
