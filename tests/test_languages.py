"""Words in every script: the language code chooses the segmenter (prealign.text), for extract-lexicon and switch."""

from __future__ import annotations

import sys
from itertools import chain
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import cli
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.trainers import BpeTrainer

from prealign.codeswitch.switch import switch_batch
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.errors import InputError
from prealign.lexicon.lexicon_io import read_lexicon, write_lexicon
from prealign.shards import IGNORE_INDEX
from prealign.text import (
    Segmenter,
    SegmenterConfig,
    base_language,
    check_segmented,
    segmenter_config,
    segmenter_for,
    side_segmenters,
)


def words(lang: str, text: str, segmenter: str | None = None, **kw: object) -> list[str]:
    return Segmenter(segmenter_config(lang, segmenter, **kw)).segment(text)  # type: ignore[arg-type]


# --- scripts written with spaces: the tokenizers pre-tokenizer, as before ---------------------------------


@pytest.mark.parametrize(
    ("lang", "text", "expected"),
    [
        ("en", "Tom's bank is closed.", ["tom", "'s", "bank", "is", "closed", "."]),
        ("fr", "L'homme d'affaires arrive.", ["l'", "homme", "d'", "affaires", "arrive", "."]),
        ("de", "Die Straße ist schön, oder?", ["die", "straße", "ist", "schön", ",", "oder", "?"]),
        ("ru", "Привет, мир! Как дела?", ["привет", ",", "мир", "!", "как", "дела", "?"]),
        ("ar", "ذهبت إلى المدرسة.", ["ذهبت", "إلى", "المدرسة", "."]),
        ("el", "Καλημέρα κόσμε!", ["καλημέρα", "κόσμε", "!"]),
        ("he", "שלום עולם, מה שלומך?", ["שלום", "עולם", ",", "מה", "שלומך", "?"]),
        ("hi", "मैं घर जा रहा हूँ।", ["मैं", "घर", "जा", "रहा", "हूँ", "।"]),
        ("ko", "나는 학교에 갑니다.", ["나는", "학교에", "갑니다", "."]),
    ],
)
def test_scripts_with_spaces_split_at_spaces_and_punctuation(lang: str, text: str, expected: list[str]) -> None:
    assert segmenter_for(lang) == "default"
    assert words(lang, text) == expected


def test_language_tags_and_iso_639_3_codes() -> None:
    assert [base_language(x) for x in ("zh-Hant", "zh_TW", "ZH", "cmn", "jpn", "tha", "en-GB", None)] == [
        "zh", "zh", "zh", "zh", "ja", "th", "en", None,
    ]  # fmt: skip
    assert [segmenter_for(x) for x in ("zh-Hans", "ja-JP", "th", "ko", "fr", None)] == [
        "jieba", "sudachi", "pythainlp", "default", "default", "default",
    ]  # fmt: skip


# --- Chinese, Japanese, Thai: dictionary segmenters -----------------------------------------------------


def test_chinese_words_come_from_jieba_not_characters() -> None:
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    got = words("zh", "我明天去银行。他有一台电脑")
    assert {"明天", "银行", "电脑"} <= set(got) and "。" in got
    assert "银" not in got and "脑" not in got
    assert words("zh-Hant", "我們去圖書館") == ["我們", "去", "圖書館"]
    assert words("zh", "我明天去银行", "chars") == ["我", "明", "天", "去", "银", "行"]


def test_japanese_katakana_words_stay_whole() -> None:
    pytest.importorskip("sudachipy", reason="the [ja] extra (sudachipy) is not installed")
    got = words("ja", "昨日、新しいコンピューターを買いました。図書館で本を読みます。")
    assert {"昨日", "コンピューター", "図書館", "本"} <= set(got)
    assert "ン" not in got and "図" not in got


def test_thai_words_and_sara_am_survive_nfkc() -> None:
    pytest.importorskip("pythainlp", reason="the [th] extra (pythainlp) is not installed")
    got = words("th", "ฉันดื่มน้ำที่บ้าน")
    assert {"ฉัน", "ที่", "บ้าน", "น้ำ"} <= set(got)  # น้ำ holds SARA AM, which NFKC decomposes
    assert all("\u0e4d\u0e32" not in w for w in got)


