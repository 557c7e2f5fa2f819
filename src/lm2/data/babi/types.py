"""The in-memory form of bAbI stories, shared by the generator, the file reader and the BABILong builder.

A bAbI *story* is a numbered list of lines: statements, and questions that carry an answer and the ids
(1-based line numbers within the story) of the statements that support it. One story yields one
*sample* per question: the statements before that question, the question, its answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm2.utils.text import comma_list


@dataclass(frozen=True)
class Statement:
    text: str  # one sentence, with its final full stop: "Mary moved to the bathroom."


@dataclass(frozen=True)
class Question:
    text: str  # "Where is Mary?"
    answer: str  # "bathroom"; lists are comma-joined ("apple,milk"), paths too ("n,e")
    supporting: tuple[int, ...]  # 1-based line ids within the story


Line = Statement | Question


@dataclass
class Story:
    """One story as the original files hold it: lines numbered from 1 in order."""

    task: str  # "qa1" ... "qa20"
    lines: list[Line] = field(default_factory=list)

    def samples(self) -> list[Sample]:
        """One sample per question, with every statement that precedes it (as the bAbI loaders do)."""
        out: list[Sample] = []
        facts: list[str] = []
        fact_ids: list[int] = []
        for line_id, line in enumerate(self.lines, start=1):
            if isinstance(line, Statement):
                facts.append(line.text)
                fact_ids.append(line_id)
                continue
            position = {lid: i for i, lid in enumerate(fact_ids)}
            missing = [s for s in line.supporting if s not in position]
            if missing:
                raise ValueError(
                    f"{self.task}: question {line.text!r} (line {line_id}) cites supporting ids {missing} "
                    f"that are not statements before it"
                )
            out.append(
                Sample(
                    task=self.task,
                    facts=list(facts),
                    question=line.text,
                    answer=line.answer,
                    supporting=tuple(position[s] for s in line.supporting),
                )
            )
        return out


@dataclass(frozen=True)
class Sample:
    """A question with its context: what BABILong scatters into background text."""

    task: str
    facts: list[str]  # every statement before the question, in order
    question: str
    answer: str
    supporting: tuple[int, ...]  # 0-based indices into ``facts``


# The original files' names: ``qa{N}_{slug}_{split}.txt``.
TASK_SLUGS: dict[str, str] = {
    "qa1": "single-supporting-fact",
    "qa2": "two-supporting-facts",
    "qa3": "three-supporting-facts",
    "qa4": "two-arg-relations",
    "qa5": "three-arg-relations",
    "qa6": "yes-no-questions",
    "qa7": "counting",
    "qa8": "lists-sets",
    "qa9": "simple-negation",
    "qa10": "indefinite-knowledge",
    "qa11": "basic-coreference",
    "qa12": "conjunction",
    "qa13": "compound-coreference",
    "qa14": "time-reasoning",
    "qa15": "basic-deduction",
    "qa16": "basic-induction",
    "qa17": "positional-reasoning",
    "qa18": "size-reasoning",
    "qa19": "path-finding",
    "qa20": "agents-motivations",
}


def check_task(task: str) -> str:
    """Normalise a task name ("qa1", "QA1", "1") or raise naming the valid ones."""
    name = task.strip().lower()
    if name.isdigit():
        name = f"qa{name}"
    if name not in TASK_SLUGS:
        raise ValueError(f"unknown bAbI task {task!r}; valid tasks are qa1 ... qa20")
    return name


def parse_tasks(spec: str) -> list[str]:
    """'qa1,qa2' or 'qa1-qa5' or 'all' -> normalised task names, in order, without repeats."""
    if spec.strip().lower() == "all":
        return list(TASK_SLUGS)
    out: list[str] = []
    for part in comma_list(spec):
        if "-" in part:
            lo, hi = (check_task(p) for p in part.split("-", 1))
            a, b = int(lo[2:]), int(hi[2:])
            if a > b:
                raise ValueError(f"task range {part!r} runs backwards")
            names = [f"qa{i}" for i in range(a, b + 1)]
        else:
            names = [check_task(part)]
        out.extend(n for n in names if n not in out)
    if not out:
        raise ValueError(f"no tasks in {spec!r}; give e.g. 'qa1,qa2', 'qa1-qa10' or 'all'")
    return out
