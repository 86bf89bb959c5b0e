"""How `extract-lexicon` scales with corpus size when the vocabulary grows with it: K disjoint copies of Tatoeba.

    python benchmarks/bench_corpus_scale.py [--data ../shared/data] [--sizes 2,8] [--keep] [-- EXTRA ARGS]
    python benchmarks/bench_corpus_scale.py --sizes 2,8 -- --workers 0

Corpus: K copies of the 142,787 Tatoeba en-fr pairs in one TSV (copy after copy), written once per K into
``.bench/corpus_scale/tatoeba.en-fr.x{K}.tsv`` (``--work``) and reused. No word, punctuation mark or pair of
one copy occurs in another, so vocabularies, pair counts and co-occurrence counts all grow K-fold: the hard
case for memory, where nothing is shared between the copies. The copies are made at the level of the tool's
own words (:class:`prealign.text.Segmenter`, en and fr apostrophe rules, on the NFKC text), since it also cuts
at punctuation and apostrophes: a tag appended to a whitespace token (``chat.`` + tag) would end up after the
full stop, as a word of its own, leaving ``chat`` shared.

- Copy 0 is the corpus as it is (NFKC); copy k > 0 tags every segmenter word with ``"q" + 2 base-26 letters of
  k`` (k = 1: ``qab``): fixed width and lowercase, so they survive lowercasing and no two copies' words can be
  equal. The tag goes at the end of the word, or before its final apostrophe when the word has one (the French
  ``l'`` of ``l'homme``: ``lqab'hommeqab`` is cut ``lqab'`` ``hommeqab`` again; the English ``'s`` of
  ``tom's``: ``tomqab'sqab``).
- Punctuation tokens (each one character, e.g. ``?``, ``«``, a quote) would take no letters (``?qab`` is cut
  ``?`` ``qab``), so in copy k > 0 each distinct punctuation character becomes a private-use character of its
  own (U+E000.., then planes 15 and 16): still one punctuation token, still no word (``is_word``), distinct
  per copy.

Before a file is written, copies 1 and K-1 are segmented by the tool's segmenter and checked against copy 0:
the same number of tokens on every line, the tokens mapped one-to-one (as many distinct tagged as untagged
words on each side), and no token shared between copies. So the tool keeps about K times the pairs (MinHash
near-duplicate decisions vary a little: the hashes differ) and sees K times the vocabulary.

Each size runs ``/usr/bin/time -v prealign-data extract-lexicon FILE --src-lang en --tgt-lang fr -o OUT -q
EXTRA`` from no output at all, with ``RAY_ADDRESS`` unset (a Ray it starts is its own). Its descendants are
sampled every 0.2 s with psutil: each Ray worker (``ray::...`` but Ray's two agents, or ``default_worker.py``;
RSS and RSS minus shared, as Ray's object store pages are shared memory), raylet and gcs_server. By default the
tool may run in one process (one CPU, or an input under 32 MiB) at one size and on Ray at another: give
``-- --workers N`` (or ``0``) to compare like with like. Prints a markdown table, a row per size (pairs and
vocabularies from the stats JSON, wall time, peak RSS of the command as ``time -v`` reports it, Ray workers
seen and the largest one's peaks, every stage of ``seconds``; the stats' ``memory`` too if it has one), then
the ratios of the largest size to the smallest beside the data ratio, PASS/FAIL against the targets: wall
ratio <= 1.1 x data ratio, peak RSS ratios (command; largest Ray worker, when both runs had one) <= 1.3. Exit
status 1 when a target fails. Each run's outputs are deleted once read unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import psutil

from prealign import charclass
from prealign.text import Segmenter, layout, segmenter_config
from prealign.textio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "parallel/tatoeba.en-fr.tsv"
LANGS = ("en", "fr")
TAG = "\x00"  # where a word's copy tag goes, in a line's template
PLACE = 0xE000  # punctuation character j of the corpus is chr(PLACE + j) in a template
# private-use code points (no word, no space, unchanged by NFKC and lowercasing): punctuation of copies 1..K-1
POOL = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
MAX_COPIES = 26 * 26
TARGET_RSS = 1.3
TARGET_WALL = 1.1  # x the data ratio
MIB = 1 << 20


def tag(k: int) -> str:
    """The letters appended to every word of copy k: none for copy 0, else ``q`` + 2 base-26 letters."""
    return "" if k == 0 else "q" + chr(97 + k // 26) + chr(97 + k % 26)


def pool_char(index: int) -> str:
    for block in POOL:
        if index < len(block):
            return chr(block[index])
        index -= len(block)
    raise ValueError("too many copies for the private-use characters")


@dataclass
class Templates:
    """Each line as a template: ``TAG`` where a word's tag goes, ``chr(PLACE + j)`` for punctuation ``punct[j]``."""

    lines: list[str]
    punct: list[str]

    def table(self, k: int) -> dict[int, str]:
        """The str.translate table that makes copy k of a template."""
        n = len(self.punct)
        chars = self.punct if k == 0 else [pool_char((k - 1) * n + j) for j in range(n)]
        return {ord(TAG): tag(k), **{PLACE + j: c for j, c in enumerate(chars)}}

    def copy(self, k: int) -> list[str]:
        table = self.table(k)
        return [t.translate(table) for t in self.lines]


