"""Evaluation of a model: translation retrieval from pooled word vectors, and next-token loss on text.

Word vectors are made exactly as alignment initialisation makes them (:mod:`prealign.train.align_init`): each
word alone, encoded as ``" word"``, token states pooled at a layer (0 = embedding output, 1..L = blocks,
L+1 = LM-head rows).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from prealign.train.align_init import encode_words, layer_name, pad_ids, pad_token_id, pooled_layers
from prealign.train.model import IGNORE_INDEX, Transformer


def _device(model: Transformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def layer_vectors(
    model: Transformer,
    tokenizer: Tokenizer,
    words: Sequence[str],
    layers: Sequence[int] | None = None,
    pooling: str = "sum",
    max_word_tokens: int = 16,
    batch_size: int = 1024,
) -> list[torch.Tensor]:
    """Pooled vectors ``[len(words), D]`` (float32, on CPU, not normalised) at each of ``layers`` (all: None)."""
    n_layers = model.config.n_layers
    layers = list(range(n_layers + 2)) if layers is None else [i % (n_layers + 2) for i in layers]
    was_training = model.training
    model.eval()
    ids_all = encode_words(tokenizer, words, max_word_tokens)
    pad = pad_token_id(tokenizer)
    parts: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, len(words), batch_size):
        ids, mask = pad_ids(ids_all[start : start + batch_size], pad)
        ids, mask = ids.to(_device(model)), mask.to(_device(model))
        out = model(ids, hidden_states=True)
        for part, vec in zip(parts, pooled_layers(model, out.hidden_states, ids, mask, layers, pooling), strict=True):
            part.append(vec.float().cpu())
    model.train(was_training)
    dim = model.config.dim
    return [torch.cat(p) if p else torch.zeros(0, dim) for p in parts]


def word_vectors(
    model: Transformer, tokenizer: Tokenizer, words: Sequence[str], layer: int, pooling: str = "sum"
) -> torch.Tensor:
    """Pooled vectors ``[len(words), D]`` of ``words`` at ``layer`` (negative counts from the LM head)."""
    return layer_vectors(model, tokenizer, words, [layer], pooling)[0]


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
    pooling: str = "sum",
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
    n_layers = model.config.n_layers
    s_vecs = layer_vectors(model, tokenizer, sources, pooling=pooling)
    t_vecs = layer_vectors(model, tokenizer, targets, pooling=pooling)
    results = []
    for index, (sv, tv) in enumerate(zip(s_vecs, t_vecs, strict=True)):
        sn, tn = F.normalize(sv, dim=-1), F.normalize(tv, dim=-1)
        cos = sn @ tn.T
        nearest = cos.argmax(1)
        hit = gold[torch.arange(len(sources)), nearest]
        results.append(
            {
                "index": index,
                "name": layer_name(index, n_layers),
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
    windows = [stream[i : i + seq_len] for i in range(0, max(len(stream) - 1, 0), seq_len - 1)]
    was_training = model.training
    model.eval()
    device = _device(model)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        ids, mask = pad_ids(chunk, 0)
        labels = ids.masked_fill(~mask, IGNORE_INDEX).to(device)
        logits = model(ids.to(device)).logits
        target = labels[:, 1:]
        total += float(
            F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                target.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        count += int((target != IGNORE_INDEX).sum())
    model.train(was_training)
    return {"loss": total / count if count else float("nan"), "tokens": count}
