"""What a training or validation batch is: token ids and next-token targets of the same length.

``targets[t]`` is the token that should follow ``input_ids[t]``, or ``IGNORE`` (-100) where no loss is
taken (the prompt, padding); rows are right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    targets: torch.Tensor  # (B, T) next token, or -100 (prompt, padding)
    fact_mask: torch.Tensor | None = None  # (B, T) bool: input tokens that belong to a fact, when known

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def row_lengths(self) -> torch.Tensor:
        """(B,) input positions up to each row's last target (0 for a row without one): the tokens that can
        change the loss, right padding and anything after the last answer excluded."""
        mask = self.targets != IGNORE
        last = mask.shape[1] - torch.argmax(mask.flip(1).int(), dim=1)
        return torch.where(mask.any(1), last, torch.zeros_like(last))

    def select(self, rows: torch.Tensor, width: int) -> Batch:
        """Rows ``rows`` of the batch, cut to their first ``width`` positions."""
        fact = None if self.fact_mask is None else self.fact_mask[rows, :width]
        return Batch(self.input_ids[rows, :width], self.targets[rows, :width], fact)


def split_by_length(batch: Batch, max_tokens: int) -> list[Batch]:
    """``batch`` as micro-batches of rows of similar length, for gradient accumulation without padding to
    the longest row: rows sorted by :meth:`Batch.row_lengths` (stably), then cut greedily so that a
    micro-batch's rows x its longest row is at most ``max_tokens`` (a longer row goes alone), each cut
    to its longest row. Rows without a target are left out. Every target of ``batch`` is in exactly one
    micro-batch and sees the same input before it, so the summed loss and its gradient are those of
    ``batch`` (to float rounding): right padding never reaches an earlier position of a causal model."""
    lengths = batch.row_lengths()
    order = torch.argsort(lengths, stable=True).tolist()
    groups: list[list[int]] = []
    for i in order:
        n = int(lengths[i])
        if n == 0:
            continue
        if groups and (len(groups[-1]) + 1) * n <= max_tokens:
            groups[-1].append(i)  # sorted: row i is the longest of the group so far
        else:
            groups.append([i])
    return [batch.select(torch.tensor(g), int(lengths[g[-1]])) for g in groups]


def collate_masked(examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], pad_id: int) -> Batch:
    """Right-pad ``(ids, loss, fact)`` examples: ``loss[t]`` marks tokens that are targets (predicted from
    the token before), ``fact[t]`` tokens of a fact. ``fact_mask`` of the batch is aligned to its input."""
    width = max(len(ids) for ids, _, _ in examples) - 1
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    fact_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for b, (ids, loss, fact) in enumerate(examples):
        n = len(ids) - 1
        input_ids[b, :n] = torch.from_numpy(ids[:-1])
        targets[b, :n] = torch.from_numpy(np.where(loss[1:], ids[1:], IGNORE))
        fact_mask[b, :n] = torch.from_numpy(fact[:-1])
    return Batch(input_ids, targets, fact_mask)
