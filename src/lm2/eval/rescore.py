"""``lm2 eval rescore``: BABILong accuracy tables for answers generated elsewhere, by either metric.

Two layouts are read, and may be mixed in one table:

1. The output folder of the BABILong authors' harness: one ``<task>_<length>_<prompt config>.csv`` per set
   (``qa1_0k_instruction_yes_examples_yes_post_prompt_yes.csv``; lengths such as ``0k`` ... ``128k``, ``1M``)
   with the columns ``target``, ``output`` and ``question`` (others, like the index column, are ignored). The
   folder is one model, named after the folder. A folder holding several prompt configurations is scored for
   the one ``--prompt-config`` names (a folder with one is scored for it; each folder's is reported).
2. lm2's own ``predictions.jsonl`` (as ``lm2 eval babilong`` writes it), or a folder holding one; its models
   keep their names.

The answers are scored by :func:`lm2.eval.matcher.is_correct` and the tables are those of
``lm2 eval babilong`` (:func:`lm2.eval.babilong.aggregate`, :func:`lm2.eval.babilong.write_tables`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm2.data.babi.types import check_task
from lm2.data.lengths import length_label
from lm2.eval.babilong import PREDICTIONS, aggregate, read_predictions
from lm2.eval.matcher import Metric, labels_for

HARNESS_COLUMNS = ("target", "output", "question")
PREDICTION_KEYS = ("model", "task", "length", "id", "question", "target", "prediction")
# <task>_<length>[_<prompt config>].csv, as the harness names its files.
_HARNESS_FILE = re.compile(r"^(qa\d+)_(\d+(?:\.\d+)?[km]?)(?:_(.*))?$", re.IGNORECASE)
# Cells pandas.read_csv reads as missing by default. The authors' results script reads the CSVs with pandas
# and scores a missing output as "", so under their metric such a cell is an empty answer: it matters for
# an answer "None" (which holds the label "no") on a yes/no task.
PANDAS_MISSING = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


@dataclass
class Source:
    """The answers of one input path: its models (in order) and their records."""

    path: Path
    kind: str  # "harness" or "predictions"
    models: list[str]
    config: str | None = None  # the prompt config scored, for a harness folder
    records: list[dict[str, Any]] = field(default_factory=list)


def harness_sets(folder: Path) -> dict[str, list[tuple[str, str, Path]]]:
    """{prompt config: [(task, length, file)]} of a harness output folder (files of other names ignored)."""
    configs: dict[str, list[tuple[str, str, Path]]] = {}
    for path in sorted(folder.glob("*.csv")):
        m = _HARNESS_FILE.match(path.stem)
        if m is None:
            continue
        try:
            task, length = check_task(m.group(1)), length_label(m.group(2))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        configs.setdefault(m.group(3) or "", []).append((task, length, path))
    return configs


def _pick_config(folder: Path, configs: dict[str, Any], prompt_config: str | None) -> str:
    """The folder's only config, or (where it holds several) the one ``prompt_config`` names."""
    if len(configs) == 1:
        return next(iter(configs))
    names = ", ".join(sorted(c or "(none)" for c in configs))
    if prompt_config is None:
        raise ValueError(
            f"{folder} holds {len(configs)} prompt configs ({names}); pick one with --prompt-config"
        )
    if prompt_config not in configs:
        raise ValueError(f"{folder} has no prompt config {prompt_config!r}; it has: {names}")
    return prompt_config


