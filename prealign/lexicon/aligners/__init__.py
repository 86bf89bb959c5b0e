"""Word aligners behind one interface (:class:`~prealign.lexicon.aligners.base.WordAligner`).

``eflomal`` (its Python API), ``simalign`` and ``awesome`` (embedding aligners on a transformers encoder).
:func:`make_aligner` builds one from the job's options. The ``builtin`` aligner (IBM Model 1 + HMM, no
download) is not one of them: its EM runs as stages over the corpus files (:mod:`prealign.lexicon.em` for
the steps, ``prealign.pipelines.em_stage`` for the loop).
"""

from __future__ import annotations

from typing import Any

from prealign.lexicon.aligners.base import BACKENDS, NEURAL, Aligned, LocalWorkers, WordAligner, WorkerPool

__all__ = ["BACKENDS", "NEURAL", "Aligned", "LocalWorkers", "WordAligner", "WorkerPool", "make_aligner"]


def make_aligner(name: str, options: Any = None) -> WordAligner:
    """The aligner ``name`` with its options (``options``: NeuralConfig for simalign/awesome, EflomalConfig or
    None for eflomal). Raises InputError when its extra is not installed or a model directory is missing."""
    if name == "eflomal":
        from prealign.lexicon.aligners.eflomal_backend import EflomalAligner

        return EflomalAligner(options)
    if name in NEURAL:
        from prealign.lexicon.aligners.neural import NeuralAligner, NeuralConfig

        if not isinstance(options, NeuralConfig):
            raise ValueError(f"--aligner {name} needs a NeuralConfig (its --model and options)")
        return NeuralAligner(name, options)
    raise ValueError(f"unknown aligner {name!r} (builtin runs as stages); choose from {', '.join(BACKENDS)}")
