"""The study's report: numbers gathered from the finished units into results.json, figures drawn from it,
and the same document written as report.md and a self-contained report.html (figures embedded)."""

from __future__ import annotations

import base64
import datetime
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lm2.eval.matcher import labels_for
from lm2.plots import CAPABILITY_GROUPS, group_scores
from lm2.reproduce.units import Unit
from lm2.run_folder import RunFolder
from lm2.utils.io import atomic_write_text

RESULTS = "results.json"
SCALE_COPY = "scale.yaml"  # the scale file a study ran, kept in its folder
Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", path, caption)


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "spread": None, "n": 0}
    spread = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return {"mean": float(np.mean(vals)), "spread": spread, "n": len(vals)}


def _cell(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s or s.get("mean") is None:
        return "–"

    def number(x: float) -> str:  # a perplexity of an arm that never modelled text can be 1e9
        return f"{x:.{digits}f}" if abs(x) < 1e5 else f"{x:.2e}"

    return number(s["mean"]) + (f" ± {number(s['spread'])}" if s.get("spread") is not None else "")


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}"


def _units(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((out / "units").rglob("DONE.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["unit"]] = record
    return found


def _seed_groups(units: dict[str, dict[str, Any]], kind: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """{arm (with +rag): [(unit id, record) per seed]} for the units of ``kind`` of one arm and seed."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, record in units.items():
        unit = Unit.parse(name)
        if unit.kind == kind:
            groups.setdefault(unit.row, []).append((name, record))
    return groups


def fig5_curve(run: RunFolder, metric: str) -> dict[str, list[float]]:
    """Validation ``metric`` vs training tokens from a run's log (tokens: each logged step's count times the
    steps since the previous log record — exact with train.log_every 1)."""
    tokens_at: dict[int, float] = {0: 0.0}
    total, last_step = 0.0, 0
    points = []
    for rec in run.records():
        if "loss" in rec and "tokens" in rec:
            total += rec["tokens"] * (rec["step"] - last_step)
            last_step = rec["step"]
            tokens_at[rec["step"]] = total
        if metric in rec:
            step = rec["step"]
            known = max(s for s in tokens_at if s <= step)
            points.append((tokens_at[known], float(rec[metric])))
    return {"tokens": [p[0] for p in points], "value": [p[1] for p in points]}


def gather(study: Any, parts: tuple[str, ...], seconds: float, command: str | None) -> dict[str, Any]:
    """Every number of the report, with the units (and so the runs) that made it."""
    from lm2.reproduce.scale import to_dict

    cfg, out = study.cfg, study.out
    units = _units(out)
    results: dict[str, Any] = {
        "scale": cfg.name,
        "scale_file": SCALE_COPY,  # the scale file as run, copied into the study folder
        "scale_config": to_dict(cfg),
        "seeds": study.seeds,
        "parts": list(parts),
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_this_call": round(seconds, 1),
        "unit_seconds_total": round(sum(r.get("seconds", 0.0) for r in units.values()), 1),
        "units": units,
    }
    # Table 1 and Figure 3
    evals = _seed_groups(units, "table1")
    if evals:
        lengths = sorted({n for g in evals.values() for _, r in g for n in r["accuracy"]}, key=_length_key)
        tasks = sorted({t for g in evals.values() for _, r in g for a in r["accuracy"].values() for t in a
                        if t != "avg"}, key=lambda t: int(t[2:]))  # fmt: skip
        order = [a for a in cfg.table1.models] + [f"{a}+rag" for a in cfg.table1.rag]
        table: dict[str, Any] = {}
        for key in [k for k in order if k in evals] + [k for k in evals if k not in order]:
            runs = evals[key]
            name = runs[0][1]["model"]
            table[name] = {
                "runs": [u for u, _ in runs],
                "cells": {
                    n: {
                        t: _stats([r["accuracy"].get(n, {}).get(t) for _, r in runs]) for t in [*tasks, "avg"]
                    }
                    for n in lengths
                },
            }
        results["table1"] = {"tasks": tasks, "lengths": lengths, "models": table}
        results["fig3"] = {
            name: group_scores({t: _mean_over_lengths(m["cells"], t) for t in tasks})
            for name, m in table.items()
        }
        # the spread of each group's score over seeds (a seed's score: its tasks' means over the lengths)
        spread: dict[str, dict[str, float | None]] = {}
        for runs in evals.values():
            per_seed = [group_scores({t: _mean([r["accuracy"].get(n, {}).get(t) for n in lengths]) for t in tasks})
                        for _, r in runs]  # fmt: skip
            spread[runs[0][1]["model"]] = {g: _stats([s[g] for s in per_seed])["spread"] for g in per_seed[0]}
        results["fig3_spread"] = spread
        results["chance"] = chance_percent(tasks)
    # Table 2
    ppl, mmlu = _seed_groups(units, "ppl"), _seed_groups(units, "mmlu")
    if ppl or mmlu:
        t2: dict[str, Any] = {"ppl": {}, "mmlu": {}}
        for arm, runs in ppl.items():
            t2["ppl"][cfg.label(arm) if arm in cfg.arms else arm] = {
                "runs": [u for u, _ in runs], **_stats([r["ppl"] for _, r in runs]),
                "tokens": runs[0][1]["tokens"], "unknown_share": runs[0][1].get("unknown_share"),
                "trained_on": runs[0][1].get("trained_on"),
            }  # fmt: skip
        for arm, runs in mmlu.items():
            entry: dict[str, Any] = {"runs": [u for u, _ in runs]}
            for key in ("categories", "difficulty"):
                names = sorted({g for _, r in runs for g in r[key]})
                entry[key] = {
                    g: {**_stats([r[key].get(g, {}).get("accuracy") for _, r in runs]), "questions":
                        runs[0][1][key].get(g, {}).get("n")}
                    for g in names
                }  # fmt: skip
            entry["average"] = {**_stats([r["average"]["accuracy"] for _, r in runs]),
                                "questions": runs[0][1]["average"]["n"]}  # fmt: skip
            t2["mmlu"][cfg.label(arm) if arm in cfg.arms else arm] = entry
        results["table2"] = t2
    # Figure 5: the trainer logs of the fig5 arms
    if "fig5" in parts or any(Unit("train", a, 0).name in units for a in cfg.fig5.arms):
        curves, final = {}, {}
        for arm in cfg.fig5.arms:
            runs = [(Unit("train", arm, s).name, study.run_dir(arm, s)) for s in range(study.arm_seeds(arm))]
            runs = [(u, d) for u, d in runs if u in units]
            if not runs:
                continue
            per_seed = [fig5_curve(RunFolder(d), cfg.fig5.metric) for _, d in runs]
            points = min(len(c["value"]) for c in per_seed)  # seeds log at the same steps
            by_point = [_stats([c["value"][i] for c in per_seed]) for i in range(points)]
            curves[cfg.label(arm)] = {
                "tokens": per_seed[0]["tokens"][:points],  # seed 0's count: the seeds' differ by a few tokens
                "value": [p["mean"] for p in by_point],
                "spread": [p["spread"] for p in by_point] if len(per_seed) > 1 else None,
                "run": runs[0][0], "seeds": len(per_seed),
            }  # fmt: skip
            final[cfg.label(arm)] = {
                **_stats([c["value"][-1] if c["value"] else None for c in per_seed]),
                "runs": [u for u, _ in runs],
                "tokens": per_seed[0]["tokens"][-1] if per_seed[0]["tokens"] else None,
            }
        if curves:
            results["fig5"] = {"metric": cfg.fig5.metric, "curves": curves, "final": final,
                               "order": [cfg.label(a) for a in cfg.fig5.arms]}  # fmt: skip
    if "analysis" in units:
        a = units["analysis"]
        analysis = json.loads((out / a["output"] / "analysis.json").read_text(encoding="utf-8"))
        results["analysis"] = {"unit": "analysis", "folder": a["output"], "model": a["model"],
                               "prompts": a["prompts"], "blocks": a["blocks"],
                               "roles": analysis["roles"]}  # fmt: skip
    return results


def chance_percent(tasks: Sequence[str]) -> float:
    """Accuracy (%) of a uniform guess among each task's answers, averaged over the tasks."""
    return 100 * float(np.mean([1 / len(labels_for(t)) for t in tasks if labels_for(t)] or [0]))


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _mean_over_lengths(cells: dict[str, Any], task: str) -> float | None:
    values = [c[task]["mean"] for c in cells.values() if c[task]["mean"] is not None]
    return float(np.mean(values)) if values else None


def _length_key(label: str) -> int:
    from lm2.data.lengths import length_tokens

    return length_tokens(label)


def assemble(study: Any, parts: tuple[str, ...], seconds: float, command: str | None) -> dict[str, Any]:
    results = gather(study, parts, seconds, command)
    atomic_write_text(study.out / RESULTS, json.dumps(results, indent=1) + "\n")
    replot_report(study.out)
    return results


def draw_figures(out: Path, results: dict[str, Any]) -> dict[str, Path]:
    """Every figure of the report, from the saved numbers only."""
    from lm2 import plots

    figs = out / "figures"
    drawn: dict[str, Path] = {}
    if "table1" in results:
        t1 = results["table1"]
        curves = {
            name: {
                "mean": [m["cells"][n]["avg"]["mean"] for n in t1["lengths"]],
                "spread": [m["cells"][n]["avg"]["spread"] for n in t1["lengths"]],
            }
            for name, m in t1["models"].items()
        }
        drawn["table1"] = plots.accuracy_vs_length(
            t1["lengths"], curves, figs / "accuracy_vs_length.png",
            chance=results.get("chance", chance_percent(t1["tasks"])), tasks=len(t1["tasks"])
        )
        if any(v is not None for s in results["fig3"].values() for v in s.values()):
            drawn["fig3"] = plots.capability_radar(
                results["fig3"], figs / "fig3_capabilities.png", spread=results.get("fig3_spread")
            )
    if "fig5" in results:
        f5 = results["fig5"]
        drawn["fig5"] = plots.training_curves(
            f5["curves"], figs / "fig5_memory_depth.png", ylabel=_metric_label(f5["metric"]),
            title=f"{_metric_label(f5['metric'])} vs training tokens: {', '.join(f5['curves'])}",
            log_y=f5["metric"] == "val_ppl",
        )  # fmt: skip
    if "analysis" in results:
        from lm2.analysis.run import analysis_sources_present, draw_analysis

        folder = out / results["analysis"]["folder"]  # relative to the study folder
        # the heatmaps live in the analysis unit's folder, not in results.json: a report saved without its
        # units (results.json alone) is still drawn, without them, and says so
        if analysis_sources_present(folder):
            for path in draw_analysis(folder):
                drawn[path.stem] = path
    return drawn


def _metric_label(metric: str) -> str:
    return {"val_loss": "validation answer loss (nats / target token)", "val_acc": "validation accuracy",
            "val_ppl": "validation perplexity"}.get(metric, metric)  # fmt: skip


def replot_report(out: str | Path) -> None:
    """Redraw the figures and rewrite report.md and report.html from OUT/results.json."""
    out = Path(out)
    try:
        results = json.loads((out / RESULTS).read_text(encoding="utf-8"))
        figures = draw_figures(out, results)
        blocks = document(results, figures, out)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, IndexError) as err:
        # a results.json edited by hand or written by something else: name it instead of a traceback
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise ValueError(f"{out / RESULTS}: not a results.json of lm2 reproduce ({detail})") from None
    atomic_write_text(out / "report.md", to_markdown(blocks, out))
    atomic_write_text(out / "report.html", to_html(blocks))


def document(results: dict[str, Any], figures: dict[str, Path], out: Path) -> list[Block]:
    b: list[Block] = [("h", 1, f"LM2 reproduction study — scale {results['scale']}")]
    held = (out / results["scale_file"]).is_file()
    where = "in this folder" if held else "not in this folder: results.json → scale_config holds it"
    b.append(("p", f"Scale config: `{results['scale_file']}` ({where}); seeds per arm: {results['seeds']}; parts: "
                   f"{', '.join(results['parts'])}; written {results['date']}. Wall time of the call that wrote "
                   f"this report: {results['wall_seconds_this_call']:.0f} s; all units together (including earlier "
                   f"calls): {results['unit_seconds_total']:.0f} s."))  # fmt: skip
    if results.get("command"):
        b.append(("p", f"Command: `{results['command']}`."))
    b.append(("p", "Every number below names the units that made it (`table1:lm2:s0` = arm lm2, seed 0); the "
                   "Provenance section gives each unit's command, config and output folder. Spread = sample "
                   "standard deviation over seeds (shown when there are 2 or more)."))  # fmt: skip
    if "table1" in results:
        t1 = results["table1"]
        b.append(("h", 2, "Table 1 analog: BABILong accuracy (%)"))
        metric = results["scale_config"]["table1"]["metric"]
        b.append(("p", f"Tasks {', '.join(t1['tasks'])}; lengths {', '.join(t1['lengths'])}. Each cell: mean "
                       f"± spread over seeds of the accuracy on the test rows, answers scored by the "
                       f"`{metric}` metric of `lm2 eval babilong`."))  # fmt: skip
        for n in t1["lengths"]:
            rows = [
                [name] + [_cell(m["cells"][n][t]) for t in [*t1["tasks"], "avg"]]
                for name, m in t1["models"].items()
            ]
            b.append(("h", 3, n))
            b.append(("table", ["model", *t1["tasks"], "avg"], rows))
        runs = "; ".join(f"{name}: {', '.join(m['runs'])}" for name, m in t1["models"].items())
        b.append(("p", f"Runs: {runs}."))
        if "table1" in figures:
            b.append(("img", figures["table1"], "Accuracy (mean over tasks) vs input length per model; error bars: "
                      "spread over seeds. Source: results.json → table1."))  # fmt: skip
        if "fig3" in figures:
            groups = "; ".join(f"{g}: {', '.join(ts)}" for g, ts in CAPABILITY_GROUPS.items())
            b.append(("h", 2, "Figure 3 analog: capability groups"))
            b.append(("img", figures["fig3"], f"Mean accuracy over the group's tasks and all lengths. Groups: "
                      f"{groups} (groups with no task evaluated are left out). Source: results.json → fig3."))  # fmt: skip
    if "table2" in results:
        t2 = results["table2"]
        b.append(("h", 2, "Table 2 analog: general ability"))
        if t2["ppl"]:
            files = results["scale_config"]["table2"]["ppl_data"]
            b.append(("p", f"Perplexity on held-out text ({files}), memory/cache carried across segments, at "
                           "the same training budget for every arm."))  # fmt: skip
            rows = [[name, s.get("trained_on") or "–", _cell(s, 2), str(s["tokens"]),
                     _percent(s.get("unknown_share")), ", ".join(s["runs"])] for name, s in t2["ppl"].items()]  # fmt: skip
            b.append(("table", ["model", "trained on", "perplexity", "tokens", "unknown tokens (%)", "runs"], rows))
            shares = [s["unknown_share"] for s in t2["ppl"].values() if s.get("unknown_share") is not None]
            if shares and max(shares) > 0.1:
                b.append(("p", f"Up to {100 * max(shares):.0f}% of the scored tokens are the tokenizer's unknown "
                               "token: where the vocabulary does not cover this text, the perplexity mostly "
                               "measures how well an arm predicts that token and the words it does know."))  # fmt: skip
            kinds = {s.get("trained_on") for s in t2["ppl"].values()}
            texts = [name for name, s in t2["ppl"].items() if s.get("trained_on") == "text"]
            if texts:
                b.append(("p", f"Only the arms trained on running text ({'; '.join(texts)}: data.kind text, "
                               "the same backbones and budget) learned to predict the next word of a text: "
                               "they are the comparison of general text modelling. The others trained on "
                               "question-answer samples with the loss on the answer tokens only."))  # fmt: skip
            elif None not in kinds:
                b.append(("p", f"No arm was trained on running text (training data: {', '.join(sorted(kinds))}, "
                               "question-answer samples with the loss on the answer tokens only), so none "
                               "learned to predict the next word of a text: at this scale the perplexity says "
                               "nothing about general ability. The like-for-like check that the memory does "
                               "not hurt is Table 1's 0k column (no long context)."))  # fmt: skip
        if t2["mmlu"]:
            b.append(("p", "MMLU accuracy (%) by category and difficulty through `lm2 eval mmlu`'s scoring. "
                           "Chance is 25%: models this small score at chance, so these numbers say nothing "
                           "about general ability; they show the pipeline runs."))  # fmt: skip
            names = list(t2["mmlu"])
            groups = sorted({(k, g) for m in t2["mmlu"].values() for k in ("categories", "difficulty")
                             for g in m[k]}, key=lambda x: (x[0], x[1]))  # fmt: skip
            rows = [[g] + [_cell(t2["mmlu"][n][k].get(g)) for n in names] for k, g in groups]
            rows.append(["Average"] + [_cell(t2["mmlu"][n]["average"]) for n in names])
            b.append(("table", ["group", *names], rows))
    if "fig5" in results:
        f5 = results["fig5"]
        b.append(("h", 2, "Figure 5 analog: how many blocks hold memory"))
        if "fig5" in figures:
            b.append(("img", figures["fig5"], f"{_metric_label(f5['metric'])} vs training tokens: the mean over "
                      "each arm's seeds, its spread as a band; right, the second half on an axis fitted to it. "
                      "Source: results.json → fig5 (from each run's log.jsonl)."))  # fmt: skip
        rows = [[name, _cell(s, 4), f"{s['tokens']:.0f}" if s["tokens"] is not None else "–", ", ".join(s["runs"])]
                for name, s in f5["final"].items()]  # fmt: skip
        b.append(("table", ["arm", f"final {f5['metric']}", "training tokens", "runs"], rows))
        b.append(("p", _fig5_verdict(f5)))
    if "analysis" in results:
        a = results["analysis"]
        b.append(("h", 2, "Figure 6 analog and slot roles (Section 4.4)"))
        b.append(("p", f"Model {a['model']}, {a['prompts']} BABILong test prompts (unit `analysis`). Read "
                       "attention of every prompt token over the memory slots, averaged over heads, with the "
                       "initial memory (M_0) and with the memory after the prompt's segments are written (M_C)."))  # fmt: skip
        rows = [[str(x["layer"]), str(x["writes"]), f"{x['read_entropy_before']:.3f}", f"{x['read_entropy_after']:.3f}",
                 f"{x['read_entropy_uniform']:.3f}", f"{x['out_gate_before']:.3f}", f"{x['out_gate_after']:.3f}",
                 _num(x["in_gate"]), _num(x["forget_gate"])] for x in a["blocks"]]  # fmt: skip
        b.append(("table", ["block", "writes", "read entropy M_0", "read entropy M_C", "uniform", "out gate M_0",
                            "out gate M_C", "in gate", "forget gate"], rows))  # fmt: skip
        b.append(("p", "First prompt only; entropies in nats (lower = sharper reads); gates averaged over "
                       "tokens/slots and channels."))  # fmt: skip
        if not any(k.startswith(("fig6_", "slots_")) for k in figures):
            b.append(("p", f"The heatmaps are not drawn: their source (`{a['folder']}/heatmaps.npz` and "
                           "`analysis.json`) is not in this folder. `lm2 reproduce --replot` on a copy of the "
                           "whole study folder draws them."))  # fmt: skip
        for key in sorted(k for k in figures if k.startswith("fig6_")):
            b.append(("img", figures[key], f"Token-to-slot read attention, {key[5:].replace('_', ' ')}: left with "
                      "the initial memory, right after writing the prompt. Source: analysis/heatmaps.npz."))  # fmt: skip
        if a["roles"]:
            from lm2.analysis.roles import roles_markdown

            b.append(("p", "Slot roles over all analysed prompts: the token class each slot's writes attend to "
                           "most, and whose tokens read it most, as a ratio to chance."))  # fmt: skip
            for block in a["roles"]["blocks"]:
                b.append(("raw", roles_markdown(a["roles"], block["layer"])))
            for key in sorted(k for k in figures if k.startswith("slots_")):
                b.append(("img", figures[key], f"Write attention by token class relative to chance, "
                          f"{key[6:].replace('_', ' ')}; blank: no token of that class was written (the "
                          "question sits in the last, unwritten segment). Source: analysis/analysis.json."))  # fmt: skip
    b.append(("h", 2, "Provenance"))
    rows = [[u, f"`{r.get('command', '')}`", r.get("config", "–"), r.get("output", "–"), f"{r.get('seconds', 0):.1f}"]
            for u, r in sorted(results["units"].items())]  # fmt: skip
    b.append(("table", ["unit", "command", "config", "output", "seconds"], rows))
    return b


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _fig5_verdict(f5: dict[str, Any]) -> str:
    order = [n for n in f5["order"] if n in f5["final"] and f5["final"][n]["mean"] is not None]
    missing = [n for n in f5["order"] if n not in order]
    note = f" Arms not trained yet: {', '.join(missing)}." if missing else ""
    if len(order) < 2:
        return "Too few arms finished to compare." + note
    final = [f5["final"][n] for n in order]
    lower_better = f5["metric"] != "val_acc"
    ranked = sorted(order, key=lambda n: f5["final"][n]["mean"], reverse=not lower_better)
    pairs = list(zip(final, final[1:], strict=False))
    holds = all((a["mean"] > b["mean"]) if lower_better else (a["mean"] < b["mean"]) for a, b in pairs)
    text = (
        f"Final {f5['metric']} from best to worst: {'; '.join(ranked)}. The paper's trend (more blocks with "
        f"memory is better, i.e. {'lower' if lower_better else 'higher'} along {'; '.join(order)}) "
        + ("holds in the means" if holds else "does not hold")
    )
    if any(f["n"] < 2 for f in final):
        text += "; with one seed per arm no spread is measured, so this ordering is not evidence either way."
    elif holds:
        clear = all(abs(a["mean"] - b["mean"]) > max(a["spread"], b["spread"]) for a, b in pairs)
        text += (
            ", and every step is larger than the seed spread."
            if clear
            else ", but some steps are within the seed spread."
        )
    else:
        means, spreads = [f["mean"] for f in final], [f["spread"] for f in final]
        if None not in spreads and max(means) - min(means) <= max(spreads):
            text += (
                ": every arm is within the largest seed spread of the others, so at this scale the number "
                "of blocks with memory makes no measurable difference."
            )
        else:
            text += "."
    return text + note


def to_markdown(blocks: list[Block], out: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "raw":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            rel = Path(block[1]).resolve().relative_to(out.resolve())
            lines += [f"![{rel.stem}]({rel.as_posix()})", "", f"*{block[2]}*", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[Block]) -> str:
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "raw":  # a markdown table with a caption line
            body += _raw_table(block[1])
        elif kind == "table":
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block[1]) + "</tr>")
            body += [
                "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in block[2]
            ]
            body.append("</table>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(Path(block[1]).stem)}">'
                        f"<figcaption>{_inline(block[2])}</figcaption></figure>")  # fmt: skip
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}figcaption{font-style:italic}"
             "code{background:#f4f4f4;font-size:90%}")  # fmt: skip
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>LM2 reproduction report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def _raw_table(text: str) -> list[str]:
    out, in_table = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        else:
            if in_table:
                out.append("</table>")
                in_table = False
            if line.strip():
                out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    return out