def test_spans_point_into_the_text_as_given() -> None:
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    for lang, text in (("en", "Ｔｏｍ's BANK, ok"), ("zh", "我明天去银行 OK。")):
        seg = Segmenter(segmenter_config(lang))
        spans = seg.spans_batch([text])[0]
        assert [seg.normalize(text[a:b]) for a, b in spans] == seg.segment(text)
        assert all(not text[a:b].isspace() for a, b in spans)


def test_long_japanese_text_is_cut_for_sudachi() -> None:
    pytest.importorskip("sudachipy", reason="the [ja] extra (sudachipy) is not installed")
    text = "図書館で本を読みます。" * 3000  # 33,000 characters, over sudachipy's input limit in bytes
    got = words("ja", text)
    assert got.count("図書館") == 3000 and got.count("。") == 3000


# --- errors: a missing segmenter names its extra; no silent fallback to characters ------------------------


@pytest.mark.parametrize(
    ("lang", "package", "extra"), [("zh", "jieba", "zh"), ("ja", "sudachipy", "ja"), ("th", "pythainlp", "th")]
)
def test_missing_segmenter_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lang: str, package: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what an environment without the package sees: ImportError
    with pytest.raises(InputError, match=rf"pip install 'prealign-data\[{extra}\]'"):
        segmenter_config(lang)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("hello\tx\n", encoding="utf-8")
    result = cli("extract-lexicon", pairs, "--src-lang", "en", "--tgt-lang", lang, "-o", tmp_path / "l.parquet", code=2)
    assert result.stderr.count("\n") == 1 and f"[{extra}]" in result.stderr and f"--tgt-lang {lang}" in result.stderr
    assert not (tmp_path / "l.parquet").exists()
    segmenter_config(lang, "chars")  # chosen on purpose: no package needed


def test_languages_without_a_segmenter_are_refused() -> None:
    with pytest.raises(InputError, match="no word segmenter for Khmer"):
        segmenter_config("km")
    assert segmenter_config("km", "chars").kind == "chars"


def test_unsegmented_script_without_a_language_stops(tmp_path: Path) -> None:
    zh = ["我明天去银行。", "他有一台电脑。", "我们去图书馆。"] * 5
    with pytest.raises(InputError, match="--tgt-lang"):
        check_segmented(SegmenterConfig(), zh, "--tgt-lang", "--tgt-segmenter")
    check_segmented(SegmenterConfig(method="chars"), zh, "--tgt-lang", "--tgt-segmenter")  # on purpose
    check_segmented(SegmenterConfig(), ["Tokyo (東京) is big."] * 5, "--tgt-lang", "--tgt-segmenter")  # a name
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"sentence {i}\t{z}\n" for i, z in enumerate(zh)), encoding="utf-8")
    out = tmp_path / "l.parquet"
    result = cli("extract-lexicon", pairs, "-o", out, "--workers", 0, "-q", code=2)
    assert "scripts written without spaces" in result.stderr and "--tgt-lang" in result.stderr
    assert not out.exists() and not Path(f"{out}.work").exists()


# --- variants: Traditional <-> Simplified -----------------------------------------------------------------


def test_chinese_script_conversion() -> None:
    pytest.importorskip("opencc", reason="the [zh] extra (opencc) is not installed")
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    assert words("zh", "我們去圖書館看書", script="t2s") == ["我们", "去", "图书馆", "看书"]
    assert "圖書館" in words("zh", "我们去图书馆", script="s2t")
    src, tgt = side_segmenters(("en", None), ("zh-Hant", None), chinese_script="simplified")
    assert (src.script, tgt.script) == (None, "t2s")
    with pytest.raises(InputError, match="neither --src-lang nor --tgt-lang is zh"):
        side_segmenters(("en", None), ("fr", None), chinese_script="simplified")


