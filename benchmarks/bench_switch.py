"""Throughput of `switch` (end to end, shards written) beside raw `Tokenizer.encode_batch` in the same run.

    python benchmarks/bench_switch.py [--data ../shared/data] [--work .bench/switch] [--tokenizer FAMILY|all]

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

``--tokenizer FAMILY`` (one of tests/tokenizer_families.py's FAMILIES, or ``all``) measures the same for that
family's tokenizer instead, trained by that file's builder on the same text (Brown + Tatoeba French, 16,000
tokens) and cached in --work/families/FAMILY/tokenizer.json, with a fresh Ray per family (so "cold" on Ray is a
new worker), and also runs switch in-process at --ratio 0.3; it prints, per family, the speed table and the
manifests' counts (words, with an entry, switched, unswitchable, realised rate) at 0.05 and 0.3.
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
FAMILY_VOCAB = 16000
FAMILY_NAMES = (  # tests/tokenizer_families.py's FAMILIES
    "byte_level_gpt2", "byte_level_llama3", "byte_level_qwen2", "sentencepiece_llama2", "metaspace", "gemma",
    "mistral_v03", "wordpiece_bert", "unigram_t5", "unigram_hf",
)  # fmt: skip


def setup(data: Path, work: Path) -> tuple[Path, Path]:
    from prealign.codeswitch.tokenizer import save_tokenizer, train_tokenizer
    from prealign.lexicon.builtin_aligner import BuiltinConfig
    from prealign.pipelines.extract import ExtractJob, ParallelInput, extract_lexicon
    from prealign.text import SegmenterConfig

    work.mkdir(parents=True, exist_ok=True)
    tok_path, lex_path = work / "tokenizer.json", work / "lexicon.parquet"
    pairs = (data / "parallel/tatoeba.en-fr.tsv").read_text("utf-8").splitlines()
    french = work / "tatoeba.fr.txt"
    if not french.exists():
        french.write_text("\n".join(p.split("\t")[1] for p in pairs) + "\n", encoding="utf-8")
    if not tok_path.exists():
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


def family_tokenizer_path(name: str, data: Path, work: Path) -> Path:
    """The family's tokenizer trained on Brown + Tatoeba French (the byte-level one's text), built once."""
    path = work / "families" / name / "tokenizer.json"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from tokenizer_families import FAMILIES

        assert tuple(FAMILIES) == FAMILY_NAMES, "FAMILY_NAMES is out of date"
        texts = (data / "mono/brown.en.txt").read_text("utf-8").splitlines()
        texts += (work / "tatoeba.fr.txt").read_text("utf-8").splitlines()
        start = time.perf_counter()
        tok = FAMILIES[name]([t for t in texts if t.strip()], FAMILY_VOCAB)
        path.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        print(f"{name}: trained {tok.get_vocab_size():,} tokens in {time.perf_counter() - start:.1f} s", flush=True)
    return path


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


def run_switch(
    tok_path: Path, lex_path: Path, corpus: Path, out: Path, workers: int, ratio: float = 0.05
) -> tuple[float, dict]:
    from prealign.codeswitch.table import SwitchConfig
    from prealign.pipelines.switch_job import SwitchJob, switch_corpus

    shutil.rmtree(out, ignore_errors=True)
    job = SwitchJob([corpus], lex_path, tok_path, out, SwitchConfig(ratio=ratio), workers=workers, progress=False)
    start = time.perf_counter()
    manifest = switch_corpus(job)
    return time.perf_counter() - start, manifest


def speeds(tok_path: Path, lex_path: Path, corpus: Path, work: Path) -> tuple[dict, dict]:
    """Raw encode_batch (threads on / 1 thread) and switch in-process and on 1 Ray worker, cold and warm, at
    ratio 0.05: run name -> tokens/s, and the in-process manifest."""
    from prealign.pipelines.ray_runtime import ray_session

    out = {"raw, threads on": raw_speed(tok_path, corpus, parallel=True)[0]}
    out["raw, 1 thread"] = raw_speed(tok_path, corpus, parallel=False)[0]
    for run in ("cold", "warm"):
        seconds, manifest = run_switch(tok_path, lex_path, corpus, work / "out0", workers=0)
        out[f"in-process, {run}"] = manifest["totals"]["tokens"] / seconds
    with ray_session(None, 1):
        for run in ("cold", "warm"):
            seconds, ray_manifest = run_switch(tok_path, lex_path, corpus, work / "out1", workers=1)
            out[f"Ray 1 worker, {run}"] = ray_manifest["totals"]["tokens"] / seconds
    return out, manifest


def counts(manifest: dict) -> str:
    t = manifest["totals"]
    return (
        f"{t['words']:,} | {t['words_with_entry']:,} | {t['words_switched']:,} | {t['words_unswitchable']:,} | "
        f"{manifest['rates']['switched_per_word_with_entry']:.4f}"
    )


def families_main(names: list[str], data: Path, work: Path, corpus: Path, lex_path: Path) -> int:
    """Per family: speed beside its raw encode_batch at 0.05, counts at 0.05 and 0.3; two markdown tables."""
    speed_rows, count_rows = [], []
    for name in names:
        tok_path = family_tokenizer_path(name, data, work)
        fam_work = work / "families" / name
        s, m05 = speeds(tok_path, lex_path, corpus, fam_work)
        _, m30 = run_switch(tok_path, lex_path, corpus, fam_work / "out0", workers=0, ratio=0.3)
        par, one = s["raw, threads on"], s["raw, 1 thread"]
        speed_rows.append(
            f"| {name} | {m05['tokenizer']['vocab_size']:,} | {m05['totals']['tokens'] / 1e6:.2f} | "
            f"{par / 1e6:.3f} | {one / 1e6:.3f} | "
            + " | ".join(
                f"{s[k] / 1e6:.3f} ({s[k] / (par if k.startswith('in') else one):.2f}x)"
                for k in ("in-process, cold", "in-process, warm", "Ray 1 worker, cold", "Ray 1 worker, warm")
            )
            + " |"
        )
        for ratio, manifest in ((0.05, m05), (0.3, m30)):
            count_rows.append(f"| {name} | {ratio} | {counts(manifest)} |")
        print(speed_rows[-1], *count_rows[-2:], sep="\n", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; M tokens/s (x raw)\n")
    print(
        "| tokenizer | vocab | M tokens written | raw, threads on | raw, 1 thread | in-process, cold | "
        "in-process, warm | 1 Ray worker, cold | 1 Ray worker, warm |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|", *speed_rows, sep="\n")
    print("\n| tokenizer | ratio | words | with an entry | switched | unswitchable | realised rate |")
    print("|---|---:|---:|---:|---:|---:|---:|", *count_rows, sep="\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "switch")
    ap.add_argument("--tokenizer", choices=[*FAMILY_NAMES, "all"], help="a tokenizer family (tests/), or all")
    args = ap.parse_args()
    corpus = args.data / "mono/brown.en.txt"
    if not corpus.exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    tok_path, lex_path = setup(args.data, args.work)
    if args.tokenizer:
        names = list(FAMILY_NAMES) if args.tokenizer == "all" else [args.tokenizer]
        return families_main(names, args.data, args.work, corpus, lex_path)
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
