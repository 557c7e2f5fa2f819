"""What a BABILong row must hold, checked the same way wherever rows are read (training and evaluation)."""

from __future__ import annotations

from typing import Any

REQUIRED = ("input", "question", "target")


def check_row(row: Any, where: str, extra: tuple[str, ...] = ()) -> None:
    """Refuse, naming ``where`` (file and line) and the field, a row that is not a mapping with the fields
    ``REQUIRED + extra``, whose input and question are not strings, or whose target is not a non-empty
    string: a number or a null would train on nonsense or crash the scorer later."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED + extra if k not in row]
    if missing:
        raise ValueError(f"{where}: row lacks {', '.join(missing)} (rows need {', '.join(REQUIRED + extra)})")
    for key in ("input", "question", "target"):
        if not isinstance(row[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {type(row[key]).__name__} {row[key]!r}")
    if not row["target"].strip():
        raise ValueError(f"{where}: target is empty; every row needs the answer it is scored against")
    for key in extra:
        if row[key] is None or isinstance(row[key], (dict, list)):
            raise ValueError(f"{where}: {key} must be a string or a number, got {row[key]!r}")
