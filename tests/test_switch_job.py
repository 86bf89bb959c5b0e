"""The ``switch`` job and command: manifest, packing, byte-identical output for any worker count, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import conftest
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from conftest import cli, files_in, one_error_line, shard_rows
from tokenizers import Tokenizer

import prealign.pipelines.switch_job as switch_pipeline
from prealign.codeswitch.switch import Switched, switch_batch
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.codeswitch.tokenizer import load_tokenizer, save_tokenizer, tokenizer_info, train_tokenizer
from prealign.lexicon.lexicon_io import write_lexicon
from prealign.pipelines.switch_job import SwitchJob, switch_corpus
from prealign.shards import CARD, MANIFEST, SCHEMA, SCHEMA_VERSION, read_shard

IGNORE = -100
LEXICON_ROWS = [  # src, tgt, p(tgt|src), score
    ("dog", "chien", 0.9, 0.8),
    ("dog", "toutou", 0.1, 0.1),
    ("cat", "chat", 1.0, 0.9),
    ("house", "maison", 1.0, 0.9),
    ("river", "rivière", 1.0, 0.9),
    ("green", "vert", 0.7, 0.6),
    ("green", "verte", 0.3, 0.3),
    ("small", "petit", 1.0, 0.9),
    ("water", "eau", 1.0, 0.9),
    ("bread", "pain", 1.0, 0.9),
    ("eats", "mange", 1.0, 0.9),
]
ENGLISH = ["the", "a", "dog", "cat", "house", "river", "green", "small", "water", "bread", "eats", "near", "big", "old"]
FRENCH = ["le", "la", "chien", "chat", "maison", "rivière", "vert", "petit", "eau", "pain", "mange", "près", "vieux"]


def sentences(n: int, seed: int, vocab: list[str] = ENGLISH) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(vocab, size=rng.integers(2, 18))]
        if rng.random() < 0.3:
            words[0] = words[0].title()
        out.append(" ".join(words) + rng.choice([".", "!", ""]))
    return out


def lexicon_frame(rows: list[tuple[str, str, float, float]]) -> pl.DataFrame:
    return conftest.lexicon_frame(rows, count=7)


class Assets:
    def __init__(self, root: Path) -> None:
        self.root = root
        train = root / "train.txt"
        train.write_text("\n".join(sentences(150, 1) + sentences(150, 2, FRENCH)) + "\n", encoding="utf-8")
        self.tokenizer = root / "tokenizer.json"
        save_tokenizer(train_tokenizer([train], 360), self.tokenizer)
        self.tok: Tokenizer = load_tokenizer(self.tokenizer)
        self.lexicon = root / "lexicon.parquet"
        self.lex = lexicon_frame(LEXICON_ROWS)
        write_lexicon(self.lex, self.lexicon, {"src_lang": "en", "tgt_lang": "fr"})
        # documents: non-blank lines, kept as they are (leading spaces included); blank lines are not documents
        self.docs = [*sentences(80, 3), "  Indented green dog", "DOG", *sentences(38, 4)]
        lines = self.docs[:40] + ["", "   "] + self.docs[40:]
        self.corpus = root / "corpus.txt"
        self.corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("switch-assets"))


def switch_args(assets: Assets, out: Path, *extra: object, corpus: Path | None = None) -> list[object]:
    return [
        "switch", corpus or assets.corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer,
        "-o", out, "--workers", 0, "-q", *extra,
    ]  # fmt: skip


def expected(assets: Assets, docs: list[str], **config) -> Switched:
    cfg = SwitchConfig(**config)
    return switch_batch(docs, 0, assets.tok, build_table(assets.lex, cfg), cfg)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones and those in sub-directories too) with its bytes."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- a packed run through the command line -----------------------------------------------------------------------

SEQ_LEN = 15


@pytest.fixture(scope="module")
def packed(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("packed") / "shards"
    args = switch_args(assets, out, "--ratio", 0.4, "--seed", 5, "--seq-len", SEQ_LEN, "--shard-rows", 7)
    return out, cli(*args)


def test_manifest(assets: Assets, packed: tuple[Path, Result]) -> None:
    out, _ = packed
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    info = tokenizer_info(assets.tok)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["tokenizer"]["sha256"] == info.sha256
    assert manifest["tokenizer"]["vocab_size"] == info.vocab_size
    assert (manifest["tokenizer"]["eot_id"], manifest["tokenizer"]["pad_id"]) == (info.eot_id, info.pad_id) == (0, 1)
    assert manifest["lexicon"]["sha256"] == hashlib.sha256(assets.lexicon.read_bytes()).hexdigest()
    assert (manifest["lexicon"]["src_lang"], manifest["lexicon"]["tgt_lang"]) == ("en", "fr")
    assert (manifest["ratio"], manifest["seed"], manifest["labels"]) == (0.4, 5, "input-only")
    assert (manifest["seq_len"], manifest["packed"], manifest["row_tokens"]) == (SEQ_LEN, True, SEQ_LEN + 1)
    assert "seconds" not in manifest  # timing would make runs differ

    exp = expected(assets, assets.docs, ratio=0.4, seed=5)
    totals = manifest["totals"]
    assert totals["documents"] == len(assets.docs) == 120
    assert (totals["words"], totals["words_with_entry"], totals["words_switched"]) == (
        exp.words, exp.words_with_entry, exp.words_switched,
    )  # fmt: skip
    assert 0 < totals["words_switched"] < totals["words_with_entry"] < totals["words"]
    stream = len(exp.input_ids) + len(assets.docs)  # every document followed by end-of-text
    rows = -(-stream // (SEQ_LEN + 1))
    assert totals["rows"] == rows and totals["tokens"] == rows * (SEQ_LEN + 1)
    assert totals["padding_tokens"] == rows * (SEQ_LEN + 1) - stream
    assert manifest["rates"]["switched_per_word_with_entry"] == pytest.approx(exp.words_switched / exp.words_with_entry)
    assert manifest["rates"]["switched_per_word"] == pytest.approx(exp.words_switched / exp.words)

    assert len(manifest["shards"]) == -(-rows // 7) > 2
    assert sum(s["rows"] for s in manifest["shards"]) == rows
    for s in manifest["shards"]:
        path = out / s["file"]
        assert s["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        table = read_shard(path)
        assert table.schema.equals(SCHEMA)
        assert table.num_rows == s["rows"]
        assert s["rows"] == 7 or s is manifest["shards"][-1]
    assert files_in(out) == sorted([CARD, MANIFEST, *(s["file"] for s in manifest["shards"])])  # no leftovers


def test_packed_rows_are_the_documents_back_to_back(assets: Assets, packed: tuple[Path, Result]) -> None:
    out, _ = packed
    ids, labels, switched = shard_rows(out)
    assert all(len(r) == SEQ_LEN + 1 for r in ids + labels + switched)
    exp = expected(assets, assets.docs, ratio=0.4, seed=5)
    want_ids, want_labels, want_sw = [], [], []
    for d in range(len(assets.docs)):
        lo, hi = exp.offsets[d], exp.offsets[d + 1]
        want_ids += [*exp.input_ids[lo:hi].tolist(), 0]  # end-of-text after every document ...
        want_labels += [*exp.labels[lo:hi].tolist(), 0]  # ... labelled as itself
        want_sw += [*exp.switched[lo:hi].tolist(), 0]
    flat_ids, flat_labels, flat_sw = (sum(x, []) for x in (ids, labels, switched))
    pad = len(flat_ids) - len(want_ids)
    assert 0 <= pad <= SEQ_LEN
    assert flat_ids == want_ids + [1] * pad  # the last row is padded with <|pad|> ...
    assert flat_labels == want_labels + [IGNORE] * pad  # ... and no loss there
    assert flat_sw == want_sw + [0] * pad
    assert pad > 0, "choose SEQ_LEN so the last row is partial"


def test_summary_reports_the_realised_rates(packed: tuple[Path, Result]) -> None:
    out, result = packed
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    rates = manifest["rates"]
    assert "realised rate" in result.stdout
    assert f"{rates['switched_per_word_with_entry']:.4f}" in result.stdout
    assert f"{rates['switched_per_word']:.4f}" in result.stdout
    assert f"{manifest['totals']['words_switched']:,}" in result.stdout


def test_no_pack_gives_one_row_per_document(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "rows"
    cli(*switch_args(assets, out, "--ratio", 0.4, "--seed", 5, "--no-pack", "--shard-rows", 50))
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    assert (manifest["packed"], manifest["seq_len"], manifest["row_tokens"]) == (False, None, None)
    assert manifest["totals"]["rows"] == manifest["totals"]["documents"] == len(assets.docs)
    assert manifest["totals"]["padding_tokens"] == 0
    assert [s["rows"] for s in manifest["shards"]] == [50, 50, 20]
    ids, labels, switched = shard_rows(out)
    exp = expected(assets, assets.docs, ratio=0.4, seed=5)
    for d in range(len(assets.docs)):
        lo, hi = exp.offsets[d], exp.offsets[d + 1]
        assert ids[d] == exp.input_ids[lo:hi].tolist()
        assert labels[d] == exp.labels[lo:hi].tolist()
        assert switched[d] == exp.switched[lo:hi].tolist()
    assert 0 not in sum(ids, [])  # no end-of-text inside unpacked rows


def test_switched_labels_and_ratio_bounds(assets: Assets, tmp_path: Path) -> None:
    cli(*switch_args(assets, tmp_path / "one", "--ratio", 1, "--labels", "switched", "--choice", "top"))
    manifest = json.loads((tmp_path / "one" / MANIFEST).read_text("utf-8"))
    assert manifest["labels"] == "switched" and manifest["choice"] == "top"
    assert manifest["totals"]["words_switched"] == manifest["totals"]["words_with_entry"] > 0
    assert manifest["rates"]["switched_per_word_with_entry"] == 1.0
    ids, labels, _ = shard_rows(tmp_path / "one")
    flat_ids, flat_labels = sum(ids, []), sum(labels, [])
    n_pad = manifest["totals"]["padding_tokens"]
    assert flat_labels[: len(flat_labels) - n_pad] == flat_ids[: len(flat_ids) - n_pad]

    cli(*switch_args(assets, tmp_path / "zero", "--ratio", 0, "--no-pack"))
    ids, labels, switched = shard_rows(tmp_path / "zero")
    assert ids == [e.ids for e in assets.tok.encode_batch(assets.docs, add_special_tokens=False)]
    assert labels == ids and not any(sum(switched, []))


# --- the same bytes whatever the number of workers or the batch size --------------------------------------------


def run_job(assets: Assets, corpus: list[Path], out: Path, workers: int) -> dict:
    job = SwitchJob(
        corpus=corpus,
        lexicon=assets.lexicon,
        tokenizer=assets.tokenizer,
        output=out,
        config=SwitchConfig(ratio=0.3, seed=11),
        seq_len=23,
        shard_rows=4,
        workers=workers,
        progress=False,
    )
    manifest = switch_corpus(job)
    assert manifest.pop("seconds") >= 0
    assert manifest == json.loads((out / MANIFEST).read_text("utf-8"))
    return manifest


def test_same_bytes_for_any_number_of_workers_and_batch_size(
    ray_local, assets: Assets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(sentences(170, 20)) + "\n", encoding="utf-8")
    b.write_text("\n".join(sentences(130, 21)) + "\n", encoding="utf-8")
    reference = run_job(assets, [a, b], tmp_path / "default-batch", workers=0)  # one batch: DOC_BATCH = 4096
    files = snapshot(tmp_path / "default-batch")
    assert len(reference["shards"]) > 5
    monkeypatch.setattr(switch_pipeline, "DOC_BATCH", 7)  # 43 batches, one ending inside each file
    for workers in (0, 1, 2):
        out = tmp_path / f"workers-{workers}"
        assert run_job(assets, [a, b], out, workers) == reference, workers
        assert snapshot(out) == files, workers
    # and what was written is the switch of the 300 documents numbered across both files
    docs = sentences(170, 20) + sentences(130, 21)
    exp = expected(assets, docs, ratio=0.3, seed=11)
    assert reference["totals"]["words_switched"] == exp.words_switched
    ids, _, _ = shard_rows(tmp_path / "workers-2")
    stream = [i for d in range(len(docs)) for i in [*exp.input_ids[exp.offsets[d] : exp.offsets[d + 1]].tolist(), 0]]
    assert sum(ids, [])[: len(stream)] == stream


def test_jobs_with_different_lexicons_in_one_process(assets: Assets, tmp_path: Path) -> None:
    # each job must use its own lexicon, even where a worker's word cache outlives a job (here: in-process)
    tokenizer = tmp_path / "tokenizer.json"
    shutil.copy(assets.tokenizer, tokenizer)  # a path of its own: other tests' caches stay out of this
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat and the dog\n", encoding="utf-8")
    only_dog, both = tmp_path / "dog.parquet", tmp_path / "both.parquet"
    write_lexicon(lexicon_frame([("dog", "chien", 1.0, 1.0)]), only_dog)
    write_lexicon(lexicon_frame([("cat", "chat", 1.0, 1.0), ("dog", "chien", 1.0, 1.0)]), both)
    texts = {}
    for name, lexicon in (("dog", only_dog), ("both", both), ("dog-again", only_dog)):
        out = tmp_path / name
        cli("switch", corpus, "--lexicon", lexicon, "--tokenizer", tokenizer, "-o", out, "--ratio", 1,
            "--no-pack", "--workers", 0, "-q")  # fmt: skip
        ids, _, _ = shard_rows(out)
        texts[name] = assets.tok.decode(ids[0])
    assert texts == {"dog": "the cat and the chien", "both": "the chat and the chien", "dog-again": texts["dog"]}


# --- input formats -----------------------------------------------------------------------------------------------


def test_jsonl_parquet_and_gzip_input_give_the_same_shards(assets: Assets, tmp_path: Path) -> None:
    reference = tmp_path / "txt"
    cli(*switch_args(assets, reference, "--ratio", 0.5, "--seq-len", 31, "--shard-rows", 9))
    want = {k: v for k, v in snapshot(reference).items() if k != MANIFEST}
    want_totals = json.loads((reference / MANIFEST).read_text("utf-8"))["totals"]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(assets.docs)), "utf-8")
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(len(assets.docs))), "body": assets.docs}), parquet)
    gz = tmp_path / "docs.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(assets.docs) + "\n")
    jsonl_gz = tmp_path / "docs.jsonl.gz"
    jsonl_gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    for corpus, extra in ((jsonl, ["--text-column", "body"]), (parquet, ["--text-column", "body"]), (gz, []),
                          (jsonl_gz, ["--text-column", "body"])):  # fmt: skip
        out = tmp_path / corpus.name.replace(".", "-")
        cli(*switch_args(assets, out, "--ratio", 0.5, "--seq-len", 31, "--shard-rows", 9, *extra, corpus=corpus))
        got = snapshot(out)
        manifest = json.loads(got.pop(MANIFEST))
        assert got == want, corpus.name
        assert manifest["totals"] == want_totals
        assert manifest["inputs"] == [str(corpus)]


def test_tokenizer_directory(assets: Assets, tmp_path: Path) -> None:
    directory = tmp_path / "tok"
    directory.mkdir()
    shutil.copy(assets.tokenizer, directory / "tokenizer.json")
    out = tmp_path / "out"
    args = ["switch", assets.corpus, "--lexicon", assets.lexicon, "--tokenizer", directory, "--ratio", 0.5]
    cli(*args, "-o", out, "--workers", 0, "-q")
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    assert manifest["tokenizer"]["sha256"] == tokenizer_info(assets.tok).sha256


# --- bad input ---------------------------------------------------------------------------------------------------


def bad_inputs(assets: Assets, d: Path) -> dict[str, tuple[list[object], list[str]]]:
    """name -> (arguments replacing the defaults, needles the error line must hold)."""
    garbage = d / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet \x00\xff" * 20)
    bad_tok = d / "bad-tokenizer.json"
    bad_tok.write_text('{"version": "1.0", "model": {"type": "nothing"', encoding="utf-8")
    empty = d / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    bad_utf8 = d / "bad-utf8.txt"
    bad_utf8.write_bytes(b"the dog\nthe cat\nthe \xff\xfe house\nthe river\n")
    no_column = d / "no-column.jsonl"
    no_column.write_text('{"text": "the dog"}\n{"body": "the cat"}\n', encoding="utf-8")
    empty_lexicon = d / "empty-lexicon.parquet"
    write_lexicon(lexicon_frame([]), empty_lexicon)
    return {
        "missing lexicon": (["--lexicon", d / "nothere.parquet"], ["nothere.parquet"]),
        "corrupt lexicon": (["--lexicon", garbage], [str(garbage)]),
        "empty lexicon": (["--lexicon", empty_lexicon], [str(empty_lexicon)]),
        "bad tokenizer": (["--tokenizer", bad_tok], [str(bad_tok), "tokenizer"]),
        "missing tokenizer": (["--tokenizer", d / "nothere.json"], ["nothere.json"]),
        "ratio above 1": (["--ratio", 1.5], ["ratio", "1.5"]),
        "ratio below 0": (["--ratio", -0.1], ["ratio"]),
        "empty corpus": (["--corpus", empty], [str(empty), "empty"]),
        "missing corpus": (["--corpus", d / "nothere.txt"], ["nothere.txt"]),
        "invalid utf-8": (["--corpus", bad_utf8], [f"{bad_utf8}:3"]),
        "missing column": (["--corpus", no_column], [f"{no_column}:2", "text"]),
    }


def command(assets: Assets, out: Path, overrides: list[object]) -> list[object]:
    opts: dict[str, object] = {"--lexicon": assets.lexicon, "--tokenizer": assets.tokenizer, "--ratio": 0.3}
    corpus: object = assets.corpus
    for key, value in zip(overrides[::2], overrides[1::2], strict=True):
        if key == "--corpus":
            corpus = value
        else:
            opts[str(key)] = value
    return ["switch", corpus, *(x for kv in opts.items() for x in kv), "-o", out, "--workers", 0, "-q"]


def test_bad_input_exits_2_and_writes_nothing(assets: Assets, tmp_path: Path) -> None:
    cases = bad_inputs(assets, tmp_path)
    for name, (overrides, needles) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "-")
        result = cli(*command(assets, out, overrides), code=2)
        one_error_line(result, *needles)
        assert result.stdout == "", name
        assert not out.exists(), name  # not even the output directory
    # an existing empty directory stays empty
    out = tmp_path / "existing"
    out.mkdir()
    for overrides, needles in cases.values():
        one_error_line(cli(*command(assets, out, overrides), code=2), *needles)
        assert list(out.iterdir()) == []


def test_another_runs_shards_need_overwrite(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli(*switch_args(assets, out, "--ratio", 0.2, "--seq-len", 15, "--shard-rows", 3))
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(out)
    assert len([f for f in before if f.startswith("shard-")]) > 10
    result = cli(*switch_args(assets, out, "--ratio", 0.7), code=2)
    one_error_line(result, str(out), "--overwrite")
    assert snapshot(out) == before

    cli(*switch_args(assets, out, "--ratio", 0.7, "--seq-len", 15, "--shard-rows", 1000, "--overwrite"))
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    assert manifest["ratio"] == 0.7
    assert files_in(out) == [CARD, MANIFEST, "notes.txt", "shard-00000.arrow"]  # the old shards are gone
    assert (out / "notes.txt").read_text("utf-8") == "mine"
    fresh = tmp_path / "fresh"
    cli(*switch_args(assets, fresh, "--ratio", 0.7, "--seq-len", 15, "--shard-rows", 1000))
    assert (fresh / "shard-00000.arrow").read_bytes() == (out / "shard-00000.arrow").read_bytes()


def test_failure_after_some_batches_leaves_the_directory_as_it_was(
    assets: Assets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "late-error.txt"
    good = sentences(60, 30)
    corpus.write_bytes(("\n".join(good) + "\n").encode("utf-8") + b"the dog \xc3 house\nthe cat\n")
    written: list[str] = []
    real_write_shard = switch_pipeline.write_shard

    def counting_write_shard(path: Path, rows):
        written.append(path.name)
        return real_write_shard(path, rows)

    out = tmp_path / "out"
    cli(*switch_args(assets, out, "--ratio", 0.2, "--seq-len", 7, "--shard-rows", 2))
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(out)
    monkeypatch.setattr(switch_pipeline, "DOC_BATCH", 5)
    monkeypatch.setattr(switch_pipeline, "write_shard", counting_write_shard)
    result = cli(*switch_args(assets, out, "--ratio", 0.2, "--seq-len", 7, "--shard-rows", 2, "--overwrite",
                              corpus=corpus), code=2)  # fmt: skip
    one_error_line(result, f"{corpus}:61")
    assert len(written) > 10  # shards of the first batches were written (in a scratch directory) before the error
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no scratch directory left either

    written.clear()
    new = tmp_path / "new" / "out"
    one_error_line(cli(*switch_args(assets, new, "--ratio", 0.2, "--seq-len", 7, "--shard-rows", 2,
                                    corpus=corpus), code=2), f"{corpus}:61")  # fmt: skip
    assert written and not new.exists()
