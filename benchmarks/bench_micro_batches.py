"""Micro-batches by length (``train.micro_batch_tokens``) against one padded batch, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_micro_batches          # writes benchmarks/results/micro-batches-cpu.md
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_micro_batches --quick  # fewer rounds, a smoke run

A training step of the qa1 recipe's LM2 (configs/memory-qa1-lm2.yaml: width 64, 2 blocks, window 64, a
memory write every 32 tokens) on batches its generator draws in stage ``learn`` (whole stories, an answer
after every question), for qa1 alone and for qa1-qa5 together (qa3's stories run to 2,500 tokens, qa4's
are 35): forward + backward of every micro-batch through the trainer's ``run_pieces``, gradient clipping
and an AdamW step. "padded" is the whole batch padded to its longest row (``micro_batch_tokens: null``);
the others split it with :func:`lm2.data.batch.split_by_length` at a token budget. The figures are the
best of interleaved rounds, over the same few steps' batches; the padded tokens column is rows x width
summed over a step's micro-batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.bench_attention import recipe_batches
from benchmarks.bench_model import interleaved_min, machine, progress
from lm2.data.batch import Batch, split_by_length
from lm2.train.config import Config, load_config
from lm2.train.forward import run_pieces
from lm2.train.models import build_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (1024, 2048, 4096, 8192)


def training_steps(model: torch.nn.Module, cfg: Config, steps: list[list[Batch]]):
    """One call = the optimizer steps of ``steps`` (each a list of micro-batches)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    def run() -> None:
        for micro in steps:
            n = sum(b.num_targets for b in micro)
            for b in micro:
                run_pieces(model, b, None, 1.0 / n, backward=torch.Tensor.backward)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "micro-batches-cpu.md")
    args = parser.parse_args()
    steps, rounds = (2, 2) if args.quick else (4, 5)
    torch.manual_seed(0)
    lines = [
        f"Machine: {machine()}; torch threads: {torch.get_num_threads()}",
        "",
        f"Seconds per training step (the best of {rounds} interleaved rounds over the first {steps} steps' batches "
        "of stage `learn`, batch 32) of the qa1 recipe's LM2; padded tokens per step (rows x width, summed over "
        "its micro-batches); the speed-up over the padded batch.",
        "",
        "| tasks | micro-batches | per step | padded tokens | real tokens | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for tasks in ("qa1", "qa1-qa5"):
        cfg = load_config(ROOT / "configs" / "memory-qa1-lm2.yaml", [f"data.generate.tasks={tasks}"])
        tokenizer = load_tokenizer(ROOT / cfg.data.tokenizer)
        model = build_model(cfg.model, tokenizer).train()
        batches = recipe_batches(cfg, tokenizer, 0, cfg.train.batch_size, steps)  # stage learn
        real = sum(int(b.row_lengths().sum()) for b in batches) / steps
        splits = {"padded": [[b] for b in batches]}
        splits |= {f"{n:,} tokens": [split_by_length(b, n) for b in batches] for n in BUDGETS}
        progress(f"{tasks}: {', '.join(splits)}")
        times = interleaved_min({k: training_steps(model, cfg, v) for k, v in splits.items()}, rounds, 1)
        for name, split in splits.items():
            padded = sum(b.input_ids.numel() for micro in split for b in micro) / steps
            count = sum(len(micro) for micro in split) / steps
            lines.append(
                f"| {tasks} | {name} ({count:.1f} a step) | {times[name] / steps:.3f} s | {padded:,.0f} | "
                f"{real:,.0f} | {times['padded'] / times[name]:.2f}x |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
