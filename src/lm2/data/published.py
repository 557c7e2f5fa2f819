"""Load the published BABILong sets (Hugging Face ``RMT-team/babilong``) as builder-style rows.

The published sets have one *config* per length (``0k`` ... ``128k``) and one *split* per task
(``qa1`` ... ``qa20``); each row has ``input``, ``question`` and ``target``. This module reads them from
a local folder in any of the layouts they are found in, or from the hub (optional, needs ``datasets``):

* ``ROOT/<config>/<split>.jsonl | .json | .parquet``  — also what ``lm2 data babilong`` writes
* ``ROOT/<config>/<split>-*.parquet``                 — a download of the hub repository (push_to_hub)
* ``ROOT/<config>/<split>/``                          — ``DatasetDict.save_to_disk`` (Arrow files)
* ``ROOT/<split>/<config>.json``                      — the authors' ``create_tasks.py`` output, and the
                                                         hub's ``data/<task>/<length>.json`` files

and each of these with ``<split>`` and ``<config>`` swapped, or under ``ROOT/data/``.

Each row comes back with the builder's core fields — ``input, question, target, task, length,
length_name`` — plus ``source``, and keeps any other fields the file has (a set written by the
builder comes back exactly as written).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lm2.data.babi.types import check_task
from lm2.data.background import MissingDependency
from lm2.data.lengths import length_name, parse_length
from lm2.data.schema import check_row
from lm2.utils.io import read_jsonl

HUB_REPO = "RMT-team/babilong"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (registers pyarrow.parquet)
    except ImportError:
        raise MissingDependency(
            "reading parquet or Arrow files needs 'pyarrow': pip install pyarrow (or 'lm2[pg19]')"
        ) from None
    return pyarrow


def find_split_files(root: str | os.PathLike, config: str, split: str) -> list[Path]:
    """The files that hold ``split`` (a task) of ``config`` (a length) under ``root``, in order."""
    root = Path(root)
    for base in (root, root / "data"):
        for outer, inner in ((config, split), (split, config)):  # config/split or the authors' split/config
            folder = base / outer
            for suffix in (".jsonl", ".json", ".parquet"):
                if (folder / f"{inner}{suffix}").is_file():
                    return [folder / f"{inner}{suffix}"]
            shards = sorted(folder.glob(f"{inner}-*.parquet"))
            if shards:
                return shards
            arrow = sorted((folder / inner).glob("*.arrow"))
            if arrow:
                return arrow
    raise FileNotFoundError(
        f"no {config}/{split} set under {root}: looked for {config}/{split}.jsonl|.json|.parquet, "
        f"{config}/{split}-*.parquet, {config}/{split}/*.arrow (save_to_disk), the same with {split} and "
        f"{config} swapped (the authors' files: {split}/{config}.json), and all of these under data/"
    )


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".jsonl":
        yield from read_jsonl(path)
    elif path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            head = f.read(1)
            while head.isspace():
                head = f.read(1)
        if head == "[":  # one JSON array (the authors' files)
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            yield from data
        else:  # JSON lines under a .json name (what datasets' to_json writes)
            yield from read_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _pyarrow().parquet.read_table(path).to_pylist()
    elif path.suffix == ".arrow":
        pa = _pyarrow()
        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()  # what save_to_disk writes
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(source).read_all()
        yield from table.to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type; expected .jsonl, .json, .parquet or .arrow")


def _to_row(record: dict[str, Any], task: str, length: int, source: str, where: str) -> dict[str, Any]:
    check_row(record, where)
    row = dict(record)
    row["task"] = task
    row["length"] = length
    row["length_name"] = length_name(length)
    row.setdefault("source", source)
    return row


def load_published(
    source: str | os.PathLike | None,
    lengths: Sequence[str | int],
    tasks: Sequence[str],
    repo: str = HUB_REPO,
) -> Iterator[dict[str, Any]]:
    """Yield the rows of every (length, task) set, lengths outer, tasks inner.

    Args:
        source: a local folder in one of the layouts above, or ``None`` for the hub (needs ``datasets``).
        lengths: configs such as ``"0k"``, ``"4k"`` (or token counts: 4000 -> ``"4k"``).
        tasks: splits such as ``"qa1"``.
        repo: the hub dataset to read when ``source`` is ``None`` (``RMT-team/babilong-1k-samples`` has
            1000 samples per set).
    """
    parsed = [parse_length(x) for x in lengths]
    names = [check_task(t) for t in tasks]
    if source is not None and not Path(source).is_dir():
        raise FileNotFoundError(f"published BABILong folder not found: {source}")
    for length in parsed:
        config = length_name(length)
        for task in names:
            if source is None:
                yield from _load_hub(repo, config, task, length)
                continue
            for path in find_split_files(source, config, task):
                for i, record in enumerate(_read_records(path)):
                    yield _to_row(record, task, length, f"published:{path}", f"{path} row {i}")


def _load_hub(repo: str, config: str, task: str, length: int) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise MissingDependency(
            "loading BABILong from the hub needs the Hugging Face 'datasets' package: pip install 'lm2[pg19]' "
            "(or download the set and give its folder)"
        ) from None
    try:
        ds = datasets.load_dataset(repo, config, split=task)
    except (OSError, ConnectionError, ValueError, RuntimeError) as err:  # offline, missing config ...
        raise ValueError(
            f"could not read {repo} {config}/{task} from the hub ({type(err).__name__}: {err}); download the "
            f"set and give its folder"
        ) from err
    for i, record in enumerate(ds):
        yield _to_row(record, task, length, f"hub:{repo}", f"{repo} {config}/{task} row {i}")
