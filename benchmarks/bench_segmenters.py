"""Word segmenters for Chinese, Japanese and Thai: accuracy and speed beside the tokenizers pre-tokenizer.

    python benchmarks/bench_segmenters.py [--data ../shared/data] [--limit N] [--ja-chars 200000] [--keep DIR]

What it measures, all in one run (so every speed has a reference measured on the same machine, same moment):

- Chinese (../shared/data/parallel/tatoeba.en-zh.tsv): for each segmenter whose package is installed (``chars``:
  one character a word, what prealign/text.py does today; jieba, default mode with HMM; pkuseg's bundled default
  model; spacy-pkuseg when a model is present locally; and OpenCC Traditional->Simplified conversion before each
  real segmenter) the Chinese side is segmented and timed (pairs/s and characters/s of segmentation alone, after
  loading and a warm-up, which are excluded; loading is reported). The pairs are written pre-segmented (English
  segmented by prealign's own Segmenter, so only the Chinese side varies) and the project's CLI extracts a
  lexicon (``extract-lexicon --pretokenized``) that ``eval-lexicon`` scores against
  ../shared/data/gold/muse-dev.en-zh.tsv: P@1, P@5 and coverage over English words aligned at least 5 times.
  The gold mixes Traditional and Simplified like the corpus, so each lexicon is also scored script-blind (its
  translations and the gold both mapped to Simplified). Diagnostics: what NFKC/lowercasing change, how much of
  the corpus and gold is Traditional, word length on Traditional vs Simplified lines, jieba on raw vs NFKC text.
- Japanese (no en-ja parallel text in ../shared): fugashi + unidic-lite and sudachipy + sudachidict-core (split
  modes A and C) on everyday sentences written below: characters/s, and a hand check: the fraction of expected
  dictionary words (katakana loanwords, kanji compounds) that the segmenter produces whole.
- Thai: pythainlp's default ``word_tokenize`` (newmm) on sentences written below: characters/s and a hand check,
  on NFKC text and without NFKC (NFKC decomposes SARA AM, U+0E33, which newmm then misreads).
- The reference: prealign's current Segmenter (tokenizers pre-tokenizer, ``encode_batch``, which uses every
  core) on the same, already normalised text; each speed is printed as a ratio to it, by wall time and by
  CPU time. Every text is first normalised as the tool does (NFKC, lowercase); that cost is reported apart.

Candidates: pip install jieba opencc fugashi unidic-lite sudachipy sudachidict-core pythainlp, and
pip install --no-build-isolation pkuseg (its sdist's setup.py imports numpy and Cython; it ships its model).
Nothing is downloaded: a segmenter whose package is missing, or that would fetch a model, is skipped with the
reason printed. Ends with one markdown table.
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
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from prealign.text import Segmenter, SegmenterConfig, apostrophe_for

ROOT = Path(__file__).resolve().parents[1]
Batch = Callable[[Sequence[str]], list[list[str]]]
PROBES = ("bank", "computer", "teacher", "tomorrow", "book", "library", "doctor", "water")

# Japanese: everyday sentences for speed (katakana loanwords, kanji compounds, verb endings).
JA_SENTENCES = [
    "昨日、新しいコンピューターを買いました。",
    "テーブルの上にスマートフォンがあります。",
    "図書館でアイスクリームを食べてはいけません。",
    "駅の近くに大きなスーパーマーケットができました。",
    "毎朝コーヒーを飲んでから会社に行きます。",
    "このレストランのハンバーガーはとてもおいしいです。",
    "明日は雨が降るそうなので、傘を持って行ってください。",
    "私の兄は銀行で働いています。",
    "先生は学生たちに宿題を出しました。",
    "週末に友達とサッカーをしました。",
    "電車が遅れたので、会議に間に合いませんでした。",
    "彼女はピアノを弾くのが上手です。",
    "冷蔵庫の中に牛乳とチーズがあります。",
    "インターネットで飛行機のチケットを予約しました。",
    "この部屋にはエアコンがありません。",
    "子供たちは公園で遊んでいます。",
    "日本語の勉強は難しいですが、面白いです。",
    "夏休みに家族と北海道へ旅行しました。",
    "ホテルのフロントでパスポートを見せてください。",
    "病院は何時に開きますか。",
    "トムはメアリーに手紙を書きました。",
    "私はテレビを見ながら晩ご飯を食べました。",
    "新しいカメラで写真をたくさん撮りました。",
    "郵便局はどこにありますか。",
    "このシャツは少し大きすぎます。",
    "彼はギターを弾きながら歌を歌いました。",
    "台所でパンとバターを用意してください。",
    "今日はとても暑いので、窓を開けましょう。",
    "大学の図書館は夜十時まで開いています。",
    "エレベーターが故障しているので、階段を使ってください。",
    "母はデパートで新しいバッグを買いました。",
    "駅前のコンビニでお弁当を買いました。",
    "彼は毎日ジョギングをしています。",
    "私の趣味は音楽を聴くことです。",
    "このパソコンはメモリが足りません。",
    "東京の天気は変わりやすいです。",
    "会議の資料をプリンターで印刷してください。",
    "友達の誕生日にケーキを作りました。",
    "空港までタクシーで三十分かかります。",
    "日曜日に美術館へ行くつもりです。",
]
# Hand-checkable cases: the dictionary words a bilingual lexicon wants whole (loanwords, compounds).
JA_CASES = [
    ("昨日、新しいコンピューターを買いました。", ["昨日", "新しい", "コンピューター"]),
    ("テーブルの上にスマートフォンがあります。", ["テーブル", "上", "スマートフォン"]),
    ("図書館でアイスクリームを食べてはいけません。", ["図書館", "アイスクリーム"]),
    ("駅の近くに大きなスーパーマーケットができました。", ["駅", "近く", "スーパーマーケット"]),
    ("このレストランのハンバーガーはとてもおいしいです。", ["レストラン", "ハンバーガー"]),
    ("私の兄は銀行で働いています。", ["私", "兄", "銀行"]),
    ("インターネットで飛行機のチケットを予約しました。", ["インターネット", "飛行機", "チケット", "予約"]),
    ("日本語の勉強は難しいですが、面白いです。", ["日本語", "勉強", "難しい", "面白い"]),
    ("エレベーターが故障しているので、階段を使ってください。", ["エレベーター", "故障", "階段"]),
    ("冷蔵庫の中に牛乳とチーズがあります。", ["冷蔵庫", "牛乳", "チーズ"]),
    ("大学の図書館は夜十時まで開いています。", ["大学", "図書館"]),
    ("会議の資料をプリンターで印刷してください。", ["会議", "資料", "プリンター", "印刷"]),
]
TH_SENTENCES = [
    "ฉันไปโรงเรียนทุกวัน",
    "วันนี้อากาศดีมาก",
    "ผมซื้อคอมพิวเตอร์เครื่องใหม่",
    "เธอโทรศัพท์หาแม่ทุกวัน",
    "ฉันชอบกินข้าวผัดกับไก่",
    "ห้องสมุดเปิดตอนเก้าโมงเช้า",
    "นักเรียนกำลังเรียนภาษาอังกฤษ",
    "พ่อของฉันทำงานที่ธนาคาร",
    "เราจะไปทะเลในวันหยุดสุดสัปดาห์",
    "หมอบอกให้ฉันดื่มน้ำมากๆ",
    "รถไฟมาสายสิบนาที",
    "ร้านอาหารนี้อร่อยและไม่แพง",
    "เขาอ่านหนังสือพิมพ์ทุกเช้า",
    "น้องสาวของฉันชอบวาดรูป",
    "ตลาดอยู่ใกล้บ้านของเรา",
    "ครูให้การบ้านนักเรียนเยอะมาก",
    "ฉันลืมกุญแจไว้ในรถ",
    "พรุ่งนี้ฝนจะตก",
    "กรุงเทพมีรถติดมาก",
    "แมวนอนอยู่บนโต๊ะ",
]
TH_CASES = [
    ("ฉันไปโรงเรียนทุกวัน", ["ฉัน", "ไป", "โรงเรียน"]),
    ("วันนี้อากาศดีมาก", ["วันนี้", "อากาศ", "ดี", "มาก"]),
    ("ผมซื้อคอมพิวเตอร์เครื่องใหม่", ["ผม", "ซื้อ", "คอมพิวเตอร์", "ใหม่"]),
    ("เธอโทรศัพท์หาแม่ทุกวัน", ["เธอ", "โทรศัพท์", "แม่"]),
    ("ห้องสมุดเปิดตอนเก้าโมงเช้า", ["ห้องสมุด", "เปิด", "เก้า"]),
    ("พ่อของฉันทำงานที่ธนาคาร", ["พ่อ", "ทำงาน", "ธนาคาร"]),
    ("แมวนอนอยู่บนโต๊ะ", ["แมว", "นอน", "โต๊ะ"]),
]


@dataclass
class Row:
    lang: str
    name: str
    version: str
    load_s: float | None = None
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    items: int = 0  # sentences (pairs for zh)
    chars: int = 0
    words: int = 0
    ratio_wall: float | None = None
    ratio_cpu: float | None = None
    scores: dict | None = None
    blind: dict | None = None  # zh: lexicon and gold both mapped to Simplified
    tag: str = ""
    hand: str = ""
    note: str = ""


def cpu_now() -> float:
    return time.process_time()  # all threads of this process


def version(*dists: str) -> str:
    out = []
    for dist in dists:
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} ?")
    return ", ".join(out)


def clean(tokens: Sequence[str]) -> list[str]:
    """Drop whitespace tokens and split any token holding whitespace (``--pretokenized`` splits on it)."""
    return [w for tok in tokens for w in tok.split()]


def per_text(cut: Callable[[str], Sequence[str]]) -> Batch:
    return lambda texts: [clean(cut(t)) for t in texts]


def reference() -> Batch:
    """prealign's Segmenter as it runs today, on text already normalised (so normalisation is not timed twice)."""
    seg = Segmenter(SegmenterConfig(lowercase=False, normalize=False))
    return seg.segment_batch


