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
    chance: float | None = None, tasks: int = 1, title: str = "BABILong accuracy vs input length",
) -> Path:  # fmt: skip
    """Accuracy (%) vs input length per model, mean ± seed spread; curves = {model: {"mean", "spread"}}.

    The x-axis is logarithmic in tokens out to the longest length measured (0k, the facts alone, sits one
    step left of the shortest non-zero length); ``chance`` (%) is drawn as a dashed line.
    """
    from lm2.data.lengths import parse_length

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    tokens = [parse_length(n) for n in lengths]
    smallest = min((t for t in tokens if t), default=1000)
    x = np.array([t if t else smallest / 2 for t in tokens], dtype=float)
    for name, c in curves.items():
        mean = np.array([np.nan if v is None else v for v in c["mean"]], dtype=float)
        spread = np.array([0.0 if v is None else v for v in c.get("spread", [0.0] * len(mean))], dtype=float)
        ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.1f}%)")
    ax.set_xscale("log")
    ax.set_xticks(x, list(lengths))
    ax.minorticks_off()
    ax.set_xlabel("input length (tokens, k = 1000; log scale)")
    ax.set_ylabel("accuracy (%)" if tasks == 1 else f"accuracy (%), mean over {tasks} tasks")
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


def capability_radar(
    scores: Mapping[str, Mapping[str, float | None]], path: str | Path,
    spread: Mapping[str, Mapping[str, float | None]] | None = None,
) -> Path:  # fmt: skip
    """Radar of the capability groups measured (groups with no task evaluated are left out), with the seed
    spread of each group where there are seeds (``spread``, same keys as ``scores``).

    A radar needs three axes to draw an area: with one or two groups measured the same numbers are drawn
    as bars with error bars instead of a degenerate radar.
    """
    plt = _pyplot()
    groups = [g for g in CAPABILITY_GROUPS if any(s.get(g) is not None for s in scores.values())]
    if not groups:
        raise ValueError("no capability group has a measured task; nothing to draw")
    spread = spread or {}
    title = "Accuracy (%) by capability group, mean over its tasks and all lengths"
    if len(groups) < 3:
        fig, ax = plt.subplots(figsize=(max(5.5, 1.5 + 0.8 * len(groups) * len(scores)), 4.5))
        width = 0.8 / len(scores)
        for i, (name, s) in enumerate(scores.items()):
            xs = [j + (i - (len(scores) - 1) / 2) * width for j in range(len(groups))]
            # no spread recorded (one seed, or an older results.json): no bar, rather than a bar of 0
            errors = [spread[name].get(g) or 0.0 for g in groups] if name in spread else None
            ax.bar(xs, [s.get(g) or 0.0 for g in groups], width, yerr=errors, capsize=4, label=name)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%), error bar: seed spread" if spread else "accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        return _save(fig, path)
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="polar")
    angles = [2 * math.pi * i / len(groups) for i in range(len(groups))]
    for name, s in scores.items():
        values = [s.get(g) or 0.0 for g in groups]
        (line,) = ax.plot(angles + angles[:1], values + values[:1], marker="o", label=name)
        if name in spread:
            errors = [spread[name].get(g) or 0.0 for g in groups]
            ax.errorbar(angles, values, yerr=errors, fmt="none", ecolor=line.get_color(), capsize=3)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles, groups)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
    return _save(fig, path)


