"""Lengths of BABILong inputs in tokens, and their names: "4k" = 4,000 tokens of facts and background.

One home for parsing and naming lengths, used by the builder, the row readers, training and evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# A length is the input's size in tokens by default; the BABILong authors' create_tasks.py instead counts the
# whole prompt and leaves 300 tokens of it for instruction, examples and question (``prompt_reserve=300``).
PROMPT_RESERVE = 0
AUTHORS_PROMPT_RESERVE = 300
MAX_LENGTH = 10_000_000  # BABILong goes to 10M tokens; beyond that is surely a typo
STANDARD_LENGTHS = ["0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"]
DEFAULT_LENGTHS = ",".join(STANDARD_LENGTHS)  # what `lm2 data babilong` builds unless told

_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)\s*([km]?)$")


def parse_length(spec: str | int) -> int:
    """'4k' -> 4000 tokens, '1m' -> 1_000_000, '1500' -> 1500, '0k' -> 0 (facts only)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        value = spec
    else:
        m = _LENGTH.match(str(spec).strip().lower())
        if not m:
            raise ValueError(
                f"bad length {spec!r}: give a token count such as 0k, 1k, 4k, 128k (k = 1000 tokens), "
                f"1m, or an integer"
            )
        scale = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2)]
        exact = float(m.group(1)) * scale
        if exact != int(exact):
            raise ValueError(f"bad length {spec!r}: it is not a whole number of tokens")
        value = int(exact)
    if value < 0:
        raise ValueError(f"length must not be negative, got {spec!r}")
    if value > MAX_LENGTH:
        raise ValueError(f"length {spec!r} is over the limit of {MAX_LENGTH:,} tokens")
    return value


def length_label(length: Any) -> str:
    """Any spelling of a length as its config name: "1K", 1000, "1k" -> "1k"; 0 -> "0k"."""
    return length_name(parse_length(length))


def length_name(tokens: int) -> str:
    """The config name of a length: 1000 -> '1k', 0 -> '0k', 1_000_000 -> '1m', 1500 -> '1500'."""
    if tokens % 1_000_000 == 0 and tokens:
        return f"{tokens // 1_000_000}m"
    if tokens % 1000 == 0:
        return f"{tokens // 1000}k"
    return str(tokens)


def parse_lengths(spec: str | Sequence[str | int]) -> list[int]:
    """'0k,1k,4k' or 'all' (0k ... 128k) -> token counts, in order, without repeats."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    if isinstance(spec, str) and spec.strip().lower() == "all":
        parts = STANDARD_LENGTHS
    out: list[int] = []
    for part in parts:
        if isinstance(part, str) and not part.strip():
            continue
        value = parse_length(part)
        if value not in out:
            out.append(value)
    if not out:
        raise ValueError(f"no lengths in {spec!r}; give e.g. '0k,1k,4k' or 'all'")
    return out


def input_budget(length: int, prompt_reserve: int = PROMPT_RESERVE) -> int | None:
    """Tokens the input may hold at ``length`` (None for 0: facts only)."""
    if length == 0:
        return None
    if prompt_reserve < 0:
        raise ValueError(f"prompt_reserve must not be negative, got {prompt_reserve}")
    if length <= prompt_reserve:
        raise ValueError(
            f"length {length} leaves no room for the input after the {prompt_reserve}-token prompt reserve; "
            f"use a length above {prompt_reserve} or a smaller prompt reserve"
        )
    return length - prompt_reserve


def length_tokens(label: str) -> int:
    """The numeric order of a length label ("4k" -> 4000), for sorting."""
    return parse_length(label)
