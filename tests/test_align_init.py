"""Alignment initialisation: the contrastive objective, training on a tiny lexicon, and the evaluation helpers."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch.optim.optimizer import register_optimizer_step_pre_hook

from prealign.codeswitch.tokenizer import train_tokenizer
from prealign.train.align_init import (
    AlignInitConfig,
    EntryBatcher,
    align_losses,
    encode_words,
    info_nce,
    lexicon_entries,
    make_batch,
    pad_ids,
    train_align_init,
)
from prealign.train.model import Transformer, model_config
from prealign.train.model_metrics import text_loss, translation_retrieval, word_vectors
from prealign.train.word_model import pool, word_model

PAIRS = [
    ("dog", "chien"), ("cat", "chat"), ("house", "maison"), ("water", "eau"), ("bread", "pain"),
    ("apple", "pomme"), ("car", "voiture"), ("book", "livre"), ("tree", "arbre"), ("sun", "soleil"),
    ("moon", "lune"), ("sea", "mer"), ("city", "ville"), ("street", "rue"), ("friend", "ami"),
    ("friend", "amie"), ("child", "enfant"), ("woman", "femme"), ("man", "homme"), ("day", "jour"),
    ("night", "nuit"), ("year", "an"), ("year", "année"), ("time", "temps"), ("time", "fois"),
    ("work", "travail"), ("school", "école"), ("door", "porte"), ("window", "fenêtre"), ("road", "route"),
    ("road", "chemin"), ("bird", "oiseau"), ("fish", "poisson"), ("horse", "cheval"), ("river", "rivière"),
    ("river", "fleuve"), ("mountain", "montagne"), ("king", "roi"), ("milk", "lait"), ("cheese", "fromage"),
    ("red", "rouge"), ("black", "noir"), ("white", "blanc"), ("green", "vert"), ("small", "petit"),
    ("big", "grand"), ("old", "vieux"), ("new", "nouveau"),
]  # fmt: skip


def lexicon_df(pairs: list[tuple[str, str]] = PAIRS) -> pl.DataFrame:
    n = len(pairs)
    return pl.DataFrame(
        {
            "src": [s for s, _ in pairs],
            "tgt": [t for _, t in pairs],
            "count": pl.Series([5] * n, dtype=pl.Int64),
            "p_tgt_given_src": pl.Series([0.5] * n, dtype=pl.Float32),
            "p_src_given_tgt": pl.Series([0.5] * n, dtype=pl.Float32),
            "score": pl.Series([0.5] * n, dtype=pl.Float32),
        }
    )


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    en = " ".join(s for s, _ in PAIRS)
    fr = " ".join(t for _, t in PAIRS)
    lines = [
        f"the {en} and the {fr}",
        "the dog and the cat see the house near the water with bread and an apple",
        "le chien et le chat voient la maison près de l'eau avec du pain et une pomme",
        "a small red car on the old road by the river under the big mountain",
        "une petite voiture rouge sur la vieille route près de la rivière sous la grande montagne",
    ]
    path = tmp_path_factory.mktemp("tok") / "corpus.txt"
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return train_tokenizer([path], 340, min_frequency=2)  # small: most words are several tokens


def tiny_model(tokenizer: Tokenizer, seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(model_config("tiny", tokenizer.get_vocab_size(with_added_tokens=True), **overrides))


def masks(groups: list[int], word_ids: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, exclude) for words in ``groups`` (same group: positives), copies marked by ``word_ids``."""
    g = torch.tensor(groups)
    w = torch.arange(len(groups)) if word_ids is None else torch.tensor(word_ids)
    return g[:, None] == g[None, :], w[:, None] == w[None, :]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = AlignInitConfig(steps=150, batch_size=16, lr=3e-3, warmup=10, log_every=10, device="cpu")


# ------------------------------------------------------------------------------------------- contrastive loss


def test_info_nce_matches_direct_computation() -> None:
    torch.manual_seed(1)
    v = torch.randn(3, 5)
    groups = torch.tensor([0, 0, 1])  # words 0 and 1 are translations; word 2 has no positive
    z = v / v.norm(dim=1, keepdim=True)
    s = (z @ z.T) / 0.1
    loss0 = -torch.log(torch.exp(s[0, 1]) / (torch.exp(s[0, 1]) + torch.exp(s[0, 2])))
    loss1 = -torch.log(torch.exp(s[1, 0]) / (torch.exp(s[1, 0]) + torch.exp(s[1, 2])))
    expected = (loss0 + loss1) / 2
    assert torch.allclose(info_nce(v, *masks(groups.tolist()), 0.1), expected, atol=1e-5)