def training_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, ylabel: str, title: str,
    log_y: bool = False,
) -> Path:  # fmt: skip
    """Figure 5: a metric vs training tokens per arm, the mean over seeds with its spread as a band;
    curves = {arm: {"tokens": [...], "value": [...], "spread": [...] (optional)}}.

    Two panels: the whole run, and its second half on an axis fitted to the values there, where arms that
    end within a few points of each other are told apart (or seen not to be)."""
    plt = _pyplot()
    fig, (whole, late) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, c in curves.items():
        tokens, value = np.asarray(c["tokens"], dtype=float), np.asarray(c["value"], dtype=float)
        spread = np.asarray(c.get("spread") or [0.0] * len(value), dtype=float)
        for ax in (whole, late):
            (line,) = ax.plot(tokens, value, marker=".", label=name)
            ax.fill_between(tokens, value - spread, value + spread, color=line.get_color(), alpha=0.2)
    ends = [c["tokens"][-1] for c in curves.values() if c["tokens"]]
    if ends:
        half = max(ends) / 2
        late_values = []
        for c in curves.values():
            spreads = c.get("spread") or [0.0] * len(c["value"])
            for t, v, sd in zip(c["tokens"], c["value"], spreads, strict=True):
                if t >= half:
                    late_values += [v - (sd or 0.0), v + (sd or 0.0)]
        if late_values:
            lo, hi = min(late_values), max(late_values)
            pad = 0.1 * (hi - lo) or 0.05 * abs(hi) or 1.0
            late.set_xlim(half, max(ends) * 1.02)
            late.set_ylim(lo - pad, hi + pad)
    if log_y:
        whole.set_yscale("log")
    for ax, name in ((whole, "whole run"), (late, "second half, zoomed")):
        ax.set_xlabel("training tokens")
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    whole.legend()
    fig.suptitle(title)
    return _save(fig, path)


def _token_ticks(ax: Any, tokens: Sequence[str], max_labels: int = 40) -> None:
    step = max(1, math.ceil(len(tokens) / max_labels))
    idx = list(range(0, len(tokens), step))
    ax.set_yticks(idx, [repr(tokens[i].strip() or tokens[i])[1:-1][:14] for i in idx], fontsize=6)


def memory_heatmaps(
    panels: Mapping[str, np.ndarray], tokens: Sequence[str], path: str | Path, title: str
) -> Path:
    """Figure 6: token-to-slot read attention (T, N) side by side, one panel per state, on one colour scale
    centred on the uniform read 1/N (white): a near-uniform read shows pale, not as structure."""
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm

    arrays = [np.asarray(a, dtype=float) for a in panels.values()]
    uniform = 1.0 / arrays[0].shape[1]
    # at least a tenth of the uniform value either side: deviations of a few percent stay pale
    reach = max(max(float(np.nanmax(np.abs(a - uniform))) for a in arrays), 0.1 * uniform)
    norm = TwoSlopeNorm(vcenter=uniform, vmin=max(0.0, uniform - reach), vmax=uniform + reach)
    height = min(12.0, 3.0 + 0.12 * len(tokens))
    fig, axes = plt.subplots(1, len(arrays), figsize=(4.5 * len(arrays) + 1, height), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    image = None
    for ax, (name, a) in zip(axes[0], zip(panels, arrays, strict=True), strict=True):
        image = ax.imshow(a, aspect="auto", interpolation="nearest", norm=norm, cmap="RdBu_r")
        ax.set_title(name)
        ax.set_xlabel("memory slot")
        ax.set_ylabel("prompt token")
        _token_ticks(ax, tokens)
    label = f"read attention (mean over heads); white = uniform 1/{arrays[0].shape[1]}"
    fig.colorbar(image, ax=list(axes[0]), label=label)
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def slot_role_heatmap(lift: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Slot roles: (N, classes) attention relative to chance (1 = as often as the class's share), on a
    log scale centred on 1 (white): twice and half as often are equally far from it, and ratios within
    10% of chance stay pale."""
    plt = _pyplot()
    lift = np.asarray(lift, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lift = np.log2(lift)  # (N, classes)
    finite = log_lift[np.isfinite(log_lift)]
    reach = max(float(np.max(np.abs(finite))) if finite.size else 0.0, math.log2(1.1))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, min(12.0, 2.5 + 0.22 * lift.shape[0])))
    image = ax.imshow(log_lift, aspect="auto", interpolation="nearest", cmap="RdBu_r", vmin=-reach, vmax=reach)
    ax.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    ax.set_xlabel("token class")
    ax.set_ylabel("memory slot")
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, label="attention / chance (log scale)")
    ticks = [f for r in (4.0, 2.0, 1.5, 1.25, 1.1) for f in (1 / r, r)] + [1.0]
    ticks = sorted(t for t in ticks if abs(math.log2(t)) <= reach + 1e-9)
    bar.set_ticks([math.log2(t) for t in ticks], labels=[f"{t:.2g}x" for t in ticks])
    return _save(fig, path)
