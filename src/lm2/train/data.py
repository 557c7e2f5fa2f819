"""Training data: BABILong / bAbI question-answer rows and language-model text shards.

Both sources are *stateless* samplers: the sequences of optimizer step ``t`` are a pure function of
(seed, curriculum stage, step within the stage), so the data position of a checkpoint is just its step
number, a resumed run draws exactly the batches an uninterrupted run would, and the global batch does
not depend on how many processes share it.

Each example becomes ``input_ids`` and ``targets`` of the same length, already shifted:
``targets[t]`` is the token that should follow ``input_ids[t]``, or -100 where no loss is taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm2.data.lengths import length_label
from lm2.data.prompts import answer_text, get_prompt_format
from lm2.data.rows import babi_stories
from lm2.data.tokenizer import load_tokenizer
from lm2.utils.io import atomic_write, atomic_write_text, expand_files
from lm2.utils.text import comma_list

IGNORE = -100
STORY_TRIES = 1000  # stories drawn for one sample before ``generate.story_facts`` is declared unmet
VALID_STREAM = 2**31 - 1  # the stage number of generated validation samples: no curriculum stage has it


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    targets: torch.Tensor  # (B, T) next token, or -100 (prompt, padding)
    fact_mask: torch.Tensor | None = None  # (B, T) bool: input tokens that belong to a fact, when known

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


# ----------------------------------------------------------------------------------------------------
# BABILong rows


def read_babi_rows(sources: Sequence[str], tasks: Iterable[str] | None) -> list[list[dict[str, Any]]]:
    """Rows from the training files of bAbI folders (facts only: BABILong's 0k), one list per story so that
    splits keep stories whole."""
    from lm2.data.babi.format import find_task_file

    stories: list[list[dict[str, Any]]] = []
    for src in sources:
        folder = Path(src)
        if not folder.is_dir():
            raise FileNotFoundError(f"bAbI folder not found: {folder}")
        if tasks:
            files = [find_task_file(folder, t, "train") for t in tasks]
        else:
            files = sorted(folder.glob("qa*_*_train.txt"))
            if not files:
                raise FileNotFoundError(f"no bAbI training files (qa<N>_<name>_train.txt) in {folder}")
        for path in files:
            stories.extend(babi_stories(path))
    return stories


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
                raise ValueError(
                    f"row {i} ({rows[i].get('task', '?')}, length {rows[i].get('length', '?')}) has {len(ids)} "
                    f"tokens, more than data.max_tokens = {max_tokens}"
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


# ----------------------------------------------------------------------------------------------------
# Text shards for language-model pretraining


def _read_text(path: Path) -> str:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def prepare_text(
    inputs: Sequence[str],
    tokenizer: Any,
    out: str | Path,
    shard_tokens: int = 50_000_000,
    chunk_chars: int = 1_000_000,
) -> dict[str, Any]:
    """Tokenise text files once into ``out/shard-NNNNN.bin`` (uint16/uint32) + ``out/meta.json``.

    Documents (files) are separated by the end-of-text token. ``meta.json`` is written last, so a folder
    without it is an interrupted preparation and is refused by the reader.
    """
    out = Path(out)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    files = expand_files(inputs, "*.txt")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token: documents could not be separated")
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    shards: list[dict[str, Any]] = []
    buffer: list[np.ndarray] = []
    buffered = 0

    def flush(final: bool) -> None:
        nonlocal buffer, buffered
        data = np.concatenate(buffer) if buffer else np.empty(0, dtype=dtype)
        while len(data) >= shard_tokens or (final and len(data)):
            piece, data = data[:shard_tokens], data[shard_tokens:]
            name = f"shard-{len(shards):05d}.bin"
            atomic_write(out / name, lambda p, piece=piece: piece.tofile(p))
            shards.append({"file": name, "tokens": int(len(piece))})
        buffer, buffered = ([data] if len(data) else []), len(data)

    for path in files:
        text = _read_text(path)
        if not text.strip():
            raise ValueError(f"{path}: the text file is empty")
        for start in range(0, len(text), chunk_chars):
            ids = tokenizer(text[start : start + chunk_chars], add_special_tokens=False)["input_ids"]
            buffer.append(np.asarray(ids, dtype=dtype))
            buffered += len(ids)
        buffer.append(np.asarray([eos], dtype=dtype))
        buffered += 1
        if buffered >= shard_tokens:
            flush(final=False)
    flush(final=True)
    meta = {
        "format": "lm2-text-shards-v1",
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab,
        "eos_token_id": eos,
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
        "sources": [str(f) for f in files],
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return meta


class TextShards:
    """Memory-mapped token shards; random windows for training, fixed windows for validation."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} not found: {folder} is not a prepared text folder (run `lm2 prepare` first, "
                "and let it finish)"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path}: corrupt ({err})") from err
        self.shards: list[np.memmap] = []
        for s in self.meta["shards"]:
            path = folder / s["file"]
            if not path.is_file():
                raise FileNotFoundError(f"text shard missing: {path}")
            mm = np.memmap(path, dtype=self.meta["dtype"], mode="r")
            if len(mm) != s["tokens"]:
                raise ValueError(
                    f"{path}: holds {len(mm)} tokens, meta.json says {s['tokens']} (corrupt shard)"
                )
            self.shards.append(mm)
        self.vocab_size = int(self.meta["vocab_size"])

    def _window(self, rng: np.random.Generator, length: int) -> np.ndarray:
        sizes = np.array([max(len(s) - length, 0) for s in self.shards], dtype=np.float64)
        if sizes.sum() == 0:
            raise ValueError(
                f"no shard holds {length} tokens; the longest has {max(len(s) for s in self.shards)}: "
                "use a shorter curriculum seq_len"
            )
        shard = rng.choice(len(self.shards), p=sizes / sizes.sum())
        start = int(rng.integers(0, int(sizes[shard])))
        return np.asarray(self.shards[shard][start : start + length], dtype=np.int64)

    def training_batch(self, seed: int, stage: int, step: int, rows: Sequence[int], seq_len: int) -> Batch:
        """Rows ``rows`` of the global batch of ``step``: each a random window of ``seq_len + 1`` tokens."""
        windows = [self._window(np.random.default_rng([seed, stage, step, r]), seq_len + 1) for r in rows]
        data = torch.from_numpy(np.stack(windows))
        return Batch(data[:, :-1].contiguous(), data[:, 1:].contiguous())

    def validation_batches(self, seq_len: int, count: int, batch_size: int) -> list[Batch]:
        """The first ``count`` non-overlapping windows of the shards, in order."""
        windows: list[np.ndarray] = []
        for shard in self.shards:
            for start in range(0, len(shard) - seq_len, seq_len + 1):
                if len(windows) == count:
                    break
                windows.append(np.asarray(shard[start : start + seq_len + 1], dtype=np.int64))
        if not windows:
            raise ValueError(f"the validation text holds no window of {seq_len + 1} tokens")
        out = []
        for i in range(0, len(windows), batch_size):
            data = torch.from_numpy(np.stack(windows[i : i + batch_size]))
            out.append(Batch(data[:, :-1].contiguous(), data[:, 1:].contiguous()))
        return out


