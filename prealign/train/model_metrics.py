"""Evaluation of a model: translation retrieval from pooled word vectors, and next-token loss on text or rows.

Word vectors are made exactly as alignment initialisation makes them (:mod:`prealign.train.align_init`): each
word alone, encoded as ``" word"``, token states pooled at a layer (0 = embedding output, 1..L = blocks,
L+1 = LM-head rows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from prealign.train.align_init import encode_words, pad_ids, pad_token_id
from prealign.train.batches import collate, label_count
from prealign.train.model import Transformer
from prealign.train.word_model import pool, word_model


def _device(model: Transformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def layer_vectors(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    words: Sequence[str],
    layers: Sequence[int] | None = None,
    max_word_tokens: int = 16,
    batch_size: int = 1024,
) -> list[torch.Tensor]:
    """Summed vectors ``[len(words), D]`` (float32, on CPU, not normalised) at each of ``layers`` (None: every
    layer of :attr:`prealign.train.word_model.WordModel.layers`; negative indices count from the LM head)."""
    wm = word_model(model)
    top = wm.n_layers + 2
    layers = wm.layers if layers is None else [i % top for i in layers]
    was_training = model.training
    model.eval()
    ids_all = encode_words(tokenizer, words, max_word_tokens)
    pad = pad_token_id(tokenizer)
    device = _device(model)
    parts: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, len(words), batch_size):
        ids, mask = pad_ids(ids_all[start : start + batch_size], pad)
        ids, mask = ids.to(device), mask.to(device)
        hidden = wm.hidden(ids, mask)
        for part, index in zip(parts, layers, strict=True):
            part.append(pool(wm.layer_states(hidden, ids, index), mask).cpu())
    model.train(was_training)
    dim = wm.head_weight().shape[1]
    return [torch.cat(p) if p else torch.zeros(0, dim) for p in parts]


def word_vectors(model: torch.nn.Module, tokenizer: Tokenizer, words: Sequence[str], layer: int) -> torch.Tensor:
    """Summed vectors ``[len(words), D]`` of ``words`` at ``layer`` (negative counts from the LM head)."""
    return layer_vectors(model, tokenizer, words, [layer])[0]


def _derangement(n: int, seed: int) -> torch.Tensor:
    """A permutation without fixed points (for n >= 2): shift a random permutation by one along itself."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = torch.empty(n, dtype=torch.long)
    out[perm] = perm.roll(-1)
    return out


def translation_retrieval(
    model: Transformer,
    tokenizer: Tokenizer,
    pairs: Sequence[tuple[str, str]],
    seed: int = 0,
) -> list[dict]:
    """Per layer: top-1 retrieval accuracy, mean cosine of translation pairs and of random pairs.

    For each pair's source word, the nearest target by cosine among the distinct targets of all pairs counts as
    correct when it is one of that source's translations in ``pairs``. Random pairs match each source with the
    target of another pair (a derangement seeded by ``seed``). ``chance`` is ``1 / distinct targets``.
    """
    if len(pairs) < 2:
        raise ValueError("translation_retrieval needs at least 2 pairs")
    sources = sorted({s for s, _ in pairs})
    targets = sorted({t for _, t in pairs})
    s_index = {w: i for i, w in enumerate(sources)}
    t_index = {w: i for i, w in enumerate(targets)}
    src = torch.tensor([s_index[s] for s, _ in pairs])
    tgt = torch.tensor([t_index[t] for _, t in pairs])
    gold = torch.zeros(len(sources), len(targets), dtype=torch.bool)
    gold[src, tgt] = True
    shuffled = tgt[_derangement(len(pairs), seed)]
    wm = word_model(model)
    s_vecs = layer_vectors(model, tokenizer, sources)
    t_vecs = layer_vectors(model, tokenizer, targets)
    results = []
    for index, sv, tv in zip(wm.layers, s_vecs, t_vecs, strict=True):
        sn, tn = F.normalize(sv, dim=-1), F.normalize(tv, dim=-1)
        cos = sn @ tn.T
        nearest = cos.argmax(1)
        hit = gold[torch.arange(len(sources)), nearest]
        results.append(
            {
                "index": index,
                "name": wm.name(index),
                "accuracy": float(hit[src].float().mean()),
                "pair_cosine": float(cos[src, tgt].mean()),
                "random_cosine": float(cos[src, shuffled].mean()),
                "chance": 1.0 / len(targets),
                "pairs": len(pairs),
            }
        )
    return results


def _read_texts(path_or_texts: str | os.PathLike | Iterable[str]) -> Iterable[str]:
    if isinstance(path_or_texts, str | os.PathLike):
        from prealign.codeswitch.tokenizer import iter_texts

        return iter_texts(Path(path_or_texts))
    return (t for t in path_or_texts if t.strip())


@torch.no_grad()
def text_loss(
    model: Transformer,
    tokenizer: Tokenizer,
    path_or_texts: str | os.PathLike | Iterable[str],
    seq_len: int = 256,
    batch_size: int = 8,
) -> dict[str, float | int]:
    """Mean next-token loss per predicted token over a text file (one document a line) or a list of texts.

    Documents are packed into one stream, each followed by the end-of-text id when the tokenizer has one (those
    ids are predicted too). Windows of ``seq_len`` tokens overlap by one token, so every token after the first
    of the stream is predicted exactly once. Returns ``{"loss": ..., "tokens": number predicted}``.
    """
    from prealign.codeswitch.tokenizer import tokenizer_info

    if not 2 <= seq_len <= model.config.max_seq_len:
        raise ValueError(f"seq_len must be in [2, {model.config.max_seq_len}], got {seq_len}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    eot = tokenizer_info(tokenizer).eot_id
    stream: list[int] = []
    texts = list(_read_texts(path_or_texts))
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        stream.extend(enc.ids)
        if eot is not None:
            stream.append(eot)
    windows = [np.asarray(stream[i : i + seq_len]) for i in range(0, max(len(stream) - 1, 0), seq_len - 1)]
    loss, count = rows_loss(model, ((w, w) for w in windows), batch_size, seq_len, _device(model))
    return {"loss": float("nan") if loss is None else loss, "tokens": count}


def _chunks(rows: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


@torch.no_grad()
def rows_loss(
    model: torch.nn.Module,
    rows: Iterable[tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    max_len: int,
    device: str | torch.device,
    autocast: Callable[[], AbstractContextManager] | None = None,
    pad_id: int = 0,
) -> tuple[float | None, int]:
    """(token-weighted mean next-token loss, label tokens) over ``rows`` of (input_ids, labels) arrays.

    Labels are as shards store them (Hugging Face convention: the model shifts, -100 gives no loss); batches of
    ``batch_size`` rows come from :func:`prealign.train.batches.collate` (rows longer than ``max_len`` are cut).
    ``autocast`` returns a fresh context manager per batch (None: none). The loss is None when no row holds a
    label. The model runs in eval mode; its training flag is restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    # summed on the device (one sync at the end), in float64 where the device has it (MPS does not)
    total = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    count = 0
    try:
        for chunk in _chunks(rows, batch_size):
            ids, labels, _ = collate(chunk, max_len, pad_id, gpu=device.type == "cuda")
            n = label_count(labels)
            if n == 0:
                continue
            with autocast() if autocast is not None else nullcontext():
                out = model(ids.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            total += out.loss.detach().to(total.dtype) * n
            count += n
    finally:
        model.train(was_training)
    return (float(total) / count if count else None), count
