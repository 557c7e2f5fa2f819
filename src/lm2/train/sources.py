"""Where a training run's batches come from: one source per kind of data, chosen once from the config.

Every source answers the trainer's two questions and nothing else:

- ``batch(stage, step, rows)``: rows ``rows`` of the global batch of optimizer step ``step`` (counted
  within curriculum stage ``stage``), a :class:`~lm2.data.batch.Batch`. A pure function of the run's seed,
  the stage, the step and the rows, so a resumed run draws exactly what an uninterrupted one would and the
  global batch does not depend on how many processes share it;
- ``validate(score, stage, batch_size)``: the validation metrics, given ``score(batch)``, which returns
  the summed cross-entropy of a batch's targets and the model's top prediction at each target (IGNORE
  elsewhere). Empty when the run has no validation data.

The kinds: ``babilong`` and ``babi`` (rows read from files, :class:`RowsSource`), ``generate`` (rows made
on the fly, :class:`GeneratedSource`) and ``text`` (windows of prepared running text,
:class:`TextSource`). A new kind is a class here and one entry in :data:`SOURCES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from lm2.data.babi.types import parse_tasks
from lm2.data.batch import Batch
from lm2.data.generated import GeneratedQA
from lm2.data.qa import QADataset, sample_indices, split_stories
from lm2.data.rows import read_babi_rows, read_rows
from lm2.data.shards import TextShards
from lm2.train.config import DEFAULT_MAX_TOKENS, Config

Score = Callable[[Batch], tuple[float, torch.Tensor]]


class DataSource(Protocol):
    def batch(self, stage: int, step: int, rows: Sequence[int]) -> Batch: ...

    def validate(self, score: Score, stage: int, batch_size: int) -> dict[str, float]: ...


def answer_accuracy(
    score: Score, dataset: QADataset, batch_size: int, groups: Sequence[Sequence[str]] = ()
) -> dict[str, float]:
    """Validation loss and exact-answer accuracy (teacher-forced: every answer token is the model's top
    prediction) over ``dataset``; for each labelling in ``groups`` (one label per row) also the accuracy
    of each group, as ``val_acc_<group>``, in first-seen order. Rows are scored in batches of similar
    length (a row's verdict does not depend on its batch), so short rows are not padded to long ones."""
    total = count = 0.0
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.examples[i][0]))
    correct = [False] * len(dataset)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = dataset.collate(rows)
        ce, preds = score(batch)
        total += ce
        count += batch.num_targets
        span = dataset.answer_spans(batch).to(preds.device)
        for i, ok in zip(rows, ((preds == batch.targets.to(preds.device)) | ~span).all(dim=1).tolist(), strict=True):
            correct[i] = ok
    results = {"val_loss": total / count, "val_acc": sum(correct) / len(correct)}
    for labels in groups:
        for group in dict.fromkeys(labels):
            hits = [ok for ok, g in zip(correct, labels, strict=True) if g == group]
            results[f"val_acc_{group}"] = sum(hits) / len(hits)
    return results


class RowsSource:
    """Question-answer rows read from files (``data.kind`` babilong or babi); each stage draws from the rows
    of its ``lengths``."""

    def __init__(self, cfg: Config, tokenizer: Any) -> None:
        d = cfg.data
        tasks = parse_tasks(d.tasks) if d.tasks else None
        if d.kind == "babi":
            train_rows, valid_rows = split_stories(read_babi_rows(d.train, tasks), d.valid_split)
            if d.valid:
                valid_rows = [r for s in read_babi_rows(d.valid, tasks) for r in s]
        else:
            train_rows = read_rows(d.train)
            valid_rows = read_rows(d.valid) if d.valid else []
            if tasks:
                train_rows = [r for r in train_rows if r.get("task") in tasks]
                valid_rows = [r for r in valid_rows if r.get("task") in tasks]
                if not train_rows:
                    raise ValueError(f"no training rows of tasks {d.tasks} in {', '.join(d.train)}")
        max_tokens = DEFAULT_MAX_TOKENS if d.max_tokens is None else d.max_tokens
        kwargs = dict(prompt_format=d.prompt_format, answer_eos=d.answer_eos, max_tokens=max_tokens)
        self.seed = cfg.train.seed
        self.batch_sizes = [cfg.batch_size_at(i) for i in range(len(cfg.curriculum))]
        self.train = QADataset(train_rows, tokenizer, **kwargs)
        self.pools = [self.train.pool(stage.lengths) for stage in cfg.curriculum]  # checked up front
        if len(valid_rows) > d.valid_samples:  # a fixed subset spread over every task and length
            keep = np.sort(np.random.default_rng(0).permutation(len(valid_rows))[: d.valid_samples])
            valid_rows = [valid_rows[i] for i in keep]
        self.valid = QADataset(valid_rows, tokenizer, **kwargs) if valid_rows else None
        # accuracy per length too, when the validation rows have several
        several = self.valid is not None and len(set(self.valid.lengths)) > 1
        self.groups = [list(self.valid.lengths)] if several else []

    def batch(self, stage: int, step: int, rows: Sequence[int]) -> Batch:
        idx = sample_indices(self.pools[stage], self.seed, stage, step, self.batch_sizes[stage])
        return self.train.collate(idx[np.asarray(rows)])

    def validate(self, score: Score, stage: int, batch_size: int) -> dict[str, float]:
        return {} if self.valid is None else answer_accuracy(score, self.valid, batch_size, self.groups)


