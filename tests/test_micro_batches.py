"""Micro-batches by length (``train.micro_batch_tokens``): a step's rows sorted by length and cut into
micro-batches under a token budget give the loss and gradient of the whole padded batch, for LM2, the
vanilla backbone and RMT (float64, odd sizes), and a training run with them logs the same losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lm2.data.batch import IGNORE, Batch, split_by_length
from lm2.train.config import load_config
from lm2.train.trainer import Trainer
from tests.test_short_conv import lm2_model, rmt_model
from tests.test_train_helpers import qa1_run_config

V = 64


def ragged_batch(lengths: list[int], width: int, seed: int = 0) -> Batch:
    """Right-padded rows of the given real lengths; each row's last three positions are targets (an
    answer), plus one target earlier on (a second question of a story)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (len(lengths), width), generator=g)
    targets = torch.full_like(ids, IGNORE)
    fact = torch.zeros_like(ids, dtype=torch.bool)
    for b, n in enumerate(lengths):
        ids[b, n:] = 0  # padding
        targets[b, n - 3 : n] = torch.randint(1, V, (3,), generator=g)
        targets[b, n // 2] = 7
        fact[b, : n // 3] = True
    return Batch(ids, targets, fact)


def test_every_target_lands_in_one_micro_batch_within_the_budget() -> None:
    lengths = [9, 40, 13, 13, 27, 5, 61, 8, 33, 12, 70]
    batch = ragged_batch(lengths, 75)
    micro = split_by_length(batch, 100)
    for m in micro:
        rows, width = m.input_ids.shape
        assert rows * width <= 100 or rows == 1  # a row longer than the budget goes alone
        assert width == int(m.row_lengths().max())  # cut to its longest row
        assert m.fact_mask is not None and m.fact_mask.shape == m.input_ids.shape
    # sorted by length, and together exactly the rows of the batch
    assert [int(n) for m in micro for n in m.row_lengths()] == sorted(lengths)
    assert sum(m.num_targets for m in micro) == batch.num_targets

    def rows_of(b: Batch) -> list[tuple[int, ...]]:
        n = b.row_lengths()
        return sorted(tuple(b.input_ids[i, : n[i]].tolist() + b.targets[i, : n[i]].tolist()) for i in range(len(n)))

    assert rows_of(batch) == sorted(r for m in micro for r in rows_of(m))
    # a budget larger than rows x width keeps the batch whole; budget 1 gives one row per micro-batch
    (whole,) = split_by_length(batch, 10_000)
    assert whole.input_ids.shape == (len(lengths), max(lengths))
    assert len(split_by_length(batch, 1)) == len(lengths)


def test_rows_without_a_target_are_left_out() -> None:
    batch = ragged_batch([10, 20, 15], 20)
    batch.targets[1] = IGNORE
    micro = split_by_length(batch, 1000)
    assert [int(n) for m in micro for n in m.row_lengths()] == [10, 15]


def _loss_and_grads(model: torch.nn.Module, batches: list[Batch]) -> tuple[float, dict[str, torch.Tensor]]:
    """The summed cross-entropy of every target, in float64 throughout, and its gradient."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for b in batches:
        logits = model(input_ids=b.input_ids).logits  # (B, T, V) float64
        loss = F.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), ignore_index=IGNORE, reduction="sum")
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "build",
    [
        lambda: lm2_model(3),
        lambda: lm2_model(5, attention_window=6),
        lambda: lm2_model(5, use_memory=False),
        lambda: rmt_model(3),
    ],
    ids=["lm2", "lm2-window", "vanilla", "rmt"],
)
def test_micro_batches_by_length_give_the_loss_and_gradient_of_the_padded_batch(build) -> None:
    model = build().train()
    batch = ragged_batch([23, 7, 31, 12, 17, 29, 9], 33, seed=1)  # odd lengths, none a segment multiple
    micro = split_by_length(batch, 70)
    assert len(micro) >= 3
    whole_loss, whole_grads = _loss_and_grads(model, [batch])
    split_loss, split_grads = _loss_and_grads(model, micro)
    assert split_loss == pytest.approx(whole_loss, rel=1e-12)
    assert whole_grads.keys() == split_grads.keys()
    for name, g in whole_grads.items():
        torch.testing.assert_close(split_grads[name], g, rtol=1e-9, atol=1e-11, msg=name)


def test_a_run_with_micro_batches_by_length_logs_the_losses_of_one_batch(tmp_path: Path, qa1_tokenizer: Path) -> None:
    logs = {}
    for name, sets in (("one", ""), ("tokens", "train.micro_batch_tokens=150")):
        cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=3), sets)
        trainer = Trainer(cfg, tmp_path / name)
        if name == "tokens":
            assert len(trainer.micro_batches(0)) > 1
        trainer.run()
        logs[name] = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    for a, b in zip(logs["one"], logs["tokens"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)  # the mean over the same target tokens
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_micro_batch_tokens_with_grad_accum_is_refused(tmp_path: Path) -> None:
    path = qa1_run_config(tmp_path, tmp_path / "tok")
    with pytest.raises(ValueError, match="set one of them"):
        load_config(path, "train.micro_batch_tokens=64 train.grad_accum=2")
    with pytest.raises(ValueError, match="train.micro_batch_tokens must be >= 1"):
        load_config(path, "train.micro_batch_tokens=0")
