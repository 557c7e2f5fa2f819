"""Scoring a generated BABILong answer (PAPER.md §7), with whole-word matching.

The BABILong authors score an answer as correct when, after taking its first sentence, the target is the
only task label present that the question does not mention. Their reference code finds labels by
substring search, which is wrong in both directions: a correct "none" on qa7 is read as "one", "I do not
know" on qa6 is read as "no", "north" contains "no". Here labels are matched as whole words.

- qa8 (lists): the set of object labels found must equal the listed items exactly ("nothing" is the empty
  list's label); order does not matter.
- qa19 (path finding): the directions found must equal the target path, in order ("n,e" = "north, east").
- Tasks without a fixed label set (qa11-qa20 apart from the yes/no ones) use the labels of the rows being
  scored (every target seen for that task), plus the target itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROOMS = frozenset({"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"})
YES_NO = frozenset({"yes", "no"})

# bAbI answer labels per task (PAPER.md §7); qa11+ follow the bAbI generators' vocabularies.
TASK_LABELS: dict[str, frozenset[str]] = {
    "qa1": ROOMS,
    "qa2": ROOMS,
    "qa3": ROOMS,
    "qa4": ROOMS,
    "qa5": frozenset({"bill", "fred", "jeff", "mary", "apple", "football", "milk"}),
    "qa6": YES_NO,
    "qa7": frozenset({"none", "one", "two", "three"}),
    "qa8": frozenset({"apple", "football", "milk", "nothing"}),
    "qa9": YES_NO,
    "qa10": frozenset({"yes", "no", "maybe"}),
    "qa11": ROOMS,
    "qa12": ROOMS,
    "qa13": ROOMS,
    "qa17": YES_NO,
    "qa18": YES_NO,
}
NOTHING = "nothing"
DIRECTIONS = {"n": "n", "e": "e", "s": "s", "w": "w", "north": "n", "east": "e", "south": "s", "west": "w"}

_SENTENCE_END = re.compile(r"[.!?\n]")
_WORD = re.compile(r"[a-z0-9]+")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (. ! ? or a line break), leading blank lines skipped."""
    text = text.lstrip()
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def words(text: str) -> list[str]:
    """Lower-case whole words, in order."""
    return _WORD.findall(text.lower())


def target_items(target: str) -> list[str]:
    """'apple,milk' -> ['apple', 'milk']; 'Bathroom' -> ['bathroom']."""
    return [t.strip().lower() for t in target.split(",") if t.strip()]


def labels_for(task: str, targets: Iterable[str] = ()) -> frozenset[str]:
    """The answer labels of ``task``: the fixed set where bAbI has one, plus every label in ``targets``."""
    seen = {item for t in targets for item in target_items(t)}
    return TASK_LABELS.get(task, frozenset()) | seen


def is_correct(prediction: str, target: str, question: str, task: str, labels: Iterable[str] = ()) -> bool:
    """Whether ``prediction`` answers ``question`` with ``target`` under the rules above.

    Args:
        prediction: the generated text (only its first sentence is read).
        target: the reference answer; comma-joined for lists (qa8) and paths (qa19).
        question: the question; labels it mentions are ignored in the prediction.
        task: "qa1" ... "qa20".
        labels: extra labels for the task (e.g. every target of the evaluated rows).
    """
    said = words(first_sentence(prediction))
    asked = set(words(question))
    items = target_items(target)
    if not items:
        raise ValueError(f"empty target for {task} question {question!r}")
    if task == "qa19":
        path = [DIRECTIONS[w] for w in said if w in DIRECTIONS]
        return path == [DIRECTIONS.get(i, i) for i in items]
    task_labels = labels_for(task, [target]) | {label.lower() for label in labels}
    found = {w for w in said if w in task_labels and w not in asked}
    if task == "qa8":
        expected = set(items)
        if expected == {NOTHING}:
            return found == {NOTHING}
        return found == expected
    return len(items) == 1 and found == {items[0]}
