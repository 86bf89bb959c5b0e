"""The pretraining loop: code-switched shards -> a causal LM, resumable, with JSONL metrics.

Data (:mod:`prealign.train.pretrain_data`). Held-out rows are evenly spaced over the whole corpus; training rows
are read in one global shuffled order per epoch, drawn from ``(seed, epoch)``, so every batch mixes every input
file. Evaluation always reads the same evenly spaced held-out rows, with the plain (not compiled) model.

Labels from the shards are used as they are (Hugging Face convention: the model shifts; -100 gives no loss).
The loss of a step is the mean over every label token of its ``grad_accum`` micro-batches (token-weighted), so
it does not depend on how a batch is split. Rows of different lengths are padded on the right (labels -100);
rows longer than the model's ``max_seq_len`` are truncated.

Resume. A checkpoint (``checkpoint.save_checkpoint``) is one directory renamed into place: the weights,
``run.json``, ``optimizer.safetensors`` and ``state.json`` (the step, the data position: epoch and rows consumed
in it, from which the row order is replayed exactly, and the torch RNG states as lists of ints). The learning rate
is a pure function of the step. Resuming truncates ``metrics.jsonl`` to the checkpoint's step, so on CPU in
float32 the metrics of an interrupted and resumed run equal an uninterrupted one. A resumed run takes its options
from ``run.json``; an option given again must equal the record (those of ``RESUME_FREE`` may change), and
``state.json`` is checked (types, step within the schedule, the same step as the weights) before it is used.

Safety. Every shard is checked against the manifest (sha256, rows, tokens, ids inside the vocabulary) before the
first step. The run directory is locked while the command runs (:mod:`prealign.train.rundir`). A NaN or infinite
loss or gradient norm sets a flag on the device, read where values are read anyway (at the logging interval) and
before each checkpoint: training stops with :class:`prealign.train.runtime.TrainingDiverged` and no diverged
checkpoint is written. A full disk ends the command with ``error: RUN: no space left on device``, the previous
checkpoint whole.

Throughput. Nothing in a step reads a value back from the device; on CUDA the next steps' batches are collated
into pinned memory by a background thread. ``tokens`` counts input tokens (padding excluded); ``tokens_per_s``
and MFU count training time only (evaluation and checkpoints left out); MFU (CUDA only, for GPUs in
:data:`PEAK_BF16_FLOPS`) uses ``6 N + 12 L T d`` FLOPs per token, N all parameters (the tied LM head is a real
matmul), L layers, T the batch's sequence length, d the model width.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from prealign import __version__
from prealign.errors import InputError
from prealign.shards import read_manifest, require_sound_shards
from prealign.textio import atomic_write_text, json_type
from prealign.train import checkpoint
from prealign.train.batches import collate, label_count
from prealign.train.model import CONFIGS, ModelConfig, Transformer, model_config, name_of, shape_of
from prealign.train.pretrain_data import Prefetcher, TrainStream, eval_rows, split_rows
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


# --- the loop ----------------------------------------------------------------------------------------------------


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


@dataclass
class Setup:
    """What a run trains: the config it continues with, the model, where it came from, the start position."""

    cfg: PretrainConfig
    model: Transformer
    device: torch.device
    info: dict[str, Any]  # run.json of the run or init run it starts from ({} for a fresh model)
    source: Path | None  # that run
    step: int = 0
    position: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "rows_consumed": 0})
    rng: dict[str, Any] | None = None


@dataclass
class StepBatch:
    """One optimizer step's micro-batches, made ahead (:class:`~prealign.train.pretrain_data.Prefetcher`)."""

    micro: list[tuple[torch.Tensor, torch.Tensor, int]]  # (input_ids, labels, real tokens), on the host
    labels: list[int]  # label tokens per micro-batch
    position: dict[str, int]  # the stream's position after these rows


def build_model(cfg: PretrainConfig, manifest: dict[str, Any], init_run: Path | None, device: torch.device):
    """A fresh model (seeded) or the init run's, as a :class:`Setup` (rows longer than the named config's
    length raise the model's ``max_seq_len``)."""
    row_tokens = manifest.get("row_tokens")
    if init_run is not None:
        model, info = checkpoint.load_model(init_run, device, int(row_tokens) if row_tokens else None)
        return Setup(cfg, model, device, info, init_run)
    torch.manual_seed(cfg.seed)
    overrides = dict(cfg.model_overrides)
    if row_tokens and "max_seq_len" not in overrides:
        overrides["max_seq_len"] = max(int(row_tokens), model_config(cfg.model, 1).max_seq_len)
    vocab = int(manifest["tokenizer"]["vocab_size"])
    return Setup(cfg, Transformer(model_config(cfg.model, vocab, **overrides)).to(device), device, {}, None)


