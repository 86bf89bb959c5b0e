"""eflomal (Östling & Tiedemann 2016) through its Python API: both directions, symmetrised by our code.

eflomal runs its own binary (a child process of this one, on the driver machine) and writes each
direction's links to a file; we read them back as link keys. eflomal gives no links for a sentence of 1,024
or more words on either side: such pairs are counted as ``too_long``. Its sampler is randomised, so two runs
may differ slightly.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prealign.errors import InputError
from prealign.lexicon.aligners.base import Aligned, ProgressCallback, WorkerPool, keys_from_sentence_links, require
from prealign.lexicon.encode import EncodedCorpus

MAX_WORDS = 1023  # eflomal leaves longer sentences unaligned


@dataclass(frozen=True)
class EflomalConfig:
    """eflomal's own options (its defaults)."""

    model: int = 3  # 1: IBM Model 1, 2: + HMM, 3: + fertility
    n_samplers: int = 3
    rel_iterations: float = 1.0
    null_prior: float = 0.2

    def __post_init__(self) -> None:
        if self.model not in (1, 2, 3):
            raise ValueError(f"eflomal model must be 1, 2 or 3, not {self.model}")
        if self.n_samplers < 1 or self.rel_iterations <= 0:
            raise ValueError("eflomal needs n_samplers >= 1 and rel_iterations > 0")


def _read_links(path: Path, n_sentences: int) -> np.ndarray:
    from prealign.lexicon.links import read_pharaoh

    links = read_pharaoh(path) if path.stat().st_size else []
    if len(links) < n_sentences:  # trailing empty lines may be left out
        links = list(links) + [np.zeros((0, 2), np.int32)] * (n_sentences - len(links))
    return keys_from_sentence_links(links[:n_sentences])


class EflomalAligner:
    """Both directions from eflomal; the caller's symmetrisation combines them."""

    name = "eflomal"

    def __init__(self, config: EflomalConfig | None = None) -> None:
        self.config = config or EflomalConfig()
        require("eflomal", self.name, "eflomal")

    def describe(self) -> dict[str, Any]:
        return asdict(self.config)

    def steps(self, corpus: EncodedCorpus) -> int | None:
        return None

    def align(
        self,
        corpus: EncodedCorpus,
        pool: WorkerPool | None = None,
        progress: ProgressCallback | None = None,
    ) -> Aligned:
        from prealign.lexicon.aligners.base import sentence_strings

        try:
            import eflomal
        except ImportError as exc:  # present but broken (e.g. its binary missing)
            raise InputError(f"eflomal cannot be imported ({exc}): pip install 'prealign-data[eflomal]'") from exc
        n = corpus.n_sentences
        too_long = int(np.count_nonzero((corpus.src_lengths > MAX_WORDS) | (corpus.tgt_lengths > MAX_WORDS)))
        stats = {"too_long": too_long, "max_words": MAX_WORDS}
        if n == 0:
            return Aligned([(np.zeros(0, np.int64), np.zeros(0, np.int64))], stats)
        src = sentence_strings(corpus.src_vocab.words, corpus.src_ids, corpus.src_offsets)
        tgt = sentence_strings(corpus.tgt_vocab.words, corpus.tgt_ids, corpus.tgt_offsets)
        c = self.config
        aligner = eflomal.Aligner(
            model=c.model, n_samplers=c.n_samplers, rel_iterations=c.rel_iterations, null_prior=c.null_prior
        )
        with tempfile.TemporaryDirectory(prefix="prealign-eflomal-") as tmp:
            fwd_path, bwd_path = Path(tmp) / "fwd", Path(tmp) / "bwd"
            aligner.align(src, tgt, links_filename_fwd=str(fwd_path), links_filename_rev=str(bwd_path), quiet=True)
            forward, backward = _read_links(fwd_path, n), _read_links(bwd_path, n)
        if progress is not None:
            progress("eflomal")
        return Aligned([(forward, backward)], stats)
