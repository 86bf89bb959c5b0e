"""Switching with every tokenizer family real models use (issue 14): byte-level BPE with a regex split (GPT-2,
Llama-3, Qwen2), SentencePiece BPE in the Llama-2/Mistral layout, Metaspace, WordPiece (BERT), Unigram (T5's
SentencePiece model, and one trained by tokenizers' UnigramTrainer).

The tokenizers are built offline by ``tests/tokenizer_families.py``. Every family sees the same 2,000 English
documents, the same en->fr lexicon and the same English segmenter, and is checked against a reference computed
here from the segmenter's word spans and the plain tokenisation's character offsets, independently of
``prealign.codeswitch.words``: which words are switchable (no token covering them reaches a neighbour), which
have an entry (multi-word entries merged, longest first), which are switched (the counter-based draw of word w
of document d), what the switched text is, and the input-only label rule token by token.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
from conftest import lexicon_frame
from tokenizer_families import BYTE_LEVEL, EOT, FAMILIES, LEXICON_ROWS, english_documents, family_tokenizer
from tokenizers import Tokenizer

from prealign.codeswitch.switch import Switched, apply_casing, switch_batch, uniforms
from prealign.codeswitch.table import SwitchConfig, SwitchTable, build_table
from prealign.codeswitch.tokenizer import tokenizer_info
from prealign.text import Segmenter, is_word, join_words, segmenter_config

pytest.importorskip("sentencepiece", reason="the SentencePiece families train a real SentencePiece model")

IGNORE = -100
SEED = 5
N_DOCS = 2000
LOWER, TITLE, UPPER = 0, 1, 2
NAMES = list(FAMILIES)


def lexicon() -> pl.DataFrame:
    """The en->fr lexicon of tokenizer_families.LEXICON_ROWS, with the exact columns of LEXICON_SCHEMA."""
    return lexicon_frame(LEXICON_ROWS)


DOCS = english_documents(N_DOCS, seed=7)
SEGMENTER = Segmenter(segmenter_config("en"))
_RUNS: dict[tuple[str, float], tuple[Switched, SwitchTable]] = {}


def run(name: str, ratio: float) -> tuple[Switched, SwitchTable]:
    """switch_batch over DOCS with the family's tokenizer (weighted choice), computed once per (family, ratio)."""
    if (name, ratio) not in _RUNS:
        cfg = SwitchConfig(ratio=ratio, choice="weighted", seed=SEED)
        table = build_table(lexicon(), cfg)
        out = switch_batch(DOCS, 0, family_tokenizer(name), table, cfg, segmenter=SEGMENTER)
        _RUNS[name, ratio] = out, table
    return _RUNS[name, ratio]


def doc_of(out: Switched, d: int) -> tuple[list[int], list[int], list[int]]:
    lo, hi = int(out.offsets[d]), int(out.offsets[d + 1])
    return out.input_ids[lo:hi].tolist(), out.labels[lo:hi].tolist(), out.switched[lo:hi].tolist()


# --- the reference ------------------------------------------------------------------------------------------------


@dataclass
class Unit:
    """A switching unit of the reference: a word, or the words of a multi-word entry."""

    word: int  # index of its first word among the document's segmenter words (the draw's counter)
    start: int  # characters: first word's start, last word's end
    end: int
    tokens: tuple[int, int]  # plain tokens [lo, hi): from the whitespace before the word to the word's end
    entry: int
    casing: int


@dataclass
class Reference:
    words: int  # words holding a letter
    unswitchable: int  # of which tokens straddle a boundary
    units: list[list[Unit]]  # per document: the switchable units with an entry

    @property
    def with_entry(self) -> int:
        return sum(map(len, self.units))


def casing_of(word: str) -> int:
    if len(word) > 1 and word.isupper():
        return UPPER
    return TITLE if word[:1].isupper() else LOWER