def test_extract_lexicon_in_chinese_records_its_segmenters(tmp_path: Path) -> None:
    pytest.importorskip("opencc", reason="the [zh] extra (opencc) is not installed")
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    base = [("I go to the bank tomorrow .", "我明天去銀行。"), ("the bank is big .", "银行很大。"),
            ("I have a computer .", "我有一台電腦。"), ("the computer is new .", "电脑是新的。")]  # fmt: skip
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{e} {i}\t{z}{i}\n" for i in range(60) for e, z in base), encoding="utf-8")
    out = tmp_path / "lex.parquet"
    cli("extract-lexicon", pairs, "--src-lang", "en", "--tgt-lang", "zh", "--chinese-script", "simplified",
        "-o", out, "--workers", 0, "-q", "--near-dedup", "--min-count", 2)  # fmt: skip
    lex, meta = read_lexicon(out)
    top = dict(lex.sort("score", descending=True).unique("src", keep="first").select("src", "tgt").iter_rows())
    assert top["bank"] == "银行" and top["computer"] == "电脑"  # Traditional lines counted as Simplified words
    assert not any(ch in "".join(lex["tgt"]) for ch in "銀電腦")
    assert meta["tgt_segmenter"]["method"] == "jieba" and meta["tgt_segmenter"]["script"] == "t2s"
    assert meta["src_segmenter"]["method"] == "default" and meta["src_segmenter"]["apostrophe"] == "next"
    result = cli("extract-lexicon", pairs, "--src-lang", "en", "--tgt-lang", "fr", "--chinese-script",
                 "simplified", "-o", tmp_path / "x.parquet", code=2)  # fmt: skip
    assert "neither --src-lang nor --tgt-lang is zh" in result.stderr


# --- switching documents in a language without spaces ------------------------------------------------------

ZH_WORDS = ["我", "明天", "去", "银行", "他", "有", "一台", "电脑", "我们", "图书馆", "看书", "很", "大"]


def _zh_docs(n: int, seed: int = 0, sep: str = "") -> list[str]:
    rng = np.random.default_rng(seed)
    return [sep.join(rng.choice(ZH_WORDS, size=int(rng.integers(4, 12)))) + "。" for _ in range(n)]


