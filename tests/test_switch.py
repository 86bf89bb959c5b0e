"""Switching words in the input only (prealign.codeswitch.switch and .table), without Ray.

Most tests use a hand-built byte-level BPE whose merges are chosen so that token counts per word are known:
a few words (" dog", " boeuf", the start of " maison", ...) are merged, every other word is one token per byte.
So translations can be made longer (" dog" -> " chien": 1 -> 6 tokens) or shorter (" ox" -> " boeuf": 3 -> 1)
than the original, and every expected sequence below is written out token by token.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import lexicon_frame
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import prealign.codeswitch.switch as switch_module
from prealign.codeswitch.switch import Switched, WordCache, switch_batch
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.codeswitch.tokenizer import train_tokenizer

IGNORE = -100

# (src, tgt, p(tgt|src), score): the first row of each source word has the best score
LEXICON_ROWS = [
    ("dog", "chien", 1.0, 0.9),
    ("ox", "boeuf", 1.0, 0.9),
    ("house", "maison", 1.0, 0.9),
    ("red", "rouge", 1.0, 0.9),
    ("cat", "chat", 0.8, 0.7),
    ("cat", "minou", 0.2, 0.1),
    ("river", "rivière", 1.0, 0.8),
    ("green", "vert", 1.0, 0.8),
]
TOP = {  # the best-scored translation of each source word
    "dog": "chien", "ox": "boeuf", "house": "maison", "red": "rouge",
    "cat": "chat", "river": "rivière", "green": "vert",
}  # fmt: skip
NO_ENTRY = ["the", "sat", "by", "an", "on", "a", "near", "is", "and", "big"]


lexicon = lexicon_frame


def hand_tokenizer() -> Tokenizer:
    """Byte-level BPE: specials 0 and 1, the 256 byte symbols, and left-to-right merge chains for a few words."""
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []

    def chain(word: str, pieces: int | None = None) -> None:
        # merge "Ġ" + word[:pieces] into one token; words starting with another letter are untouched
        symbols = ["Ġ", *word]
        current = symbols[0]
        for ch in symbols[1 : None if pieces is None else pieces + 1]:
            merges.append((current, ch))
            current += ch
            vocab.setdefault(current, len(vocab))

    for word in ("dog", "boeuf", "the"):
        chain(word)
    chain("maison", 3)  # " maison" -> Ġmai s o n
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    return tok


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return hand_tokenizer()


@pytest.fixture(scope="module")
def lex() -> pl.DataFrame:
    return lexicon(LEXICON_ROWS)


def ids_of(tok: Tokenizer, *tokens: str) -> list[int]:
    """Token ids of token strings (each must be in the vocabulary)."""
    out = []
    for t in tokens:
        i = tok.token_to_id(t)
        assert i is not None, t
        out.append(i)
    return out


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def run(
    tok: Tokenizer, lex: pl.DataFrame, texts: list[str], first_doc: int = 0, cache: WordCache | None = None, **config
) -> Switched:
    config.setdefault("ratio", 1.0)
    config.setdefault("choice", "top")
    cfg = SwitchConfig(**config)
    return switch_batch(texts, first_doc, tok, build_table(lex, cfg), cfg, cache)


def doc(out: Switched, d: int) -> tuple[list[int], list[int], list[int]]:
    lo, hi = int(out.offsets[d]), int(out.offsets[d + 1])
    return out.input_ids[lo:hi].tolist(), out.labels[lo:hi].tolist(), out.switched[lo:hi].tolist()


def test_tokenizer_gives_the_token_counts_the_examples_need(tok: Tokenizer) -> None:
    words = (" dog", " chien", " ox", " boeuf", " house", " maison", " red", " rouge")
    counts = {w: len(encode(tok, w)) for w in words}
    assert counts == {" dog": 1, " chien": 6, " ox": 3, " boeuf": 1, " house": 6, " maison": 4, " red": 4, " rouge": 6}
    enc = tok.encode("the dog sat", add_special_tokens=False)
    assert enc.word_ids == [0, 0, 0, 1, 2, 2, 2, 2]


# --- the input-only label rule, on hand-checked examples ---------------------------------------------------------


def test_longer_and_one_token_translations_in_the_middle(tok: Tokenizer, lex: pl.DataFrame) -> None:
    # " dog" (1 token) -> " chien" (6 tokens); " ox" (3 tokens: Ġ o x) -> " boeuf" (1 token)
    out = run(tok, lex, ["the dog sat in an ox."])
    inp, lab, sw = doc(out, 0)
    assert inp == ids_of(tok, "t", "h", "e", "Ġ", "c", "h", "i", "e", "n", "Ġ", "s", "a", "t", "Ġ", "i", "n",
                         "Ġ", "a", "n", "Ġboeuf", ".")  # fmt: skip
    assert lab == [
        *ids_of(tok, "t", "h", "e"),
        *ids_of(tok, "Ġdog"), *[IGNORE] * 5,  # labels[p] = t1 of " dog"; no loss inside " chien"
        *ids_of(tok, "Ġ", "s", "a", "t", "Ġ", "i", "n", "Ġ", "a", "n"),  # labels[p + m]: the next word's own token
        *ids_of(tok, "Ġ"),  # the 1-token translation is labelled with the first of " ox"'s 3 tokens
        *ids_of(tok, "."),  # and the word after it with its own first token
    ]  # fmt: skip
    assert sw == [0, 0, 0, 1, 1, 1, 1, 1, 1, *[0] * 10, 1, 0]
    assert (out.words, out.words_with_entry, out.words_switched) == (6, 2, 2)  # "." is not a word
    assert out.offsets.tolist() == [0, len(inp)]


def test_first_last_adjacent_and_title_case(tok: Tokenizer, lex: pl.DataFrame) -> None:
    # every word switched: "Ox" (first word, Title, 2 tokens) -> "Boeuf" (5), " dog" -> " chien",
    # " house" (last word, 6 tokens) -> " maison" (4)
    out = run(tok, lex, ["Ox dog house"])
    inp, lab, sw = doc(out, 0)
    assert inp == ids_of(tok, "B", "o", "e", "u", "f", "Ġ", "c", "h", "i", "e", "n", "Ġmai", "s", "o", "n")
    assert lab == [
        *ids_of(tok, "O"), *[IGNORE] * 4,
        *ids_of(tok, "Ġdog"), *[IGNORE] * 5,  # original first token of the next word, itself switched (!= input)
        *ids_of(tok, "Ġ"), *[IGNORE] * 3,
    ]  # fmt: skip
    assert lab[5] != inp[5] and lab[11] != inp[11]
    assert sw == [1] * 15
    # t2..tk of the switched words ("x" of "Ox"; "h o u s e" of " house") are never targets
    assert not set(lab) & set(ids_of(tok, "x", "h", "o", "u", "s", "e"))
    assert (out.words, out.words_with_entry, out.words_switched) == (3, 3, 3)


def test_upper_case_and_one_word_documents(tok: Tokenizer, lex: pl.DataFrame) -> None:
    out = run(tok, lex, ["the DOG sat", "dog", "RED", "ox"])
    inp, lab, _ = doc(out, 0)
    assert inp == ids_of(tok, "t", "h", "e", "Ġ", "C", "H", "I", "E", "N", "Ġ", "s", "a", "t")
    assert lab == [*ids_of(tok, "t", "h", "e", "Ġ"), *[IGNORE] * 5, *ids_of(tok, "Ġ", "s", "a", "t")]
    assert doc(out, 1)[:2] == (ids_of(tok, "c", "h", "i", "e", "n"), [*ids_of(tok, "d"), *[IGNORE] * 4])
    assert doc(out, 2)[:2] == (encode(tok, "ROUGE"), [*ids_of(tok, "R"), *[IGNORE] * 4])
    assert doc(out, 3)[:2] == (ids_of(tok, "b", "o", "e", "u", "f"), [*ids_of(tok, "o"), *[IGNORE] * 4])


def test_switched_label_policy_labels_the_input(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = ["the dog sat in an ox.", "Ox dog house", "A red river near the green house"]
    only = run(tok, lex, texts, ratio=0.5, seed=3)
    plain = run(tok, lex, texts, ratio=0.5, seed=3, labels="switched")
    assert np.array_equal(plain.input_ids, only.input_ids)
    assert np.array_equal(plain.switched, only.switched)
    assert np.array_equal(plain.labels, plain.input_ids)
    assert not np.array_equal(only.labels, only.input_ids)


def check_against_reference(tok: Tokenizer, text: str, inp: list[int], lab: list[int], sw: list[int]) -> int:
    """Walk the original words of ``text`` over the output; returns how many were switched.

    A word is switched when its output starts with switched=1; its translation must then be the top one, cased
    like the word; labels follow DESIGN.md's input-only rule.
    """
    enc = tok.encode(text, add_special_tokens=False)
    words: list[list[int]] = []
    last = object()
    for i, w in zip(enc.ids, enc.word_ids, strict=True):
        if w is None or w != last:
            words.append([])
        words[-1].append(i)
        last = w
    j = n_switched = 0
    for k, ids in enumerate(words):
        if j < len(sw) and sw[j]:
            surface = tok.decode(ids)
            core = surface.strip()
            target = TOP[core.lower()]
            target = target.upper() if len(core) > 1 and core.isupper() else target
            target = target[0].upper() + target[1:] if core[0].isupper() else target
            new = encode(tok, surface[: len(surface) - len(surface.lstrip())] + target)
            m = len(new)
            assert inp[j : j + m] == new, (text, k)
            assert lab[j] == ids[0] and lab[j + 1 : j + m] == [IGNORE] * (m - 1), (text, k)
            assert sw[j : j + m] == [1] * m
            n_switched += 1
        else:
            m = len(ids)
            assert inp[j : j + m] == ids and lab[j : j + m] == ids and sw[j : j + m] == [0] * m, (text, k)
        j += m
    assert j == len(inp)
    return n_switched


def random_texts(n_docs: int, seed: int, words_per_doc: tuple[int, int] = (1, 25)) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = [*TOP, *NO_ENTRY]
    texts = []
    for _ in range(n_docs):
        words = []
        for w in rng.choice(vocab, size=rng.integers(*words_per_doc)):
            form = rng.integers(6)
            words.append(w.title() if form == 0 else w.upper() if form == 1 else w)
            if rng.random() < 0.1:
                words[-1] += rng.choice([".", ",", "!"])
        texts.append(" ".join(words))
    return texts


def test_random_documents_follow_the_rule_and_never_target_t2_to_tk(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = random_texts(200, seed=1)
    out = run(tok, lex, texts, ratio=0.5, seed=7)
    total = 0
    for d, text in enumerate(texts):
        inp, lab, sw = doc(out, d)
        total += check_against_reference(tok, text, inp, lab, sw)
    assert total == out.words_switched > 0
    assert 0 < out.words_switched < out.words_with_entry


def test_special_tokens_in_text_are_never_switched(tok: Tokenizer, lex: pl.DataFrame) -> None:
    text = "dog<|endoftext|>dog"
    out = run(tok, lex, [text])
    inp, lab, sw = doc(out, 0)
    assert inp == ids_of(tok, "c", "h", "i", "e", "n", "<|endoftext|>", "c", "h", "i", "e", "n")
    assert lab == [*ids_of(tok, "d"), *[IGNORE] * 4, 0, *ids_of(tok, "d"), *[IGNORE] * 4]
    assert sw == [1] * 5 + [0] + [1] * 5
    assert (out.words_with_entry, out.words_switched) == (2, 2)


# --- ratio 0 and 1 ------------------------------------------------------------------------------------------------


def test_ratio_zero_is_the_plain_tokenisation(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = [*random_texts(100, seed=2), "x", "Dog<|endoftext|>", "  spaced   out  "]
    out = run(tok, lex, texts, ratio=0.0, choice="weighted")
    plain = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert out.input_ids.dtype == np.int32 and out.labels.dtype == np.int32
    assert out.input_ids.tolist() == [i for ids in plain for i in ids]
    assert np.array_equal(out.labels, out.input_ids)
    assert not out.switched.any()
    assert out.offsets.tolist() == np.cumsum([0, *map(len, plain)]).tolist()
    assert out.words_switched == 0 and out.words_with_entry > 0


def test_ratio_one_switches_every_word_with_an_entry(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = random_texts(150, seed=3)
    out = run(tok, lex, texts, ratio=1.0, choice="weighted", seed=11)
    with_entry = 0
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        spans: dict[int, list[int]] = {}
        for i, w in zip(enc.ids, enc.word_ids, strict=True):
            spans.setdefault(w, []).append(i)
        with_entry += sum(tok.decode(ids).strip().lower() in TOP for ids in spans.values())
    assert out.words_switched == out.words_with_entry == with_entry


def test_empty_batch_and_empty_document(tok: Tokenizer, lex: pl.DataFrame) -> None:
    out = run(tok, lex, [])
    assert len(out.input_ids) == 0 and out.offsets.tolist() == [0]
    out = run(tok, lex, ["", "dog", ""])
    assert out.offsets.tolist() == [0, 0, 5, 5]
    assert out.words_switched == 1


# --- the realised rate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_realised_rate_is_the_ratio(tok: Tokenizer, lex: pl.DataFrame, ratio: float) -> None:
    texts = random_texts(2500, seed=4, words_per_doc=(10, 30))
    out = run(tok, lex, texts, ratio=ratio, choice="weighted", seed=5)
    n = out.words_with_entry
    assert n >= 20_000
    rate = out.words_switched / n
    sigma = math.sqrt(ratio * (1 - ratio) / n)
    assert abs(rate - ratio) < 4 * sigma, (rate, ratio, sigma)


# --- determinism -------------------------------------------------------------------------------------------------


def concat(parts: list[Switched]) -> tuple[list[int], list[int], list[int], list[int], tuple[int, int, int]]:
    lengths = [int(d) for p in parts for d in np.diff(p.offsets)]
    return (
        [i for p in parts for i in p.input_ids.tolist()],
        [i for p in parts for i in p.labels.tolist()],
        [i for p in parts for i in p.switched.tolist()],
        lengths,
        tuple(sum(getattr(p, f) for p in parts) for f in ("words", "words_with_entry", "words_switched")),
    )


def test_batching_does_not_change_the_output(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = random_texts(2300, seed=6)  # more than one internal sub-batch of documents, too
    whole = run(tok, lex, texts, ratio=0.3, choice="weighted", seed=9)
    cuts = [0, 1, 100, 170, 1500, 2299, 2300]
    parts = [
        run(tok, lex, texts[a:b], first_doc=a, ratio=0.3, choice="weighted", seed=9)
        for a, b in zip(cuts, cuts[1:], strict=False)
    ]
    assert concat(parts) == concat([whole])
    # the draws follow the documents' global indices: numbering the same batch from 0 changes it
    shifted = run(tok, lex, texts[100:170], first_doc=0, ratio=0.3, choice="weighted", seed=9)
    assert concat([shifted]) != concat([parts[2]])


def test_pipelined_sub_batches_change_nothing(
    tok: Tokenizer, lex: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a single-threaded tokenizer the next sub-batch is encoded in a helper thread while one is switched
    texts = random_texts(300, seed=11)
    whole = run(tok, lex, texts, ratio=0.3, choice="weighted", seed=4)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setattr(switch_module, "_SUB_BATCH", 7)
    assert concat([run(tok, lex, texts, ratio=0.3, choice="weighted", seed=4)]) == concat([whole])


def test_a_warm_word_cache_changes_nothing(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = random_texts(200, seed=7)
    cfg = dict(ratio=0.3, choice="weighted", seed=1)
    fresh = run(tok, lex, texts, **cfg)
    cache = WordCache()
    run(tok, lex, random_texts(50, seed=8), first_doc=500, cache=cache, **cfg)  # warmed on other documents
    assert cache.info
    warm = run(tok, lex, texts, cache=cache, **cfg)
    again = run(tok, lex, texts, cache=cache, **cfg)
    assert concat([fresh]) == concat([warm]) == concat([again])


def test_the_seed_changes_the_output(tok: Tokenizer, lex: pl.DataFrame) -> None:
    texts = random_texts(100, seed=9)
    a = run(tok, lex, texts, ratio=0.3, choice="weighted", seed=1)
    b = run(tok, lex, texts, ratio=0.3, choice="weighted", seed=2)
    c = run(tok, lex, texts, ratio=0.3, choice="weighted", seed=1)
    assert concat([a]) == concat([c])
    assert a.input_ids.tolist() != b.input_ids.tolist()
    assert a.switched.tolist() != b.switched.tolist()


def test_identical_documents_get_independent_draws(tok: Tokenizer, lex: pl.DataFrame) -> None:
    out = run(tok, lex, ["the dog and the cat near a red house"] * 200, ratio=0.5, choice="weighted")
    variants = {tuple(doc(out, d)[0]) for d in range(200)}
    assert len(variants) > 20


# --- choosing among translations ---------------------------------------------------------------------------------

BANK = [("bank", "banque", 0.6, 0.5), ("bank", "rive", 0.3, 0.4), ("bank", "bord", 0.1, 0.2)]


def translation_counts(tok: Tokenizer, rows, choice: str, n_docs: int = 400, per_doc: int = 15) -> dict[str, int]:
    out = run(tok, lexicon(rows), [" ".join(["bank"] * per_doc)] * n_docs, ratio=1.0, choice=choice, seed=13)
    assert out.words_switched == n_docs * per_doc
    words = [w for d in range(n_docs) for w in tok.decode(doc(out, d)[0]).split()]
    assert len(words) == n_docs * per_doc
    return {w: words.count(w) for w in sorted(set(words))}


def chi_square(counts: dict[str, int], expected: dict[str, float]) -> float:
    n = sum(counts.values())
    assert set(counts) <= set(expected)
    return sum((counts.get(w, 0) - n * p) ** 2 / (n * p) for w, p in expected.items())


def test_weighted_choice_follows_p_tgt_given_src(tok: Tokenizer) -> None:
    counts = translation_counts(tok, BANK, "weighted")
    # 2 degrees of freedom: P(chi2 > 18.4) = 0.0001
    assert chi_square(counts, {"banque": 0.6, "rive": 0.3, "bord": 0.1}) < 18.4, counts


def test_weighted_choice_normalises_the_probabilities(tok: Tokenizer) -> None:
    rows = [("bank", "banque", 0.2, 0.5), ("bank", "rive", 0.2, 0.4)]  # p sums to 0.4 after filtering
    counts = translation_counts(tok, rows, "weighted")
    assert chi_square(counts, {"banque": 0.5, "rive": 0.5}) < 15.1, counts


def test_uniform_choice_ignores_the_probabilities(tok: Tokenizer) -> None:
    counts = translation_counts(tok, BANK, "uniform")
    assert chi_square(counts, {"banque": 1 / 3, "rive": 1 / 3, "bord": 1 / 3}) < 18.4, counts


def test_top_choice_always_takes_the_best_scored(tok: Tokenizer) -> None:
    assert translation_counts(tok, BANK, "top", n_docs=50) == {"banque": 750}
    # the best score wins even where another translation has the higher p(tgt|src)
    rows = [("bank", "banque", 0.7, 0.3), ("bank", "rive", 0.3, 0.6)]
    assert translation_counts(tok, rows, "top", n_docs=50) == {"rive": 750}


def test_filters_drop_translations(tok: Tokenizer) -> None:
    cfg = SwitchConfig(ratio=1.0, min_prob=0.25)
    table = build_table(lexicon(BANK), cfg)
    out = switch_batch([" ".join(["bank"] * 300)], 0, tok, table, cfg)
    words = set(tok.decode(out.input_ids.tolist()).split())
    assert words == {"banque", "rive"}


def test_switch_config_validation() -> None:
    for bad in (-0.01, 1.01, float("nan"), 2):
        with pytest.raises(ValueError, match="ratio"):
            SwitchConfig(ratio=bad)
    with pytest.raises(ValueError, match="choice"):
        SwitchConfig(ratio=0.1, choice="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        SwitchConfig(ratio=0.1, labels="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SwitchConfig(ratio=0.1, min_prob=1.5)
    with pytest.raises(ValueError):
        SwitchConfig(ratio=0.1, min_count=-1)
    for ok in (0, 0.0, 1, 1.0, 0.05):
        assert SwitchConfig(ratio=ok).ratio == ok


# --- SwitchTable.pick --------------------------------------------------------------------------------------------


def test_pick_edges() -> None:
    rows = [
        ("alone", "seul", 0.4, 0.9),  # one translation
        ("bank", "banque", 0.5, 0.9),
        ("bank", "rive", 0.3, 0.8),
        ("bank", "bord", 0.2, 0.7),
        ("zero", "nul", 0.0, 0.9),  # never drawn: weight 0, even with u = 0
        ("zero", "rien", 1.0, 0.5),
    ]
    table = build_table(lexicon(rows), SwitchConfig(ratio=1.0))
    e = {w: table.index[w] for w in ("alone", "bank", "zero")}
    below_one = np.nextafter(1.0, 0.0)

    def pick(word: str, us: list[float]) -> list[str]:
        picks = table.pick(np.full(len(us), e[word], dtype=np.int64), np.array(us))
        return [table.translations[i] for i in picks.tolist()]

    assert pick("alone", [0.0, 0.3, 0.999999, below_one]) == ["seul"] * 4
    assert pick("bank", [0.0, 0.499, 0.501, 0.79, 0.81, 0.999999, below_one]) == [
        "banque", "banque", "rive", "rive", "bord", "bord", "bord",
    ]  # fmt: skip
    assert pick("zero", [0.0, 0.5, below_one]) == ["rien"] * 3
    # mixed entries in one call, including u just below 1 on the last entry
    entries = np.array([e["zero"], e["alone"], e["bank"], e["bank"]], dtype=np.int64)
    picks = table.pick(entries, np.array([below_one, below_one, 0.0, below_one]))
    assert [table.translations[i] for i in picks.tolist()] == ["rien", "seul", "banque", "bord"]


def test_pick_stays_within_each_entry_for_many_entries() -> None:
    n = 3000
    rows = [(f"w{i:05d}", f"t{i:05d}", 1.0, 1.0) for i in range(n)]
    rows += [(f"w{i:05d}", f"u{i:05d}", 1.0, 0.5) for i in range(0, n, 3)]  # every third word has two
    table = build_table(lexicon(rows), SwitchConfig(ratio=1.0))
    entries = np.array([table.index[f"w{i:05d}"] for i in range(n)], dtype=np.int64)
    for u in (0.0, 0.25, 0.5, 0.75, np.nextafter(1.0, 0.0)):
        picked = [table.translations[i] for i in table.pick(entries, np.full(n, u)).tolist()]
        assert all(p[1:] == f"{i:05d}" for i, p in enumerate(picked))
        expect = ["t" if (i % 3 or u < 0.5) else "u" for i in range(n)]
        assert [p[0] for p in picked] == expect, u


# --- a trained byte-level BPE ------------------------------------------------------------------------------------

ENGLISH = "The dog and the cat sat near the red house by the green river. A big ox is in the house."
FRENCH = "Le chien et le chat sont près de la maison rouge au bord de la rivière verte. Un boeuf est là."


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path: Path = tmp_path_factory.mktemp("bpe") / "train.txt"
    path.write_text("\n".join([ENGLISH, FRENCH] * 30) + "\n", encoding="utf-8")
    return train_tokenizer([path], 330)


def test_trained_tokenizer_follows_the_rule(trained: Tokenizer, lex: pl.DataFrame) -> None:
    texts = [ENGLISH, ENGLISH.upper(), *random_texts(100, seed=10)]
    counts = [len(encode(trained, f" {w}")) for w in (*TOP, *TOP.values())]
    assert len(set(counts)) > 1  # words and translations of different lengths
    out = run(trained, lex, texts, ratio=0.6, seed=4)
    switched = sum(check_against_reference(trained, t, *doc(out, d)) for d, t in enumerate(texts))
    assert switched == out.words_switched > 0
    # every input decodes to text: the originals with some words replaced by a cased translation
    first = trained.decode(doc(out, 0)[0])
    assert first != ENGLISH and first.endswith(".")
    zero = run(trained, lex, texts, ratio=0.0)
    assert zero.input_ids.tolist() == [i for e in trained.encode_batch(texts, add_special_tokens=False) for i in e.ids]