# ---- candidate loaders: each returns (batch function, versions) or raises ImportError / a skip reason
class Skip(Exception):
    pass


def load_jieba() -> tuple[Batch, str]:
    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()  # builds or loads the prefix dictionary (cached in the temp directory after the first run)
    return per_text(lambda t: jieba.lcut(t, HMM=True)), version("jieba")


def load_pkuseg() -> tuple[Batch, str]:
    import pkuseg

    seg = pkuseg.pkuseg()  # the default model, shipped inside the package
    return per_text(seg.cut), version("pkuseg")


def load_spacy_pkuseg() -> tuple[Batch, str]:
    import spacy_pkuseg

    home = Path(os.environ.get("PKUSEG_HOME", Path.home() / ".pkuseg")) / "spacy_ontonotes"
    if not home.exists():
        raise Skip(f"ships no model: pkuseg() would download spacy_ontonotes.zip into {home.parent} at run time")
    seg = spacy_pkuseg.pkuseg()
    return per_text(seg.cut), version("spacy-pkuseg")


def load_fugashi() -> tuple[Batch, str]:
    import fugashi
    import unidic_lite

    tagger = fugashi.Tagger(f'-d "{unidic_lite.DICDIR}" -r "{Path(unidic_lite.DICDIR) / "mecabrc"}"')
    return per_text(lambda t: [w.surface for w in tagger(t)]), version("fugashi", "unidic-lite")


