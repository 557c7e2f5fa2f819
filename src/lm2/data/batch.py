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