def reference(tok: Tokenizer, table: SwitchTable) -> Reference:
    """Words from the segmenter, switchability from the plain tokens' offsets, entries from the table."""
    encs = tok.encode_batch(DOCS, add_special_tokens=False)
    n_words = unswitchable = 0
    units: list[list[Unit]] = []
    phrase_len = {len(SEGMENTER.segment(k)) for k in table.index}
    assert max(phrase_len) == 2  # the reference merges two-word entries only
    for text, enc, spans in zip(DOCS, encs, SEGMENTER.spans_batch(DOCS), strict=True):
        offsets = enc.offsets
        tok_starts, tok_ends = [s for s, _ in offsets], [e for _, e in offsets]  # both non-decreasing
        clean, token_range = [], []
        for k, (a, b) in enumerate(spans):
            prev_end = spans[k - 1][1] if k else 0
            next_start = spans[k + 1][0] if k + 1 < len(spans) else len(text)
            # the tokens over the whitespace before the word and the word: ending after prev_end, starting before b
            over = range(bisect.bisect_right(tok_ends, prev_end), bisect.bisect_left(tok_starts, b))
            covered = bisect.bisect_right(tok_ends, a) < over.stop  # a token overlaps the word itself
            ok = covered and all(offsets[i][0] >= prev_end and offsets[i][1] <= next_start for i in over)
            clean.append(ok)
            token_range.append((over[0], over[-1] + 1) if ok else (-1, -1))
            if is_word(text[a:b]):
                n_words += 1
                unswitchable += not ok
        found: list[Unit] = []
        k = 0
        while k < len(spans):
            a, b = spans[k]
            if k + 1 < len(spans) and clean[k] and clean[k + 1]:
                key = join_words([SEGMENTER.normalize(text[x:y]) for x, y in spans[k : k + 2]], " ")
                if key in table.index:  # a multi-word entry: one unit, cased like its first word
                    rng = (token_range[k][0], token_range[k + 1][1])
                    found.append(Unit(k, a, spans[k + 1][1], rng, table.index[key], casing_of(text[a:b])))
                    k += 2
                    continue
            key = SEGMENTER.normalize(text[a:b])
            if clean[k] and key in table.index:
                found.append(Unit(k, a, b, token_range[k], table.index[key], casing_of(text[a:b])))
            k += 1
        units.append(found)
    return Reference(n_words, unswitchable, units)


_REFS: dict[str, Reference] = {}


def ref(name: str) -> Reference:
    if name not in _REFS:
        _REFS[name] = reference(family_tokenizer(name), run(name, 0.0)[1])
    return _REFS[name]


def switched_units(name: str, ratio: float, table: SwitchTable) -> list[list[tuple[Unit, str]]]:
    """Per document, the reference units drawn for switching and their cased translations."""
    units = ref(name).units
    flat = [(d, u) for d, us in enumerate(units) for u in us]
    docs = np.array([d for d, _ in flat], dtype=np.int64)
    words = np.array([u.word for _, u in flat], dtype=np.int64)
    chosen = uniforms(SEED, docs, words, 0) < ratio
    entries = np.array([u.entry for _, u in flat], dtype=np.int64)[chosen]
    picks = table.pick(entries, uniforms(SEED, docs[chosen], words[chosen], 1)).tolist()
    out: list[list[tuple[Unit, str]]] = [[] for _ in DOCS]
    for (d, u), t in zip([f for f, c in zip(flat, chosen.tolist(), strict=True) if c], picks, strict=True):
        out[d].append((u, apply_casing(table.translations[t], u.casing)))
    return out


# --- the tests ----------------------------------------------------------------------------------------------------

LAYOUT = {  # tokenizer.json: (model, normalizer, pre_tokenizer, decoder) types
    "byte_level_gpt2": ("BPE", None, "ByteLevel", "ByteLevel"),
    "byte_level_llama3": ("BPE", None, "Sequence", "ByteLevel"),
    "byte_level_qwen2": ("BPE", "NFC", "Sequence", "ByteLevel"),
    "sentencepiece_llama2": ("BPE", "Sequence", None, "Sequence"),
    "metaspace": ("BPE", None, "Metaspace", "Metaspace"),
    "gemma": ("BPE", "Replace", None, "Sequence"),
    "mistral_v03": ("BPE", None, "Metaspace", "Metaspace"),
    "wordpiece_bert": ("WordPiece", "BertNormalizer", "BertPreTokenizer", "WordPiece"),
    "unigram_t5": ("Unigram", "Replace", "Sequence", "Metaspace"),
    "unigram_hf": ("Unigram", "Replace", "Sequence", "Metaspace"),
}


