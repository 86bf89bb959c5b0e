"""The pretraining loop: learning, exact resume, tokenizer checks, -100 labels, metrics, eval rows and plots."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from prealign.codeswitch.tokenizer import save_tokenizer, tokenizer_info, train_tokenizer
from prealign.errors import InputError
from prealign.shards import SCHEMA_VERSION, read_rows, rows_from_lists, shard_name, write_manifest, write_shard
from prealign.train import checkpoint
from prealign.train.plot import plot_run
from prealign.train.pretrain import PretrainConfig, pretrain, read_metrics
from prealign.train.pretrain_data import TrainStream, split_rows

ROW_TOKENS = 33
SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a child"]
VERBS = ["sees", "likes", "eats", "finds", "wants", "helps"]
OBJECTS = ["the apple", "a ball", "the house", "some bread", "the garden", "a book"]


def _corpus(path: Path, docs: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [
        " ".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(rng.randint(2, 5)))
        for _ in range(docs)
    ]
    path.write_text("\n".join(texts) + "\n", "utf-8")
    return texts


def _make_shards(
    directory: Path, tokenizer_dir: Path, texts: list[str], n_shards: int = 3, mask_every: int = 0
) -> dict:
    """Pack the texts (end-of-text between documents) into rows of ROW_TOKENS and write ``n_shards`` shards.

    ``mask_every`` > 0 sets labels at every ``mask_every``-th position to -100 (like input-only switching does).
    """
    tok = train_tokenizer([tokenizer_dir / "corpus.txt"], vocab_size=300)
    save_tokenizer(tok, tokenizer_dir / "tokenizer.json")
    info = tokenizer_info(tok)
    flat: list[int] = []
    for text in texts:
        flat.extend(tok.encode(text).ids)
        flat.append(info.eot_id)
    n_rows = len(flat) // ROW_TOKENS
    rows = []
    for r in range(n_rows):
        ids = np.array(flat[r * ROW_TOKENS : (r + 1) * ROW_TOKENS], dtype=np.int32)
        labels = ids.copy()
        if mask_every:
            labels[mask_every::mask_every] = -100
        rows.append((ids, labels, np.zeros(ROW_TOKENS, np.int8)))
    directory.mkdir(parents=True)
    per = -(-n_rows // n_shards)
    entries = [
        write_shard(directory / shard_name(i), rows_from_lists(rows[i * per : (i + 1) * per])) for i in range(n_shards)
    ]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tokenizer": {"path": str(tokenizer_dir / "tokenizer.json"), **info.to_dict()},
        "ratio": 0.0,
        "labels": "input-only",
        "row_tokens": ROW_TOKENS,
        "seq_len": ROW_TOKENS - 1,
        "shards": entries,
    }
    write_manifest(directory, manifest)
    return manifest


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pretrain")
    texts = _corpus(root / "corpus.txt")
    manifest = _make_shards(root / "shards", root, texts)
    masked = root / "masked"
    masked.mkdir()
    (masked / "corpus.txt").write_text((root / "corpus.txt").read_text("utf-8"), "utf-8")
    _make_shards(masked / "shards", masked, texts[:60], n_shards=2, mask_every=3)
    other = root / "other"
    other.mkdir()
    other_texts = _corpus(other / "corpus.txt", docs=200, seed=7)
    other_texts = [t.replace("the", "zhe").upper() for t in other_texts]
    (other / "corpus.txt").write_text("\n".join(other_texts) + "\n", "utf-8")
    _make_shards(other / "shards", other, other_texts, n_shards=2)
    return {
        "root": root,
        "shards": root / "shards",
        "manifest": manifest,
        "masked": masked / "shards",
        "other": other / "shards",
    }


BASE = PretrainConfig(
    steps=60,
    batch_size=8,
    lr=3e-3,
    warmup=5,
    eval_every=20,
    eval_batches=2,
    eval_fraction=0.34,
    log_every=1,
    save_every=0,
    device="cpu",
)


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]


@pytest.fixture(scope="module")
def full_run(data: dict) -> Path:
    run = data["root"] / "run-full"
    pretrain(data["shards"], run, BASE, progress=False)
    return run


def test_loss_falls_and_metrics_rows(full_run: Path) -> None:
    rows = read_metrics(full_run)
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 61))
    for r in train:
        assert {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "stage"} <= set(r)
        assert r["stage"] == "pretrain" and "mfu" not in r  # no MFU on CPU
        assert r["tokens_per_s"] > 0 and np.isfinite(r["grad_norm"])
    assert train[-1]["tokens"] == 60 * 8 * ROW_TOKENS
    first, last = np.mean([r["loss"] for r in train[:3]]), np.mean([r["loss"] for r in train[-3:]])
    assert last < 0.7 * first, (first, last)
    # warmup then cosine decay to min_lr
    assert train[0]["lr"] == pytest.approx(3e-3 / 5)
    assert train[4]["lr"] == pytest.approx(3e-3)
    assert train[-1]["lr"] == pytest.approx(3e-4)
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    info = checkpoint.read_run(full_run)
    assert info["stage"] == "pretrain" and info["step"] == 60
    assert info["tokenizer_sha256"] and info["tokenizer_path"].endswith("tokenizer.json")
    assert info["config"]["steps"] == 60
    state = json.loads((checkpoint.latest_checkpoint(full_run) / "state.json").read_text())
    assert state["step"] == 60 and set(state["data"]) == {"epoch", "rows_consumed"}


def test_resume_equals_uninterrupted_run(data: dict, full_run: Path) -> None:
    run = data["root"] / "run-resumed"
    half = pretrain(data["shards"], run, replace(BASE, save_every=7), progress=False, stop_after=30)
    assert half["step"] == 30 and not half["finished"]
    assert max(s for s, _ in _losses(run)) == 30
    # metrics written after the checkpoint (as if the process died there) are dropped on resume
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"stage": "pretrain", "step": 31, "loss": 99.0}) + "\n")
    out = pretrain(data["shards"], run, BASE, progress=False, resume=True)
    assert out["finished"]
    resumed, full = _losses(run), _losses(full_run)
    assert [s for s, _ in resumed] == [s for s, _ in full]
    np.testing.assert_allclose([v for _, v in resumed], [v for _, v in full], rtol=0, atol=1e-6)
    ev = lambda r: [(x["step"], x["eval_loss"]) for x in read_metrics(r) if "eval_loss" in x]  # noqa: E731
    assert [s for s, _ in ev(run)] == [s for s, _ in ev(full_run)]
    np.testing.assert_allclose([v for _, v in ev(run)], [v for _, v in ev(full_run)], atol=1e-6)
    a, _ = checkpoint.load_model(run)
    b, _ = checkpoint.load_model(full_run)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=k)


@contextmanager
def optimizer_rates() -> Iterator[list[float]]:
    """The learning rate of every optimizer step taken inside the block, read from the optimizer itself."""
    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: rates.append(opt.param_groups[0]["lr"]))
    try:
        yield rates
    finally:
        handle.remove()


def test_rate_of_every_optimizer_step_first_and_last_included(data: dict) -> None:
    # steps counted from 1: step k <= warmup has lr * k / warmup, then cosine to lr * min_lr_ratio at the last step
    cfg = replace(BASE, steps=8, warmup=3, lr=3e-3, min_lr_ratio=0.1, log_every=100, eval_every=0)
    floor = 3e-3 * 0.1
    cosine = [floor + 0.5 * (3e-3 - floor) * (1 + math.cos(math.pi * (k - 3) / 5)) for k in range(4, 9)]
    expected = [1e-3, 2e-3, 3e-3, *cosine]
    assert cosine[-1] == pytest.approx(3e-4) and cosine[0] < 3e-3
    with optimizer_rates() as rates:
        pretrain(data["shards"], data["root"] / "rates", cfg, progress=False)
    assert rates == pytest.approx(expected, rel=1e-12)
    # a resumed run takes the rates the uninterrupted one would have from the step after its checkpoint
    with optimizer_rates() as rates:
        pretrain(data["shards"], data["root"] / "rates-resumed", cfg, progress=False, stop_after=5)
        pretrain(data["shards"], data["root"] / "rates-resumed", cfg, progress=False, resume=True)
    assert rates == pytest.approx(expected, rel=1e-12)


def test_resume_without_checkpoint_fails(data: dict) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        pretrain(data["shards"], data["root"] / "nothing", BASE, progress=False, resume=True)


def test_init_run_tokenizer_mismatch_names_both_hashes(data: dict, full_run: Path) -> None:
    other_sha = json.loads((data["other"] / "manifest.json").read_text())["tokenizer"]["sha256"]
    run_sha = checkpoint.read_run(full_run)["tokenizer_sha256"]
    assert other_sha != run_sha
    with pytest.raises(InputError) as err:
        pretrain(data["other"], data["root"] / "mismatch", replace(BASE, steps=2), init_run=full_run, progress=False)
    assert other_sha in str(err.value) and run_sha in str(err.value)
    assert not (data["root"] / "mismatch" / "model.safetensors").exists()


def test_init_run_continues_from_its_weights(data: dict, full_run: Path) -> None:
    run = data["root"] / "from-init"
    pretrain(data["shards"], run, replace(BASE, steps=2, lr=0.0, warmup=0), init_run=full_run, progress=False)
    first = _losses(run)[0][1]
    assert first < 0.8 * _losses(full_run)[0][1]  # starts where the init run ended, not from scratch
    assert checkpoint.read_run(run)["init_run"] == str(full_run.resolve())


def test_minus_100_labels_carry_no_loss(data: dict, full_run: Path) -> None:
    shards = data["masked"]
    manifest = json.loads((shards / "manifest.json").read_text())
    init = full_run  # a trained model (same corpus, so the same tokenizer): per-position losses differ
    model, _ = checkpoint.load_model(init)
    split = split_rows(manifest, 0.5)
    n_rows = len(split.train_rows)
    rows = TrainStream(shards, split, seed=0).take(n_rows)
    ids = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.int64))
    labels = torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.int64))
    assert (labels == -100).any()
    # one step over every training row (order does not matter: the loss is a token-weighted mean)
    cfg = replace(BASE, steps=1, batch_size=n_rows // 2, grad_accum=2, eval_fraction=0.5)
    assert n_rows % 2 == 0
    run = data["root"] / "masked-run"
    pretrain(shards, run, cfg, init_run=init, progress=False)
    logged = _losses(run)[0][1]
    with torch.no_grad():
        logits = model(ids).logits[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    direct = F.cross_entropy(logits[keep], target[keep])
    assert logged == pytest.approx(float(direct), abs=1e-5)
    unmasked = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1))
    assert abs(float(unmasked) - logged) > 1e-3  # the masked positions really were left out


def test_cpu_uses_float32_and_split(data: dict) -> None:
    from prealign.train.pretrain import resolve_dtype

    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    out = pretrain(data["shards"], data["root"] / "short", replace(BASE, steps=2, device="auto"), progress=False)
    if not torch.cuda.is_available():
        assert out["device"] == "cpu" and out["dtype"] == "float32"
    model, _ = checkpoint.load_model(data["root"] / "short")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    manifest = json.loads((data["shards"] / "manifest.json").read_text())
    split = split_rows(manifest, 0.34)
    total = sum(e["rows"] for e in manifest["shards"])
    assert len(split.eval_rows) == round(0.34 * total) and len(split.train_rows) == total - len(split.eval_rows)
    assert sorted({*split.eval_rows.tolist(), *split.train_rows.tolist()}) == list(range(total))
    single = {"shards": [{"file": "a", "rows": 10}]}
    s = split_rows(single, 0.2)
    assert s.eval_rows.tolist() == [2, 7] and len(s.train_rows) == 8
    assert len(split_rows({"shards": [{"file": "a", "rows": 1}]}, 0.5).eval_rows) == 0  # one row: no evaluation


def test_plot_writes_png(data: dict, full_run: Path) -> None:
    out = plot_run(full_run)
    assert out == full_run / "loss.png"
    blob = out.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    # an align-init stage and a comparison of two runs
    staged = data["root"] / "staged"
    staged.mkdir()
    (staged / "metrics.jsonl").write_bytes((full_run / "metrics.jsonl").read_bytes())
    with open(staged / "metrics.jsonl", "a") as fh:
        for step in (1, 2, 3):
            fh.write(json.dumps({"stage": "align-init", "step": step, "loss": 5.0 - step}) + "\n")
    both = plot_run([staged, data["root"] / "run-resumed"], data["root"] / "cmp" / "both.png")
    assert both.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and both.stat().st_size > 5000
    with pytest.raises(InputError):
        plot_run(data["root"] / "no-such-run")


def test_a_two_file_switch_run_is_mixed_in_every_batch_and_in_evaluation(tmp_path: Path) -> None:
    """`switch a.txt b.txt` packs the inputs one after the other; training and evaluation must see both."""
    from conftest import cli, lexicon_frame

    from prealign.codeswitch.tokenizer import load_tokenizer
    from prealign.shards import ShardDataset
    from prealign.train.pretrain_data import eval_rows

    lower = _corpus(tmp_path / "a.txt", docs=400)
    upper = [t.upper() for t in _corpus(tmp_path / "unused.txt", docs=400, seed=3)]
    (tmp_path / "b.txt").write_text("\n".join(upper) + "\n", "utf-8")
    (tmp_path / "corpus.txt").write_text("\n".join(lower + upper) + "\n", "utf-8")
    tok = train_tokenizer([tmp_path / "corpus.txt"], vocab_size=300)
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    lexicon_frame([("cat", "CAT", 0.9, 0.9)]).write_parquet(tmp_path / "lex.parquet")
    shards = tmp_path / "shards"
    inputs = (tmp_path / "a.txt", tmp_path / "b.txt")
    cli("switch", *inputs, "--lexicon", tmp_path / "lex.parquet", "--tokenizer", tmp_path / "tokenizer.json",
        "--ratio", 0.05, "--seq-len", 32, "--shard-rows", 40, "-o", shards, "-q")  # fmt: skip
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")

    def source(ids: np.ndarray) -> str:
        text = tokenizer.decode(ids.tolist())
        return "b" if sum(c.isupper() for c in text) > sum(c.islower() for c in text) else "a"

    manifest = json.loads((shards / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 6
    all_rows = [r for s in manifest["shards"] for r in [read_rows(shards / s["file"], s["rows"])]]
    in_order = [
        source(rows.input_ids[rows.offsets[i] : rows.offsets[i + 1]]) for rows in all_rows for i in range(len(rows))
    ]
    assert in_order[:64].count("b") == 0  # the shards hold input a first, then input b

    split = split_rows(manifest, 0.05)
    first = TrainStream(shards, split, seed=0).take(64)
    counts = {s: sum(source(ids) == s for ids, _ in first) for s in "ab"}
    assert min(counts.values()) >= 16, counts  # both inputs among the first 64 training rows
    for batch in range(4):  # and in each batch of 16 (reading shard by shard gave batches of one input)
        assert {source(ids) for ids, _ in first[16 * batch : 16 * (batch + 1)]} == {"a", "b"}, batch
    dataset = iter(ShardDataset(shards, seed=0))
    dataset_first = [source(next(dataset)["input_ids"].numpy()) for _ in range(64)]
    assert min(dataset_first.count("a"), dataset_first.count("b")) >= 16
    held = [source(ids) for ids, _ in eval_rows(shards, split, 8)]
    assert held.count("a") >= 3 and held.count("b") >= 3  # evaluation reads both inputs too


def test_collate_pads_to_the_longest_row_on_cpu_and_to_a_multiple_of_8_for_a_gpu() -> None:
    from prealign.train.batches import collate, label_count, padded_length

    rows = [(np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int32)), (np.arange(3, dtype=np.int32),) * 2]
    ids, labels, tokens = collate(rows, max_len=256, pad_id=7)
    assert ids.shape == (2, 5) and tokens == 8 and label_count(labels) == 4 + 2
    assert ids[1].tolist() == [0, 1, 2, 7, 7] and labels[1].tolist() == [0, 1, 2, -100, -100]
    assert collate(rows, max_len=4)[0].shape == (2, 4)  # cut at the model's length
    assert [padded_length(n, 256) for n in (1, 8, 9, 129)] == [8, 8, 16, 136]
    assert padded_length(129, 130) == 130  # never beyond the model's length
