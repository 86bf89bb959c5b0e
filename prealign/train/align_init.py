"""Alignment initialisation (PreAlign step 2): pull the representations of translations together.

Each lexicon *entry* is a source word and its translations. Positives come from the lexicon's word graph: two
words are positives when they share an entry anywhere in the lexicon (one translates the other, or both
translate one word), whichever entries the batch drew, so a known translation is never a negative. Every word
is fed to the model *alone* (no context), encoded with a leading space (``" word"``), which is how a byte-level
BPE tokenizer (``add_prefix_space=False``) sees a word in the middle of a sentence (``Ġword``); token ids are
cut at ``max_word_tokens``.

At every layer (:mod:`prealign.train.word_model`: 0 = embedding output, 1..L = block outputs, L+1 = the LM-head
rows of the word's tokens when the head is not tied to the embedding) the word's token states are summed and
L2-normalised. The contrastive loss is multi-positive InfoNCE with the sum of positives *inside* the log
(SupCon's "L_in" variant)::

    loss_i = -log( sum_{p in P(i)} exp(s_ip / t) / sum_{k not in X(i)} exp(s_ik / t) )

averaged over anchors i with at least one positive; X(i) is i itself and other copies of the *same word*
(identical string) in the batch: a word is never its own positive or negative. Total loss = next-token LM
loss on the words (each word alone; the first token has no target) + ``align_weight`` x the mean of the
contrastive losses over layers.

Batches are right-padded. Under a causal mask the states of real tokens never see the padding on their right,
so our model runs with plain causal attention (fast kernels) and the padding mask is used only for pooling and
targets. Everything a step needs from the batch (positives, target positions, token counts) is computed on
the host when the batch is made, and losses are read back only at the logging interval: a step never waits
on the GPU.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from prealign.train.runtime import DEVICE_PATTERN, TrainingDiverged, check_number, resolve_device, warmup_cosine
from prealign.train.word_model import WordModel, next_token_loss, pool, word_model


@dataclass(frozen=True)
class AlignInitConfig:
    """Hyper-parameters of alignment initialisation (defaults follow the PreAlign paper where it says)."""

    temperature: float = 0.1
    align_weight: float = 0.1
    layers: str | tuple[int, ...] = "all"  # "all" or layer indices (0 embedding, 1..L blocks, L+1 untied LM head)
    steps: int = 2000
    batch_size: int = 256  # lexicon entries per step
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    max_word_tokens: int = 16
    max_translations: int | None = None  # keep the best translations of a source word (by p_tgt_given_src)
    min_prob: float = 0.0  # keep lexicon rows with p_tgt_given_src >= min_prob
    min_count: int = 1  # keep lexicon rows with count >= min_count
    prefix_space: bool = True  # encode " word" (the mid-sentence form)
    log_every: int = 10
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            if self.layers != "all":
                raise ValueError(f"layers must be 'all' or a list of layer indices, got {self.layers!r}")
        else:
            layers = tuple(self.layers)
            if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
                raise ValueError(f"layers must be non-negative integers, got {self.layers!r}")
            if len(set(layers)) != len(layers):
                raise ValueError(f"layers repeat an index: {self.layers!r}")
            object.__setattr__(self, "layers", layers)
        check_number("temperature", self.temperature, 0, open_low=True)
        check_number("align_weight", self.align_weight, 0)
        check_number("lr", self.lr, 0, open_low=True)
        check_number("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_number("weight_decay", self.weight_decay, 0)
        check_number("min_prob", self.min_prob, 0, 1)
        if self.grad_clip is not None:
            check_number("grad_clip", self.grad_clip, 0, open_low=True)
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2 (in-batch negatives)"),
            (self.warmup >= 0, "warmup must be >= 0"),
            (self.max_word_tokens >= 1, "max_word_tokens must be >= 1"),
            (self.max_translations is None or self.max_translations >= 1, "max_translations must be >= 1"),
            (self.min_count >= 0, "min_count must be >= 0"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (
                isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
                f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------------------------------------------- data


def lexicon_entries(lexicon: pl.DataFrame, config: AlignInitConfig) -> list[tuple[str, ...]]:
    """Entries ``(src, tgt1, tgt2, ...)`` sorted by source word; translations best first, distinct.

    Rows below ``min_count`` or ``min_prob`` are dropped; an entry left with no translation other than the
    source word itself is dropped (it has no positive).
    """
    missing = {"src", "tgt"} - set(lexicon.columns)
    if missing:
        raise ValueError(f"lexicon lacks column(s) {sorted(missing)}")
    df = lexicon
    if "count" in df.columns:
        df = df.filter(pl.col("count") >= config.min_count)
    order, descending = ["src"], [False]
    if "p_tgt_given_src" in df.columns:
        df = df.filter(pl.col("p_tgt_given_src") >= config.min_prob)
        order, descending = [*order, "p_tgt_given_src"], [*descending, True]
    if "count" in df.columns:
        order, descending = [*order, "count"], [*descending, True]
    df = df.sort([*order, "tgt"], descending=[*descending, False])
    groups: dict[str, list[str]] = {}
    for src, tgt in df.select("src", "tgt").iter_rows():
        if not src or not tgt:
            continue
        words = groups.setdefault(src, [src])
        if tgt not in words and (config.max_translations is None or len(words) <= config.max_translations):
            words.append(tgt)
    return [tuple(words) for words in groups.values() if len(words) > 1]


def encode_words(
    tokenizer: Tokenizer, words: Sequence[str], max_word_tokens: int, prefix_space: bool = True
) -> list[list[int]]:
    """Token ids of each word alone (``" word"`` when ``prefix_space``), cut at ``max_word_tokens``."""
    texts = [(" " + w) if prefix_space else w for w in words]
    ids = [enc.ids[:max_word_tokens] for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    empty = [w for w, i in zip(words, ids, strict=True) if not i]
    if empty:
        raise ValueError(f"words with no tokens: {empty[:5]}")
    return ids


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[N, T]`` ids and the boolean mask of real tokens."""
    width = max(len(i) for i in ids)
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, : len(i)] = torch.tensor(i, dtype=torch.long)
    return out, torch.arange(width)[None, :] < torch.tensor([len(i) for i in ids])[:, None]


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding id: ``<|pad|>``-like, else end-of-text, else 0 (padding is masked out anyway)."""
    from prealign.codeswitch.tokenizer import tokenizer_info

    info = tokenizer_info(tokenizer)
    return info.pad_id if info.pad_id is not None else info.eot_id if info.eot_id is not None else 0


# ---------------------------------------------------------------------------------------------------- objective


def info_nce(
    vectors: torch.Tensor, positive: torch.Tensor, exclude: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Multi-positive InfoNCE over in-batch negatives (see the module docstring for the exact form).

    ``vectors`` ``[N, D]`` (normalised here); ``positive`` ``[N, N]`` marks positive pairs; ``exclude`` ``[N, N]``
    marks pairs that are neither (the diagonal, copies of the same word). Returns the mean over anchors that
    have a positive, 0 with a gradient path when none has; nothing in it waits on the device.
    """
    z = F.normalize(vectors.float(), dim=-1)
    logits = z @ z.T / temperature
    positive = positive & ~exclude
    has_positive = positive.any(1)
    # a large finite negative instead of -inf: exp() is exactly 0 and no NaN reaches the gradient
    neg_big = -1e4
    log_all = torch.logsumexp(logits.masked_fill(exclude, neg_big), dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positive, neg_big), dim=1)
    per_anchor = torch.where(has_positive, log_all - log_pos, torch.zeros_like(log_all))
    return per_anchor.sum() / has_positive.sum().clamp_min(1)


