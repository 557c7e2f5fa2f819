"""Scoring a generated BABILong answer (PAPER.md §7) by one of two metrics.

Both read the answer as the BABILong authors define it: an answer is correct when, in its first sentence,
the target is the only task label present that the question does not mention (for lists, qa8: exactly the
listed labels). They differ in how they find the first sentence and the labels.

``words`` (the default) matches labels as whole words and reads the answer line by line:

- leading lines that are not the answer are skipped: a *header* is a line of at most four words, without
  a sentence end (. ! ?), without a value after a colon (bracketed notes aside), that holds no task label
  the question does not mention and does not open a list ("### Response", "Answer:", "===",
  "[Illustration: A man]");
  a line repeating the question is skipped too. A label-free sentence ("I think so.") or field
  ("Answer: John") is the answer, and wrong;
- an answer opening with a list of options (two or more lines starting with an item marker such as ``A)``,
  ``B:``, ``1.``, ``-``, all of one kind; blank lines between them allowed) is read whole: on qa8 its options are the answer
  ("- apple\\n- milk"); on any other task a list offers several answers ("A) The office\\nB) The garden",
  "A. Mary\\nB. Aggie") and is wrong, even where only one option holds a label. An item that names a field
  ("- response: Mary\\n- support: ...") is a turn of an invented dialogue, not an option: only the first
  line counts, as below;
- otherwise the answer is its first sentence: up to the first ``.``, ``!``, ``?``, line break, ``<context>``
  or ``<example>``, so text the model goes on to invent ("kitchen\\nQuestion: ...") is cut off;
- qa19 (path finding): the directions found must equal the target path, in order ("n,e" = "north, east").

``babilong`` gives the verdict of the official BABILong metric (``compare_answers`` in the authors'
``babilong/metrics.py``), re-implemented here from its documented behaviour, quirks included, so that
scores are comparable with the published tables:

- the answer is lower-cased and cut at its first ``.`` only (a line break does not end it), then at
  ``<context>`` and ``<example>``; the reference also tries to cut at "Question", but after lower-casing,
  so that cut never happens and is not made here either;
- labels are found by substring search ("one" is found in "none", "no" in "north", "mary" in "primary");
- labels found in the question are removed from those found in the answer;
- a target holding a comma and longer than three characters is a list (qa8): every item must be found and
  nothing else; any other target (qa19's "n,e" included) must be the one label found;
- the label sets are the official per-task sets below (no labels from the evaluated rows).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterable
from typing import Literal

from lm2.utils.text import comma_list

Metric = Literal["words", "babilong"]
METRICS: tuple[str, ...] = typing.get_args(Metric)

ROOMS = frozenset({"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"})
YES_NO = frozenset({"yes", "no"})

# The answer labels of each task, lower case: the official BABILong label sets, which are bAbI's answer
# vocabularies (qa19's labels are the two-step paths it asks for).
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
    "qa14": frozenset({"bedroom", "cinema", "kitchen", "office", "park", "school"}),
    "qa15": frozenset({"cat", "mouse", "sheep", "wolf"}),
    "qa16": frozenset({"gray", "green", "white", "yellow"}),
    "qa17": YES_NO,
    "qa18": YES_NO,
    "qa19": frozenset({"e,e", "e,n", "e,s", "n,e", "n,n", "n,w", "s,e", "s,s", "s,w", "w,n", "w,s", "w,w"}),
    "qa20": frozenset({"bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"}),
}
NOTHING = "nothing"
MAX_HEADER_WORDS = 4  # "### Response", "The answer is:", "Helpful answer:" (bracketed notes not counted)
DIRECTIONS = {"n": "n", "e": "e", "s": "s", "w": "w", "north": "n", "east": "e", "south": "s", "west": "w"}

# Where the words metric's first sentence ends; "<context>" and "<example>" open a prompt the model invents.
_SENTENCE_END = re.compile(r"[.!?\n]|<context>|<example>", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
# A list item's marker: a bullet, or one letter / one or two digits closed by ) . or : ("A)", "(b)", "1.") or
# in brackets ("[A]"). One letter only, so that "No. He is not." is not read as an item "He is not".
_ITEM = re.compile(r"^\s*(?:[-*•+]|\(?(?:[a-z]|\d{1,2})[).:]|\[(?:[a-z]|\d{1,2})\])(?:\s+|$)", re.IGNORECASE)
# A field name opening a line: "Answer:", "response:", "[Response]:".
_FIELD = re.compile(r"^\s*\[?[a-z][a-z _-]{0,24}\]?\s*:", re.IGNORECASE)
# A field's value: "Answer: John" holds one, "Answer:" and "### Solution ###1:" do not.
_VALUE_AFTER_COLON = re.compile(r":[^a-z0-9]*[a-z0-9]", re.IGNORECASE)
# A bracketed note ("[Illustration: A man]", "[where the apple is]"): no field value.
_BRACKETED = re.compile(r"\[[^\]]*\]")
# The official metric's cuts after the first ".": text from these on is the model writing new prompts.
_BABILONG_CUTS = ("<context>", "<example>")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (. ! ? a line break, <context> or <example>), leading blank
    lines skipped."""
    text = text.lstrip()
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def words(text: str) -> list[str]:
    """Lower-case whole words, in order."""
    return _WORD.findall(text.lower())


def target_items(target: str) -> list[str]:
    """'apple,milk' -> ['apple', 'milk']; 'Bathroom' -> ['bathroom']."""
    return [t.lower() for t in comma_list(target)]


def labels_for(task: str, targets: Iterable[str] = ()) -> frozenset[str]:
    """The answer labels of ``task`` for the ``words`` metric: the official set, plus every label in
    ``targets`` (so data with other vocabularies, or tasks past qa20, can be scored too)."""
    seen = {item for t in targets for item in target_items(t)}
    return TASK_LABELS.get(task, frozenset()) | seen


