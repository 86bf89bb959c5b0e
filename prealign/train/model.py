"""A compact decoder-only transformer: RMSNorm, rotary positions, SwiGLU MLP, optional tied embeddings.

One readable file in the spirit of nanoGPT. ``forward`` follows the Hugging Face causal-LM convention for
``labels`` (the model shifts: the prediction after position j-1 is compared with ``labels[j]``; -100 is
ignored), so rows of the code-switched shards go in unchanged. ``forward(..., hidden_states=True)`` also
returns the states after the embedding and after every block, which the alignment objective pools.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ModelConfig:
    """Model shape. ``n_kv_heads`` < ``n_heads`` gives grouped-query attention."""

    vocab_size: int = 32000
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None
    hidden_dim: int | None = None  # SwiGLU width; default about 8/3 * dim, a multiple of 64
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % (self.n_kv_heads or self.n_heads):
            raise ValueError("n_heads must be a multiple of n_kv_heads")

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim:
            return self.hidden_dim
        return 64 * math.ceil(8 * self.dim / 3 / 64)

    def to_dict(self) -> dict:
        return asdict(self)


# named sizes: tiny for CPU tests, up to ~150M parameters (with a 32k vocabulary, tied embeddings)
CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=64, n_layers=2, n_heads=4, max_seq_len=256),
    "mini": ModelConfig(dim=256, n_layers=4, n_heads=4, max_seq_len=512),
    "small": ModelConfig(dim=512, n_layers=8, n_heads=8, max_seq_len=1024),
    "base": ModelConfig(dim=768, n_layers=12, n_heads=12, max_seq_len=1024),
    "150m": ModelConfig(dim=768, n_layers=16, n_heads=12, max_seq_len=1024),
}


def model_config(name: str, vocab_size: int, **overrides: object) -> ModelConfig:
    """A named config with the tokenizer's vocabulary size and any overrides."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose from {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], vocab_size=vocab_size, **overrides)


# the fields that make two models different networks (vocabulary and length come from the data)
SHAPE_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "rope_theta", "norm_eps", "tie_embeddings")


def shape_of(cfg: ModelConfig) -> dict[str, object]:
    """The fields of :data:`SHAPE_FIELDS`, ``hidden_dim`` resolved."""
    shape = {name: getattr(cfg, name) for name in SHAPE_FIELDS}
    shape["hidden_dim"] = cfg.ffn_dim
    shape["n_kv_heads"] = cfg.n_kv_heads or cfg.n_heads
    return shape


def name_of(cfg: ModelConfig) -> tuple[str, dict[str, object]]:
    """The named config closest to ``cfg`` and the overrides that turn it into ``cfg``'s shape."""
    best: tuple[str, dict[str, object]] | None = None
    want = shape_of(cfg)
    for name, named in CONFIGS.items():
        have = shape_of(replace(named, vocab_size=cfg.vocab_size))
        overrides = {k: getattr(cfg, k) for k, v in want.items() if have[k] != v}
        if best is None or len(overrides) < len(best[1]):
            best = (name, overrides)
    assert best is not None
    return best


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return norm.type_as(x) * self.weight


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, shape [max_len, head_dim / 2]."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_len).float(), inv)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (even, odd halves) of x [B, H, T, D] by position."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[None, None], sin[None, None]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv = cfg.n_kv_heads or cfg.n_heads
        self.head_dim = cfg.dim // cfg.n_heads
        self.qkv = nn.Linear(cfg.dim, (self.n_heads + 2 * self.n_kv) * self.head_dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_heads * self.head_dim, *(2 * [self.n_kv * self.head_dim])], dim=-1)
        q = apply_rope(q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class Output:
    """What ``forward`` returns."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None  # embedding output, then each block's output


class Transformer(nn.Module):
    """The decoder. ``lm_head.weight`` is the embedding matrix when ``tie_embeddings``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scale residual projections by depth (GPT-2)
            if name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.init_std)

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        hidden_states: bool = False,
        attention_mask: torch.Tensor | None = None,
        logits: bool = True,
    ) -> Output:
        """``attention_mask`` [B, T] (1 = real token) restricts attention to real tokens (causal still holds).
        ``logits=False`` skips the LM head (for callers that need only some positions: apply ``lm_head(norm(h))``
        to the last hidden state themselves); ``labels`` need the logits."""
        b, t = input_ids.shape
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than max_seq_len {self.config.max_seq_len}")
        mask = None
        if attention_mask is not None:
            causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
            mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed(input_ids)
        states = [x] if hidden_states else None
        for block in self.blocks:
            x = block(x, cos, sin, mask)
            if states is not None:
                states.append(x)
        if not logits:
            if labels is not None:
                raise ValueError("labels need logits")
            return Output(None, None, states)
        logits = self.lm_head(self.norm(x))
        loss = None
        if labels is not None:
            # the prediction at j is scored against labels[j + 1]: shift the (small) labels, not the logits
            target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE_INDEX)
        return Output(logits, loss, states)
