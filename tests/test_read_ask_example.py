"""The README's read-once-ask-many example: questions and answers made from a BABILong row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.read_ask_example import last_places, score, write_questions

FACTS = ["Mary went to the kitchen.", "John journeyed to the garden.", "Mary travelled back to the office."]
POSITIONS = [{"distance": 900}, {"distance": 500}, {"distance": 40}]


def _rows(tmp_path: Path, **changes) -> Path:
    row = {"input": "Some book text. " + " ".join(FACTS) + " More book text.", "question": "Where is Mary?",
           "target": "office", "task": "qa1", "facts": FACTS, "fact_positions": POSITIONS, **changes}  # fmt: skip
    path = tmp_path / "qa1.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def test_each_person_is_asked_for_their_last_place_with_its_distance() -> None:
    assert last_places(FACTS, POSITIONS) == [
        {"question": "Where is Mary?", "answer": "office", "fact": FACTS[2], "distance": 40},
        {"question": "Where is John?", "answer": "garden", "fact": FACTS[1], "distance": 500},
    ]


def test_the_files_are_written_and_answers_scored(tmp_path: Path) -> None:
    out = tmp_path / "example"
    write_questions(_rows(tmp_path), 0, out)
    assert (out / "questions.txt").read_text() == "Where is Mary?\nWhere is John?\n"
    assert "Mary travelled back to the office." in (out / "document.txt").read_text()
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        json.dumps({"question": "Where is Mary?", "answer": " office"}) + "\n"
        + json.dumps({"question": "Where is John?", "answer": "kitchen"}) + "\n"
    )  # fmt: skip
    table = score(out, answers)
    assert "| Where is Mary? | office | 40 |  office | yes |" in table
    assert "| Where is John? | garden | 500 | kitchen | no |" in table and table.endswith("1 of 2 right\n")


def test_a_row_whose_target_disagrees_or_another_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parsed 'office' for 'Where is Mary\\?', the row says 'garden'"):
        write_questions(_rows(tmp_path, target="garden"), 0, tmp_path / "a")
    with pytest.raises(ValueError, match="task 'qa2'"):
        write_questions(_rows(tmp_path, task="qa2"), 0, tmp_path / "b")
    with pytest.raises(ValueError, match="rows 0-0"):
        write_questions(_rows(tmp_path), 3, tmp_path / "c")
