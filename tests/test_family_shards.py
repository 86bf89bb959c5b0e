"""Shards from every tokenizer family (issue 14) load in Hugging Face ``datasets`` and train with ``train pretrain``.

For each family of ``tests/tokenizer_families.py``: ``prealign-data switch`` (in process, ``--workers 0``) on a few
hundred generated English documents with the en->fr lexicon, the tokenizer given as a directory laid out as
transformers saves it; ``datasets.load_dataset("arrow")`` reads back exactly the rows of
``prealign.shards.read_rows``; and a two-step tiny ``train pretrain`` on CPU writes a run with finite losses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import cli, lexicon_frame
from tokenizer_families import EOT, FAMILIES, LEXICON_ROWS, added_token, english_documents, family_tokenizer

from prealign.lexicon.lexicon_io import write_lexicon
from prealign.shards import MANIFEST, read_rows
from prealign.train.checkpoint import read_run
from prealign.train.pretrain import read_metrics

pytest.importorskip("sentencepiece", reason="the SentencePiece families train a real SentencePiece model")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_DOCS = 300
SEQ_LEN = 64
SPM = "sentencepiece_llama2"


LLAMA_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": added_token("<s>"),
    "eos_token": added_token("</s>"),
    "unk_token": added_token("<unk>"),
    "pad_token": None,
    "legacy": True,
    "tokenizer_class": "LlamaTokenizer",
}
LLAMA_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The corpus (one document a line) and the en->fr lexicon (parquet, src_lang en / tgt_lang fr)."""
    root = tmp_path_factory.mktemp("family-shards")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(english_documents(N_DOCS, seed=23)) + "\n", encoding="utf-8")
    frame = lexicon_frame(LEXICON_ROWS)
    write_lexicon(frame, root / "lexicon.parquet", {"src_lang": "en", "tgt_lang": "fr"})
    return {"root": root, "corpus": corpus, "lexicon": root / "lexicon.parquet"}


def tokenizer_dir(directory: Path, name: str) -> Path:
    """The family's tokenizer as ``save_pretrained`` lays it out (the SentencePiece family with Llama's config)."""
    directory.mkdir(parents=True)
    family_tokenizer(name).save(str(directory / "tokenizer.json"))
    if name == SPM:
        (directory / "tokenizer_config.json").write_text(json.dumps(LLAMA_CONFIG, indent=2), encoding="utf-8")
        (directory / "special_tokens_map.json").write_text(json.dumps(LLAMA_MAP, indent=2), encoding="utf-8")
    return directory


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_shards_load_in_datasets_and_train(
    name: str, inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets reads the shards")
    tok = family_tokenizer(name)
    shards = tmp_path / "shards"
    directory = tokenizer_dir(tmp_path / "tok", name)
    cli("switch", inputs["corpus"], "--lexicon", inputs["lexicon"], "--tokenizer", directory, "--ratio", 0.3,
        "--seq-len", SEQ_LEN, "-o", shards, "--workers", 0, "-q")  # fmt: skip

    manifest = json.loads((shards / MANIFEST).read_text("utf-8"))
    info, totals = manifest["tokenizer"], manifest["totals"]
    assert info["eos_token"] == EOT[name] and info["eos_id"] == tok.token_to_id(EOT[name])
    assert (info["bos_token"], info["add_bos"]) == (("<s>", True) if name == SPM else (None, False))
    assert totals["documents"] == N_DOCS and totals["words_switched"] > 0.2 * totals["words_with_entry"]
    # unigram_hf learns pieces across punctuation (``▁night,``): a quarter of its words are unswitchable
    assert totals["words_unswitchable"] < (0.4 if name == "unigram_hf" else 0.1) * totals["words"]

    files = [shards / e["file"] for e in manifest["shards"]]
    want_ids, want_labels = [], []
    for f, entry in zip(files, manifest["shards"], strict=True):
        rows = read_rows(f, entry["rows"])
        for lo, hi in zip(rows.offsets[:-1], rows.offsets[1:], strict=True):
            want_ids.append(rows.input_ids[lo:hi].tolist())
            want_labels.append(rows.labels[lo:hi].tolist())
    ds = datasets.load_dataset(
        "arrow", data_files=[str(f) for f in files], split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == totals["rows"] == len(want_ids) > 2
    assert ds["input_ids"] == want_ids and ds["labels"] == want_labels
    assert all(len(r) == SEQ_LEN + 1 for r in want_ids)
    eos = tok.token_to_id(EOT[name])
    assert sum(r.count(eos) for r in want_ids) >= N_DOCS - 1  # one separator after each packed document
    if name == SPM:  # each document begins with <s> (the config's add_bos_token)
        assert sum(r.count(tok.token_to_id("<s>")) for r in want_ids) >= N_DOCS - 1

    run = tmp_path / "run"
    cli("train", "pretrain", "--shards", shards, "-o", run, "--config", "tiny", "--steps", 2, "--batch-size", 2,
        "--warmup", 0, "--eval-every", 0, "--device", "cpu", "-q")  # fmt: skip
    metrics = read_metrics(run)  # the loss is logged at the last step (log_every 10), then the held-out loss
    losses = [(r["step"], r[k]) for r in metrics for k in ("loss", "eval_loss") if k in r]
    assert [step for step, _ in losses] == [2, 2] and all(math.isfinite(x) and x > 0 for _, x in losses), metrics
    record = read_run(run)
    assert record["model"]["vocab_size"] >= tok.get_vocab_size(), record
