"""``export-model``: a run exported as a Hugging Face Llama directory gives our logits, loss and token ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cli, files_in, one_error_line
from safetensors import safe_open

from prealign.codeswitch.tokenizer import load_tokenizer, save_tokenizer, tokenizer_info, train_tokenizer
from prealign.train.checkpoint import load_model, save_model
from prealign.train.model import Transformer, model_config

transformers = pytest.importorskip(
    "transformers", reason="export-model's output is checked by loading it with transformers"
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SENTENCES = [
    "the cat sees the dog and the bird eats some bread.",
    "a child helps the teacher, my friend finds a book in the garden.",
    "le chat voit le chien et l'oiseau mange du pain.",
]
SENTENCE = "the bird sees a child, and my friend eats the bread."
LEXICON = "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\n" + "".join(
    f"{s}\t{t}\t5\t0.5\t0.5\t0.5\n"
    for s, t in [("cat", "chat"), ("dog", "chien"), ("bird", "oiseau"), ("bread", "pain")]
)


def perturbed_run(run_dir: Path, tokenizer: Path, seed: int, **overrides: object) -> None:
    """A saved run of a tiny model with ``overrides``, its norm weights moved off 1 (so a swapped norm shows)
    and sharp attention."""
    tok_info = tokenizer_info(load_tokenizer(tokenizer))
    torch.manual_seed(seed)
    model = Transformer(model_config("tiny", tok_info.vocab_size, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("qkv.weight"):
                p.mul_(8)  # attention far from uniform, so positions matter
    info = {"tokenizer_sha256": tok_info.sha256, "tokenizer_path": str(tokenizer), "stage": "align-init"}
    save_model(run_dir, model, info)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer, a real ``train align-init`` run (tied embeddings) and saved runs: untied; grouped-query
    attention with another rope theta; each exported with the command line."""
    root = tmp_path_factory.mktemp("export-hf")
    (root / "corpus.txt").write_text("\n".join(SENTENCES * 40) + "\n", "utf-8")
    save_tokenizer(train_tokenizer([root / "corpus.txt"], 300), root / "tokenizer.json")
    (root / "lexicon.tsv").write_text(LEXICON, "utf-8")
    tokenizer = root / "tokenizer.json"
    cli("train", "align-init", "--lexicon", root / "lexicon.tsv", "--tokenizer", tokenizer, "-o", root / "tied",
        "--steps", 3, "--batch-size", 4, "--lr", 0.05, "--device", "cpu", "-q")  # fmt: skip
    perturbed_run(root / "untied", tokenizer, 1, tie_embeddings=False)
    perturbed_run(root / "gqa", tokenizer, 2, n_kv_heads=2, rope_theta=500.0)
    out = {"root": root, "tokenizer": tokenizer}
    for name in ("tied", "untied", "gqa"):
        result = cli("export-model", root / name, "-o", root / f"{name}-hf")
        assert f"-> {root / f'{name}-hf'}" in result.stdout
        out[name], out[f"{name}-hf"] = root / name, root / f"{name}-hf"
    return out


def ids_batch(vocab_size: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (2, 40), generator=gen)


def hf_model(directory: Path) -> torch.nn.Module:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    return model.eval()


@pytest.mark.parametrize("name", ["tied", "untied", "gqa"])
def test_logits_and_loss_equal_ours(runs: dict[str, Path], name: str) -> None:
    ours, _ = load_model(runs[name])
    ours.eval()
    theirs = hf_model(runs[f"{name}-hf"])
    assert type(theirs).__name__ == "LlamaForCausalLM"
    cfg = ours.config
    assert theirs.config.num_key_value_heads == (cfg.n_kv_heads or cfg.n_heads)
    assert theirs.config.tie_word_embeddings == cfg.tie_embeddings
    assert (theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()) == cfg.tie_embeddings
    ids = ids_batch(cfg.vocab_size)
    labels = ids.clone()
    labels[:, ::5] = -100  # ignored labels are ignored the same way
    with torch.no_grad():
        mine = ours(ids, labels=labels)
        hf = theirs(input_ids=ids, labels=labels)
    torch.testing.assert_close(hf.logits, mine.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hf.loss, mine.loss, rtol=1e-6, atol=1e-6)
    assert hf.logits.std() > 0.1  # a real model, not zeros


