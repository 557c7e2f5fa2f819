"""Parsing the small strings commands and configs take."""

from __future__ import annotations


def comma_list(spec: str | None) -> list[str]:
    """The items of a comma-separated list, stripped, empty ones dropped: "a, b,,c" -> ["a", "b", "c"]."""
    return [part.strip() for part in (spec or "").split(",") if part.strip()]