def load_sudachi(mode: str) -> Callable[[], tuple[Batch, str]]:
    def load() -> tuple[Batch, str]:
        from sudachipy import Dictionary

        tok = Dictionary(dict="core").tokenizer(mode=mode, fields=set())
        return per_text(lambda t: [m.surface() for m in tok.tokenize(t)]), version("sudachipy", "sudachidict-core")

    return load


def load_pythainlp() -> tuple[Batch, str]:
    from pythainlp.tokenize import word_tokenize

    return per_text(lambda t: word_tokenize(t, engine="newmm", keep_whitespace=False)), version("pythainlp")


def load(name: str, loader: Callable[[], tuple[Batch, str]]) -> tuple[Batch | None, str, float]:
    """The batch function, its versions and its load time; None and a printed reason when unavailable."""
    start = time.perf_counter()
    try:
        fn, ver = loader()
    except ImportError as exc:
        print(f"  skip {name}: not installed ({exc})")
        return None, "", 0.0
    except Skip as exc:
        print(f"  skip {name}: {exc}")
        return None, "", 0.0
    return fn, ver, time.perf_counter() - start


def timed(fn: Batch, texts: Sequence[str], warmup: int = 1000) -> tuple[list[list[str]], float, float]:
    fn(texts[:warmup])
    wall, cpu = time.perf_counter(), cpu_now()
    out = fn(texts)
    return out, time.perf_counter() - wall, cpu_now() - cpu


