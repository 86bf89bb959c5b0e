"""The interface every word aligner implements, and what the backends share.

A :class:`WordAligner` takes an :class:`~prealign.lexicon.encode.EncodedCorpus` and returns, per chunk of
sentences, the link keys of both directions (forward and backward, as in
:mod:`prealign.lexicon.symmetrize`); the caller symmetrises them. Statistical aligners (builtin, eflomal)
give two real directions; the embedding aligners give one alignment decided by their extraction method, as
both directions, so that every symmetrisation returns it unchanged.

Backends that hold a model (the neural ones) run their chunks on a :class:`WorkerPool`: one model load per
worker. :class:`LocalWorkers` is one worker in this process; ``prealign.pipelines.neural_actors`` gives Ray
actors. This package imports neither Ray nor click.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prealign.errors import InputError
from prealign.lexicon.encode import EncodedCorpus

ProgressCallback = Callable[[str], None]  # called with one line of progress text
BACKENDS = ("builtin", "simalign", "awesome", "eflomal")
NEURAL = ("simalign", "awesome")
# every character Python's str.split() splits on (what eflomal and whitespace tokenisers use)
_SPACE = (
    r"[\t\n\x{b}\x{c}\r \x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)


@dataclass
class Aligned:
    """What an aligner returns: per chunk, ``(forward, backward)`` link keys."""

    parts: list[Any]
    stats: dict[str, Any] = field(default_factory=dict)


class WorkerPool(Protocol):
    """Runs a method of stateful workers (built once each by ``factory(device)``) over argument tuples."""

    device: str  # where the workers run: "cpu" or "cuda"
    workers: int

    def run(self, factory: Callable[[str], Any], method: str, args: Sequence[tuple]) -> Iterator[Any]:
        """Yield ``getattr(worker, method)(*a)`` for each ``a``, in input order."""
        ...


class WordAligner(Protocol):
    """A word aligner: builtin, eflomal, simalign-style or awesome-align-style."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Its options, as recorded in the lexicon's metadata."""
        ...

    def steps(self, corpus: EncodedCorpus) -> int | None:
        """How many progress steps :meth:`align` reports (None: one, at the end)."""
        ...

    def align(
        self,
        corpus: EncodedCorpus,
        pool: WorkerPool | None = None,
        progress: ProgressCallback | None = None,
    ) -> Aligned:
        """Both directions' link keys of every sentence pair of ``corpus``."""
        ...


class LocalWorkers:
    """One worker in this process (``--workers 0``, or a GPU on the driver machine)."""

    workers = 1

    def __init__(self, device: str) -> None:
        self.device = device

    def run(self, factory: Callable[[str], Any], method: str, args: Sequence[tuple]) -> Iterator[Any]:
        worker = factory(self.device)
        call = getattr(worker, method)
        for a in args:
            yield call(*a)


def require(module: str, backend: str, extra: str) -> None:
    """Raise a one-line :class:`InputError` naming what to install when ``module`` cannot be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise InputError(f"--aligner {backend} needs the {module} package: pip install 'prealign-data[{extra}]'")


def sentence_strings(words: pa.Array, ids: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Each sentence's words joined by single spaces (whitespace inside a word becomes ``_``)."""
    flat = words.take(pa.array(ids, type=pa.int32()))
    flat = pc.replace_substring_regex(flat.cast(pa.large_string()), _SPACE, "_")
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), flat)
    return pc.binary_join(lists, pa.scalar(" ", pa.large_string())).to_pylist()


def keys_from_sentence_links(links: Sequence[np.ndarray], first_sentence: int = 0) -> np.ndarray:
    """Sorted corpus link keys from per-sentence ``(k, 2)`` arrays of (source index, target index)."""
    from prealign.lexicon.symmetrize import link_keys

    if not links:
        return np.zeros(0, np.int64)
    sizes = np.fromiter((len(a) for a in links), dtype=np.int64, count=len(links))
    pairs = np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1, 2) for a in links])
    sent = np.repeat(np.arange(len(links), dtype=np.int64) + first_sentence, sizes)
    return np.sort(link_keys(sent, pairs[:, 0], pairs[:, 1]))