def split_stories(stories: list[list[dict[str, Any]]], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train rows, valid rows): the last ``fraction`` of the stories are held out."""
    n_valid = math.floor(len(stories) * fraction)
    train = [r for s in stories[: len(stories) - n_valid] for r in s]
    valid = [r for s in stories[len(stories) - n_valid :] for r in s]
    return train, valid


# ----------------------------------------------------------------------------------------------------
# Question-answer samples generated on the fly (data.kind: generate)


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


class GeneratedQA:
    """Endless, seeded question-answer samples: bAbI facts from the generator, background filler, a question.

    A sample is a pure function of its key (seed, stage, step, row): a resumed run draws the same samples,
    whatever the number of processes. Each context is laid out by ``lm2.data.builder`` (the builder's
    own code): ``placement: first`` puts the facts before ``F`` filler tokens, ``scattered`` hides them in
    random gaps of the filler (keeping the supporting ones ``min_fact_distance`` tokens from its end);
    ``F`` is drawn from ``filler``. The prompt layout is ``data.prompt_format``, so a model trained here
    is evaluated by ``lm2 eval babilong`` on built rows without any change.

    ``questions: one`` gives one question per sample, loss on its answer. ``questions: all`` gives a whole
    story: for each of its questions, the statements since the previous question (laid out with their own
    filler) and the question in the prompt layout, then its answer; the parts follow each other on new
    lines and the loss is on every answer.
    """

    def __init__(self, tokenizer: Any, background: str = "synthetic", prompt_format: str = "plain",
                 answer_eos: bool = True, seed: int = 0, background_sentences: int = 20_000) -> None:  # fmt: skip
        from lm2.data.background import load_background
        from lm2.data.builder import TokenCounter, prepare_background

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
        from lm2.data.builder import assemble_input, choose_gaps, take_background

        if gen.filler_range is not None:
            filler = int(rng.integers(gen.filler_range[0], gen.filler_range[1] + 1))
        else:
            filler = int(gen.filler[int(rng.integers(len(gen.filler)))])
        pieces, counts, _ = take_background(self.background, self.counter, rng, filler)
        gaps = choose_gaps(counts, len(facts), supporting, rng, gen.placement, gen.min_fact_distance)
        text, total, positions = assemble_input(facts, self._count(facts), pieces, counts, gaps, self.counter)
        return {"input": text, "input_tokens": total, "filler_tokens": filler, "fact_positions": positions}

    def rows(self, gen: Any, key: Sequence[int]) -> list[dict[str, Any]]:
        """The rows of the sample with ``key``: one question (``questions: one``) or a story's questions."""
        import random

        from lm2.data.babi.generator import get_generator
        from lm2.data.babi.types import Question, Statement, parse_tasks

        rng = np.random.default_rng(list(key))
        tasks = parse_tasks(gen.tasks)
        task, fn = get_generator(tasks[int(rng.integers(len(tasks)))])
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
        """Rows ``rows`` of the global batch of optimizer step ``step`` of curriculum stage ``stage``."""
        examples = self.encode([self.rows(gen, (seed, stage, step, int(r))) for r in rows])
        return collate_masked(examples, self.pad_id)

    def validation_rows(self, gen: Any, seed: int, count: int) -> list[dict[str, Any]]:
        """``count`` single-question rows for each validation filler, from a stream no training step draws."""
        single = dataclasses.replace(gen, questions="one")
        out = []
        for filler in gen.valid_filler or gen.filler_choices():
            fixed = dataclasses.replace(single, filler=[filler], filler_range=None)
            out += [self.rows(fixed, (seed, VALID_STREAM, filler, i))[0] for i in range(count)]
        return out


def prepare(inputs: str, tokenizer: Path, out: Path, shard_tokens: int = 50_000_000) -> None:
    """Tokenise text files once into memory-mapped shards for language-model pretraining (data.kind: text).

    Args:
        inputs: comma-separated text files, folders (searched for *.txt) or globs.
        tokenizer: a tokenizer folder.
        out: the output folder (shard-NNNNN.bin + meta.json).
        shard_tokens: tokens per shard file.
    """
    meta = prepare_text(
        comma_list(inputs), load_tokenizer(tokenizer), out, shard_tokens
    )
    print(
        f"{meta['tokens']} tokens from {len(meta['sources'])} files in {len(meta['shards'])} shards -> {out}"
    )
