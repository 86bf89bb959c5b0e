"""``prealign-data experiment clone``: the English-Clone experiment of the PreAlign paper, end to end.

Data: an English corpus is split into held-out lines and training lines; a share of the training lines is
written in Clone (the "little Clone" of the joint data), the rest stays English, and invented facts are stated
in the English part only. A byte-level BPE is trained on the English part and doubled into a joint English +
Clone tokenizer (:func:`prealign.train.clone.clone_tokenizer`). The lexicon is *extracted* by our aligner from
the parallel English/Clone version of the training lines and scored against the true lexicon.

Four conditions train on the same number of tokens (steps x batch x sequence length), per seed:
``joint`` (English + Clone, no PreAlign), ``prealign`` (alignment init + input-only code-switching),
``init-only`` and ``switch-only``. Each model is evaluated on held-out English and Clone loss (also at points
during training), translation retrieval and cosine by layer, the knowledge probe in Clone (and English), and a
zero-shot word-category transfer probe. Everything runs in this process (no Ray), one model at a time.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prealign.codeswitch.table import SwitchConfig
from prealign.codeswitch.tokenizer import load_tokenizer, save_tokenizer, tokenizer_info, train_tokenizer
from prealign.errors import InputError
from prealign.lexicon.evaluate import lexicon_precision
from prealign.lexicon.lexicon_io import read_lexicon
from prealign.pipelines.extract import ExtractJob, ParallelInput, extract_lexicon
from prealign.pipelines.switch_job import SwitchJob, switch_corpus
from prealign.text import SegmenterConfig
from prealign.textio import atomic_write_text

CONDITIONS = ("joint", "prealign", "init-only", "switch-only")
# a control on request: the init stage with the alignment loss switched off (its next-token term only), so
# "init-only" minus "lm-init" is the effect of the alignment objective itself, at the same extra tokens
EXTRA_CONDITIONS = ("lm-init",)
_INIT_OF = {"prealign": "init", "init-only": "init", "lm-init": "init-lm"}
_USES_SWITCH = {"prealign", "switch-only"}


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes of one experiment; the named presets are in :data:`PRESETS`."""

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 4096  # English BPE; the joint vocabulary is about twice that
    max_lines: int | None = None  # cap on corpus lines read
    eval_lines: int = 1000
    clone_share: float = 0.1  # share of the training lines written in Clone
    entities: int = 40  # invented entities, one fact per relation each
    fact_repeats: int = 20
    steps: int = 600
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    warmup: int = 50
    eval_points: int = 4  # held-out English/Clone loss measured this many times during training
    init_steps: int = 300
    init_batch: int = 256
    init_lr: float = 2e-3
    ratio: float = 0.05
    retrieval_words: int = 300
    device: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.clone_share < 1:
            raise ValueError("clone_share must be in (0, 1)")
        if self.eval_points < 1 or self.steps < self.eval_points:
            raise ValueError("eval_points must be in [1, steps]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, ExperimentConfig] = {
    "test": ExperimentConfig(
        model="tiny",
        model_overrides={"dim": 32, "n_layers": 1, "n_heads": 2},
        vocab_size=400,
        max_lines=600,
        eval_lines=60,
        entities=4,
        fact_repeats=4,
        steps=8,
        batch_size=4,
        seq_len=32,
        warmup=2,
        eval_points=2,
        init_steps=6,
        init_batch=32,
        retrieval_words=30,
        device="cpu",
    ),
    "tiny": ExperimentConfig(
        vocab_size=2048,
        max_lines=30000,
        eval_lines=500,
        entities=12,  # few facts stated often: the tiny model must learn them in English at all
        fact_repeats=80,
        steps=300,
        batch_size=16,
        seq_len=128,
        init_steps=150,
    ),
    "small": ExperimentConfig(
        model="mini", vocab_size=8192, steps=3000, batch_size=16, seq_len=256, lr=1e-3, warmup=100, init_steps=1000
    ),
    "gpu": ExperimentConfig(
        model="base",
        vocab_size=16384,
        entities=200,
        fact_repeats=30,
        steps=20000,
        batch_size=64,
        seq_len=512,
        lr=6e-4,
        warmup=500,
        eval_points=10,
        init_steps=2000,
        init_batch=1024,
        init_lr=1e-3,
        retrieval_words=1000,
        device="cuda",
        compile=True,
    ),
}


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_corpus(corpus: Path, cfg: ExperimentConfig) -> list[str]:
    """The corpus lines the experiment uses; a file it cannot use (missing, not UTF-8 text, empty, too few
    lines for the held-out split) is an :class:`InputError` naming it."""
    from prealign.train.clone import read_english

    lines = read_english(corpus, cfg.max_lines)
    if len(lines) < 4 * cfg.eval_lines:
        raise InputError(
            f"{len(lines)} lines is too few for {cfg.eval_lines} held-out lines (need {4 * cfg.eval_lines})", corpus
        )
    return lines