@dataclass
class Batch:
    """Words of a batch of entries, with what the objective needs, made on the host.

    ``ids``/``mask`` ``[N, T]``; ``positive``/``exclude`` ``[N, N]`` (see :func:`info_nce`); ``rows``/``cols``
    the positions whose next token is a target; ``word_ids`` ``[N]`` the index of each word; ``tokens`` the
    number of real tokens.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    positive: torch.Tensor
    exclude: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    word_ids: torch.Tensor
    tokens: int

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        moved = [t.to(device, non_blocking=non_blocking) for t in astuple(self)[:-1]]
        return Batch(*moved, self.tokens)

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in astuple(self)[:-1]), self.tokens)


def make_batch(word_ids: Sequence[int], table: torch.Tensor, lengths: torch.Tensor, entries_of) -> Batch:
    """The :class:`Batch` of words ``word_ids`` (rows of ``table``); ``entries_of(w)`` lists the lexicon entries
    word ``w`` belongs to, which decides the positives."""
    index = torch.tensor(word_ids, dtype=torch.long)
    width = int(lengths[index].max())
    ids = table[index, :width]
    mask = torch.arange(width)[None, :] < lengths[index][:, None]
    n = len(word_ids)
    positive = torch.zeros(n, n, dtype=torch.bool)
    rows_of: dict[int, list[int]] = {}
    for row, w in enumerate(word_ids):
        for e in entries_of(w):
            rows_of.setdefault(e, []).append(row)
    for rows in rows_of.values():
        if len(rows) > 1:
            r = torch.tensor(rows)
            positive[r[:, None], r[None, :]] = True
    exclude = index[:, None] == index[None, :]
    rows, cols = mask[:, 1:].nonzero(as_tuple=True)
    return Batch(ids, mask, positive, exclude, rows, cols, index, int(mask.sum()))


def align_losses(
    wm: WordModel, batch: Batch, layers: Sequence[int], config: AlignInitConfig
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(total, lm_loss, [contrastive loss per layer])`` for one batch."""
    hidden = wm.hidden(batch.ids, batch.mask)
    if len(batch.rows):  # known on the host: no sync
        lm = next_token_loss(wm, hidden[-1], batch.ids, batch.rows, batch.cols)
    else:
        lm = hidden[-1].sum() * 0.0
    vectors = [pool(wm.layer_states(hidden, batch.ids, i), batch.mask) for i in layers]
    aligns = [info_nce(v, batch.positive, batch.exclude, config.temperature) for v in vectors]
    total = lm + config.align_weight * torch.stack(aligns).mean()
    return total, lm, aligns


