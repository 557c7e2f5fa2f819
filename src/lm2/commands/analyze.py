"""``lm2 analyze memory``: the memory analysis of a checkpoint (the analysis itself: lm2.analysis.run)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def analyze_memory(
    model: Path,
    out: Path,
    text: str | None = None,
    sample: str | None = None,
    samples: int = 8,
    tasks: str | None = None,
    lengths: str | None = None,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Memory read attention and gates of an LM2 checkpoint, before and after the memory is written.

    Writes OUT/analysis.json (per memory block: gates, attention entropy, slot roles over the BABILong rows),
    OUT/heatmaps.npz (the first prompt's token-by-slot attention) and the figures fig6_block<L>.png
    (token-to-slot attention with the initial memory and with the memory after writing the prompt) and
    slots_block<L>.png (what each slot stores).

    Args:
        model: an LM2 (with memory): a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained).
        out: output folder.
        text: a free prompt to analyse (no slot roles: its facts are not known).
        sample: BABILong rows from `lm2 data babilong` (file or folder): slot roles by token class.
        samples: rows taken from --sample (the first N of each task and length).
        tasks: with --sample: e.g. qa1,qa2 (default: all in the data).
        lengths: with --sample: e.g. 1k (default: all in the data).
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16.
    """
    from lm2.analysis.roles import roles_markdown
    from lm2.analysis.run import ANALYSIS_JSON, HEATMAPS, run_analysis
    from lm2.data.rows import select_rows
    from lm2.eval.model_folder import load_model_and_tokenizer, resolve_device

    resolve_device(device)  # a wrong --device is one line before any work
    if (text is None) == (sample is None):
        raise ValueError("give exactly one of --text (a prompt) or --sample (BABILong rows)")
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    rows = None
    if sample is not None:
        groups = select_rows(sample, tasks, lengths, samples)
        rows = [r for group in groups.values() for r in group]
    lm, tokenizer = load_model_and_tokenizer(model, device, dtype)
    result = run_analysis(lm, tokenizer, out, texts=[text] if text is not None else None, rows=rows)
    for block in result["prompts"][0]["summary"]["blocks"]:
        print(
            f"block {block['layer']}: {block['writes']} writes, read entropy before/after "
            f"{block['read_entropy_before']:.3f}/{block['read_entropy_after']:.3f} nats "
            f"(uniform {block['read_entropy_uniform']:.3f}), output gate before/after "
            f"{block['out_gate_before']:.3f}/{block['out_gate_after']:.3f}"
        )
    if result["roles"]:
        print(roles_markdown(result["roles"]))
    print(f"wrote {out / ANALYSIS_JSON}, {out / HEATMAPS} and figures to {out}")
