"""Align the standard Hansards + Tatoeba en-fr setting both ways; time it beside eflomal in the same run.

The standard setting (../shared/data/README.md): the 447 gold Hansards pairs first, then the 142,787 Tatoeba
pairs tokenised the way the gold side is (lowercase, punctuation split, French elisions kept with the
article, English clitics with the next word). Both aligners read the same pre-tokenised files, align both
directions, and are scored on the gold pairs with the same symmetrisation code.

    python benchmarks/bench_align.py [--data ../shared/data] [--workers 2] [--no-eflomal]
    python benchmarks/bench_align.py --write-corpus DIR    # just the two files, for the CLI

Prints wall and CPU seconds and AER (intersect, grow-diag-final-and) for: the built-in aligner in one
process (CPU time is exact), the same through Ray with N workers (wall time, Ray already started), and eflomal
(its Python API runs its C binary; CPU time includes that child process), with the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prealign.lexicon.builtin_aligner import BuiltinConfig, train_and_align
from prealign.lexicon.encode import encode_corpus
from prealign.lexicon.evaluate import alignment_scores
from prealign.lexicon.executor import LocalExecutor
from prealign.lexicon.links import read_gold, read_pharaoh
from prealign.lexicon.symmetrize import link_keys, sentence_links, symmetrize
from prealign.text import Segmenter, SegmenterConfig

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def prepare(data: Path, out: Path) -> tuple[Path, Path]:
    """Write the standard setting as two pre-tokenised, line-aligned files."""
    gold = [line.split("|||") for line in (data / "gold/hansards.en-fr.src-tgt").read_text("utf-8").splitlines()]
    pairs = [line.split("\t") for line in (data / "parallel/tatoeba.en-fr.tsv").read_text("utf-8").splitlines()]
    en = Segmenter(SegmenterConfig(apostrophe="next")).segment_batch([p[0] for p in pairs])
    fr = Segmenter(SegmenterConfig(apostrophe="previous")).segment_batch([p[1] for p in pairs])
    src = [g[0].lower().split() for g in gold] + en
    tgt = [g[1].lower().split() for g in gold] + fr
    src_path, tgt_path = out / "std.en", out / "std.fr"
    src_path.write_text("\n".join(" ".join(s) for s in src) + "\n", encoding="utf-8")
    tgt_path.write_text("\n".join(" ".join(t) for t in tgt) + "\n", encoding="utf-8")
    return src_path, tgt_path


def read_tokens(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text("utf-8").splitlines()]


def scores(fwd: np.ndarray, bwd: np.ndarray, n: int, gold: tuple) -> dict[str, float]:
    out = {}
    for method in ("intersect", "grow-diag-final-and"):
        links = sentence_links(symmetrize(fwd, bwd, method), n)
        out[method] = alignment_scores(links, *gold)["aer"]
    return out


def run_builtin(src_path: Path, tgt_path: Path) -> tuple[float, float, np.ndarray, np.ndarray, int]:
    import torch

    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), cpu_seconds()
    corpus = encode_corpus(read_tokens(src_path), read_tokens(tgt_path))
    _, handles = train_and_align(corpus, BuiltinConfig(), LocalExecutor())
    fwd = np.concatenate([h[0] for h in handles])
    bwd = np.concatenate([h[1] for h in handles])
    return time.perf_counter() - wall, cpu_seconds() - cpu, fwd, bwd, corpus.n_sentences


def run_ray(src_path: Path, tgt_path: Path, workers: int, tmp: Path) -> tuple[float, float]:
    from prealign.pipelines.extract import AlignJob, ParallelInput, align
    from prealign.pipelines.ray_runtime import ray_session

    seg = SegmenterConfig(pretokenized=True)
    job = AlignJob(ParallelInput(src_path, tgt_path), seg, seg, progress=False, workers=workers)
    start = time.perf_counter()
    with ray_session(None, workers):
        started = time.perf_counter() - start
        wall = time.perf_counter()
        align(job, tmp / "ray.links")
        return time.perf_counter() - wall, started


def run_eflomal(src_path: Path, tgt_path: Path, tmp: Path) -> tuple[float, float, np.ndarray, np.ndarray]:
    import eflomal

    wall, cpu = time.perf_counter(), cpu_seconds()
    with open(src_path, encoding="utf-8") as s, open(tgt_path, encoding="utf-8") as t:
        eflomal.Aligner().align(s, t, links_filename_fwd=str(tmp / "ef.fwd"), links_filename_rev=str(tmp / "ef.rev"))
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu

    def keys(path: Path) -> np.ndarray:
        parts = [link_keys(np.full(len(a), s), a[:, 0], a[:, 1]) for s, a in enumerate(read_pharaoh(path))]
        return np.sort(np.concatenate(parts))

    return wall, cpu, keys(tmp / "ef.fwd"), keys(tmp / "ef.rev")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-eflomal", action="store_true")
    ap.add_argument("--write-corpus", type=Path, metavar="DIR", help="only write DIR/std.en and DIR/std.fr")
    args = ap.parse_args()
    if not (args.data / "gold/hansards.en-fr.gold").exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    if args.write_corpus:
        args.write_corpus.mkdir(parents=True, exist_ok=True)
        print("wrote", *prepare(args.data, args.write_corpus))
        return 0
    gold = read_gold(args.data / "gold/hansards.en-fr.gold")
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src_path, tgt_path = prepare(args.data, tmp)
        rows = []
        wall, cpu, fwd, bwd, n = run_builtin(src_path, tgt_path)
        ours = scores(fwd, bwd, n, gold)
        rows.append(("prealign builtin, 1 process", wall, cpu, ours))
        ray_wall, ray_start = run_ray(src_path, tgt_path, args.workers, tmp)
        rows.append((f"prealign builtin, Ray {args.workers} workers", ray_wall, float("nan"), ours))
        ef = None
        if not args.no_eflomal:
            try:
                ef_wall, ef_cpu, ef_fwd, ef_bwd = run_eflomal(src_path, tgt_path, tmp)
                ef = (ef_wall, ef_cpu)
                rows.append(("eflomal (reference)", ef_wall, ef_cpu, scores(ef_fwd, ef_bwd, n, gold)))
            except ImportError:
                print("eflomal is not installed (pip install 'prealign-data[eflomal]'): no reference run")
    print(f"{n:,} sentence pairs, both directions; AER on the 447 gold pairs")
    print(f"{'aligner':<34}{'wall s':>8}{'CPU s':>8}{'AER int':>9}{'AER gdfa':>9}")
    for name, w, c, s in rows:
        print(f"{name:<34}{w:>8.1f}{c:>8.1f}{s['intersect']:>9.4f}{s['grow-diag-final-and']:>9.4f}")
    print(f"(Ray start-up, not included above: {ray_start:.1f} s)")
    if ef is not None:
        print(
            f"ratio eflomal/prealign: CPU {ef[1] / cpu:.2f}x, wall {ef[0] / wall:.2f}x (1 process), "
            f"wall {ef[0] / ray_wall:.2f}x (Ray {args.workers} workers); above 1 means prealign is faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
