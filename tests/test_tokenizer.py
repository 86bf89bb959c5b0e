"""Byte-level BPE training, saving, loading and description (prealign.codeswitch.tokenizer)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from prealign.codeswitch.tokenizer import (
    TokenizerInfo,
    load_tokenizer,
    save_tokenizer,
    tokenizer_info,
    train_tokenizer,
)
from prealign.errors import InputError

ENGLISH = [
    "The cat sat on the mat while the dog slept near the door.",
    "We are learning to translate words between languages.",
    "Many people like to read books in the evening.",
    "The weather today is sunny and the river is calm.",
]
FRENCH = [
    "Le chat était assis sur le tapis pendant que le chien dormait.",
    "Nous apprenons à traduire des mots entre les langues.",
    "Beaucoup de gens aiment lire des livres le soir, déjà à l'été.",
    "Il fait beau aujourd'hui et la rivière est calme à côté du château.",
]
CJK = ["我们正在学习语言。", "東京は日本の首都です。", "今天天气很好，河水很平静。"]
UNSEEN = "Où est la bibliothèque ? Ça coûte 12 € — naïve façade, 日本語を話します, 你好世界 🙂\tend  "


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A text file (with blank lines), a .gz text file and a .jsonl file; lines repeated so merges happen."""
    d = tmp_path_factory.mktemp("corpus")
    txt, gz, jsonl = d / "en.txt", d / "fr.txt.gz", d / "mixed.jsonl"
    txt.write_text("\n\n".join(ENGLISH * 20) + "\n", encoding="utf-8")
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(FRENCH * 20) + "\n")
    rows = [{"text": t, "id": i} for i, t in enumerate((CJK + ENGLISH[:2]) * 20)]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    return [txt, gz, jsonl]


@pytest.fixture(scope="module")
def trained(corpus: list[Path]) -> Tokenizer:
    return train_tokenizer(corpus, 400)


def test_special_ids_and_vocab_size(trained: Tokenizer) -> None:
    assert trained.token_to_id("<|endoftext|>") == 0
    assert trained.token_to_id("<|pad|>") == 1
    assert 258 < trained.get_vocab_size(with_added_tokens=True) <= 400
    info = tokenizer_info(trained)
    assert (info.eot_id, info.pad_id, info.eot_token, info.pad_token) == (0, 1, "<|endoftext|>", "<|pad|>")
    assert info.vocab_size == trained.get_vocab_size(with_added_tokens=True)


def test_learns_merges_from_every_file(trained: Tokenizer) -> None:
    # Each of these words appears only in one input file; with merges learnt from it, it takes few tokens.
    for word, source in (("the", "txt"), (" le", "gz"), ("我们", "jsonl")):
        n = len(trained.encode(word).ids)
        assert n < len(word.encode("utf-8")), (word, source, trained.encode(word).tokens)


def test_round_trip_of_unseen_text(trained: Tokenizer) -> None:
    enc = trained.encode(UNSEEN)
    assert trained.decode(enc.ids) == UNSEEN
    assert "<|endoftext|>" not in enc.tokens


def test_deterministic(corpus: list[Path], trained: Tokenizer) -> None:
    again = train_tokenizer(corpus, 400)
    assert again.to_str() == trained.to_str()
    assert tokenizer_info(again).sha256 == tokenizer_info(trained).sha256


def test_deterministic_across_processes(corpus: list[Path], trained: Tokenizer) -> None:
    """Rust hash maps are seeded per process: a fresh interpreter must still give the same tokenizer."""
    code = (
        "import sys; from pathlib import Path;"
        "from prealign.codeswitch.tokenizer import train_tokenizer, tokenizer_info;"
        "print(tokenizer_info(train_tokenizer([Path(p) for p in sys.argv[1:]], 400)).sha256)"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, corpus)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == tokenizer_info(trained).sha256


def test_parquet_input_and_text_column(tmp_path: Path) -> None:
    texts = (ENGLISH + FRENCH) * 10
    pq.write_table(pa.table({"body": texts, "n": list(range(len(texts)))}), tmp_path / "c.parquet")
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    from_parquet = train_tokenizer([tmp_path / "c.parquet"], 300, text_column="body")
    from_text = train_tokenizer([tmp_path / "c.txt"], 300)
    assert from_parquet.to_str() == from_text.to_str()
    assert from_parquet.get_vocab_size() > 258


def test_save_load_round_trip(trained: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "out" / "tokenizer.json"
    save_tokenizer(trained, path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left
    loaded = load_tokenizer(path)
    assert tokenizer_info(loaded) == tokenizer_info(trained)
    assert loaded.encode(UNSEEN).ids == trained.encode(UNSEEN).ids
    from_dir = load_tokenizer(path.parent)
    assert tokenizer_info(from_dir).sha256 == tokenizer_info(trained).sha256


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot load tokenizer") as exc:
        load_tokenizer(tmp_path / "missing.json")
    assert exc.value.path == str(tmp_path / "missing.json")
    with pytest.raises(InputError, match="cannot load tokenizer") as exc:
        load_tokenizer(tmp_path)  # a directory without tokenizer.json
    assert exc.value.path == str(tmp_path / "tokenizer.json")
    for name, content in (("garbage.json", "{not json"), ("wrong.json", '{"version": "1.0", "model": 3}')):
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(InputError, match="cannot load tokenizer: .+") as exc:
            load_tokenizer(tmp_path / name)
        assert exc.value.path == str(tmp_path / name)


def test_vocab_too_small(corpus: list[Path]) -> None:
    with pytest.raises(ValueError, match="at least 258"):
        train_tokenizer(corpus, 257)
    assert train_tokenizer(corpus, 258).get_vocab_size() == 258  # the bytes and the specials, no merge


def test_input_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError, match="no such file") as exc:
        train_tokenizer([missing], 300)
    assert exc.value.path == str(missing)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(InputError, match="invalid UTF-8") as exc:
        train_tokenizer([bad], 300)
    assert (exc.value.path, exc.value.line) == (str(bad), 3)
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "a b"}\n{"body": "c d"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="missing column 'text'") as exc:
        train_tokenizer([jsonl], 300)
    assert (exc.value.path, exc.value.line) == (str(jsonl), 2)
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["a b"]}), parquet)
    with pytest.raises(InputError, match="missing column 'text'") as exc:
        train_tokenizer([parquet], 300)
    assert exc.value.path == str(parquet)


def test_info_finds_bert_style_names() -> None:
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[UNK]", "[PAD]", "[SEP]", "[CLS]"])
    info = tokenizer_info(tok)
    assert isinstance(info, TokenizerInfo)
    assert (info.eot_token, info.eot_id, info.pad_token, info.pad_id) == ("[SEP]", 4, "[PAD]", 3)
    assert info.vocab_size == 6
    assert info.to_dict() == {
        "sha256": info.sha256,
        "vocab_size": 6,
        "eot_id": 4,
        "pad_id": 3,
        "eot_token": "[SEP]",
        "pad_token": "[PAD]",
    }
    assert len(info.sha256) == 64 and info.sha256 != tokenizer_info(Tokenizer(models.WordPiece(vocab))).sha256


def test_info_first_name_wins_and_none_when_absent() -> None:
    tok = Tokenizer(models.BPE())
    assert tokenizer_info(tok).eot_id is None and tokenizer_info(tok).pad_token is None
    tok.add_special_tokens(["<|eot_id|>", "<pad>", "</s>"])
    info = tokenizer_info(tok)
    assert (info.eot_token, info.eot_id, info.pad_token, info.pad_id) == ("</s>", 2, "<pad>", 1)
