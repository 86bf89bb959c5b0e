"""Multi-way lexicons: `lexicon merge`, the tgt_lang column in lexicon files, the .json export, switching into
several languages with weights (rates, labels, determinism) and align-init positives across languages."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli, lexicon_frame
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from prealign.codeswitch.switch import Switched, apply_casing, switch_batch
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.codeswitch.tokenizer import save_tokenizer
from prealign.errors import InputError
from prealign.lexicon.lexicon_io import read_lexicon, write_lexicon
from prealign.lexicon.multiway import parse_lang_weights
from prealign.lexicon.score import LEXICON_SCHEMA
from prealign.shards import read_rows
from prealign.train.align_init import AlignInitConfig, lexicon_entries

IGNORE = -100
# (src, tgt, p(tgt|src), score); no translation's tokens are a prefix of another's of the same word
FR = [
    ("bank", "banque", 0.7, 0.6),
    ("bank", "rive", 0.3, 0.2),
    ("dog", "chien", 1.0, 0.9),
    ("house", "maison", 1.0, 0.9),
    ("river", "fleuve", 1.0, 0.8),
]
ZH = [
    ("bank", "银行", 0.8, 0.7),
    ("bank", "岸", 0.2, 0.1),
    ("dog", "狗", 1.0, 0.9),
    ("tea", "茶", 1.0, 0.9),
    ("river", "河", 0.6, 0.5),
    ("river", "江", 0.4, 0.3),
]
NO_ENTRY = ["the", "a", "near", "is", "big", "old", "and", "sat"]


def frame(rows: list[tuple[str, str, float, float]]) -> pl.DataFrame:
    return lexicon_frame(rows, count=5)


def write(path: Path, rows, src_lang: str | None = "en", tgt_lang: str | None = None) -> Path:
    meta = {"tool": "test"}
    if src_lang:
        meta["src_lang"] = src_lang
    if tgt_lang:
        meta["tgt_lang"] = tgt_lang
    write_lexicon(frame(rows), path, meta)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "en-fr.parquet", FR, tgt_lang="fr"), write(tmp_path / "en-zh.parquet", ZH, tgt_lang="zh")


def triples(df: pl.DataFrame) -> dict[tuple[str, str, str], tuple]:
    cols = ["count", "p_tgt_given_src", "p_src_given_tgt", "score"]
    return {(r["src"], r["tgt_lang"], r["tgt"]): tuple(r[c] for c in cols) for r in df.iter_rows(named=True)}


# --- merge -----------------------------------------------------------------------------------------------------


def test_merge_keeps_rows_languages_scores_and_records_the_inputs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    fr, zh = pair
    out = tmp_path / "multi.parquet"
    result = cli("lexicon", "merge", fr, zh, "-o", out)
    assert "5 source words, 11 rows in 2 language(s) (fr 4 words, zh 4 words)" in result.stdout
    df, meta = read_lexicon(out)
    assert df.columns == [*LEXICON_SCHEMA, "tgt_lang"] and df.height == len(FR) + len(ZH)
    expected = {
        **triples(frame(FR).with_columns(tgt_lang=pl.lit("fr"))),
        **triples(frame(ZH).with_columns(tgt_lang=pl.lit("zh"))),
    }
    assert triples(df) == expected  # every row, its language and its scores
    rank = {"fr": 0, "zh": 1}
    keys = [(r["src"], rank[r["tgt_lang"]], -r["score"]) for r in df.iter_rows(named=True)]
    assert keys == sorted(keys)  # src, then language in input order, then best first
    assert meta["kind"] == "multi-way" and meta["src_lang"] == "en" and meta["tgt_langs"] == ["fr", "zh"]
    assert [i["file"] for i in meta["inputs"]] == ["en-fr.parquet", "en-zh.parquet"]
    assert [i["sha256"] for i in meta["inputs"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in pair]
    assert [i["tgt_langs"] for i in meta["inputs"]] == [["fr"], ["zh"]]
    assert meta["inputs"][1]["metadata"] == {"tool": "test", "src_lang": "en", "tgt_lang": "zh"}

    # a multi-way input merges like any other, its tgt_lang column kept; text formats keep the column too
    de = write(tmp_path / "en-de.tsv", [("dog", "hund", 1.0, 0.9)], tgt_lang="de")
    out2 = tmp_path / "multi3.jsonl"
    cli("lexicon", "merge", out, de, "-o", out2)
    df2, meta2 = read_lexicon(out2)
    assert meta2["tgt_langs"] == ["fr", "zh", "de"] and meta2["inputs"][0]["tgt_langs"] == ["fr", "zh"]
    assert triples(df2) == {**expected, ("dog", "de", "hund"): (5, 1.0, 0.5, pytest.approx(0.9))}


def test_merge_require_all_and_languages_given_on_the_command_line(tmp_path: Path) -> None:
    fr = write(tmp_path / "fr.tsv", FR, src_lang=None)  # no languages in the metadata
    zh = write(tmp_path / "zh.tsv", ZH, src_lang=None)
    out = tmp_path / "all.parquet"
    cli("lexicon", "merge", fr, zh, "--tgt-langs", "fr,zh", "--require-all", "-o", out)
    df, meta = read_lexicon(out)
    assert set(df["src"]) == {"bank", "dog", "river"}  # house (fr only) and tea (zh only) go
    assert df.group_by("src").agg(pl.col("tgt_lang").n_unique())["tgt_lang"].to_list() == [2, 2, 2]
    assert meta["require_all"] is True and meta["src_lang"] is None and meta["tgt_langs"] == ["fr", "zh"]
    cli("lexicon", "merge", fr, zh, "--tgt-langs", "fr,zh", "-o", out, "--overwrite")
    assert set(read_lexicon(out)[0]["src"]) == {"bank", "dog", "river", "house", "tea"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-language", "en-xx.parquet: no target language"),
        ("same-language", "en-fr2.parquet: target language 'fr' again"),
        ("other-pivot", "de-zh.parquet: pivot language 'de' differs from 'en'"),
        ("count", "--tgt-langs lists 1 language(s) for 2 lexicon(s)"),
        ("conflict", "en-zh.parquet: --tgt-langs says 'ja' but its metadata says tgt_lang 'zh'"),
        ("multiway-given", "multi.parquet: is already multi-way"),
        ("malformed", "'--tgt-langs'"),
        ("exists", "out.parquet: exists; pass --overwrite"),
        ("bad-format", "unsupported lexicon format '.csv'"),
    ],
)
def test_merge_errors_are_one_line_naming_the_file(
    case: str, message: str, pair: tuple[Path, Path], tmp_path: Path
) -> None:
    fr, zh = pair
    out = tmp_path / "out.parquet"
    args: list[object] = {
        "no-language": [fr, write(tmp_path / "en-xx.parquet", ZH)],
        "same-language": [fr, write(tmp_path / "en-fr2.parquet", FR, tgt_lang="fr")],
        "other-pivot": [fr, write(tmp_path / "de-zh.parquet", ZH, src_lang="de", tgt_lang="zh")],
        "count": [fr, zh, "--tgt-langs", "fr"],
        "conflict": [fr, zh, "--tgt-langs", "-,ja"],
        "multiway-given": [tmp_path / "multi.parquet", "--tgt-langs", "fr"],
        "malformed": [fr, zh, "--tgt-langs", "fr,z h"],
        "exists": [fr, zh],
        "bad-format": [fr, zh, "-o", tmp_path / "out.csv"],
    }[case]
    if case == "multiway-given":
        cli("lexicon", "merge", fr, zh, "-o", tmp_path / "multi.parquet")
    if case == "exists":
        out.write_bytes(b"keep")
    result = cli("lexicon", "merge", *args, *([] if case == "bad-format" else ["-o", out]), code=2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    if case == "exists":
        assert out.read_bytes() == b"keep"
    else:
        assert not out.exists()


def test_json_export_round_trip(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "multi.json"
    cli("lexicon", "merge", *pair, "-o", out)
    lines = out.read_text(encoding="utf-8").splitlines()
    words = {}
    for line in lines:
        obj = json.loads(line)
        assert list(obj) == ["words"]
        pivot, *translations = obj["words"].split(" $ ")
        words[pivot] = translations
    expected: dict[str, set[str]] = {}
    for src, tgt, _, _ in FR + ZH:
        expected.setdefault(src, set()).add(tgt)
    assert {k: set(v) for k, v in words.items()} == expected
    assert all(len(v) == len(set(v)) for v in words.values())
    assert words["bank"] == ["banque", "rive", "银行", "岸"]  # languages in input order, then best first
    assert words["river"] == ["fleuve", "河", "江"]
    assert json.loads(out.with_name("multi.json.meta.json").read_text())["tgt_langs"] == ["fr", "zh"]


def test_read_lexicon_checks_the_tgt_lang_column(tmp_path: Path) -> None:
    good = frame(FR).with_columns(tgt_lang=pl.lit("fr"))
    for suffix in (".parquet", ".tsv", ".jsonl"):
        path = tmp_path / f"ok{suffix}"
        write_lexicon(good, path, {"tgt_langs": ["fr"]})
        back, _ = read_lexicon(path)
        assert back["tgt_lang"].to_list() == ["fr"] * len(FR) and back.columns[-1] == "tgt_lang"

    table = frame(FR).to_arrow()
    bad_values: list[tuple[str, pa.Array, str]] = [
        ("null", pa.array(["fr", None, "fr", "fr", "fr"]), "row 2"),
        ("space", pa.array(["fr", "fr", "f r", "fr", "fr"]), "row 3"),
        ("number", pa.array([1, 2, 3, 4, 5]), "is not String"),
    ]
    for name, column, where in bad_values:
        path = tmp_path / f"bad-{name}.parquet"
        pq.write_table(table.append_column("tgt_lang", column), path)
        with pytest.raises(InputError, match=where) as info:
            read_lexicon(path)
        assert str(path) in str(info.value) and "tgt_lang" in str(info.value)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text(
        "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\ttgt_lang\na\tb\t1\t1\t1\t1\tfr\nc\td\t1\t1\t1\t1\t\n"
    )
    with pytest.raises(InputError, match=r"bad\.tsv:3: column 'tgt_lang'"):
        read_lexicon(tsv)
    jsonl = tmp_path / "bad.jsonl"
    row = {"src": "a", "tgt": "b", "count": 1, "p_tgt_given_src": 1, "p_src_given_tgt": 1, "score": 1}
    jsonl.write_text(json.dumps({**row, "tgt_lang": "fr"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: column 'tgt_lang'"):
        read_lexicon(jsonl)
    jsonl.write_text(json.dumps({**row, "tgt_lang": 7}) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: column 'tgt_lang': 7"):
        read_lexicon(jsonl)
    with pytest.raises(ValueError, match="tgt_lang"):
        write_lexicon(good.with_columns(tgt_lang=pl.lit("f\tr")), tmp_path / "w.parquet")


# --- switching -------------------------------------------------------------------------------------------------


def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE without merges: every byte one token, specials 0 and 1."""
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    return tok


