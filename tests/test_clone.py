"""English-Clone: the character bijection, the joint tokenizer, clone make and the probes."""

from __future__ import annotations

import random
import string
import unicodedata
from pathlib import Path

import pytest
import torch
from conftest import cli
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign.codeswitch.tokenizer import train_tokenizer
from prealign.train.clone import (
    clone_map,
    clone_text,
    clone_tokenizer,
    symmetric_pre_tokenizer,
    true_lexicon,
    unclone_text,
)
from prealign.train.model import Transformer, model_config
from prealign.train.probes import (
    CATEGORIES,
    RELATIONS,
    Fact,
    category_split,
    continuation_logprobs,
    fact_sentences,
    fit_logistic,
    invented_names,
    knowledge_probe,
    majority_baseline,
    make_facts,
    transfer_probe,
)

FILLERS = ("the", "a", "saw", "with", "and", "in", "old", "new", "near", "of", "was", "is", "at", "by")


def english_lines(n: int, seed: int = 0) -> list[str]:
    """Brown-like English: category words and fillers, punctuation split off, some digits and capitals."""
    rng = random.Random(seed)
    words = [w for ws in CATEGORIES.values() for w in ws] + [v for r in RELATIONS for v in r.values]
    lines = []
    for i in range(n):
        body = [rng.choice(words if rng.random() < 0.5 else FILLERS) for _ in range(rng.randint(4, 12))]
        body[0] = body[0].capitalize()
        if i % 7 == 0:
            body.insert(2, str(rng.randint(1, 1999)))
        lines.append(" ".join(body) + rng.choice([" .", " ?", " , too .", " ( sic ) !"]))
    return lines


def test_clone_map_is_a_category_preserving_nfkc_stable_bijection() -> None:
    m = clone_map()
    assert set(m) == set(string.ascii_letters + string.digits + string.punctuation)
    assert len(set(m.values())) == len(m)  # injective
    assert not set(m.values()) & set(map(chr, range(128)))  # disjoint from ASCII
    for src, dst in m.items():
        assert unicodedata.category(src) == unicodedata.category(dst), (src, dst)
        assert unicodedata.normalize("NFKC", dst) == dst
    for ch in string.ascii_lowercase:  # case is carried over
        assert m[ch].upper() == m[ch.upper()] and m[ch.upper()].lower() == m[ch]


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F) | st.sampled_from("éß\u00a0\u4e2d")))
def test_clone_text_round_trips_and_keeps_whitespace(text: str) -> None:
    cloned = clone_text(text)
    assert unclone_text(cloned) == text
    assert len(cloned) == len(text)
    assert [c.isspace() for c in cloned] == [c.isspace() for c in text]
    assert all(c not in string.ascii_letters for c in cloned)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("tok") / "en.txt"
    path.write_text("\n".join(english_lines(400)) + "\n", encoding="utf-8")
    english = train_tokenizer([path], 600, pre_tokenizer=symmetric_pre_tokenizer())
    joint, id_map = clone_tokenizer(english)
    return english, joint, id_map


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\n\t"), max_size=80))
def test_clone_tokenises_exactly_like_its_english_original(tokenizers, text: str) -> None:
    english, joint, id_map = tokenizers
    en_ids = english.encode(text).ids
    assert joint.encode(text).ids == en_ids  # English ids unchanged
    assert joint.encode(clone_text(text)).ids == [id_map.get(i, i) for i in en_ids]
    assert joint.decode(joint.encode(clone_text(text)).ids) == clone_text(text)


def test_clone_tokens_are_disjoint_except_whitespace(tokenizers) -> None:
    english, joint, id_map = tokenizers
    lines = english_lines(50, seed=3)
    en = {i for enc in joint.encode_batch(lines) for i in enc.ids}
    cl = {i for enc in joint.encode_batch([clone_text(x) for x in lines]) for i in enc.ids}
    shared = en & cl
    assert shared and all(joint.id_to_token(i).replace("Ġ", "") == "" for i in shared)  # only the space token
    assert len(id_map) > english.get_vocab_size() - 300  # every merged token has a twin
    assert joint.get_vocab_size() > english.get_vocab_size() + len(id_map) - 1


def test_clone_tokenizer_rejects_a_non_byte_level_tokenizer() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    with pytest.raises(ValueError, match="byte-level BPE"):
        clone_tokenizer(Tokenizer(WordLevel({"a": 0}, unk_token="a")))


def test_true_lexicon_maps_each_word_to_its_clone() -> None:
    lex = true_lexicon(["The cat 's hat .", "the cat"])
    assert ("the", clone_text("the"), 3 - 1) in lex
    assert lex[0][0] in ("the", "cat") and lex[0][2] == 2
    assert all(c == clone_text(w) for w, c, _ in lex)
    assert {w for w, _, _ in lex} == {"the", "cat", "'", "s", "hat", "."}  # apostrophes split alike


def test_clone_make_writes_parallel_text_and_lexicon(tmp_path: Path) -> None:
    corpus = tmp_path / "en.txt"
    corpus.write_text("Hello world !\n\n  The cat sat .  \n", encoding="utf-8")
    out = tmp_path / "clone"
    cli("clone", "make", corpus, "-o", out)
    en = (out / "en.txt").read_text("utf-8").splitlines()
    assert en == ["Hello world !", "The cat sat ."]
    assert (out / "clone.txt").read_text("utf-8").splitlines() == [clone_text(x) for x in en]
    rows = [line.split("\t") for line in (out / "lexicon.tsv").read_text("utf-8").splitlines()]
    assert ["hello", clone_text("hello"), "1"] in rows and len(rows) == 7
    again = cli("clone", "make", corpus, "-o", out, code=2)
    assert "--overwrite" in again.stderr


