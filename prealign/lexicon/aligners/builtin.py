"""The built-in aligner (IBM Model 1 + HMM with agreement) behind the :class:`WordAligner` interface."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prealign.lexicon.aligners.base import Aligned, Progress, WorkerPool
from prealign.lexicon.builtin_aligner import BuiltinConfig, CorpusSource, train_and_align
from prealign.lexicon.encode import EncodedCorpus
from prealign.lexicon.executor import Executor


class BuiltinAligner:
    """Trains on the corpus itself through :func:`~prealign.lexicon.builtin_aligner.train_and_align`."""

    name = "builtin"

    def __init__(self, config: BuiltinConfig | None = None) -> None:
        self.config = config or BuiltinConfig()

    def describe(self) -> dict[str, Any]:
        return asdict(self.config)

    def steps(self, corpus: EncodedCorpus | CorpusSource) -> int | None:
        return self.config.ibm1_iterations + self.config.hmm_iterations

    def align(
        self,
        corpus: EncodedCorpus | CorpusSource,
        executor: Executor,
        pool: WorkerPool | None = None,
        progress: Progress | None = None,
    ) -> Aligned:
        """Train and decode; ``corpus`` may also be a :class:`CorpusSource` (chunks streamed from disk)."""
        _, handles = train_and_align(corpus, self.config, executor, progress)
        return Aligned(handles, {})
