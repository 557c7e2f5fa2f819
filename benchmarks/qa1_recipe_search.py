"""The recipe search of issue 10: one training variant per call, its accuracy curve written as JSON lines.

    OMP_NUM_THREADS=1 python benchmarks/qa1_recipe_search.py --arm lm2 --minutes 8 --out runs/v1.jsonl

Standalone on purpose (fast to vary, independent of the trainer): word-level tokens (words and punctuation,
the vocabulary of the qa1-qa5 generator + the synthetic haystack), freshly generated stories every step
(seed 1000 + --seed), and an evaluation on stories the run never trains on (generator seed 12345): each
question becomes ``[its facts] [F filler tokens] [question]`` and is scored by the arg-max of the answer token.

``--mode story`` puts a whole story in one sequence with the loss on every answer; ``--mode sample`` one
question per sequence. ``--fills`` draws F per batch (``--fill-where last``: a story is cut at a random
question, the only one preceded by filler). ``--balance p`` reweights training questions so that the
statement distance of the latest supporting fact is less skewed (1 = uniform over 0..4), which takes away
the reward of answering "the last statement's place". Results of the runs: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import lm2
from lm2.data.babi.generator import iter_stories
from lm2.data.babi.types import Question, Sample, Statement, Story
from lm2.data.background import synthetic_background

WORDS = re.compile(r"\w+|[^\w\s]")
EVAL_SEED = 12345
# How far back (in statements) the latest supporting fact of a generated qa1 question lies: 0, 1, 2, 3, 4+
# (3000 questions of seed 12345); --balance divides these out.
QA1_SUPPORT_DISTANCE = np.array([1384, 910, 343, 242, 121], dtype=float)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", default="lm2", choices=["lm2", "vanilla", "rmt"])
    p.add_argument("--tasks", default="qa1")
    p.add_argument("--d", type=int, default=64, help="hidden size")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff", type=int, default=0, help="FFN width (0 = 2 * d)")
    p.add_argument("--window", type=int, default=64, help="attention window (LM2 and vanilla)")
    p.add_argument("--seg", type=int, default=32, help="LM2 write interval / RMT segment length")
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--mheads", type=int, default=2)
    p.add_argument("--fbias", type=float, default=1.0, help="memory_forget_bias")
    p.add_argument("--rmt-mem", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000, help="length of the cosine schedule in steps")
    p.add_argument("--time-sched", action="store_true", help="cosine over --minutes instead of --steps")
    p.add_argument("--minutes", type=float, default=10, help="training budget (wall clock)")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--mode", default="story", choices=["story", "sample"])
    p.add_argument("--fills", default="0", help="comma-separated filler lengths drawn per batch")
    p.add_argument("--fill-where", default="all", choices=["all", "last"])
    p.add_argument("--curr", type=int, default=0, help="steps over which questions per story grow 1 -> 5")
    p.add_argument("--balance", type=float, default=0.0)
    p.add_argument("--eval-fills", default="0")
    p.add_argument("--final-fills", default="")
    p.add_argument("--eval-n", type=int, default=300)
    p.add_argument("--eval-every", type=float, default=60, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    return p.parse_args()


class Words:
    """Word-level ids over the generator's words and the synthetic haystack, plus a filler stream."""

    def __init__(self) -> None:
        haystack = synthetic_background(20000, seed=7)
        self.vocab = {"<pad>": 0, "<unk>": 1}
        for task in ["qa1", "qa2", "qa3", "qa4", "qa5"]:
            stream = iter_stories(task, 999)
            for _ in range(300):
                for line in next(stream).lines:
                    extra = [line.answer] if isinstance(line, Question) else []
                    for w in WORDS.findall(line.text) + extra:
                        self.vocab.setdefault(w, len(self.vocab))
        for sentence in haystack.sentences:
            for w in WORDS.findall(sentence):
                self.vocab.setdefault(w, len(self.vocab))
        self.filler_stream = np.array([i for s in haystack.sentences for i in self.encode(s)], dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(w, 1) for w in WORDS.findall(text)]

    def filler(self, rng: random.Random, n: int) -> list[int]:
        if n == 0:
            return []
        start = rng.randrange(0, len(self.filler_stream) - n)
        return self.filler_stream[start : start + n].tolist()


def story_sequence(
    words: Words, story: Story, rng: random.Random, fill: int, max_q: int, fill_where: str
) -> tuple[list[int], list[int]]:
    """A whole story, ``fill`` filler tokens before each question (or only the last kept one); loss on answers."""
    ids: list[int] = []
    targets: list[int] = []
    asked = 0
    if fill_where == "last" and fill:
        max_q = rng.randint(1, max_q)
    for line in story.lines:
        if isinstance(line, Statement):
            x = words.encode(line.text)
            ids += x
            targets += [-100] * len(x)
            continue
        last = asked + 1 >= max_q
        x = (words.filler(rng, fill) if (fill_where == "all" or last) else []) + words.encode(line.text)
        answer = words.encode(line.answer)
        ids += x + answer
        targets += [-100] * (len(x) - 1) + [answer[0]] + [-100] * (len(answer) - 1)
        asked += 1
        if asked >= max_q:
            break
    return ids, targets


