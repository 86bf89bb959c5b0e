"""Code-switched shards read back: Hugging Face datasets, polars, the PyTorch dataset (shuffle, ranks, workers),
integrity checks, the nanoGPT export and the inspect report."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from prealign.codeswitch.export import export_nanogpt
from prealign.codeswitch.inspect_shards import inspect_ok, inspect_report, inspect_shards
from prealign.errors import InputError
from prealign.shards import (
    IGNORE_INDEX,
    SCHEMA,
    SCHEMA_VERSION,
    check_shards,
    check_tokenizer,
    iter_rows,
    plan_rows,
    read_manifest,
    read_rows,
    rows_from_lists,
    shard_name,
    write_manifest,
    write_shard,
)

ROW_TOKENS = 8
SHARD_ROWS = (7, 5, 9)
TEXT = [
    "the cat sat on the mat",
    "a big dog sat by the river bank",
    "the small potato is on the table",
    "le chat est assis sur le tapis",
    "un grand chien au bord de la rive",
    "la petite pomme de terre sur la banque table",
]
LEXICON = {
    "cat": ["chat"],
    "dog": ["chien"],
    "big": ["grand"],
    "small": ["petite"],
    "river": ["rive"],
    "bank": ["banque"],
    "mat": ["tapis"],
    "potato": ["pomme", "de", "terre"],
}
ENGLISH = sorted({w for s in TEXT[:3] for w in s.split()})


def make_tokenizer(path: Path) -> Tokenizer:
    """A word-level tokenizer trained on TEXT: ids 0 and 1 are end-of-text and padding."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<|endoftext|>", "<|pad|>", "[UNK]"])
    tok.train_from_iterator(TEXT, trainer)
    tok.save(str(path))
    return tok


def switch_words(tok: Tokenizer, words: list[str], switch: set[int]) -> tuple[np.ndarray, ...]:
    """Input-only switching of ``words`` at the positions in ``switch``, truncated to ROW_TOKENS."""
    ids, labels, switched = [], [], []
    for k, word in enumerate(words):
        if k in switch:
            new = [tok.token_to_id(w) for w in LEXICON[word]]
            ids += new
            labels += [tok.token_to_id(word)] + [IGNORE_INDEX] * (len(new) - 1)
            switched += [1] * len(new)
        else:
            ids.append(tok.token_to_id(word))
            labels.append(ids[-1])
            switched.append(0)
    return tuple(np.array(a[:ROW_TOKENS]) for a in (ids, labels, switched))


def make_rows(tok: Tokenizer, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, ...]]:
    rows = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(ENGLISH, size=ROW_TOKENS)]
        switch = {k for k, w in enumerate(words) if w in LEXICON and rng.random() < 0.5}
        rows.append(switch_words(tok, words, switch))
    return rows