def prepare_data(
    corpus: Path, data: Path, cfg: ExperimentConfig, echo: Callable[[str], None], lines: list[str] | None = None
) -> dict[str, Any]:
    """Split, clone, tokenizer, lexicon (extracted and true), facts and shards under ``data``; returns the facts
    of the data (sizes, lexicon quality). ``lines``: the corpus already read by :func:`read_corpus`."""
    from prealign.train.clone import clone_text, clone_tokenizer, symmetric_pre_tokenizer, true_lexicon
    from prealign.train.probes import fact_sentences, make_facts

    data.mkdir(parents=True, exist_ok=True)
    lines = read_corpus(corpus, cfg) if lines is None else lines
    every = len(lines) // cfg.eval_lines
    eval_idx = set(range(every - 1, len(lines), every)[: cfg.eval_lines])
    train = [line for i, line in enumerate(lines) if i not in eval_idx]
    held_out = [lines[i] for i in sorted(eval_idx)]
    rng = random.Random(0)  # the data are the same for every seed: seeds vary training only
    clone_rows = set(rng.sample(range(len(train)), round(cfg.clone_share * len(train))))
    english = [line for i, line in enumerate(train) if i not in clone_rows]
    clone_part = [clone_text(train[i]) for i in sorted(clone_rows)]

    truth = true_lexicon(train)
    facts = make_facts(cfg.entities, seed=1, avoid={w for w, _, _ in truth})
    for sentence in fact_sentences(facts, cfg.fact_repeats, seed=2):
        english.insert(rng.randrange(len(english) + 1), sentence)
    _write_lines(data / "en.train.txt", english)
    _write_lines(data / "clone.train.txt", clone_part)
    _write_lines(data / "en.eval.txt", held_out)
    _write_lines(data / "clone.eval.txt", [clone_text(x) for x in held_out])
    _write_lines(data / "parallel.en", train)
    _write_lines(data / "parallel.clone", [clone_text(x) for x in train])
    atomic_write_text(data / "true_lexicon.tsv", "".join(f"{w}\t{c}\t{n}\n" for w, c, n in truth))
    atomic_write_text(data / "facts.json", json.dumps([asdict(f) for f in facts], indent=1) + "\n")

    echo("tokenizer: byte-level BPE on the English part, doubled into English + Clone")
    english_tok = train_tokenizer([data / "en.train.txt"], cfg.vocab_size, pre_tokenizer=symmetric_pre_tokenizer())
    joint, _ = clone_tokenizer(english_tok)
    save_tokenizer(joint, data / "tokenizer.json")

    echo("lexicon: extract-lexicon on the parallel English/Clone text")
    split = SegmenterConfig(apostrophe="split")
    extract_lexicon(
        ExtractJob(
            data=ParallelInput(src=data / "parallel.en", tgt=data / "parallel.clone"),
            src_segmenter=split,
            tgt_segmenter=split,
            output=data / "lexicon.parquet",
            workers=0,
            progress=False,
        )
    )
    lexicon, _ = read_lexicon(data / "lexicon.parquet")
    import polars as pl

    gold = pl.DataFrame({"src": [w for w, _, _ in truth], "tgt": [c for _, c, _ in truth]})
    counts = pl.DataFrame({"src": [w for w, _, _ in truth], "count": [n for *_, n in truth]})
    quality = {
        "all": lexicon_precision(lexicon, gold),
        "count>=5": lexicon_precision(lexicon, gold, min_count=5, src_counts=counts),
    }

    echo("shards: plain, and code-switched per seed later")
    _switch(data, data / "shards-plain", cfg, ratio=0.0, seed=0)
    return {
        "lines": len(lines),
        "train_lines": len(train),
        "english_lines": len(english) - len(facts) * cfg.fact_repeats,
        "clone_lines": len(clone_part),
        "eval_lines": len(held_out),
        "fact_sentences": len(facts) * cfg.fact_repeats,
        "facts": len(facts),
        "english_vocab": english_tok.get_vocab_size(),
        "joint_vocab": joint.get_vocab_size(),
        "lexicon_entries": lexicon.height,
        "lexicon_quality": quality,
    }


