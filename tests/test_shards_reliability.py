"""Shard directories under bad input and faults: a rerun of a finished switch, outputs checked before work,
hostile or broken manifests, Hugging Face datasets loading, the nanoGPT export's files, progress against the
input size, lexicon words with tabs or line breaks, empty tokenizer corpora, a disk that fills up."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner, Result
from conftest import cli, files_in
from test_switch_job import Assets, lexicon_frame, sentences, snapshot
from tqdm import tqdm

from prealign.cli import main
from prealign.errors import InputError
from prealign.shards import CARD, MANIFEST, iter_rows, read_manifest, write_manifest


def run(*args: object) -> Result:
    """The command line in process, exceptions caught (a traceback is a failure of the test, not of pytest)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result: Result, *needles: str) -> str:
    """The one error line of a command that exited 2, holding every needle."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("reliability-assets"))


def switch_args(assets: Assets, out: Path, *extra: object, corpus: Path | None = None) -> list[object]:
    return [
        "switch", corpus or assets.corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer,
        "--ratio", 0.3, "--seq-len", 15, "--shard-rows", 5, "-o", out, "--workers", 0, "-q", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def shards(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished switch run (read-only: copy before changing)."""
    out = tmp_path_factory.mktemp("reliability-shards") / "shards"
    cli(*switch_args(assets, out))
    return out


