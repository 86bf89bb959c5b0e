"""``train eval``: the loss over every row of a shard directory against a per-row loss computed here, label tokens
counted, retrieval per layer, and the one-line errors (tokenizer mismatch, damaged shards, a moved tokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli, one_error_line, shard_rows
from test_pretrain import SUBJECTS, _corpus, _make_shards

from prealign.codeswitch.tokenizer import load_tokenizer
from prealign.shards import SCHEMA_VERSION, rows_from_lists, shard_name, write_manifest, write_shard
from prealign.train import checkpoint
from prealign.train.eval_run import lexicon_pairs
from prealign.train.model_metrics import rows_loss, translation_retrieval
from prealign.train.pretrain import PretrainConfig, pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEXICON_HEADER = "src\ttgt\tcount\tp_tgt_given_src\tp_src_given_tgt\tscore\n"
# a tiny model's max_seq_len is 256: the 300-token row makes the command widen it; the 1-token row has no label
RAGGED_LENGTHS = [1, 7, 300, 40, 2, 65, 260, 9, 33]


def _ragged_shards(directory: Path, manifest: dict, flat: list[int]) -> None:
    """Rows of RAGGED_LENGTHS (cut from ``flat``, labels -100 at every 4th position) in two shards, with the
    tokenizer record of ``manifest`` and no row_tokens (rows of one document each)."""
    rows, start = [], 0
    for n in RAGGED_LENGTHS:
        ids = np.array(flat[start : start + n], dtype=np.int32)
        labels = ids.copy()
        labels[3::4] = -100
        rows.append((ids, labels, np.zeros(n, np.int8)))
        start += n
    directory.mkdir(parents=True)
    entries = [write_shard(directory / shard_name(0), rows_from_lists(rows[:4]))]
    entries.append(write_shard(directory / shard_name(1), rows_from_lists(rows[4:])))
    write_manifest(
        directory,
        {"schema_version": SCHEMA_VERSION, "tokenizer": manifest["tokenizer"], "row_tokens": None, "shards": entries},
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Shards with -100 labels, a run pretrained on them, ragged shards of the same tokenizer, shards of another
    tokenizer, and a lexicon of the corpus's words with counts 1..N."""
    root = tmp_path_factory.mktemp("train-eval")
    texts = _corpus(root / "corpus.txt", docs=120)
    manifest = _make_shards(root / "shards", root, texts, n_shards=3, mask_every=3)
    run = root / "run"
    config = PretrainConfig(steps=6, batch_size=4, lr=3e-3, warmup=1, eval_every=0, save_every=0, device="cpu")
    pretrain(root / "shards", run, config, progress=False)
    flat = [i for row in shard_rows(root / "shards")[0] for i in row]
    _ragged_shards(root / "ragged", manifest, flat)
    other = root / "other"
    other.mkdir()
    other_texts = [t.replace("the", "zhe").upper() for t in _corpus(other / "corpus.txt", docs=80, seed=7)]
    (other / "corpus.txt").write_text("\n".join(other_texts) + "\n", "utf-8")
    _make_shards(other / "shards", other, other_texts, n_shards=2)
    words = sorted({w for s in SUBJECTS for w in s.split()} | {"sees", "likes", "eats", "apple", "ball", "house"})
    lexicon = root / "lexicon.tsv"
    rows = "".join(f"{w}\t{w.upper()}\t{k + 1}\t0.5\t0.5\t0.5\n" for k, w in enumerate(words))
    lexicon.write_text(LEXICON_HEADER + rows, "utf-8")
    return {"root": root, "run": run, "shards": root / "shards", "ragged": root / "ragged", "other": other / "shards",
            "other_tokenizer": other / "tokenizer.json", "lexicon": lexicon, "words": words}  # fmt: skip


def per_row_loss(run: Path, shards: Path) -> tuple[float, int]:
    """Token-weighted mean next-token loss computed here: the model over each row alone, no batching."""
    ids_rows, label_rows, _ = shard_rows(shards)
    model, _ = checkpoint.load_model(run, "cpu", max(len(r) for r in ids_rows))
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(ids_rows, label_rows, strict=True):
            logits = model(torch.tensor([ids], dtype=torch.long)).logits[0, :-1]
            target = torch.tensor(labels[1:], dtype=torch.long)
            keep = target != -100
            if keep.any():
                total += float(F.cross_entropy(logits[keep].double(), target[keep], reduction="sum"))
                count += int(keep.sum())
    return total / count, count


def eval_json(*args: object) -> dict:
    return json.loads(cli("train", "eval", "-q", *args, "--device", "cpu", "--json").stdout)


@pytest.mark.parametrize("which", ["shards", "ragged"])
def test_loss_equals_a_per_row_loss_over_every_row(data: dict, which: str) -> None:
    shards = data[which]
    expected, labelled = per_row_loss(data["run"], shards)
    ids_rows, label_rows, _ = shard_rows(shards)
    assert labelled == sum(sum(x != -100 for x in labels[1:]) for labels in label_rows)
    assert labelled < sum(len(r) - 1 for r in ids_rows)  # -100 labels are there, and left out
    out = eval_json(data["run"], "--shards", shards, "--batch-size", 3)  # batches cut across rows and shards
    assert out["loss"] == pytest.approx(expected, abs=1e-5)
    assert out["tokens"] == labelled and out["rows"] == len(ids_rows)
    assert "retrieval" not in out
    text = cli("train", "eval", "-q", data["run"], "--shards", shards, "--device", "cpu").stdout.splitlines()
    assert text == [f"loss {out['loss']:.4f}", f"tokens {labelled}"]


