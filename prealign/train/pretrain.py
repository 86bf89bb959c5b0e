"""The pretraining loop: code-switched shards -> a causal LM, resumable, with JSONL metrics.

Data. The shard directory's shards are split once: with two or more shards, the last
``max(1, round(eval_fraction * shards))`` shards (never all of them) are held out for evaluation; with a single
shard, its last ``max(1, round(eval_fraction * rows))`` rows are (when the shard has at least two rows; with one
row there is no evaluation). Training rows are read in the order of :class:`prealign.shards.ShardDataset`
(``plan_rows``: shards and rows permuted from ``(seed, epoch)``), one epoch after another. Evaluation always
reads the first ``eval_batches`` batches of the held-out rows in manifest order, so eval losses are comparable
across steps and runs.

Labels from the shards are used as they are (Hugging Face convention: the model shifts; -100 gives no loss).
The loss of a step is the mean over every label token of its ``grad_accum`` micro-batches (token-weighted), so
it does not depend on how a batch is split. Rows of different lengths are padded on the right (labels -100);
rows longer than the model's ``max_seq_len`` are truncated.

Resume. A checkpoint (``checkpoint.save_checkpoint``) holds the weights, ``state.json`` and ``optimizer.safetensors``
(all renamed into place together): the step, the data position (epoch and rows consumed in it, from which the row
order is replayed deterministically) and the torch RNG states as lists of ints. The learning rate is a pure
function of the step. Resuming truncates ``metrics.jsonl`` to the checkpoint's step, so on CPU in float32 the
metrics of an interrupted and resumed run equal an uninterrupted one. A resumed run takes its options from
``run.json``; an option given again must equal the record (those of ``RESUME_FREE`` may change), and
``state.json`` is checked (types, step within the schedule, the same step as the weights) before it is used.

Safety. Every shard is checked against the manifest (sha256, rows, tokens, ids inside the vocabulary) before the
first step. The run directory is locked while the command runs (:mod:`prealign.train.rundir`). A NaN or infinite
loss or gradient norm sets a flag on the device, read where values are read anyway (at the logging interval) and
before each checkpoint: training stops with :class:`prealign.train.runtime.TrainingDiverged` and no diverged
checkpoint is written. A full disk ends the command with ``error: RUN: no space left on device``, the previous
checkpoint whole.

Throughput. ``tokens`` counts input tokens (padding excluded); MFU (CUDA only, for GPUs in
:data:`PEAK_BF16_FLOPS`) uses ``6 N + 12 L T d`` FLOPs per token, N all parameters (the tied LM head is a real
matmul), L layers, T the batch's sequence length, d the model width.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from prealign import __version__
from prealign.errors import InputError
from prealign.shards import check_shards, plan_rows, read_manifest, read_rows
from prealign.textio import atomic_write_text, json_type
from prealign.train import checkpoint
from prealign.train.batches import collate, label_count
from prealign.train.model import CONFIGS, ModelConfig, Transformer, model_config, name_of, shape_of
from prealign.train.rundir import run_session
from prealign.train.runtime import TrainingDiverged, check_number, resolve_device, warmup_cosine

METRICS = "metrics.jsonl"
STAGE = "pretrain"
# options a resumed run may change: where it runs and how often it reports, not what it computes
RESUME_FREE = ("device", "compile", "save_every", "log_every", "eval_every")
_OPTION = {"model": "--config"}

# dense bf16 peak FLOP/s by GPU name (checked in order; first substring match wins)
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
]


@dataclass(frozen=True)
class PretrainConfig:
    """Everything about a pretraining run except its inputs and outputs."""

    model: str = "tiny"  # a name in prealign.train.model.CONFIGS
    model_overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 8  # rows per micro-batch
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    eval_every: int = 200  # 0: evaluate only at the end
    eval_batches: int = 20
    eval_fraction: float = 0.05
    log_every: int = 10
    save_every: int = 1000  # 0: save only at the end
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    dtype: str = "auto"  # auto (bf16 on CUDA, float32 elsewhere), bfloat16, float32

    def __post_init__(self) -> None:
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model config {self.model!r}; choose from {', '.join(CONFIGS)}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be at least 1")
        if min(self.warmup, self.eval_every, self.save_every) < 0 or min(self.eval_batches, self.log_every) < 1:
            raise ValueError("warmup, eval_every and save_every must be >= 0, eval_batches and log_every >= 1")
        check_number("lr", self.lr, 0)
        check_number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("grad_clip", self.grad_clip, 0)
        if not (isinstance(self.betas, tuple | list) and len(self.betas) == 2):
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            check_number("betas", beta, 0, 1)
        if not (isinstance(self.eval_fraction, int | float) and 0 <= self.eval_fraction < 1):
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction!r}")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16 or float32, not {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Learning rate of (1-based) ``step``."""
    return warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak from :data:`PEAK_BF16_FLOPS`, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def flops_per_token(model: Transformer, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L T d."""
    c = model.config
    return 6 * model.num_parameters() + 12 * c.n_layers * seq_len * c.dim


# --- data --------------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Which rows train and which evaluate: per shard (file, rows in file, rows used)."""

    train: list[tuple[str, int, int]]
    eval_rows: list[tuple[str, int, int, int]]  # file, rows in file, first row, stop row


def split_shards(manifest: dict[str, Any], eval_fraction: float) -> Split:
    """Hold out whole shards (two or more shards) or the last rows of the only shard (see the module doc)."""
    shards = [(str(s["file"]), int(s["rows"])) for s in manifest["shards"] if int(s["rows"]) > 0]
    if not shards:
        raise InputError("the shard directory holds no rows", manifest.get("_dir"))
    if eval_fraction <= 0:
        return Split([(f, n, n) for f, n in shards], [])
    if len(shards) >= 2:
        k = min(len(shards) - 1, max(1, round(eval_fraction * len(shards))))
        return Split([(f, n, n) for f, n in shards[:-k]], [(f, n, 0, n) for f, n in shards[-k:]])
    file, n = shards[0]
    if n < 2:
        return Split([(file, n, n)], [])
    k = min(n - 1, max(1, round(eval_fraction * n)))
    return Split([(file, n, n - k)], [(file, n, n - k, n)])


class TrainStream:
    """Training rows, epoch after epoch, in ShardDataset's order; ``position`` says where it is."""

    def __init__(self, directory: Path, train: list[tuple[str, int, int]], seed: int) -> None:
        self.directory, self.train, self.seed = directory, train, seed
        self.rows_per_epoch = sum(used for _, _, used in train)
        self.epoch, self.consumed = 0, 0
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] | None = None

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "rows_consumed": self.consumed}

    def seek(self, epoch: int, rows_consumed: int) -> None:
        """Continue at row ``rows_consumed`` of ``epoch``'s order."""
        self.epoch, self.consumed = epoch, rows_consumed
        self._it = self._epoch_rows(epoch, rows_consumed)

    def _epoch_rows(self, epoch: int, skip: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        plan = plan_rows([used for _, _, used in self.train], shuffle=True, seed=self.seed, epoch=epoch)
        for i, indices in plan:
            if skip >= len(indices):
                skip -= len(indices)
                continue
            file, n, _ = self.train[i]
            rows = read_rows(self.directory / file, n)
            o = rows.offsets
            for r in indices[skip:].tolist():
                yield rows.input_ids[o[r] : o[r + 1]], rows.labels[o[r] : o[r + 1]]
            skip = 0

    def take(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        if self._it is None:
            self.seek(self.epoch, self.consumed)
        while len(out) < n:
            row = next(self._it, None)  # type: ignore[arg-type]
            if row is None:
                self.seek(self.epoch + 1, 0)
                continue
            out.append(row)
            self.consumed += 1
        return out


def eval_rows(directory: Path, split: Split, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``limit`` held-out rows in manifest order."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for file, n, start, stop in split.eval_rows:
        if len(out) >= limit:
            break
        rows = read_rows(directory / file, n)
        o = rows.offsets
        for r in range(start, min(stop, start + limit - len(out))):
            out.append((rows.input_ids[o[r] : o[r + 1]].copy(), rows.labels[o[r] : o[r + 1]].copy()))
    return out


# --- the loop ----------------------------------------------------------------------------------------------------


def _tokenizer_sha(info: dict[str, Any]) -> str | None:
    return info.get("tokenizer_sha256") or (info.get("tokenizer") or {}).get("sha256")


def _param_groups(model: Transformer, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` ([] when there is none)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop this stage's rows after ``step`` (written after the checkpoint a resume starts from)."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    keep = []
    text = path.read_text("utf-8", errors="replace")
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            if n == len(lines) and not text.endswith("\n"):
                break  # a torn last line: the write of a killed run
            raise InputError("invalid JSON", path, n) from None
        if isinstance(row, dict) and not (row.get("stage", STAGE) == STAGE and row.get("step", 0) > step):
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    rows: list[tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    max_len: int,
    device: torch.device,
    autocast: Any,
) -> float | None:
    """Token-weighted mean loss over ``rows`` (None when they hold no label)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        ids, labels, _ = collate(rows[i : i + batch_size], max_len)
        n = label_count(labels)
        if n == 0:
            continue
        with autocast():
            loss = model(ids.to(device), labels.to(device)).loss
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count if count else None


def _check_shards(shards_dir: Path) -> None:
    """Every shard against the manifest (present, sha256, rows, tokens, ids in the vocabulary), before step 1."""
    try:
        problems = check_shards(shards_dir)
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputError(f"damaged shard directory: {reason}", shards_dir) from None
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InputError(f"damaged shard directory: {'; '.join(problems[:3])}{more}", shards_dir)


def option_name(field_name: str) -> str:
    """The command-line option of a config field (``batch_size`` -> ``--batch-size``)."""
    return _OPTION.get(field_name, "--" + field_name.replace("_", "-"))


def resume_config(cfg: PretrainConfig, recorded: Any, explicit: Collection[str] | None, path: Path) -> PretrainConfig:
    """The config a resumed run continues with: the run's record, where an option given explicitly (all of
    them when ``explicit`` is None) must equal it, except the options of :data:`RESUME_FREE`."""
    if not isinstance(recorded, dict):
        raise InputError(f"'config' is {json_type(recorded)}, expected an object", path)
    merged: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(cfg.to_dict())).items():
        if key not in recorded:
            raise InputError(f"'config' records no {key!r}", path)
        given = explicit is None or key in explicit
        if given and key not in RESUME_FREE and value != recorded[key]:
            raise InputError(
                f"{option_name(key)} {json.dumps(value)} differs from the run's {json.dumps(recorded[key])}: "
                "resume with the run's options",
                path,
            )
        merged[key] = value if given else recorded[key]
    if isinstance(merged["betas"], list):
        merged["betas"] = tuple(merged["betas"])
    try:
        return PretrainConfig(**merged)
    except (TypeError, ValueError) as exc:
        raise InputError(f"'config' is not valid: {exc}", path) from None


def init_config(
    cfg: PretrainConfig, init_model: ModelConfig, explicit: Collection[str] | None, init_run: Path
) -> PretrainConfig:
    """The config of a run started from ``init_run``: without an explicit ``--config`` it is the init's model;
    an explicit one that is another shape is an error."""
    name, overrides = name_of(init_model)
    if explicit is not None and "model" not in explicit and "model_overrides" not in explicit:
        return replace(cfg, model=name, model_overrides=overrides)
    want = model_config(cfg.model, init_model.vocab_size, **cfg.model_overrides)
    if shape_of(want) != shape_of(init_model):
        what = name + "".join(f", {k} {v}" for k, v in overrides.items())
        raise InputError(
            f"--config {cfg.model} does not match the init run's model ({what}): leave --config out to train it",
            init_run,
        )
    return cfg


def _check_resume_record(info: dict[str, Any], shards_dir: Path, init_run: Path | str | None, path: Path) -> None:
    """A resumed run reads the shards it was started on; ``--init`` (ignored on resume) must not disagree."""
    if info.get("shards") != str(shards_dir.resolve()):
        raise InputError(f"--shards {shards_dir} is not the run's shard directory {info.get('shards')}", path)
    if init_run is not None and info.get("init_run") != str(Path(init_run).resolve()):
        raise InputError(f"--init {init_run} is not the run's init {info.get('init_run')}", path)


def _check_state_fits(state: dict[str, Any], info: dict[str, Any], cfg: PretrainConfig, rows: int, path: Path) -> None:
    """The training position of ``state.json`` against the run: step within the schedule and equal to the
    weights' step, data position inside an epoch, an RNG state torch can take."""
    step = state["step"]
    if step > cfg.steps:
        raise InputError(f"'step' {step} is beyond the run's {cfg.steps} steps", path)
    if info.get("step") != step:
        raise InputError(
            f"'step' {step} does not match run.json's {info.get('step')}: a torn or edited checkpoint", path
        )
    if state["data"]["rows_consumed"] > rows:
        raise InputError(f"'data.rows_consumed' {state['data']['rows_consumed']} exceeds an epoch ({rows} rows)", path)
    if len(state["rng"]["torch"]) != len(torch.get_rng_state()):
        raise InputError("'rng.torch' is not a torch RNG state", path)


def pretrain(
    shards_dir: Path | str,
    run_dir: Path | str,
    config: PretrainConfig,
    init_run: Path | str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
    explicit: Collection[str] | None = None,
    verify_shards: bool = True,
) -> dict[str, Any]:
    """Train on ``shards_dir`` into ``run_dir``; returns a summary. ``stop_after`` ends (with a checkpoint) at that
    step of a ``config.steps`` schedule, to be continued with ``resume=True``. ``overwrite`` replaces a run
    already in ``run_dir``. ``explicit`` names the config fields the user gave (None: all): the others come
    from the run's record on resume, and the model from the init run with ``init_run``. ``verify_shards=False``
    skips checking every shard against the manifest, for a caller that has just checked the same shards."""
    from tqdm import tqdm

    shards_dir, run_dir = Path(shards_dir), Path(run_dir)
    cfg = config
    resolve_device(cfg.device)  # a bad --device fails before anything is read
    manifest = read_manifest(shards_dir)
    tok = manifest.get("tokenizer") or {}
    shards_sha = tok.get("sha256")
    if not shards_sha or not tok.get("vocab_size"):
        raise InputError("the manifest records no tokenizer sha256 / vocab_size", shards_dir / "manifest.json")
    if verify_shards:
        _check_shards(shards_dir)
    split = split_shards(manifest, cfg.eval_fraction)

    with run_session(run_dir, resume=resume, overwrite=overwrite) as session:
        start_step, position, saved_rng = 0, {"epoch": 0, "rows_consumed": 0}, None
        if resume:
            record = checkpoint.read_run(run_dir)
            cfg = resume_config(cfg, record.get("config"), explicit, run_dir / checkpoint.RUN)
            _check_resume_record(record, shards_dir, init_run, run_dir / checkpoint.RUN)
            split = split_shards(manifest, cfg.eval_fraction)
            device = resolve_device(cfg.device)
            model, info = checkpoint.load_model(run_dir, device)
            source = run_dir
        elif init_run is not None:
            device = resolve_device(cfg.device)
            row_tokens = manifest.get("row_tokens")
            model, info = checkpoint.load_model(Path(init_run), device, int(row_tokens) if row_tokens else None)
            cfg = init_config(cfg, model.config, explicit, Path(init_run))
            source = Path(init_run)
        else:
            device = resolve_device(cfg.device)
            torch.manual_seed(cfg.seed)
            overrides = dict(cfg.model_overrides)
            row_tokens = manifest.get("row_tokens")
            if row_tokens and "max_seq_len" not in overrides:
                overrides["max_seq_len"] = max(int(row_tokens), model_config(cfg.model, 1).max_seq_len)
            model = Transformer(model_config(cfg.model, int(tok["vocab_size"]), **overrides)).to(device)
            info, source = {}, None
        dtype = resolve_dtype(cfg.dtype, device)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if source is not None:
            run_sha = _tokenizer_sha(info)
            if run_sha != shards_sha:
                raise InputError(
                    f"tokenizer mismatch: the run was made with tokenizer sha256 {run_sha}, "
                    f"the shards with {shards_sha}",
                    source,
                )
        if model.config.vocab_size < int(tok["vocab_size"]):
            raise InputError(
                f"model vocabulary {model.config.vocab_size} < the shards' tokenizer's {tok['vocab_size']}",
                None if source is None else source / checkpoint.RUN,
            )

        model.train()
        fused = device.type == "cuda"
        optimizer = torch.optim.AdamW(
            _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=fused or None
        )
        stream = TrainStream(shards_dir, split.train, cfg.seed)
        if resume:
            state = checkpoint.load_state(run_dir, optimizer)
            _check_state_fits(state, info, cfg, stream.rows_per_epoch, run_dir / checkpoint.STATE)
            start_step, position, saved_rng = int(state["step"]), state["data"], state.get("rng")
            _truncate_metrics(run_dir, start_step)
        if saved_rng:
            _set_rng_state(saved_rng)

        stream.seek(int(position["epoch"]), int(position["rows_consumed"]))
        held_out = eval_rows(shards_dir, split, cfg.eval_batches * cfg.batch_size)
        max_len = model.config.max_seq_len
        pad_id = int(tok.get("pad_id") or tok.get("eot_id") or 0)

        step_model: torch.nn.Module = model
        if cfg.compile and device.type == "cuda":
            step_model = torch.compile(model)

        def autocast():
            if dtype == torch.float32:
                return nullcontext()
            return torch.autocast(device_type=device.type, dtype=dtype)

        peak = peak_flops(device)
        run_info = {
            "stage": STAGE,
            "tool": "prealign-data",
            "version": __version__,
            "tokenizer_sha256": shards_sha,
            "tokenizer_path": tok.get("path"),
            "tokenizer": tok,
            "shards": str(shards_dir.resolve()),
            "shards_ratio": manifest.get("ratio"),
            "shards_labels": manifest.get("labels"),
            "init_run": str(Path(init_run).resolve()) if init_run is not None else info.get("init_run"),
            "config": cfg.to_dict(),
        }
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        total_tokens = int(info.get("tokens", 0)) if resume else 0
        # set on the device, without a sync, when a step's loss or gradient norm is not finite; read back only
        # where values are read anyway (logging) and before a checkpoint is written
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)

        def check_finite(step: int) -> None:
            if bool(nonfinite):
                kept = "the last checkpoint is kept" if session.saved else "nothing was saved"
                raise TrainingDiverged(
                    f"training diverged: the loss or gradient norm became NaN or infinite by step {step} "
                    f"(try a lower --lr; {kept})",
                    run_dir,
                )

        def save(step: int) -> None:
            check_finite(step)
            state = {"step": step, "data": stream.position(), "rng": _rng_state(), "tokens": total_tokens}
            checkpoint.save_checkpoint(run_dir, model, {**run_info, "tokens": total_tokens}, state, optimizer)
            session.saved = True

        def log(row: dict[str, Any]) -> None:
            with open(run_dir / METRICS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stage": STAGE, **row}) + "\n")

        started = time.perf_counter()
        window_t, window_tokens = time.perf_counter(), 0
        loss_value, eval_loss = float("nan"), None
        bar = tqdm(
            total=cfg.steps, initial=start_step, desc=STAGE, unit="step", disable=not progress, dynamic_ncols=True
        )
        step = start_step
        try:
            for step in range(start_step + 1, end + 1):
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                micro = [collate(stream.take(cfg.batch_size), max_len, pad_id) for _ in range(cfg.grad_accum)]
                n_labels = sum(label_count(lab) for _, lab, _ in micro)
                step_loss = torch.zeros((), device=device)
                seq_len = max(ids.shape[1] for ids, _, _ in micro)
                for ids, labels, tokens in micro:
                    n = label_count(labels)
                    window_tokens += tokens
                    total_tokens += tokens
                    if n == 0:
                        continue
                    with autocast():
                        loss = step_model(ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)).loss
                    scaled = loss * (n / n_labels)
                    scaled.backward()
                    step_loss += scaled.detach().float()
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                nonfinite |= ~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                if step % max(1, cfg.log_every) == 0 or step == end:  # reading values back syncs: only here
                    check_finite(step)
                    loss_value = float(step_loss) if n_labels else float("nan")
                    grad_norm = float(grad_norm)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    now = time.perf_counter()
                    tps = window_tokens / max(now - window_t, 1e-9)
                    row = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": total_tokens}
                    row["tokens_per_s"] = tps
                    if peak:
                        row["mfu"] = tps * flops_per_token(model, seq_len) / peak
                    log(row)
                    bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tps:,.0f}")
                    window_t, window_tokens = now, 0
                if held_out and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                    eval_loss = evaluate(step_model, held_out, cfg.batch_size, max_len, device, autocast)
                    if eval_loss is not None:
                        log({"step": step, "eval_loss": eval_loss, "tokens": total_tokens})
                if (cfg.save_every and step % cfg.save_every == 0) or step == end:
                    save(step)
                bar.update(1)
        finally:
            bar.close()
    return {
        "run_dir": str(run_dir),
        "step": end,
        "steps": cfg.steps,
        "finished": end >= cfg.steps,
        "loss": loss_value,
        "eval_loss": eval_loss,
        "tokens": total_tokens,
        "parameters": model.num_parameters(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - started, 2),
    }