def documents(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = sorted({r[0] for r in FR + ZH}) + NO_ENTRY
    out = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(vocab, size=rng.integers(3, 20))]
        if rng.random() < 0.3:
            words[0] = words[0].title()
        out.append(" ".join(words) + str(rng.choice([".", "!", ""])))
    return out


def multi() -> pl.DataFrame:
    return pl.concat([frame(FR).with_columns(tgt_lang=pl.lit("fr")), frame(ZH).with_columns(tgt_lang=pl.lit("zh"))])


def check_labels(tok: Tokenizer, text: str, out: Switched, d: int, lang_of: dict[tuple[str, str], str]) -> dict:
    """Walk the original words over document ``d``: a switched word is one of its translations (cased like the
    word), labelled by the input-only rule; returns how many words were switched into each language."""
    lo, hi = int(out.offsets[d]), int(out.offsets[d + 1])
    inp, lab, sw = (a[lo:hi].tolist() for a in (out.input_ids, out.labels, out.switched))
    enc = tok.encode(text, add_special_tokens=False)
    words: list[list[int]] = []
    last = object()
    for i, w in zip(enc.ids, enc.word_ids, strict=True):
        if w is None or w != last:
            words.append([])
        words[-1].append(i)
        last = w
    counts: dict[str, int] = {}
    j = 0
    for ids in words:
        if j < len(sw) and sw[j]:
            surface = tok.decode(ids)
            core = surface.strip()
            casing = 2 if len(core) > 1 and core.isupper() else 1 if core[0].isupper() else 0
            prefix = surface[: len(surface) - len(surface.lstrip())]
            found = []
            for (src, tgt), lang in lang_of.items():
                if src == core.lower():
                    new = tok.encode(prefix + apply_casing(tgt, casing), add_special_tokens=False).ids
                    if inp[j : j + len(new)] == new:
                        found.append((len(new), lang, new))
            assert len(found) == 1, (text, core, found)
            m, lang, new = found[0]
            assert lab[j] == ids[0] and lab[j + 1 : j + m] == [IGNORE] * (m - 1), text
            assert sw[j : j + m] == [1] * m
            counts[lang] = counts.get(lang, 0) + 1
        else:
            m = len(ids)
            assert inp[j : j + m] == ids and lab[j : j + m] == ids and sw[j : j + m] == [0] * m, text
        j += m
    assert j == len(inp)
    return counts


