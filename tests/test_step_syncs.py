"""Neither training loop reads a value back from the device inside a step (on a GPU each read would wait for it):
the number of tensor reads (``item``, ``tolist``, ``bool``, ``float``, ``int``) does not grow with the steps
between two logging intervals. Host work on CPU tensors made for the batch is left out."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_align_init import PAIRS, lexicon_df, tiny_model
from test_pretrain import _corpus, _make_shards

from prealign.codeswitch.tokenizer import train_tokenizer
from prealign.train.align_init import AlignInitConfig, train_align_init
from prealign.train.pretrain import PretrainConfig, pretrain

READS = ("item", "tolist", "__bool__", "__float__", "__int__")
# where a read of a host tensor is expected: the batch is built on the CPU before it goes to the device, and
# torch's AdamW keeps its step counter on the CPU (``_get_value``; the fused CUDA kernel reads none)
HOST_WORK = {"make_batch", "next", "encode_words", "pad_ids", "collate", "next_batch", "label_count", "_get_value"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count_reads(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> int:
    """Tensor reads made while ``run()`` runs, outside :data:`HOST_WORK`."""
    reads = []
    with monkeypatch.context() as patch:
        for name in READS:
            original = getattr(torch.Tensor, name)

            def wrapper(self, *args, _original=original, **kwargs):  # noqa: ANN001, ANN202
                frame, names = sys._getframe(1), set()
                while frame is not None and len(names) < 12:
                    names.add(frame.f_code.co_name)
                    frame = frame.f_back
                if not names & HOST_WORK:
                    reads.append(names)
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, wrapper)
        run()
    return len(reads)


def test_pretrain_reads_back_only_at_the_logging_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_shards(tmp_path / "shards", tmp_path, _corpus(tmp_path / "corpus.txt", docs=80), n_shards=2)
    base = PretrainConfig(batch_size=4, warmup=1, eval_every=0, eval_fraction=0.0, save_every=0, device="cpu")
    counts = []
    for steps in (3, 9):
        cfg = replace(base, steps=steps, log_every=steps)
        counts.append(
            count_reads(
                monkeypatch, lambda c=cfg, s=steps: pretrain(tmp_path / "shards", tmp_path / f"r{s}", c, progress=False)
            )
        )
    assert counts[0] == counts[1], counts  # one log, one checkpoint, whatever the number of steps


def test_align_init_reads_back_only_at_the_logging_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(w for pair in PAIRS for w in pair) + "\n", "utf-8")
    tokenizer = train_tokenizer([corpus], 300, min_frequency=1)
    counts = []
    for steps in (3, 9):
        config = AlignInitConfig(steps=steps, batch_size=8, warmup=1, log_every=steps, device="cpu")
        model = tiny_model(tokenizer)
        counts.append(
            count_reads(monkeypatch, lambda m=model, c=config: train_align_init(m, tokenizer, lexicon_df(), c))
        )
    assert counts[0] == counts[1], counts
