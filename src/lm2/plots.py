"""The study's figures, each drawn from saved numbers (plain dicts as written to JSON), as PNG files.

matplotlib is an optional extra (``pip install 'lm2[plots]'``, part of the dev set-up); it is imported
only when a figure is drawn, with the Agg backend so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The paper's Figure 3 groups the ten BABILong tasks by the capability they test.
CAPABILITY_GROUPS: dict[str, tuple[str, ...]] = {
    "single-step": ("qa1",),
    "multi-step": ("qa2", "qa3"),
    "relation tracking": ("qa4", "qa5"),
    "basic queries": ("qa6", "qa7", "qa8"),
    "negation & uncertainty": ("qa9", "qa10"),
}
DPI = 120


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ValueError("figures need matplotlib: pip install 'lm2[plots]' (or the dev extra)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def accuracy_vs_length(
    lengths: Sequence[str], curves: Mapping[str, Mapping[str, Sequence[float | None]]], path: str | Path,
    title: str = "BABILong accuracy vs input length",
) -> Path:  # fmt: skip
    """Line plot: accuracy (%) vs length per model; curves = {model: {"mean": [...], "spread": [...]}}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(lengths))
    for name, c in curves.items():
        mean = np.array([np.nan if v is None else v for v in c["mean"]], dtype=float)
        spread = np.array([0.0 if v is None else v for v in c.get("spread", [0.0] * len(mean))], dtype=float)
        ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=name)
    ax.set_xticks(x, list(lengths))
    ax.set_xlabel("input length (tokens, k = 1000)")
    ax.set_ylabel("accuracy (%), mean over tasks")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def group_scores(accuracy: Mapping[str, float | None]) -> dict[str, float | None]:
    """Mean accuracy of each capability group from per-task accuracies (None when no task was measured)."""
    out: dict[str, float | None] = {}
    for group, tasks in CAPABILITY_GROUPS.items():
        values = [accuracy[t] for t in tasks if accuracy.get(t) is not None]
        out[group] = float(np.mean(values)) if values else None
    return out


def capability_radar(scores: Mapping[str, Mapping[str, float | None]], path: str | Path) -> Path:
    """Radar of the capability groups measured (groups with no task evaluated are left out).

    A radar needs three axes to draw an area: with one or two groups measured the same numbers are drawn
    as bars instead of a degenerate radar.
    """
    plt = _pyplot()
    groups = [g for g in CAPABILITY_GROUPS if any(s.get(g) is not None for s in scores.values())]
    if not groups:
        raise ValueError("no capability group has a measured task; nothing to draw")
    if len(groups) < 3:
        fig, ax = plt.subplots(figsize=(max(5.5, 1.5 + 0.8 * len(groups) * len(scores)), 4.5))
        width = 0.8 / len(scores)
        for i, (name, s) in enumerate(scores.items()):
            xs = [j + (i - (len(scores) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, [s.get(g) or 0.0 for g in groups], width, label=name)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Accuracy by capability group\n(only {len(groups)} measured: bars, not a radar)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        return _save(fig, path)
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * i / len(groups) for i in range(len(groups))]
    for name, s in scores.items():
        values = [s.get(g) or 0.0 for g in groups]
        ax.plot(angles + angles[:1], values + values[:1], marker="o", label=name)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles, groups)
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy (%) by capability group")
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
    return _save(fig, path)


def training_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, ylabel: str, title: str
) -> Path:
    """Figure 5: a metric vs training tokens per arm; curves = {arm: {"tokens": [...], "value": [...]}}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in curves.items():
        ax.plot(c["tokens"], c["value"], marker=".", label=name)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _token_ticks(ax: Any, tokens: Sequence[str], max_labels: int = 40) -> None:
    step = max(1, math.ceil(len(tokens) / max_labels))
    idx = list(range(0, len(tokens), step))
    ax.set_yticks(idx, [repr(tokens[i].strip() or tokens[i])[1:-1][:14] for i in idx], fontsize=6)


def memory_heatmaps(
    panels: Mapping[str, np.ndarray], tokens: Sequence[str], path: str | Path, title: str
) -> Path:
    """Figure 6: token-to-slot read attention (T, N) side by side, one panel per state (same colour scale)."""
    plt = _pyplot()
    arrays = [np.asarray(a, dtype=float) for a in panels.values()]
    # One colour scale for all panels, stretched over the values present: near-uniform reads still show.
    vmin, vmax = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
    height = min(12.0, 3.0 + 0.12 * len(tokens))
    fig, axes = plt.subplots(1, len(arrays), figsize=(4.5 * len(arrays) + 1, height), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    image = None
    for ax, (name, a) in zip(axes[0], zip(panels, arrays, strict=True), strict=True):
        image = ax.imshow(a, aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("memory slot")
        ax.set_ylabel("prompt token")
        _token_ticks(ax, tokens)
    fig.colorbar(image, ax=list(axes[0]), label="read attention (mean over heads)")
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def slot_role_heatmap(lift: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Slot roles: (N, classes) attention relative to chance (1 = as often as the class's share)."""
    plt = _pyplot()
    lift = np.asarray(lift, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, min(12.0, 2.5 + 0.22 * lift.shape[0])))
    image = ax.imshow(lift, aspect="auto", interpolation="nearest", cmap="magma")
    ax.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    ax.set_xlabel("token class")
    ax.set_ylabel("memory slot")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="attention / chance share")
    return _save(fig, path)
