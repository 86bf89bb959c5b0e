"""Throughput of `switch` (end to end, shards written) beside raw `Tokenizer.encode_batch` in the same run.

    python benchmarks/bench_switch.py [--data ../shared/data] [--work .bench/switch]

Setup (cached in --work): a byte-level BPE of 16,000 tokens trained on the Brown corpus plus the French side of
Tatoeba, and an en-fr lexicon extracted from the first 30,000 Tatoeba pairs (a few thousand source words).
Then, on ../shared/data/mono/brown.en.txt (one document a line), with ratio 0.05:

- raw: `encode_batch` of every line, with the tokenizer's own thread pool and with it switched off;
- switch in this process (`--workers 0`: the tokenizer may use both cores, as raw does);
- switch on Ray with 1 worker (the tokenizer single-threaded inside the worker, as the raw single-thread run),
  Ray already started.

Each switch job runs twice: "cold" pays once-per-process costs (the worker's imports and tokenizer load, and
describing each distinct word once for the word cache: 54k words in Brown), "warm" is the steady state of a
long job. Each figure is tokens written per second, and its ratio to the matching raw figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(data: Path, work: Path) -> tuple[Path, Path]:
    from prealign.codeswitch.tokenizer import save_tokenizer, train_tokenizer
    from prealign.lexicon.builtin_aligner import BuiltinConfig
    from prealign.pipelines.extract import ExtractJob, ParallelInput, extract_lexicon
    from prealign.text import SegmenterConfig

    work.mkdir(parents=True, exist_ok=True)
    tok_path, lex_path = work / "tokenizer.json", work / "lexicon.parquet"
    pairs = (data / "parallel/tatoeba.en-fr.tsv").read_text("utf-8").splitlines()
    if not tok_path.exists():
        french = work / "tatoeba.fr.txt"
        french.write_text("\n".join(p.split("\t")[1] for p in pairs) + "\n", encoding="utf-8")
        save_tokenizer(train_tokenizer([data / "mono/brown.en.txt", french], 16000), tok_path)
    if not lex_path.exists():
        sample = work / "tatoeba.30k.tsv"
        sample.write_text("\n".join(pairs[::4][:30000]) + "\n", encoding="utf-8")
        job = ExtractJob(
            data=ParallelInput(pairs=sample),
            src_segmenter=SegmenterConfig(apostrophe="next"),
            tgt_segmenter=SegmenterConfig(apostrophe="previous"),
            aligner=BuiltinConfig(),
            output=lex_path,
            src_lang="en",
            tgt_lang="fr",
            workers=0,
            progress=False,
        )
        extract_lexicon(job)
    return tok_path, lex_path


def raw_speed(tok_path: Path, corpus: Path, parallel: bool) -> tuple[float, int]:
    """encode_batch tokens/s; parallelism is fixed per process by the env var, so run it in a child."""
    import subprocess

    code = (
        "import sys,time; from tokenizers import Tokenizer; t=Tokenizer.from_file(sys.argv[1]);"
        "lines=open(sys.argv[2],encoding='utf-8').read().splitlines();"
        "s=time.perf_counter(); e=t.encode_batch(lines, add_special_tokens=False); d=time.perf_counter()-s;"
        "print(d, sum(len(x.ids) for x in e))"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true" if parallel else "false"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tok_path), str(corpus)], capture_output=True, text=True, env=env, check=True
    )
    seconds, tokens = out.stdout.split()
    return int(tokens) / float(seconds), int(tokens)


def run_switch(tok_path: Path, lex_path: Path, corpus: Path, out: Path, workers: int) -> tuple[float, dict]:
    from prealign.codeswitch.table import SwitchConfig
    from prealign.pipelines.switch import SwitchJob, switch_corpus

    shutil.rmtree(out, ignore_errors=True)
    job = SwitchJob([corpus], lex_path, tok_path, out, SwitchConfig(ratio=0.05), workers=workers, progress=False)
    start = time.perf_counter()
    manifest = switch_corpus(job)
    return time.perf_counter() - start, manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "switch")
    args = ap.parse_args()
    corpus = args.data / "mono/brown.en.txt"
    if not corpus.exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    tok_path, lex_path = setup(args.data, args.work)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    raw_par, tokens = raw_speed(tok_path, corpus, parallel=True)
    raw_one, _ = raw_speed(tok_path, corpus, parallel=False)
    rows = []
    for run in ("cold", "warm"):
        seconds, manifest = run_switch(tok_path, lex_path, corpus, args.work / "out0", workers=0)
        rows.append((f"switch, in-process, {run}", manifest["totals"]["tokens"] / seconds, raw_par))
    from prealign.pipelines.ray_runtime import ray_session

    with ray_session(None, 1):
        for run in ("cold", "warm"):
            seconds, manifest = run_switch(tok_path, lex_path, corpus, args.work / "out1", workers=1)
            rows.append((f"switch, Ray 1 worker, {run}", manifest["totals"]["tokens"] / seconds, raw_one))
    print(
        f"brown.en.txt: {manifest['totals']['documents']:,} documents, {tokens:,} tokens raw; lexicon "
        f"{manifest['lexicon']['entries']:,} rows; realised rate "
        f"{manifest['rates']['switched_per_word_with_entry']:.4f}"
    )
    print(f"raw encode_batch: {raw_par / 1e6:.3f} M tokens/s (threads on), {raw_one / 1e6:.3f} M tokens/s (1 thread)")
    for name, speed, ref in rows:
        print(f"{name:<44} {speed / 1e6:.3f} M tokens/s = {speed / ref:.2f}x raw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
