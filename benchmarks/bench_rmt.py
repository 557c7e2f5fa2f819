"""Training throughput and peak memory: RMT vs LM2 (and the vanilla backbone) at the same backbone and segment length.

    PYTHONPATH=src python benchmarks/bench_rmt.py [--preset small] [--seq-len 512] [--batch-size 4] \
        [--segment-length 64] [--num-mem-tokens 16] [--repeats 3] [--steps 3] [--threads 2] [--out FILE]

One training step = forward + backward + AdamW update over ``batch-size x seq-len`` random tokens, with
full backpropagation through every segment for all models. Every measurement runs in a fresh
subprocess so that its peak memory is its own; the models are interleaved (lm2, rmt, vanilla, lm2, ...)
and each figure is the best of its repeats (the fastest step, the smallest peak), which is the least
disturbed by other load on a shared machine. Peak memory is the process's peak resident set during
the timed steps above its resident set just before them (Linux ``/proc/self/status`` VmHWM, reset
through ``/proc/self/clear_refs``); on CUDA it is ``torch.cuda.max_memory_allocated`` above the
allocation before the steps. The result is printed (and written with ``--out``) as a markdown table
that names the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FAMILIES = ("lm2", "rmt", "vanilla")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def worker(args: argparse.Namespace) -> dict:
    """Build one model, time ``args.steps`` training steps, return tokens/s and peak memory."""
    import torch

    from lm2.models.lm2 import LM2Config, LM2ForCausalLM
    from lm2.models.rmt import RMTConfig, RMTForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.family == "rmt":
        config = RMTConfig.from_preset(
            args.preset, segment_length=args.segment_length, num_mem_tokens=args.num_mem_tokens
        )
        model = RMTForCausalLM(config)
    else:
        config = LM2Config.from_preset(
            args.preset, segment_length=args.segment_length, use_memory=args.family == "lm2"
        )
        model = LM2ForCausalLM(config)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocates the optimizer state and the kernels' workspaces
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
        base = _status_kb("VmRSS") * 1024
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024) - base
    return {
        "family": args.family,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": min(times),
        "tokens_per_s": args.batch_size * args.seq_len / min(times),
        "peak_mb": peak / 2**20,
    }


def machine(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, torch on {threads} threads (CPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--segment-length", type=int, default=64)
    parser.add_argument("--num-mem-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    parser.add_argument("--worker", dest="family", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.family is not None:
        print(json.dumps(worker(args)))
        return

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; valid: {', '.join(FAMILIES)}")
    best: dict[str, dict] = {}
    shared = [
        "preset",
        "seq_len",
        "batch_size",
        "segment_length",
        "num_mem_tokens",
        "steps",
        "threads",
        "device",
    ]
    passthrough = [x for name in shared for x in ("--" + name.replace("_", "-"), str(getattr(args, name)))]
    for r in range(args.repeats):
        for family in families:  # interleaved, so slow phases of a shared machine hit every model
            cmd = [sys.executable, __file__, *passthrough, "--worker", family]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                sys.exit(f"{family} worker failed:\n{done.stderr}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"repeat {r + 1}/{args.repeats} {family}: {res['tokens_per_s']:.0f} tok/s, "
                  f"peak {res['peak_mb']:.0f} MB", file=sys.stderr)  # fmt: skip
            if family not in best:
                best[family] = res
            else:
                best[family]["tokens_per_s"] = max(best[family]["tokens_per_s"], res["tokens_per_s"])
                best[family]["step_s"] = min(best[family]["step_s"], res["step_s"])
                best[family]["peak_mb"] = min(best[family]["peak_mb"], res["peak_mb"])

    ref = best.get("lm2")
    lines = [
        f"RMT vs LM2 training step on {machine(args.device, args.threads)}; preset `{args.preset}`, "
        f"batch {args.batch_size} x {args.seq_len} tokens, segment_length {args.segment_length}, "
        f"RMT num_mem_tokens {args.num_mem_tokens}, fp32, full BPTT; best of {args.repeats} interleaved "
        f"runs x {args.steps} steps.",
        "",
        "| model | parameters | step (s) | tokens/s | tokens/s vs LM2 | peak memory (MB) | memory vs LM2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in families:
        b = best[family]
        speed = f"{b['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        mem = f"{b['peak_mb'] / ref['peak_mb']:.2f}x" if ref and ref["peak_mb"] > 0 else "-"
        lines.append(
            f"| {family} | {b['params'] / 1e6:.2f}M | {b['step_s']:.3f} | {b['tokens_per_s']:.0f} | {speed} "
            f"| {b['peak_mb']:.0f} | {mem} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from lm2.utils.io import atomic_write_text

        atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
