"""Read once, ask many: reading speed, peak memory and the saved state's size by document length (issue 18).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_state                 # 16K, 128K, 1M tokens
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_state --lengths 4096,16384 --cap 30   # a smoke run

Four models of the qa1 recipe's laptop shape (configs/memory-qa1-*.yaml: width 64, 2 blocks, 4 heads, 4
key/value heads; random weights, which cost the same as trained ones): LM2 (window 64, memory of 16 slots
written every 32 tokens), RMT on the same backbone (16 memory tokens, segments of 32), vanilla with the
same window (its state is a window-sized attention cache) and vanilla without a window (its state is every key and value: it grows with the document, and attention
over it costs time quadratic in the length). Each (model, length) cell runs in a fresh process: it reads
random token ids through ``lm2.state.read_tokens`` (chunks of 4,096 tokens), times it, saves the state and
reports its process's peak resident set (``VmHWM``) and its resident set just before reading (libraries
and model loaded, one untimed chunk read to warm up), so the reading's own cost is peak - before. A cell that passes ``--cap`` seconds stops
after the chunk that crossed it and reports the tokens it read by then (no state is saved: it would not
be the state of the whole document). Writes a markdown table (stdout), ``benchmarks/results/
bench_state.json`` and the figure ``docs/figures/bench_state.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=1 << 21,
)  # fmt: skip
ARMS = {
    "lm2": dict(use_memory=True, attention_window=64, segment_length=32, memory_slots=16, memory_heads=2),
    "rmt": dict(num_mem_tokens=16, segment_length=32),  # the recipe's RMT arm: 16 memory tokens, segments of 32
    "vanilla, window 64": dict(use_memory=False, attention_window=64),
    "vanilla, full attention": dict(use_memory=False),
}
CHUNK = 4096


class Capped(Exception):
    """Raised from the progress callback once a cell has run past its time cap."""


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(arm: str, length: int, cap: float) -> dict:
    """In this (fresh) process: read ``length`` random tokens with model ``arm``; report time, memory, size."""
    import torch

    from lm2 import LM2Config, LM2ForCausalLM, RMTConfig, RMTForCausalLM
    from lm2.state import read_tokens

    torch.manual_seed(0)
    if arm == "rmt":
        model = RMTForCausalLM(RMTConfig(**SHAPE, **ARMS[arm])).eval()
    else:
        model = LM2ForCausalLM(LM2Config(**SHAPE, **ARMS[arm])).eval()
    ids = torch.randint(0, SHAPE["vocab_size"], (1, length), generator=torch.Generator().manual_seed(1))
    read_tokens(model, ids[:, :CHUNK], CHUNK)  # warm-up (first-call costs), untimed
    before = status_mib("VmRSS")
    done = {"tokens": 0}
    start = time.perf_counter()

    def progress(n: int, total: int) -> None:
        done["tokens"] = n
        if time.perf_counter() - start > cap and n < total:
            raise Capped

    row = {"arm": arm, "length": length, "before_mib": before}
    try:
        state = read_tokens(model, ids, CHUNK, progress)
    except Capped:
        seconds = time.perf_counter() - start
        return {**row, "capped": True, "tokens": done["tokens"], "seconds": seconds,
                "tokens_per_s": done["tokens"] / seconds, "peak_mib": status_mib("VmHWM")}  # fmt: skip
    seconds = time.perf_counter() - start
    peak = status_mib("VmHWM")
    with tempfile.TemporaryDirectory() as tmp:
        folder = state.save(Path(tmp) / "state")
        disk = sum(f.stat().st_size for f in folder.iterdir())
    return {**row, "capped": False, "tokens": length, "seconds": seconds, "tokens_per_s": length / seconds,
            "peak_mib": peak, "state_bytes": state.nbytes(), "disk_bytes": disk}  # fmt: skip


def measure(arm: str, length: int, cap: float) -> dict:
    argv = [sys.executable, "-m", "benchmarks.bench_state", "--child", arm, str(length), "--cap", str(cap)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"arm": arm, "length": length, "error": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def size(n: float) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def table(rows: list[dict], cap: float, machine_line: str) -> str:
    lines = [
        f"Machine: {machine_line}",
        "",
        f"`lm2.state.read_tokens` (chunks of {CHUNK:,} tokens) over random token ids, one fresh process per "
        "cell; peak = the process's peak resident set (VmHWM), before = its resident set just before reading "
        f"(libraries and model loaded, one chunk read to warm up); a cell past {cap:.0f} s stops there (capped: the tokens it read by then).",
        "",
        "| model | document tokens | tokens/s | seconds | peak MiB | before MiB | peak - before MiB | state (tensors) | state on disk |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['arm']} | {r['length']:,} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} |||||||")
        elif r["capped"]:
            lines.append(
                f"{head} {r['tokens_per_s']:,.0f} | capped: {r['tokens']:,} tokens in {r['seconds']:.0f} s | "
                f"{r['peak_mib']:,.0f} | {r['before_mib']:,.0f} | {r['peak_mib'] - r['before_mib']:,.0f} | – | – |"
            )
        else:
            lines.append(
                f"{head} {r['tokens_per_s']:,.0f} | {r['seconds']:.1f} | {r['peak_mib']:,.0f} | {r['before_mib']:,.0f} | "
                f"{r['peak_mib'] - r['before_mib']:,.0f} | {size(r['state_bytes'])} | {size(r['disk_bytes'])} |"
            )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = [
        ("tokens_per_s", "reading speed (tokens/s)"),
        ("growth_mib", "peak - before reading (MiB)"),
        ("state_mib", "saved state on disk (MiB)"),
    ]
    lengths = sorted({r["length"] for r in rows})  # the ticks: the lengths asked for
    for ax, (key, label) in zip(axes, panels, strict=True):
        for arm in ARMS:
            # A capped cell is drawn where it stopped (the tokens it read), not at the length it was given.
            points = {}
            for r in rows:
                if r["arm"] != arm or "error" in r or (key == "state_mib" and r["capped"]):
                    continue
                value = {
                    "tokens_per_s": r["tokens_per_s"],
                    "growth_mib": r["peak_mib"] - r["before_mib"],
                    "state_mib": r.get("disk_bytes", 0) / 2**20,
                }[key]
                points[r["tokens"]] = (value, r["capped"])
            if not points:
                continue
            xs = sorted(points)
            (line,) = ax.plot(xs, [points[x][0] for x in xs], marker="o", label=arm)
            for x in xs:
                if points[x][1]:
                    ax.annotate(f"capped at {x:,}", (x, points[x][0]), textcoords="offset points",
                                xytext=(-30, 8), fontsize=8, color=line.get_color())  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(lengths, [f"{n // 1024:,}K" if n < 2**20 else f"{n / 2**20:g}M" for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(names), fontsize=9, bbox_to_anchor=(0.5, 0.93))
    fig.suptitle("Reading a document into a state: LM2, RMT and windowed vanilla stay flat; full attention grows")
    fig.text(0.5, 0.015, caption, ha="center", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 0.9))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="16384,131072,1048576", help="comma-separated document lengths")
    p.add_argument("--cap", type=float, default=180.0, help="seconds after which a cell stops reading")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_state.json")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "bench_state.png")
    p.add_argument("--child", nargs=2, metavar=("ARM", "LENGTH"), help=argparse.SUPPRESS)
    p.add_argument("--replot", action="store_true", help="redraw the table and figure from --json, measuring nothing")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.cap)))
        return

    if args.replot:
        saved = json.loads(args.json.read_text())
        rows, machine_line, cap = saved["rows"], saved["machine"], saved["cap_seconds"]
    else:
        import torch

        from benchmarks.bench_model import machine

        torch.set_num_threads(1)  # as each child runs (OMP_NUM_THREADS=1); machine() reports the count
        machine_line, cap = machine(), args.cap
        rows = []
        for arm in ARMS:
            for length in [int(x) for x in args.lengths.split(",") if x]:
                print(f"[{time.strftime('%H:%M:%S')}] {arm} {length:,}", file=sys.stderr, flush=True)
                rows.append(measure(arm, length, cap))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine_line, "chunk_tokens": CHUNK, "cap_seconds": cap,
                                         "shape": SHAPE, "arms": ARMS, "rows": rows}, indent=1) + "\n")  # fmt: skip
    print(table(rows, cap, machine_line))
    caption = (
        f"Width 64, 2 blocks, random weights; chunks of {CHUNK:,} tokens; one process per point; {machine_line}. "
        f"A capped point read for {cap:.0f} s and stopped: it is drawn at the tokens it read, its speed their mean."
    )
    figure(rows, args.figure, caption)


if __name__ == "__main__":
    main()