def _strip_item(line: str) -> str:
    """The line without its list-item marker, if it has one."""
    m = _ITEM.match(line)
    return line[m.end() :] if m else line


def _option(line: str) -> tuple[str, str] | None:
    """The marker kind ("a)", "0.", "-") and text of a list option ("A) The office", "- milk"), or None: the
    line is no list item, or its item names a field ("- response: Mary"), which is a turn of an invented
    dialogue, not an option."""
    m = _ITEM.match(line)
    if m is None or _FIELD.match(line[m.end() :]):
        return None
    letters_as_a = re.sub(r"[a-z]", "a", m.group().strip().lower())
    return re.sub(r"\d+", "0", letters_as_a), line[m.end() :]  # kinds: "B)" -> "a)", "12." -> "0."


def _opening_options(lines: list[str]) -> list[str]:
    """The options of the list ``lines`` opens with: lines whose markers are of one kind, blank lines between
    them allowed; [] when the first line is no option or no second option follows."""
    options: list[str] = []
    first_kind = None
    for line in lines:
        if not line.strip():
            continue
        option = _option(line)
        if option is None or (first_kind is not None and option[0] != first_kind):
            break
        first_kind = option[0]
        options.append(option[1])
    return options if len(options) >= 2 else []


def _is_header(line: str, is_label: Callable[[str], bool]) -> bool:
    """A line that only announces the answer: short, no sentence end, no label, no value after a colon."""
    unbracketed = _BRACKETED.sub("", line)
    if _SENTENCE_END.search(line) or _VALUE_AFTER_COLON.search(unbracketed):
        return False  # a sentence, or a field with its value ("Answer: John"), is an answer
    if len(words(unbracketed)) > MAX_HEADER_WORDS:
        return False  # prose ("The sequence of events is as follows:") is an answer, not a header
    return not any(is_label(w) for w in words(line))


def answer_parts(prediction: str, is_label: Callable[[str], bool], question: str = "") -> list[str]:
    """What the ``words`` metric reads in ``prediction``: header lines and repeats of the question skipped,
    then the first sentence of each option of an opening list of options, or the first sentence of the first
    line left.

    Args:
        prediction: the generated text.
        is_label: whether a lower-case word counts as an answer label (question labels excluded).
        question: the question (a line repeating it, "Question:" in front or not, is skipped).
    """
    asked = words(question)
    lines = prediction.splitlines()
    for i, line in enumerate(lines):
        options = _opening_options(lines[i:])
        if options:
            return [first_sentence(option) for option in options]
        text = _strip_item(line)
        if not text.strip() or _is_header(text, is_label) or _repeats(words(text), asked):
            continue
        return [first_sentence(text)]
    return []


def _repeats(said: list[str], question: list[str]) -> bool:
    """Whether a line's words are the question's, "Question:" in front or not."""
    if said[:1] == ["question"]:
        said = said[1:]
    return bool(question) and said == question


def words_correct(prediction: str, target: str, question: str, task: str, labels: Iterable[str] = ()) -> bool:
    """The ``words`` verdict (see the module docstring): whole-word labels, headers skipped, lists whole."""
    items = target_items(target)
    if not items:
        raise ValueError(f"empty target for {task} question {question!r}")
    asked = set(words(question))
    if task == "qa19":
        parts = answer_parts(prediction, lambda w: w in DIRECTIONS, question)
        path = [DIRECTIONS[w] for part in parts for w in words(part) if w in DIRECTIONS]
        return path == [DIRECTIONS.get(i, i) for i in items]
    task_labels = labels_for(task, [target]) | {label.lower() for label in labels}

    def is_label(word: str) -> bool:
        return word in task_labels and word not in asked

    parts = answer_parts(prediction, is_label, question)
    found = {w for part in parts for w in words(part) if is_label(w)}
    if task == "qa8":
        return found == set(items)  # "nothing" is the empty list's label and must stand alone
    if sum(1 for part in parts if part.strip()) > 1:
        return False  # a list of options offers several answers, even where only one is a label
    return len(items) == 1 and found == {items[0]}


def babilong_correct(prediction: str, target: str, question: str, task: str) -> bool:
    """The verdict of the official BABILong metric (see the module docstring), with its label sets."""
    if task not in TASK_LABELS:
        raise ValueError(f"the babilong metric has label sets for qa1-qa20 only, not {task!r}")
    labels = TASK_LABELS[task]
    answer = prediction.lower().split(".", 1)[0]
    for cut in _BABILONG_CUTS:
        answer = answer.split(cut, 1)[0]
    question = question.lower()
    found = {label for label in labels if label in answer and label not in question}
    target = target.lower()
    if "," in target and len(target) > 3:
        items = target.split(",")  # items are not stripped: "apple, milk" can never be matched
        return set(items) <= found and len(found) == len(items)
    return found == {target}


def is_correct(
    prediction: str,
    target: str,
    question: str,
    task: str,
    labels: Iterable[str] = (),
    metric: Metric = "words",
) -> bool:
    """Whether ``prediction`` answers ``question`` with ``target`` under ``metric``.

    Args:
        prediction: the generated text.
        target: the reference answer; comma-joined for lists (qa8) and paths (qa19).
        question: the question; labels it mentions are ignored in the prediction.
        task: "qa1" ... "qa20".
        labels: extra labels for the task (``words`` only; e.g. every target of the evaluated rows).
        metric: "words" (whole words, headers skipped, lists read whole) or "babilong" (the official rules).
    """
    if metric == "words":
        return words_correct(prediction, target, question, task, labels)
    if metric == "babilong":
        return babilong_correct(prediction, target, question, task)
    raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