def sample_sequence(
    words: Words, sample: Sample, rng: random.Random, fill: int
) -> tuple[list[int], list[int]]:
    """``[facts] [fill filler tokens] [question]``; the target is the answer's first token."""
    ids = [i for fact in sample.facts for i in words.encode(fact)]
    ids += words.filler(rng, fill) + words.encode(sample.question)
    return ids, [-100] * (len(ids) - 1) + [words.encode(sample.answer)[0]]


def collate(seqs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in seqs)
    x = torch.zeros(len(seqs), width, dtype=torch.long)  # (B, T) right-padded
    y = torch.full((len(seqs), width), -100, dtype=torch.long)
    for b, (ids, targets) in enumerate(seqs):
        x[b, : len(ids)] = torch.tensor(ids)
        y[b, : len(targets)] = torch.tensor(targets)
    return x, y


def build_model(a: argparse.Namespace, vocab_size: int) -> torch.nn.Module:
    common: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=a.d, intermediate_size=a.ff or 2 * a.d, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=8192,
        attention_window=a.window, segment_length=a.seg,
    )  # fmt: skip
    if a.arm == "rmt":
        from lm2.models.rmt import RMTConfig, RMTForCausalLM

        common["attention_window"] = None  # RMT attends within its segment
        return RMTForCausalLM(RMTConfig(num_mem_tokens=a.rmt_mem, **common))
    config = lm2.LM2Config(
        use_memory=a.arm == "lm2", memory_slots=a.slots, memory_heads=a.mheads, memory_forget_bias=a.fbias,
        **common,
    )  # fmt: skip
    return lm2.LM2ForCausalLM(config)


def eval_samples(tasks: list[str], n: int) -> list[Sample]:
    out: list[Sample] = []
    for task in tasks:
        stream, got = iter_stories(task, EVAL_SEED), []
        while len(got) < n:
            got += next(stream).samples()
        out += got[:n]
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, words: Words, samples: list[Sample], fill: int, device: str
) -> dict[str, float]:
    """Accuracy per task of the arg-max answer token, every question ``fill`` filler tokens after its facts."""
    model.eval()
    rng = random.Random(777 + fill)
    correct: dict[str, int] = {}
    count: dict[str, int] = {}
    for i in range(0, len(samples), 50):
        chunk = samples[i : i + 50]
        seqs = [sample_sequence(words, s, rng, fill) for s in chunk]
        x, y = collate(seqs)
        logits = model(input_ids=x.to(device)).logits.cpu()  # (B, T, V)
        for b, s in enumerate(chunk):
            last = len(seqs[b][0]) - 1
            hit = int(logits[b, last].argmax().item() == y[b, last].item())
            correct[s.task] = correct.get(s.task, 0) + hit
            count[s.task] = count.get(s.task, 0) + 1
    model.train()
    return {t: correct[t] / count[t] for t in count}


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    tasks = a.tasks.split(",")
    words = Words()
    model = build_model(a, len(words.vocab)).to(a.device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    samples = eval_samples(tasks, a.eval_n)
    streams = {t: iter_stories(t, 1000 + a.seed) for t in tasks}
    accept = (QA1_SUPPORT_DISTANCE.min() / QA1_SUPPORT_DISTANCE) ** a.balance
    rng = random.Random(a.seed)
    fills = [int(x) for x in a.fills.split(",")]
    eval_fills = [int(x) for x in a.eval_fills.split(",")]
    t0 = time.time()

    def lr_at(step: int) -> float:
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
        if a.time_sched:
            t = min(1.0, (time.time() - t0) / (a.minutes * 60))
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    log = open(a.out, "w", encoding="utf-8")
    log.write(json.dumps({"meta": {**vars(a), "params": params, "vocab": len(words.vocab)}}) + "\n")
    step, losses, last_eval = 0, [], -1e9
    while True:
        elapsed = time.time() - t0
        done = elapsed >= a.minutes * 60
        if elapsed - last_eval >= a.eval_every or done:
            accs = {str(f): evaluate(model, words, samples[:150], f, a.device) for f in eval_fills}
            loss = float(np.mean(losses[-20:])) if losses else None
            record = {"step": step, "time": round(elapsed, 1), "loss": loss, "acc": accs}
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(record, flush=True)
            last_eval = time.time() - t0
            if done:
                break
        fill = rng.choice(fills)
        max_q = 5 if a.curr == 0 else min(5, 1 + int(4 * step / a.curr))
        seqs = []
        for b in range(a.bs):
            task = tasks[b % len(tasks)]
            story = next(streams[task])
            if a.mode == "story":
                seqs.append(story_sequence(words, story, rng, fill, max_q, a.fill_where))
                continue
            # rejection sampling by the supporting fact's distance (accept[d] = 1 without --balance)
            while True:
                s = rng.choice(story.samples()[:max_q])
                if rng.random() < accept[min(4, len(s.facts) - 1 - max(s.supporting))]:
                    break
                story = next(streams[task])
            seqs.append(sample_sequence(words, s, rng, fill))
        x, y = (t.to(a.device) for t in collate(seqs))
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=x).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
    if a.final_fills:
        final = {f: evaluate(model, words, samples, int(f), a.device) for f in a.final_fills.split(",")}
        print("final", final, flush=True)
        log.write(json.dumps({"final": final, "step": step, "time": round(time.time() - t0, 1)}) + "\n")
    log.close()


if __name__ == "__main__":
    main()
