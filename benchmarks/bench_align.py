"""Align the standard Hansards + Tatoeba en-fr setting both ways; time it beside eflomal in the same run, and
time the command line's default path against ``--workers 0`` and ``--workers 2`` on the Tatoeba file.

The standard setting (../shared/data/README.md): the 447 gold Hansards pairs first, then the 142,787 Tatoeba
pairs tokenised the way the gold side is (lowercase, punctuation split, French elisions kept with the
article, English clitics with the next word). Both aligners read the same pre-tokenised files, align both
directions, and are scored on the gold pairs with the same symmetrisation code.

    python benchmarks/bench_align.py [--data ../shared/data] [--workers 2] [--no-eflomal] [--no-cli]
    python benchmarks/bench_align.py --cli-only          # only the command-line runs
    python benchmarks/bench_align.py --pairs 2000        # a quick check: the first 2,000 Tatoeba pairs only
    python benchmarks/bench_align.py --write-corpus DIR  # just the two files, for the CLI

Prints wall and CPU seconds and AER (intersect, grow-diag-final-and) for: the built-in aligner in this process
(``prealign.pipelines.em_stage.align_in_memory``, its chunk files in a temporary directory; CPU time is exact),
the same setting through ``align`` on Ray with N workers (wall time, Ray already started), and eflomal (its
Python API runs its C binary; CPU time includes that child process), with the ratios.

Then the command line as a user runs it, each a fresh process, on ../shared/data/parallel/tatoeba.en-fr.tsv:
``prealign-data align FILE --src-lang en --tgt-lang fr -o OUT -q`` with no ``--workers`` (the default path:
the job chooses where to run, ``extract.choose_executor``, printed), with ``--workers 0`` (in this process)
and with ``--workers 2`` (embedded Ray, its start included). Prints each run's wall time (process start to
exit) and the job's own seconds, the ratios to ``--workers 0``, and whether the three links files are the
same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prealign.lexicon.em import BuiltinConfig
from prealign.lexicon.encode import encode_corpus
from prealign.lexicon.evaluate import alignment_scores
from prealign.lexicon.links import read_gold, read_pharaoh
from prealign.lexicon.symmetrize import link_keys, sentence_links, symmetrize
from prealign.pipelines.em_stage import align_in_memory
from prealign.text import Segmenter, SegmenterConfig

ROOT = Path(__file__).resolve().parents[1]
TATOEBA = Path("parallel/tatoeba.en-fr.tsv")


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def tatoeba_lines(data: Path, pairs: int | None) -> list[str]:
    """The Tatoeba en-fr file's lines (the first ``pairs`` of them)."""
    lines = (data / TATOEBA).read_text("utf-8").splitlines()
    return lines if pairs is None else lines[:pairs]


def prepare(data: Path, out: Path, n_pairs: int | None = None) -> tuple[Path, Path]:
    """Write the standard setting (with the first ``n_pairs`` Tatoeba pairs) as two pre-tokenised files."""
    gold = [line.split("|||") for line in (data / "gold/hansards.en-fr.src-tgt").read_text("utf-8").splitlines()]
    pairs = [line.split("\t") for line in tatoeba_lines(data, n_pairs)]
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


def run_builtin(src_path: Path, tgt_path: Path, tmp: Path) -> tuple[float, float, np.ndarray, np.ndarray, int]:
    """The built-in aligner in this process: encoding, the EM over chunk files in ``tmp``, decoding."""
    import torch

    torch.set_num_threads(1)
    wall, cpu = time.perf_counter(), cpu_seconds()
    corpus = encode_corpus(read_tokens(src_path), read_tokens(tgt_path))
    fwd, bwd = align_in_memory(corpus, BuiltinConfig(), tmp / "em-work")
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


