"""Word aligners behind one interface (:class:`~prealign.lexicon.aligners.base.WordAligner`).

``builtin`` (IBM Model 1 + HMM, no download), ``eflomal`` (its Python API), ``simalign`` and ``awesome``
(embedding aligners on a transformers encoder). :func:`make_aligner` builds one from the job's options.
"""

from __future__ import annotations

from typing import Any

from prealign.lexicon.aligners.base import BACKENDS, NEURAL, Aligned, LocalWorkers, WordAligner, WorkerPool
from prealign.lexicon.builtin_aligner import BuiltinConfig

__all__ = ["BACKENDS", "NEURAL", "Aligned", "LocalWorkers", "WordAligner", "WorkerPool", "make_aligner"]


def make_aligner(name: str, builtin: BuiltinConfig | None = None, options: Any = None) -> WordAligner:
    """The aligner ``name`` with its options (``options``: NeuralConfig for simalign/awesome, EflomalConfig or
    None for eflomal). Raises InputError when its extra is not installed or a model directory is missing."""
    if name == "builtin":
        from prealign.lexicon.aligners.builtin import BuiltinAligner

        return BuiltinAligner(builtin)
    if name == "eflomal":
        from prealign.lexicon.aligners.eflomal_backend import EflomalAligner

        return EflomalAligner(options)
    if name in NEURAL:
        from prealign.lexicon.aligners.neural import NeuralAligner, NeuralConfig

        if not isinstance(options, NeuralConfig):
            raise ValueError(f"--aligner {name} needs a NeuralConfig (its --model and options)")
        return NeuralAligner(name, options)
    raise ValueError(f"unknown aligner {name!r}; choose from {', '.join(BACKENDS)}")
