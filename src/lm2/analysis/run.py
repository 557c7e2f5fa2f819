"""The memory analysis of an LM2 model: Figure 6 heatmaps and the slot-role summary, written and drawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lm2.analysis.read_attention import READS, analyze_prompt
from lm2.analysis.roles import CLASSES, SlotRoles, char_classes, token_classes
from lm2.utils.io import atomic_write, atomic_write_text

ANALYSIS_JSON = "analysis.json"
HEATMAPS = "heatmaps.npz"


def run_analysis(
    model: Any,
    tokenizer: Any,
    out: str | Path,
    texts: list[str] | None = None,
    rows: list[dict] | None = None,
) -> dict[str, Any]:
    """Analyse prompts (free texts, or BABILong rows with slot roles); write the arrays and JSON; draw.

    The first prompt's head-averaged read attention (before, after, causal) goes to OUT/heatmaps.npz;
    every prompt's per-block summary, and the slot roles over all rows, to OUT/analysis.json.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not texts and not rows:
        raise ValueError("give a prompt (--text) or BABILong rows (--sample) to analyse")
    roles = SlotRoles()
    prompts: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    first_tokens: list[str] = []
    items = [(t, None) for t in texts or []] + [(None, r) for r in rows or []]
    for k, (text, row) in enumerate(items):
        classes = None
        if row is not None:
            text, char_cls = char_classes(row)
        analysis = analyze_prompt(model, tokenizer, text)
        if row is not None:
            classes = token_classes(text, char_cls, analysis.offsets)
            roles.add(analysis, classes)
        entry = {"summary": analysis.summary()}
        if row is not None:
            entry["row"] = {key: row.get(key) for key in ("task", "length", "id", "question", "target")}
        prompts.append(entry)
        if k == 0:
            first_tokens = analysis.tokens
            for b in analysis.blocks:
                for name in READS:
                    arrays[f"block{b.layer}_{name}"] = b.read[name].mean(0)  # (T, N)
                    arrays[f"block{b.layer}_out_gate_{name}"] = b.out_gate[name].mean(1)  # (T,)
                arrays[f"block{b.layer}_in_gate"] = b.in_gate.mean(2)  # (C, N)
                arrays[f"block{b.layer}_forget_gate"] = b.forget_gate.mean(2)  # (C, N)
            if classes is not None:
                arrays["token_classes"] = classes
    result = {
        "prompts": prompts,
        "heatmap_tokens": first_tokens,
        "roles": roles.summary() if roles.prompts else None,
    }

    def save(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out / HEATMAPS, save)
    atomic_write_text(out / ANALYSIS_JSON, json.dumps(result, indent=1) + "\n")
    draw_analysis(out)
    return result


def analysis_sources_present(out: str | Path) -> bool:
    """Whether OUT holds what :func:`draw_analysis` draws from."""
    return (Path(out) / ANALYSIS_JSON).is_file() and (Path(out) / HEATMAPS).is_file()


def draw_analysis(out: str | Path) -> list[Path]:
    """(Re)draw the analysis figures of OUT from OUT/analysis.json and OUT/heatmaps.npz."""
    from lm2.plots import memory_heatmaps, slot_role_heatmap

    out = Path(out)
    result = json.loads((out / ANALYSIS_JSON).read_text(encoding="utf-8"))
    arrays = np.load(out / HEATMAPS)
    tokens = result["heatmap_tokens"]
    written = []
    layers = sorted({int(k[5:].split("_")[0]) for k in arrays.files if k.startswith("block")})
    for layer in layers:
        panels = {
            "before the prompt is written (M_0)": arrays[f"block{layer}_before"],
            "after it is written (M_C)": arrays[f"block{layer}_after"],
        }
        written.append(
            memory_heatmaps(
                panels, tokens, out / f"fig6_block{layer}.png", f"Memory read attention, block {layer}"
            )
        )
    if result["roles"]:
        for block in result["roles"]["blocks"]:
            lift = np.array([[np.nan if v is None else v for v in row] for row in block["write_ratio"]])
            written.append(
                slot_role_heatmap(
                    lift,
                    CLASSES,
                    out / f"slots_block{block['layer']}.png",
                    f"What each slot stores (write attention / chance), block {block['layer']}",
                )  # fmt: skip
            )
    return written


