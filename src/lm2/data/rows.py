"""Reading BABILong and bAbI rows, for training and evaluation alike, from the layouts a user may have.

1. Generated rows: JSONL files written by ``lm2 data babilong`` (a file, or a folder searched recursively),
   one row a line with at least ``input``, ``question``, ``target``, ``task``, ``length``.
2. The published BABILong sets (RMT-team/babilong) in any local layout :mod:`lm2.data.published` reads —
   ``<length>/<task>.json|.jsonl|.parquet``, ``<length>/<task>-*.parquet``, ``<length>/<task>/*.arrow``
   (``save_to_disk``), the same with task and length swapped, or under ``data/`` — which is also what
   ``lm2 data babilong`` writes. The (task, length) sets present are found by looking at the names.
3. bAbI files in the original format (``qaN_<name>_<split>.txt``): the 0K setting, facts only. A folder
   holding both splits is read from its ``test`` files.

Every row comes back as a dict with ``id``, ``task`` and a normalised ``length`` label added; evaluation
groups them by (task, length) (:func:`load_rows`), training takes them as they come (:func:`read_rows`)
or, for bAbI files, story by story (:func:`babi_stories`) so that splits keep stories whole.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lm2.data.babi.format import find_task_file, read_stories, task_from_filename
from lm2.data.babi.types import check_task, parse_tasks
from lm2.data.lengths import length_label, length_tokens, parse_length
from lm2.data.published import load_published
from lm2.data.schema import check_row
from lm2.utils.io import iter_jsonl
from lm2.utils.text import comma_list

Row = dict[str, Any]
_TASK = re.compile(r"^qa\d+$", re.IGNORECASE)
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow")


def task_order(task: str) -> int:
    return int(task[2:])


def read_generated(path: Path) -> Iterator[Row]:
    """Rows of one JSONL file from ``lm2 data babilong``."""
    empty = True
    for lineno, row in iter_jsonl(path):
        empty = False
        check_row(row, f"{path}:{lineno}", ("task", "length"))
        task = check_task(str(row["task"]))
        length = length_label(row.get("length_name", row["length"]))
        rid = f"{path.stem}:{row.get('id', lineno)}"  # ids need only be unique within their file
        yield {**row, "id": rid, "task": task, "length": length}
    if empty:
        raise ValueError(f"{path}: no rows (the file is empty); give a JSONL file with one row per line")


def _kind(name: str) -> str | None:
    """ "task" for qa1..., "length" for 0k, 4k, 1000 ..., else None."""
    if _TASK.match(name):
        return "task"
    try:
        parse_length(name)
    except ValueError:
        return None
    return "length"


def published_sets(root: Path) -> list[tuple[str, str]]:
    """The (task, length) sets a published-layout folder holds, found from its folder and file names."""
    pairs: set[tuple[str, str]] = set()
    for base in (root, root / "data"):
        if not base.is_dir():
            continue
        for outer in base.iterdir():
            outer_kind = _kind(outer.name) if outer.is_dir() else None
            if outer_kind is None:
                continue
            for inner in outer.iterdir():
                if inner.is_file() and inner.suffix.lower() not in _DATA_SUFFIXES:
                    continue
                name = inner.name if inner.is_dir() else inner.name.split(".")[0].split("-")[0]
                inner_kind = _kind(name)
                if inner_kind is None or inner_kind == outer_kind:
                    continue
                task, length = (outer.name, name) if outer_kind == "task" else (name, outer.name)
                pairs.add((check_task(task), length_label(length)))
    return sorted(pairs, key=lambda p: (length_tokens(p[1]), task_order(p[0])))


def read_published(root: Path, tasks: Collection[str] | None = None) -> Iterator[Row]:
    """Rows of a published BABILong folder, of ``tasks`` only if given."""
    for task, length in published_sets(root):
        if tasks is not None and task not in tasks:
            continue
        for index, row in enumerate(load_published(root, [length], [task])):
            yield {**row, "id": f"{task}/{length}/{index}", "task": task, "length": length}


def _babi_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("qa*_*_*.txt"))
    tests = [p for p in files if p.stem.endswith("_test")]
    return tests or files


def babi_stories(path: Path) -> Iterator[list[Row]]:
    """0K rows from one bAbI file, one list per story: the facts before each question joined into the context."""
    task = task_from_filename(path)
    index = 0
    for story in read_stories(path, task):
        rows = []
        for sample in story.samples():
            rows.append(
                {
                    "id": f"{path.stem}:{index}",
                    "input": " ".join(sample.facts),
                    "question": sample.question,
                    "target": sample.answer,
                    "task": task,
                    "length": "0k",
                }
            )
            index += 1
        yield rows


def read_babi(path: Path) -> Iterator[Row]:
    """0K rows from one bAbI file."""
    for story in babi_stories(path):
        yield from story


def read_babi_rows(sources: Sequence[str], tasks: Iterable[str] | None) -> list[list[dict[str, Any]]]:
    """Rows from the training files of bAbI folders (facts only: BABILong's 0k), one list per story so that
    splits keep stories whole."""
    stories: list[list[dict[str, Any]]] = []
    for src in sources:
        folder = Path(src)
        if not folder.is_dir():
            raise FileNotFoundError(f"bAbI folder not found: {folder}")
        if tasks:
            files = [find_task_file(folder, t, "train") for t in tasks]
        else:
            files = sorted(folder.glob("qa*_*_train.txt"))
            if not files:
                raise FileNotFoundError(f"no bAbI training files (qa<N>_<name>_train.txt) in {folder}")
        for path in files:
            stories.extend(babi_stories(path))
    return stories


def check_build_complete(root: Path) -> None:
    """Refuse a folder of ``lm2 data babilong`` whose build was cut short (its manifest lists every file)."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{manifest_path}: corrupt, not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != "lm2-babilong-v1":
        return  # some other manifest: nothing to check against
    missing = [f for f in manifest.get("files", []) if not (root / f).is_file()]
    if missing or manifest.get("complete") is False:
        what = (
            f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}"
            if missing
            else "unfinished"
        )
        raise ValueError(
            f"{root} is an unfinished `lm2 data babilong` build ({what}): run the same command again to "
            "finish it, or give complete data"
        )


