"""Slot roles (the paper's Section 4.4): which kinds of prompt tokens each memory slot holds and serves.

Every token of a BABILong prompt (plain layout) gets a class from the row's known fact positions:
a supporting fact (the facts the answer rests on), another fact (story facts the answer does not need),
background (the haystack), the question, the answer marker ``Answer:``, or prompt markup. Two measures per
memory block, both relative to chance so classes of very different sizes compare:

- write: slot n's write attention over the tokens of each class, summed over all writes, divided by what
  it would be if the slot spread its attention evenly over the written tokens (1 = chance);
- read: the attention that tokens of each class give slot n, times N (1 = uniform over the slots).

A slot's role is the class with the highest write ratio (what it stores) — and, separately, the class
whose tokens read it most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lm2.analysis.read_attention import MemoryAnalysis
from lm2.data.prompts import format_plain

CLASSES = ("supporting fact", "other fact", "background", "question", "answer marker", "markup")


def char_classes(row: Mapping[str, Any]) -> tuple[str, np.ndarray]:
    """The plain prompt of ``row`` and the class index of each of its characters."""
    for key in ("input", "question", "fact_positions", "supporting"):
        if key not in row:
            raise ValueError(
                f"slot roles need BABILong rows with known facts ({key!r} is missing): use rows written by "
                "`lm2 data babilong`"
            )
    prompt = format_plain(row)
    classes = np.full(len(prompt), CLASSES.index("markup"), dtype=np.int64)
    start = prompt.index(row["input"]) if row["input"] else len("<context>\n")
    end = start + len(row["input"])
    classes[start:end] = CLASSES.index("background")
    supporting = set(row["supporting"])
    for j, pos in enumerate(row["fact_positions"]):
        kind = "supporting fact" if j in supporting else "other fact"
        classes[start + pos["char_start"] : start + pos["char_end"]] = CLASSES.index(kind)
    q_start = prompt.rindex("Question: ") + len("Question: ")
    classes[q_start : q_start + len(row["question"])] = CLASSES.index("question")
    a_start = prompt.rindex("Answer:")
    classes[a_start : a_start + len("Answer:")] = CLASSES.index("answer marker")
    return prompt, classes


def token_classes(prompt: str, classes: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """(T,) class of each token: the class of its first non-space character (markup if it has none)."""
    out = np.full(len(offsets), CLASSES.index("markup"), dtype=np.int64)
    for t, (a, b) in enumerate(offsets):
        chars = [i for i in range(a, min(b, len(prompt))) if not prompt[i].isspace()]
        if chars:
            out[t] = classes[chars[0]]
    return out


class SlotRoles:
    """Accumulates write and read attention mass per (block, slot, class) over many prompts."""

    def __init__(self) -> None:
        self.write_mass: dict[int, np.ndarray] = {}  # layer -> (N, K) attention mass
        self.write_tokens: dict[int, np.ndarray] = {}  # layer -> (K,) written tokens per class
        self.read_mass: dict[int, np.ndarray] = {}  # layer -> (K, N)
        self.read_tokens: dict[int, np.ndarray] = {}  # layer -> (K,)
        self.prompts = 0

    def add(self, analysis: MemoryAnalysis, classes: np.ndarray, read: str = "causal") -> None:
        K, S = len(CLASSES), analysis.segment_length
        self.prompts += 1
        for b in analysis.blocks:
            N = b.states.shape[1]
            wm = self.write_mass.setdefault(b.layer, np.zeros((N, K)))
            wt = self.write_tokens.setdefault(b.layer, np.zeros(K))
            for c in range(b.write_attention.shape[0]):
                att = b.write_attention[c].mean(0)  # (N, S), heads averaged
                seg = classes[c * S : (c + 1) * S]
                for k in range(K):
                    wm[:, k] += att[:, seg == k].sum(1)
                wt += np.bincount(seg, minlength=K)
            rm = self.read_mass.setdefault(b.layer, np.zeros((K, N)))
            rt = self.read_tokens.setdefault(b.layer, np.zeros(K))
            att = b.read[read].mean(0)  # (T, N)
            for k in range(K):
                rm[k] += att[classes == k].sum(0)
            rt += np.bincount(classes, minlength=K)

    def summary(self) -> dict[str, Any]:
        """Per block: write and read ratios (N, K) over chance, and each slot's top class by each."""
        blocks = []
        for layer in sorted(self.read_mass):
            wm, wt = self.write_mass[layer], self.write_tokens[layer]
            with np.errstate(invalid="ignore", divide="ignore"):
                share = wt / wt.sum() if wt.sum() else np.zeros_like(wt)
                write_ratio = (wm / wm.sum(1, keepdims=True)) / share  # (N, K)
                read_ratio = (self.read_mass[layer] / self.read_tokens[layer][:, None]) * wm.shape[
                    0
                ]  # (K, N)
            write_ratio[:, wt == 0] = np.nan
            read_ratio = read_ratio.T  # (N, K)
            read_ratio[:, self.read_tokens[layer] == 0] = np.nan
            blocks.append(
                {
                    "layer": layer,
                    "written_tokens": dict(zip(CLASSES, wt.astype(int).tolist(), strict=True)),
                    "read_tokens": dict(
                        zip(CLASSES, self.read_tokens[layer].astype(int).tolist(), strict=True)
                    ),
                    "write_ratio": _clean(write_ratio),
                    "read_ratio": _clean(read_ratio),
                    "write_role": _roles(write_ratio),
                    "read_role": _roles(read_ratio),
                }
            )
        return {"classes": list(CLASSES), "prompts": self.prompts, "blocks": blocks}


def _clean(a: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in a]


def _roles(ratio: np.ndarray) -> list[str | None]:
    roles: list[str | None] = []
    for row in ratio:
        if np.isfinite(row).any():
            roles.append(CLASSES[int(np.nanargmax(row))])
        else:
            roles.append(None)
    return roles


def roles_markdown(summary: Mapping[str, Any], layer: int | None = None) -> str:
    """A table of slot -> role (write and read) with the ratio over chance, for one block (default: first)."""
    blocks = summary["blocks"]
    block = next((b for b in blocks if layer is None or b["layer"] == layer), None)
    if block is None:
        raise ValueError(f"no memory block {layer}; analysed blocks: {[b['layer'] for b in blocks]}")
    classes = summary["classes"]
    lines = [
        f"Block {block['layer']}, {summary['prompts']} prompts; ratio = attention / chance share.",
        "",
        "| slot | stores most (write) | ratio | read most by | ratio |",
        "|---|---|---|---|---|",
    ]
    for n, (w, r) in enumerate(zip(block["write_role"], block["read_role"], strict=True)):
        wr = block["write_ratio"][n][classes.index(w)] if w else None
        rr = block["read_ratio"][n][classes.index(r)] if r else None
        lines.append(f"| {n} | {w or '–'} | {_fmt(wr)} | {r or '–'} | {_fmt(rr)} |")
    counts = ", ".join(f"{k}: {v}" for k, v in block["read_tokens"].items())
    return "\n".join(lines + ["", f"Tokens per class: {counts}."]) + "\n"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"  # near-uniform attention differs from 1 in the third digit