def _switch(data: Path, out: Path, cfg: ExperimentConfig, ratio: float, seed: int) -> dict[str, Any]:
    if (out / "manifest.json").is_file():
        return json.loads((out / "manifest.json").read_text("utf-8"))
    return switch_corpus(
        SwitchJob(
            corpus=[data / "en.train.txt", data / "clone.train.txt"],
            lexicon=data / "lexicon.parquet",
            tokenizer=data / "tokenizer.json",
            output=out,
            config=SwitchConfig(ratio=ratio, seed=seed),
            seq_len=cfg.seq_len,
            workers=0,
            progress=False,
        )
    )


def _align_init(data: Path, run: Path, cfg: ExperimentConfig, seed: int, align_weight: float = 0.1) -> dict[str, Any]:
    from prealign.train.align_init import AlignInitConfig, run_align_init

    if (run / "run.json").is_file():
        return {"run_dir": str(run), "reused": True}
    init = AlignInitConfig(
        steps=cfg.init_steps,
        batch_size=cfg.init_batch,
        lr=cfg.init_lr,
        warmup=max(1, cfg.init_steps // 10),
        seed=seed,
        device=cfg.device,
        align_weight=align_weight,
    )
    return run_align_init(
        data / "lexicon.parquet",
        data / "tokenizer.json",
        run,
        cfg.model,
        init,
        overrides=cfg.model_overrides,
        overwrite=True,  # what an interrupted init left there
    )


def _heldout(model, tok, data: Path, cfg: ExperimentConfig) -> dict[str, float]:
    from prealign.train.model_metrics import text_loss

    return {
        lang: text_loss(model, tok, data / f"{lang}.eval.txt", seq_len=cfg.seq_len, batch_size=cfg.batch_size)["loss"]
        for lang in ("en", "clone")
    }


def _train(
    data: Path, shards: Path, run: Path, cfg: ExperimentConfig, seed: int, init: Path | None
) -> list[dict[str, Any]]:
    """Pretrain in ``eval_points`` segments (resume is exact), measuring held-out losses after each."""
    from prealign.train.checkpoint import load_model
    from prealign.train.pretrain import PretrainConfig, pretrain

    curve_path = run / "heldout.jsonl"
    if (run / "done").is_file():
        return [json.loads(x) for x in curve_path.read_text("utf-8").splitlines() if x.strip()]
    pcfg = PretrainConfig(
        model=cfg.model,
        model_overrides=dict(cfg.model_overrides),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=cfg.warmup,
        eval_every=0,
        eval_fraction=0.0,
        save_every=0,
        log_every=max(1, cfg.steps // 50),
        seed=seed,
        device=cfg.device,
        compile=cfg.compile,
    )
    tok = load_tokenizer(data / "tokenizer.json")
    tokens_per_step = cfg.batch_size * (cfg.seq_len + 1)
    curve: list[dict[str, Any]] = []
    stops = sorted({round(cfg.steps * (k + 1) / cfg.eval_points) for k in range(cfg.eval_points)})
    for k, stop in enumerate(stops):
        pretrain(
            shards,
            run,
            pcfg,
            init_run=init if k == 0 else None,
            resume=k > 0,
            progress=False,
            stop_after=stop,
            overwrite=k == 0,  # what an interrupted run left there is trained again
            verify_shards=k == 0,  # the later segments read the shards the first one checked
        )
        model, _ = load_model(run, device="cpu")
        curve.append({"step": stop, "tokens": stop * tokens_per_step, **_heldout(model, tok, data, cfg)})
    atomic_write_text(curve_path, "".join(json.dumps(row) + "\n" for row in curve))
    (run / "done").write_text("", encoding="utf-8")
    return curve


def evaluate_run(run: Path, data: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """Every metric of a trained model, computed from the model."""
    from prealign.train.checkpoint import load_model
    from prealign.train.clone import clone_text
    from prealign.train.model_metrics import translation_retrieval
    from prealign.train.probes import Fact, knowledge_probe, transfer_probe

    tok = load_tokenizer(data / "tokenizer.json")
    model, _ = load_model(run, device="cpu")
    eot = tokenizer_info(tok).eot_id
    facts = [Fact(**f) for f in json.loads((data / "facts.json").read_text("utf-8"))]
    truth = [line.split("\t") for line in (data / "true_lexicon.tsv").read_text("utf-8").splitlines()]
    words = [w for w, _, _ in truth if w.isalpha()][: cfg.retrieval_words]
    vocab = {w for w, _, _ in truth}
    return {
        "heldout": _heldout(model, tok, data, cfg),
        "retrieval": translation_retrieval(model, tok, [(w, clone_text(w)) for w in words]),
        "knowledge_clone": knowledge_probe(model, tok, facts, clone_text, bos=eot),
        "knowledge_en": knowledge_probe(model, tok, facts, bos=eot),
        "transfer": transfer_probe(model, tok, clone_text, words=vocab),
    }


def run_experiment(
    corpus: Path,
    output: Path,
    cfg: ExperimentConfig,
    seeds: int = 2,
    conditions: tuple[str, ...] = CONDITIONS,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or finish: finished steps are kept) the experiment into ``output``; returns the results and writes
    ``results.json``, ``report.md`` and the plots."""
    from prealign.train.checkpoint import read_json
    from prealign.train.experiment_report import write_report
    from prealign.train.runtime import resolve_device

    resolve_device(cfg.device)  # a device this machine lacks fails before anything is written
    started = time.perf_counter()
    data = output / "data"
    settings = {"corpus": str(corpus), "config": cfg.to_dict(), "seeds": seeds, "conditions": list(conditions)}
    settings_path = output / "settings.json"
    fresh = not settings_path.is_file()
    if not fresh and read_json(settings_path) != settings:
        raise InputError("holds an experiment with other settings; use another directory", output)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if (data / "summary.json").is_file():
        data_summary = read_json(data / "summary.json")
    else:
        lines = read_corpus(corpus, cfg)  # a corpus it cannot use fails before anything is written
        created = output if not output.exists() else data if not data.exists() else None
        try:
            output.mkdir(parents=True, exist_ok=True)
            atomic_write_text(settings_path, json.dumps(settings, indent=1) + "\n")
            data_summary = prepare_data(corpus, data, cfg, echo, lines)
            atomic_write_text(data / "summary.json", json.dumps(data_summary, indent=1) + "\n")
        except InputError:
            if fresh:  # bad input in an experiment that had not started: leave nothing behind
                if created is not None:
                    shutil.rmtree(created, ignore_errors=True)
                settings_path.unlink(missing_ok=True)
            raise
    timings["data"] = time.perf_counter() - t
    q = data_summary["lexicon_quality"]["count>=5"]
    echo(f"lexicon: {data_summary['lexicon_entries']} entries, P@1 {q['p@1']:.3f} against the true lexicon")
    runs: list[dict[str, Any]] = []
    init_tokens: dict[tuple[str, int], int] = {}
    for seed in range(seeds):
        init_dirs: dict[str, Path] = {}
        for kind in sorted({_INIT_OF[c] for c in conditions if c in _INIT_OF}):
            init_dir = init_dirs[kind] = output / f"{kind}-s{seed}"
            t = time.perf_counter()
            echo(f"seed {seed}: {kind} ({cfg.init_steps} steps)")
            _align_init(data, init_dir, cfg, seed, align_weight=0.0 if kind == "init-lm" else 0.1)
            timings[f"{kind}-s{seed}"] = time.perf_counter() - t
            rows = [json.loads(x) for x in (init_dir / "metrics.jsonl").read_text("utf-8").splitlines() if x.strip()]
            init_tokens[kind, seed] = int(rows[-1].get("tokens", 0)) if rows else 0
        switched = data / f"shards-switched-s{seed}"
        if _USES_SWITCH & set(conditions):
            manifest = _switch(data, switched, cfg, ratio=cfg.ratio, seed=seed)
        for cond in conditions:
            t = time.perf_counter()
            run = output / f"{cond}-s{seed}"
            shards = switched if cond in _USES_SWITCH else data / "shards-plain"
            echo(f"seed {seed}: {cond}: pretraining {cfg.steps} steps")
            init = init_dirs[_INIT_OF[cond]] if cond in _INIT_OF else None
            curve = _train(data, shards, run, cfg, seed, init)
            metrics = evaluate_run(run, data, cfg)
            record = {"condition": cond, "seed": seed, "run": run.name, "curve": curve, **metrics}
            if cond in _USES_SWITCH:
                record["switch"] = manifest.get("rates", {})
            if cond in _INIT_OF:
                record["init_tokens"] = init_tokens[_INIT_OF[cond], seed]
            runs.append(record)
            timings[f"{cond}-s{seed}"] = time.perf_counter() - t
            h = metrics["heldout"]
            echo(
                f"  loss en {h['en']:.3f} clone {h['clone']:.3f}; knowledge (Clone) "
                f"{metrics['knowledge_clone']['accuracy']:.3f}; transfer {metrics['transfer']['transfer']:.3f}"
            )
    results = {
        **settings,
        "data": data_summary,
        "runs": runs,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(output / "results.json", json.dumps(results, indent=1) + "\n")
    results["report"] = str(write_report(results, output))
    return results


def preset(name: str, **overrides: Any) -> ExperimentConfig:
    """A named configuration with overrides (None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown experiment config {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