def test_clone_make_rejects_text_that_already_holds_clone_characters(tmp_path: Path) -> None:
    corpus = tmp_path / "en.txt"
    corpus.write_text("fine line\nа Cyrillic letter\n", encoding="utf-8")
    res = cli("clone", "make", corpus, "-o", tmp_path / "out", code=2)
    assert f"{corpus}:2:" in res.stderr and "disjoint" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_extract_lexicon_recovers_the_identity_lexicon_of_a_clone(tmp_path: Path) -> None:
    corpus = tmp_path / "en.txt"
    corpus.write_text("\n".join(english_lines(1500, seed=5)) + "\n", encoding="utf-8")
    out = tmp_path / "clone"
    cli("clone", "make", corpus, "-o", out)
    lex = tmp_path / "lex.parquet"
    cli("extract-lexicon", "--src", out / "en.txt", "--tgt", out / "clone.txt", "-o", lex, "--workers", 0, "--quiet")
    res = cli("eval-lexicon", lex, "--gold", out / "lexicon.tsv", "--json")
    import json

    scores = json.loads(res.stdout)
    assert scores["p@1"] == 1.0 and scores["evaluated"] >= 60


# ---- probes -----------------------------------------------------------------------------------------------------


def test_invented_names_are_distinct_and_avoid_given_words() -> None:
    names = invented_names(50, seed=1)
    assert len(set(names)) == 50 and all(n[0].isupper() for n in names)
    avoid = {n.lower() for n in names[:10]}
    assert not {n.lower() for n in invented_names(50, seed=1, avoid=avoid)} & avoid


def test_fact_sentences_state_each_fact_repeats_times() -> None:
    facts = make_facts(3, seed=0)
    assert len(facts) == 3 * len(RELATIONS)
    sentences = fact_sentences(facts, 4, seed=0)
    assert len(sentences) == 4 * len(facts)
    for fact in facts:
        assert sum(fact.entity in s and f" {fact.value} " in s for s in sentences) >= 4


class BigramLM(torch.nn.Module):
    """A real (trainable) bigram language model: logits at t depend only on the token at t."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.zeros(vocab, vocab))

    def forward(self, ids: torch.Tensor):
        from prealign.train.model import Output

        return Output(self.table[ids])


def _tok(tokenizers):
    return tokenizers[1]


def test_continuation_logprobs_equal_a_direct_computation(tokenizers) -> None:
    tok = _tok(tokenizers)
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", tok.get_vocab_size(), dim=32, n_layers=1, n_heads=2)).eval()
    prompts, conts = ["the cat saw", "a"], [" two eyes", " red"]
    got = continuation_logprobs(model, tok, prompts, conts, bos=0)
    for k, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        head = [0] + tok.encode(p).ids
        ids = head + tok.encode(c).ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        want = sum(float(logp[j - 1, ids[j]]) for j in range(len(head), len(ids)))
        assert got[k].item() == pytest.approx(want, abs=1e-4)


def test_knowledge_probe_ranks_the_value_the_model_prefers(tokenizers) -> None:
    tok = _tok(tokenizers)
    model = BigramLM(tok.get_vocab_size())
    city = next(r for r in RELATIONS if r.name == "city")
    last = tok.encode(" in").ids[-1]
    with torch.no_grad():
        for rank, value in enumerate(city.values):  # the model ranks values in list order after " in"
            model.table[last, tok.encode(" " + value).ids[0]] = 10.0 - rank
    facts = [Fact("Xa", "city", city.values[0]), Fact("Xb", "city", city.values[2])]
    res = knowledge_probe(model, tok, facts)
    assert res["accuracy"] == 0.5
    assert res["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert res["chance"] == pytest.approx(1 / len(city.values))
    assert res["majority"] == 0.5  # two facts, two different values: either one is right half the time
    assert (
        majority_baseline([Fact("A", "city", "Rome"), Fact("B", "city", "Rome"), Fact("C", "city", "Paris")]) == 2 / 3
    )
    flat = knowledge_probe(model, tok, facts, clone_text)  # no preference among Clone tokens: ties
    assert flat["accuracy"] <= 0.5 and flat["mrr"] < res["mrr"]
    tie = knowledge_probe(BigramLM(tok.get_vocab_size()), tok, [Fact("Xa", "city", "Paris")])
    single = [v for v in city.values if len(tok.encode(" " + v).ids) == 1]
    assert tie["accuracy"] == pytest.approx(1 / len(single) if "Paris" in single else 0.0)


def test_fit_logistic_separates_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 3, generator=g) + 4, torch.randn(20, 3, generator=g) - 4])
    y = torch.tensor([0] * 20 + [1] * 20)
    clf = fit_logistic(x, y, 2)
    assert (clf(x).argmax(1) == y).all()


def test_transfer_probe_measures_from_the_model(tokenizers) -> None:
    tok = _tok(tokenizers)
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", tok.get_vocab_size(), dim=32, n_layers=1, n_heads=2)).eval()
    train, test = category_split()
    assert {w for w, _ in train}.isdisjoint({w for w, _ in test})
    res = transfer_probe(model, tok, clone_text)
    assert 0.0 <= res["transfer"] <= 1.0 and 0.0 <= res["en"] <= 1.0
    assert res["test_words"] == len(test) and res["chance"] == pytest.approx(1 / len(CATEGORIES))
    # a model whose Clone embeddings are copies of the English ones transfers exactly as it does in English
    _, joint, id_map = tokenizers
    with torch.no_grad():
        for en_id, cl_id in id_map.items():
            model.embed.weight[cl_id] = model.embed.weight[en_id]
    same = transfer_probe(model, tok, clone_text)
    assert same["transfer"] == pytest.approx(same["en"])
