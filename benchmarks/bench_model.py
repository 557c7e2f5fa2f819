"""Model benchmarks: LM2 vs the project's vanilla backbone vs transformers' LlamaForCausalLM.

    .venv/bin/python benchmarks/bench_model.py            # full run, writes benchmarks/results/model-cpu.md
    .venv/bin/python benchmarks/bench_model.py --quick    # smaller shapes, a smoke run

What is measured, all in one process and interleaved so the ratios are fair on a noisy shared machine (each
figure is the minimum over rounds):
- training step (forward + backward + AdamW) tokens/s, FLOPs per step (torch.utils.flop_counter, attention
  included) and achieved FLOP/s, in fp32 and with bf16 autocast, against the machine's measured matmul peak;
- peak resident memory of a training step, each model in a fresh subprocess (CPU has no allocator counters);
- greedy decoding tokens/s with the cache;
- one forward over 16K..128K tokens with windowed attention + memory, fed in chunks with the cache carried
  (time and peak memory, each length in a fresh subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import LlamaForCausalLM

from lm2 import LM2Config, LM2ForCausalLM, RMTConfig, RMTForCausalLM
from lm2.models.loading import lm2_config_to_llama

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    memory_slots: int = 64
    memory_heads: int = 8
    segment_length: int = 64
    rmt_memory_tokens: int = 16
    batch: int = 8
    seq: int = 512


FULL = Shape()
QUICK = Shape(num_hidden_layers=2, batch=4, seq=256)
KINDS = ("lm2", "vanilla", "hf-llama", "rmt")
DECODE_KINDS = ("lm2", "vanilla", "hf-llama")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} on {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def build(kind: str, shape: Shape, **overrides) -> torch.nn.Module:
    common = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=1 << 18,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    if kind == "hf-llama":  # transformers' Llama with exactly the vanilla backbone's configuration
        cfg = lm2_config_to_llama(LM2Config(**common, rope_theta=10000.0, use_memory=False))
        cfg._attn_implementation = "sdpa"
        return LlamaForCausalLM(cfg)
    if kind == "rmt":
        # The RMT baseline on the same backbone: segments of S tokens between read and write memory.
        cfg = RMTConfig(
            **common,
            rope_theta=10000.0,
            segment_length=shape.segment_length,
            num_mem_tokens=shape.rmt_memory_tokens,
        )
        return RMTForCausalLM(cfg)
    cfg = LM2Config(
        **common,
        rope_theta=10000.0,
        use_memory=kind == "lm2",
        memory_slots=shape.memory_slots,
        memory_heads=shape.memory_heads,
        segment_length=shape.segment_length,
        **overrides,
    )
    return LM2ForCausalLM(cfg)


def batch_for(shape: Shape, batch: int | None = None, seq: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, shape.vocab_size, (batch or shape.batch, seq or shape.seq), generator=g)


def make_step(model: torch.nn.Module, ids: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def attention_share(s_q: int, s_k: int, is_causal: bool) -> float:
    """Share of the (query, key) pairs an attention kernel computes: all, or the causal ones (top-left
    aligned, as scaled_dot_product_attention's is_causal; the CPU kernel skips the blocks above it)."""
    if not is_causal:
        return 1.0
    pairs = min(s_q, s_k) * (min(s_q, s_k) + 1) // 2 + max(0, s_q - s_k) * s_k
    return pairs / (s_q * s_k)


def cpu_sdpa_flop(query, key, value, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    return round(sdpa_flop_count(query, key, value) * attention_share(query[2], key[2], is_causal))


def cpu_sdpa_backward_flop(
    grad_out,
    query,
    key,
    value,
    out,
    logsumexp,
    dropout_p=0.0,
    is_causal=False,
    *args,
    out_shape=None,
    **kwargs,
) -> int:
    share = attention_share(query[2], key[2], is_causal)
    return round(sdpa_backward_flop_count(grad_out, query, key, value) * share)


# torch's FlopCounterMode has formulas for the CUDA attention kernels but none for the CPU one, so without
# these every scaled_dot_product_attention FLOP on CPU would go uncounted.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_sdpa_backward_flop,
}


def step_flops(model: torch.nn.Module, ids: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def interleaved_min(
    fns: dict[str, Callable[[], None]], rounds: int, reps: int, rewarm: bool = False
) -> dict[str, float]:
    """Seconds per call of each fn: warm up, then alternate between them and keep each one's best round.

    rewarm: one untimed call before each timed round, so that a model's timed step never follows another
    model's (whose freed memory and evicted caches would otherwise be charged to it).
    """
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            if rewarm:
                fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps)
    return best


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = interleaved_min({"mm": lambda: a @ b}, rounds=5, reps=3)["mm"]
    return 2 * n**3 / t


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> float:
    """Reset the process's peak resident set (Linux) and return the current resident set, in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def peak_since_reset() -> float:
    return _status_mib("VmHWM")


def child(argv: list[str]) -> dict:
    argv = [*argv, "--threads", str(torch.get_num_threads())]
    out = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=True, env=os.environ.copy()
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_train(kind: str, shape: Shape) -> dict:
    """In a fresh process: peak RSS growth over one training step after the model is built."""
    model = build(kind, shape)
    ids = batch_for(shape)
    step = make_step(model, ids, None)
    step()  # the optimizer state exists from here on: measure a steady-state step
    base = reset_peak()
    step()
    return {"peak_mib": peak_since_reset() - base}


def long_forward(length: int, shape: Shape, window: int, chunk: int, passes: int = 2) -> dict:
    """In a fresh process: stream ``length`` tokens through LM2 with windowed attention, cache carried.

    The best of ``passes`` passes is kept (a shared machine's slow spells would otherwise decide the
    ratio of two lengths); the peak is over all of them.
    """
    model = build("lm2", shape, attention_window=window).eval()
    ids = batch_for(shape, batch=1, seq=length)
    base = reset_peak()
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        with torch.no_grad():
            past = None
            for start in range(0, length, chunk):
                out = model(
                    input_ids=ids[:, start : start + chunk],
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
        del out, past
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "peak_mib": peak_since_reset() - base}


def decode_tokens_per_s(
    models: dict[str, torch.nn.Module], shape: Shape, new_tokens: int
) -> dict[str, float]:
    prompt = batch_for(shape, batch=1, seq=shape.segment_length * 2 + 5)

    def gen(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.generate(
                prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )

        return run

    with torch.no_grad():
        t = interleaved_min({k: gen(m.eval()) for k, m in models.items()}, rounds=5, reps=1)
    return {k: new_tokens / v for k, v in t.items()}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(shape: Shape, lengths: list[int], window: int, chunk: int, new_tokens: int) -> str:
    lines = [f"Machine: {machine()}", ""]
    progress("matmul peak")
    peaks = {"fp32": matmul_peak(torch.float32)}
    # Without native bf16 instructions (AVX512-BF16/AMX) CPU bf16 matmuls fall back to a slow path; probe
    # with a small product first so such a machine is reported as such instead of stalling for hours.
    probe = matmul_peak(torch.bfloat16, n=256)
    dtypes: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if probe > peaks["fp32"] / 8:
        peaks["bf16"] = matmul_peak(torch.bfloat16)
        dtypes.append(("bf16", torch.bfloat16))
    lines.append(
        "Measured matmul peak (2048², min of 5): "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
    )
    if "bf16" not in peaks:
        lines.append(
            f"bf16 matmul runs at {probe / 1e9:.1f} GFLOP/s here (256², no native bf16 instructions), "
            f"{peaks['fp32'] / probe:.0f}x slower than fp32: the bf16 autocast rows are left out."
        )
    lines.append(
        f"Shape: hidden {shape.hidden_size}, {shape.num_hidden_layers} layers, {shape.num_attention_heads} heads "
        f"({shape.num_key_value_heads} KV), FFN {shape.intermediate_size}, vocab {shape.vocab_size}; "
        f"LM2 memory N = {shape.memory_slots} slots, S = {shape.segment_length}; batch {shape.batch} x {shape.seq} tokens."
    )
    lines += ["", "### Training step", ""]
    lines.append(
        "| model | dtype | tokens/s | GFLOP/step | GFLOP/s | % of matmul peak | peak MiB | tokens/s vs vanilla | FLOP/s vs vanilla |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    progress("FLOPs and peak memory per training step")
    models = {k: build(k, shape) for k in KINDS}
    ids = batch_for(shape)
    flops = {k: step_flops(m, ids) for k, m in models.items()}
    mem = {k: child(["--peak-train", k] + (["--quick"] if shape == QUICK else []))["peak_mib"] for k in KINDS}
    tokens = ids.numel()
    for name, dtype in dtypes:
        progress(f"training steps, {name}")
        steps = {k: make_step(m, ids, dtype) for k, m in models.items()}
        t = interleaved_min(steps, rounds=4, reps=1, rewarm=True)
        for k in KINDS:
            rate = flops[k] / t[k]
            lines.append(
                f"| {k} | {name} | {tokens / t[k]:,.0f} | {flops[k] / 1e9:.1f} | {rate / 1e9:.1f} | "
                f"{100 * rate / peaks[name]:.0f}% | {mem[k]:.0f} | {t['vanilla'] / t[k]:.2f}x | "
                f"{rate / (flops['vanilla'] / t['vanilla']):.2f}x |"
            )
    lines.append("")
    lines.append(
        "Peak MiB: peak resident memory of one steady-state fp32 training step above the resident memory "
        "before it, each model in a fresh process. rmt: the RMT baseline on the same backbone, "
        f"{shape.rmt_memory_tokens} memory tokens per segment of S tokens, full backpropagation through segments. "
        "GFLOP/step: torch.utils.flop_counter, with a formula added for the CPU attention kernel (torch counts "
        "only the CUDA ones) that counts the causal half a causal call computes. "
        "% of matmul peak compares with the 2048² product measured at the start of this run."
    )
    lines += ["", f"### Greedy decoding with the cache ({new_tokens} new tokens, batch 1)", ""]
    progress("decoding")
    rates = decode_tokens_per_s({k: models[k] for k in DECODE_KINDS}, shape, new_tokens)
    lines += ["| model | tokens/s | vs transformers' Llama |", "|---|---|---|"]
    lines += [f"| {k} | {rates[k]:.1f} | {rates[k] / rates['hf-llama']:.2f}x |" for k in DECODE_KINDS]
    lines += [
        "",
        f"### Long inputs: LM2, attention window {window}, fed in chunks of {chunk} with the cache (best of 2 passes)",
        "",
    ]
    lines += ["| tokens | seconds | peak MiB | time / time(first) |", "|---|---|---|---|"]
    progress(f"long inputs {lengths}")
    results = [
        child(
            ["--long", str(n), "--window", str(window), "--chunk", str(chunk)]
            + (["--quick"] if shape == QUICK else [])
        )
        for n in lengths
    ]
    for n, r in zip(lengths, results, strict=True):
        lines.append(
            f"| {n:,} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['seconds'] / results[0]['seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes and lengths (a smoke run)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown file to write (default: benchmarks/results/model-cpu[-quick].md)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--peak-train", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--long", type=int, help=argparse.SUPPRESS)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=2048)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else FULL
    if args.peak_train:
        print(json.dumps(peak_train(args.peak_train, shape)))
        return
    if args.long:
        print(json.dumps(long_forward(args.long, shape, args.window, args.chunk)))
        return
    lengths = [2048, 4096, 8192] if args.quick else [16384, 32768, 65536, 131072]
    table = run(shape, lengths, args.window, args.chunk, new_tokens=32 if args.quick else 128)
    print(table)
    out = args.out or ROOT / "benchmarks" / "results" / (
        "model-cpu-quick.md" if args.quick else "model-cpu.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Model benchmarks\n\n" + table)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
