"""Training throughput of ``prealign.train.model.Transformer`` beside the same-sized Hugging Face Llama.

Both models get the same shape (vocabulary, width, SwiGLU width, layers, heads, kv heads, rope theta, RMS eps,
tied embeddings), the same batch, the same optimizer (AdamW) and the same precision, and are timed in the same
process, round by round in alternating order, over full training steps (forward + loss + backward + optimizer
step). Prints tokens/s for each, the ratio ours/HF, parameter counts and the machine.

    python benchmarks/bench_train.py                                  # CPU, "mini" shape, batch 8 x 256, vocab 8192
    python benchmarks/bench_train.py --config tiny --batch 4 --seq 128
    python benchmarks/bench_train.py --check                          # also: same weights give the same loss
    python benchmarks/bench_train.py --config 150m --vocab 32000 --seq 1024 --batch 16 [--compile]   # on a GPU

On CUDA: bf16 autocast, fused AdamW, optional ``torch.compile``, and model FLOP utilisation against the GPU's
dense bf16 peak, with flops/token = 6 * N_params + 12 * n_layers * seq * dim.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time

import torch

from prealign.train.model import CONFIGS, ModelConfig, Transformer, model_config

# dense bf16 tensor-core peaks, TFLOP/s (SXM parts)
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    text = f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def gpu_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in GPU_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def hf_llama(cfg: ModelConfig):
    """A ``LlamaForCausalLM`` of the same shape as ``cfg`` (SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_std,
        attn_implementation="sdpa",
        use_cache=False,
    )
    return LlamaForCausalLM(hf_cfg)


@torch.no_grad()
def copy_into_hf(ours: Transformer, hf) -> None:
    """Load our weights into the HF model (split the fused qkv and gate_up projections)."""
    cfg = ours.config
    head_dim = cfg.dim // cfg.n_heads
    n_kv = cfg.n_kv_heads or cfg.n_heads
    hf.model.embed_tokens.weight.copy_(ours.embed.weight)
    if not cfg.tie_embeddings:
        hf.lm_head.weight.copy_(ours.lm_head.weight)
    hf.model.norm.weight.copy_(ours.norm.weight)
    for block, layer in zip(ours.blocks, hf.model.layers, strict=True):
        q, k, v = block.attn.qkv.weight.split([cfg.n_heads * head_dim, n_kv * head_dim, n_kv * head_dim])
        layer.self_attn.q_proj.weight.copy_(q)
        layer.self_attn.k_proj.weight.copy_(k)
        layer.self_attn.v_proj.weight.copy_(v)
        layer.self_attn.o_proj.weight.copy_(block.attn.out.weight)
        gate, up = block.mlp.gate_up.weight.chunk(2)
        layer.mlp.gate_proj.weight.copy_(gate)
        layer.mlp.up_proj.weight.copy_(up)
        layer.mlp.down_proj.weight.copy_(block.mlp.down.weight)
        layer.input_layernorm.weight.copy_(block.attn_norm.weight)
        layer.post_attention_layernorm.weight.copy_(block.mlp_norm.weight)


