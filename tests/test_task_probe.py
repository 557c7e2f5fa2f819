"""The task probe's story kinds: each generated qa2 / qa4 question falls in exactly the kind its facts say."""

from __future__ import annotations

import random

import pytest

from benchmarks.task_probe import qa2_kind, qa4_kind
from lm2.data.babi.generator import get_generator


def rows(task: str, stories: int) -> list[dict]:
    _, fn = get_generator(task)
    out = []
    for i in range(stories):
        for s in fn(random.Random(i)).samples():
            out.append({"task": task, "facts": s.facts, "supporting": s.supporting, "question": s.question,
                        "target": s.answer})  # fmt: skip
    return out


def test_qa2_kinds_follow_the_supporting_facts() -> None:
    seen = set()
    for row in rows("qa2", 40):
        kind = qa2_kind(row)
        event = next(i for i in row["supporting"] if row["question"].split()[-1].rstrip("?") in row["facts"][i])
        dropped = any(v in row["facts"][event] for v in (" dropped ", " discarded ", " left ", " put down "))
        assert kind.startswith("dropped" if dropped else "taken"), (kind, row)
        last_room = [f for f in row["facts"] if " to the " in f][-1].rstrip(".").split()[-1]
        assert kind.endswith("; last room named") == (last_room == row["target"]), (kind, row)
        seen.add(kind)
    # every event / order combination the generator makes shows up, both ways of the shortcut
    assert {k.split(";")[0] for k in seen} == {"dropped, move before", "taken, move before", "taken, move after"}
    assert {k.split("; ")[1] for k in seen} == {"last room named", "not the last room named"}


@pytest.mark.parametrize(
    ("facts", "question", "kind"),
    [
        (["The kitchen is north of the office.", "The garden is east of the office."],
         "What is north of the office?", "room the object of both facts"),
        (["The kitchen is north of the office.", "The garden is east of the hallway."],
         "What is north of the office?", "room in one fact"),
        (["The kitchen is north of the office.", "The office is east of the garden."],
         "What is the office east of?", "room in both, different roles"),
    ],
)  # fmt: skip
def test_qa4_kinds(facts: list[str], question: str, kind: str) -> None:
    assert qa4_kind({"facts": facts, "question": question}) == kind


def test_qa4_kind_refuses_a_story_that_is_not_qa4() -> None:
    with pytest.raises(ValueError, match="two facts"):
        qa4_kind({"facts": ["Mary went to the kitchen."], "question": "Where is Mary?"})
