"""Reading BABILong rows for evaluation from the three layouts a user may have.

1. Generated rows: JSONL files written by ``lm2 data babilong`` (a file, or a folder searched recursively),
   one row a line with at least ``input``, ``question``, ``target``, ``task``, ``length``.
2. The published BABILong sets in the Hugging Face layout of RMT-team/babilong: a folder with one
   sub-folder per length (``0k``, ``1k``, ...) holding one split per task, as ``<task>.json``/``.jsonl``,
   ``<task>-*.parquet``, or a ``<task>/`` folder of parquet, json or arrow files (``save_to_disk``).
   Their rows have ``input``, ``question``, ``target``; task and length come from the path.
3. bAbI files in the original format (``qaN_<name>_<split>.txt``): the 0K setting, facts only. A folder
   holding both splits is read from its ``test`` files.

Every row comes back as a dict with ``id``, ``task`` and a normalised ``length`` label added, grouped by
(task, length).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from lm2.data.babi.format import read_stories, task_from_filename
from lm2.data.babi.types import check_task

Row = dict[str, Any]
REQUIRED = ("input", "question", "target")
_LENGTH = re.compile(r"^(\d+)\s*([kK]?)$")
_TASK_FILE = re.compile(r"^(qa\d+)(?:[-_.].*)?$", re.IGNORECASE)


def length_label(length: Any) -> str:
    """A canonical length name: "1K", "1k", 1024 and "1024" -> "1k"; 0 -> "0k"; 500 -> "500"."""
    m = _LENGTH.match(str(length).strip())
    if not m:
        raise ValueError(f"bad length {length!r}; use e.g. 0k, 1k, 4k, 128k or a number of tokens")
    n, k = int(m.group(1)), m.group(2)
    if k or n == 0:
        return f"{n}k"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def length_tokens(label: str) -> int:
    """The numeric order of a length label ("4k" -> 4096), for sorting."""
    return int(label[:-1]) * 1024 if label.endswith("k") else int(label)


def task_order(task: str) -> int:
    return int(task[2:])


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, row


def _check_fields(row: dict[str, Any], where: str, extra: tuple[str, ...] = ()) -> None:
    missing = [k for k in REQUIRED + extra if k not in row]
    if missing:
        raise ValueError(f"{where}: row lacks {', '.join(missing)} (rows need {', '.join(REQUIRED + extra)})")


def read_generated(path: Path) -> Iterator[Row]:
    """Rows of one JSONL file from ``lm2 data babilong``."""
    for lineno, row in _jsonl(path):
        _check_fields(row, f"{path}:{lineno}", ("task", "length"))
        task, length = check_task(str(row["task"])), length_label(row["length"])
        rid = f"{path.stem}:{row.get('id', lineno)}"  # ids need only be unique within their file
        yield {**row, "id": rid, "task": task, "length": length}


def _table_rows(path: Path) -> list[dict[str, Any]]:
    """Records of one published split file (json, jsonl, parquet or arrow)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".arrow"):
        try:
            import pyarrow
            import pyarrow.ipc
            import pyarrow.parquet
        except ImportError as err:
            raise ValueError(f"{path}: reading {suffix} files needs pyarrow (pip install pyarrow)") from err
        if suffix == ".parquet":
            return pyarrow.parquet.read_table(path).to_pylist()
        with pyarrow.memory_map(str(path)) as source:
            try:
                return pyarrow.ipc.open_stream(source).read_all().to_pylist()
            except pyarrow.ArrowInvalid:
                return pyarrow.ipc.open_file(source).read_all().to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [row for _, row in _jsonl(path)]
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):  # columns
        keys = list(data)
        return [dict(zip(keys, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if isinstance(data, dict):
        return [data]
    return list(data)


_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow")


def _published_splits(length_dir: Path) -> dict[str, list[Path]]:
    """task -> the files of its split inside one length folder."""
    splits: dict[str, list[Path]] = {}
    for entry in sorted(length_dir.iterdir()):
        m = _TASK_FILE.match(entry.name)
        if not m:
            continue
        task = check_task(m.group(1))
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if p.suffix.lower() in _DATA_SUFFIXES)
            files = [p for p in files if p.name not in ("dataset_info.json", "state.json")]
        elif entry.suffix.lower() in _DATA_SUFFIXES:
            files = [entry]
        else:
            continue
        splits.setdefault(task, []).extend(files)
    return splits


def is_published(path: Path) -> bool:
    return path.is_dir() and any(d.is_dir() and _LENGTH.match(d.name) for d in path.iterdir())


def read_published(root: Path, tasks: Collection[str] | None = None) -> Iterator[Row]:
    """Rows of a published BABILong folder (one sub-folder per length), of ``tasks`` only if given."""
    for length_dir in sorted(root.iterdir()):
        if not (length_dir.is_dir() and _LENGTH.match(length_dir.name)):
            continue
        length = length_label(length_dir.name)
        for task, files in _published_splits(length_dir).items():
            if tasks is not None and task not in tasks:
                continue
            index = 0
            for file in files:
                for record in _table_rows(file):
                    _check_fields(record, f"{file} (row {index})")
                    yield {**record, "id": f"{task}/{length}/{index}", "task": task, "length": length}
                    index += 1


def _babi_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("qa*_*_*.txt"))
    tests = [p for p in files if p.stem.endswith("_test")]
    return tests or files


def read_babi(path: Path) -> Iterator[Row]:
    """0K rows from one bAbI file: the facts before each question joined into the context."""
    task = task_from_filename(path)
    index = 0
    for story in read_stories(path, task):
        for sample in story.samples():
            yield {
                "id": f"{path.stem}:{index}",
                "input": " ".join(sample.facts),
                "question": sample.question,
                "target": sample.answer,
                "task": task,
                "length": "0k",
            }
            index += 1


def read_source(path: str | os.PathLike, tasks: Collection[str] | None = None) -> Iterator[Row]:
    """The rows of one ``--data`` entry, whatever its layout (files of other ``tasks`` are not read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    if path.is_file():
        if path.suffix == ".jsonl":
            yield from read_generated(path)
        elif path.suffix == ".txt":
            if tasks is None or task_from_filename(path) in tasks:
                yield from read_babi(path)
        else:
            raise ValueError(
                f"{path}: unknown data file; give a .jsonl of rows, a bAbI .txt file or a folder"
            )
        return
    if is_published(path):
        yield from read_published(path, tasks)
        return
    babi = _babi_files(path)
    jsonl = sorted(path.rglob("*.jsonl"))
    if not babi and not jsonl:
        raise ValueError(
            f"{path}: no BABILong data found; expected JSONL rows, length folders (0k, 1k, ...) of the "
            "published sets, or bAbI files qaN_<name>_<split>.txt"
        )
    for file in babi:
        if tasks is None or task_from_filename(file) in tasks:
            yield from read_babi(file)
    for file in jsonl:
        yield from read_generated(file)


def load_rows(
    sources: Iterable[str | os.PathLike],
    tasks: list[str] | None = None,
    lengths: list[str] | None = None,
    samples: int | None = None,
) -> dict[tuple[str, str], list[Row]]:
    """Rows grouped by (task, length), in the order asked for.

    ``tasks``/``lengths`` of None take everything the data has; asking for one the data lacks is an
    error naming what it has. ``samples`` keeps the first N rows of each group.
    """
    tasks = [check_task(t) for t in tasks] if tasks else None
    groups: dict[tuple[str, str], list[Row]] = {}
    for source in sources:
        for row in read_source(source, tasks):
            groups.setdefault((row["task"], row["length"]), []).append(row)
    if not groups:
        asked = f" of {', '.join(tasks)}" if tasks else ""
        raise ValueError(f"no rows{asked} in {', '.join(map(str, sources))}")
    have_tasks = sorted({t for t, _ in groups}, key=task_order)
    have_lengths = sorted({n for _, n in groups}, key=length_tokens)
    tasks = tasks or have_tasks
    lengths = [length_label(n) for n in lengths] if lengths else have_lengths
    for task in tasks:
        for length in lengths:
            if (task, length) not in groups:
                where = sorted((n for t, n in groups if t == task), key=length_tokens)
                raise ValueError(
                    f"the data has no {task} rows at length {length}; "
                    + (
                        f"{task} has lengths {', '.join(where)}"
                        if where
                        else f"tasks present: {', '.join(have_tasks)}"
                    )
                    + f" (lengths present: {', '.join(have_lengths)})"
                )
    out: dict[tuple[str, str], list[Row]] = {}
    for length in lengths:
        for task in tasks:
            rows = groups[(task, length)]
            ids = [r["id"] for r in rows]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"duplicate row id {dup!r} in {task} at {length}; row ids must be unique")
            out[(task, length)] = rows[:samples] if samples else rows
    return out