def side_templates(texts: list[str], lang: str, punct: dict[str, int]) -> list[str]:
    """One side's texts as templates, cut where the tool's segmenter for ``lang`` cuts them; ``punct`` numbers the
    punctuation characters met (grown here)."""
    flat = Segmenter(segmenter_config(lang)).flat_spans(texts)
    joined = "\n".join(texts)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    word_chars = np.r_[0, np.cumsum((charclass.classes(codes) & charclass.WORD) > 0)]
    is_word = ((word_chars[flat.end] - word_chars[flat.start]) > 0).tolist()
    starts, ends = flat.start.tolist(), flat.end.tolist()
    bounds = np.r_[0, np.cumsum(flat.counts)].tolist()
    out = []
    for i, (at, text) in enumerate(zip(layout(texts).tolist(), texts, strict=True)):
        pieces, stop = [], at + len(text)
        for j in range(bounds[i], bounds[i + 1]):
            token = joined[starts[j] : ends[j]]
            pieces.append(joined[at : starts[j]])
            if not is_word[j]:
                pieces.append("".join(chr(PLACE + punct.setdefault(c, len(punct))) for c in token))
            elif token[-1] in "'’":
                pieces.append(token[:-1] + TAG + token[-1])
            else:
                pieces.append(token + TAG)
            at = ends[j]
        out.append("".join(pieces) + joined[at:stop])
    return out


def templates(path: Path) -> Templates:
    """Both sides of the corpus as templates (NFKC text)."""
    pairs = [line.split("\t") for line in path.read_text("utf-8").removesuffix("\n").split("\n")]
    text = "".join(p for pair in pairs for p in pair)
    if any(len(p) != 2 for p in pairs) or re.search("[\ue000-\uf8ff\U000f0000-\U0010ffff\x00]", text):
        raise SystemExit(f"{path}: expected two tab-separated fields a line and no private-use characters")
    punct: dict[str, int] = {}
    sides = [
        side_templates([unicodedata.normalize("NFKC", p[s]) for p in pairs], lang, punct)
        for s, lang in enumerate(LANGS)
    ]
    return Templates([f"{s}\t{t}" for s, t in zip(*sides, strict=True)], sorted(punct, key=punct.__getitem__))


def check_copies(temps: Templates, copies: list[int]) -> None:
    """Copies ``copies`` against copy 0 as the tool segments them: token counts per line equal, tokens mapped
    one-to-one, no token shared between two copies. SystemExit naming the first failure."""
    segmenters = [Segmenter(segmenter_config(lang)) for lang in LANGS]
    sides = [list(zip(*(line.split("\t") for line in temps.copy(k)), strict=True)) for k in [0, *copies]]
    for s, (seg, lang) in enumerate(zip(segmenters, LANGS, strict=True)):
        base = seg.segment_batch(sides[0][s])
        vocab = {w for ws in base for w in ws}
        seen = [vocab]
        for k, side in zip(copies, sides[1:], strict=True):
            tagged = seg.segment_batch(side[s])
            bad = next((i for i, (a, b) in enumerate(zip(base, tagged, strict=True)) if len(a) != len(b)), None)
            if bad is not None:
                raise SystemExit(f"copy {k} {lang} line {bad + 1}: {base[bad]} became {tagged[bad]}")
            mapping = {(a, b) for ws, vs in zip(base, tagged, strict=True) for a, b in zip(ws, vs, strict=True)}
            new = {b for _, b in mapping}
            if not len(mapping) == len(vocab) == len(new):
                raise SystemExit(f"copy {k} {lang}: {len(vocab)} words became {len(new)} ({len(mapping)} pairs)")
            shared = next((w for v in seen if (w := next(iter(v & new), None)) is not None), None)
            if shared is not None:
                raise SystemExit(f"copy {k} {lang}: the word {shared!r} is in another copy too")
            seen.append(new)