def test_switching_into_two_languages_follows_the_weights_and_the_label_rule() -> None:
    tok = byte_tokenizer()
    texts = documents(400, seed=5)
    weights = {"fr": 1.0, "zh": 3.0}
    config = SwitchConfig(ratio=0.3, seed=11)
    table = build_table(multi(), config, weights)
    assert table.languages == ["fr", "zh"]
    out = switch_batch(texts, 0, tok, table, config)
    lang_of = {(s, t): "fr" for s, t, _, _ in FR} | {(s, t): "zh" for s, t, _, _ in ZH}
    counts: dict[str, int] = {}
    for d, text in enumerate(texts):
        for lang, n in check_labels(tok, text, out, d, lang_of).items():
            counts[lang] = counts.get(lang, 0) + n
    assert [counts.get("fr", 0), counts.get("zh", 0)] == out.lang_switched.tolist()
    assert sum(counts.values()) == out.words_switched

    # expected switches per language: ratio x the language's share among the languages each word has
    has = {lang: {s for s, _, _, _ in rows} for lang, rows in (("fr", FR), ("zh", ZH))}
    occurrences: dict[str, int] = {}
    for text in texts:
        for w in text.rstrip(".!").split():
            if w.lower() in has["fr"] | has["zh"]:
                occurrences[w.lower()] = occurrences.get(w.lower(), 0) + 1
    assert out.words_with_entry == sum(occurrences.values())
    for k, lang in enumerate(["fr", "zh"]):
        assert out.lang_with_entry[k] == sum(n for w, n in occurrences.items() if w in has[lang])
        mean = var = 0.0
        for w, n in occurrences.items():
            total = sum(weights[g] for g in weights if w in has[g])
            p = config.ratio * (weights[lang] / total if w in has[lang] else 0.0)
            mean += n * p
            var += n * p * (1 - p)
        assert abs(out.lang_switched[k] - mean) < 4 * math.sqrt(var), (lang, out.lang_switched[k], mean)