def missing_sets(groups: dict[tuple[str, str], list[Row]]) -> list[tuple[str, str]]:
    """The (task, length) pairs absent from the grid of the tasks and lengths ``groups`` has."""
    tasks = sorted({t for t, _ in groups}, key=task_order)
    lengths = sorted({n for _, n in groups}, key=length_tokens)
    return [(t, n) for n in lengths for t in tasks if (t, n) not in groups]


def read_source(path: str | os.PathLike, tasks: Collection[str] | None = None) -> Iterator[Row]:
    """The rows of one data entry (a file, a folder or a glob), whatever its layout (files of other ``tasks``
    are not read)."""
    path = Path(path)
    if not path.exists():
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            raise FileNotFoundError(f"data not found: {path} (no such file, folder or glob match)")
        for match in matches:
            yield from read_source(match, tasks)
        return
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
    check_build_complete(path)
    if published_sets(path):
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
    """Rows grouped by (task, length), lengths outer, tasks inner.

    ``tasks``/``lengths`` of None take every set the data has. Asking for a task or a length the data
    lacks is an error naming what it has; with both given, every pair must be present. ``samples`` keeps
    the first N rows of each set.
    """
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    sources = list(sources)
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
    lengths = [length_label(n) for n in lengths] if lengths else None
    for task in tasks or []:
        where = sorted((n for t, n in groups if t == task), key=length_tokens)
        for length in lengths or [None]:
            if (task, length) not in groups and (length is not None or not where):
                raise ValueError(
                    f"the data has no {task} rows"
                    + (f" at length {length}" if length else "")
                    + (
                        f"; {task} has lengths {', '.join(where)}"
                        if where
                        else f"; tasks present: {', '.join(have_tasks)}"
                    )
                    + f" (lengths present: {', '.join(have_lengths)})"
                )
    for length in lengths or []:
        if not any(n == length for _, n in groups):
            raise ValueError(
                f"the data has no rows at length {length}; lengths present: {', '.join(have_lengths)}"
            )
    # Asked for explicitly: every pair of the asked tasks and lengths; otherwise whatever the data has.
    keys = [
        (t, n)
        for n in (lengths or have_lengths)
        for t in (tasks or have_tasks)
        if (t, n) in groups and (not tasks or t in tasks) and (not lengths or n in lengths)
    ]
    out: dict[tuple[str, str], list[Row]] = {}
    for task, length in keys:
        rows = groups[(task, length)]
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate row id {dup!r} in {task} at {length}; row ids must be unique")
        out[(task, length)] = rows[:samples] if samples else rows
    return out


def select_rows(
    data: str, tasks: str | None = None, lengths: str | None = None, samples: int | None = None
) -> dict[tuple[str, str], list[Row]]:
    """:func:`load_rows` of the strings a command or a study config takes: comma-separated sources and
    lengths, tasks as ``parse_tasks`` reads them ("qa1,qa2", "qa1-qa5"); None = all the data has."""
    return load_rows(
        comma_list(data),
        tasks=parse_tasks(tasks) if tasks else None,
        lengths=comma_list(lengths) or None,
        samples=samples,
    )


def read_rows(sources: Iterable[str | os.PathLike]) -> list[Row]:
    """Every row of ``sources`` (files, folders or globs of any layout), in order: what training reads."""
    sources = list(sources)
    rows = [row for source in sources for row in read_source(source)]
    if not rows:
        raise ValueError(f"no rows in {', '.join(map(str, sources))}")
    return rows
