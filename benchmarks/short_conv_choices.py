"""Where the short convolution sits and how it starts: a fixed-step qa1 learning run per variant (issue 17).

    OMP_NUM_THREADS=1 python -m benchmarks.short_conv_choices --steps 1200 --seeds 0,1 --out runs/conv.jsonl

The vanilla backbone at the qa1 recipe's shape (width 64, SwiGLU 128, 2 blocks, 4 heads, attention window
64; configs/memory-qa1-vanilla.yaml) learns from whole generated qa1 stories (loss on every answer, no
filler; the word-level tokens and training loop of benchmarks/qa1_recipe_search.py, AdamW 3e-3 with 100
warm-up steps and a cosine to 3e-4 over the step budget). Accuracy is the arg-max answer word of
``--eval-n`` questions of unseen stories (generator seed 12345, facts then the question), at the steps of
``--eval-at`` and at the end. Variants (kernel ``--kernel``):

    none         short_conv = 0: the plain backbone
    input        x = x + conv(x) on each block's input (what ``short_conv`` does), PyTorch's default init
    input-zero   the same, the filters starting at zero
    both         also x = x + conv(x) before the FFN (this script adds the second convolution itself)
    both-zero    the same, the filters starting at zero

The second convolution is put in for training only (no cache, no padding mask: the batches are right-padded
and attention is causal, so the padding never reaches a scored position). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

import lm2
from benchmarks.qa1_recipe_search import Words, collate, eval_samples, evaluate, story_sequence
from lm2.data.babi.generator import iter_stories
from lm2.layers import ConvLayout, ShortConv

VARIANTS = ("none", "input", "input-zero", "both", "both-zero")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--eval-at", default="300,600,900", help="steps (besides the last) to evaluate at")
    p.add_argument("--eval-n", type=int, default=300)
    p.add_argument("--kernel", type=int, default=5)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--out", required=True, help="JSON lines: one record per evaluation")
    return p.parse_args()


class ConvBeforeFFN(nn.Module):
    """Placement (b)'s second convolution. It stands in for a block's MLP with the block's post-attention
    norm moved inside, so the block returns x + c + MLP(norm(x + c)) with c = conv(x): x = x + conv(x)
    before the FFN."""

    def __init__(self, norm: nn.Module, mlp: nn.Module, conv: ShortConv) -> None:
        super().__init__()
        self.norm, self.mlp, self.conv = norm, mlp, conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, _ = self.conv(x, ConvLayout.build(torch.ones(x.shape[:2], dtype=torch.bool)), None)  # (B, T, D)
        return c + self.mlp(self.norm(x + c))


def build(variant: str, vocab_size: int, kernel: int) -> lm2.LM2ForCausalLM:
    config = lm2.LM2Config(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192, attention_window=64,
        use_memory=False, short_conv=0 if variant == "none" else kernel,
    )  # fmt: skip
    model = lm2.LM2ForCausalLM(config)
    if variant.startswith("both"):
        for block in model.model.layers:
            block.mlp = ConvBeforeFFN(block.post_attention_layernorm, block.mlp, ShortConv(64, kernel))
            block.post_attention_layernorm = nn.Identity()
    if variant.endswith("zero"):
        for module in model.modules():
            if isinstance(module, ShortConv):
                nn.init.zeros_(module.weight)
    return model


def train_variant(a: argparse.Namespace, variant: str, seed: int, words: Words, samples: list, log) -> dict:
    torch.manual_seed(seed)
    model = build(variant, len(words.vocab), a.kernel)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    stream, rng = iter_stories("qa1", 1000 + seed), random.Random(seed)
    eval_at = {int(s) for s in a.eval_at.split(",") if s} | {a.steps}
    result = {"variant": variant, "seed": seed, "acc": {}}
    t0 = time.time()
    for step in range(1, a.steps + 1):
        progress = min(1.0, max(0, step - a.warmup) / max(1, a.steps - a.warmup))
        lr = a.lr * min(1.0, step / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = collate([story_sequence(words, next(stream), rng, 0, 5, "all") for _ in range(a.bs)])
        loss = F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step in eval_at:
            acc = evaluate(model, words, samples, 0, "cpu")["qa1"]
            result["acc"][step] = acc
            record = {**result, "step": step, "loss": loss.item(), "time": round(time.time() - t0, 1)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(variant, seed, step, f"acc {acc:.3f} loss {loss.item():.3f} {record['time']} s", flush=True)
    result["time"] = round(time.time() - t0, 1)
    result["params"] = sum(p.numel() for p in model.parameters())
    return result


def main() -> None:
    a = parse_args()
    variants = a.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    words = Words()
    samples = eval_samples(["qa1"], a.eval_n)
    seeds = [int(s) for s in a.seeds.split(",")]
    results = []
    with open(a.out, "w", encoding="utf-8") as log:
        log.write(json.dumps({"meta": vars(a)}) + "\n")
        # Seed-major, so variants compared at the same seed run close together in time on a shared machine.
        for seed in seeds:
            for variant in variants:
                results.append(train_variant(a, variant, seed, words, samples, log))
    steps = sorted(results[0]["acc"])
    print(f"\n| variant | params | {' | '.join(f'step {s}' for s in steps)} | s/run |")
    print("|---|---|" + "---|" * len(steps) + "---|")
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        cells = [" / ".join(f"{r['acc'][s]:.2f}" for r in runs) for s in steps]
        times = " / ".join(f"{r['time']:.0f}" for r in runs)
        print(f"| {variant} | {runs[0]['params']:,} | {' | '.join(cells)} | {times} |")


if __name__ == "__main__":
    main()