def test_one_language_multiway_switches_exactly_like_the_bilingual_lexicon() -> None:
    tok = byte_tokenizer()
    texts = documents(200, seed=2)
    for choice in ("weighted", "uniform", "top"):
        config = SwitchConfig(ratio=0.4, seed=3, choice=choice)
        a = switch_batch(texts, 0, tok, build_table(frame(FR), config), config)
        b = switch_batch(texts, 0, tok, build_table(frame(FR).with_columns(tgt_lang=pl.lit("fr")), config), config)
        for name in ("input_ids", "labels", "switched", "offsets"):
            assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), (choice, name)
        assert a.lang_switched.tolist() == [a.words_switched] and a.lang_with_entry.tolist() == [a.words_with_entry]


def test_weight_zero_language_is_never_switched_into() -> None:
    tok = byte_tokenizer()
    texts = documents(200, seed=4)
    config = SwitchConfig(ratio=1.0, seed=1)
    table = build_table(multi(), config, {"fr": 0.0, "zh": 1.0})
    assert "house" not in table.index and "tea" in table.index  # house has only French
    out = switch_batch(texts, 0, tok, table, config)
    text = tok.decode(out.input_ids.tolist())
    assert out.lang_switched.tolist() == [0, out.words_switched] and out.words_switched > 0
    assert not any(t in text.lower() for _, t, _, _ in FR)
    table = build_table(multi(), config, {"de": 5.0, "zh": 0.0})  # a language without rows changes nothing
    assert table.languages == ["de", "zh", "fr"] and set(table.index) == {"bank", "dog", "house", "river"}
    only_fr = switch_batch(texts, 0, tok, table, config)  # ratio 1: every word with a French entry, into French
    assert only_fr.lang_switched.tolist() == [0, 0, only_fr.words_with_entry] and only_fr.words_with_entry > 0


def test_parse_lang_weights() -> None:
    assert parse_lang_weights("fr=1, zh=2.5,ja=0") == {"fr": 1.0, "zh": 2.5, "ja": 0.0}
    for bad in ("fr", "fr=x", "fr=-1", "fr=1,fr=2", "fr=nan", "=1", "f r=1"):
        with pytest.raises(ValueError):
            parse_lang_weights(bad)


@pytest.fixture(scope="module")
def switch_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multiway-switch")
    tokenizer = root / "tokenizer.json"
    save_tokenizer(byte_tokenizer(), tokenizer)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(documents(300, seed=9)) + "\n", encoding="utf-8")
    fr, zh = write(root / "en-fr.parquet", FR, tgt_lang="fr"), write(root / "en-zh.parquet", ZH, tgt_lang="zh")
    cli("lexicon", "merge", fr, zh, "-o", root / "multi.parquet")
    cli("lexicon", "merge", fr, "-o", root / "fr-multi.parquet")
    return {"root": root, "tokenizer": tokenizer, "corpus": corpus, "fr": fr, "zh": zh, "multi": root / "multi.parquet"}


