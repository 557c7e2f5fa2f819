"""Shared pieces of the trainer tests: a qa1-style row generator, a tokenizer, a config writer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from lm2.data.prompts import answer_text, format_plain

PEOPLE = ["Mary", "John", "Sandra", "Daniel"]
ROOMS = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
VERBS = ["moved to", "went to", "journeyed to", "travelled to", "went back to"]


def qa1_rows(n: int, seed: int, length: str = "0k") -> list[dict[str, Any]]:
    """qa1-like rows ("where is X?" answered by X's last move), BABILong row layout."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        where: dict[str, str] = {}
        facts = []
        for _ in range(rng.randint(2, 6)):
            who, room = rng.choice(PEOPLE), rng.choice(ROOMS)
            where[who] = room
            facts.append(f"{who} {rng.choice(VERBS)} the {room}.")
        who = rng.choice(sorted(where))
        rows.append(
            {
                "input": " ".join(facts),
                "question": f"Where is {who}?",
                "target": where[who],
                "task": "qa1",
                "length": length,
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_qa1_tokenizer(path: Path) -> Path:
    """A small byte-level BPE trained on qa1 prompts and answers, saved as a transformers folder."""
    from lm2.data.tokenizer import save_tokenizer, train_tokenizer

    texts = [format_plain(r) + answer_text(r) for r in qa1_rows(400, seed=123)]
    save_tokenizer(train_tokenizer(texts, vocab_size=320), path)
    return path


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """A YAML config with the given sections (``curriculum`` is a list)."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return path


def tiny_lm2(**overrides: Any) -> dict[str, Any]:
    return {"family": "lm2", "preset": "tiny", "overrides": overrides}


def qa1_run_config(tmp_path: Path, tokenizer: Path, steps: int = 4, **train: Any) -> Path:
    """A short qa1 training run of the tiny LM2 (64 rows, batch 8, a checkpoint every 2 steps)."""
    data = write_jsonl(tmp_path / "data" / "train.jsonl", qa1_rows(64, seed=0))
    return write_config(
        tmp_path / "run.yaml",
        model=tiny_lm2(),
        data={"kind": "babilong", "train": [str(data)], "tokenizer": str(tokenizer)},
        curriculum=[{"steps": steps}],
        optim={"lr": 1e-3, "warmup_steps": 2},
        train={"batch_size": 8, "log_every": 1, "save_every": 2, "progress": False, **train},
    )


def test_qa1_rows_are_answerable() -> None:
    for row in qa1_rows(50, seed=1):
        who = row["question"].removeprefix("Where is ").removesuffix("?")
        last = [f for f in row["input"].split(". ") if f.startswith(who)][-1]
        assert last.rstrip(".").endswith(row["target"])
