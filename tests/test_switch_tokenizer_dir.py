"""``switch`` with a tokenizer directory as transformers saves it (BOS/EOS from its config, --bos/--eos), and the
low-coverage stop (--allow-low-coverage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import cli, lexicon_frame, one_error_line, shard_rows
from tokenizer_families import added_token
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import prealign.pipelines.switch_job as switch_pipeline
from prealign.codeswitch.switch import Switched, switch_batch
from prealign.codeswitch.table import SwitchConfig, build_table
from prealign.codeswitch.tokenizer import special_tokens, train_tokenizer
from prealign.errors import InputError
from prealign.lexicon.lexicon_io import write_lexicon
from prealign.shards import MANIFEST

IGNORE = -100
UNK, BOS, EOS = 0, 1, 2
ENGLISH = ["the", "a", "dog", "cat", "house", "river", "green", "small", "water", "bread", "eats", "near", "big", "old"]
FRENCH = ["le", "la", "chien", "chat", "maison", "rivière", "vert", "petit", "eau", "pain", "mange", "près", "vieux"]
ENTRIES = [("dog", "chien"), ("cat", "chat"), ("house", "maison"), ("river", "rivière"), ("green", "vert")]
SEQ_LEN = 15


def sentences(n: int, seed: int, vocab: list[str] = ENGLISH) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(str(w) for w in rng.choice(vocab, size=rng.integers(2, 14))) + "." for _ in range(n)]


def lexicon(path: Path, pairs: list[tuple[str, str]]) -> Path:
    frame = lexicon_frame([(src, tgt, 1.0, 0.9) for src, tgt in pairs], count=7)
    write_lexicon(frame, path, {"src_lang": "en", "tgt_lang": "fr"})
    return path


def llama_tokenizer() -> Tokenizer:
    """A small SentencePiece-style BPE (Metaspace, byte-free) with Llama's specials: <unk> 0, <s> 1, </s> 2, and
    Llama's post-processor (``<s> $A``), which the switch job does not use (it encodes without specials)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(sentences(150, 1) + sentences(150, 2, FRENCH), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>")] == [UNK, BOS, EOS]
    return tok


def write_dir(directory: Path, tok: Tokenizer, config: dict | str | None, tokens_map: dict | str | None) -> Path:
    """A tokenizer directory as ``save_pretrained`` lays it out (a str: the file's raw text; None: no file)."""
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", tokens_map)):
        if content is not None:
            text = content if isinstance(content, str) else json.dumps(content, indent=2)
            (directory / name).write_text(text, encoding="utf-8")
    return directory


LLAMA_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": added_token("<s>"),
    "eos_token": added_token("</s>"),
    "unk_token": added_token("<unk>"),
    "pad_token": None,
    "clean_up_tokenization_spaces": False,
    "legacy": False,
    "model_max_length": 1000000000000000019884624838656,
    "tokenizer_class": "LlamaTokenizer",
}
LLAMA_MAP = {"bos_token": added_token("<s>"), "eos_token": added_token("</s>"), "unk_token": added_token("<unk>")}


class Assets:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tok = llama_tokenizer()
        self.tokenizer = write_dir(root / "llama", self.tok, LLAMA_CONFIG, LLAMA_MAP)
        self.lexicon = lexicon(root / "lexicon.parquet", ENTRIES)
        self.docs = sentences(60, 3)
        self.corpus = root / "corpus.txt"
        self.corpus.write_text("\n".join(self.docs) + "\n", encoding="utf-8")

    def args(self, out: Path, *extra: object, tokenizer: Path | None = None, lex: Path | None = None) -> list[object]:
        return [
            "switch", self.corpus, "--lexicon", lex or self.lexicon, "--tokenizer", tokenizer or self.tokenizer,
            "--ratio", 0.4, "--seed", 5, "--seq-len", SEQ_LEN, "-o", out, "--workers", 0, "-q", *extra,
        ]  # fmt: skip

    def expected(self) -> Switched:
        cfg = SwitchConfig(ratio=0.4, seed=5)
        return switch_batch(self.docs, 0, self.tok, build_table(pl.read_parquet(self.lexicon), cfg), cfg)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    return Assets(tmp_path_factory.mktemp("tokenizer-dir"))


def stream(exp: Switched, bos: int | None, eos: int | None) -> tuple[list[int], list[int], list[int]]:
    """The documents back to back, each wrapped in ``bos``/``eos`` (labelled as themselves, never switched)."""
    ids: list[int] = []
    labels: list[int] = []
    switched: list[int] = []
    for d in range(len(exp.offsets) - 1):
        lo, hi = exp.offsets[d], exp.offsets[d + 1]
        head, tail = [bos] if bos is not None else [], [eos] if eos is not None else []
        ids += [*head, *exp.input_ids[lo:hi].tolist(), *tail]
        labels += [*head, *exp.labels[lo:hi].tolist(), *tail]
        switched += [0] * len(head) + exp.switched[lo:hi].tolist() + [0] * len(tail)
    return ids, labels, switched