def make_optimizer(model: Transformer, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, decay on matrices only; the fused kernel on CUDA."""
    groups = _param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True if device.type == "cuda" else None)


def next_batch(stream: TrainStream, cfg: PretrainConfig, max_len: int, pad_id: int, gpu: bool) -> StepBatch:
    """The rows of one optimizer step, collated (for a GPU: padded to a multiple of 8, pinned)."""
    micro = [collate(stream.take(cfg.batch_size), max_len, pad_id, gpu) for _ in range(cfg.grad_accum)]
    return StepBatch(micro, [label_count(labels) for _, labels, _ in micro], stream.position())


def train_step(model: torch.nn.Module, batch: StepBatch, device: torch.device, autocast) -> torch.Tensor:
    """Forward and backward over the micro-batches; returns the step's loss (token-weighted mean over every
    label token of the step, on the device: reading it would wait for the GPU)."""
    total_labels = sum(batch.labels)
    step_loss = torch.zeros((), device=device)
    for (ids, labels, _), n in zip(batch.micro, batch.labels, strict=True):
        if n == 0:
            continue
        with autocast():
            loss = model(ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)).loss
        scaled = loss * (n / total_labels)
        scaled.backward()
        step_loss += scaled.detach().float()
    return step_loss


def optimizer_step(model: Transformer, optimizer: torch.optim.Optimizer, lr: float, grad_clip: float) -> torch.Tensor:
    """Clip, step, zero; returns the gradient norm before clipping (on the device)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