def run_switch(assets: dict[str, Path], out: Path, *lexicon_args: object, code: int = 0):
    args = [a for p in lexicon_args for a in (("--lexicon", p) if isinstance(p, Path) else (p,))]
    return cli(
        "switch", assets["corpus"], *args, "--tokenizer", assets["tokenizer"], "--ratio", 0.3, "-o", out,
        "--workers", 0, "-q", "--seq-len", 64, code=code,
    )  # fmt: skip


def shard_bytes(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("shard-*.arrow"))]


def test_switch_command_with_a_multiway_lexicon_or_several_bilingual_ones(
    switch_assets: dict[str, Path], tmp_path: Path
) -> None:
    a = switch_assets
    one = run_switch(a, tmp_path / "multi", a["multi"], "--lang-weights", "fr=1,zh=3")
    run_switch(a, tmp_path / "two", a["fr"], a["zh"], "--lang-weights", "fr=1,zh=3")
    assert shard_bytes(tmp_path / "multi") == shard_bytes(tmp_path / "two")
    manifest = json.loads((tmp_path / "multi" / "manifest.json").read_text())
    langs, totals = manifest["languages"], manifest["totals"]
    assert list(langs) == ["fr", "zh"] and [v["weight"] for v in langs.values()] == [1.0, 3.0]
    assert sum(v["words_switched"] for v in langs.values()) == totals["words_switched"] > 0
    for v in langs.values():
        assert v["rate_over_words_with_entry"] == v["words_switched"] / totals["words_with_entry"]
        assert 0 < v["words_with_entry"] < totals["words_with_entry"]
    assert langs["zh"]["words_switched"] > langs["fr"]["words_switched"]
    assert "into zh (weight 3)" in one.stdout and "into fr (weight 1)" in one.stdout
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert two["lexicon"]["sha256"] == [hashlib.sha256(a[k].read_bytes()).hexdigest() for k in ("fr", "zh")]
    assert two["lexicon"]["tgt_langs"] == ["fr", "zh"] and two["languages"] == langs
    rows = read_rows(tmp_path / "multi" / "shard-00000.arrow")
    assert rows.labels.min() == IGNORE  # translations longer than one token are masked after their first position

    # one bilingual lexicon: the same shards as that lexicon made a one-language multi-way one
    run_switch(a, tmp_path / "fr", a["fr"])
    run_switch(a, tmp_path / "fr-multi", a["root"] / "fr-multi.parquet")
    assert shard_bytes(tmp_path / "fr") == shard_bytes(tmp_path / "fr-multi")
    fr = json.loads((tmp_path / "fr" / "manifest.json").read_text())
    assert list(fr["languages"]) == ["fr"] and fr["languages"]["fr"]["words_switched"] == fr["totals"]["words_switched"]
    assert (
        fr["lexicon"]["tgt_lang"] == "fr"
        and fr["lexicon"]["sha256"] == hashlib.sha256(a["fr"].read_bytes()).hexdigest()
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("multi", "--lang-weights", "fr=1,de=2"), "--lang-weights names language(s) de that no lexicon has"),
        (("multi", "--lang-weights", "fr=0,zh=0"), "every target language has weight 0"),
        (("multi", "--lang-weights", "fr=one"), "'--lang-weights'"),
        (("fr", "nolang"), "en-none.parquet: no target language"),
        (("fr", "fr"), "en-fr.parquet: target language 'fr' again"),
    ],
)
def test_switch_language_errors(
    args: tuple[str, ...], message: str, switch_assets: dict[str, Path], tmp_path: Path
) -> None:
    a = dict(switch_assets)
    a["nolang"] = write(tmp_path / "en-none.parquet", ZH)
    lexicon_args = [a[x] if x in a else x for x in args]
    result = run_switch(a, tmp_path / "out", *lexicon_args, code=2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


# --- align-init ------------------------------------------------------------------------------------------------


def test_align_init_uses_every_language_as_positives(pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "multi.parquet"
    cli("lexicon", "merge", *pair, "-o", out)
    df, _ = read_lexicon(out)
    entries = {e[0]: e[1:] for e in lexicon_entries(df, AlignInitConfig())}
    assert set(entries["bank"]) == {"banque", "rive", "银行", "岸"}
    assert set(entries["river"]) == {"fleuve", "河", "江"}
    assert entries["house"] == ("maison",) and entries["tea"] == ("茶",)
    assert len(entries) == 5