# --- BOS/EOS from the directory's config ------------------------------------------------------------------------


def test_packed_rows_follow_the_config(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    cli(*assets.args(out))
    ids, labels, switched = shard_rows(out)
    assert all(len(r) == SEQ_LEN + 1 for r in ids)
    exp = assets.expected()
    assert exp.words_switched > 0
    want = stream(exp, BOS, EOS)  # <s> document </s> <s> document </s> ...
    flat = [sum(x, []) for x in (ids, labels, switched)]
    pad = len(flat[0]) - len(want[0])
    assert 0 <= pad <= SEQ_LEN
    assert flat[0] == want[0] + [EOS] * pad  # no pad_token: padding with EOS
    assert flat[1] == want[1] + [IGNORE] * pad
    assert flat[2] == want[2] + [0] * pad
    assert ids[0][0] == BOS and labels[0][0] == BOS

    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    tok = manifest["tokenizer"]
    assert tok["path"] == str((assets.tokenizer / "tokenizer.json").resolve())
    assert (tok["bos_token"], tok["bos_id"], tok["add_bos"], tok["bos_from"]) == ("<s>", BOS, True, "config")
    assert (tok["eos_token"], tok["eos_id"], tok["add_eos"], tok["eos_from"]) == ("</s>", EOS, False, "config")
    assert (tok["eot_token"], tok["eot_id"], tok["pad_id"]) == ("</s>", EOS, None)  # the old keys: the EOS
    assert sorted(Path(f).name for f in tok["config_files"]) == ["special_tokens_map.json", "tokenizer_config.json"]
    assert manifest["allow_low_coverage"] is False and manifest["coverage_warning"] is None

    report = cli("inspect", out, "--rows", 1).stdout
    assert "documents: BOS '<s>' (id 1, from config) first; EOS '</s>' (id 2, from config) after each" in report
    totals = manifest["totals"]
    share = 100 * totals["words_with_entry"] / totals["words"]
    assert f"coverage:  words with an entry {totals['words_with_entry']} of {totals['words']} ({share:.1f}%)" in report
    # the tokenizer directory itself decodes the rows too (not only its tokenizer.json)
    by_dir = cli("inspect", out, "--rows", 1, "--tokenizer", assets.tokenizer).stdout
    assert by_dir.split("row 0 (")[1] == report.split("row 0 (")[1] and "<s> a" in by_dir.split("row 0 (")[1]


def test_one_document_per_row_starts_with_bos(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "rows"
    cli(*assets.args(out, "--no-pack"))
    ids, labels, switched = shard_rows(out)
    exp = assets.expected()
    assert len(ids) == len(assets.docs)
    for d in range(len(assets.docs)):
        lo, hi = exp.offsets[d], exp.offsets[d + 1]
        assert ids[d] == [BOS, *exp.input_ids[lo:hi].tolist()]  # add_eos_token false: nothing after
        assert labels[d] == [BOS, *exp.labels[lo:hi].tolist()]
        assert switched[d] == [0, *exp.switched[lo:hi].tolist()]


def test_add_eos_token_ends_each_row_without_packing(assets: Assets, tmp_path: Path) -> None:
    tokenizer = write_dir(tmp_path / "tok", assets.tok, {**LLAMA_CONFIG, "add_eos_token": True}, LLAMA_MAP)
    out = tmp_path / "rows"
    cli(*assets.args(out, "--no-pack", tokenizer=tokenizer))
    ids, _, _ = shard_rows(out)
    exp = assets.expected()
    assert ids[1] == [BOS, *exp.input_ids[exp.offsets[1] : exp.offsets[2]].tolist(), EOS]
    assert json.loads((out / MANIFEST).read_text("utf-8"))["tokenizer"]["add_eos"] is True


def test_options_override_the_config(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    cli(*assets.args(out, "--bos", "none", "--eos", "<unk>"))
    ids, labels, _ = shard_rows(out)
    want = stream(assets.expected(), None, UNK)
    flat_ids, flat_labels = sum(ids, []), sum(labels, [])
    assert flat_ids[: len(want[0])] == want[0] and flat_labels[: len(want[1])] == want[1]
    assert BOS not in flat_ids
    tok = json.loads((out / MANIFEST).read_text("utf-8"))["tokenizer"]
    assert (tok["bos_token"], tok["bos_id"], tok["add_bos"], tok["bos_from"]) == (None, None, False, "option")
    assert (tok["eos_token"], tok["eos_id"], tok["eos_from"], tok["eot_id"]) == ("<unk>", UNK, "option", UNK)

    # the BOS/EOS choice is part of the job: the config's choice is another run, not "already done"
    again = cli(*assets.args(out), code=2)
    one_error_line(again, "holds another run's shards")
    assert "already done" in cli(*assets.args(out, "--bos", "none", "--eos", "<unk>")).stdout


def test_bos_option_on_a_plain_tokenizer_json(assets: Assets, tmp_path: Path) -> None:
    plain = assets.tokenizer / "tokenizer.json"  # a file: no config read, no BOS, EOS found by name (</s>)
    out = tmp_path / "plain"
    cli(*assets.args(out, tokenizer=plain))
    tok = json.loads((out / MANIFEST).read_text("utf-8"))["tokenizer"]
    assert (tok["add_bos"], tok["bos_from"], tok["eos_id"], tok["eos_from"], tok["config_files"]) == (
        False, None, EOS, "name", [],
    )  # fmt: skip
    assert sum(shard_rows(out)[0], [])[:1] != [BOS]
    out = tmp_path / "bos"
    cli(*assets.args(out, "--bos", "<s>", tokenizer=plain))
    tok = json.loads((out / MANIFEST).read_text("utf-8"))["tokenizer"]
    assert (tok["bos_id"], tok["add_bos"], tok["bos_from"]) == (BOS, True, "option")
    want = stream(assets.expected(), BOS, EOS)[0]
    assert sum(shard_rows(out)[0], [])[: len(want)] == want


def test_llama3_layout_takes_bos_from_the_post_processor(assets: Assets, tmp_path: Path) -> None:
    # Llama-3's tokenizer_config.json names bos_token but has no add_bos_token: its tokenizer.json's
    # TemplateProcessing adds it. A BERT-like template ([CLS] $A [SEP]) without a bos_token turns nothing on.
    config = {k: v for k, v in LLAMA_CONFIG.items() if k != "add_bos_token"}
    directory = write_dir(tmp_path / "llama3", assets.tok, config, None)
    got = special_tokens(assets.tok, directory)
    assert (got.bos_id, got.add_bos, got.bos_from) == (BOS, True, "post_processor")
    no_bos = write_dir(tmp_path / "bert", assets.tok, {"eos_token": "</s>"}, None)
    got = special_tokens(assets.tok, no_bos)
    assert (got.bos_id, got.add_bos, got.eos_id, got.eos_from) == (None, False, EOS, "config")


def test_special_tokens_map_overrides_the_config(assets: Assets, tmp_path: Path) -> None:
    directory = write_dir(tmp_path / "tok", assets.tok, LLAMA_CONFIG, {"eos_token": "<unk>"})
    got = special_tokens(assets.tok, directory)
    assert (got.eos_token, got.eos_id, got.bos_id) == ("<unk>", UNK, BOS)  # as transformers' from_pretrained


# --- refused, one line, exit code 2 -------------------------------------------------------------------------------


def test_eos_none_with_packing_is_refused(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    one_error_line(cli(*assets.args(out, "--eos", "none"), code=2), "--eos none", "--no-pack")
    assert not out.exists()
    cli(*assets.args(out, "--eos", "none", "--no-pack"))  # one document per row needs no separator
    assert json.loads((out / MANIFEST).read_text("utf-8"))["tokenizer"]["eos_id"] is None


def test_options_naming_no_token_are_refused(assets: Assets, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    one_error_line(cli(*assets.args(out, "--bos", "<bos>"), code=2), "--bos '<bos>' is not a token", "tokenizer.json")
    one_error_line(cli(*assets.args(out, "--eos", "<|eot|>"), code=2), "--eos '<|eot|>' is not a token")
    assert not out.exists()


@pytest.mark.parametrize(
    ("config", "tokens_map", "file", "needle"),
    [
        ({**LLAMA_CONFIG, "bos_token": "<|begin_of_text|>"}, None, "tokenizer_config.json", "'<|begin_of_text|>'"),
        (
            LLAMA_CONFIG,
            {"eos_token": added_token("<eos>")},
            "special_tokens_map.json",
            "eos_token '<eos>' is not a token",
        ),
        ('{"add_bos_token": true, "bos_token": "<s>",', LLAMA_MAP, "tokenizer_config.json", "cannot read tokenizer"),
        (LLAMA_CONFIG, "[1, 2]", "special_tokens_map.json", "a JSON object expected"),
        ({**LLAMA_CONFIG, "add_bos_token": "yes"}, None, "tokenizer_config.json", "add_bos_token is 'yes'"),
        ({"add_bos_token": True}, None, "tokenizer_config.json", "no bos_token"),
    ],
    ids=["unknown-bos", "unknown-eos-in-map", "bad-json", "not-an-object", "bad-flag", "bos-missing"],
)
def test_bad_config_is_one_line_naming_the_file(
    assets: Assets, tmp_path: Path, config: dict | str, tokens_map: dict | str | None, file: str, needle: str
) -> None:
    directory = write_dir(tmp_path / "tok", assets.tok, config, tokens_map)
    out = tmp_path / "shards"
    line = one_error_line(cli(*assets.args(out, tokenizer=directory), code=2), needle)
    assert line.startswith(f"error: {directory / file}"), line
    assert not out.exists()
    with pytest.raises(InputError):
        special_tokens(assets.tok, directory)


# --- no silent failure: low coverage ----------------------------------------------------------------------------


def test_words_without_entries_stop_the_job(assets: Assets, tmp_path: Path) -> None:
    absent = lexicon(tmp_path / "absent.parquet", [("zebra", "zèbre"), ("giraffe", "girafe")])
    out = tmp_path / "shards"
    line = one_error_line(
        cli(*assets.args(out, lex=absent), code=2),
        "none of",
        "words have a lexicon entry",
        "--lang",
        "--allow-low-coverage",
    )
    assert str(assets.corpus) in line
    assert not out.exists()  # nothing left behind, no work directory either

    result = cli(*assets.args(out, "--allow-low-coverage", lex=absent))
    warning = [line for line in result.stdout.splitlines() if line.startswith("WARNING: LOW COVERAGE")]
    assert len(warning) == 1 and "have a lexicon entry" in warning[0]
    manifest = json.loads((out / MANIFEST).read_text("utf-8"))
    assert manifest["allow_low_coverage"] is True and "lexicon entry" in manifest["coverage_warning"]
    assert manifest["totals"]["words_with_entry"] == 0 and manifest["totals"]["rows"] > 0
    report = cli("inspect", out, "--rows", 0).stdout
    words, unswitchable = manifest["totals"]["words"], manifest["totals"]["words_unswitchable"]
    share = f"{100 * unswitchable / words:.1f}%"
    assert (
        f"coverage:  words with an entry 0 of {words} (0.0%), unswitchable {unswitchable} of {words} ({share}) (WARN"
        in report
    )


def test_a_hopeless_first_batch_stops_before_any_shard(
    assets: Assets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first batch of documents (French: no English entry) is checked on its own, before its shards are
    # written (one row a shard here), even though the whole corpus would pass.
    monkeypatch.setattr(switch_pipeline, "DOC_BATCH", 20)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(20, 7, FRENCH) + assets.docs * 3) + "\n", encoding="utf-8")
    out = tmp_path / "shards"
    args = ["switch", corpus, "--lexicon", assets.lexicon, "--tokenizer", assets.tokenizer, "--ratio", 0.4,
            "--seq-len", SEQ_LEN, "--shard-rows", 1, "-o", out, "--workers", 0, "-q"]  # fmt: skip
    one_error_line(cli(*args, code=2), "words have a lexicon entry")
    assert not out.exists()
    cli(*args, "--allow-low-coverage")
    assert json.loads((out / MANIFEST).read_text("utf-8"))["coverage_warning"] is None  # the whole is fine


def test_mostly_unswitchable_words_stop_the_job(assets: Assets, tmp_path: Path) -> None:
    # A byte-level BPE without its regex split (use_regex=False) learns merges across spaces ("Ġdog Ġeats"):
    # tokens straddle most word boundaries, so most words cannot be switched without cutting a token.
    train = tmp_path / "train.txt"
    train.write_text("\n".join(sentences(600, 1)) + "\n", encoding="utf-8")
    no_split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok = train_tokenizer([train], 2000, pre_tokenizer=no_split)
    tok.save(str(tmp_path / "cross.json"))
    out = tmp_path / "shards"
    line = one_error_line(
        cli(*assets.args(out, tokenizer=tmp_path / "cross.json"), code=2),
        "words are unswitchable",
        "straddle",
        "--allow-low-coverage",
    )
    assert not out.exists()
    cli(*assets.args(out, "--allow-low-coverage", tokenizer=tmp_path / "cross.json"))
    totals = json.loads((out / MANIFEST).read_text("utf-8"))["totals"]
    assert totals["words_unswitchable"] > totals["words"] / 2
    share = 100 * totals["words_unswitchable"] / totals["words"]
    assert f"{totals['words_unswitchable']} ({share:.1f}%) of {totals['words']} words are unswitchable" in line
