"""Word segmentation (prealign.text)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign import charclass
from prealign.text import APOSTROPHES, Segmenter, SegmenterConfig, apostrophe_for, is_word


def seg(text: str, **kwargs: object) -> list[str]:
    return Segmenter(SegmenterConfig(**kwargs)).segment(text)  # type: ignore[arg-type]


# --- punctuation, normalisation, case --------------------------------------------------------------------


def test_punctuation_is_isolated() -> None:
    assert seg("Hello, World! (test)") == ["hello", ",", "world", "!", "(", "test", ")"]
    assert seg("foo-bar 3.14 «oui»") == ["foo", "-", "bar", "3", ".", "14", "«", "oui", "»"]
    assert seg("end...") == ["end", ".", ".", "."]


def test_whitespace_only_and_empty() -> None:
    assert seg("") == []
    assert seg(" \t \n ") == []
    assert seg("  a   b\tc\n") == ["a", "b", "c"]


def test_nfkc_and_lowercase() -> None:
    # full-width letters and the "fi" ligature fold to ASCII under NFKC
    assert seg("ＡＢＣ ﬁne Ｔｏｍ") == ["abc", "fine", "tom"]
    assert seg("ÉCOLE Straße") == ["école", "straße"]
    # a decomposed é (e + combining acute) composes to the single code point
    assert seg("e\u0301te") == ["\u00e9te"]


def test_keep_case() -> None:
    assert seg("Hello World", lowercase=False) == ["Hello", "World"]
    assert seg("ＡＢ Paris", lowercase=False) == ["AB", "Paris"]


def test_normalize_off_keeps_compatibility_characters() -> None:
    assert seg("ＡＢ ﬁ", normalize=False, lowercase=False) == ["ＡＢ", "ﬁ"]
    assert seg("ＡＢ", normalize=False) == ["ａｂ"]


def test_normalize_method() -> None:
    s = Segmenter()
    assert s.normalize("ＨＥＬＬＯ") == "hello"
    assert Segmenter(SegmenterConfig(lowercase=False)).normalize("ＨＥＬＬＯ") == "HELLO"


# --- CJK -------------------------------------------------------------------------------------------------


def test_cjk_one_character_per_word() -> None:
    # Han ideographs and hiragana alike (the module documents "CJK ideographs and kana split one character a
    # word", so a run of hiragana such as "きい" becomes two words)
    assert seg("東京は大きい") == ["東", "京", "は", "大", "き", "い"]


def test_kana_runs_and_latin_mix() -> None:
    assert seg("ひらがなカタカナ漢字abc") == ["ひ", "ら", "が", "な", "カ", "タ", "カ", "ナ", "漢", "字", "abc"]
    # half-width katakana become full-width under NFKC, then split one per word
    assert seg("ｶﾀ") == ["カ", "タ"]
    assert seg("我爱cats。") == ["我", "爱", "cats", "。"]


# --- apostrophes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("previous", ["l'", "homme", "tom'", "s"]),
        ("next", ["l", "'homme", "tom", "'s"]),
        ("split", ["l", "'", "homme", "tom", "'", "s"]),
        ("keep", ["l'homme", "tom's"]),
    ],
)
def test_apostrophe_rules(rule: str, expected: list[str]) -> None:
    assert seg("l'homme Tom's", apostrophe=rule) == expected


def test_typographic_apostrophe_follows_the_same_rules() -> None:
    assert seg("l’homme", apostrophe="previous") == ["l’", "homme"]
    assert seg("Tom’s", apostrophe="next") == ["tom", "’s"]


def test_quote_marks_not_inside_words_are_punctuation() -> None:
    # an apostrophe at a word edge is a quote mark, isolated whatever the rule
    for rule in APOSTROPHES:
        assert seg("'quoted'", apostrophe=rule) == ["'", "quoted", "'"]


def test_unknown_apostrophe_rule_rejected() -> None:
    with pytest.raises(ValueError, match="apostrophe"):
        SegmenterConfig(apostrophe="sideways")  # type: ignore[arg-type]


def test_apostrophe_for_languages() -> None:
    assert apostrophe_for("fr") == "previous"
    assert apostrophe_for("it") == "previous"
    assert apostrophe_for("FR") == "previous"
    assert apostrophe_for("fr-CA") == "previous"
    assert apostrophe_for("fr_BE") == "previous"
    assert apostrophe_for("en") == "next"
    assert apostrophe_for("en-US") == "next"
    assert apostrophe_for("de") == "split"
    assert apostrophe_for("xx") == "split"
    assert apostrophe_for(None) == "split"
    assert all(apostrophe_for(x) in APOSTROPHES for x in ("fr", "en", "de", None))


# --- pretokenized ----------------------------------------------------------------------------------------


def test_pretokenized_keeps_whitespace_tokens() -> None:
    out = seg("aujourd' hui l' Homme, a.b l'homme", pretokenized=True)
    assert out == ["aujourd'", "hui", "l'", "homme,", "a.b", "l'homme"]
    assert len(seg("aujourd' hui", pretokenized=True)) == 2
    # the same text segmented normally splits the punctuation
    assert seg("Homme, a.b") == ["homme", ",", "a", ".", "b"]


def test_pretokenized_does_not_split_cjk_but_still_normalises() -> None:
    assert seg("東京 ＡＢ", pretokenized=True) == ["東京", "ab"]
    assert seg("Paris", pretokenized=True, lowercase=False) == ["Paris"]


# --- is_word and batches ---------------------------------------------------------------------------------


def test_is_word() -> None:
    assert is_word("chat")
    assert is_word("l'")
    assert is_word("東")
    assert is_word("x2")
    assert not is_word(",")
    assert not is_word("123")
    assert not is_word("'")
    assert not is_word("")
    assert not is_word("€")


def test_segment_batch_equals_segment() -> None:
    texts = [
        "Hello, World!",
        "",
        "l'homme Tom's",
        "東京は大きい",
        "  spaced   out  ",
        "ＡＢＣ ﬁne",
        "Le chat noir voit la maison.",
    ]
    for config in (
        SegmenterConfig(),
        SegmenterConfig(lowercase=False, apostrophe="next"),
        SegmenterConfig(pretokenized=True),
    ):
        s = Segmenter(config)
        assert s.segment_batch(texts) == [s.segment(t) for t in texts]
    assert Segmenter().segment_batch([]) == []


# --- the vectorised default segmenter (prealign.charclass) against the tokenizers pre-tokenizer ---------------

_SCRIPTS = "ab Z9_ \t\n.,!-«»()é\u0301東京かカ\u3099ไทย\u0e49한ç𠀀😀ß"  # no apostrophes
_APOSTROPHES = "ab Z9_ \t\n'’.,!-()é\u0301çß"  # no Han, kana or Thai


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(alphabet=_SCRIPTS, max_size=40), st.text(alphabet=_APOSTROPHES, max_size=40)),
    rule=st.sampled_from(APOSTROPHES),
    chars=st.booleans(),
)
def test_character_classes_cut_as_the_pre_tokenizer_does(text: str, rule: str, chars: bool) -> None:
    """Where Han, kana or Thai meet an apostrophe inside a word the two may differ (see prealign.charclass)."""
    config = SegmenterConfig(apostrophe=rule, method="chars" if chars else "default")  # type: ignore[arg-type]
    reference = Segmenter(config)._tokenizer.encode(text, add_special_tokens=False).offsets
    start, end = charclass.spans(text, rule, chars)
    assert list(zip(start.tolist(), end.tolist(), strict=True)) == reference