class EntryBatcher:
    """Batches of entries: successive random permutations of all entries (seeded), words padded together."""

    def __init__(
        self, tokenizer: Tokenizer, entries: Sequence[Sequence[str]], config: AlignInitConfig, seed: int
    ) -> None:
        if len(entries) < 2:
            raise ValueError(f"need at least 2 lexicon entries for in-batch negatives, got {len(entries)}")
        vocab: dict[str, int] = {}
        self.entries = [[vocab.setdefault(w, len(vocab)) for w in entry] for entry in entries]
        self.words = list(vocab)
        self.word_entries: list[list[int]] = [[] for _ in self.words]
        for e, words in enumerate(self.entries):
            for w in words:
                self.word_entries[w].append(e)
        ids = encode_words(tokenizer, self.words, config.max_word_tokens, config.prefix_space)
        self.table, mask = pad_ids(ids, pad_token_id(tokenizer))
        self.lengths = mask.sum(1)
        self.batch_size = min(config.batch_size, len(entries))
        self.generator = torch.Generator().manual_seed(seed)
        self._order: list[int] = []

    def next(self) -> Batch:
        chosen: list[int] = []
        while len(chosen) < self.batch_size:
            if not self._order:
                self._order = torch.randperm(len(self.entries), generator=self.generator).tolist()
            chosen.append(self._order.pop())
        words = [w for e in chosen for w in self.entries[e]]
        return make_batch(words, self.table, self.lengths, self.word_entries.__getitem__)