@pytest.mark.parametrize("name", NAMES)
def test_family_layout_end_of_text_and_round_trip(name: str) -> None:
    tok = family_tokenizer(name)
    spec = json.loads(tok.to_str())
    kind = lambda part: spec[part] and spec[part]["type"]  # noqa: E731
    assert (kind("model"), kind("normalizer"), kind("pre_tokenizer"), kind("decoder")) == LAYOUT[name]
    assert 250 < tok.get_vocab_size() <= 1500
    info = tokenizer_info(tok)
    assert info.eot_token == EOT[name] and info.eot_id == tok.token_to_id(EOT[name])
    if name == "sentencepiece_llama2":
        assert spec["model"]["byte_fallback"] and spec["model"]["unk_token"] == "<unk>"
        assert [n["type"] for n in spec["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
        assert set(tok.encode(DOCS[0], add_special_tokens=False).word_ids) == {0}  # no word ids: one pre-token
    if name == "gemma":  # no Prepend: the first word has no ▁; no Strip in the decoder
        assert spec["model"]["byte_fallback"] and spec["model"]["unk_token"] == "<unk>"
        assert [tok.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")] == [0, 1, 2, 3]
        assert [d["type"] for d in spec["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse"]
        assert not tok.encode("dog", add_special_tokens=False).tokens[0].startswith("▁")
        assert set(tok.encode(DOCS[0], add_special_tokens=False).word_ids) == {0}
    if name == "mistral_v03":  # non-legacy: Metaspace first, no split (one pre-token per document)
        assert spec["model"]["byte_fallback"] and spec["pre_tokenizer"]["prepend_scheme"] == "first"
        assert not spec["pre_tokenizer"]["split"] and not spec["decoder"]["split"]
        assert tok.encode("dog", add_special_tokens=False).tokens[0].startswith("▁")
        assert set(tok.encode(DOCS[0], add_special_tokens=False).word_ids) == {0}
    # the exact comparisons of the switched text below need decode(encode(doc)) == doc (WordPiece lowercases)
    decoded = tok.decode_batch([e.ids for e in tok.encode_batch(DOCS, add_special_tokens=False)])
    same = sum(a == b for a, b in zip(decoded, DOCS, strict=True))
    assert same < N_DOCS // 100 if name == "wordpiece_bert" else same == N_DOCS


@pytest.mark.parametrize("name", NAMES)
def test_ratio_zero_is_the_tokenizers_own_encoding(name: str) -> None:
    tok = family_tokenizer(name)
    out, _ = run(name, 0.0)
    plain = [e.ids for e in tok.encode_batch(DOCS, add_special_tokens=False)]
    assert out.input_ids.tolist() == [i for ids in plain for i in ids]
    assert np.array_equal(out.labels, out.input_ids) and not out.switched.any()
    assert out.offsets.tolist() == np.cumsum([0, *map(len, plain)]).tolist()
    assert out.words_switched == 0


@pytest.mark.parametrize("name", NAMES)
def test_every_family_sees_the_same_words(name: str) -> None:
    out, _ = run(name, 0.3)
    gpt2, _ = run("byte_level_gpt2", 0.3)
    expect = ref(name)
    print(
        f"\n{name}: words {out.words} with_entry {out.words_with_entry} switched {out.words_switched} "
        f"unswitchable {out.words_unswitchable} (reference: {expect.words}, {expect.with_entry}, -, "
        f"{expect.unswitchable})"
    )
    assert abs(out.words - gpt2.words) <= 0.03 * gpt2.words, (out.words, gpt2.words)
    assert out.words == expect.words
    assert out.words_unswitchable == expect.unswitchable
    assert out.words_with_entry == expect.with_entry
    if name == "unigram_hf":  # its pieces cross punctuation (▁night, ▁Tom's): many words are straddled
        assert out.words_unswitchable > 0.1 * out.words
    else:  # the other families split at punctuation: straddling tokens are rare in this text
        assert out.words_unswitchable < 0.05 * out.words


@pytest.mark.parametrize("ratio", [0.05, 0.3])
@pytest.mark.parametrize("name", NAMES)
def test_realised_rate_is_the_ratio(name: str, ratio: float) -> None:
    out, _ = run(name, ratio)
    n = out.words_with_entry
    assert n >= 10_000
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(out.words_switched / n - ratio) < 4 * sigma, (out.words_switched / n, ratio, sigma)


@pytest.mark.parametrize("name", NAMES)
def test_label_rule_token_by_token(name: str) -> None:
    # input-only: tokens outside switched words are the plain tokens, labelled as themselves; a switched word's
    # first position is labelled with the first plain token of the word's unit (its leading whitespace token
    # when the tokenizer has one), the rest of its translation -100
    tok = family_tokenizer(name)
    out, table = run(name, 0.3)
    plain = [e.ids for e in tok.encode_batch(DOCS, add_special_tokens=False)]
    expected = switched_units(name, 0.3, table)
    assert out.words_switched == sum(map(len, expected))
    bad: list[str] = []
    for d, units in enumerate(expected):
        inp, lab, sw = doc_of(out, d)
        ids, i, j = plain[d], 0, 0
        for unit, word in [*units, (None, "")]:
            lo, hi = unit.tokens if unit else (len(ids), len(ids))
            n = lo - i  # plain tokens kept before this unit
            if inp[j : j + n] != ids[i:lo] or lab[j : j + n] != ids[i:lo] or any(sw[j : j + n]):
                bad.append(f"doc {d}: kept tokens {i}:{lo} differ before {word!r}")
                break
            j += n
            if unit is None:
                break
            m = 1
            while j + m < len(inp) and sw[j + m] == 1 and lab[j + m] == IGNORE:
                m += 1
            if not (j < len(inp) and sw[j] == 1 and lab[j] == ids[lo]):
                bad.append(f"doc {d}: {DOCS[d][unit.start : unit.end]!r} -> {word!r}: first label not t1")
                break
            i, j = hi, j + m
        else:
            continue
        if j != len(inp) and not bad:
            bad.append(f"doc {d}: {len(inp) - j} tokens after the last unit")
    assert not bad, f"{len(bad)} documents break the rule, e.g. {bad[:3]}"


def switched_text(text: str, units: list[tuple[Unit, str]]) -> str:
    """The document with each switched unit's words replaced by its cased translation (spaces kept)."""
    out, at = [], 0
    for unit, word in units:
        out += [text[at : unit.start], word]
        at = unit.end
    return "".join([*out, text[at:]])


@pytest.mark.parametrize("name", NAMES)
def test_decoded_input_is_the_switched_text(name: str) -> None:
    # byte-level, SentencePiece (Llama-2 layout and Metaspace) and Unigram: decode(encode(doc)) == doc for these
    # single-spaced documents (test_family_layout_end_of_text_and_round_trip), so the decoded input must be the
    # document with the replacements, exactly. WordPiece lowercases, strips accents and decodes with a space
    # between pre-tokens ("( chien )"), so there the decoded input must equal decode(encode(switched text)).
    tok = family_tokenizer(name)
    out, table = run(name, 0.3)
    expected = [switched_text(t, u) for t, u in zip(DOCS, switched_units(name, 0.3, table), strict=True)]
    got = tok.decode_batch([doc_of(out, d)[0] for d in range(N_DOCS)])
    if name == "wordpiece_bert":
        expected = tok.decode_batch([e.ids for e in tok.encode_batch(expected, add_special_tokens=False)])
    bad = [(d, g, e) for d, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert not bad, f"{len(bad)} documents differ, e.g. {bad[:2]}"
    assert name not in BYTE_LEVEL or sum(a != b for a, b in zip(got, DOCS, strict=True)) > N_DOCS // 2