def corpus_file(data: Path, work: Path, k: int, cache: dict[str, Templates]) -> Path:
    """The K-copy corpus, written the first time it is asked for."""
    path = work / f"tatoeba.en-fr.x{k}.tsv"
    if path.exists():
        return path
    if k > MAX_COPIES:
        raise SystemExit(f"at most {MAX_COPIES} copies")
    start = time.perf_counter()
    if "t" not in cache:
        cache["t"] = templates(data / CORPUS)
    temps = cache["t"]
    if k > 1:
        check_copies(temps, sorted({1, k - 1}))

    def write(fh: BinaryIO) -> None:
        for c in range(k):  # one copy at a time: 16 copies are 250 MB
            fh.write(("\n".join(temps.copy(c)) + "\n").encode("utf-8"))

    atomic_write(path, write)
    print(f"wrote {path} ({k} x {len(temps.lines):,} pairs, {time.perf_counter() - start:.1f} s)", flush=True)
    return path


# --- one run --------------------------------------------------------------------------------------------------


@dataclass
class Peaks:
    """Peak memory of a run's processes, in bytes: per process id, RSS and RSS minus shared."""

    rss: dict[str, dict[int, int]] = field(default_factory=dict)
    own: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, role: str, pid: int, rss: int, shared: int) -> None:
        for peaks, value in ((self.rss, rss), (self.own, rss - shared)):
            per = peaks.setdefault(role, {})
            per[pid] = max(per.get(pid, 0), value)

    def workers(self) -> int:
        """How many Ray worker processes were seen."""
        return len(self.rss.get("worker", {}))

    def top(self, role: str, own: bool = False) -> int:
        return max((self.own if own else self.rss).get(role, {}).values(), default=0)


def role(proc: psutil.Process, driver: int) -> str:
    """What a descendant of the command is: driver, worker (a Ray worker or actor), raylet, gcs_server, other
    (Ray's agents, dashboard, monitors). raylet's own arguments name default_worker.py: names come first."""
    if proc.name() in ("raylet", "gcs_server"):
        return proc.name()
    cmd = proc.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return "other" if cmd[0].startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")) else "worker"
    if any(c.endswith("default_worker.py") for c in cmd[:3]):
        return "worker"
    return "driver" if proc.pid == driver else "other"


def sample(root: psutil.Process, peaks: Peaks, stop: threading.Event, every: float) -> None:
    """Until ``stop``: the memory of every descendant of ``root``, each ``every`` seconds."""
    while not stop.wait(every):
        try:
            kids = root.children(recursive=True)
        except psutil.Error:
            continue
        driver = next((p.pid for p in kids if p.ppid() == root.pid), -1)
        for proc in kids:
            try:
                m = proc.memory_info()
                peaks.add(role(proc, driver), proc.pid, m.rss, m.shared)
            except psutil.Error:
                pass


def outputs(out: Path) -> list[Path]:
    """Everything a run writes for ``-o out``: the lexicon, its stats, its work directory, temporaries."""
    hidden = sorted(out.parent.glob(f".{out.name}*.tmp"))
    return [out, out.with_name(out.name + ".stats.json"), out.with_name(out.name + ".work"), *hidden]


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def tool() -> str:
    here = Path(sys.executable).parent / "prealign-data"
    return str(here) if here.exists() else shutil.which("prealign-data") or "prealign-data"


def run(corpus: Path, out: Path, extra: list[str], keep: bool) -> dict[str, Any]:
    """One ``extract-lexicon`` run under ``time -v``: wall time, peaks and the stats JSON."""
    remove(outputs(out))
    timing, log = out.with_name(out.name + ".time"), out.with_name(out.name + ".log")
    cmd = [tool(), "extract-lexicon", str(corpus), "--src-lang", "en", "--tgt-lang", "fr", "-o", str(out), "-q"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    peaks, stop = Peaks(), threading.Event()
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(timing), *cmd, *extra], stdout=fh, stderr=fh, env=env)
        watcher = threading.Thread(target=sample, args=(psutil.Process(proc.pid), peaks, stop, 0.2), daemon=True)
        watcher.start()
        code = proc.wait()
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    if code != 0:
        sys.stdout.write(log.read_text(errors="replace")[-3000:])
        raise SystemExit(f"{' '.join(cmd + extra)}: exit status {code}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing.read_text())
    stats = json.loads(out.with_name(out.name + ".stats.json").read_text("utf-8"))
    if not keep:
        remove([*outputs(out), timing, log])
    return {"wall": wall, "maxrss": int(found.group(1)) * 1024 if found else 0, "peaks": peaks, "stats": stats}


# --- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} CPUs usable"
    return f"{cpu}, {cores}, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, load {os.getloadavg()}"


def version() -> str:
    out = subprocess.run([tool(), "--version"], capture_output=True, text=True).stdout.strip()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "prealign"], cwd=ROOT, capture_output=True)
    changed = " + uncommitted changes in prealign/" if dirty.returncode == 1 else ""
    return f"{out} (commit {git.stdout.strip() or '?'}{changed})"


