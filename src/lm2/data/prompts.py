"""How a BABILong row becomes model input, shared by training and evaluation so the two never drift.

Two layouts, both ending in ``Answer:`` with the target following after one space (:func:`answer_text`):

- ``plain``: the context and the question only — for models trained from scratch here.
- ``babilong``: the BABILong authors' structure — a task instruction, in-context examples, a post-prompt
  on the answer's form, then ``<context>…</context>`` and ``Question: …`` — for pretrained models that need
  to be told the task. The instructions and examples below are this project's own wording.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]  # {"input", "question", "target", "task", "length", ...}


def format_plain(row: Row) -> str:
    """The prompt for ``row`` in the plain layout; the answer is generated right after it."""
    return plain_context(row["input"]) + plain_question(row["question"])


def plain_context(context: str) -> str:
    """The plain layout's first part, the context (what ``lm2 read --prompt plain`` reads)."""
    return f"<context>\n{context}\n</context>\n"


def plain_question(question: str) -> str:
    """The plain layout's second part, the question up to ``Answer:`` (what ``lm2 ask`` appends)."""
    return f"Question: {question}\nAnswer:"


def answer_text(row: Row) -> str:
    """What the model should produce after the prompt (a leading space, no end-of-text marker)."""
    return f" {row['target']}"


@dataclass(frozen=True)
class TaskPrompt:
    instruction: str
    examples: tuple[tuple[str, str, str], ...]  # (context, question, answer)
    post_prompt: str


_ONE_WORD = "Answer with a single word and nothing else."
_LOCATION = (
    "You will read a long text. Somewhere inside it are short statements about people and objects "
    "moving between places. Find the statements that matter for the question and use only them."
)

BABILONG_TASKS: dict[str, TaskPrompt] = {
    "qa1": TaskPrompt(
        _LOCATION + " The question asks where a person is at the end; the last move of that person decides.",
        (
            (
                "Sandra went to the garden. John travelled to the office. Sandra walked to the kitchen.",
                "Where is Sandra?",
                "kitchen",
            ),
            ("Daniel moved to the hallway. Mary journeyed to the bedroom.", "Where is Daniel?", "hallway"),
        ),
        "Name the place: " + _ONE_WORD,
    ),
    "qa2": TaskPrompt(
        _LOCATION + " An object is wherever the person who last took it is, until it is put down.",
        (
            (
                "John took the apple there. John went to the garden. Mary moved to the office.",
                "Where is the apple?",
                "garden",
            ),
            (
                "Sandra picked up the milk. Sandra travelled to the hallway. Sandra left the milk. "
                "Sandra went to the kitchen.",
                "Where is the milk?",
                "hallway",
            ),
        ),
        "Name the place: " + _ONE_WORD,
    ),
    "qa3": TaskPrompt(
        _LOCATION + " Follow every place an object passes through, in order, to tell where it was before "
        "a given place.",
        (
            (
                "Mary grabbed the football. Mary went to the bedroom. Mary travelled to the garden.",
                "Where was the football before the garden?",
                "bedroom",
            ),
            (
                "Daniel got the milk. Daniel moved to the office. Daniel journeyed to the kitchen. "
                "Daniel went to the hallway.",
                "Where was the milk before the hallway?",
                "kitchen",
            ),
        ),
        "Name the place: " + _ONE_WORD,
    ),
    "qa4": TaskPrompt(
        "You will read a long text. Somewhere inside it are statements about how rooms lie relative to "
        "each other (north, south, east, west). Use them to answer the question.",
        (
            (
                "The kitchen is west of the garden. The office is north of the garden.",
                "What is the garden south of?",
                "office",
            ),
            (
                "The bedroom is south of the hallway. The bathroom is east of the hallway.",
                "What is south of the hallway?",
                "bedroom",
            ),
        ),
        "Name the room: " + _ONE_WORD,
    ),
    "qa5": TaskPrompt(
        "You will read a long text. Somewhere inside it are statements about people moving and handing "
        "objects to each other. Use them to tell who gave what to whom.",
        (
            (
                "Fred picked up the apple. Fred handed the apple to Jeff. Bill went to the garden.",
                "What did Fred give to Jeff?",
                "apple",
            ),
            ("Mary took the milk. Mary passed the milk to Bill.", "Who gave the milk to Bill?", "Mary"),
        ),
        "Name the person or the object: " + _ONE_WORD,
    ),
    "qa6": TaskPrompt(
        _LOCATION + " Tell whether the statement in the question is true at the end.",
        (
            ("John moved to the kitchen. John went to the garden.", "Is John in the kitchen?", "no"),
            ("Sandra travelled to the office.", "Is Sandra in the office?", "yes"),
        ),
        "Answer yes or no, one word only.",
    ),
    "qa7": TaskPrompt(
        _LOCATION + " Count how many objects a person holds at the end; dropping an object removes it.",
        (
            (
                "Daniel picked up the football. Daniel took the apple. Daniel dropped the football.",
                "How many objects is Daniel carrying?",
                "one",
            ),
            ("Mary got the milk. Mary put down the milk.", "How many objects is Mary carrying?", "none"),
        ),
        "Answer with one of none, one, two, three: " + _ONE_WORD,
    ),
    "qa8": TaskPrompt(
        _LOCATION + " List the objects a person holds at the end; dropping an object removes it.",
        (
            ("Sandra took the apple. Sandra grabbed the milk.", "What is Sandra carrying?", "apple,milk"),
            ("John got the football. John discarded the football.", "What is John carrying?", "nothing"),
        ),
        "Answer with the objects separated by commas, or the word nothing if there are none.",
    ),
    "qa9": TaskPrompt(
        _LOCATION + " Some statements say where a person is not; they count as facts too.",
        (
            (
                "Mary is no longer in the bedroom. Mary travelled to the office.",
                "Is Mary in the office?",
                "yes",
            ),
            ("John is not in the garden.", "Is John in the garden?", "no"),
        ),
        "Answer yes or no, one word only.",
    ),
    "qa10": TaskPrompt(
        _LOCATION + " Some statements only say a person is in one of two places; then the answer can be "
        "uncertain.",
        (
            ("Bill is either in the park or the school.", "Is Bill in the park?", "maybe"),
            ("Fred went to the kitchen.", "Is Fred in the cinema?", "no"),
        ),
        "Answer yes, no or maybe, one word only.",
    ),
}

_GENERIC = TaskPrompt(
    "You will read a long text. Somewhere inside it are short statements that answer the question; the "
    "rest is unrelated. Use only the statements that matter.",
    (),
    "Answer as briefly as possible.",
)


def format_babilong(row: Row) -> str:
    """The authors' layout: instruction, examples, post-prompt, then the context and the question."""
    spec = BABILONG_TASKS.get(str(row.get("task", "")).lower(), _GENERIC)
    parts = [spec.instruction]
    for context, question, answer in spec.examples:
        parts.append(
            f"<example>\n<context>\n{context}\n</context>\nQuestion: {question}\nAnswer: {answer}\n</example>"
        )
    parts.append(spec.post_prompt)
    parts.append(f"<context>\n{row['input']}\n</context>\n\nQuestion: {row['question']}\nAnswer:")
    return "\n\n".join(parts)


PROMPT_FORMATS: dict[str, Callable[[Row], str]] = {"plain": format_plain, "babilong": format_babilong}


def get_prompt_format(name: str) -> Callable[[Row], str]:
    if name not in PROMPT_FORMATS:
        raise ValueError(
            f"unknown prompt format {name!r}; valid formats: {', '.join(sorted(PROMPT_FORMATS))}"
        )
    return PROMPT_FORMATS[name]