def test_rows_loss_restores_the_training_flag_and_has_no_loss_without_labels(data: dict) -> None:
    model, _ = checkpoint.load_model(data["run"])
    model.train()
    ids = np.arange(5, 12, dtype=np.int32)
    masked = np.full(7, -100, dtype=np.int32)
    assert rows_loss(model, [(ids, masked)] * 3, 2, 256, "cpu") == (None, 0)
    assert model.training
    loss, tokens = rows_loss(model, iter([(ids, ids), (ids[:1], ids[:1])]), 8, 256, "cpu")
    assert tokens == 6 and loss is not None and loss > 0  # a generator is read once; a 1-token row adds nothing


def test_lexicon_prints_one_line_per_layer(data: dict) -> None:
    res = cli(
        "train", "eval", "-q", data["run"], "--shards", data["shards"], "--lexicon", data["lexicon"], "--device", "cpu"
    )
    lines = res.stdout.splitlines()
    model, info = checkpoint.load_model(data["run"])
    pairs = [(w, w.upper()) for w in data["words"]]
    reference = translation_retrieval(model, load_tokenizer(info["tokenizer_path"]), pairs)
    n_layers = model.config.n_layers
    assert lines[2] == f"retrieval: {len(pairs)} pairs, chance {1 / len(pairs):.4f}"
    table = lines[4:]
    names = [line.rsplit(None, 3)[0] for line in table]
    # embedding, each block, and the LM head when it is not tied to the embedding (L + 1 or L + 2 layers)
    assert names == [r["name"] for r in reference] and len(names) in (n_layers + 1, n_layers + 2)
    assert names[: n_layers + 1] == ["embedding", *(f"block {i}" for i in range(1, n_layers + 1))]
    for line, ref in zip(table, reference, strict=True):
        accuracy, pair_cos, rand_cos = (float(x) for x in line.split()[-3:])
        assert 0 <= accuracy <= 1 and -1 <= pair_cos <= 1 and -1 <= rand_cos <= 1
        assert (line.split()[-3], line.split()[-2]) == (f"{ref['accuracy']:.4f}", f"{ref['pair_cosine']:.4f}")
    out = eval_json(data["run"], "--shards", data["shards"], "--lexicon", data["lexicon"])
    retrieval = out["retrieval"]
    assert retrieval["pairs"] == len(pairs) and retrieval["chance"] == pytest.approx(1 / len(pairs))
    assert [r["name"] for r in retrieval["layers"]] == names
    assert [f"{r['accuracy']:.4f}" for r in retrieval["layers"]] == [line.split()[-3] for line in table]


def test_max_pairs_keeps_the_highest_counts(data: dict) -> None:
    words = data["words"]  # counts 1..N in file order
    assert lexicon_pairs(data["lexicon"], 3) == [(w, w.upper()) for w in reversed(words[-3:])]
    assert len(lexicon_pairs(data["lexicon"], None)) == len(lexicon_pairs(data["lexicon"], 0)) == len(words)
    out = eval_json(data["run"], "--shards", data["ragged"], "--lexicon", data["lexicon"], "--max-pairs", 4)
    assert out["retrieval"]["pairs"] == 4 and out["retrieval"]["chance"] == pytest.approx(1 / 4)


def test_tokenizer_mismatch_is_one_line_naming_both(data: dict) -> None:
    run_sha = checkpoint.read_run(data["run"])["tokenizer_sha256"]
    other_sha = json.loads((data["other"] / "manifest.json").read_text())["tokenizer"]["sha256"]
    assert run_sha != other_sha
    res = cli("train", "eval", "-q", data["run"], "--shards", data["other"], "--device", "cpu", code=2)
    one_error_line(res, "tokenizer mismatch", run_sha, other_sha)
    assert res.stdout == ""


@pytest.mark.parametrize("damage", ["flipped byte", "missing"])
def test_a_damaged_shard_directory_is_one_line(data: dict, tmp_path: Path, damage: str) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    shard = shards / shard_name(1)
    if damage == "missing":
        shard.unlink()
    else:
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        shard.write_bytes(bytes(raw))
    res = cli("train", "eval", "-q", data["run"], "--shards", shards, "--device", "cpu", code=2)
    one_error_line(res, "damaged shard directory", shard_name(1), "missing" if damage == "missing" else "sha256")


def test_a_moved_or_changed_tokenizer_stops_retrieval(data: dict, tmp_path: Path) -> None:
    model, info = checkpoint.load_model(data["run"])
    moved, changed = tmp_path / "moved", tmp_path / "changed"
    checkpoint.save_model(moved, model, {**info, "tokenizer_path": str(tmp_path / "gone" / "tokenizer.json")})
    checkpoint.save_model(changed, model, {**info, "tokenizer_path": str(data["other_tokenizer"])})
    args = ("--shards", data["shards"], "--device", "cpu")
    assert cli("train", "eval", "-q", moved, *args).stdout.startswith("loss ")  # the loss needs no tokenizer
    res = cli("train", "eval", "-q", moved, *args, "--lexicon", data["lexicon"], code=2)
    one_error_line(res, "tokenizer cannot be loaded", "gone")
    res = cli("train", "eval", "-q", changed, *args, "--lexicon", data["lexicon"], code=2)
    one_error_line(res, "tokenizer changed", info["tokenizer_sha256"])
