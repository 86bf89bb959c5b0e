"""Read + segment throughput per language, beside the tokenizers pre-tokenizer on the same text.

    python benchmarks/bench_languages.py [--data ../shared/data] [--ja-pairs FILE] [--written-chars 200000]

For each language with text, in one run (so every speed has a reference measured on the same machine, same moment):

- read: the lines through prealign's own reader, as the pipelines read them: ``read_parallel`` on a TSV pairs
  file (both columns to Python strings; chars/s counts both sides) or a plain read of a monolingual file; best of
  two reads, so the file is in the page cache. Written text (below) is not read from a file: "-".
- segment: ``Segmenter(segmenter_config(lang)).segment_batch`` over the lines in batches of 16,384, exactly as the
  language's default chooses (zh: jieba, ja: sudachipy mode C, th: pythainlp newmm, others: the tokenizers
  pre-tokenizer ``default``), NFKC + lowercasing included. Choosing the segmenter (which imports its package) and
  the first call (which loads its dictionary) are timed apart (load s); then a 1,000-line warm-up; then the best
  of --rounds (3) timed runs: chars/s and words/s.
- reference: a plain ``tokenizers.Tokenizer(WordLevel)`` with ``pre_tokenizers.Whitespace()``, ``encode_batch`` on
  the same lines in the same batches (no normalisation), best of --rounds too. Its ``encode_batch`` uses every
  core, as does prealign's ``default`` segmenter; the dictionary segmenters run in one Python thread. So the ratio
  segment / reference is printed by wall time and by CPU time (``time.process_time``, all threads of the process).

Text: en (../shared/data/mono/brown.en.txt and the English side of parallel/tatoeba.en-fr.tsv), fr (its French
side), zh (the Chinese side of parallel/tatoeba.en-zh.tsv), ja (the Japanese side of --ja-pairs, by default
.bench/ja-data/pairs.en-ja.tsv as ``bash benchmarks/ja_data/make.sh`` builds it; skipped with the reason when it is
missing), and th, de, ru, ar from everyday sentences written below, repeated to --written-chars characters (the
output marks them "written"). A language whose segmenter is not installed is skipped with the reason printed.
Ends with one markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from prealign.errors import InputError
from prealign.lexicon.corpus import read_parallel
from prealign.text import Segmenter, segmenter_config

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16_384
WARMUP = 1_000

# Everyday sentences for the languages without data here (the SARA AM of ทำ, น้ำ goes through NFKC as in real text).
WRITTEN = {
    "th": [
        "ฉันตื่นนอนตอนหกโมงเช้าทุกวัน",
        "วันนี้อากาศร้อนมาก เราไปว่ายน้ำกันเถอะ",
        "คุณแม่กำลังทำอาหารอยู่ในครัว",
        "พี่ชายของฉันเป็นหมออยู่ที่โรงพยาบาล",
        "รถเมล์สายนี้ไปสนามบินไหมครับ",
        "ฉันอยากซื้อเสื้อตัวใหม่ให้น้องสาว",
        "ร้านกาแฟนี้เปิดตั้งแต่เจ็ดโมงเช้าถึงสองทุ่ม",
        "เด็กๆ กำลังเล่นฟุตบอลอยู่ในสนาม",
        "กรุณาปิดไฟก่อนออกจากห้องด้วยนะคะ",
        "เมื่อวานฝนตกหนักทั้งวัน",
        "เขาเรียนภาษาญี่ปุ่นที่มหาวิทยาลัย",
        "ตลาดน้ำมีผลไม้สดและขนมไทยหลายอย่าง",
        "ผมลืมโทรศัพท์มือถือไว้ที่บ้าน",
        "คุณชอบดูหนังแบบไหนมากที่สุด",
        "พวกเราจะไปเที่ยวเชียงใหม่ช่วงปีใหม่",
        "ห้องนี้มีเครื่องปรับอากาศแต่ไม่มีตู้เย็น",
        "ครูสอนคณิตศาสตร์ใจดีและตลกมาก",
        "กรุณาส่งอีเมลถึงฉันภายในวันศุกร์",
        "ยายปลูกผักและดอกไม้ไว้หลังบ้าน",
        "รถไฟฟ้าสะดวกกว่ารถแท็กซี่ในชั่วโมงเร่งด่วน",
        "น้ำแข็งในแก้วละลายหมดแล้ว",
        "ฉันจะไปธนาคารเพื่อเปิดบัญชีใหม่",
        "หนังสือเล่มนี้ราคาสามร้อยห้าสิบบาท",
        "แมวของเพื่อนบ้านชอบมานอนบนหลังคา",
        "เราควรดื่มน้ำอย่างน้อยวันละแปดแก้ว",
        "นักท่องเที่ยวหลายคนมาถ่ายรูปที่วัดพระแก้ว",
        "พ่อขับรถพาครอบครัวไปทะเลทุกปี",
        "ร้านนี้ขายส้มตำและไก่ย่างอร่อยที่สุดในซอย",
        "คอมพิวเตอร์ของฉันช้ามากเพราะมีไฟล์เยอะเกินไป",
        "ขอบคุณมากครับที่ช่วยเหลือผมเมื่อวานนี้",
        "สุนัขตัวนั้นเห่าเสียงดังทั้งคืน",
        "ฉันกำลังอ่านหนังสือพิมพ์ฉบับเช้าอยู่",
    ],
    "de": [
        "Ich trinke jeden Morgen eine Tasse Kaffee.",
        "Der Zug nach München hat zwanzig Minuten Verspätung.",
        "Können Sie mir bitte sagen, wo der Bahnhof ist?",
        "Meine Schwester arbeitet als Ärztin in einem Krankenhaus.",
        "Wir haben am Wochenende einen Ausflug an den See gemacht.",
        "Das Wetter ist heute schön, aber morgen soll es regnen.",
        "Hast du schon die Hausaufgaben für Montag gemacht?",
        "Die Bibliothek ist sonntags geschlossen.",
        "Er hat sich ein neues Fahrrad gekauft.",
        "Im Kühlschrank sind noch Milch, Käse und Äpfel.",
        "Ich habe meinen Schlüssel im Büro vergessen.",
        "Unsere Großeltern wohnen in einem kleinen Dorf in der Nähe von Hamburg.",
        "An der Straßenbahnhaltestelle gilt eine Geschwindigkeitsbegrenzung.",
        "Wie viel kostet diese Jacke?",
        "Nach dem Essen gehen wir im Park spazieren.",
    ],
    "ru": [
        "Я каждое утро пью чай с лимоном.",
        "Где находится ближайшая станция метро?",
        "Моя сестра работает врачом в больнице.",
        "Вчера весь день шёл дождь.",
        "Мы поедем на дачу в субботу.",
        "Этот магазин открыт с девяти утра до девяти вечера.",
        "Он купил новый компьютер для работы.",
        "Дети играют в футбол во дворе.",
        "Сколько стоит билет до Москвы?",
        "Я забыл ключи дома.",
        "Библиотека закрыта по воскресеньям.",
        "Наши бабушка и дедушка живут в маленькой деревне.",
        "Пожалуйста, закройте окно, здесь холодно.",
        "Она читает интересную книгу об истории России.",
        "После ужина мы гуляли в парке.",
    ],
    "ar": [
        "أشرب القهوة كل صباح.",
        "أين أقرب محطة قطار؟",
        "تعمل أختي طبيبة في المستشفى.",
        "ذهبنا إلى البحر في عطلة نهاية الأسبوع.",
        "الجو جميل اليوم ولكن ستمطر غدا.",
        "هل أنهيت واجباتك المدرسية؟",
        "المكتبة مغلقة يوم الجمعة.",
        "اشترى أخي سيارة جديدة.",
        "كم سعر هذا القميص؟",
        "نسيت مفاتيحي في المكتب.",
        "يعيش جدي وجدتي في قرية صغيرة.",
        "يلعب الأطفال كرة القدم في الحديقة.",
        "من فضلك أغلق النافذة، الجو بارد.",
        "تقرأ الطالبة كتابا عن تاريخ مصر.",
        "بعد العشاء تمشينا في الحديقة.",
    ],
}
PACKAGES = {"jieba": ("jieba",), "sudachi": ("sudachipy", "sudachidict-core"), "pythainlp": ("pythainlp",)}
NAMES = {"default": "default (numpy character classes)", "jieba": "jieba", "sudachi": "sudachipy mode C"}
NAMES["pythainlp"] = "pythainlp newmm"


@dataclass
class Text:
    lang: str
    source: str
    lines: list[str]
    read_s: float | None = None  # None: written here, not read from a file
    read_chars: int = 0  # characters the read produced (both sides of a pairs file)


@dataclass
class Row:
    text: Text
    segmenter: str
    version: str
    chars: int
    load_s: float
    wall_s: float
    cpu_s: float
    words: int
    ref_wall_s: float
    ref_cpu_s: float
    norm_s: float


def version(*dists: str) -> str:
    out = []
    for dist in dists:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return " + ".join(out)


def best_of(n: int, fn: Callable[[], tuple]) -> tuple[float, tuple]:
    """The shortest wall time of ``n`` calls and the last call's result."""
    best, out = float("inf"), ()
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def read_pairs(path: Path) -> tuple[float, list[str], list[str]]:
    def read() -> tuple[list[str], list[str]]:
        src: list[str] = []
        tgt: list[str] = []
        for batch in read_parallel(pairs=path):
            src += batch.column("src").to_pylist()
            tgt += batch.column("tgt").to_pylist()
        return src, tgt

    took, (src, tgt) = best_of(2, read)
    return took, src, tgt


