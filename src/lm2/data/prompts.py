"""How a BABILong row becomes model input, shared by training and evaluation so the two never drift.

``plain`` is the layout for models trained from scratch here: the context, the question, then
``Answer:``; the target follows after one space. Other layouts (the BABILong authors' instruction +
examples + post-prompt) are registered in ``PROMPT_FORMATS`` by the evaluation code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Row = Mapping[str, Any]  # {"input", "question", "target", "task", "length", ...}


def format_plain(row: Row) -> str:
    """The prompt for ``row`` in the plain layout; the answer is generated right after it."""
    return f"<context>\n{row['input']}\n</context>\nQuestion: {row['question']}\nAnswer:"


def answer_text(row: Row) -> str:
    """What the model should produce after the prompt (a leading space, no end-of-text marker)."""
    return f" {row['target']}"


PROMPT_FORMATS: dict[str, Callable[[Row], str]] = {"plain": format_plain}


def get_prompt_format(name: str) -> Callable[[Row], str]:
    if name not in PROMPT_FORMATS:
        raise ValueError(
            f"unknown prompt format {name!r}; valid formats: {', '.join(sorted(PROMPT_FORMATS))}"
        )
    return PROMPT_FORMATS[name]
