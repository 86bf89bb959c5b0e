"""The decoder in prealign.train.model: loss convention, causality, tying, named sizes, GQA, masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prealign.train.model import CONFIGS, IGNORE_INDEX, ModelConfig, Transformer, model_config


def tiny(**overrides: object) -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_config("tiny", 97, **overrides)).eval()


def test_loss_matches_manual_shifted_cross_entropy_with_ignored_labels():
    model = tiny()
    ids = torch.randint(97, (3, 20))
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX
    labels[2, -3:] = IGNORE_INDEX
    with torch.no_grad():
        out = model(ids, labels=labels)
    # HF convention: logits at position j-1 predict labels[j]; -100 does not count
    logits = out.logits[:, :-1].reshape(-1, 97)
    target = labels[:, 1:].reshape(-1)
    keep = target != IGNORE_INDEX
    logp = torch.log_softmax(logits.double(), dim=-1)
    manual = -logp[keep].gather(1, target[keep][:, None]).mean()
    assert out.logits.shape == (3, 20, 97)
    assert torch.allclose(out.loss.double(), manual, atol=1e-5)
    assert torch.allclose(out.loss, F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX), atol=1e-6)


def test_attention_is_causal():
    model = tiny()
    ids = torch.randint(97, (2, 16))
    changed = ids.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 97
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-6)


def test_tied_embeddings_share_storage():
    model = tiny()
    assert model.lm_head.weight is model.embed.weight
    assert model.lm_head.weight.data_ptr() == model.embed.weight.data_ptr()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embed.weight.data_ptr()
    assert untied.num_parameters() == model.num_parameters() + 97 * 64


def test_named_config_parameter_counts():
    with torch.device("meta"):  # shapes only, no memory or init time
        counts = {name: Transformer(model_config(name, 32000)).num_parameters() for name in CONFIGS}
    assert 120e6 <= counts["150m"] <= 160e6
    assert counts["tiny"] < counts["mini"] < counts["small"] < counts["base"] < counts["150m"]


def test_grouped_query_attention_runs_and_trains():
    model = tiny(n_kv_heads=2)
    assert model.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * 16
    ids = torch.randint(97, (2, 12))
    out = model.train()(ids, labels=ids)
    out.loss.backward()
    assert out.logits.shape == (2, 12, 97)
    assert torch.isfinite(out.loss)
    assert model.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError):
        ModelConfig(dim=64, n_heads=4, n_kv_heads=3)


def test_sequence_longer_than_max_seq_len_raises():
    model = tiny()
    ids = torch.zeros(1, model.config.max_seq_len + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(ids)


def test_attention_mask_of_ones_equals_plain_causal_path():
    model = tiny()
    ids = torch.randint(97, (2, 24))
    with torch.no_grad():
        plain = model(ids, labels=ids, hidden_states=True)
        masked = model(ids, labels=ids, hidden_states=True, attention_mask=torch.ones_like(ids))
    assert torch.allclose(plain.logits, masked.logits, atol=1e-5)
    assert torch.allclose(plain.loss, masked.loss, atol=1e-6)
    assert len(plain.hidden_states) == model.config.n_layers + 1


def test_padding_does_not_change_real_positions():
    model = tiny()
    ids = torch.randint(97, (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    with torch.no_grad():
        alone = model(ids).logits
        with_pad = model(padded, attention_mask=mask).logits[:, :10]
    assert torch.allclose(alone, with_pad, atol=1e-5)