def test_info_nce_multi_positive_and_self_excluded() -> None:
    torch.manual_seed(2)
    v = torch.randn(5, 4)
    groups = torch.tensor([0, 0, 0, 1, 1])
    z = F.normalize(v, dim=1)
    s = torch.exp(z @ z.T / 0.5)
    losses = []
    for i in range(5):
        pos = sum(s[i, j] for j in range(5) if j != i and groups[j] == groups[i])
        allk = sum(s[i, j] for j in range(5) if j != i)
        losses.append(-torch.log(pos / allk))
    assert torch.allclose(info_nce(v, *masks(groups.tolist()), 0.5), torch.stack(losses).mean(), atol=1e-5)
    # a word identical to its own positive would give the self term exp(1/t); it must not be counted
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = -math.log(math.e / (math.e + 2))  # positive identical (cos 1), two orthogonal negatives (cos 0)
    assert math.isclose(float(info_nce(same, *masks([0, 0, 1, 1]), 1.0)), expected, rel_tol=1e-5)
    # copies of the same word (same word id) are neither positives nor negatives of each other
    # word 7 in entry 0 (with word 8) and again in entry 1: anchor 0 must not see its own copy (would add e^1)
    vecs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    copies = info_nce(vecs, *masks([0, 1, 0], [7, 7, 8]), 1.0)
    # anchor 0: -log(1 / 1) = 0; anchor 2: -log(1 / (1 + 1)); anchor 1 has no positive
    assert math.isclose(float(copies), math.log(2) / 2, rel_tol=1e-5)
    assert not math.isclose(float(info_nce(vecs, *masks([0, 1, 0]), 1.0)), math.log(2) / 2, rel_tol=1e-3)
    # no anchor with a positive: zero, still differentiable
    lonely = torch.randn(3, 4, requires_grad=True)
    out = info_nce(lonely, *masks([0, 1, 2]))
    out.backward()
    assert float(out.detach()) == 0.0 and torch.isfinite(lonely.grad).all()


@pytest.mark.parametrize("tied", [True, False])
def test_objective_on_a_model_batch_matches_direct_computation(tokenizer: Tokenizer, tied: bool) -> None:
    model = tiny_model(tokenizer, tie_embeddings=tied)
    words = ["horse", "cheval", "window"]
    ids = encode_words(tokenizer, words, 16)
    assert all(len(i) > 1 for i in ids)
    assert ids[0] == tokenizer.encode(" horse", add_special_tokens=False).ids  # the mid-sentence form
    table, mask = pad_ids(ids, 1)
    batch = make_batch([0, 1, 2], table, mask.sum(1), {0: [0], 1: [0], 2: [1]}.__getitem__)
    wm = word_model(model)
    layers = wm.layer_indices("all")
    # tied: the LM-head rows are the embedding rows, so layer 3 would count layer 0 twice
    assert layers == ([0, 1, 2] if tied else [0, 1, 2, 3])
    total, lm, aligns = align_losses(wm, batch, layers, AlignInitConfig(device="cpu"))
    # direct: run each word alone (no padding at all), sum its token states, InfoNCE by hand
    per_word = [model(torch.tensor([i]), labels=torch.tensor([i]), hidden_states=True) for i in ids]
    for layer in layers:
        if layer < 3:
            vecs = torch.stack([o.hidden_states[layer][0].sum(0) for o in per_word])
        else:
            vecs = torch.stack([model.lm_head.weight[torch.tensor(i)].sum(0) for i in ids])
        z = F.normalize(vecs, dim=1)
        s = z @ z.T / 0.1
        l0 = -(s[0, 1] - torch.logsumexp(s[0, [1, 2]], 0))
        l1 = -(s[1, 0] - torch.logsumexp(s[1, [0, 2]], 0))
        assert torch.allclose(aligns[layer], (l0 + l1) / 2, atol=1e-4), layer
    # LM loss: mean over all predicted tokens of all words
    n_pred = [len(i) - 1 for i in ids]
    lm_direct = sum(o.loss * n for o, n in zip(per_word, n_pred, strict=True) if n) / sum(n_pred)
    assert torch.allclose(lm, lm_direct, atol=1e-5)
    assert torch.allclose(total, lm + 0.1 * torch.stack(aligns).mean())
    with pytest.raises(ValueError, match="tied" if tied else "out of range"):
        wm.layer_indices([0, 3] if tied else [0, 4])


