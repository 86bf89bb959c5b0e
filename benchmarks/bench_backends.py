"""Pairs per second of every word-aligner backend on this machine's CPU, in one run, against the built-in aligner.

    python benchmarks/bench_backends.py [--data ../shared/data] [--pairs 20000] [--neural-pairs 256]
                                        [--model DIR] [--batch-size 32] [--layer 8] [--device cpu]

Corpus: ``--pairs`` Tatoeba en-fr pairs spread evenly over ../shared/data's file (which is sorted by length),
segmented like ``extract-lexicon`` does (the built-in demo corpus when the data is absent). The built-in aligner
(the reference, one process) and eflomal align all of them, both directions, symmetrised with
grow-diag-final-and; the embedding aligners align ``--neural-pairs`` pairs spread evenly over the same corpus
(the same length distribution).

Model: ``--model DIR`` (a local encoder), else a randomly initialised BERT of bert-base-multilingual's shape
(12 layers of which ``--layer`` run, hidden size 768, 12 heads) with a WordPiece vocabulary of 16,000 trained on
the corpus: the speed of a real model of that shape, not its accuracy. For the neural backends the model load
is timed apart; pairs/s is the steady state. Also run: simalign argmax with one pair per forward pass, to show
what batching buys.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prealign.lexicon.aligners import make_aligner
from prealign.lexicon.aligners.neural import NeuralConfig, NeuralWorker
from prealign.lexicon.aligners.random_bert import save_random_bert
from prealign.lexicon.em import BuiltinConfig
from prealign.lexicon.encode import encode_corpus
from prealign.lexicon.symmetrize import symmetrize
from prealign.pipelines.em_stage import align_in_memory
from prealign.text import Segmenter, SegmenterConfig

ROOT = Path(__file__).resolve().parents[1]


def spread(total: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(total)``."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).astype(int))


def load_pairs(data: Path, n: int) -> tuple[list[str], list[str], str]:
    path = data / "parallel/tatoeba.en-fr.tsv"
    if path.exists():
        lines = path.read_text("utf-8").splitlines()
        rows = [lines[k].split("\t")[:2] for k in spread(len(lines), n)]  # the file is sorted by length
        return [r[0] for r in rows], [r[1] for r in rows], f"Tatoeba en-fr, {len(rows):,} pairs spread over the file"
    from prealign.demo import write_corpus

    with tempfile.TemporaryDirectory() as tmp:
        rows = [line.split("\t") for line in write_corpus(Path(tmp) / "d.tsv", n).read_text("utf-8").splitlines()]
    return [r[0] for r in rows], [r[1] for r in rows], f"built-in demo corpus, {len(rows):,} pairs (no {path})"


def random_bert(words: list[list[str]], out: Path, layers: int) -> Path:
    """A bert-base-shaped model with random weights and a 16k WordPiece vocabulary trained on ``words``."""
    return save_random_bert((" ".join(s) for s in words), out, num_hidden_layers=layers)


def run_statistical(name: str, corpus) -> tuple[float, int]:
    """(align s, grow-diag-final-and links): the built-in aligner's EM in this process (its chunk files in a
    temporary directory, which counts), or eflomal through its Python API."""
    start = time.perf_counter()
    if name == "builtin":
        with tempfile.TemporaryDirectory(prefix="bench-backends-") as work:
            parts = [align_in_memory(corpus, BuiltinConfig(), Path(work))]
    else:
        parts = make_aligner(name).align(corpus).parts
    links = sum(len(symmetrize(fwd, bwd, "grow-diag-final-and")) for fwd, bwd in parts)
    return time.perf_counter() - start, links


def run_neural(name: str, config: NeuralConfig, corpus) -> tuple[float, float, float, int, int]:
    """(prepare s, load s, align s, links, too long) with the model in this process."""
    torch.set_num_threads(os.cpu_count() or 1)
    aligner = make_aligner(name, config)
    t = time.perf_counter()
    prep = aligner.prepare(corpus)
    prepare_s = time.perf_counter() - t
    t = time.perf_counter()
    worker = NeuralWorker(prep.spec, config.device)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    links = sum(len(worker.align_chunk(chunk)) for chunk in prep.chunks)
    return prepare_s, load_s, time.perf_counter() - t, links, prep.too_long


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--neural-pairs", type=int, default=256)
    ap.add_argument("--model", help="a local encoder directory (default: a random bert-base-shaped model)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src_text, tgt_text, what = load_pairs(args.data, args.pairs)
    src = Segmenter(SegmenterConfig(apostrophe="next")).segment_batch(src_text)
    tgt = Segmenter(SegmenterConfig(apostrophe="previous")).segment_batch(tgt_text)
    corpus = encode_corpus(src, tgt)
    pick = spread(len(src), args.neural_pairs)
    small = encode_corpus([src[k] for k in pick], [tgt[k] for k in pick])
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}")
    print(f"corpus: {what}; {np.mean([len(s) for s in src]):.1f} / {np.mean([len(t) for t in tgt]):.1f} words")
    rows = []
    wall, links = run_statistical("builtin", corpus)
    reference = corpus.n_sentences / wall
    rows.append(("builtin (reference, 1 process)", corpus.n_sentences, wall, links, ""))
    try:
        wall, links = run_statistical("eflomal", corpus)
        rows.append(("eflomal", corpus.n_sentences, wall, links, ""))
    except Exception as exc:  # noqa: BLE001 (a benchmark reports what it could not run)
        print(f"eflomal not run: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, described = args.model, f"model {args.model}"
        else:
            model = str(random_bert(src + tgt, Path(tmp), 12))
            described = "random bert-base-shaped BERT (12 layers, 768 hidden, 16k WordPiece vocabulary)"
        print(
            f"neural: {described}, layer {args.layer}, batch {args.batch_size}, {args.device}, {os.cpu_count()} threads"
        )
        runs = [
            ("simalign", "argmax", args.batch_size),
            ("simalign", "itermax", args.batch_size),
            ("simalign", "match", args.batch_size),
            ("awesome", "softmax", args.batch_size),
            ("simalign", "argmax", 1),
        ]
        for name, method, batch in runs:
            config = NeuralConfig(model, method, args.device, batch, args.layer)  # type: ignore[arg-type]
            prep_s, load_s, wall, links, too_long = run_neural(name, config, small)
            note = f"prepare {prep_s:.2f} s, load {load_s:.2f} s" + (f", {too_long} too long" if too_long else "")
            rows.append((f"{name} {method}, batch {batch}", small.n_sentences, wall, links, note))
    print(f"{'backend':<34}{'pairs':>8}{'align s':>9}{'pairs/s':>10}{'x builtin':>11}{'links':>9}  notes")
    for label, n, wall, links, note in rows:
        rate = n / wall
        print(f"{label:<34}{n:>8,}{wall:>9.2f}{rate:>10.1f}{rate / reference:>11.4f}{links:>9,}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