class Runner:
    """One model, its optimizer and a training step."""

    def __init__(self, name: str, model: torch.nn.Module, hf: bool, args: argparse.Namespace, device: torch.device):
        self.name = name
        self.model = model.to(device).train()
        self.hf = hf
        self.device = device
        self.n_params = sum(p.numel() for p in model.parameters())
        fused = device.type == "cuda"
        self.opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, fused=fused)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.autocast = device.type == "cuda" and args.dtype == "bf16"

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            if self.hf:
                return self.forward(input_ids=ids, labels=ids, use_cache=False).loss
            return self.forward(ids, labels=ids).loss

    def step(self, ids: torch.Tensor) -> float:
        loss = self.loss(ids)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def timed(self, batches: list[torch.Tensor]) -> tuple[float, float]:
        """Wall and process CPU seconds for one training step per batch."""
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        for ids in batches:
            loss = self.step(ids)
        loss.item()  # wait for the last step
        sync()
        return time.perf_counter() - start, time.process_time() - cpu


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="mini", choices=list(CONFIGS))
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--n-kv-heads", type=int, default=None, help="grouped-query attention (default: n_heads)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=6, help="rounds; the order of the two models alternates")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["ours", "hf"], default=None, help="time one model only")
    p.add_argument("--check", action="store_true", help="check both give the same loss from the same weights")
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = model_config(args.config, args.vocab, max_seq_len=max(args.seq, CONFIGS[args.config].max_seq_len))
    if args.n_kv_heads:
        cfg = model_config(args.config, args.vocab, max_seq_len=cfg.max_seq_len, n_kv_heads=args.n_kv_heads)

    ours = Transformer(cfg)
    hf = hf_llama(cfg)
    if args.check:
        copy_into_hf(ours, hf)
        ids = torch.randint(cfg.vocab_size, (2, min(args.seq, 64)))
        with torch.no_grad():
            a = ours.eval()(ids, labels=ids).loss.item()
            b = hf.eval()(input_ids=ids, labels=ids, use_cache=False).loss.item()
        print(f"check: same weights, loss ours {a:.6f}  HF {b:.6f}  |diff| {abs(a - b):.2e}")

    runners = [Runner("ours", ours, False, args, device), Runner("HF Llama", hf, True, args, device)]
    if args.only:
        runners = [r for r in runners if r.hf == (args.only == "hf")]
    tokens = args.batch * args.seq
    n_batches = max(args.steps, args.warmup)
    batches = [torch.randint(cfg.vocab_size, (args.batch, args.seq), device=device) for _ in range(n_batches)]

    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    try:
        import transformers

        print(f"transformers {transformers.__version__}")
    except ImportError:  # hf_llama would have failed already
        pass
    print(
        f"shape: config {args.config}, vocab {cfg.vocab_size}, dim {cfg.dim}, layers {cfg.n_layers}, heads "
        f"{cfg.n_heads}, kv heads {cfg.n_kv_heads or cfg.n_heads}, ffn {cfg.ffn_dim}, tied {cfg.tie_embeddings}; "
        f"batch {args.batch} x seq {args.seq} = {tokens} tokens/step; {args.dtype} on {device}"
        f"{', compiled' if args.compile else ''}; AdamW{' (fused)' if device.type == 'cuda' else ''}"
    )
    for r in runners:
        print(f"parameters {r.name}: {r.n_params:,}")
    if len(runners) == 2 and runners[0].n_params != runners[1].n_params:
        print(f"WARNING: parameter counts differ by {runners[0].n_params - runners[1].n_params:,}")

    for r in runners:
        r.timed(batches[: args.warmup])
    seconds: dict[str, list[float]] = {r.name: [] for r in runners}
    cpu_seconds: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(args.rounds):
        order = runners if i % 2 == 0 else runners[::-1]
        for r in order:
            wall, cpu = r.timed(batches[: args.steps])
            seconds[r.name].append(wall)
            cpu_seconds[r.name].append(cpu)
        rates = "  ".join(f"{n} {tokens * args.steps / s[-1]:,.0f} tok/s" for n, s in seconds.items())
        print(f"round {i + 1}: {rates}")

    peak = gpu_peak_tflops() if device.type == "cuda" and args.dtype == "bf16" else None
    rate: dict[str, float] = {}
    cpu_rate: dict[str, float] = {}
    for r in runners:
        per_round = [tokens * args.steps / s for s in seconds[r.name]]
        rate[r.name] = statistics.median(per_round)
        spread = (max(per_round) - min(per_round)) / rate[r.name] * 100
        line = f"{r.name:9s} {rate[r.name]:12,.0f} tokens/s (median of {args.rounds}, spread {spread:.1f}%)"
        if device.type == "cpu":  # less sensitive to other processes on a shared machine than wall time
            cpu_rate[r.name] = statistics.median(tokens * args.steps / s for s in cpu_seconds[r.name])
            line += f"  {cpu_rate[r.name]:,.0f} tokens per CPU-second"
        flops_per_token = 6 * r.n_params + 12 * cfg.n_layers * args.seq * cfg.dim
        achieved = rate[r.name] * flops_per_token / 1e12
        line += f"  {achieved:.2f} TFLOP/s model"
        if peak:
            line += f"  MFU {achieved / peak * 100:.1f}% of {peak:.0f}"
        print(line)
    if len(rate) == 2:
        print(f"ratio ours/HF: {rate['ours'] / rate['HF Llama']:.3f}  (target >= 1.0)")
        if cpu_rate:
            print(f"ratio ours/HF per CPU-second: {cpu_rate['ours'] / cpu_rate['HF Llama']:.3f}")


if __name__ == "__main__":
    main()