def read_harness_csv(path: Path, model: str, task: str, length: str, missing_as_empty: bool) -> list[dict]:
    """The records of one harness CSV: one per row, with its position as id.

    Args:
        path: the CSV file.
        model, task, length: what the records are of.
        missing_as_empty: read an output cell that pandas reads as missing ("None", "NA", "null", ...) as an
            empty answer, as the authors' results script does.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns, rows = reader.fieldnames or [], list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({err})") from err
    missing = [c for c in HARNESS_COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(missing)} (harness CSVs have {', '.join(HARNESS_COLUMNS)})"
        )
    records = []
    for index, row in enumerate(rows):
        if not (row["target"] or "").strip():
            raise ValueError(f"{path}: row {index + 1} has an empty target")
        output = row["output"] or ""  # a short row leaves later cells None
        records.append(
            {
                "model": model,
                "task": task,
                "length": length,
                "id": str(index),
                "question": row["question"] or "",
                "target": row["target"],
                "prediction": "" if missing_as_empty and output in PANDAS_MISSING else output,
            }
        )
    return records


def read_harness_folder(folder: Path, prompt_config: str | None, missing_as_empty: bool) -> Source:
    """The answers in a harness output folder, of one prompt config; the model is named after the folder."""
    configs = harness_sets(folder)
    config = _pick_config(folder, configs, prompt_config)
    source = Source(folder, "harness", [folder.name], config=config)
    seen: dict[tuple[str, str], Path] = {}
    for task, length, path in configs[config]:
        if (task, length) in seen:
            raise ValueError(f"{path} and {seen[task, length]} hold the same set ({task}, {length})")
        seen[task, length] = path
        source.records += read_harness_csv(path, folder.name, task, length, missing_as_empty)
    return source


def read_lm2_predictions(path: Path) -> Source:
    """The answers in an lm2 ``predictions.jsonl`` (the last line wins for a repeated row)."""
    by_key: dict[tuple, dict[str, Any]] = {}
    for record in read_predictions(path):
        missing = [k for k in PREDICTION_KEYS if k not in record]
        if missing:
            raise ValueError(
                f"{path}: a line lacks {', '.join(missing)} (lines need {', '.join(PREDICTION_KEYS)})"
            )
        record = {**record, "task": check_task(str(record["task"])), "length": length_label(record["length"])}
        by_key[record["model"], record["task"], record["length"], record["id"]] = record
    models = list(dict.fromkeys(r["model"] for r in by_key.values()))
    return Source(path, "predictions", models, records=list(by_key.values()))


def read_answers(path: Path, prompt_config: str | None = None, missing_as_empty: bool = False) -> Source:
    """The answers at ``path``: a harness output folder, a predictions.jsonl, or a folder holding one."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() and (path / PREDICTIONS).is_file():
        path = path / PREDICTIONS
    if path.is_dir():
        if not harness_sets(path):
            raise ValueError(
                f"{path} holds no BABILong harness CSVs (<task>_<length>_<prompt config>.csv) "
                f"and no {PREDICTIONS}"
            )
        return read_harness_folder(path, prompt_config, missing_as_empty)
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: give a {PREDICTIONS} file, or a folder of BABILong harness CSVs")
    source = read_lm2_predictions(path)
    if not source.records:
        raise ValueError(f"{path} holds no predictions")
    return source


def _unique_names(sources: Sequence[Source]) -> None:
    """Harness folders sharing a name are named by their full paths; any other clash is an error."""
    names = [m for s in sources for m in s.models]
    for source in sources:
        if source.kind == "harness" and names.count(source.models[0]) > 1:
            source.models = [str(source.path)]
            for record in source.records:
                record["model"] = str(source.path)
    names = [m for s in sources for m in s.models]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"two inputs hold a model named {', '.join(clashes)}; model names must be unique")


def rescore(sources: Sequence[Source], metric: Metric) -> dict[str, Any]:
    """The tables of ``lm2 eval babilong`` for the answers in ``sources``, scored by ``metric``."""
    _unique_names(sources)
    records = [r for s in sources for r in s.records]
    ids: dict[tuple[str, str], dict[Any, None]] = {}  # (task, length) -> every row id seen, in order
    for record in records:
        ids.setdefault((record["task"], record["length"]), {})[record["id"]] = None
    groups = {key: [{"id": i} for i in keyed] for key, keyed in ids.items()}
    labels = {task: labels_for(task, [r["target"] for r in records if r["task"] == task]) for task, _ in ids}
    return aggregate(records, [m for s in sources for m in s.models], groups, labels, metric)


