"""Throughput of `extract-lexicon` and `switch` with 1 and 2 Ray workers in one run, and the driver's memory.

    python benchmarks/bench_scaling.py [--data ../shared/data] [--repeats 2] [--skip-memory]

Scaling: one embedded Ray (2 CPUs, loopback) for the whole run; each job runs with ``--workers 1`` then
``--workers 2``, alternately, ``--repeats`` times after a warm-up run of each (which starts Ray's workers and
their imports); the best time of each is reported, with the ratio 1-worker time / 2-worker time. Two ways:

- "2 cores": both runs on both cores. With one worker the second core is not idle: the driver, the dedup
  actor and (in `switch`) the tokenizer's helper thread run there, so this understates what a second worker
  brings;
- "1 core -> 2 cores": the 1-worker run with the driver and every Ray process pinned to one core
  (``sched_setaffinity``), the 2-worker run on both: how the job scales with cores.

Before and after, two kernels (a pure Python loop; numpy gathers over 16 MB arrays) alone and twice at once
give this machine's own ceiling at that moment (2.0 on two free cores; less when other processes share them,
or when two processes share a memory bus or a physical core). Jobs:

- extract-lexicon on the 142,787 Tatoeba en-fr pairs, default options (cleaning, MinHash dedup, 5 + 5 EM
  iterations, intersect), the stage times from its stats;
- switch on the Brown corpus (57,340 documents, 1.4 M tokens) with the 16k BPE and the lexicon of
  benchmarks/bench_switch.py (built in .bench/switch when missing), ratio 0.05, shards written.

Memory: extract-lexicon run as a command in a child process on the demo grammar's corpus at 1x and 4x
(20,000 and 80,000 pairs), embedded Ray with 2 workers; the child's memory is sampled every 10 ms from outside:
peak RSS and peak RSS minus shared pages (the object store pages mapped into the driver; Ray's own memory
monitor counts a process that way).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout, whatever is installed
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def extract_job(data: Path, out: Path, workers: int) -> Any:
    from prealign.pipelines.extract import ExtractJob, ParallelInput
    from prealign.text import SegmenterConfig

    return ExtractJob(
        data=ParallelInput(pairs=data / "parallel/tatoeba.en-fr.tsv"),
        src_segmenter=SegmenterConfig(apostrophe="next"),
        tgt_segmenter=SegmenterConfig(apostrophe="previous"),
        output=out / f"lexicon-{workers}.parquet",
        src_lang="en",
        tgt_lang="fr",
        workers=workers,
        progress=False,
    )


def run_extract(data: Path, out: Path, workers: int) -> tuple[float, dict[str, float]]:
    from prealign.pipelines.extract import extract_lexicon

    start = time.perf_counter()
    stats = extract_lexicon(extract_job(data, out, workers))
    return time.perf_counter() - start, stats["seconds"]


def run_switch(data: Path, assets: tuple[Path, Path], out: Path, workers: int) -> tuple[float, dict[str, float]]:
    from prealign.codeswitch.table import SwitchConfig
    from prealign.pipelines.switch_job import SwitchJob, switch_corpus

    target = out / f"shards-{workers}"
    shutil.rmtree(target, ignore_errors=True)
    tok, lex = assets
    corpus = [data / "mono/brown.en.txt"]
    job = SwitchJob(corpus, lex, tok, target, SwitchConfig(ratio=0.05), workers=workers, progress=False)
    start = time.perf_counter()
    manifest = switch_corpus(job)
    return time.perf_counter() - start, {"tokens": manifest["totals"]["tokens"]}


def _gathers(_: int = 0) -> float:
    """Memory-bound: numpy gathers over 16 MB arrays (like the E-step's)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, idx = rng.random(2_000_000), rng.integers(0, 2_000_000, 2_000_000)
    start = time.perf_counter()
    for _ in range(25):
        a = a + np.take(a, idx) * 1e-9
    return time.perf_counter() - start


def _python(_: int = 0) -> float:
    """Compute-bound: a pure Python loop (like segmentation's Python parts)."""
    start = time.perf_counter()
    total = 0
    for i in range(6_000_000):
        total += i * i
    return time.perf_counter() - start


def ceiling() -> str:
    """Throughput of each kernel twice at once over once alone (2.0: two free cores)."""
    from multiprocessing import get_context

    out = []
    with get_context("spawn").Pool(2) as pool:
        for kernel in (_python, _gathers):
            alone = min(pool.map(kernel, [0]) + pool.map(kernel, [0]))
            both = max(pool.map(kernel, [0, 1], chunksize=1))
            out.append(f"{kernel.__name__.strip('_')} {2 * alone / both:.2f}x")
    return ", ".join(out)


def pin(cpus: set[int]) -> None:
    """Put this process and every process it started (the embedded Ray) on ``cpus``."""
    import psutil

    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            proc.cpu_affinity(sorted(cpus))
        except psutil.Error:
            pass


def scaling(data: Path, repeats: int, work: Path) -> None:
    from bench_switch import setup

    from prealign.pipelines.ray_runtime import ray_session

    assets = setup(data, ROOT / ".bench" / "switch")
    cores = set(os.sched_getaffinity(0))
    print(f"ceiling (a kernel twice at once / alone): {ceiling()}", flush=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp)
        with ray_session(None, 2):
            for name, job in (
                ("extract-lexicon", lambda w: run_extract(data, out, w)),
                ("switch", lambda w: run_switch(data, assets, out, w)),
            ):
                for w in (1, 2):  # warm-up: workers started, modules imported
                    job(w)
                for mode in ("2 cores", "1 core -> 2 cores"):
                    best: dict[int, tuple[float, dict[str, float]]] = {}
                    for _ in range(repeats):
                        for w in (1, 2):
                            pin({min(cores)} if (mode != "2 cores" and w == 1) else cores)
                            seconds, detail = job(w)
                            print(f"  {name} [{mode}] workers={w}: {seconds:.2f} s {json.dumps(detail)}", flush=True)
                            if w not in best or seconds < best[w][0]:
                                best[w] = (seconds, detail)
                    pin(cores)
                    line = f"{name} [{mode}]: 1 worker {best[1][0]:.2f} s, 2 workers {best[2][0]:.2f} s"
                    print(f"{line}, ratio {best[1][0] / best[2][0]:.2f}x", flush=True)
    print(f"ceiling (a kernel twice at once / alone): {ceiling()}", flush=True)


MEMORY_RUN = "import sys; from prealign.cli import main; sys.argv[0] = 'prealign-data'; main()"


def peak_memory(args: list[str]) -> tuple[int, int, float]:
    import psutil

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MEMORY_RUN, *args], env=env, stdout=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    rss = own = 0
    while proc.poll() is None:
        try:
            m = watched.memory_info()
            rss, own = max(rss, m.rss), max(own, m.rss - m.shared)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    assert proc.wait() == 0
    return rss, own, time.perf_counter() - start


def memory(work: Path) -> None:
    from prealign.demo import write_corpus

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for n in (20000, 80000):
            corpus = write_corpus(Path(tmp) / f"demo{n}.tsv", n, seed=n)
            args = ["extract-lexicon", str(corpus), "-o", str(Path(tmp) / f"lex{n}.parquet"), "--workers", "2", "-q"]
            rss, own, seconds = peak_memory(args)
            print(f"memory: {n:,} pairs: peak RSS {rss >> 20} MiB, RSS - shared {own >> 20} MiB ({seconds:.1f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    args = ap.parse_args()
    if not (args.data / "parallel/tatoeba.en-fr.tsv").exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    work = ROOT / ".bench"
    work.mkdir(exist_ok=True)
    if not args.skip_scaling:
        scaling(args.data, args.repeats, work)
    if not args.skip_memory:
        memory(work)
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
