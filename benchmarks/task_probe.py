"""Where a task stops: the recipe's backbone trained on one generated task, scored by the kind of story asked.

    OMP_NUM_THREADS=1 python -m benchmarks.task_probe --task qa4 --name base --steps 1000 \
        --out benchmarks/results/qa1-real-text/qa4-probe.jsonl
    OMP_NUM_THREADS=1 python -m benchmarks.task_probe --task qa2 --name base --steps 2000 \
        --out benchmarks/results/qa1-real-text/qa2-probe.jsonl

The model is the `model` section of --config (the shipped recipe's backbone; `--set k=v,...` overrides its
fields, values as JSON, `--memory 0` drops the memory), built for the tokenizer of `data.tokenizer`. Each step
draws --batch fresh one-question samples of --train-tasks (default: --task) from the project's generator with
no filler (``--gen k=v,...`` sets other data.generate fields of that draw, ``--stage STEPS:k=v,...`` first
stages of it); the loss is on the answer. ``--layout trainer`` encodes them as `lm2 train` does (context,
question, "Answer:"); ``--layout bare`` as ``facts question answer`` (the answer right after the question
mark). Every 100 steps the arg-max of the answer's first token is scored on 400 --task samples of unseen
stories (generator key 12345).

At the end the last evaluation is split by the kind of story (``KINDS``):
- qa4, by how the asked-about room sits in the story's two facts ("The A is D of the B."): in one fact
  only, in both as the object (the facts differ only by their direction), or in both with different roles.
  ``--ask object`` keeps only the questions "What is D of the R?" (answered by a fact with R as its object
  and the same direction), ``--ask subject`` only "What is the R D of?" (through the opposite direction).
- qa2, by the object's last event (taken, or dropped) and whether the holder's supporting move comes before
  or after it, and by whether the answer is the last room the story names (the shortcut a model that has
  not learnt the two hops takes: 40% of the questions).
One JSON line per run goes to --out: the curve, the split and the wall time. Results: docs/results.md
(where qa4 and qa2 stop).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

import lm2
from lm2.data.babi.world import DROP_VERBS
from lm2.data.batch import IGNORE, Batch, collate_masked
from lm2.data.generated import GeneratedQA
from lm2.train.config import load_config
from lm2.train.models import build_config
from lm2.train.trainer import lr_at

DEFAULT_CONFIG = "benchmarks/results/qa1-real-text/learn-screen.yaml"
EVAL_KEY = 12345
FACT = re.compile(r"The (\w+) is (\w+) of the (\w+)\.")
ASK_OBJECT = re.compile(r"What is (\w+) of the (\w+)\?")  # "What is D of the R?": R is a fact's object
ASK_SUBJECT = re.compile(r"What is the (\w+) (\w+) of\?")  # "What is the R D of?": R is a fact's subject


def qa4_kind(row: dict[str, Any]) -> str:
    """How the room the question asks about sits in the two facts (see the module docstring)."""
    facts, question = row["facts"], row["question"]
    parsed = [FACT.fullmatch(f.strip()) for f in facts]
    if len(parsed) != 2 or not all(parsed):
        raise ValueError(f"a qa4 sample has two facts 'The A is D of the B.', got {facts}")
    relations = [m.groups() for m in parsed if m]
    asked = ASK_OBJECT.fullmatch(question.strip()) or ASK_SUBJECT.fullmatch(question.strip())
    if asked is None:
        raise ValueError(f"not a qa4 question: {question!r}")
    room = asked.group(2) if asked.re is ASK_OBJECT else asked.group(1)
    roles = [("subject" if a == room else "object") for a, _, b in relations if room in (a, b)]
    if len(roles) == 1:
        return "room in one fact"
    if roles == ["object", "object"]:
        return "room the object of both facts"
    if roles == ["subject", "subject"]:
        return "room the subject of both facts"
    return "room in both, different roles"


MOVE = re.compile(r"(\w+) [\w ]+ to the (\w+)\.")


def qa2_kind(row: dict[str, Any]) -> str:
    """The object's last event, where the holder's supporting move is, and whether the last room named is the
    answer (see the module docstring)."""
    obj = row["question"].strip().rstrip("?").split()[-1]
    facts, supporting = row["facts"], sorted(row["supporting"])
    event = [i for i in supporting if f" {obj}" in facts[i]]
    moves = [i for i in supporting if i not in event]
    if len(event) != 1 or len(moves) != 1:
        raise ValueError(f"a qa2 answer rests on one event of the object and one move, got {supporting}")
    verb = "dropped" if any(f" {v} the {obj}" in facts[event[0]] for v in DROP_VERBS) else "taken"
    where = "move before" if moves[0] < event[0] else "move after"
    rooms = [m.group(2) for m in map(MOVE.fullmatch, facts) if m]
    last = "last room named" if rooms and rooms[-1] == row["target"] else "not the last room named"
    return f"{verb}, {where}; {last}"


KINDS = {"qa2": qa2_kind, "qa4": qa4_kind}


def asks(row: dict[str, Any], ask: str) -> bool:
    """Whether ``row``'s question has the form --ask keeps."""
    if ask == "any" or row["task"] != "qa4":
        return True
    return bool((ASK_OBJECT if ask == "object" else ASK_SUBJECT).fullmatch(row["question"].strip()))


def draw(data: GeneratedQA, gen: Any, key: tuple[int, int, int], n: int, ask: str) -> list[dict[str, Any]]:
    """``n`` one-question rows of keys ``(*key, i)``, those whose question --ask drops skipped."""
    rows: list[dict[str, Any]] = []
    i = 0
    while len(rows) < n:
        row = data.rows(gen, (*key, i))[0]
        rows += [row] if asks(row, ask) else []
        i += 1
    return rows