class GeneratedSource:
    """Question-answer samples generated on the fly (``data.kind: generate``), each stage with its own
    ``data.generate`` overrides; validation at each validation filler, from a stream no step draws."""

    def __init__(self, cfg: Config, tokenizer: Any) -> None:
        d = cfg.data
        self.seed = cfg.train.seed
        g = d.generate
        self.data = GeneratedQA(tokenizer, g.background, d.prompt_format, d.answer_eos, self.seed, g.background_sentences)
        self.stages = [cfg.generate_config(i) for i in range(len(cfg.curriculum))]
        rows = self.data.validation_rows(cfg.generate_config(), self.seed, d.valid_samples)
        self.valid = QADataset(rows, tokenizer, prompt_format=d.prompt_format, answer_eos=d.answer_eos)
        # accuracy per validation filler, and per task when there are several
        self.groups = [[f"filler{r['filler_tokens']}" for r in rows]]
        if len(set(tasks := [r["task"] for r in rows])) > 1:
            self.groups.append(tasks)

    def batch(self, stage: int, step: int, rows: Sequence[int]) -> Batch:
        return self.data.batch(self.stages[stage], self.seed, stage, step, rows)

    def validate(self, score: Score, stage: int, batch_size: int) -> dict[str, float]:
        return answer_accuracy(score, self.valid, batch_size, self.groups)


class TextSource:
    """Windows of prepared running text (``data.kind: text``), ``curriculum[stage].seq_len`` tokens long;
    validation on the first windows of ``data.valid``."""

    def __init__(self, cfg: Config, tokenizer: Any) -> None:
        d = cfg.data
        self.seed = cfg.train.seed
        self.train = TextShards(d.train[0])
        if self.train.vocab_size > len(tokenizer):
            raise ValueError(
                f"{d.train[0]} was tokenised with {self.train.vocab_size} tokens; data.tokenizer has {len(tokenizer)}"
            )
        self.valid = TextShards(d.valid[0]) if d.valid else None
        self.seq_lens = [stage.seq_len for stage in cfg.curriculum]
        self.valid_samples = d.valid_samples

    def batch(self, stage: int, step: int, rows: Sequence[int]) -> Batch:
        return self.train.training_batch(self.seed, stage, step, rows, self.seq_lens[stage])

    def validate(self, score: Score, stage: int, batch_size: int) -> dict[str, float]:
        if self.valid is None:
            return {}
        total = count = 0.0
        for batch in self.valid.validation_batches(self.seq_lens[stage], self.valid_samples, batch_size):
            total += score(batch)[0]
            count += batch.num_targets
        return {"val_loss": total / count, "val_ppl": math.exp(min(total / count, 50.0))}


SOURCES: dict[str, Callable[[Config, Any], DataSource]] = {
    "babilong": RowsSource,
    "babi": RowsSource,
    "generate": GeneratedSource,
    "text": TextSource,
}


def make_source(cfg: Config, tokenizer: Any) -> DataSource:
    """The data source of ``cfg.data.kind``."""
    return SOURCES[cfg.data.kind](cfg, tokenizer)