class Clock:
    """Training time only: evaluation and checkpoints are left out of tokens/s and MFU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.tokens = device, 0.0, 0
        self._since = time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def pause(self) -> None:
        """Stop counting (waits for the device, so its queued work is counted)."""
        self.sync()
        self.seconds += time.perf_counter() - self._since

    def resume(self) -> None:
        self._since = time.perf_counter()

    def window(self) -> tuple[float, int]:
        """(training seconds, tokens) since the last call."""
        self.pause()
        out = (self.seconds, self.tokens)
        self.seconds, self.tokens = 0.0, 0
        self.resume()
        return out


def setup_run(
    cfg: PretrainConfig,
    manifest: dict[str, Any],
    shards_dir: Path,
    run_dir: Path,
    init_run: Path | None,
    resume: bool,
    explicit: Collection[str] | None,
) -> Setup:
    """The model and position to train from: the run's newest checkpoint (resume), the init run's model, or a
    fresh one."""
    if not resume:
        setup = build_model(cfg, manifest, init_run, resolve_device(cfg.device))
        if init_run is not None:
            setup.cfg = init_config(cfg, setup.model.config, explicit, init_run)
        return setup
    record = checkpoint.read_run(run_dir)
    where = checkpoint.model_dir(run_dir)
    cfg = resume_config(cfg, record.get("config"), explicit, where / checkpoint.RUN)
    _check_resume_record(record, shards_dir, init_run, where / checkpoint.RUN)
    device = resolve_device(cfg.device)
    model, info = checkpoint.load_model(run_dir, device)
    return Setup(cfg, model, device, info, run_dir)


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

    from prealign.train.model_metrics import rows_loss

    shards_dir, run_dir = Path(shards_dir), Path(run_dir)
    init_run = None if init_run is None else Path(init_run)
    resolve_device(config.device)  # a bad --device fails before anything is read
    manifest = read_manifest(shards_dir)
    tok = manifest.get("tokenizer") or {}
    if not tok.get("sha256") or not tok.get("vocab_size"):
        raise InputError("the manifest records no tokenizer sha256 / vocab_size", shards_dir / "manifest.json")
    if verify_shards:
        require_sound_shards(shards_dir)  # every shard against the manifest, before step 1
    split = split_rows(manifest, config.eval_fraction)  # a directory without rows fails before the run dir is made

    with run_session(run_dir, resume=resume, overwrite=overwrite) as session:
        # --- the model, the optimizer and the data, at the position the run starts from
        setup = setup_run(config, manifest, shards_dir, run_dir, init_run, resume, explicit)
        cfg, model, device = setup.cfg, setup.model, setup.device
        checkpoint.check_model_fits(model, setup.info, tok, setup.source)
        if cfg.eval_fraction != config.eval_fraction:  # a resumed run's recorded fraction
            split = split_rows(manifest, cfg.eval_fraction)
        stream = TrainStream(shards_dir, split, cfg.seed)
        optimizer = make_optimizer(model, cfg, device)
        if resume:
            state = checkpoint.load_state(run_dir, optimizer)
            where = checkpoint.model_dir(run_dir) / checkpoint.STATE
            _check_state_fits(state, setup.info, cfg, stream.rows_per_epoch, where)
            setup.step, setup.position, setup.rng = int(state["step"]), state["data"], state.get("rng")
            _truncate_metrics(run_dir, setup.step)
        if setup.rng:
            _set_rng_state(setup.rng)
        stream.seek(int(setup.position["epoch"]), int(setup.position["rows_consumed"]))
        held_out = eval_rows(shards_dir, split, cfg.eval_batches * cfg.batch_size)
        max_len = model.config.max_seq_len
        pad_id = int(tok.get("pad_id") or tok.get("eot_id") or 0)

        # --- the device: dtype, TF32, compile (evaluation uses the plain model: no recompiles)
        dtype = resolve_dtype(cfg.dtype, device)
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        step_model: torch.nn.Module = torch.compile(model) if cfg.compile and cuda else model
        model.train()

        def autocast():
            return nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)

        run_info = {
            "stage": STAGE,
            "tool": "prealign-data",
            "version": __version__,
            "tokenizer_sha256": tok["sha256"],
            "tokenizer_path": tok.get("path"),
            "tokenizer": tok,
            "shards": str(shards_dir.resolve()),
            "shards_ratio": manifest.get("ratio"),
            "shards_labels": manifest.get("labels"),
            "init_run": str(init_run.resolve()) if init_run is not None else setup.info.get("init_run"),
            "config": cfg.to_dict(),
        }
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        total_tokens = int(setup.info.get("tokens", 0)) if resume else 0
        # set on the device, without a sync, when a step's loss or gradient norm is not finite; read back only
        # where values are read anyway (logging) and before a checkpoint is written
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        peak = peak_flops(device)

        def check_finite(step: int) -> None:
            if bool(nonfinite):
                kept = "the last checkpoint is kept" if session.saved else "nothing was saved"
                raise TrainingDiverged(
                    f"training diverged: the loss or gradient norm became NaN or infinite by step {step} "
                    f"(try a lower --lr; {kept})",
                    run_dir,
                )

        def save(step: int, position: dict[str, int]) -> None:
            check_finite(step)
            state = {"step": step, "data": position, "rng": _rng_state(), "tokens": total_tokens}
            checkpoint.save_checkpoint(run_dir, model, {**run_info, "tokens": total_tokens}, state, optimizer)
            session.saved = True

        def log(row: dict[str, Any]) -> None:
            with open(run_dir / METRICS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stage": STAGE, **row}) + "\n")

        # --- the loop
        batches = Prefetcher(lambda: next_batch(stream, cfg, max_len, pad_id, gpu=cuda), depth=2 if cuda else 0)
        clock = Clock(device)
        started = time.perf_counter()
        loss_value, eval_loss = float("nan"), None
        bar = tqdm(
            total=cfg.steps, initial=setup.step, desc=STAGE, unit="step", disable=not progress, dynamic_ncols=True
        )
        try:
            for step in range(setup.step + 1, end + 1):
                batch = batches.next()
                lr = warmup_cosine(step, cfg.steps, cfg.warmup, cfg.lr, cfg.min_lr_ratio)
                step_loss = train_step(step_model, batch, device, autocast)
                grad_norm = optimizer_step(model, optimizer, lr, cfg.grad_clip)
                nonfinite |= ~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm)
                tokens = sum(t for _, _, t in batch.micro)
                clock.tokens += tokens
                total_tokens += tokens

                if step % cfg.log_every == 0 or step == end:  # reading values back waits for the device: only here
                    seconds, window_tokens = clock.window()
                    check_finite(step)
                    loss_value = float(step_loss) if sum(batch.labels) else float("nan")
                    tps = window_tokens / max(seconds, 1e-9)
                    row = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm)}
                    row.update(tokens=total_tokens, tokens_per_s=tps)
                    if peak:
                        seq_len = max(ids.shape[1] for ids, _, _ in batch.micro)
                        row["mfu"] = tps * flops_per_token(model, seq_len) / peak
                    log(row)
                    bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tps:,.0f}")
                if held_out and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
                    clock.pause()
                    eval_loss, _ = rows_loss(model, held_out, cfg.batch_size, max_len, device, autocast, pad_id)
                    if eval_loss is not None:
                        log({"step": step, "eval_loss": eval_loss, "tokens": total_tokens})
                    clock.resume()
                if (cfg.save_every and step % cfg.save_every == 0) or step == end:
                    clock.pause()
                    save(step, batch.position)
                    clock.resume()
                bar.update(1)
        finally:
            batches.close()
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