def mib(n: int) -> str:
    return f"{n / MIB:,.0f}"


def table(results: dict[int, dict[str, Any]]) -> None:
    stages = list(dict.fromkeys(s for r in results.values() for s in r["stats"].get("seconds", {})))
    head = ["K", "input pairs", "kept pairs", "kept / K", "src vocab", "tgt vocab", "wall s", "RSS MiB", "Ray workers"]
    head += ["worker RSS MiB", "worker RSS-shared MiB", "raylet MiB", "gcs MiB", *(f"{s} s" for s in stages)]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" for _ in head) + "|")
    for k, r in results.items():
        st, p = r["stats"], r["peaks"]
        row = [str(k), f"{st['pairs']['input']:,}", f"{st['pairs']['kept']:,}", f"{st['pairs']['kept'] / k:,.0f}"]
        row += [f"{st['src_vocab']:,}", f"{st['tgt_vocab']:,}", f"{r['wall']:.1f}", mib(r["maxrss"])]
        row += [str(p.workers()), mib(p.top("worker")), mib(p.top("worker", own=True))]
        row += [mib(p.top("raylet")), mib(p.top("gcs_server"))]
        row += [str(st["seconds"].get(s, "")) for s in stages]
        print("| " + " | ".join(row) + " |")
    memory = list(dict.fromkeys(s for r in results.values() for s in r["stats"].get("memory_mib", {})))
    if memory:
        print("\nstats memory (peak MiB by stage)\n")
        print("| K | " + " | ".join(memory) + " |")
        print("|" + "|".join("---:" for _ in range(len(memory) + 1)) + "|")
        for k, r in results.items():
            print(f"| {k} | " + " | ".join(str(r["stats"].get("memory_mib", {}).get(s, "")) for s in memory) + " |")
    pairs = [st["pairs"] for st in (r["stats"] for r in results.values())]
    others = {key for p in pairs for key in p if key not in ("input", "kept")}
    if others:
        print("\npairs (stats): " + "; ".join(f"K={k}: " + json.dumps(r["stats"]["pairs"]) for k, r in results.items()))


def verdicts(results: dict[int, dict[str, Any]]) -> bool:
    """Ratios of the largest size to the smallest against the targets; True when all pass."""
    lo, hi = min(results), max(results)
    a, b = results[lo], results[hi]
    data = hi / lo
    checks = [
        ("wall", b["wall"] / a["wall"], TARGET_WALL * data),
        ("peak RSS (command)", b["maxrss"] / max(a["maxrss"], 1), TARGET_RSS),
    ]
    workers = all(r["peaks"].workers() for r in (a, b))
    if workers:
        checks.append(
            ("peak RSS (largest Ray worker)", b["peaks"].top("worker") / a["peaks"].top("worker"), TARGET_RSS)
        )
    print(f"\ndata ratio K={hi} / K={lo}: {data:.2f}x")
    ok = True
    for name, ratio, bound in checks:
        passed = ratio <= bound
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}: {name} ratio {ratio:.2f}x (target <= {bound:.2f}x)")
    if workers:
        own = b["peaks"].top("worker", own=True) / max(a["peaks"].top("worker", own=True), 1)
        print(f"info: largest Ray worker RSS minus shared ratio {own:.2f}x")
    else:
        print("n/a: peak RSS (largest Ray worker): no Ray worker ran in both runs (the job ran in one process)")
    return ok


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--sizes", default="2,8", help="numbers of copies K, comma-separated (e.g. 2,8,16)")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "corpus_scale")
    ap.add_argument("--keep", action="store_true", help="keep each run's lexicon, stats, work directory and logs")
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        ap.error("--sizes: positive numbers of copies")
    if not (args.data / CORPUS).exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    print(f"tool: {version()}; extra args: {' '.join(extra) or '(none)'}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    cache: dict[str, Templates] = {}
    files = {k: corpus_file(args.data, args.work, k, cache) for k in sizes}
    cache.clear()
    results = {}
    for k in sizes:
        results[k] = r = run(files[k], args.work / f"lexicon.x{k}.parquet", extra, args.keep)
        st = r["stats"]
        print(
            f"K={k}: {r['wall']:.1f} s, peak RSS {mib(r['maxrss'])} MiB, largest worker "
            f"{mib(r['peaks'].top('worker'))} MiB ({mib(r['peaks'].top('worker', own=True))} MiB not shared), "
            f"seconds {json.dumps(st.get('seconds'))}"
            + (f", memory_mib {json.dumps(st['memory_mib'])}" if "memory_mib" in st else ""),
            flush=True,
        )
    print()
    table(results)
    ok = verdicts(results) if len(results) > 1 else True
    print(f"load after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