def encode(tokenizer: Any, data: GeneratedQA, rows: list[dict[str, Any]], layout: str) -> Batch:
    """The rows right-padded as the trainer's batches are (targets: the answer tokens only)."""
    if layout == "trainer":
        examples = data.encode([[row] for row in rows])
    else:
        prompts = tokenizer(
            [r["input"].strip() + " " + r["question"] for r in rows], add_special_tokens=False
        )
        answers = tokenizer([" " + r["target"] for r in rows], add_special_tokens=False)
        examples = []
        for prompt, answer in zip(prompts["input_ids"], answers["input_ids"], strict=True):
            loss = np.array([False] * len(prompt) + [True] * len(answer))
            examples.append((np.array(prompt + answer), loss, np.zeros_like(loss)))
    return collate_masked(examples, data.pad_id)


def answer_logits(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, k, V) at the k columns where some row has a target (as the trainer projects), and those
    targets (B, k)."""
    cols = (batch.targets != IGNORE).any(0).nonzero().squeeze(1)  # (k,)
    return model(input_ids=batch.input_ids, logits_to_keep=cols).logits, batch.targets[:, cols]


def answer_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    logits, targets = answer_logits(model, batch)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def first_answer_token_correct(model: torch.nn.Module, batch: Batch) -> list[bool]:
    logits, targets = answer_logits(model, batch)
    pred = logits.argmax(-1)  # (B, k)
    first = (targets != IGNORE).int().argmax(1)  # (B,) where each answer starts
    rows = torch.arange(len(pred))
    return (pred[rows, first] == targets[rows, first]).tolist()


def parse_overrides(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, re.split(r",(?=\w+=)", text)):  # a comma inside a JSON list stays
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set and --gen take k=v[,k=v...], got {item!r}")
        out[key] = json.loads(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="qa4", choices=sorted(KINDS), help="the task scored and split")
    p.add_argument("--train-tasks", default=None, help="tasks trained on (generator spec; default --task)")
    p.add_argument("--name", required=True, help="the run's name in the JSON line")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="its model section and data.tokenizer are used")
    p.add_argument("--set", default="", help="model overrides k=v[,k=v...], values as JSON")
    p.add_argument("--gen", default="", help="data.generate fields k=v[,k=v...] (JSON) of the training draw only")
    p.add_argument("--stage", action="append", default=[], metavar="STEPS:k=v,...",
                   help="a first stage of STEPS steps with these data.generate fields (repeatable, in order; "
                   "--gen applies after them), e.g. 500:story_facts=[2,5]")
    p.add_argument("--memory", type=int, default=0, choices=[0, 1], help="keep the memory (1) or not (0)")
    p.add_argument("--layout", default="trainer", choices=["trainer", "bare"])
    p.add_argument("--ask", default="any", choices=["any", "object", "subject"], help="question forms kept")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3, help="peak; 100 warm-up steps, cosine to a tenth")
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="JSON lines file the run's line is appended to")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    cfg = load_config(a.config, [])
    tokenizer = AutoTokenizer.from_pretrained(cfg.data.tokenizer)
    overrides = {**cfg.model.overrides, "use_memory": bool(a.memory), **parse_overrides(a.set)}
    model = lm2.LM2ForCausalLM(
        build_config(dataclasses.replace(cfg.model, overrides=overrides), len(tokenizer))
    )
    data = GeneratedQA(tokenizer, background="synthetic")
    gen = dataclasses.replace(cfg.data.generate, tasks=a.task, questions="one", filler=[0])
    valid_rows = draw(data, gen, (EVAL_KEY, 0, 0), 400, a.ask)
    gen = dataclasses.replace(gen, tasks=a.train_tasks or a.task)
    schedule = []  # (last step + 1, generate config) of each stage
    end = 0
    for stage in a.stage:
        steps, sep, fields = stage.partition(":")
        if not sep or not steps.isdigit():
            raise SystemExit(f"--stage takes STEPS:k=v[,k=v...], got {stage!r}")
        end += int(steps)
        schedule.append((end, dataclasses.replace(gen, **parse_overrides(fields))))
    schedule.append((a.steps, dataclasses.replace(gen, **parse_overrides(a.gen))))
    valid = encode(tokenizer, data, valid_rows, a.layout)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, a.beta2), weight_decay=a.weight_decay)

    start, curve, correct = time.time(), [], []
    for step in range(a.steps):
        gen = next(g for end, g in schedule if step < end)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, a.steps, a.lr, warmup=100, min_ratio=0.1)
        loss = answer_loss(
            model, encode(tokenizer, data, draw(data, gen, (a.seed, 0, step), a.batch, a.ask), a.layout)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            model.eval()
            correct = first_answer_token_correct(model, valid)
            model.train()
            curve.append([step + 1, round(sum(correct) / len(correct), 4)])
            print(a.name, *curve[-1], f"loss {loss.item():.4f}", f"{time.time() - start:.0f} s", flush=True)
    kinds = [KINDS[a.task](r) for r in valid_rows]
    totals, hits = Counter(kinds), Counter(k for k, ok in zip(kinds, correct, strict=True) if ok)
    split = {k: [hits[k], n] for k, n in sorted(totals.items())}
    line = {"task": a.task, "train_tasks": a.train_tasks or a.task, "gen": a.gen, "stages": a.stage,
            "name": a.name, "set": a.set, "memory": a.memory, "layout": a.layout, "ask": a.ask,
            "steps": a.steps, "lr": a.lr, "beta2": a.beta2, "curve": curve, "split": split,
            "wall_s": round(time.time() - start)}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        f.write(json.dumps(line) + "\n")
    for kind, (ok, n) in split.items():
        print(f"{kind:48s} {ok}/{n} = {ok / n:.2f}")


if __name__ == "__main__":
    main()
