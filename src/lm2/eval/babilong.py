"""``lm2 eval babilong``: accuracy on BABILong, in the layout of the paper's Table 1.

For every model, every (task, length) group of rows is turned into prompts (``plain`` or the authors'
``babilong`` layout, optionally after a retrieval step shortens the context), answered by batched greedy
generation (left padding, at most 20 new tokens) and scored by a metric of :mod:`lm2.eval.matcher`
(``words``, whole-word matching, by default; ``babilong``, the official BABILong rules). A prompt longer
than ``chunk_tokens`` is answered alone: all but its last piece is fed through the model in chunks of
that many tokens with the cache carried (:func:`lm2.state.feed_tokens`: constant memory with an attention
window or RMT), then the answer is generated from the cache, exactly as from the whole prompt. Each answer
is appended to ``predictions.jsonl`` as soon as its batch is done, with its prompt's token count and its
share of the batch's seconds (the tables' reading speed), so
a crashed run started again with the same ``--out`` only computes the rows not yet scored. The tables
(``results.md``, ``results.csv``, ``results.json``) are rebuilt from the predictions at the end.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lm2.data.lengths import length_tokens
from lm2.data.prompts import get_prompt_format
from lm2.data.rows import Row, task_order
from lm2.eval.matcher import Metric, is_correct, labels_for
from lm2.models.outputs import CACHE_FIELD
from lm2.state import feed_tokens
from lm2.utils.io import atomic_write, atomic_write_text

MAX_NEW_TOKENS = 20
PREDICTIONS = "predictions.jsonl"

# A retrieval step: a row -> the row with a shortened "input" (or just the shortened context).
Retriever = Callable[[Row], "Row | str"]


@dataclass
class Candidate:
    """One model to evaluate: its name in the tables, and a loader (so models load one at a time)."""

    name: str
    load: Callable[[], tuple[Any, Any]]


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """Greedy continuations of ``prompts`` as one left-padded batch, decoded without special tokens."""
    tokenizer.padding_side = "left"  # the last prompt token must sit at the last position of every row
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
    return tokenizer.batch_decode(new, skip_special_tokens=True)


@torch.no_grad()
def generate_long_answer(
    model: Any, tokenizer: Any, prompt: str, chunk_tokens: int, max_new_tokens: int = MAX_NEW_TOKENS
) -> str:
    """The greedy continuation of one long ``prompt``, read in chunks of ``chunk_tokens`` tokens.

    The prompt's ids are those of :func:`generate_answers` (a batch of one has no padding). Every whole
    chunk but the last piece is fed with the cache carried; ``generate`` gets the rest (1 to
    ``chunk_tokens`` tokens) and a mask over the whole prompt, so it continues from the cache.
    """
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)  # (1, T)
    T = ids.shape[1]
    split = (T - 1) // chunk_tokens * chunk_tokens  # what is read before generate(): whole chunks, not all
    cache = feed_tokens(model, ids[:, :split], chunk_tokens) if split else None
    rest = ids[:, split:]
    out = model.generate(
        input_ids=rest,
        attention_mask=torch.ones(1, T, dtype=torch.long, device=ids.device),
        **({CACHE_FIELD: cache} if cache is not None else {}),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, rest.shape[1] :], skip_special_tokens=True)


def apply_retriever(row: Row, retriever: Retriever | None) -> Row:
    if retriever is None:
        return row
    shortened = retriever(row)
    if isinstance(shortened, Mapping) and "input" in shortened:
        shortened = shortened["input"]
    if not isinstance(shortened, str):
        raise TypeError(f"the retriever must return a row with 'input' or a string, got {type(shortened)}")
    return {**row, "input": shortened}  # the row keeps its own id, task, question and target


def make_retriever(spec: str) -> Retriever:
    """``--rag SPEC``: ``module:function`` names a callable row -> row/str; anything else goes to
    ``lm2.baselines.rag.make_rag(SPEC)`` (the BM25 retriever of the baselines)."""
    module, sep, name = spec.partition(":")
    if sep and module and "." in module:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"--rag {spec!r}: cannot import {name} from {module} ({err})") from err
    try:
        rag = importlib.import_module("lm2.baselines.rag")
    except ModuleNotFoundError as err:
        raise ValueError(
            f"--rag {spec!r} needs lm2.baselines.rag (the BM25 baseline), which is not installed; "
            "or give a callable as module:function"
        ) from err
    return rag.make_rag(spec)


def _prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """The records of a predictions file; a torn last line (a crash mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: corrupt predictions line ({err.msg})") from err
    return records


def _write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def evaluate(
    candidates: Sequence[Candidate],
    groups: dict[tuple[str, str], list[Row]],
    out: str | os.PathLike,
    prompt: str = "plain",
    batch_size: int = 8,
    retriever: Retriever | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    metric: Metric = "words",
    chunk_tokens: int | None = 4096,
) -> dict[str, Any]:
    """Score every candidate on every group, resuming from ``out/predictions.jsonl``; write the tables.

    Prompts longer than ``chunk_tokens`` tokens are answered one at a time through
    :func:`generate_long_answer`; ``None`` answers every prompt in batches by one call (the earlier path,
    whose memory grows with the prompt for a full-attention model or RMT).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1 (or None: no chunks), got {chunk_tokens}")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a name in {names}; names must be unique")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / PREDICTIONS
    format_prompt = get_prompt_format(prompt)
    labels = {
        task: labels_for(task, [r["target"] for (t, _), rows in groups.items() if t == task for r in rows])
        for task, _ in groups
    }

    done = {(r["model"], r["task"], r["length"], r["id"]): r for r in read_predictions(pred_path)}
    _write_predictions(pred_path, list(done.values()))  # drops a torn last line before appending

    # Retrieval and prompts once for all models (the retriever may be slow).
    prompts = [
        (row, format_prompt(apply_retriever(row, retriever))) for rows in groups.values() for row in rows
    ]
    for candidate in candidates:
        pending: list[tuple[Row, str]] = []
        for row, text in prompts:
            key = (candidate.name, row["task"], row["length"], row["id"])
            if key in done:
                if done[key]["prompt_sha1"] != _prompt_hash(text):
                    raise ValueError(
                        f"{pred_path} holds a prediction for {key} made from a different prompt; "
                        "use a new --out folder (or delete it) when the data, prompt or RAG changes"
                    )
                continue
            pending.append((row, text))
        if not pending:
            continue
        model, tokenizer = candidate.load()
        # Similar lengths together: less padding, and the longest batches come first (fail early on memory).
        pending.sort(key=lambda p: len(p[1]), reverse=True)
        counts = [len(tokenizer(text)["input_ids"]) for _, text in pending]  # prompt tokens of each row
        long = [chunk_tokens is not None and n > chunk_tokens for n in counts]
        short = [i for i, is_long in enumerate(long) if not is_long]
        # A long prompt alone (read in chunks); the short ones in batches, composed as without chunking.
        jobs = [[i] for i, is_long in enumerate(long) if is_long]
        jobs += [short[s : s + batch_size] for s in range(0, len(short), batch_size)]
        for job in tqdm(jobs, desc=f"babilong {candidate.name}", unit="batch"):
            chunk = [pending[i] for i in job]
            start = time.perf_counter()
            if long[job[0]]:
                answers = [generate_long_answer(model, tokenizer, chunk[0][1], chunk_tokens, max_new_tokens)]
            else:
                answers = generate_answers(model, tokenizer, [t for _, t in chunk], max_new_tokens)
            seconds = time.perf_counter() - start
            job_tokens = sum(counts[i] for i in job)
            records = []
            for i, (row, text), answer in zip(job, chunk, answers, strict=True):
                record = {
                    "model": candidate.name,
                    "task": row["task"],
                    "length": row["length"],
                    "id": row["id"],
                    "question": row["question"],
                    "target": row["target"],
                    "prediction": answer,
                    "correct": is_correct(
                        answer, row["target"], row["question"], row["task"], labels[row["task"]], metric
                    ),
                    "prompt_sha1": _prompt_hash(text),
                    "tokens": counts[i],
                    "seconds": seconds * counts[i] / job_tokens,  # the row's share of its batch's time
                }
                records.append(record)
                done[(candidate.name, row["task"], row["length"], row["id"])] = record
            _append(pred_path, records)
        del model, tokenizer

    results = aggregate(list(done.values()), names, groups, labels, metric)
    write_tables(results, out)
    return results


def aggregate(
    records: list[dict[str, Any]],
    models: Sequence[str],
    groups: dict[tuple[str, str], list[Row]],
    labels: dict[str, frozenset[str]],
    metric: Metric = "words",
) -> dict[str, Any]:
    """{"tasks", "lengths", "models", "metric", "accuracy": {length: {model: {task: %, "avg": %}}},
    "count": ...} and, for the models whose answers were timed (by ``evaluate``; not answers made
    elsewhere), "speed": {model: {"tokens", "seconds", "tokens_per_second"}} over the prompts read.

    Only the asked rows count (a predictions file may hold more, from an earlier, larger run); answers are
    re-scored by ``metric`` so the tables always follow the current matcher.
    """
    tasks = sorted({t for t, _ in groups}, key=task_order)
    lengths = sorted({n for _, n in groups}, key=length_tokens)
    by_key = {(r["model"], r["task"], r["length"], r["id"]): r for r in records}
    accuracy: dict[str, dict[str, dict[str, float]]] = {}
    count: dict[str, dict[str, dict[str, int]]] = {}
    timed: dict[str, list[tuple[int, float]]] = {}  # model -> (prompt tokens, seconds) of each timed row
    for length in lengths:
        for model in models:
            acc, cnt = {}, {}
            for task in tasks:
                rows = groups.get((task, length), [])  # a set the data lacks: an empty cell
                hits = [by_key.get((model, task, length, r["id"])) for r in rows]
                scored = [h for h in hits if h is not None]
                timed.setdefault(model, []).extend((h["tokens"], h["seconds"]) for h in scored if "seconds" in h)
                cnt[task] = len(scored)
                correct = sum(
                    is_correct(h["prediction"], h["target"], h["question"], task, labels[task], metric)
                    for h in scored
                )
                acc[task] = 100.0 * correct / len(scored) if scored else float("nan")
            acc["avg"] = sum(acc[t] for t in tasks) / len(tasks)
            accuracy.setdefault(length, {})[model] = acc
            count.setdefault(length, {})[model] = cnt
    speed = {}
    for model, rows in timed.items():
        tokens, seconds = sum(n for n, _ in rows), sum(t for _, t in rows)
        if rows and seconds > 0:
            speed[model] = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}
    results = {
        "tasks": tasks,
        "lengths": lengths,
        "models": list(models),
        "metric": metric,
        "accuracy": accuracy,
        "count": count,
    }
    return {**results, "speed": speed} if speed else results


def _cell(value: float) -> str:
    return "–" if value != value else f"{value:.1f}"  # NaN: nothing scored


def to_markdown(results: dict[str, Any]) -> str:
    """One block per length: rows are models, columns the tasks and their average (accuracy, %)."""
    cols = results["tasks"] + ["avg"]
    lines = ["# BABILong accuracy (%)", ""]
    if "metric" in results:
        lines += [f"Scored by the `{results['metric']}` metric.", ""]
    for length in results["lengths"]:
        lines += [f"## {length}", "", "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for model in results["models"]:
            acc = results["accuracy"][length][model]
            lines.append(f"| {model} | " + " | ".join(_cell(acc[c]) for c in cols) + " |")
        lines.append("")
    if len(results["lengths"]) > 1:  # the paper's summary: the task average of each model at each length
        lines += ["## average over tasks", "", "| model | " + " | ".join(results["lengths"]) + " |"]
        lines.append("|---" * (len(results["lengths"]) + 1) + "|")
        for model in results["models"]:
            avgs = [_cell(results["accuracy"][n][model]["avg"]) for n in results["lengths"]]
            lines.append(f"| {model} | " + " | ".join(avgs) + " |")
        lines.append("")
    if results.get("speed"):  # answers generated by this evaluation: how fast each model read its prompts
        lines += ["## reading speed", "", "| model | prompt tokens | seconds | prompt tokens/s |", "|---|---|---|---|"]
        for model, sp in results["speed"].items():
            lines.append(f"| {model} | {sp['tokens']:,} | {sp['seconds']:.1f} | {sp['tokens_per_second']:,.0f} |")
        lines.append("")
    return "\n".join(lines)


def to_csv(results: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = results["tasks"] + ["avg"]
    writer.writerow(["length", "model", *cols])
    for length in results["lengths"]:
        for model in results["models"]:
            acc = results["accuracy"][length][model]
            writer.writerow([length, model, *(_cell(acc[c]) for c in cols)])
    return buf.getvalue()


def write_tables(results: dict[str, Any], out: Path) -> None:
    def clean(value: Any) -> Any:  # JSON has no NaN: a cell with nothing scored is null
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, float) and value != value:
            return None
        return round(value, 4) if isinstance(value, float) else value

    atomic_write_text(out / "results.md", to_markdown(results))
    atomic_write_text(out / "results.csv", to_csv(results))
    atomic_write(out / "results.json", lambda p: p.write_text(json.dumps(clean(results), indent=2) + "\n"))