def write_dir(directory: Path, tok: Tokenizer, tok_path: Path, rows: list[tuple[np.ndarray, ...]]) -> None:
    """Shards of SHARD_ROWS rows and a manifest like the switch job's."""
    directory.mkdir(parents=True)
    entries, start = [], 0
    for i, n in enumerate(SHARD_ROWS):
        entries.append(write_shard(directory / shard_name(i), rows_from_lists(rows[start : start + n])))
        start += n
    switched_words = sum(int(r[2][0]) + int(np.count_nonzero(np.diff(r[2]) == 1)) for r in rows)
    write_manifest(
        directory,
        {
            "schema_version": SCHEMA_VERSION,
            "format": "arrow-ipc-stream",
            "tool": "prealign-data",
            "version": "0.1.0",
            "tokenizer": {
                "path": str(tok_path),
                "sha256": hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest(),
                "vocab_size": tok.get_vocab_size(),
                "eot_id": 0,
                "pad_id": 1,
            },
            "lexicon": {"path": "/nowhere/lexicon.parquet", "sha256": "0" * 64, "entries": len(LEXICON)},
            "ratio": 0.5,
            "seed": 0,
            "choice": "weighted",
            "labels": "input-only",
            "seq_len": ROW_TOKENS - 1,
            "packed": True,
            "row_tokens": ROW_TOKENS,
            "totals": {
                "documents": len(rows),
                "words": len(rows) * ROW_TOKENS,
                "words_with_entry": 77,
                "words_switched": switched_words,
                "tokens": sum(e["tokens"] for e in entries),
                "rows": len(rows),
            },
            "rates": {"switched_per_word_with_entry": switched_words / 77, "switched_per_word": 0.1},
            "shards": entries,
        },
    )


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three shards (7, 5 and 9 rows of 8 tokens); row 0 is 'the potato sat on the cat' with both switched."""
    base = tmp_path_factory.mktemp("shards")
    tok = make_tokenizer(base / "tokenizer.json")
    first = switch_words(tok, ["the", "potato", "sat", "on", "the", "cat"], {1, 5})
    rows = [first, *make_rows(tok, sum(SHARD_ROWS) - 1, np.random.default_rng(0))]
    assert len({tuple(r[0]) for r in rows}) == len(rows)  # rows are told apart by their input_ids
    write_dir(base / "out", tok, base / "tokenizer.json", rows)
    return base / "out"


@pytest.fixture
def damaged_copy(shard_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    return copy


def all_rows(directory: Path) -> list[dict[str, np.ndarray]]:
    return list(iter_rows(directory))


def key(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(x) for x in row["input_ids"])


# --- other readers ----------------------------------------------------------------------------------------------


def test_row_zero_is_input_only_switching(shard_dir: Path) -> None:
    row = all_rows(shard_dir)[0]
    tok = Tokenizer.from_file(str(shard_dir.parent / "tokenizer.json"))
    assert [tok.id_to_token(int(i)) for i in row["input_ids"]] == "the pomme de terre sat on the chat".split()
    labels = [tok.id_to_token(int(i)) if i != IGNORE_INDEX else None for i in row["labels"]]
    assert labels == ["the", "potato", None, None, "sat", "on", "the", "cat"]
    assert row["switched"].tolist() == [0, 1, 1, 1, 0, 0, 0, 1]
    assert row["input_ids"].dtype == np.int32 and row["switched"].dtype == np.int8


def test_hugging_face_datasets_reads_the_shards(
    shard_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    files = [str(shard_dir / e["file"]) for e in read_manifest(shard_dir)["shards"]]
    ds = datasets.load_dataset("arrow", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["input_ids", "labels", "switched"]
    assert len(ds) == sum(SHARD_ROWS)
    expected = all_rows(shard_dir)
    for got, want in zip(ds, expected, strict=True):
        assert got["input_ids"] == want["input_ids"].tolist()
        assert got["labels"] == want["labels"].tolist()
        assert got["switched"] == want["switched"].tolist()
    assert IGNORE_INDEX in ds[0]["labels"]


def test_polars_reads_a_shard(shard_dir: Path) -> None:
    df = pl.read_ipc_stream(shard_dir / shard_name(0))
    assert df.columns == ["input_ids", "labels", "switched"] and df.height == SHARD_ROWS[0]
    first = all_rows(shard_dir)[0]
    assert df["input_ids"][0].to_list() == first["input_ids"].tolist()
    assert df["labels"][0].to_list() == first["labels"].tolist()


def test_read_rows_takes_several_record_batches(tmp_path: Path, shard_dir: Path) -> None:
    table = pa.concat_tables([pa.ipc.open_stream(pa.OSFile(str(shard_dir / shard_name(i)))).read_all() for i in (0, 1)])
    path = tmp_path / "multi.arrow"
    with pa.OSFile(str(path), "wb") as fh, pa.ipc.new_stream(fh, SCHEMA) as writer:
        writer.write_table(table.slice(1), max_chunksize=3)
    rows = read_rows(path, SHARD_ROWS[0] + SHARD_ROWS[1] - 1)
    expected = all_rows(shard_dir)[1 : SHARD_ROWS[0] + SHARD_ROWS[1]]
    assert rows.offsets[0] == 0 and len(rows.input_ids) == rows.offsets[-1]
    for r, want in enumerate(expected):
        assert rows.input_ids[rows.offsets[r] : rows.offsets[r + 1]].tolist() == want["input_ids"].tolist()
        assert rows.labels[rows.offsets[r] : rows.offsets[r + 1]].tolist() == want["labels"].tolist()
    with pytest.raises(InputError, match="manifest says 3"):
        read_rows(path, 3)


# --- the PyTorch dataset ----------------------------------------------------------------------------------------


def test_importing_shards_does_not_import_torch() -> None:
    code = "import sys, prealign.shards; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_shuffle_is_manifest_order(shard_dir: Path) -> None:
    import torch

    from prealign.shards import ShardDataset

    ds = ShardDataset(shard_dir, shuffle=False)
    got = list(ds)
    assert [key(r) for r in got] == [key(r) for r in all_rows(shard_dir)]
    assert len(ds) == sum(SHARD_ROWS)
    row = got[0]
    assert row["input_ids"].dtype == torch.long and row["labels"].dtype == torch.long
    assert row["switched"].dtype == torch.bool
    assert row["labels"].tolist() == all_rows(shard_dir)[0]["labels"].tolist()  # -100 kept
    assert (row["labels"] == IGNORE_INDEX).sum().item() == 2


def test_shuffle_is_deterministic_per_seed_and_epoch(shard_dir: Path) -> None:
    from prealign.shards import ShardDataset

    everything = sorted(key(r) for r in all_rows(shard_dir))
    a = [key(r) for r in ShardDataset(shard_dir, seed=5)]
    assert sorted(a) == everything
    assert a == [key(r) for r in ShardDataset(shard_dir, seed=5)]
    assert a != [key(r) for r in all_rows(shard_dir)]
    assert a != [key(r) for r in ShardDataset(shard_dir, seed=6)]
    ds = ShardDataset(shard_dir, seed=5)
    ds.set_epoch(1)
    b = [key(r) for r in ds]
    assert sorted(b) == everything and b != a
    assert b == [key(r) for r in ShardDataset(shard_dir, seed=5, epoch=1)]


def test_ranks_and_workers_split_every_row_once(shard_dir: Path) -> None:
    from torch.utils.data import DataLoader

    from prealign.shards import ShardDataset

    everything = sorted(key(r) for r in all_rows(shard_dir))
    seen = []
    for rank in range(2):
        ds = ShardDataset(shard_dir, seed=3, epoch=2, rank=rank, world_size=2)
        with_workers = [key(r) for r in DataLoader(ds, batch_size=None, num_workers=2)]
        in_process = [key(r) for r in DataLoader(ds, batch_size=None, num_workers=0)]
        assert with_workers == in_process  # a rank's rows (and order) do not depend on its workers
        assert len(with_workers) == len(ds)
        seen += with_workers
    assert sorted(seen) == everything  # disjoint ranks, every row once
    # the 4 parts of the (rank, worker) grid are disjoint and cover the epoch's order
    parts = [
        list(
            zip(
                *(a.tolist() for a in plan_rows(SHARD_ROWS, shuffle=True, seed=3, epoch=2, part=p, parts=4)),
                strict=True,
            )
        )
        for p in range(4)
    ]
    flat = [x for part in parts for x in part]
    assert len(flat) == len(set(flat)) == sum(SHARD_ROWS)
    assert [len(p) for p in parts] == [6, 5, 5, 5]


def test_drop_last_and_batches(shard_dir: Path) -> None:
    from torch.utils.data import DataLoader

    from prealign.shards import ShardDataset

    lengths = [len(list(ShardDataset(shard_dir, rank=r, world_size=2, drop_last=True))) for r in range(2)]
    assert lengths == [10, 10]
    batch = next(iter(DataLoader(ShardDataset(shard_dir, shuffle=False), batch_size=4)))
    assert tuple(batch["input_ids"].shape) == (4, ROW_TOKENS)
    assert batch["labels"][0].tolist() == all_rows(shard_dir)[0]["labels"].tolist()


def test_dataset_pickles_and_checks_rank(shard_dir: Path) -> None:
    from prealign.shards import ShardDataset

    ds = ShardDataset(shard_dir, seed=1, rank=1, world_size=3)
    copy = pickle.loads(pickle.dumps(ds))
    assert type(copy) is ShardDataset and [key(r) for r in copy] == [key(r) for r in ds]
    with pytest.raises(ValueError, match="rank"):
        ShardDataset(shard_dir, rank=2, world_size=2)


def test_dataset_refuses_a_shard_with_other_row_count(damaged_copy: Path) -> None:
    from prealign.shards import ShardDataset

    manifest = read_manifest(damaged_copy)
    manifest["shards"][1]["rows"] += 1
    write_manifest(damaged_copy, manifest)
    with pytest.raises(InputError, match="manifest says 6"):
        list(ShardDataset(damaged_copy, shuffle=False))


# --- checks -----------------------------------------------------------------------------------------------------


def test_check_shards_sees_a_changed_byte_and_a_missing_file(shard_dir: Path, damaged_copy: Path) -> None:
    assert check_shards(shard_dir) == [] and inspect_ok(shard_dir)
    path = damaged_copy / shard_name(0)
    data = bytearray(path.read_bytes())
    first = all_rows(shard_dir)[0]["input_ids"]
    at = bytes(data).find(first.astype("<i4").tobytes())
    assert at > 0
    data[at] ^= 1  # still a valid shard, with one token id changed
    path.write_bytes(bytes(data))
    assert check_shards(damaged_copy) == [f"{shard_name(0)}: sha256 differs from the manifest"]
    (damaged_copy / shard_name(2)).unlink()
    assert check_shards(damaged_copy)[1:] == [f"{shard_name(2)}: missing"]
    assert not inspect_ok(damaged_copy)
    inspection = inspect_shards(damaged_copy, rows=1)
    assert not inspection.ok and "FAILED, 2 problem(s)" in inspection.report
    assert f"{shard_name(2)}: missing" in inspection.report


def test_check_tokenizer(shard_dir: Path) -> None:
    sha = read_manifest(shard_dir)["tokenizer"]["sha256"]
    assert check_tokenizer(shard_dir, sha)["vocab_size"] == read_manifest(shard_dir)["tokenizer"]["vocab_size"]
    with pytest.raises(InputError, match="another tokenizer"):
        check_tokenizer(shard_dir, "f" * 64)


# --- nanoGPT export ---------------------------------------------------------------------------------------------


def test_export_nanogpt(shard_dir: Path, tmp_path: Path) -> None:
    meta = export_nanogpt(shard_dir, tmp_path / "nano", val_fraction=0.1)
    rows = all_rows(shard_dir)
    n_val = 2  # round(0.1 * 21): the last two rows, whole
    train_ids, val_ids = (np.concatenate([r["input_ids"] for r in part]) for part in (rows[:-n_val], rows[-n_val:]))
    train_labels, val_labels = (np.concatenate([r["labels"] for r in part]) for part in (rows[:-n_val], rows[-n_val:]))
    assert meta["dtype"] == "uint16" and meta["warnings"] == []
    nano = tmp_path / "nano"
    assert np.array_equal(np.fromfile(nano / "train.bin", dtype="<u2"), train_ids)
    assert np.array_equal(np.fromfile(nano / "val.bin", dtype="<u2"), val_ids)
    assert np.array_equal(np.fromfile(nano / "train_labels.bin", dtype="<i4"), train_labels)
    assert np.array_equal(np.fromfile(nano / "val_labels.bin", dtype="<i4"), val_labels)
    on_disk = json.loads((nano / "meta.json").read_text())
    assert on_disk == meta
    manifest = read_manifest(shard_dir)
    assert meta["vocab_size"] == manifest["tokenizer"]["vocab_size"]
    with open(nano / "meta.pkl", "rb") as fh:  # what nanoGPT's train.py reads
        assert pickle.load(fh) == {"vocab_size": manifest["tokenizer"]["vocab_size"]}
    assert (meta["eot_id"], meta["pad_id"]) == (0, 1)
    assert meta["tokens"] == sum(SHARD_ROWS) * ROW_TOKENS and meta["rows"] == sum(SHARD_ROWS)
    assert (meta["train_rows"], meta["val_rows"]) == (sum(SHARD_ROWS) - n_val, n_val)
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train_ids), len(val_ids))
    assert meta["source_manifest_sha256"] == hashlib.sha256((shard_dir / "manifest.json").read_bytes()).hexdigest()
    assert (meta["labels_dtype"], meta["ignore_index"]) == ("int32", -100)
    assert sorted(p.name for p in nano.iterdir()) == [
        "meta.json", "meta.pkl", "train.bin", "train_labels.bin", "val.bin", "val_labels.bin"
    ]  # fmt: skip
    # deterministic: the same shards and fraction give the same bytes; the default fraction keeps one row
    again = export_nanogpt(shard_dir, tmp_path / "again", val_fraction=0.1)
    assert again == meta | {"source": again["source"]}
    for name in ("train.bin", "val.bin", "train_labels.bin", "val_labels.bin", "meta.pkl"):
        assert (tmp_path / "again" / name).read_bytes() == (nano / name).read_bytes()
    assert export_nanogpt(shard_dir, tmp_path / "default")["val_rows"] == 1


def test_export_nanogpt_uint32_for_a_large_vocabulary(damaged_copy: Path, tmp_path: Path) -> None:
    manifest = read_manifest(damaged_copy)
    manifest["tokenizer"]["vocab_size"] = 70000
    write_manifest(damaged_copy, manifest)
    meta = export_nanogpt(damaged_copy, tmp_path / "nano")
    ids = np.concatenate([r["input_ids"] for r in all_rows(damaged_copy)[:-1]])
    assert meta["dtype"] == "uint32"
    assert np.array_equal(np.fromfile(tmp_path / "nano" / "train.bin", dtype="<u4"), ids)
    assert len(meta["warnings"]) == 1 and "np.uint16 to np.uint32 in get_batch()" in meta["warnings"][0]


def test_export_nanogpt_refuses_bad_input(damaged_copy: Path, tmp_path: Path) -> None:
    manifest = read_manifest(damaged_copy)
    manifest["tokenizer"]["vocab_size"] = 3
    write_manifest(damaged_copy, manifest)
    with pytest.raises(InputError, match="outside"):
        export_nanogpt(damaged_copy, tmp_path / "a")
    assert not (tmp_path / "a").exists() or list((tmp_path / "a").iterdir()) == []
    (damaged_copy / shard_name(1)).unlink()
    with pytest.raises(InputError, match="unsound shard directory.*missing"):
        export_nanogpt(damaged_copy, tmp_path / "b")
    assert not (tmp_path / "b").exists()


# --- inspect ----------------------------------------------------------------------------------------------------


def test_inspect_report_decodes_and_marks_switched_words(shard_dir: Path) -> None:
    report = inspect_report(shard_dir, rows=2)
    manifest = read_manifest(shard_dir)
    assert f"words_switched {manifest['totals']['words_switched']}" in report
    assert "rows 21" in report and "labels input-only" in report and "ratio 0.5" in report
    assert "checks:    OK" in report
    assert f"{shard_name(2)}  9 rows  72 tokens" in report
    assert "input : the [[pomme de terre]] sat on the [[chat]]\n" in report
    assert "labels: the potato[-100 x2] sat on the cat\n" in report
    assert report.count("  input : ") == 2


def test_inspect_report_without_tokenizer_shows_ids(shard_dir: Path, tmp_path: Path) -> None:
    report = inspect_report(shard_dir, rows=1, tokenizer_path=tmp_path / "missing.json")
    assert "showing token ids: cannot load tokenizer" in report
    ids = all_rows(shard_dir)[0]["input_ids"].tolist()
    assert f"input : {ids[0]} [[{ids[1]} {ids[2]} {ids[3]}]] {ids[4]} {ids[5]} {ids[6]} [[{ids[7]}]]" in report
