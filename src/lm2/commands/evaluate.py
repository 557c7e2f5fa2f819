"""``lm2 eval ...``: BABILong accuracy, MMLU, perplexity, lm-evaluation-harness tasks, and rescoring answers made elsewhere."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

from lm2.eval.matcher import Metric
from lm2.utils.io import atomic_write_text, check_out_folder
from lm2.utils.text import comma_list


def _model_names(dirs: list[Path], rag: bool) -> list[str]:
    from lm2.eval.model_folder import model_name

    names = [model_name(d) for d in dirs]  # a run folder, or its OUT/last, is "RUN step N"
    if len(set(names)) != len(names):
        names = [str(d) for d in dirs]
    return [n + "+RAG" if rag else n for n in names]


def eval_babilong(
    model: str,
    data: str,
    out: str,
    tasks: str | None = None,
    lengths: str | None = None,
    prompt: Literal["plain", "babilong"] = "plain",
    batch_size: int = 8,
    samples: int | None = None,
    rag: str | None = None,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
    metric: Metric = "words",
    chunk_tokens: int | None = 4096,
) -> None:
    """Evaluate checkpoints on BABILong and write the paper's Table 1 layout (markdown, CSV, JSON).

    Answers are generated greedily (at most 20 new tokens) and scored by --metric. Every answer
    goes to OUT/predictions.jsonl at once; running again with the same --out skips rows already scored.
    The tables end with each model's reading speed (prompt tokens per second of answering).

    Args:
        model: comma-separated, each a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained); each gives one row of the tables
            (a run is named "RUN step N").
        data: comma-separated sources: JSONL rows from `lm2 data babilong` (file or folder), a published
            BABILong folder (one sub-folder per length), or bAbI files/folders (0k).
        out: output folder for predictions.jsonl and results.{md,csv,json}.
        tasks: e.g. qa1,qa2 or qa1-qa10; default: every task in the data.
        lengths: e.g. 0k,1k,4k; default: every length in the data.
        prompt: plain (context, question, Answer:) or babilong (the authors' instruction + examples layout).
        batch_size: prompts per generation batch.
        samples: keep the first N rows of each task and length.
        rag: shorten each context by retrieval: a spec for lm2.baselines.rag.make_rag, or module:function.
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16.
        metric: words (whole-word labels, header lines skipped, option lists rejected, follow-up text cut
            off) or babilong (the official BABILong rules, for numbers comparable with published tables).
        chunk_tokens: a prompt longer than this is answered alone, read in chunks of this many tokens with
            the model's cache carried (memory flat in the prompt's length with an attention window or RMT;
            the same answers as one call); none: every prompt in one call, in batches.
    """
    from lm2.data.rows import missing_sets, select_rows
    from lm2.eval.babilong import Candidate, evaluate, make_retriever, to_markdown
    from lm2.eval.model_folder import check_checkpoint, load_model_and_tokenizer, resolve_device

    resolve_device(device)  # a wrong --device is one line before any work
    dirs = [Path(p) for p in comma_list(model)]
    if not dirs:
        raise ValueError("--model needs at least one checkpoint folder")
    check_out_folder(out, "predictions.jsonl and results.{md,csv,json}")
    groups = select_rows(data, tasks, lengths, samples)
    missing = missing_sets(groups)
    if missing:  # data mixed from sources of different grids: say so, the tables show these cells as –
        print(
            f"lm2 eval babilong: warning: the data has no {', '.join(f'{t} at {n}' for t, n in missing)}; "
            "those cells will be – (give --tasks/--lengths to evaluate only sets that exist)",
            file=sys.stderr,
        )
    retriever = make_retriever(rag) if rag else None
    candidates = [
        Candidate(name, lambda d=d: load_model_and_tokenizer(d, device, dtype))
        for name, d in zip(_model_names(dirs, rag is not None), dirs, strict=True)
    ]
    for d in dirs:  # fail before hours of work on the first model if a later folder is broken
        check_checkpoint(d)
    results = evaluate(
        candidates, groups, out, prompt=prompt, batch_size=batch_size, retriever=retriever, metric=metric,
        chunk_tokens=chunk_tokens,
    )  # fmt: skip
    print(to_markdown(results))


def eval_mmlu(
    model: str,
    data: str,
    shots: int = 5,
    split: Literal["dev", "val", "test"] = "test",
    out: str | None = None,
    subjects: str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Evaluate a checkpoint on MMLU by the log-likelihood of the answer letter.

    Prints (and with --out writes) accuracy by subject, by category (STEM, Humanities, Social Sciences,
    Other) and by difficulty (High School, College, Professional, General Knowledge).

    Args:
        model: a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained).
        data: MMLU folder: original layout ({dev,test}/<subject>_<split>.csv) or cais/mmlu (<subject>/<split>-*.parquet|json).
        shots: solved examples from the dev split before each question, 0 to 5.
        split: the split to evaluate: dev, val or test (dev questions are never their own examples).
        out: folder for mmlu.json and mmlu.md.
        subjects: comma-separated subjects to evaluate (default: all in the data).
        batch_size: sequences per forward pass.
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16.
    """
    from lm2.eval.mmlu import evaluate_mmlu, read_split, to_markdown
    from lm2.eval.model_folder import load_model_and_tokenizer, model_name, resolve_device

    resolve_device(device)  # a wrong --device is one line before any work
    if not 0 <= shots <= 5:
        raise ValueError(f"--shots must be between 0 and 5 (the dev split has 5 questions a subject), got {shots}")
    if out:
        check_out_folder(out, "mmlu.json and mmlu.md")
    questions = read_split(data, split)
    if subjects:
        wanted = comma_list(subjects)
        missing = [s for s in wanted if s not in questions]
        if missing:
            raise ValueError(
                f"the {split} split has no subject {missing[0]!r}; it has {', '.join(sorted(questions))}"
            )
        questions = {s: questions[s] for s in wanted}
    dev = read_split(data, "dev") if shots else {}
    lm, tokenizer = load_model_and_tokenizer(model, device, dtype)
    results = evaluate_mmlu(lm, tokenizer, questions, dev, shots, batch_size)
    results["settings"] = {"model": str(model), "data": str(data), "split": split, "shots": shots}
    text = to_markdown(results, model_name(model))
    if out:
        atomic_write_text(Path(out) / "mmlu.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(Path(out) / "mmlu.md", text)
    print(text)


def eval_ppl(
    model: str,
    data: str,
    segment_length: int = 512,
    max_tokens: int | None = None,
    window: int | None = None,
    out: str | None = None,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Perplexity of a checkpoint on text files, with memory/cache carried from segment to segment.

    Prints a table: tokens scored, mean NLL per token (nats) and perplexity, per file and in all; with
    --out also OUT/results.md and OUT/results.json. A progress bar per file goes to stderr.

    Args:
        model: a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained).
        data: text file(s) or folder(s) of .txt files, comma-separated; synthetic or synthetic:SEED for the
            labelled synthetic haystack.
        segment_length: tokens fed per forward pass.
        max_tokens: stop after this many tokens in all (default: everything).
        window: for a model without a cache: tokens of context per prediction (default 2 x segment length).
        out: output folder for results.md and results.json (as the other evaluations).
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16.
    """
    from lm2.data.texts import text_sources
    from lm2.eval.model_folder import load_model_and_tokenizer, model_name, resolve_device
    from lm2.eval.ppl import perplexity, to_markdown

    resolve_device(device)  # a wrong --device is one line before any work
    files = text_sources(comma_list(data))
    if max_tokens is not None and max_tokens < 2:
        raise ValueError(f"--max-tokens must be at least 2, got {max_tokens}")
    if out:
        check_out_folder(out, "results.md and results.json")
    lm, tokenizer = load_model_and_tokenizer(model, device, dtype)
    results = perplexity(lm, tokenizer, files, segment_length, max_tokens, window, progress=True)
    results["model"] = str(model)
    results["name"] = model_name(model)
    text = to_markdown(results)
    if out:
        atomic_write_text(Path(os.fspath(out)) / "results.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(Path(os.fspath(out)) / "results.md", text)
    print(text)


def eval_harness(
    model: str,
    tasks: str,
    include_path: str | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out: str | None = None,
    builtin_tasks: bool = True,
    batch_size: int = 1,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Run lm-evaluation-harness tasks on a checkpoint (needs the extra: pip install 'lm2[eval]').

    Args:
        model: a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained).
        tasks: comma-separated harness task names.
        include_path: folder of extra task YAMLs (e.g. tasks reading local data files).
        shots: few-shot examples per question (default: the task's own setting).
        limit: evaluate only the first N documents of each task.
        out: write the results JSON to this file.
        builtin_tasks: index the harness's built-in tasks too (--no-builtin-tasks: only --include-path).
        batch_size: sequences per forward pass.
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16.
    """
    from lm2.eval.harness import run_harness
    from lm2.eval.model_folder import resolve_device

    resolve_device(device)  # a wrong --device is one line before any work
    names = comma_list(tasks)
    if not names:
        raise ValueError("--tasks needs at least one harness task name")
    results = run_harness(model, names, include_path, shots, limit, device, dtype, batch_size, builtin_tasks)
    text = json.dumps(results["results"], indent=2, default=str)
    if out:
        atomic_write_text(Path(out), text + "\n")
    print(text)


def eval_rescore(predictions: str, out: str, metric: Metric, prompt_config: str | None = None) -> None:
    """Score BABILong answers generated elsewhere and write the tables of `lm2 eval babilong`.

    Reads the BABILong harness's output folders (<task>_<length>_<prompt config>.csv files with the columns
    target, output, question; the model is named after the folder) and lm2's predictions.jsonl.

    Args:
        predictions: comma-separated: harness output folders, predictions.jsonl files or folders holding one.
        out: output folder for results.{md,csv,json}.
        metric: words (whole-word labels, header lines skipped, option lists rejected, follow-up text cut
            off) or babilong (the official BABILong rules, as in the published tables).
        prompt_config: the prompt set-up to score where a harness folder holds several, e.g.
            instruction_yes_examples_yes_post_prompt_yes (the file name after the length); a folder with
            one set-up is scored for it.
    """
    from lm2.eval.babilong import to_markdown, write_tables
    from lm2.eval.rescore import read_answers, rescore

    target = check_out_folder(out, "results.{md,csv,json}")
    paths = [Path(p) for p in comma_list(predictions)]
    if not paths:
        raise ValueError("--predictions needs at least one folder or predictions.jsonl")
    sources = [read_answers(p, prompt_config, missing_as_empty=metric == "babilong") for p in paths]
    for source in sources:
        if source.kind == "harness":
            print(f"{source.path}: prompt config {source.config or '(none)'}", file=sys.stderr)
    results = rescore(sources, metric)
    target.mkdir(parents=True, exist_ok=True)
    write_tables(results, target)
    print(to_markdown(results))
