"""Shared test fixtures. The real data lives in ../shared/data beside the checkout (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The tests run tiny models: threads buy nothing there, and on a busy 2-core machine a second thread
# made them 10-20x slower (spin-waiting). Benchmarks, not tests, measure multi-threaded speed.
torch.set_num_threads(1)


# The one tiny backbone the tests build their models on (LM2, RMT, transformers' Llama); each test adds
# the vocabulary and whatever its property needs. Odd head counts are the tests' own choice where they matter.
TINY_BACKBONE: dict[str, int] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (the shared data folder beside the checkout)")
    return path


@pytest.fixture(scope="module")
def qa1_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level tokenizer of qa1 text, trained once per test module."""
    from tests.test_train_helpers import make_qa1_tokenizer

    return make_qa1_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")