def copy_of(shards: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    return copy


# --- 1. rerunning a finished switch job ------------------------------------------------------------------------


def test_rerun_of_a_finished_switch_is_a_no_op(assets: Assets, shards: Path, tmp_path: Path) -> None:
    out = copy_of(shards, tmp_path)
    stale = out / f".{MANIFEST}.k1ll3d.tmp"  # what a write killed half-way leaves
    stale.write_bytes(b"half a manifest")
    theirs = out / ".notes.txt.abc.tmp"  # not a name the job writes: left alone
    theirs.write_bytes(b"mine")
    before = {p: p.stat().st_mtime_ns for p in out.iterdir() if p != stale}
    result = cli(*switch_args(assets, out))
    assert result.stdout == f"switch: already done (same inputs and options; shards checked) -> {out}\n"
    assert not stale.exists() and theirs.read_bytes() == b"mine"
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten

    # this run's shards, damaged: said so, and --overwrite writes them again
    shard = out / read_manifest(out)["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    one_line(run(*switch_args(assets, out)), str(out), "damaged", "sha256", "--overwrite")
    cli(*switch_args(assets, out, "--overwrite"))
    assert snapshot(out) == snapshot(shards) | {theirs.name: b"mine"}

    # another run's output (another ratio) still needs --overwrite
    one_line(run(*switch_args(assets, out, "--ratio", 0.6)), str(out), "another run", "--overwrite")


# --- 2. outputs checked before any work ------------------------------------------------------------------------


def test_outputs_that_are_inputs_are_refused_before_any_work(assets: Assets, shards: Path, tmp_path: Path) -> None:
    # switch into the directory that holds its corpus
    holder = tmp_path / "holder"
    holder.mkdir()
    corpus = holder / "corpus.txt"
    shutil.copy(assets.corpus, corpus)
    one_line(run(*switch_args(assets, holder, corpus=corpus)), str(holder), "-o", "input")
    assert files_in(holder) == ["corpus.txt"]
    # export into the shard directory itself (its files would sit beside the shards)
    copy = copy_of(shards, tmp_path)
    before = snapshot(copy)
    one_line(run("export", copy, "-o", copy), str(copy), "-o")
    assert snapshot(copy) == before
    # tokenizer train -o its own corpus
    text = tmp_path / "b.txt"
    text.write_text("\n".join(sentences(50, 1)) + "\n", encoding="utf-8")
    content = text.read_bytes()
    one_line(run("tokenizer", "train", text, "--vocab-size", 300, "-o", text, "-q"), str(text), "input")
    assert text.read_bytes() == content
    # tokenizer train -o an existing directory
    one_line(run("tokenizer", "train", text, "--vocab-size", 300, "-o", tmp_path, "-q"), str(tmp_path), "directory")


# --- 3. manifests that point outside the directory, or are broken ----------------------------------------------

BAD_ENTRIES = {  # shard entry -> a bad one, given the absolute path of a sound shard outside the directory
    "parent": lambda e, outside: e | {"file": "../outside-shard.arrow"},
    "absolute": lambda e, outside: e | {"file": str(outside)},
    "passwd": lambda e, outside: e | {"file": "../../../../../etc/passwd"},
    "subdirectory": lambda e, outside: e | {"file": "sub/shard-00000.arrow"},
    "null": lambda e, outside: None,
    "rows string": lambda e, outside: e | {"rows": str(e["rows"])},
    "rows negative": lambda e, outside: e | {"rows": -1},
    "rows bool": lambda e, outside: e | {"rows": True},
    "tokens string": lambda e, outside: e | {"tokens": "many"},
    "missing key": lambda e, outside: {k: v for k, v in e.items() if k != "sha256"},
}
BAD_MANIFESTS = {
    "future schema": lambda m: m | {"schema_version": 2},
    "schema bool": lambda m: m | {"schema_version": True},
    "vocab zero": lambda m: m | {"tokenizer": m["tokenizer"] | {"vocab_size": 0}},
    "vocab string": lambda m: m | {"tokenizer": m["tokenizer"] | {"vocab_size": "300"}},
    "vocab bool": lambda m: m | {"tokenizer": m["tokenizer"] | {"vocab_size": True}},
    "shards not a list": lambda m: m | {"shards": {"file": "shard-00000.arrow"}},
    "not an object": lambda m: [m],
}


def hostile_copies(shards: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A copy of ``shards`` per bad manifest. The path-traversal cases name a sound shard that exists outside the
    directory (at ``../outside-shard.arrow``) and record its true sha256, so only the name gives them away."""
    manifest = read_manifest(shards)
    for name in [*BAD_ENTRIES, *BAD_MANIFESTS]:
        copy = tmp_path / name.replace(" ", "-") / "shards"
        shutil.copytree(shards, copy)
        outside = copy.parent / "outside-shard.arrow"
        shutil.copy(shards / "shard-00000.arrow", outside)
        if name in BAD_ENTRIES:
            bad = {**manifest, "shards": [BAD_ENTRIES[name](manifest["shards"][0], outside), *manifest["shards"][1:]]}
        else:
            bad = BAD_MANIFESTS[name](manifest)
        (copy / MANIFEST).write_text(json.dumps(bad), encoding="utf-8")
        (copy / "shard-00000.arrow").unlink()  # so that a reader that follows the name reads the outside one
        yield name, copy


def test_a_hostile_or_broken_manifest_is_refused_by_every_reader(shards: Path, tmp_path: Path) -> None:
    from prealign.shards import ShardDataset

    for name, copy in hostile_copies(shards, tmp_path / "cases"):
        line = one_line(run("inspect", copy), f"{copy / MANIFEST}: bad manifest")
        assert "shards[0]" in line or name in BAD_MANIFESTS, (name, line)
        one_line(run("export", copy, "-o", tmp_path / "nano"), f"{copy / MANIFEST}: bad manifest")
        assert not (tmp_path / "nano").exists(), name
        for read in (lambda d: list(iter_rows(d)), ShardDataset):
            with pytest.raises(InputError, match="bad manifest") as exc:
                read(copy)
            assert exc.value.path == str(copy / MANIFEST), name
    # an unreadable manifest is exit 2 for inspect too; shards that do not match a sound manifest stay exit 1
    copy = copy_of(shards, tmp_path)
    (copy / MANIFEST).write_text("{not json", encoding="utf-8")
    one_line(run("inspect", copy), str(copy / MANIFEST), "unreadable manifest")
    shutil.copy(shards / MANIFEST, copy / MANIFEST)
    (copy / "shard-00001.arrow").unlink()
    result = run("inspect", copy)
    assert result.exit_code == 1 and "shard-00001.arrow: missing" in result.stdout


# --- 4. Hugging Face datasets ------------------------------------------------------------------------------------


def test_hugging_face_datasets_loads_a_switch_output(
    shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands docs/switching.md and docs/formats.md show, run for real."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    want = [row["input_ids"].tolist() for row in iter_rows(shards)]
    SHARDS = shards  # noqa: N806 - the name the docs use
    loaded = {
        "data_files glob": datasets.load_dataset("arrow", data_files=str(SHARDS / "shard-*.arrow"), split="train"),
        "directory (dataset card)": datasets.load_dataset(str(SHARDS), split="train"),
        "data_dir + data_files": datasets.load_dataset(
            "arrow", data_dir=str(SHARDS), data_files="shard-*.arrow", split="train"
        ),
    }
    for how, ds in loaded.items():
        assert ds.column_names == ["input_ids", "labels", "switched"], how
        assert ds["input_ids"] == want, how  # every row, in manifest order
    card = (shards / CARD).read_text("utf-8")
    assert card.startswith("---\nconfigs:\n") and "path: shard-*.arrow" in card


def test_two_shard_directories_of_one_name_load_their_own_rows(
    assets: Assets, shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datasets caches a card-configured directory by its name and config: two ``shards/`` directories of the
    same shape (another seed: same rows, same bytes) must not be handed each other's rows from one cache."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    other = tmp_path / "shards"
    cli(*switch_args(assets, other, "--seed", 7))
    for directory in (shards, other):
        want = [row["input_ids"].tolist() for row in iter_rows(directory)]
        assert datasets.load_dataset(str(directory), split="train")["input_ids"] == want, directory
    assert [r["input_ids"].tolist() for r in iter_rows(shards)] != [r["input_ids"].tolist() for r in iter_rows(other)]


# --- 5. nanoGPT export ------------------------------------------------------------------------------------------


def test_export_gives_stock_nanogpt_what_it_reads(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "nano"
    result = cli("export", shards, "-o", out, "--val-fraction", 0.2)
    assert "train.bin, val.bin" in result.stdout
    rows = [r["input_ids"] for r in iter_rows(shards)]
    n_val = round(0.2 * len(rows))
    # what nanoGPT's train.py does: meta.pkl's vocab_size, np.memmap(..., dtype=np.uint16) of train.bin/val.bin
    with open(out / "meta.pkl", "rb") as fh:
        assert pickle.load(fh)["vocab_size"] == read_manifest(shards)["tokenizer"]["vocab_size"]
    train = np.memmap(out / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(out / "val.bin", dtype=np.uint16, mode="r")
    assert np.array_equal(train, np.concatenate(rows[:-n_val])) and np.array_equal(val, np.concatenate(rows[-n_val:]))
    assert len(np.memmap(out / "val_labels.bin", dtype=np.int32, mode="r")) == len(val)
    # a fraction that leaves no training row: one line, nothing created
    one_line(run("export", shards, "-o", tmp_path / "none", "--val-fraction", 0.999), "--val-fraction")
    assert not (tmp_path / "none").exists()


def test_export_says_loudly_what_stock_nanogpt_needs_for_a_large_vocabulary(shards: Path, tmp_path: Path) -> None:
    copy = copy_of(shards, tmp_path)
    manifest = read_manifest(copy)
    manifest["tokenizer"]["vocab_size"] = 70_000
    write_manifest(copy, manifest)
    result = run("export", copy, "-o", tmp_path / "nano")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("warning: vocab_size 70,000 does not fit in uint16")
    assert "np.uint16 to np.uint32 in get_batch()" in result.stderr
    assert json.loads((tmp_path / "nano" / "meta.json").read_text())["dtype"] == "uint32"


def test_export_rerun_removes_only_its_own_temporaries(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "nano"
    out.mkdir()
    ours = [out / ".train.bin.x1.tmp", out / ".meta.json.x2.tmp", out / ".val_labels.bin.x3.tmp"]
    for p in ours:
        p.write_bytes(b"killed")
    (out / ".other.bin.x4.tmp").write_bytes(b"not the export's")
    cli("export", shards, "-o", out)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".other.bin.x4.tmp"]


# --- 6. progress against the input's size ------------------------------------------------------------------------


def test_switch_progress_shows_bytes_of_the_input(assets: Assets, tmp_path: Path) -> None:
    args = [a for a in switch_args(assets, tmp_path / "out") if a != "-q"]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    total = tqdm.format_sizeof(assets.corpus.stat().st_size, divisor=1024)
    assert "100%" in result.stderr and f"/{total} " in result.stderr, result.stderr


# --- 7. lexicon words holding tabs or line breaks ---------------------------------------------------------------


def test_lexicon_words_with_tabs_or_line_breaks_are_refused(assets: Assets, tmp_path: Path) -> None:
    # written as another tool would (our own writer refuses such words)
    rows = [("dog", "chien", 0.9, 0.8), ("cat", "chat", 1.0, 0.9), ("house", "mai\tson", 1.0, 0.9)]
    parquet = tmp_path / "tab.parquet"
    lexicon_frame(rows).write_parquet(parquet)
    jsonl = tmp_path / "newline.jsonl"
    lexicon_frame([("dog", "chien", 0.9, 0.8), ("gre\nen", "vert", 0.7, 0.6)]).write_ndjson(jsonl)
    assert pl.read_ndjson(jsonl)["src"][1] == "gre\nen"
    for lexicon, row, column in ((parquet, 3, "tgt"), (jsonl, 2, "src")):
        out = tmp_path / f"out-{lexicon.suffix[1:]}"
        one_line(run(*switch_args(assets, out, "--lexicon", lexicon)), f"{lexicon}: row {row}: {column} word")
        assert not out.exists()


# --- 8. empty tokenizer corpus; a tokenizer that does not match the manifest -------------------------------------


def test_tokenizer_train_refuses_an_empty_corpus(tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n", encoding="utf-8")
    one_line(run("tokenizer", "train", blank, "--vocab-size", 300, "-o", tmp_path / "tok.json", "-q"),
             str(blank), "empty corpus")  # fmt: skip
    assert files_in(tmp_path) == ["blank.txt"]


def test_a_tokenizer_or_ids_that_do_not_match_the_manifest(assets: Assets, shards: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited.json"
    tok = json.loads(assets.tokenizer.read_text("utf-8"))
    tok["model"]["vocab"] = {k: v for k, v in tok["model"]["vocab"].items() if v < 300}
    tok["model"]["merges"] = []
    edited.write_text(json.dumps(tok), encoding="utf-8")
    one_line(run("inspect", shards, "--tokenizer", edited), str(edited), "not the one the shards were made with")
    # the manifest's vocab_size edited below the ids the shards hold: a check that fails, and no export
    copy = copy_of(shards, tmp_path)
    manifest = read_manifest(copy)
    manifest["tokenizer"]["vocab_size"] = 5
    write_manifest(copy, manifest)
    result = run("inspect", copy, "--rows", 0)
    assert result.exit_code == 1 and "outside [0, 5)" in result.stdout
    one_line(run("export", copy, "-o", tmp_path / "nano"), "outside [0, 5)")
    assert not (tmp_path / "nano").exists()


# --- 9. a disk that fills up ------------------------------------------------------------------------------------


def no_temporaries(directory: Path) -> bool:
    return not any(p.name.endswith(".tmp") for p in directory.rglob("*"))


def test_disk_full_during_switch_and_export(assets: Assets, tmp_path: Path, small_disk: Path) -> None:
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n".join(sentences(4000, 7)) + "\n", encoding="utf-8")
    reference = tmp_path / "reference"
    cli(*switch_args(assets, reference, "--shard-rows", 100, corpus=corpus))
    out = small_disk / "shards"
    one_line(run(*switch_args(assets, out, "--shard-rows", 100, corpus=corpus)), "no space left on device")
    # no shard, manifest or temporary file in the output; the finished shards wait in the work directory
    assert [p.name for p in out.iterdir()] == [".work"] and no_temporaries(small_disk)
    assert any(p.name.startswith("shard-") for p in (out / ".work").iterdir())
    # with space again, the same command resumes and ends as an uninterrupted run
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    cli(*switch_args(assets, out, "--shard-rows", 100, corpus=corpus))
    assert snapshot(out) == snapshot(reference)
    shutil.rmtree(out)
    subprocess.run(["mount", "-o", "remount,size=256k", str(small_disk)], check=True)

    shards = tmp_path / "one-shard"
    cli(*switch_args(assets, shards, "--shard-rows", 100000, corpus=corpus))
    nano = small_disk / "deep" / "nano"
    one_line(run("export", shards, "-o", nano), "no space left on device")
    assert not (small_disk / "deep").exists() and no_temporaries(small_disk)  # what export made is gone
