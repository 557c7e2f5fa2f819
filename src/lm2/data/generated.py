"""Question-answer samples generated on the fly (``data.kind: generate``): an online BABILong builder.

bAbI facts from the generator, background filler laid out by the builder's own code
(:mod:`lm2.data.builder`), a question in the prompt layout; endless and seeded, so a resumed run draws the
same samples whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from lm2.data.babi.generator import get_generator
from lm2.data.babi.types import Question, Statement, parse_tasks
from lm2.data.background import load_background
from lm2.data.batch import Batch, collate_masked
from lm2.data.builder import TokenCounter, assemble_input, choose_gaps, prepare_background, take_background
from lm2.data.prompts import answer_text, get_prompt_format
from lm2.data.qa import fact_token_mask, prompt_fact_spans

STORY_TRIES = 1000  # stories drawn for one sample before ``generate.story_facts`` is declared unmet
VALID_STREAM = 2**31 - 1  # the stage number of generated validation samples: no curriculum stage has it
BATCH_FILLER = 2**31 - 2  # the row number of a step's shared filler draw (``filler_per: batch``): no row has it


def draw_filler(gen: Any, rng: np.random.Generator) -> int:
    """Filler tokens for one context: uniform over ``filler_range`` if set, else one of ``filler``."""
    if gen.filler_range is not None:
        return int(rng.integers(gen.filler_range[0], gen.filler_range[1] + 1))
    return int(gen.filler[int(rng.integers(len(gen.filler)))])


class GeneratedQA:
    """Endless, seeded question-answer samples: bAbI facts from the generator, background filler, a question.

    A sample is a pure function of its key (seed, stage, step, row): a resumed run draws the same samples,
    whatever the number of processes. Each context is laid out by the BABILong builder's own code:
    ``placement: first`` puts the facts before ``F`` filler tokens, ``scattered`` hides them in random gaps
    of the filler (keeping the supporting ones ``min_fact_distance`` tokens from its end); ``F`` is drawn
    from ``filler``. The prompt layout is ``data.prompt_format``, so a model trained here
    is evaluated by ``lm2 eval babilong`` on built rows without any change.

    ``questions: one`` gives one question per sample, loss on its answer. ``questions: all`` gives a whole
    story: for each of its questions, the statements since the previous question (laid out with their own
    filler) and the question in the prompt layout, then its answer; the parts follow each other on new
    lines and the loss is on every answer.
    """

    def __init__(self, tokenizer: Any, background: str = "synthetic", prompt_format: str = "plain",
                 answer_eos: bool = True, seed: int = 0, background_sentences: int = 20_000) -> None:  # fmt: skip
        if answer_eos and tokenizer.eos_token_id is None:
            raise ValueError("data.answer_eos is true but the tokenizer has no eos_token; set it or disable")
        self.tokenizer = tokenizer
        self.format = get_prompt_format(prompt_format)
        self.answer_eos = answer_eos
        self.counter = TokenCounter(tokenizer)
        self.background = prepare_background(
            load_background(background, seed=seed, min_sentences=background_sentences), self.counter
        )
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        )
        self._fact_tokens: dict[str, int] = {}

    # -- one context ---------------------------------------------------------------------------------

    def _count(self, facts: Sequence[str]) -> np.ndarray:
        missing = [f for f in facts if f not in self._fact_tokens]
        if missing:
            self._fact_tokens.update(zip(missing, self.counter.count(missing).tolist(), strict=True))
        return np.array([self._fact_tokens[f] for f in facts], dtype=np.int64)

    def context(self, facts: Sequence[str], supporting: Sequence[int], gen: Any, rng: np.random.Generator
                ) -> dict[str, Any]:  # fmt: skip
        """``facts`` and ``F`` filler tokens laid out as ``gen`` says: ``input`` and where the facts are."""
        filler = draw_filler(gen, rng)
        pieces, counts, _ = take_background(self.background, self.counter, rng, filler)
        gaps = choose_gaps(counts, len(facts), supporting, rng, gen.placement, gen.min_fact_distance)
        text, total, positions = assemble_input(facts, self._count(facts), pieces, counts, gaps, self.counter)
        return {"input": text, "input_tokens": total, "filler_tokens": filler, "fact_positions": positions}

    def rows(self, gen: Any, key: Sequence[int]) -> list[dict[str, Any]]:
        """The rows of the sample with ``key``: one question (``questions: one``) or a story's questions."""
        rng = np.random.default_rng(list(key))
        tasks = parse_tasks(gen.tasks)
        if gen.task_weights is None:
            pick = int(rng.integers(len(tasks)))
        else:
            weights = np.asarray(gen.task_weights, dtype=np.float64)
            pick = int(rng.choice(len(tasks), p=weights / weights.sum()))
        task, fn = get_generator(tasks[pick])
        lo, hi = gen.story_facts or (0, None)
        for _ in range(STORY_TRIES):
            story = fn(random.Random(int(rng.integers(2**63))))
            if gen.story_facts is None:
                break
            # the story as written, cut after its last question with at most hi statements before it
            told, cut = 0, 0
            for n, line in enumerate(story.lines, start=1):
                told += isinstance(line, Statement)
                if isinstance(line, Question) and told <= hi:
                    cut = n
            story = dataclasses.replace(story, lines=story.lines[:cut])
            if any(lo <= len(x.facts) for x in story.samples()):
                break
        else:
            raise ValueError(
                f"{task}: no story among {STORY_TRIES} has a question after {lo}..{hi} statements"
            )
        if gen.questions == "one":
            samples = [x for x in story.samples() if len(x.facts) >= lo]
            sample = samples[int(rng.integers(len(samples)))]
            keep = list(range(len(sample.facts)))
            if gen.facts is not None:  # the supporting facts + others of the story, in order
                want = int(rng.integers(gen.facts[0], gen.facts[1] + 1))
                others = [i for i in keep if i not in sample.supporting]
                extra = max(0, min(len(others), want - len(sample.supporting)))
                keep = sorted([*sample.supporting, *rng.choice(others, size=extra, replace=False).tolist()])
            facts = [sample.facts[i] for i in keep]
            supporting = [keep.index(i) for i in sample.supporting]
            row = self.context(facts, supporting, gen, rng)
            return [{**row, "question": sample.question, "target": sample.answer, "task": task, "facts": facts,
                     "supporting": supporting}]  # fmt: skip
        out, pending = [], []
        for line in story.lines:
            if isinstance(line, Statement):
                pending.append(line.text)
            elif isinstance(line, Question):
                # supporting facts of a later question may lie in earlier parts: all of this part's count
                row = self.context(pending, [], gen, rng)
                out.append(
                    {**row, "question": line.text, "target": line.answer, "task": task, "facts": pending}
                )
                pending = []
        return out

    # -- tokens --------------------------------------------------------------------------------------

    def encode(
        self, samples: Sequence[Sequence[dict[str, Any]]]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per sample (the rows of its parts): token ids of the parts one after another, the targets (the
        answers) and the fact tokens. All prompts and answers are tokenised in two calls."""
        parts = [(k, row) for rows in samples for k, row in enumerate(rows)]
        prompts = [("\n" if k else "") + self.format(row) for k, row in parts]
        enc = self.tokenizer(prompts, add_special_tokens=False, return_offsets_mapping=True)
        answers = self.tokenizer([answer_text(row) for _, row in parts], add_special_tokens=False)[
            "input_ids"
        ]
        eos = [self.tokenizer.eos_token_id] if self.answer_eos else []
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        ids: list[int] = []
        loss: list[bool] = []
        fact: list[bool] = []
        for j, (k, row) in enumerate(parts):
            if k == 0 and j:
                out.append((np.asarray(ids, dtype=np.int64), np.asarray(loss), np.asarray(fact)))
                ids, loss, fact = [], [], []
            if not answers[j]:
                raise ValueError(f"{row['task']}: the answer {row['target']!r} has no tokens")
            prompt_ids = enc["input_ids"][j]
            ids += list(prompt_ids) + list(answers[j]) + eos
            loss += [False] * len(prompt_ids) + [True] * (len(answers[j]) + len(eos))
            fact += fact_token_mask(enc["offset_mapping"][j], prompt_fact_spans(prompts[j], row)).tolist()
            fact += [False] * (len(answers[j]) + len(eos))
        out.append((np.asarray(ids, dtype=np.int64), np.asarray(loss), np.asarray(fact)))
        return out

    def batch(self, gen: Any, seed: int, stage: int, step: int, rows: Sequence[int]) -> Batch:
        """Rows ``rows`` of the global batch of optimizer step ``step`` of curriculum stage ``stage``.

        With ``gen.filler_per == "batch"`` every row of the step has the same filler, drawn from the step's key
        alone, so the processes and micro-batches that share a step agree on it.
        """
        if gen.filler_per == "batch":
            filler = draw_filler(gen, np.random.default_rng([seed, stage, step, BATCH_FILLER]))
            gen = dataclasses.replace(gen, filler=[filler], filler_range=None, filler_per="sample")
        examples = self.encode([self.rows(gen, (seed, stage, step, int(r))) for r in rows])
        return collate_masked(examples, self.pad_id)

    def validation_rows(self, gen: Any, seed: int, count: int) -> list[dict[str, Any]]:
        """``count`` single-question rows for each validation filler, from a stream no training step draws
        (the tasks drawn uniformly, whatever ``task_weights`` says)."""
        single = dataclasses.replace(gen, questions="one", task_weights=None)  # every task alike
        out = []
        for filler in gen.valid_filler or gen.filler_choices():
            fixed = dataclasses.replace(single, filler=[filler], filler_range=None)
            out += [self.rows(fixed, (seed, VALID_STREAM, filler, i))[0] for i in range(count)]
        return out
