"""Read and write the original bAbI text format.

Each line is ``<id> <text>``; ids restart at 1 for a new story. A question line has the question, a tab,
the answer, a tab, and the space-separated ids of its supporting facts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from lm2.data.babi.types import TASK_SLUGS, Question, Statement, Story, check_task
from lm2.utils.io import atomic_write_text

_LINE = re.compile(r"^(\d+) (.*)$")


def task_from_filename(path: str | os.PathLike) -> str:
    """'qa3_three-supporting-facts_train.txt' -> 'qa3'."""
    name = Path(path).name
    m = re.match(r"^(qa\d+)_", name)
    if not m:
        raise ValueError(
            f"{path}: cannot tell the bAbI task from the file name (expected qa<N>_<name>_<split>.txt)"
        )
    return check_task(m.group(1))


def read_stories(path: str | os.PathLike, task: str | None = None) -> Iterator[Story]:
    """Yield the stories of one bAbI file. Malformed lines raise ``ValueError`` naming file and line."""
    path = Path(path)
    task = check_task(task) if task else task_from_filename(path)
    story: Story | None = None
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, raw in enumerate(f, start=1):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            m = _LINE.match(raw)
            if not m:
                raise ValueError(f"{path}:{lineno}: expected '<id> <text>', got {raw!r}")
            line_id, body = int(m.group(1)), m.group(2)
            if line_id == 1:
                if story is not None:
                    yield story
                story = Story(task=task)
            elif story is None or line_id != len(story.lines) + 1:
                expected = 1 if story is None else len(story.lines) + 1
                raise ValueError(
                    f"{path}:{lineno}: line id {line_id} out of order (expected {expected} or 1)"
                )
            if "\t" in body:
                parts = body.split("\t")
                if len(parts) != 3 or not parts[1].strip():
                    raise ValueError(
                        f"{path}:{lineno}: a question line needs 'question<TAB>answer<TAB>ids', got {raw!r}"
                    )
                try:
                    support = tuple(int(s) for s in parts[2].split())
                except ValueError:
                    raise ValueError(
                        f"{path}:{lineno}: supporting ids must be integers, got {parts[2]!r}"
                    ) from None
                if any(s < 1 or s >= line_id for s in support):
                    raise ValueError(
                        f"{path}:{lineno}: supporting ids {list(support)} must point at earlier lines"
                    )
                story.lines.append(
                    Question(text=parts[0].strip(), answer=parts[1].strip(), supporting=support)
                )
            else:
                story.lines.append(Statement(text=body.strip()))
    if story is not None:
        yield story


def format_stories(stories: Iterable[Story]) -> str:
    """The original file text for ``stories``."""
    out: list[str] = []
    for story in stories:
        for line_id, line in enumerate(story.lines, start=1):
            if isinstance(line, Question):
                ids = " ".join(str(s) for s in line.supporting)
                out.append(f"{line_id} {line.text}\t{line.answer}\t{ids}\n")
            else:
                out.append(f"{line_id} {line.text}\n")
    return "".join(out)


WORD = re.compile(r"[A-Za-z]+")


def vocabulary(stories: Iterable[Story]) -> set[str]:
    """Word types (case kept) of every line, questions and answers included."""
    words: set[str] = set()
    for story in stories:
        for line in story.lines:
            words.update(WORD.findall(line.text))
            if isinstance(line, Question):
                words.update(WORD.findall(line.answer))
    return words


def babi_filename(task: str, split: str = "train") -> str:
    """The original file name of ``task``: 'qa1' -> 'qa1_single-supporting-fact_train.txt'."""
    task = check_task(task)
    return f"{task}_{TASK_SLUGS[task]}_{split}.txt"


def write_stories(
    stories: Iterable[Story], directory: str | os.PathLike, task: str, split: str = "train"
) -> Path:
    """Write ``stories`` atomically to ``directory/<original name>`` and return the path."""
    path = Path(directory) / babi_filename(task, split)
    atomic_write_text(path, format_stories(stories))
    return path


def find_task_file(directory: str | os.PathLike, task: str, split: str = "train") -> Path:
    """The file of ``task`` in a folder laid out like bAbI's ``en/`` or ``en-10k/``."""
    task = check_task(task)
    matches = sorted(Path(directory).glob(f"{task}_*_{split}.txt"))
    if not matches:
        raise FileNotFoundError(
            f"no {task} {split} file (expected {babi_filename(task, split)}) in {directory}"
        )
    return matches[0]
