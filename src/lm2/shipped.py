"""The configs that ship with lm2 (package data under ``lm2/configs``; ``configs/`` in a checkout links
there), found the same way from a checkout and from an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFIGS = Path(str(resources.files("lm2") / "configs"))
SCALES = CONFIGS / "reproduce"


def config_file(spec: str | Path) -> Path:
    """A training config: a YAML file as given, or the name of a shipped one (``memory-qa1-lm2``)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    shipped = CONFIGS / f"{spec}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    raise FileNotFoundError(f"config not found: {spec} (give a YAML file, or a shipped config: {known})")
