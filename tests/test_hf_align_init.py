"""Alignment initialisation of transformers causal LMs (--hf-model): tiny Llama, Qwen2 and GPT-2 configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_align_init import PAIRS, lexicon_df

from prealign.cli import main
from prealign.codeswitch.tokenizer import load_tokenizer, train_tokenizer
from prealign.errors import InputError
from prealign.train import checkpoint
from prealign.train.hf_models import load_hf_model
from prealign.train.model_metrics import translation_retrieval

transformers = pytest.importorskip("transformers", reason="--hf-model needs the [hf] extra (transformers)")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(family: str, vocab: int) -> transformers.PretrainedConfig:
    shape = {"vocab_size": vocab, "max_position_embeddings": 64}
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=vocab)
    common = {**shape, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    common.update(num_attention_heads=4, num_key_value_heads=2)
    if family == "llama":
        return transformers.LlamaConfig(**common)
    return transformers.Qwen2Config(**common, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    en, fr = " ".join(s for s, _ in PAIRS), " ".join(t for _, t in PAIRS)
    (root / "corpus.txt").write_text(f"the {en} and the {fr}\n" * 20, encoding="utf-8")
    train_tokenizer([root / "corpus.txt"], 400, min_frequency=2).save(str(root / "tokenizer.json"))
    lexicon_df().write_parquet(root / "lex.parquet")
    return {"root": root, "tokenizer": root / "tokenizer.json", "lexicon": root / "lex.parquet"}


def align_init(data: dict[str, Path], model_dir: Path, out: Path, *extra: str, steps: int = 60):
    args = ["train", "align-init", "--hf-model", str(model_dir), "--lexicon", str(data["lexicon"]), "-o", str(out)]
    args += ["--steps", str(steps), "--batch-size", "16", "--lr", "3e-3", "--device", "cpu", "-q", *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_config_only_directory_is_aligned_and_saved_as_a_transformers_model(data, tmp_path: Path, family: str) -> None:
    config_dir = tmp_path / "config"
    tiny_config(family, 400).save_pretrained(config_dir)
    out = tmp_path / "run"
    res = align_init(data, config_dir, out, "--tokenizer", str(data["tokenizer"]))
    assert res.exit_code == 0, res.output
    model = transformers.AutoModelForCausalLM.from_pretrained(out)  # the run directory is a model directory
    assert type(model).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
        family, "GPT2LMHeadModel"
    )
    record = json.loads((out / "run.json").read_text())
    assert record["hf_pretrained"] is False and record["stage"] == "align-init"
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    tied = family != "llama"
    expected = {"embedding", "block 1", "block 2"} | (set() if tied else {"lm_head"})
    assert set(metrics[-1]["align_layers"]) == expected  # a tied head is not counted twice
    assert metrics[-1]["align_loss"] < metrics[0]["align_loss"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)  # and so is its tokenizer
    ours = load_tokenizer(data["tokenizer"])
    assert tokenizer("the dog and the cat")["input_ids"] == ours.encode("the dog and the cat").ids


def test_qwen2_translations_closer_than_random_pairs_at_layer_1(data, tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    tiny_config("qwen2", 400).save_pretrained(config_dir)
    out = tmp_path / "run"
    assert align_init(data, config_dir, out, "--tokenizer", str(data["tokenizer"]), steps=150).exit_code == 0
    tokenizer = load_tokenizer(data["tokenizer"])
    before, _ = load_hf_model(config_dir, seed=0)
    after = transformers.AutoModelForCausalLM.from_pretrained(out)
    start = {r["name"]: r for r in translation_retrieval(before, tokenizer, PAIRS)}
    end = {r["name"]: r for r in translation_retrieval(after, tokenizer, PAIRS)}
    layer = end["block 1"]
    assert layer["pair_cosine"] > layer["random_cosine"] + 0.2, layer
    assert layer["accuracy"] > start["block 1"]["accuracy"] + 0.3, (start["block 1"], layer)
    for name in end:  # the figures, for the record (pytest -s): pair cosine, random cosine, accuracy
        print(name, [round(r[name][k], 3) for r in (start, end) for k in ("pair_cosine", "random_cosine", "accuracy")])


def test_model_directory_with_weights_starts_from_them(data, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    torch.manual_seed(5)
    source = transformers.AutoModelForCausalLM.from_config(tiny_config("llama", 400))
    source.save_pretrained(model_dir)
    (model_dir / "tokenizer.json").write_bytes(data["tokenizer"].read_bytes())
    loaded, pretrained = load_hf_model(model_dir, seed=0)
    assert pretrained
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    out = tmp_path / "run"
    res = align_init(data, model_dir, out, steps=5)  # the tokenizer comes from the model directory
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["hf_pretrained"] is True


def test_errors_are_one_line_and_leave_nothing(data, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = align_init(data, empty, tmp_path / "run1", "--tokenizer", str(data["tokenizer"]))
    assert res.exit_code == 2 and "no config.json" in res.output and not (tmp_path / "run1").exists()
    config_dir = tmp_path / "config"
    tiny_config("llama", 400).save_pretrained(config_dir)
    res = align_init(data, config_dir, tmp_path / "run2")  # no tokenizer anywhere
    assert res.exit_code == 2 and "give --tokenizer" in res.output and not (tmp_path / "run2").exists()
    small = tmp_path / "small"
    tiny_config("llama", 100).save_pretrained(small)  # fewer rows than the tokenizer's 400 tokens
    res = align_init(data, small, tmp_path / "run3", "--tokenizer", str(data["tokenizer"]))
    assert res.exit_code == 2 and "400 tokens" in res.output and not (tmp_path / "run3").exists()
    res = align_init(data, config_dir, tmp_path / "run4", "--tokenizer", str(data["tokenizer"]), "--layers", "0,4")
    assert res.exit_code == 2 and "out of range" in res.output
    run = tmp_path / "run5"
    assert align_init(data, config_dir, run, "--tokenizer", str(data["tokenizer"]), steps=2).exit_code == 0
    res = CliRunner().invoke(main, ["export-model", str(run), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "load it with transformers" in res.output, res.output
    with pytest.raises(InputError, match="load it with transformers"):  # what --init and train eval read
        checkpoint.load_model(run)
