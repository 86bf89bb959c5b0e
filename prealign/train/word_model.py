"""What alignment initialisation and retrieval need from a causal LM, for our model and for transformers models.

A :class:`WordModel` runs words (right-padded token ids, each word alone) and gives the states the method pools:
layer 0 = the embedding output, 1..L = the output of each block, and L+1 = the LM-head (output embedding) rows
of the word's token ids. When the output embedding is tied to the input embedding, layer L+1 *is* layer 0
(``embed(ids) == lm_head.weight[ids]``), so the layers are 0..L only: counting it twice would double the
weight of the embedding layer in the mean over layers.

For a transformers model the states are the backbone's ``hidden_states`` (``output_hidden_states=True``); as
transformers reports them, the last one is after the final norm (Llama, Qwen2, GPT-2), while ours is the last
block's output before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prealign.train.model import Transformer


def layer_name(index: int, n_layers: int) -> str:
    """``embedding`` (0), ``block i`` (1..L) or ``lm_head`` (L+1)."""
    if index == 0:
        return "embedding"
    return "lm_head" if index == n_layers + 1 else f"block {index}"


class WordModel:
    """A causal LM seen as a stack of layers over words fed alone (see the module docstring)."""

    module: nn.Module
    n_layers: int
    tied: bool
    max_len: int | None  # the longest input the model takes (None: not stated)

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> Sequence[torch.Tensor]:
        """The L+1 token states ``[N, T, D]``: embedding output, then each block's output."""
        raise NotImplementedError

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[K, V]`` from last-layer states ``[K, D]``."""
        raise NotImplementedError

    def head_weight(self) -> torch.Tensor:
        """The LM head's ``[V, D]`` weight (its rows are layer L+1)."""
        raise NotImplementedError

    @property
    def layers(self) -> list[int]:
        """Every layer the method pools: 0..L+1, or 0..L when the LM head is tied to the embedding."""
        return list(range(self.n_layers + (1 if self.tied else 2)))

    def layer_indices(self, wanted: str | Sequence[int]) -> list[int]:
        """``"all"`` -> :attr:`layers`; otherwise the given indices, checked (ValueError) against this model."""
        if wanted == "all":
            return self.layers
        top = self.n_layers + 1
        bad = [i for i in wanted if not 0 <= int(i) <= top]
        if bad:
            raise ValueError(f"layer indices {bad} out of range: the model has layers 0..{top}")
        if self.tied and top in wanted:
            raise ValueError(
                f"layer {top} (the LM head) is layer 0 (the embedding) in this model, whose embeddings are tied: "
                f"leave it out"
            )
        return [int(i) for i in wanted]

    def name(self, index: int) -> str:
        return layer_name(index, self.n_layers)

    def layer_states(self, hidden: Sequence[torch.Tensor], ids: torch.Tensor, index: int) -> torch.Tensor:
        """Token states ``[N, T, D]`` of layer ``index``."""
        return hidden[index] if index <= self.n_layers else self.head_weight()[ids]


class OwnModel(WordModel):
    """Our :class:`~prealign.train.model.Transformer`."""

    def __init__(self, model: Transformer) -> None:
        self.module = model
        self.n_layers = model.config.n_layers
        self.tied = model.lm_head.weight is model.embed.weight
        self.max_len = model.config.max_seq_len

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> Sequence[torch.Tensor]:
        # right padding under a causal mask: real tokens never see the padding, so no attention mask is needed
        return self.module(ids, hidden_states=True, logits=False).hidden_states

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        return self.module.lm_head(self.module.norm(last))

    def head_weight(self) -> torch.Tensor:
        return self.module.lm_head.weight


class HFModel(WordModel):
    """A transformers ``*ForCausalLM``: its backbone's hidden states and its output embedding."""

    def __init__(self, model: nn.Module) -> None:
        self.module = model
        self.backbone = model.base_model
        self.n_layers = int(model.config.num_hidden_layers)
        self.max_len = getattr(model.config, "max_position_embeddings", None)
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embedding (LM head)")
        self.head = head
        self.tied = head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr()

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> Sequence[torch.Tensor]:
        out = self.backbone(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True, use_cache=False)
        return out.hidden_states

    def logits(self, last: torch.Tensor) -> torch.Tensor:
        return self.head(last)  # transformers' last hidden state is after the final norm already

    def head_weight(self) -> torch.Tensor:
        return self.head.weight


def word_model(model: nn.Module) -> WordModel:
    """The adapter for ``model``: ours, or any transformers causal LM."""
    return OwnModel(model) if isinstance(model, Transformer) else HFModel(model)


def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum ``[N, T, D]`` token states over the real tokens of ``mask`` ``[N, T]`` into ``[N, D]`` (float32).

    Sum, as in the paper. The loss and every cosine normalise the pooled vector, so the mean over tokens
    (sum / length) would give exactly the same results: no other pooling is offered.
    """
    return (states.float() * mask.to(states.device, torch.float32).unsqueeze(-1)).sum(1)


def next_token_loss(wm: WordModel, last: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """Mean next-token loss inside words: the states at ``(rows, cols)`` predict ``ids[rows, cols + 1]``.

    The positions are given (computed on the host when the batch is made), so nothing here waits on the GPU.
    """
    return F.cross_entropy(wm.logits(last[rows, cols]).float(), ids[rows, cols + 1])