def train_align_init(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    lexicon_df: pl.DataFrame,
    config: AlignInitConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` (ours, or a transformers causal LM) in place on the lexicon; return the metrics of each
    logged step.

    Logged metrics are averages over the steps since the previous log: ``step`` (1-based), ``lr``, ``loss``,
    ``lm_loss``, ``align_loss`` (mean over layers) and ``align_layers`` (``{layer name: loss}``), with ``tokens``
    (word tokens fed so far). ``progress`` is called with each. On CUDA the forward runs under bf16 autocast,
    the next batch is made while the GPU works and copied from pinned memory; on CPU in float32, and the same
    seed and inputs give identical metrics.
    """
    config = config or AlignInitConfig()
    wm = word_model(model)
    layers = wm.layer_indices(config.layers)
    names = [wm.name(i) for i in layers]
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    rows = wm.head_weight().shape[0]
    if vocab > rows:
        raise ValueError(f"tokenizer has {vocab} tokens but the model only {rows}")
    entries = lexicon_entries(lexicon_df, config)
    batcher = EntryBatcher(tokenizer, entries, config, config.seed)
    if wm.max_len is not None and batcher.table.size(1) > wm.max_len:
        raise ValueError("max_word_tokens is longer than the model's maximum sequence length")
    device = resolve_device(config.device)
    model.to(device).train()
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=True if cuda else None)

    def autocast() -> Any:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def prepared() -> Batch:
        batch = batcher.next()
        return batch.pin_memory().to(device, non_blocking=True) if cuda else batch

    metrics: list[dict[str, Any]] = []
    window = torch.zeros(2 + len(layers), device=device)  # summed on the device, read at the log interval
    window_steps, tokens = 0, 0
    batch = prepared()
    for step in range(1, config.steps + 1):  # optimizer steps counted from 1, as warmup_cosine counts them
        lr = warmup_cosine(step, config.steps, config.warmup, config.lr, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tokens += batch.tokens
        with autocast():
            total, lm, aligns = align_losses(wm, batch, layers, config)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        window += torch.stack([total.detach(), lm.detach(), *(a.detach() for a in aligns)]).float()
        window_steps += 1
        if step < config.steps:
            batch = prepared()  # made on the host while the device runs this step
        if step % config.log_every == 0 or step == config.steps:
            mean = (window / window_steps).tolist()
            if not all(math.isfinite(x) for x in mean):
                raise TrainingDiverged(
                    f"training diverged: the loss became NaN or infinite by step {step} (try a lower --lr)"
                )
            record = {
                "step": step,
                "lr": lr,
                "loss": mean[0],
                "lm_loss": mean[1],
                "align_loss": sum(mean[2:]) / len(layers),
                "align_layers": dict(zip(names, mean[2:], strict=True)),
                "entries": len(entries),
                "tokens": tokens,
            }
            metrics.append(record)
            window.zero_()
            window_steps = 0
            if progress is not None:
                progress(record)
    model.eval()
    return metrics


def usable_entries(lexicon: Path, config: AlignInitConfig) -> pl.DataFrame:
    """The lexicon read and checked: at least two entries must be left after the filters of ``config``."""
    from prealign.errors import InputError
    from prealign.lexicon.lexicon_io import read_lexicon

    df, _ = read_lexicon(lexicon)
    entries = lexicon_entries(df, config)
    if len(entries) < 2:
        raise InputError(
            f"{len(entries)} usable entries ({df.height} rows before --min-count {config.min_count} and "
            f"--min-prob {config.min_prob:g}; an entry needs a translation other than the word itself): "
            "alignment initialisation needs at least 2",
            lexicon,
        )
    return df


def run_align_init(
    lexicon: Path,
    tokenizer_path: Path | None,
    output: Path,
    size: str,
    config: AlignInitConfig,
    echo=None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    hf_model: Path | None = None,
) -> dict[str, Any]:
    """The ``train align-init`` job: a fresh model of ``size`` (with ``overrides`` of its shape), or the
    transformers causal LM of directory ``hf_model`` (its weights, or a random init from its config.json),
    trained on the lexicon and saved in ``output``.

    Writes ``output/metrics.jsonl`` (rows with ``"stage": "align-init"``) and the run directory, holding it
    locked (:func:`prealign.train.rundir.run_session`): a run already there is refused unless ``overwrite``, and
    a failed run leaves nothing behind. A transformers model's run directory is itself a transformers model
    directory (``save_pretrained`` plus the tokenizer files), with ``run.json`` beside.
    """
    from prealign.codeswitch.tokenizer import load_tokenizer, tokenizer_info
    from prealign.errors import InputError
    from prealign.train.checkpoint import save_model
    from prealign.train.model import Transformer, model_config
    from prealign.train.rundir import run_session

    resolve_device(config.device)
    if hf_model is not None:
        from prealign.train.hf_models import hf_tokenizer_path, load_hf_model

        tokenizer_path = hf_tokenizer_path(hf_model, tokenizer_path)
    elif tokenizer_path is None:
        raise InputError("--tokenizer is required (or --hf-model with a tokenizer.json)")
    tok = load_tokenizer(tokenizer_path)
    info = tokenizer_info(tok)
    df = usable_entries(lexicon, config)
    pretrained = False
    if hf_model is None:
        torch.manual_seed(config.seed)
        model: torch.nn.Module = Transformer(model_config(size, info.vocab_size, **(overrides or {})))
    else:
        model, pretrained = load_hf_model(hf_model, config.seed)
    try:
        word_model(model).layer_indices(config.layers)
    except ValueError as exc:
        raise InputError(f"--layers: {exc}") from None
    record = {
        "tokenizer_sha256": info.sha256,
        "tokenizer_path": str(Path(tokenizer_path).resolve()),
        "stage": "align-init",
        "lexicon": str(Path(lexicon).resolve()),
        "align_init": asdict(config),
    }
    if hf_model is None:
        record.update(model_name=size, model_overrides=dict(overrides or {}))
    else:
        record.update(hf_model=str(Path(hf_model).resolve()), hf_pretrained=pretrained, hf_class=type(model).__name__)
    metrics: list[dict[str, Any]] = []
    with run_session(output, overwrite=overwrite) as session:
        with (output / "metrics.jsonl").open("w", encoding="utf-8") as fh:

            def progress(row: dict[str, Any]) -> None:
                row = {"stage": "align-init", **row}
                metrics.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                if echo is not None:
                    echo(
                        f"step {row['step']}: loss {row['loss']:.4f} lm {row['lm_loss']:.4f} "
                        f"align {row['align_loss']:.4f}"
                    )

            try:
                train_align_init(model, tok, df, config, progress=progress)
            except TrainingDiverged as exc:
                raise TrainingDiverged(exc.message, output) from None
            except ValueError as exc:  # e.g. a word with no tokens
                raise InputError(str(exc), lexicon) from None
        if hf_model is None:
            save_model(output, model.cpu(), record)
        else:
            from prealign.train.hf_models import save_hf_run

            save_hf_run(output, model.cpu(), Path(tokenizer_path), record)
        session.saved = True
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {"steps": config.steps, "parameters": parameters, "run_dir": str(output), "last": metrics[-1:]}
