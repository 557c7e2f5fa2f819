"""GPU rows of the model benchmark: bf16 training, decoding and long inputs on one CUDA device.

    python benchmarks/bench_gpu.py                  # on a GPU machine; prints a markdown table naming the device
    python benchmarks/bench_gpu.py --quick --device cpu   # tiny shapes, to check the script itself

The CPU runner (bench_model.py) measures fp32 on this project's CPUs; this one measures what a GPU run
uses: bf16 autocast training steps of LM2, the vanilla backbone, transformers' Llama (SDPA) and RMT,
with tokens/s, FLOPs per step (torch.utils.flop_counter, which has formulas for the CUDA attention
kernels), achieved TFLOP/s against the bf16 matmul peak measured in the same run, and peak GPU memory;
cached greedy decoding; and LM2 over long inputs with windowed attention (time and peak memory). Every
ratio is between numbers measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_model import Shape, build
from lm2.models.outputs import output_cache

GPU = Shape(
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=2816,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=8,
    memory_slots=256,
    memory_heads=8,
    segment_length=256,
    rmt_memory_tokens=16,
    batch=8,
    seq=2048,
)
QUICK = replace(Shape(), num_hidden_layers=2, batch=2, seq=128, segment_length=32, memory_slots=16)
KINDS = ("lm2", "vanilla", "hf-llama", "rmt")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_min(fns: dict[str, Callable[[], None]], device: torch.device, rounds: int) -> dict[str, float]:
    """Seconds per call of each fn: one warm-up each, then alternate and keep each one's best round."""
    for fn in fns.values():
        fn()
    sync(device)
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # untimed: a model's timed step never follows another model's
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = timed_min({"mm": lambda: a @ b}, device, rounds=10)["mm"]
    return 2 * n**3 / t


def train_step(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=ids.device.type == "cuda")

    def step() -> None:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def step_flops(model: torch.nn.Module, ids: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(ids.device.type, dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_mib(device: torch.device, fn: Callable[[], None]) -> float:
    if device.type != "cuda":
        return float("nan")
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes and lengths (a smoke run)")
    p.add_argument("--new-tokens", type=int, default=128)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device is available")
    shape = QUICK if args.quick else GPU
    lengths = [512, 1024, 2048] if args.quick else [16384, 65536, 131072]
    window = 64 if args.quick else 2048
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"Device: {name}; torch {torch.__version__}", ""]
    peak = matmul_peak(device, 1024 if args.quick else 8192)
    lines.append(f"Measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s")
    lines.append(
        f"Shape: hidden {shape.hidden_size}, {shape.num_hidden_layers} layers, {shape.num_attention_heads} heads "
        f"({shape.num_key_value_heads} KV), FFN {shape.intermediate_size}, vocab {shape.vocab_size}; LM2 memory "
        f"N = {shape.memory_slots} slots, S = {shape.segment_length}; batch {shape.batch} x {shape.seq} tokens."
    )
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab_size, (shape.batch, shape.seq), generator=g).to(device)

    lines += ["", "### Training step (bf16 autocast, fp32 weights, AdamW)", ""]
    lines.append("| model | tokens/s | GFLOP/step | TFLOP/s | % of bf16 peak | peak GiB | tokens/s vs vanilla |")
    lines.append("|---|---|---|---|---|---|---|")
    models = {k: build(k, shape).to(device) for k in KINDS}
    flops = {k: step_flops(m, ids) for k, m in models.items()}
    steps = {k: train_step(m, ids) for k, m in models.items()}
    mem = {k: peak_mib(device, steps[k]) / 1024 for k in KINDS}
    t = timed_min(steps, device, rounds=3)
    for k in KINDS:
        lines.append(
            f"| {k} | {ids.numel() / t[k]:,.0f} | {flops[k] / 1e9:.0f} | {flops[k] / t[k] / 1e12:.1f} | "
            f"{100 * flops[k] / t[k] / peak:.0f}% | {mem[k]:.1f} | {t['vanilla'] / t[k]:.2f}x |"
        )
    del steps

    lines += ["", f"### Greedy decoding with the cache (bf16 weights, batch 1, {args.new_tokens} new tokens)", ""]
    lines += ["| model | tokens/s | vs transformers' Llama |", "|---|---|---|"]
    prompt = ids[:1, : 2 * shape.segment_length + 5]

    def generate(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.generate(
                prompt,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

        return run

    decoders = {k: models[k].to(torch.bfloat16).eval() for k in ("lm2", "vanilla", "hf-llama")}
    with torch.no_grad():
        td = timed_min({k: generate(m) for k, m in decoders.items()}, device, rounds=2)
    lines += [f"| {k} | {args.new_tokens / td[k]:.0f} | {td['hf-llama'] / td[k]:.2f}x |" for k in decoders]
    del models, decoders

    lines += ["", f"### Long inputs: LM2 (bf16 weights), attention window {window}, batch 1, no gradients", ""]
    lines += ["| tokens | seconds | peak GiB | time / time(first) |", "|---|---|---|---|"]
    model = build("lm2", shape, attention_window=window).to(device=device, dtype=torch.bfloat16).eval()
    chunk = 8 * window
    results = []
    for n in lengths:
        long_ids = torch.randint(0, shape.vocab_size, (1, n), generator=g).to(device)

        def stream(long_ids: torch.Tensor = long_ids) -> None:
            past = None
            with torch.no_grad():
                for start in range(0, long_ids.shape[1], chunk):
                    out = model(input_ids=long_ids[:, start : start + chunk], cache=past, use_cache=True, logits_to_keep=1)
                    past = output_cache(out)

        mib = peak_mib(device, stream)
        seconds = timed_min({"x": stream}, device, rounds=1)["x"]
        results.append((n, seconds, mib / 1024))
    for n, seconds, gib in results:
        lines.append(f"| {n:,} | {seconds:.2f} | {gib:.2f} | {seconds / results[0][1]:.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
