"""Question-answer rows tokenised for training and validation: the prompt, then the answer, loss on the
answer tokens only; and the seeded sampler that draws a step's rows from them.

Sampling is *stateless*: the rows of optimizer step ``t`` are a pure function of (seed, curriculum stage,
step within the stage), so a resumed run draws exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lm2.data.batch import IGNORE, Batch
from lm2.data.lengths import length_label
from lm2.data.prompts import answer_text, get_prompt_format


def fact_token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(T,) bool: the tokens (character ``offsets`` in the text) that overlap a fact's character span."""
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    mask = np.zeros(len(bounds), dtype=bool)
    for start, end in spans:
        mask |= (bounds[:, 0] < end) & (bounds[:, 1] > start)
    return mask


def prompt_fact_spans(prompt: str, row: dict[str, Any]) -> list[tuple[int, int]]:
    """Character spans of ``row``'s facts in ``prompt`` (from the row's ``fact_positions`` in its input)."""
    start = prompt.index(row["input"]) if row["input"] else 0
    return [(start + p["char_start"], start + p["char_end"]) for p in row["fact_positions"]]


class QADataset:
    """Tokenised question-answer rows; loss on the answer tokens only.

    Rows that record where their facts are (``fact_positions``, as ``lm2 data babilong`` writes) also
    give each batch a ``fact_mask`` (for the trainer's memory diagnostics).
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        tokenizer: Any,
        prompt_format: str = "plain",
        answer_eos: bool = True,
        max_tokens: int | None = None,
    ) -> None:
        fmt = get_prompt_format(prompt_format)
        if answer_eos and tokenizer.eos_token_id is None:
            raise ValueError("data.answer_eos is true but the tokenizer has no eos_token; set it or disable")
        texts = [fmt(r) for r in rows]
        knows_facts = bool(rows) and all("fact_positions" in r for r in rows)
        enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=knows_facts)
        prompts = enc["input_ids"]
        answers = tokenizer([answer_text(r) for r in rows], add_special_tokens=False)["input_ids"]
        self.rows = list(rows)
        self.answer_eos = answer_eos
        self.examples: list[tuple[np.ndarray, int]] = []  # (token ids, length of the prompt)
        self.fact_masks: list[np.ndarray] | None = None  # (prompt tokens,) per row, when the rows say
        if knows_facts:
            self.fact_masks = [
                fact_token_mask(enc["offset_mapping"][i], prompt_fact_spans(texts[i], r))
                for i, r in enumerate(rows)
            ]
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            ids = list(p) + list(a) + ([tokenizer.eos_token_id] if answer_eos else [])
            if not a:
                raise ValueError(
                    f"row {i} ({rows[i].get('task', '?')}): the answer {rows[i]['target']!r} has no tokens"
                )
            if max_tokens is not None and len(ids) > max_tokens:
                row = rows[i]
                raise ValueError(
                    f"row {row.get('id', i)} ({row.get('task', '?')}, length {row.get('length', '?')}) has "
                    f"{len(ids)} tokens, more than data.max_tokens = {max_tokens}: one forward over a row holds "
                    "its activations for every token, so memory grows with it; raise data.max_tokens to train "
                    "on it (with train.tbptt_segments set, memory is bounded by a piece), or leave the row out"
                )
            self.examples.append((np.asarray(ids, dtype=np.int64), len(p)))
        self.lengths = [length_label(r.get("length", "0k")) for r in self.rows]
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        )

    def __len__(self) -> int:
        return len(self.examples)

    def pool(self, lengths: Sequence[str] | None) -> np.ndarray:
        """Indices of the rows whose length label is in ``lengths`` (all rows when None)."""
        if lengths is None:
            return np.arange(len(self.examples))
        idx = np.array([i for i, length in enumerate(self.lengths) if length in lengths], dtype=np.int64)
        if len(idx) == 0:
            have = ", ".join(sorted(set(self.lengths)))
            raise ValueError(f"no training rows of length {', '.join(lengths)}; the data has lengths {have}")
        return idx

    def collate(self, indices: Sequence[int]) -> Batch:
        """Right-pad the examples; targets are the next tokens of the answer, -100 elsewhere."""
        seqs = [self.examples[int(i)] for i in indices]
        width = max(len(ids) for ids, _ in seqs) - 1
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        fact_mask = None if self.fact_masks is None else torch.zeros((len(seqs), width), dtype=torch.bool)
        for b, (ids, n_prompt) in enumerate(seqs):
            n = len(ids) - 1
            input_ids[b, :n] = torch.from_numpy(ids[:-1])
            # position t predicts ids[t + 1]; only answer tokens (t + 1 >= n_prompt) count
            targets[b, n_prompt - 1 : n] = torch.from_numpy(ids[n_prompt:])
            if fact_mask is not None:
                fact_mask[b, :n_prompt] = torch.from_numpy(self.fact_masks[int(indices[b])])
        return Batch(input_ids, targets, fact_mask)

    def answer_spans(self, batch: Batch) -> torch.Tensor:
        """(B, T) bool: the target positions that are answer text (the end-of-text token excluded)."""
        mask = batch.targets != IGNORE
        eos_positions = mask & ~torch.roll(mask, -1, dims=1)  # the last target of each row
        return mask & ~eos_positions if self.answer_eos else mask


def sample_indices(pool: np.ndarray, seed: int, stage: int, step: int, batch_size: int) -> np.ndarray:
    """The ``batch_size`` rows of step ``step`` of a stage: consecutive draws from per-epoch permutations."""
    n = len(pool)
    start = step * batch_size
    out = np.empty(batch_size, dtype=np.int64)
    for k in range(batch_size):
        epoch, pos = divmod(start + k, n)
        if k == 0 or pos == 0:
            perm = np.random.default_rng([seed, stage, epoch]).permutation(n)
        out[k] = pool[perm[pos]]
    return out


def split_stories(stories: list[list[dict[str, Any]]], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train rows, valid rows): the last ``fraction`` of the stories are held out."""
    n_valid = math.floor(len(stories) * fraction)
    train = [r for s in stories[: len(stories) - n_valid] for r in s]
    valid = [r for s in stories[len(stories) - n_valid :] for r in s]
    return train, valid