def read_mono(path: Path) -> tuple[float, list[str]]:
    def read() -> tuple[list[str]]:
        with open(path, encoding="utf-8") as f:
            return (f.read().splitlines(),)

    took, (lines,) = best_of(2, read)
    return took, lines


def texts(args: argparse.Namespace) -> list[Text]:
    out: list[Text] = []
    mono = args.data / "mono/brown.en.txt"
    if mono.exists():
        took, lines = read_mono(mono)
        out.append(Text("en", "Brown (mono)", lines, took, sum(map(len, lines))))
    else:
        print(f"skip en Brown: no {mono}")
    for pair, names in (("en-fr", ("en", "fr")), ("en-zh", (None, "zh")), ("en-ja", (None, "ja"))):
        path = args.ja_pairs if pair == "en-ja" else args.data / f"parallel/tatoeba.{pair}.tsv"
        if not path.exists():
            hint = " (bash benchmarks/ja_data/make.sh builds it, or pass --ja-pairs)" if pair == "en-ja" else ""
            print(f"skip {pair}: no {path}{hint}")
            continue
        took, src, tgt = read_pairs(path)
        n_chars = sum(map(len, src)) + sum(map(len, tgt))
        for lang, lines, side in zip(names, (src, tgt), ("en", pair[3:]), strict=True):
            if lang is not None:
                out.append(Text(lang, f"Tatoeba {pair}, {side} side", lines, took, n_chars))
    for lang, sentences in WRITTEN.items():
        reps = max(1, -(-args.written_chars // sum(map(len, sentences))))
        out.append(Text(lang, f"written, {len(sentences)} sentences x {reps}", sentences * reps))
    return out


def batched(fn: Callable[[Sequence[str]], object], lines: list[str]) -> list:
    return [fn(lines[i : i + BATCH]) for i in range(0, len(lines), BATCH)]


def reference() -> Callable[[Sequence[str]], object]:
    tok = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return lambda lines: tok.encode_batch(list(lines), add_special_tokens=False)


def timed(fn: Callable[[], object], rounds: int = 1) -> tuple[float, float, object]:
    """Wall and CPU seconds of the fastest of ``rounds`` calls (by wall time), and its result."""
    best = (float("inf"), float("nan"), None)
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        took = (time.perf_counter() - wall, time.process_time() - cpu, out)
        best = min(best, took, key=lambda t: t[0])
    return best


def measure(text: Text, rounds: int) -> Row | None:
    start = time.perf_counter()
    try:
        config = segmenter_config(text.lang)  # imports the segmenter's package
    except InputError as exc:
        print(f"  skip {text.lang} ({text.source}): {exc}")
        return None
    seg = Segmenter(config)
    seg.segment_batch(text.lines[:1])  # loads the dictionary (or builds the pre-tokenizer)
    load_s = time.perf_counter() - start
    seg.segment_batch(text.lines[:WARMUP])
    wall, cpu, out = timed(lambda: sum(sum(map(len, w)) for w in batched(seg.segment_batch, text.lines)), rounds)
    norm_s, _, _ = timed(lambda: [seg.normalize(t) for t in text.lines])
    ref = reference()
    ref(text.lines[:WARMUP])
    ref_wall, ref_cpu, _ = timed(lambda: batched(ref, text.lines), rounds)
    kind = config.kind
    ver = version(*PACKAGES.get(kind, ("tokenizers",)))
    row = Row(
        text, NAMES.get(kind, kind), ver, sum(map(len, text.lines)), load_s, wall, cpu, out, ref_wall, ref_cpu, norm_s
    )
    print(
        f"  {text.lang} ({text.source}): {row.segmenter}: {row.chars / wall:,.0f} chars/s, {out / wall:,.0f} words/s, "
        f"{row.chars / max(out, 1):.2f} chars/word; of which NFKC + lowercase {norm_s:.2f} s of {wall:.2f} s; "
        f"reference {row.chars / ref_wall:,.0f} chars/s; load {load_s:.2f} s"
    )
    return row


def si(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def table(rows: list[Row]) -> str:
    head = (
        "| lang | text | segmenter | version | lines | chars | read chars/s | segment chars/s | words/s "
        "| reference chars/s | x reference (wall / CPU) | load s |"
    )
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r.text
        read = "-" if t.read_s is None else si(t.read_chars / t.read_s)
        ratio_wall = r.ref_wall_s / r.wall_s
        ratio_cpu = r.ref_cpu_s / r.cpu_s if r.cpu_s > 0 and r.ref_cpu_s > 0 else float("nan")
        lines.append(
            f"| {t.lang} | {t.source} | {r.segmenter} | {r.version} | {len(t.lines):,} | {r.chars:,} | {read} "
            f"| {si(r.chars / r.wall_s)} | {si(r.words / r.wall_s)} | {si(r.chars / r.ref_wall_s)} "
            f"| {ratio_wall:.2f} / {ratio_cpu:.2f} | {r.load_s:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--ja-pairs", type=Path, default=ROOT / ".bench/ja-data/pairs.en-ja.tsv", metavar="FILE")
    ap.add_argument("--written-chars", type=int, default=200_000, help="characters of each written-text language")
    ap.add_argument("--rounds", type=int, default=3, help="time segment and reference this many times, keep the best")
    ap.add_argument("--langs", help="comma-separated languages to run (default: all)")
    args = ap.parse_args()
    if not (args.data / "parallel").is_dir():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load:.2f}")
    wanted = set(args.langs.split(",")) if args.langs else None
    rows: list[Row] = []
    for text in texts(args):
        if wanted is None or text.lang in wanted:
            row = measure(text, args.rounds)
            if row is not None:
                rows.append(row)
    print("\n" + table(rows))
    print(
        f"\nread: best of 2, both sides of a pairs file through read_parallel, or a plain read of a mono file; "
        f"segment: Segmenter(segmenter_config(lang)).segment_batch in batches of {BATCH:,} (NFKC + lowercase "
        f"included), after loading (load s) and a warm-up, best of {args.rounds}; reference: tokenizers WordLevel + "
        "pre_tokenizers.Whitespace encode_batch on the same lines (all cores, no normalisation), best of the same; "
        "x reference = segment speed / reference speed by wall time / by CPU time; written: sentences written in "
        "this script, repeated"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