def _byte_level_bpe(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([*texts, *["bank computer tomorrow library"] * 20], trainer)
    return tok


@pytest.fixture(scope="module")
def zh_tokenizer() -> Tokenizer:
    """Merges learnt within words only (trained on words joined by spaces): no token straddles two words."""
    return _byte_level_bpe(_zh_docs(500, seed=1, sep=" "))


def test_switching_chinese_documents_uses_the_lexicons_words(zh_tokenizer: Tokenizer) -> None:
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    lex = pl.DataFrame(
        {"src": ["银行", "电脑", "图书馆"], "tgt": ["bank", "computer", "library"], "count": [5, 5, 5],
         "p_tgt_given_src": [1.0] * 3, "p_src_given_tgt": [1.0] * 3, "score": [1.0] * 3},
        schema_overrides={"p_tgt_given_src": pl.Float32, "p_src_given_tgt": pl.Float32, "score": pl.Float32},
    )  # fmt: skip
    rng = np.random.default_rng(0)
    other = [w for w in ZH_WORDS if w not in ("银行", "电脑", "图书馆")]
    pieces = [[rng.choice(other), rng.choice(["银行", "电脑", "图书馆", "", ""])] for _ in range(300 * 5)]
    docs = ["".join(chain.from_iterable(pieces[k : k + 5])) + "。" for k in range(0, len(pieces), 5)]
    seg = Segmenter(segmenter_config("zh"))
    jieba_words = seg.segment_batch(docs)
    expected_words = sum(sum(w != "。" for w in ws) for ws in jieba_words)
    expected_entries = sum(w in ("银行", "电脑", "图书馆") for ws in jieba_words for w in ws)
    assert expected_entries > 400
    cfg = SwitchConfig(ratio=1.0)
    out = switch_batch(docs, 0, zh_tokenizer, build_table(lex, cfg), cfg, segmenter=seg)
    assert (out.words, out.words_with_entry, out.words_switched) == (expected_words, expected_entries, expected_entries)
    assert out.words_unswitchable <= expected_words // 100  # a rare merge such as 我我 straddles two words
    for d, doc in enumerate(docs[:50]):
        a, b = out.offsets[d], out.offsets[d + 1]
        text = zh_tokenizer.decode(out.input_ids[a:b].tolist())
        assert text == doc.replace("银行", "bank").replace("电脑", "computer").replace("图书馆", "library")
        labels, switched, ids = out.labels[a:b], out.switched[a:b], out.input_ids[a:b]
        assert (labels[switched == 0] == ids[switched == 0]).all()
        runs = np.flatnonzero(np.diff(np.concatenate([[0], switched])) == 1)
        firsts = [zh_tokenizer.encode(w).ids[0] for w in jieba_words[d] if w in ("银行", "电脑", "图书馆")]
        assert labels[runs].tolist() == firsts  # input-only: the original word's first token
        inner = np.flatnonzero(switched == 1)
        assert (labels[np.setdiff1d(inner, runs)] == IGNORE_INDEX).all()
    # the default segmenter would make each run of Han characters one word: nothing switched
    plain = switch_batch(docs, 0, zh_tokenizer, build_table(lex, cfg), cfg)
    assert plain.words_switched < expected_entries // 10


def test_tokens_straddling_chinese_words_leave_them_unswitched() -> None:
    """A byte-level BPE learnt on unsegmented Chinese merges across word boundaries (as Llama-3's or Qwen's do on
    Chinese): those words are counted as unswitchable and left as they are."""
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    tok = _byte_level_bpe(_zh_docs(500, seed=1))
    lex = pl.DataFrame({"src": ZH_WORDS, "tgt": [f"w{i}" for i in range(len(ZH_WORDS))]}).with_columns(
        count=pl.lit(5, pl.Int64), p_tgt_given_src=pl.lit(1.0, pl.Float32), p_src_given_tgt=pl.lit(1.0, pl.Float32),
        score=pl.lit(1.0, pl.Float32),
    )  # fmt: skip
    docs = _zh_docs(300)
    seg = Segmenter(segmenter_config("zh"))
    n_words = sum(sum(w != "。" for w in ws) for ws in seg.segment_batch(docs))
    cfg = SwitchConfig(ratio=1.0)
    out = switch_batch(docs, 0, tok, build_table(lex, cfg), cfg, segmenter=seg)
    assert out.words == n_words and out.words_unswitchable > n_words // 10
    clean = n_words - out.words_unswitchable  # every clean word that jieba cut as in ZH_WORDS is switched
    assert out.words_switched == out.words_with_entry and 0.9 * clean <= out.words_with_entry <= clean
    text = tok.decode(out.input_ids[out.offsets[0] : out.offsets[1]].tolist())
    assert text != docs[0] and "。" in text


def test_switch_command_takes_the_lexicons_segmenter(tmp_path: Path, zh_tokenizer: Tokenizer) -> None:
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    lex = pl.DataFrame(
        {"src": ["银行", "电脑"], "tgt": ["bank", "computer"], "count": [5, 5], "p_tgt_given_src": [1.0, 1.0],
         "p_src_given_tgt": [1.0, 1.0], "score": [1.0, 1.0]},
        schema_overrides={"p_tgt_given_src": pl.Float32, "p_src_given_tgt": pl.Float32, "score": pl.Float32},
    )  # fmt: skip
    recorded, bare = tmp_path / "recorded.parquet", tmp_path / "bare.parquet"
    write_lexicon(
        lex, recorded, {"src_lang": "zh", "tgt_lang": "en", "src_segmenter": {"method": "jieba", "lang": "zh"}}
    )
    write_lexicon(lex, bare, {})
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(_zh_docs(200)) + "\n", encoding="utf-8")
    tok = tmp_path / "tokenizer.json"
    zh_tokenizer.save(str(tok))
    base = ["switch", corpus, "--tokenizer", tok, "--ratio", 0.5, "--workers", 0, "-q"]
    cli(*base, "--lexicon", recorded, "-o", tmp_path / "a")
    cli(*base, "--lexicon", bare, "--lang", "zh", "-o", tmp_path / "b")
    a, b = (read_manifest_of(tmp_path / d) for d in ("a", "b"))
    assert a["segmenter"]["method"] == b["segmenter"]["method"] == "jieba"
    assert a["totals"]["words_switched"] == b["totals"]["words_switched"] > 0
    result = cli(*base, "--lexicon", bare, "-o", tmp_path / "c", code=2)  # no language anywhere: refused
    assert "scripts written without spaces" in result.stderr and "--lang" in result.stderr
    assert not (tmp_path / "c").exists()


