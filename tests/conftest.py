"""Shared test fixtures. The real data lives in ../shared/data beside the checkout (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Deterministic, reproducible tests on a small CPU: two threads is what CI has.
torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (the shared data folder beside the checkout)")
    return path