# ---- Chinese
def cli() -> list[str]:
    exe = shutil.which("prealign-data") or str(Path(sys.executable).with_name("prealign-data"))
    return [exe]


def score(en: list[str], zh: list[list[str]], tmp: Path, tag: str, gold: Path) -> tuple[dict, float, Path]:
    """Write the pre-segmented pairs, extract a lexicon with the CLI, score it; the extraction's wall time."""
    pre = tmp / f"{tag}.tsv"
    lex = tmp / f"{tag}.parquet"
    pre.write_text("".join(f"{e}\t{' '.join(z)}\n" for e, z in zip(en, zh, strict=True)), encoding="utf-8")
    start = time.perf_counter()
    cmd = [*cli(), "extract-lexicon", str(pre), "--src-lang", "en", "--tgt-lang", "zh", "--pretokenized"]
    done = subprocess.run([*cmd, "--workers", "0", "-q", "--overwrite", "-o", str(lex)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"extract-lexicon failed on {pre}:\n{done.stderr}")
    took = time.perf_counter() - start
    return evaluate(lex, gold), took, lex


def evaluate(lex: Path, gold: Path) -> dict:
    ev = [*cli(), "eval-lexicon", str(lex), "--gold", str(gold), "--min-count", "5", "--json"]
    out = subprocess.run(ev, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def simplified(lex: Path, converter) -> Path:
    """A copy of the lexicon with its translations mapped to Simplified; of rows that then coincide, the
    best-scored is kept (so a word's top 5 holds 5 distinct translations)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(lex)
    rows = sorted(table.to_pylist(), key=lambda r: -r["score"])
    seen, kept = set(), []
    for r in rows:
        r["tgt"] = converter.convert(r["tgt"])
        if (r["src"], r["tgt"]) not in seen:
            seen.add((r["src"], r["tgt"]))
            kept.append(r)
    out = lex.with_name(lex.stem + ".simplified.parquet")
    pq.write_table(pa.Table.from_pylist(kept, schema=table.schema), out)
    return out


def probes(lex: Path) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table(lex, columns=["src", "tgt", "score"]).to_pylist()
    best: dict[str, tuple[float, str]] = {}
    for r in table:
        if r["src"] in PROBES and (r["src"] not in best or r["score"] > best[r["src"]][0]):
            best[r["src"]] = (r["score"], r["tgt"])
    return ", ".join(f"{p}->{best[p][1]}" if p in best else f"{p}->-" for p in PROBES)


def with_t2s(base: Row, fn: Batch, converter, zh: list[str], en: list[str], n_chars: int, tmp: Path, gold: Path) -> Row:
    """OpenCC Traditional->Simplified conversion, then the segmenter of ``base``; timed together."""
    name = f"OpenCC t2s + {base.name}"
    start = time.perf_counter()
    converter.convert("預熱")
    load_s = (base.load_s or 0.0) + time.perf_counter() - start

    def t2s_then(texts: Sequence[str]) -> list[list[str]]:
        return fn([converter.convert(t) for t in texts])

    out, wall, cpu = timed(t2s_then, zh)
    row = Row("zh", name, f"{version('opencc')}; {base.version}", load_s, wall, cpu, len(zh), n_chars)
    row.words = sum(map(len, out))
    row.tag = f"t2s-{base.tag}"
    row.scores, took, lex = score(en, out, tmp, row.tag, gold)
    row.note = f"extract {took:.1f} s; {probes(lex)}"
    print(f"  {name}: {len(zh) / wall:,.0f} pairs/s, P@1 {row.scores['p@1']:.3f}; {row.note}")
    return row


def chinese(args: argparse.Namespace, tmp: Path) -> list[Row]:
    path = args.data / "parallel/tatoeba.en-zh.tsv"
    gold = args.data / "gold/muse-dev.en-zh.tsv"
    pairs = [line.split("\t")[:2] for line in path.read_text("utf-8").splitlines() if line.strip()]
    if args.limit:
        pairs = pairs[: args.limit]
    en_raw, zh_raw = [p[0] for p in pairs], [p[1] for p in pairs]
    print(f"\n## Chinese: {len(pairs):,} pairs from {path.name}")
    en = [
        " ".join(w)
        for w in Segmenter(SegmenterConfig(lowercase=True, apostrophe=apostrophe_for("en"))).segment_batch(en_raw)
    ]
    zh_seg = Segmenter(SegmenterConfig(lowercase=True, apostrophe=apostrophe_for("zh")))
    start = time.perf_counter()
    zh = [zh_seg.normalize(t) for t in zh_raw]
    norm_s = time.perf_counter() - start
    n_chars = sum(len(t) for t in zh)
    print(f"  normalisation (NFKC + lowercase) of the Chinese side: {norm_s:.3f} s ({n_chars / norm_s:,.0f} chars/s)")
    nfkc_changed = Counter((a, b) for t in zh_raw for a in t if (b := unicodedata.normalize("NFKC", a)) != a)
    lines_nfkc = sum(unicodedata.normalize("NFKC", t) != t for t in zh_raw)
    lines_lower = sum(unicodedata.normalize("NFKC", t).lower() != unicodedata.normalize("NFKC", t) for t in zh_raw)
    print(f"  NFKC changes {lines_nfkc:,} lines, lowercasing {lines_lower:,} more (Latin names: Tom -> tom)")
    print(
        "  most frequent NFKC changes: " + ", ".join(f"{a!r}->{b!r} x{c}" for (a, b), c in nfkc_changed.most_common(8))
    )

    rows: list[Row] = []
    segs: dict[str, list[list[str]]] = {}
    candidates = [
        ("chars (prealign today)", lambda: (reference(), version("tokenizers"))),
        ("jieba", load_jieba),
        ("pkuseg", load_pkuseg),
        ("spacy-pkuseg", load_spacy_pkuseg),
    ]
    loaded: dict[str, Batch] = {}
    for name, loader in candidates:
        fn, ver, load_s = load(name, loader)
        if fn is None:
            continue
        loaded[name] = fn
        out, wall, cpu = timed(fn, zh)
        segs[name] = out
        row = Row("zh", name, ver, load_s, wall, cpu, len(zh), n_chars, sum(map(len, out)))
        row.tag = name.split()[0]
        row.scores, took, lex = score(en, out, tmp, row.tag, gold)
        row.note = f"extract {took:.1f} s; {probes(lex)}"
        print(f"  {name}: {len(zh) / wall:,.0f} pairs/s, P@1 {row.scores['p@1']:.3f}; {row.note}")
        rows.append(row)

    try:
        import opencc

        converter = opencc.OpenCC("t2s")
    except ImportError as exc:
        print(f"  skip OpenCC t2s: not installed ({exc})")
        converter = None
    real = [r for r in rows if not r.name.startswith("chars")]
    if converter is not None and real:
        trad = [converter.convert(t) != t for t in zh]
        gold_zh = [line.split("\t")[1] for line in gold.read_text("utf-8").splitlines() if "\t" in line]
        gold_trad = sum(converter.convert(w) != w for w in gold_zh)
        print(
            f"  OpenCC t2s changes {sum(trad):,} of {len(zh):,} Chinese lines ({sum(trad) / len(zh):.0%}) and "
            f"{gold_trad:,} of {len(gold_zh):,} gold translations ({gold_trad / len(gold_zh):.0%})"
        )
        for name, out in segs.items():
            if name.startswith("chars"):
                continue
            t_c = sum(len(t) for t, f in zip(zh, trad, strict=True) if f)
            t_w = sum(len(w) for w, f in zip(out, trad, strict=True) if f)
            s_c = sum(len(t) for t, f in zip(zh, trad, strict=True) if not f)
            s_w = sum(len(w) for w, f in zip(out, trad, strict=True) if not f)
            print(f"  {name}: chars per word {t_c / t_w:.2f} on Traditional lines, {s_c / s_w:.2f} on the others")
        for best in real:  # jieba and pkuseg tie closely on P@1 here, so each gets its OpenCC row
            rows.append(with_t2s(best, loaded[best.name], converter, zh, en, n_chars, tmp, gold))
        # The gold mixes the two scripts too, so a lexicon in one script loses on the other's gold words.
        # Script-blind score: every lexicon's translations and the gold both mapped to Simplified.
        gold_s = tmp / "muse-dev.en-zh.t2s.tsv"
        with gold.open(encoding="utf-8") as f, gold_s.open("w", encoding="utf-8") as g:
            for line in f:
                g.write(converter.convert(line))
        for r in rows:
            if r.lang == "zh":
                r.blind = evaluate(simplified(tmp / f"{r.tag}.parquet", converter), gold_s)
                print(f"  {r.name}: script-blind P@1 {r.blind['p@1']:.3f}, P@5 {r.blind['p@5']:.3f}")
    if "jieba" in loaded:  # does NFKC + lowercase before jieba change its segmentation?
        jieba_raw = loaded["jieba"](zh_raw)
        differ = sum([zh_seg.normalize(w) for w in a] != b for a, b in zip(jieba_raw, segs["jieba"], strict=True))
        print(f"  jieba on raw vs normalised text: segmentation differs on {differ:,} of {len(zh):,} lines")
    return rows


# ---- Japanese and Thai
def hand_check(fn: Batch, cases: list[tuple[str, list[str]]], norm: Callable[[str], str]) -> tuple[str, list[str]]:
    found = kata_found = kata_total = total = 0
    missed = []
    outs = fn([norm(s) for s, _ in cases])
    for (_, expected), words in zip(cases, outs, strict=True):
        for w in expected:
            ok = norm(w) in words
            kata = all("\u30a0" <= c <= "\u30ff" for c in w)
            found += ok
            total += 1
            kata_found += ok and kata
            kata_total += kata
            if not ok:
                missed.append(f"{w} ({'/'.join(words)})")
    text = f"{found / total:.2f} ({found}/{total})"
    if kata_total:
        text += f"; katakana whole {kata_found}/{kata_total}"
    return text, missed


def speed_rows(lang: str, sentences: list[str], cases, candidates, chars_wanted: int, norm) -> list[Row]:
    """Speed and hand check; a candidate may carry its own normalisation as a third item."""
    reps = max(1, chars_wanted // sum(len(s) for s in sentences))
    n_chars = sum(len(norm(s)) for s in sentences) * reps
    print(f"\n## {lang}: {len(sentences)} sentences x {reps} = {len(sentences) * reps:,} sentences, {n_chars:,} chars")
    rows = []
    for name, loader, *own in candidates:
        nrm = own[0] if own else norm
        texts = [nrm(s) for s in sentences] * reps
        n_chars = sum(len(t) for t in texts)
        fn, ver, load_s = load(name, loader)
        if fn is None:
            continue
        out, wall, cpu = timed(fn, texts)
        row = Row(lang, name, ver, load_s, wall, cpu, len(texts), n_chars, sum(map(len, out)))
        row.hand, missed = hand_check(fn, cases, nrm)
        print(f"  {name}: {n_chars / wall:,.0f} chars/s; hand check {row.hand}")
        for m in missed:
            print(f"    missed {m}")
        rows.append(row)
    return rows


def ratios(rows: list[Row]) -> None:
    for lang in {r.lang for r in rows}:
        ref = next((r for r in rows if r.lang == lang and r.name.startswith("chars")), None)
        if ref is None:
            continue
        for r in rows:
            if r.lang == lang:
                r.ratio_wall = (r.chars / r.wall_s) / (ref.chars / ref.wall_s)
                r.ratio_cpu = (r.chars / r.cpu_s) / (ref.chars / ref.cpu_s) if r.cpu_s > 0 and ref.cpu_s > 0 else None


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    head = (
        "| lang | segmenter | package version | load s | pairs/s | chars/s | x ref (wall) | x ref (CPU) "
        "| chars/word | P@1 | P@5 | coverage | P@1 blind | P@5 blind | hand check |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s, b = r.scores or {}, r.blind or {}
        pairs = f"{r.items / r.wall_s:,.0f}" if r.lang == "zh" else "-"
        lines.append(
            f"| {r.lang} | {r.name} | {r.version} | {fmt(r.load_s, '.2f')} | {pairs} | {r.chars / r.wall_s:,.0f} "
            f"| {fmt(r.ratio_wall, '.3f')} | {fmt(r.ratio_cpu, '.3f')} | {r.chars / max(r.words, 1):.2f} "
            f"| {fmt(s.get('p@1'), '.3f')} | {fmt(s.get('p@5'), '.3f')} | {fmt(s.get('coverage'), '.3f')} "
            f"| {fmt(b.get('p@1'), '.3f')} | {fmt(b.get('p@5'), '.3f')} "
            f"| {r.hand or '-'} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=0, help="only the first N Chinese pairs (for a quick try)")
    ap.add_argument("--ja-chars", type=int, default=200_000, help="characters of Japanese/Thai text to time")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the pre-segmented files and lexicons in DIR")
    ap.add_argument("--skip-zh", action="store_true")
    args = ap.parse_args()
    if not args.skip_zh and not (args.data / "parallel/tatoeba.en-zh.tsv").exists():
        print(f"no data at {args.data}: pass --data", file=sys.stderr)
        return 2
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    norm = Segmenter(SegmenterConfig(lowercase=True)).normalize
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        if not args.skip_zh:
            rows += chinese(args, tmp)
    ref = [("chars (prealign today)", lambda: (reference(), version("tokenizers")))]
    ja = [
        ("fugashi + unidic-lite", load_fugashi),
        ("sudachipy core, mode A", load_sudachi("A")),
        ("sudachipy core, mode C", load_sudachi("C")),
    ]
    rows += speed_rows("ja", JA_SENTENCES, JA_CASES, ref + ja, args.ja_chars, norm)
    lower_only = Segmenter(SegmenterConfig(lowercase=True, normalize=False)).normalize
    th = [("pythainlp newmm", load_pythainlp), ("pythainlp newmm, no NFKC", load_pythainlp, lower_only)]
    rows += speed_rows("th", TH_SENTENCES, TH_CASES, ref + th, args.ja_chars, norm)
    ratios(rows)
    print("\n" + table(rows))
    print(
        "\nspeeds: segmentation alone on NFKC+lowercased text, after loading and a 1000-sentence warm-up; "
        "x ref = speed / prealign's current Segmenter (tokenizers pre-tokenizer, encode_batch on all cores) on "
        "the same text, by wall and by CPU time; zh scores: eval-lexicon --min-count 5 against muse-dev.en-zh.tsv; "
        "blind: lexicon translations and gold both mapped to Simplified by OpenCC t2s first; load s of a second "
        "row of the same package excludes the import done for the first"
    )
    for r in rows:
        if r.note:
            print(f"  {r.name}: {r.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