def read_manifest_of(directory: Path) -> dict:
    from prealign.shards import read_manifest

    return read_manifest(directory)


# --- multi-word entries are switched as units ----------------------------------------------------------------


def test_multi_word_entries_are_switched_as_one_unit() -> None:
    tok = _byte_level_bpe(["no one came last night , every day at home ."] * 50)
    lex = pl.DataFrame(
        {
            "src": ["no one", "one", "last night", "every day", "day"],
            "tgt": ["personne", "un", "hier soir", "chaque jour", "jour"],
        }
    ).with_columns(
        count=pl.lit(5, pl.Int64), p_tgt_given_src=pl.lit(1.0, pl.Float32), p_src_given_tgt=pl.lit(1.0, pl.Float32),
        score=pl.lit(1.0, pl.Float32),
    )  # fmt: skip
    docs = ["No one came last night.", "One day, every day."]
    cfg = SwitchConfig(ratio=1.0)
    out = switch_batch(docs, 0, tok, build_table(lex, cfg), cfg, segmenter=Segmenter(segmenter_config("en")))
    decoded = [tok.decode(out.input_ids[out.offsets[d] : out.offsets[d + 1]].tolist()) for d in range(2)]
    assert decoded == ["Personne came hier soir.", "Un jour, chaque jour."]  # longest match first; casing kept
    assert out.words == 5 + 4  # the segmenter's words (punctuation is not a word), phrases or not
    assert (out.words_with_entry, out.words_switched) == (2 + 3, 2 + 3)  # a phrase is one unit with an entry
    first = out.labels[out.offsets[0] : out.offsets[1]]
    assert first[0] == tok.encode("No").ids[0] and (first[1 : len(tok.encode("Personne").ids)] == IGNORE_INDEX).all()


def test_phrase_matching_is_longest_first_within_one_document() -> None:
    from prealign.codeswitch.phrases import find_phrases, phrase_index

    index = {"a b": 0, "b c": 1, "a b c": 2, "c d": 3, "x": 4}
    phrases = phrase_index(index, Segmenter(segmenter_config("en")))
    ids = phrases.word_id
    assert phrases.longest == 3 and "x" not in ids
    doc = ["a", "b", "c", "d", "b", "c", "c"]  # a b c | d | b c | c: then "c d" must not start inside "a b c"
    words = np.array([ids.get(w, -1) for w in doc] + [ids["d"]], dtype=np.int64)
    unit_doc = np.array([0] * len(doc) + [1])  # the last unit ("d") is in the next document
    assert find_phrases(words, unit_doc, phrases) == [(0, 2, 2), (4, 5, 1)]
    words[1] = -1  # "b" not switchable: no phrase through it
    assert find_phrases(words, unit_doc, phrases) == [(2, 3, 3), (4, 5, 1)]


def test_translations_side_by_side_in_text_without_spaces_get_one(zh_tokenizer: Tokenizer) -> None:
    pytest.importorskip("jieba", reason="the [zh] extra (jieba) is not installed")
    lex = pl.DataFrame({"src": ["银行", "电脑", "我们"], "tgt": ["bank", "computer", "我"]}).with_columns(
        count=pl.lit(5, pl.Int64), p_tgt_given_src=pl.lit(1.0, pl.Float32), p_src_given_tgt=pl.lit(1.0, pl.Float32),
        score=pl.lit(1.0, pl.Float32),
    )  # fmt: skip
    cfg = SwitchConfig(ratio=1.0)
    docs = ["他银行电脑。", "银行我们电脑"]
    out = switch_batch(docs, 0, zh_tokenizer, build_table(lex, cfg), cfg, segmenter=Segmenter(segmenter_config("zh")))
    decoded = [zh_tokenizer.decode(out.input_ids[out.offsets[d] : out.offsets[d + 1]].tolist()) for d in range(2)]
    assert decoded == ["他bank computer。", "bank我computer"]


def test_the_command_line_offers_every_segmenter() -> None:
    from prealign.cli import SEGMENTER_CHOICES
    from prealign.text import SEGMENTERS

    assert SEGMENTER_CHOICES == SEGMENTERS  # cli.py keeps a copy so that --help needs no numpy import