def test_config_json_carries_the_shape(runs: dict[str, Path]) -> None:
    ours, _ = load_model(runs["gqa"])
    config = json.loads((runs["gqa-hf"] / "config.json").read_text("utf-8"))
    cfg = ours.config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (
        cfg.dim,
        cfg.ffn_dim,
        cfg.n_layers,
    )
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert (config["rope_theta"], config["rms_norm_eps"], config["max_position_embeddings"]) == (500.0, 1e-5, 256)
    assert (config["attention_bias"], config["mlp_bias"], config["hidden_act"]) == (False, False, "silu")
    assert config["torch_dtype"] == "float32" and config["vocab_size"] == cfg.vocab_size
    with safe_open(str(runs["gqa-hf"] / "model.safetensors"), "pt") as fh:
        names = set(fh.keys())
    assert "lm_head.weight" not in names  # tied: transformers ties it to the embedding
    assert {"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.mlp.gate_proj.weight"} <= names
    assert len(names) == 2 + 9 * cfg.n_layers


def test_rotary_layout_is_what_makes_them_equal(runs: dict[str, Path]) -> None:
    """The logits comparison does check the rotary convention: the same export with each query/key head's rows
    in Meta's interleaved order (what HF's Llama converter permutes) gives other logits, except at position 0,
    where rotary positions are the identity."""
    ours, _ = load_model(runs["untied"])
    theirs = hf_model(runs["untied-hf"])
    head_dim = ours.config.dim // ours.config.n_heads
    half = torch.arange(head_dim // 2)
    order = torch.stack([half, half + head_dim // 2], dim=1).flatten()  # 0, hd/2, 1, hd/2 + 1, ...
    with torch.no_grad():
        for layer in theirs.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                w = proj.weight.view(-1, head_dim, proj.weight.shape[1])
                proj.weight.copy_(w[:, order].reshape_as(proj.weight))
        ids = ids_batch(ours.config.vocab_size)
        mine, hf = ours(ids).logits, theirs(input_ids=ids).logits
    torch.testing.assert_close(hf[:, 0], mine[:, 0], rtol=1e-5, atol=1e-5)
    assert (hf[:, 1:] - mine[:, 1:]).abs().max() > 0.05


def test_bfloat16_export(runs: dict[str, Path]) -> None:
    out = runs["root"] / "untied-bf16"
    cli("export-model", runs["untied"], "-o", out, "--dtype", "bfloat16")
    assert json.loads((out / "config.json").read_text("utf-8"))["torch_dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys()}
        assert "lm_head.weight" in fh.keys()
    assert dtypes == {torch.bfloat16}
    # the weights are ours rounded to bfloat16, nothing else: in float32 both give the same logits
    ours, _ = load_model(runs["untied"])
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        theirs = hf_model(out).float()
        ids = ids_batch(ours.config.vocab_size)
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours.eval()(ids).logits, rtol=1e-5, atol=1e-5)


def test_tokenizer_round_trips(runs: dict[str, Path]) -> None:
    from transformers import PreTrainedTokenizerFast

    ours = load_tokenizer(runs["tokenizer"])
    theirs = transformers.AutoTokenizer.from_pretrained(runs["tied-hf"])
    assert isinstance(theirs, PreTrainedTokenizerFast)
    ids = theirs(SENTENCE)["input_ids"]
    assert ids == ours.encode(SENTENCE).ids and len(ids) > 5
    assert theirs.decode(ids) == SENTENCE
    assert (theirs.eos_token, theirs.eos_token_id, theirs.pad_token, theirs.pad_token_id) == (
        "<|endoftext|>",
        0,
        "<|pad|>",
        1,
    )
    assert theirs.bos_token is None
    config = json.loads((runs["tied-hf"] / "config.json").read_text("utf-8"))
    # no BOS is written as null: left out, LlamaConfig's default (1) would be <|pad|>
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (None, 0, 1)
    assert tokenizer_info(load_tokenizer(runs["tied-hf"])).sha256 == tokenizer_info(ours).sha256


def test_recorded_special_tokens_win(runs: dict[str, Path], tmp_path: Path) -> None:
    """A pretrain run records the shards' tokens (here a BOS chosen with ``switch --bos``): those are exported."""
    tok = load_tokenizer(runs["tokenizer"])
    model, info = load_model(runs["untied"])
    record = {"sha256": tokenizer_info(tok).sha256, "path": str(runs["tokenizer"]), "bos_token": "<|pad|>",
              "bos_id": 1, "eos_token": "<|endoftext|>", "eos_id": 0, "pad_token": None, "pad_id": None,
              "add_bos": True, "add_eos": False}  # fmt: skip
    save_model(tmp_path / "run", model, {**info, "tokenizer": record})
    cli("export-model", tmp_path / "run", "-o", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text("utf-8"))
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 0, None)
    tok_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text("utf-8"))
    assert tok_config["add_bos_token"] is True and "pad_token" not in tok_config
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (theirs.bos_token, theirs.bos_token_id, theirs.pad_token) == ("<|pad|>", 1, None)


# --- errors ------------------------------------------------------------------------------------------------------


def test_not_a_run(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "notes.txt").write_text("hello", "utf-8")
    for run in (tmp_path / "notarun", tmp_path / "missing"):
        one_error_line(cli("export-model", run, "-o", tmp_path / "out", code=2), "not a run directory", str(run))
    assert files_in(tmp_path) == ["notarun/notes.txt"]


def test_existing_directory_needs_overwrite(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine", "utf-8")
    one_error_line(cli("export-model", runs["untied"], "-o", out, code=2), "not empty", "--overwrite")
    assert files_in(tmp_path) == ["out/keep.txt"] and (out / "keep.txt").read_text("utf-8") == "mine"
    cli("export-model", runs["untied"], "-o", out, "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old directory left beside it
    assert files_in(out) == files_in(runs["untied-hf"])
    assert (out / "model.safetensors").read_bytes() == (runs["untied-hf"] / "model.safetensors").read_bytes()
    # an empty directory is written into without --overwrite
    (tmp_path / "empty").mkdir()
    cli("export-model", runs["untied"], "-o", tmp_path / "empty")
    assert files_in(tmp_path / "empty") == files_in(out)


def test_never_over_the_run_or_its_tokenizer(runs: dict[str, Path]) -> None:
    before = files_in(runs["root"])
    one_error_line(cli("export-model", runs["tied"], "-o", runs["tied"], "--overwrite", code=2), "input file")
    one_error_line(cli("export-model", runs["gqa"], "-o", runs["root"], "--overwrite", code=2), "input file")
    assert files_in(runs["root"]) == before


def test_changed_tokenizer_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    tokenizer = tmp_path / "tok" / "tokenizer.json"
    tokenizer.parent.mkdir()
    tokenizer.write_bytes(runs["tokenizer"].read_bytes())
    perturbed_run(tmp_path / "run", tokenizer, 3)
    (tmp_path / "corpus.txt").write_text("something else entirely, to make another tokenizer\n" * 20, "utf-8")
    save_tokenizer(train_tokenizer([tmp_path / "corpus.txt"], 300), tokenizer)
    before = files_in(tmp_path)
    one_error_line(
        cli("export-model", tmp_path / "run", "-o", tmp_path / "a" / "out", code=2), "sha256", str(tokenizer)
    )
    assert files_in(tmp_path) == before and not (tmp_path / "a").exists()


def test_full_disk_leaves_nothing(runs: dict[str, Path], small_disk: Path) -> None:
    one_error_line(
        cli("export-model", runs["untied"], "-o", small_disk / "a" / "out", code=2), "no space left on device"
    )
    assert list(small_disk.iterdir()) == []  # no staging directory, no parent it made


def test_export_needs_no_transformers(runs: dict[str, Path], tmp_path: Path) -> None:
    """The export runs where transformers cannot be imported, and writes the same files."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from prealign.train.export_hf import export_model\n"
        f"export_model({str(runs['gqa'])!r}, {str(tmp_path / 'out')!r})\n"
        "assert sys.modules['transformers'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert files_in(tmp_path / "out") == files_in(runs["gqa-hf"])
    for name in files_in(runs["gqa-hf"]):
        assert (tmp_path / "out" / name).read_bytes() == (runs["gqa-hf"] / name).read_bytes(), name
