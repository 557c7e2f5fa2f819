"""Parameter breakdown of an LM2 configuration, counted on the meta device (no weights allocated)."""

from __future__ import annotations

from typing import Any

import torch

from lm2.models.lm2.configuration_lm2 import LM2Config
from lm2.models.lm2.modeling_lm2 import LM2ForCausalLM


def count_parameters(config: LM2Config) -> dict[str, Any]:
    """Counts of backbone and memory parameters, in total and per block.

    Returns a dict with ``total``, ``backbone``, ``memory``, ``embedding``, ``lm_head`` (0 when tied to
    the embedding), ``final_norm`` and ``blocks``: one dict per block with ``index``, ``backbone``,
    ``memory`` and ``short_conv`` (the convolution's filters, part of the block's backbone). Tied weights
    are counted once.
    """
    with torch.device("meta"):
        model = LM2ForCausalLM(config)

    def numel(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    blocks = []
    for block in model.model.layers:
        memory = numel(block.memory)
        conv = numel(block.short_conv)
        blocks.append(
            {"index": block.layer_idx, "backbone": numel(block) - memory, "memory": memory, "short_conv": conv}
        )
    embedding = numel(model.model.embed_tokens)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    lm_head = 0 if tied else numel(model.lm_head)
    final_norm = numel(model.model.norm)
    memory = sum(b["memory"] for b in blocks)
    backbone = embedding + lm_head + final_norm + sum(b["backbone"] for b in blocks)
    total = sum(p.numel() for p in model.parameters())
    assert total == backbone + memory, "every parameter is either backbone or memory"
    return {
        "total": total,
        "backbone": backbone,
        "memory": memory,
        "embedding": embedding,
        "lm_head": lm_head,
        "final_norm": final_norm,
        "blocks": blocks,
    }


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3f}{unit}"
    return str(n)


def format_breakdown(counts: dict[str, Any], title: str = "") -> str:
    """A plain-text table of a ``count_parameters`` result."""
    lines = [title] if title else []
    lines.append(f"{'part':<22}{'parameters':>16}{'':>12}")
    rows = [
        ("embedding", counts["embedding"]),
        ("lm_head" + (" (tied)" if counts["lm_head"] == 0 else ""), counts["lm_head"]),
        ("final norm", counts["final_norm"]),
    ]
    for b in counts["blocks"]:
        rows.append((f"block {b['index']} backbone", b["backbone"]))
        if b["short_conv"]:
            rows.append(("  of which short conv", b["short_conv"]))
        if b["memory"]:
            rows.append((f"block {b['index']} memory", b["memory"]))
    rows += [
        ("backbone total", counts["backbone"]),
        ("memory total", counts["memory"]),
        ("total", counts["total"]),
    ]
    for name, n in rows:
        lines.append(f"{name:<22}{n:>16,}{_human(n):>12}")
    return "\n".join(lines)