def run_cli(pairs: Path, out: Path, workers: int | None) -> tuple[float, float, bytes]:
    """``prealign-data align`` in a fresh process: (wall s from start to exit, the job's own seconds, links)."""
    out.mkdir(parents=True, exist_ok=True)
    links = out / "links.txt"
    cmd = [sys.executable, "-m", "prealign.cli", "align", str(pairs), "--src-lang", "en", "--tgt-lang", "fr"]
    cmd += ["-o", str(links), "-q"] + ([] if workers is None else ["--workers", str(workers)])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the embedded Ray, never a cluster's
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    seconds = json.loads((out / "links.txt.stats.json").read_text("utf-8")).get("seconds")
    job = seconds.get("total", float("nan")) if isinstance(seconds, dict) else float(seconds)
    return wall, job, links.read_bytes()


def cli_runs(pairs: Path, tmp: Path) -> None:
    """The default path, ``--workers 0`` and ``--workers 2``, one after the other, and their ratios."""
    from prealign.pipelines.extract import AlignJob, ParallelInput, choose_executor

    workers, why = choose_executor(AlignJob(ParallelInput(pairs=pairs)))
    chosen = "in this process" if workers == 0 else "embedded Ray on every CPU"
    size = pairs.stat().st_size / 2**20
    print(f"\nprealign-data align {pairs} ({size:.1f} MiB) --src-lang en --tgt-lang fr -q, each a fresh process")
    print(f"the default path here: {chosen} ({why})")
    runs = [("default (no --workers)", None), ("--workers 0", 0), ("--workers 2 (embedded Ray)", 2)]
    rows = []
    for label, n in runs:
        wall, job, links = run_cli(pairs, tmp / f"cli-{n}", n)
        rows.append((label, wall, job, links))
    base = rows[1][1]
    print(f"{'run':<30}{'wall s':>8}{'job s':>8}{'x --workers 0':>15}")
    for label, wall, job, _ in rows:
        print(f"{label:<30}{wall:>8.1f}{job:>8.1f}{wall / base:>15.2f}")
    default, ray = rows[0][1] / base, rows[2][1] / base
    print(f"wall ratio default / --workers 0: {default:.2f}x; --workers 2 / --workers 0: {ray:.2f}x")
    same = all(r[3] == rows[0][3] for r in rows)
    print(f"links files: {'the same bytes' if same else 'DIFFERENT'} in all three runs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-eflomal", action="store_true")
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line runs")
    ap.add_argument("--cli-only", action="store_true", help="only the command-line runs")
    ap.add_argument("--pairs", type=int, help="only the first N Tatoeba pairs, for every run (a quick check)")
    ap.add_argument("--write-corpus", type=Path, metavar="DIR", help="only write DIR/std.en and DIR/std.fr")
    args = ap.parse_args()
    if not (args.data / "gold/hansards.en-fr.gold").exists() or not (args.data / TATOEBA).exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    if args.write_corpus:
        args.write_corpus.mkdir(parents=True, exist_ok=True)
        print("wrote", *prepare(args.data, args.write_corpus, args.pairs))
        return 0
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tatoeba = args.data / TATOEBA
        if args.pairs is not None:
            tatoeba = tmp / f"tatoeba-{args.pairs}.en-fr.tsv"
            tatoeba.write_text("\n".join(tatoeba_lines(args.data, args.pairs)) + "\n", encoding="utf-8")
        if not args.cli_only:
            aligners(args, tmp)
        if not args.no_cli:
            cli_runs(tatoeba, tmp)
    return 0


def aligners(args: argparse.Namespace, tmp: Path) -> None:
    """The standard setting: the built-in aligner in this process and on Ray, eflomal; AER and ratios."""
    gold = read_gold(args.data / "gold/hansards.en-fr.gold")
    src_path, tgt_path = prepare(args.data, tmp, args.pairs)
    rows = []
    wall, cpu, fwd, bwd, n = run_builtin(src_path, tgt_path, tmp)
    ours = scores(fwd, bwd, n, gold)
    rows.append(("prealign builtin, this process", wall, cpu, ours))
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
            f"ratio eflomal/prealign: CPU {ef[1] / cpu:.2f}x, wall {ef[0] / wall:.2f}x (this process), "
            f"wall {ef[0] / ray_wall:.2f}x (Ray {args.workers} workers); above 1 means prealign is faster"
        )


if __name__ == "__main__":
    sys.exit(main())