def test_pool_sums_real_tokens_and_mean_would_change_nothing() -> None:
    states = torch.arange(12.0).view(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    assert pool(states, mask).tolist() == [[4.0, 6.0, 8.0, 10.0]]
    # the loss normalises the pooled vector: the mean (sum / length) gives the same loss, hence no option
    v = torch.randn(4, 8)
    lengths = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert torch.allclose(info_nce(v, *masks([0, 0, 1, 1])), info_nce(v / lengths, *masks([0, 0, 1, 1])))


def test_positives_come_from_the_word_graph() -> None:
    """A word in two entries keeps all its translations as positives, whichever entries the batch drew."""
    words = ["bank", "banque", "rive", "shore", "river", "fleuve"]
    entries = [[0, 1, 2], [3, 2], [4, 2, 5]]  # bank: banque, rive; shore: rive; river: rive, fleuve
    word_entries: dict[int, list[int]] = {w: [e for e, ws in enumerate(entries) if w in ws] for w in range(6)}
    table, mask = pad_ids([[7]] * len(words), 0)
    drawn = [0, 1, 2, 3, 2, 5]  # entries 0 (bank banque rive) and 1 (shore rive), and "fleuve" of entry 2
    batch = make_batch(drawn, table, mask.sum(1), word_entries.__getitem__)
    pos, exc = batch.positive & ~batch.exclude, batch.exclude
    assert pos[4, 0] and pos[4, 1] and pos[2, 3]  # rive (drawn for shore) and bank/banque; rive and shore
    assert not pos[0, 3] and not pos[3, 1]  # bank and shore are not translations of each other
    assert exc[2, 4] and not pos[2, 4]  # the two copies of "rive": neither positive nor negative
    assert pos[2, 5] and pos[4, 5]  # rive and fleuve share entry 2 (river's), which the batch did not draw
    assert not pos[0, 5]


# -------------------------------------------------------------------------------------------------- data


def test_lexicon_entries_group_translations_and_filter() -> None:
    df = lexicon_df([("bank", "banque"), ("bank", "rive"), ("taxi", "taxi"), ("dog", "chien")])
    df = df.with_columns(
        pl.Series("p_tgt_given_src", [0.3, 0.6, 1.0, 0.9], dtype=pl.Float32),
        pl.Series("count", [5, 5, 5, 1], dtype=pl.Int64),
    )
    entries = lexicon_entries(df, AlignInitConfig())
    assert entries == [("bank", "rive", "banque"), ("dog", "chien")]  # best first; "taxi" has no positive
    assert lexicon_entries(df, AlignInitConfig(min_count=2)) == [("bank", "rive", "banque")]
    assert lexicon_entries(df, AlignInitConfig(min_prob=0.5)) == [("bank", "rive"), ("dog", "chien")]
    assert lexicon_entries(df, AlignInitConfig(max_translations=1))[0] == ("bank", "rive")


def test_batches_keep_entries_together(tokenizer: Tokenizer) -> None:
    entries = lexicon_entries(lexicon_df(), AlignInitConfig())
    batcher = EntryBatcher(tokenizer, entries, AlignInitConfig(batch_size=8), seed=3)
    batch = batcher.next()
    assert batch.ids.shape == batch.mask.shape and batch.positive.shape == (len(batch.ids),) * 2
    words = [batcher.words[w] for w in batch.word_ids.tolist()]
    start = 0
    for _ in range(8):  # 8 whole entries, one after another, each all positives of each other
        entry = next(e for e in entries if e[0] == words[start])
        assert tuple(words[start : start + len(entry)]) == entry
        block = batch.positive[start : start + len(entry), start : start + len(entry)]
        assert block.all()
        start += len(entry)
    assert start == len(words)
    assert batch.tokens == int(batch.mask.sum()) and len(batch.rows) == int(batch.mask[:, 1:].sum())
    assert (batch.mask[:, 0]).all() and (batch.ids[~batch.mask] == 1).all()  # right padding with <|pad|>


def test_config_validation() -> None:
    for bad in [
        {"temperature": 0},
        {"layers": "some"},
        {"layers": [0, 0]},
        {"layers": [-1]},
        {"layers": []},
        {"batch_size": 1},
        {"steps": 0},
        {"align_weight": -1},
        {"min_prob": 2},
        {"max_word_tokens": 0},
        {"device": "tpu"},
    ]:
        with pytest.raises(ValueError):
            AlignInitConfig(**bad)
    config = AlignInitConfig(layers=[0, 3])
    assert config.layers == (0, 3) and asdict(config)["layers"] == (0, 3)


def test_train_rejects_too_small_lexicon(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        train_align_init(tiny_model(tokenizer), tokenizer, lexicon_df(PAIRS[:1]), FAST)


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tokenizer: Tokenizer) -> tuple[Transformer, list[dict]]:
    model = tiny_model(tokenizer)
    seen: list[dict] = []
    metrics = train_align_init(model, tokenizer, lexicon_df(), FAST, progress=seen.append)
    assert seen == metrics
    return model, metrics


def test_training_aligns_translations_at_every_layer(tokenizer: Tokenizer, trained) -> None:
    model, _ = trained
    untrained = translation_retrieval(tiny_model(tokenizer), tokenizer, PAIRS)
    after = translation_retrieval(model, tokenizer, PAIRS)
    assert [r["name"] for r in after] == ["embedding", "block 1", "block 2"]  # tied: the head is the embedding
    chance = after[0]["chance"]
    for before, r in zip(untrained, after, strict=True):
        assert r["accuracy"] > max(3 * chance, 0.5), r
        assert r["accuracy"] > before["accuracy"] + 0.3, (before, r)
        assert r["pair_cosine"] > r["random_cosine"] + 0.2, r
        # untrained: near chance; shared subwords (" ch" in "chat"/"chien"...) give sums a small head start
        assert before["accuracy"] < 0.2, before
        assert abs(before["pair_cosine"] - before["random_cosine"]) < 0.2, before


def test_training_metrics_and_lm_loss_decrease(trained) -> None:
    _, metrics = trained
    assert [m["step"] for m in metrics] == list(range(10, 151, 10))
    first, last = metrics[0], metrics[-1]
    assert set(first["align_layers"]) == {"embedding", "block 1", "block 2"}
    assert last["lm_loss"] < first["lm_loss"] - 0.5
    assert last["align_loss"] < first["align_loss"]
    assert all(math.isclose(m["loss"], m["lm_loss"] + 0.1 * m["align_loss"], rel_tol=1e-4) for m in metrics)


def test_training_is_deterministic(tokenizer: Tokenizer) -> None:
    config = AlignInitConfig(steps=20, batch_size=8, warmup=5, log_every=5, device="cpu", layers=[0, 2])
    runs = [train_align_init(tiny_model(tokenizer), tokenizer, lexicon_df(), config) for _ in range(2)]
    assert runs[0] == runs[1]
    other = train_align_init(
        tiny_model(tokenizer), tokenizer, lexicon_df(), AlignInitConfig(**{**asdict(config), "seed": 1})
    )
    assert other != runs[0]
    assert set(runs[0][0]["align_layers"]) == {"embedding", "block 2"}


def test_rate_of_every_optimizer_step_first_and_last_included(tokenizer: Tokenizer) -> None:
    # steps counted from 1: step k <= warmup has lr * k / warmup, then cosine to lr * min_lr_ratio at the last step
    config = AlignInitConfig(steps=8, batch_size=8, lr=2e-3, warmup=4, min_lr_ratio=0.25, log_every=1, device="cpu")
    floor = 2e-3 * 0.25
    cosine = [floor + 0.5 * (2e-3 - floor) * (1 + math.cos(math.pi * (k - 4) / 4)) for k in range(5, 9)]
    expected = [5e-4, 1e-3, 1.5e-3, 2e-3, *cosine]
    assert cosine[-1] == pytest.approx(5e-4) and cosine[0] < 2e-3
    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        metrics = train_align_init(tiny_model(tokenizer), tokenizer, lexicon_df(), config)
    finally:
        handle.remove()
    assert rates == pytest.approx(expected, rel=1e-12)
    assert [(m["step"], m["lr"]) for m in metrics] == list(zip(range(1, 9), rates, strict=True))


# ---------------------------------------------------------------------------------------------- evaluation


def test_word_vectors_pool_like_training(tokenizer: Tokenizer) -> None:
    model = tiny_model(tokenizer)
    ids = tokenizer.encode(" montagne", add_special_tokens=False).ids
    emb = word_vectors(model, tokenizer, ["montagne", "dog"], 0)
    assert emb.shape == (2, model.config.dim)
    assert torch.allclose(emb[0], model.embed.weight[ids].sum(0).detach(), atol=1e-6)
    assert torch.allclose(word_vectors(model, tokenizer, ["montagne"], -1)[0], emb[0], atol=1e-6)  # tied head


def test_text_loss(tokenizer: Tokenizer, tmp_path: Path) -> None:
    texts = ["le chien et le chat", "the dog and the cat see the house"]
    path = tmp_path / "fr.txt"
    path.write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    model = tiny_model(tokenizer)
    n_tokens = sum(len(tokenizer.encode(t).ids) + 1 for t in texts) - 1  # + EOT each, first not predicted
    for seq_len in (4, 7, 256):  # every token but the first predicted exactly once, whatever the window
        assert text_loss(model, tokenizer, path, seq_len=seq_len, batch_size=2)["tokens"] == n_tokens
    result = text_loss(model, tokenizer, path, seq_len=256, batch_size=2)
    assert result == text_loss(model, tokenizer, texts, 256, 1)
    assert 0.8 * math.log(340) < result["loss"] < 1.2 * math.log(340)  # untrained: about uniform
    # direct: one packed sequence through the model
    stream = tokenizer.encode(texts[0]).ids + [0] + tokenizer.encode(texts[1]).ids + [0]
    direct = model(torch.tensor([stream]), labels=torch.tensor([stream])).loss
    assert math.isclose(result["loss"], float(direct.detach()), rel_tol=1e-4)
    with pytest.raises(ValueError):
        text_loss(model, tokenizer, texts, seq_len=1)
