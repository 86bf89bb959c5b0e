"""The English-Clone experiment end to end on the `test` config: every metric comes from the saved models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli
from test_clone import english_lines

from prealign.codeswitch.tokenizer import load_tokenizer
from prealign.pipelines.clone_experiment import CONDITIONS, EXTRA_CONDITIONS, PRESETS
from prealign.train import checkpoint
from prealign.train.checkpoint import load_model
from prealign.train.clone import clone_text
from prealign.train.experiment_report import mean_sd
from prealign.train.model_metrics import text_loss, translation_retrieval

ALL = CONDITIONS + EXTRA_CONDITIONS
CONDS = ("--conditions", ",".join(ALL))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("exp")
    corpus = root / "english.txt"
    corpus.write_text("\n".join(english_lines(700, seed=11)) + "\n", encoding="utf-8")
    out = root / "run"
    res = cli("experiment", "clone", "--corpus", corpus, "-o", out, "--config", "test", "--seeds", 2, "-q", *CONDS)
    assert "# English-Clone experiment" in res.stdout
    return out, json.loads((out / "results.json").read_text("utf-8"))


def test_every_condition_and_seed_is_trained_and_reported(experiment) -> None:
    out, results = experiment
    assert sorted((r["condition"], r["seed"]) for r in results["runs"]) == sorted((c, s) for c in ALL for s in range(2))
    # the control's init is its own (no alignment loss), and it saw as many tokens as the real init
    assert (out / "init-lm-s0" / "run.json").is_file()
    by = {(r["condition"], r["seed"]): r for r in results["runs"]}
    assert by["lm-init", 0]["init_tokens"] == by["init-only", 0]["init_tokens"] > 0
    init_meta = json.loads((out / "init-lm-s0" / "run.json").read_text("utf-8"))
    assert init_meta["align_init"]["align_weight"] == 0.0
    report = (out / "report.md").read_text("utf-8")
    for cond in ALL:
        assert f"| {cond} |" in report
    for png in ("loss_curves.png", "similarity_by_layer.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = PRESETS["test"]
    for run in results["runs"]:
        assert [p["step"] for p in run["curve"]] == [cfg.steps // 2, cfg.steps]
        state = json.loads((checkpoint.latest_checkpoint(out / run["run"]) / "state.json").read_text("utf-8"))
        assert state["step"] == cfg.steps  # equal budgets: every condition ran all its steps
    assert results["data"]["lexicon_quality"]["all"]["p@1"] == 1.0  # the aligner recovers the clone identity


def test_metrics_are_recomputed_from_the_saved_models(experiment) -> None:
    out, results = experiment
    data = out / "data"
    tok = load_tokenizer(data / "tokenizer.json")
    cfg = PRESETS["test"]
    for run in results["runs"][:3]:
        model, _ = load_model(out / run["run"])
        for lang in ("en", "clone"):
            loss = text_loss(model, tok, data / f"{lang}.eval.txt", seq_len=cfg.seq_len, batch_size=cfg.batch_size)
            assert loss["loss"] == pytest.approx(run["heldout"][lang], rel=1e-6)
        truth = [line.split("\t")[0] for line in (data / "true_lexicon.tsv").read_text("utf-8").splitlines()]
        words = [w for w in truth if w.isalpha()][: cfg.retrieval_words]
        again = translation_retrieval(model, tok, [(w, clone_text(w)) for w in words])
        assert [x["pair_cosine"] for x in again] == pytest.approx([x["pair_cosine"] for x in run["retrieval"]])
    # different conditions and seeds give different models, hence different numbers
    losses = {round(r["heldout"]["clone"], 9) for r in results["runs"]}
    assert len(losses) == len(results["runs"])


def test_initialised_models_start_aligned(experiment) -> None:
    out, results = experiment
    data = out / "data"
    tok = load_tokenizer(data / "tokenizer.json")
    model, _ = load_model(out / "init-s0")
    fresh, _ = load_model(out / "joint-s0")
    truth = [line.split("\t")[0] for line in (data / "true_lexicon.tsv").read_text("utf-8").splitlines()]
    pairs = [(w, clone_text(w)) for w in truth if w.isalpha()][:30]
    init_cos = translation_retrieval(model, tok, pairs)[0]["pair_cosine"]
    joint_cos = translation_retrieval(fresh, tok, pairs)[0]["pair_cosine"]
    assert init_cos > joint_cos + 0.05


def test_rerun_keeps_finished_work_and_other_settings_are_refused(experiment, tmp_path: Path) -> None:
    out, results = experiment
    weights = out / "joint-s0" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    corpus = Path(results["corpus"])
    cli("experiment", "clone", "--corpus", corpus, "-o", out, "--config", "test", "--seeds", 2, "-q", *CONDS)
    assert weights.stat().st_mtime_ns == before
    again = json.loads((out / "results.json").read_text("utf-8"))
    assert [r["heldout"] for r in again["runs"]] == [r["heldout"] for r in results["runs"]]
    res = cli("experiment", "clone", "--corpus", corpus, "-o", out, "--config", "test", "--seeds", 1, *CONDS, code=2)
    assert "other settings" in res.stderr


def test_bad_conditions_and_short_corpus_are_clear_errors(tmp_path: Path) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text("one line .\ntwo lines .\n", encoding="utf-8")
    res = cli("experiment", "clone", "--corpus", corpus, "-o", tmp_path / "o", "--conditions", "joint,nope", code=2)
    assert "--conditions" in res.stderr
    res = cli("experiment", "clone", "--corpus", corpus, "-o", tmp_path / "o", "--config", "test", code=2)
    assert f"{corpus}: " in res.stderr and "too few" in res.stderr


def test_mean_sd() -> None:
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert mean_sd([5.0]) == (5.0, 0.0)
