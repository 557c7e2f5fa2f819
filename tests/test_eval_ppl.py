"""``lm2 eval ppl``: segment-by-segment perplexity equals the full-sequence computation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lm2.cli import main
from lm2.eval.model_folder import load_model_and_tokenizer
from lm2.eval.ppl import perplexity, sequence_nll
from lm2.models.outputs import CACHE_FIELD
from tests.conftest import shared_path
from tests.test_eval_fixtures import make_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("ppl") / "tiny")
    model, tokenizer = load_model_and_tokenizer(path, "cpu")
    return path, model, tokenizer


@pytest.fixture(scope="module")
def tiny_lm2(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("ppl") / "lm2", family="lm2")
    model, tokenizer = load_model_and_tokenizer(path, "cpu")
    return path, model, tokenizer


def _full_nll(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
    return float(F.cross_entropy(logits[:-1].double(), ids[1:], reduction="sum"))


@pytest.mark.parametrize(
    "family, segment_length",
    [("llama", 1), ("llama", 7), ("llama", 1000), ("lm2", 3), ("lm2", 8), ("lm2", 20)],
)
def test_cached_segments_equal_one_full_forward(request, family, segment_length) -> None:
    # For LM2 (memory writes every 8 tokens) the memory is what the cache carries across segments.
    _, model, _ = request.getfixturevalue("tiny" if family == "llama" else "tiny_lm2")
    assert type(model).__name__ == ("LlamaForCausalLM" if family == "llama" else "LM2ForCausalLM")
    ids = torch.randint(0, model.config.vocab_size, (90,), generator=torch.Generator().manual_seed(0))
    nll, n, mode = sequence_nll(model, ids, segment_length)
    assert mode == "cache" and n == 89
    assert nll == pytest.approx(_full_nll(model, ids), rel=1e-4)


class _NoCache:
    """Wraps a model so it returns no cache and only sees what it is given: the sliding-window path."""

    def __init__(self, model) -> None:
        self.model, self.device, self.calls = model, model.device, []

    def __call__(self, input_ids, use_cache=False, **cache):
        self.calls.append(input_ids.shape[1])
        return SimpleNamespace(logits=self.model(input_ids).logits, **{CACHE_FIELD: None})


def test_sliding_window_without_a_cache(tiny) -> None:
    _, model, _ = tiny
    ids = torch.randint(0, model.config.vocab_size, (100,), generator=torch.Generator().manual_seed(1))
    # A window longer than the text is the full computation.
    nll, n, mode = sequence_nll(_NoCache(model), ids, segment_length=30, window=200)
    assert mode == "sliding-window" and n == 99
    assert nll == pytest.approx(_full_nll(model, ids), rel=1e-4)
    # A short window feeds at most `window` tokens per call, and scores every token once.
    wrapped = _NoCache(model)
    nll, n, _ = sequence_nll(wrapped, ids, segment_length=20, window=50)
    assert n == 99 and max(wrapped.calls) <= 50 and math.isfinite(nll)
    expected = 0.0
    for start in range(0, 100, 20):
        ctx = max(0, start + 20 - 50)
        with torch.no_grad():
            logits = model(ids[ctx : start + 20][None]).logits[0]
        first = max(start, 1)
        expected += float(
            F.cross_entropy(
                logits[first - 1 - ctx : start + 19 - ctx].double(), ids[first : start + 20], reduction="sum"
            )
        )
    assert nll == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="must be longer than the segment length"):
        sequence_nll(_NoCache(model), ids, segment_length=20, window=20)


def test_perplexity_on_a_real_book_and_max_tokens(tiny) -> None:
    _, model, tokenizer = tiny
    book = shared_path("background", "tinyshakespeare.txt")
    r = perplexity(model, tokenizer, [book], segment_length=128, max_tokens=300)
    assert r["tokens"] == 299  # BOS + 299 tokens: every one of the 300 but the first is predicted
    ids = torch.tensor(
        [tokenizer.bos_token_id] + tokenizer(book.read_text(encoding="utf-8"))["input_ids"][:299]
    )
    assert r["nll"] == pytest.approx(_full_nll(model, ids) / 299, rel=1e-4)
    assert r["ppl"] == pytest.approx(math.exp(r["nll"]))
    assert r["unknown_share"] == 0.0  # a byte-level BPE has no unknown token


def test_unknown_share_counts_the_scored_unknown_tokens(tiny, tmp_path: Path) -> None:
    _, model, tokenizer = tiny
    text = "Mary moved to the bathroom. John went to the hallway. Where is Mary? " * 4
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tok = copy.deepcopy(tokenizer)
    tok.unk_token = tok.convert_ids_to_tokens(ids[3])  # pretend one frequent token is the unknown token
    path = tmp_path / "a.txt"
    path.write_text(text)
    r = perplexity(model, tok, [path], segment_length=16)
    scored = ids  # BOS is prepended and never scored, so every text token is a target
    assert r["unknown_share"] == pytest.approx(scored.count(ids[3]) / len(scored))
    assert 0 < r["unknown_share"] < 1 and r["files"][0]["unknown_share"] == r["unknown_share"]


def test_cli_writes_a_folder_shows_progress_and_rejects_bad_input(tiny, tmp_path: Path, capsys) -> None:
    path, _, _ = tiny
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Mary moved to the bathroom. John went to the hallway. " * 5)
    b.write_text("Where is Mary? bathroom. " * 5)
    out = tmp_path / "ppl"
    args = ["eval", "ppl", "--model", str(path), "--device", "cpu", "--segment-length", "16"]
    assert main([*args, "--data", f"{a},{b}", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "ppl a.txt: 100%" in err and "ppl b.txt: 100%" in err  # a progress bar per file, on stderr
    r = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert f"| all | {r['tokens']} | 0.0 | {r['nll']:.4f} | {r['ppl']:.3f} |" in table
    assert [Path(f["file"]).name for f in r["files"]] == ["a.txt", "b.txt"]
    assert r["tokens"] == sum(f["tokens"] for f in r["files"])
    assert r["nll"] == pytest.approx(sum(f["nll"] * f["tokens"] for f in r["files"]) / r["tokens"])
    assert main([*args, "--data", str(tmp_path / "missing.txt")]) == 2
    assert main([*args, "--data", str(a), "--max-tokens", "1"]) == 2
    assert main([*args, "--data", str(a), "--segment-length", "0"]) == 2
