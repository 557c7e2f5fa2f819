"""The BABILong builder: hide one bAbI sample's facts, in order, between sentences of background text.

How a row is made (following the authors' ``babilong_utils.NoiseInjectionDataset`` and
``data/create_tasks.py``, but deterministic by seed):

1. The *length* is the input's size in tokens of the chosen tokenizer: ``"1k"`` means 1,000 tokens of
   facts and background (``"2k"`` 2,000 ... ``"128k"`` 128,000; ``"1m"`` a million; a bare integer is a
   token count), as in the authors' script. Their script counts the whole prompt and leaves 300 tokens of
   it for instruction and question; ``prompt_reserve=300`` does the same (``budget = length -
   prompt_reserve``; the default reserve is 0). ``0k`` means facts only.
2. The budget minus the facts' tokens is filled with consecutive background sentences from a seeded
   random start, wrapping around the end of the background (as often as needed: a background shorter
   than a row repeats in it, and the build warns and records it in the manifest's
   ``background_repeats``). The last sentence is cut at a token boundary so the input lands on the
   budget, as the authors do.
3. Each fact goes into a seeded random gap between background sentences (gaps drawn with replacement,
   then sorted, so facts keep their order and several may share a gap); optionally only into gaps at
   least ``min_fact_distance`` tokens before the question, or all facts first (``placement="first"``).
4. The question and the answer stay separate: ``input`` holds only facts and background.

Token counts come from tokenising every background sentence once (with the space that precedes it in
the input), a batch of sentences at a time, and every fact once; the growing input is never re-tokenised.
So a build holds the background's text and one count per sentence, plus one row at a time. For byte-level BPE tokenizers
(GPT-2 style: ours, GPT-2, Llama-3) pre-tokenisation splits at spaces, so these counts add up to the
input's true token count, give or take a token or two where the cut sentence re-merges.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lm2.data.babi.types import Sample, check_task
from lm2.data.background import Background
from lm2.data.lengths import PROMPT_RESERVE, input_budget, length_name, parse_length
from lm2.utils.io import atomic_write, check_out_folder

FACT_PLACEMENTS = ("scattered", "first")
MIN_SENTENCE_TOKENS = 10  # the authors' SentenceSampler skips shorter background sentences
# Sentences tokenised at a time when counting: a tokenizer's encodings cost ~150 bytes per token, so a
# 20 MB book counted in one batch peaked at 785 MiB above the build's start (5M tokens); a batch of
# 1,024 sentences of ~30 tokens is a few MiB.
COUNT_BATCH = 1024


class TokenCounter:
    """Counts tokens of many sentences at once, as each costs inside the space-joined input."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        # Byte-level BPE (GPT-2, Llama-3, ours) folds the joining space into the next word, so a sentence
        # inside the input costs what " sentence" costs. SentencePiece-style tokenizers (Llama-2, T5) mark
        # every word's start anyway, and " sentence" would cost one token too many. Find out which.
        probe = "The cat sat on the mat."
        alone, spaced, pair = self._lengths([probe, " " + probe, probe + " " + probe])
        self.prefix = " " if pair == alone + spaced else ""

    def _lengths(self, texts: list[str]) -> list[int]:
        if self.backend is not None:
            return [len(e) for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.encode(texts)]

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.backend is not None:
            return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def count(self, sentences: Sequence[str], in_context: bool = True) -> np.ndarray:
        """(N,) tokens of each sentence: after a joining space (``in_context``) or at the input's start."""
        prefix = self.prefix if in_context else ""
        out = np.empty(len(sentences), dtype=np.int64)
        for i in range(0, len(sentences), COUNT_BATCH):
            batch = sentences[i : i + COUNT_BATCH]
            out[i : i + len(batch)] = self._lengths([prefix + s for s in batch])
        return out

    def truncate(self, sentence: str, keep: int) -> str:
        """The text of the first ``keep`` tokens of ``sentence`` (as it sits after a joining space)."""
        ids = self.encode([self.prefix + sentence])[0][:keep]
        return self.tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        ).strip()


@dataclass
class PreparedBackground:
    """Background sentences with their token counts, tokenised once for every row that uses them."""

    name: str
    sentences: list[str]
    tokens: np.ndarray  # (S,) tokens of each sentence as it sits in the input, after a space
    cumsum: np.ndarray  # (S + 1,) tokens before sentence i

    @property
    def total_tokens(self) -> int:
        return int(self.cumsum[-1])


def prepare_background(
    background: Background, counter: TokenCounter, min_sentence_tokens: int = MIN_SENTENCE_TOKENS
) -> PreparedBackground:
    """Tokenise the background once; drop sentences shorter than ``min_sentence_tokens`` (as the authors)."""
    tokens = counter.count(background.sentences)
    keep = np.flatnonzero(tokens >= min_sentence_tokens)
    if len(keep) == 0:
        raise ValueError(
            f"background {background.name!r}: none of its {len(tokens)} sentences has at least "
            f"{min_sentence_tokens} tokens"
        )
    kept = tokens[keep]
    return PreparedBackground(
        name=background.name,
        sentences=[background.sentences[i] for i in keep.tolist()],
        tokens=kept,
        cumsum=np.concatenate([[0], np.cumsum(kept)]),
    )


class FactsTooLong(ValueError):
    """A sample's facts alone exceed the input budget of a length."""


def _row_rng(seed: int, task: str, length: int, sample_id: int) -> np.random.Generator:
    # One independent stream per row: a row never changes when other rows, tasks or lengths are added.
    return np.random.default_rng([seed, int(task[2:]), length, sample_id])


def _take_background(bg: PreparedBackground, start: int, need: int) -> list[int]:
    """Indices of consecutive sentences from ``start`` whose tokens first reach ``need``, wrapping around
    the end of the background as often as needed (a background shorter than ``need`` repeats)."""
    n, c = len(bg.sentences), bg.cumsum
    if need <= 0:
        return []
    # Position p of the endless repetition is sentence p % n, with (p // n) * total + c[p % n] tokens before
    # it; the row ends at the first position with c[start] + need tokens before it.
    passes, rest = divmod(int(c[start]) + need, int(c[n]))
    end = passes * n + int(np.searchsorted(c, rest, side="left"))
    return (np.arange(start, end) % n).tolist()


def check_placement(placement: str, min_fact_distance: int) -> None:
    """Raise ``ValueError`` naming the valid values for a bad fact placement or distance."""
    if placement not in FACT_PLACEMENTS:
        raise ValueError(f"fact placement must be one of {', '.join(FACT_PLACEMENTS)}, got {placement!r}")
    if isinstance(min_fact_distance, bool) or not isinstance(min_fact_distance, int) or min_fact_distance < 0:
        raise ValueError(
            f"the minimum fact distance must be a whole number of tokens >= 0, got {min_fact_distance!r}"
        )


def choose_gaps(
    bg_counts: Sequence[int],
    num_facts: int,
    supporting: Sequence[int],
    rng: np.random.Generator,
    placement: str = "scattered",
    min_fact_distance: int = 0,
) -> list[int]:
    """The gap of each fact among background sentences (gap g = before sentence g; len(bg_counts) = the end).

    ``scattered``: seeded random gaps, drawn with replacement and sorted (facts keep their order, several
    may share a gap), as the authors do; with ``min_fact_distance`` D, every fact up to the last supporting
    one goes into a gap followed by at least D background tokens (later facts anywhere after it).
    ``first``: every fact before the background (D then only needs the background to hold D tokens).
    Raises ``ValueError`` when the background holds fewer than D tokens.
    """
    n = len(bg_counts)
    after = np.concatenate([np.cumsum(np.asarray(bg_counts, dtype=np.int64)[::-1])[::-1], [0]])  # (n + 1,)
    if min_fact_distance > after[0]:
        raise ValueError(
            f"the facts must lie at least {min_fact_distance} tokens before the question, but the background "
            f"holds only {int(after[0])} tokens"
        )
    if placement == "first":
        return [0] * num_facts
    # (after >= D) is true for gaps 0..last_ok: every later gap is followed by fewer tokens
    last_ok = int(np.flatnonzero(after >= min_fact_distance)[-1])
    if not min_fact_distance:
        return np.sort(rng.integers(0, n + 1, size=num_facts)).tolist()
    bound = max(supporting) + 1 if supporting else num_facts  # facts that must keep the distance
    head = np.sort(rng.integers(0, last_ok + 1, size=bound)).tolist()
    low = head[-1] if head else 0
    tail = np.sort(rng.integers(low, n + 1, size=num_facts - bound)).tolist()
    return head + tail


def assemble_input(
    facts: Sequence[str],
    fact_tokens: Sequence[int],
    bg_pieces: Sequence[str],
    bg_counts: Sequence[int],
    gaps: Sequence[int],
    counter: TokenCounter,
) -> tuple[str, int, list[dict[str, int]]]:
    """Join facts and background sentences (fact f before background sentence ``gaps[f]``) with spaces.

    Returns the input text, its tokens, and per fact its ``sentence`` index among the input's sentences,
    ``char_start``/``char_end``, ``token_start`` (tokens before it) and ``distance`` (tokens after it, up
    to the end of the input: how far before the question it lies).
    """
    pieces: list[str] = []
    counts: list[int] = []
    fact_piece: list[int] = []
    f = 0
    for g in range(len(bg_pieces) + 1):
        while f < len(facts) and gaps[f] == g:
            fact_piece.append(len(pieces))
            pieces.append(facts[f])
            counts.append(int(fact_tokens[f]))
            f += 1
        if g < len(bg_pieces):
            pieces.append(bg_pieces[g])
            counts.append(int(bg_counts[g]))
    text = " ".join(pieces)
    if pieces:  # the first piece has no space before it
        counts[0] = int(counter.count(pieces[:1], in_context=False)[0])
    char_starts = np.concatenate([[0], np.cumsum([len(p) + 1 for p in pieces])])
    token_starts = np.concatenate([[0], np.cumsum(counts)])
    total = int(token_starts[-1])
    positions = [
        {
            "sentence": p,  # index among the input's sentences (facts and background)
            "char_start": int(char_starts[p]),
            "char_end": int(char_starts[p]) + len(pieces[p]),
            "token_start": int(token_starts[p]),
            "distance": total - int(token_starts[p + 1]),
        }
        for p in fact_piece
    ]
    return text, total, positions


def take_background(
    background: PreparedBackground, counter: TokenCounter, rng: np.random.Generator, need: int
) -> tuple[list[str], list[int], int]:
    """Consecutive background sentences from a seeded random start holding exactly ``need`` tokens.

    The last sentence is cut at a token boundary so the total lands on ``need``, as the authors do; a
    background shorter than ``need`` repeats. Returns the sentences, their token counts and the start index.
    """
    start = int(rng.integers(len(background.sentences)))
    idx = _take_background(background, start, need)
    pieces = [background.sentences[i] for i in idx]
    counts = background.tokens[idx].tolist()
    overflow = sum(counts) - need
    if overflow > 0:
        keep = counts[-1] - overflow
        pieces[-1] = counter.truncate(pieces[-1], keep)
        counts[-1] = keep
        if not pieces[-1]:  # the kept tokens were only whitespace
            pieces.pop()
            counts.pop()
    return pieces, counts, start


def build_row(
    sample: Sample,
    length: int,
    background: PreparedBackground,
    counter: TokenCounter,
    seed: int,
    sample_id: int,
    prompt_reserve: int = PROMPT_RESERVE,
    fact_tokens: np.ndarray | None = None,
    placement: str = "scattered",
    min_fact_distance: int = 0,
) -> dict[str, Any]:
    """One BABILong row: ``sample``'s facts hidden in ``background`` up to ``length`` tokens.

    ``placement`` and ``min_fact_distance``: see :func:`choose_gaps`. Raises :class:`FactsTooLong` when
    the facts alone (plus ``min_fact_distance`` tokens of background) exceed the input budget. A background
    holding fewer tokens than the row needs repeats in it.
    """
    task = check_task(sample.task)
    check_placement(placement, min_fact_distance)
    facts = list(sample.facts)
    if fact_tokens is None:
        fact_tokens = counter.count(facts)
    budget = input_budget(length, prompt_reserve)
    facts_total = int(fact_tokens.sum())
    rng = _row_rng(seed, task, length, sample_id)

    bg_pieces: list[str] = []
    bg_counts: list[int] = []
    bg_start = None
    if budget is None and min_fact_distance:
        raise ValueError(
            f"length 0k holds no background to keep facts {min_fact_distance} tokens before the question"
        )
    if budget is not None:
        need = budget - facts_total
        if need < min_fact_distance:
            extra = f" + {min_fact_distance} tokens of distance" if min_fact_distance else ""
            reserve = f" ({length} - {prompt_reserve} prompt reserve)" if prompt_reserve else ""
            raise FactsTooLong(
                f"{task} sample {sample_id}: its {len(facts)} facts take {facts_total} tokens{extra}, over the "
                f"{budget}-token input budget of length {length}{reserve}"
            )
        bg_pieces, bg_counts, bg_start = take_background(background, counter, rng, need)

    gaps = choose_gaps(bg_counts, len(facts), sample.supporting, rng, placement, min_fact_distance)
    text, total, positions = assemble_input(facts, fact_tokens, bg_pieces, bg_counts, gaps, counter)
    return {
        "input": text,
        "question": sample.question,
        "target": sample.answer,
        "task": task,
        "length": length,
        "length_name": length_name(length),
        "input_tokens": total,
        "prompt_reserve": prompt_reserve if budget is not None else 0,
        "facts": facts,
        "supporting": list(sample.supporting),
        "fact_positions": positions,
        "fact_placement": placement,
        "min_fact_distance": min_fact_distance,
        "background": background.name,
        "background_start": bg_start,
        "background_sentences": len(bg_pieces),
        "tokenizer": counter.name,
        "seed": seed,
        "sample_id": sample_id,
    }


def plan_samples(
    samples: Sequence[Sample],
    lengths: Sequence[int],
    num_samples: int,
    counter: TokenCounter,
    seed: int,
    prompt_reserve: int = PROMPT_RESERVE,
    min_fact_distance: int = 0,
) -> tuple[dict[int, list[int]], list[np.ndarray]]:
    """Choose ``num_samples`` sample ids per length: a seeded shuffle of the pool, skipping samples whose
    facts alone (plus ``min_fact_distance`` tokens of background) overflow a length's budget (so most
    lengths share the same samples, as in the authors' sets). Returns the choice and every sample's
    per-fact token counts.
    """
    if num_samples < 1:
        raise ValueError(f"the number of samples must be at least 1, got {num_samples}")
    if not samples:
        raise ValueError("no bAbI samples to build from")
    task = check_task(samples[0].task)
    order = np.random.default_rng([seed, int(task[2:])]).permutation(len(samples)).tolist()
    flat = counter.count([f for s in samples for f in s.facts])
    splits = np.cumsum([len(s.facts) for s in samples])[:-1]
    fact_tokens = np.split(flat, splits)
    totals = np.array([int(t.sum()) for t in fact_tokens])
    plan: dict[int, list[int]] = {}
    for length in lengths:
        budget = input_budget(length, prompt_reserve)
        if budget is None and min_fact_distance:
            raise ValueError(
                f"length 0k holds no background to keep facts {min_fact_distance} tokens before the question; "
                "leave 0k out or use no fact distance"
            )
        room = None if budget is None else budget - min_fact_distance
        chosen = [i for i in order if room is None or totals[i] <= room][:num_samples]
        if len(chosen) < num_samples:
            extra = f" with {min_fact_distance} tokens of distance" if min_fact_distance else ""
            raise ValueError(
                f"{task}: only {len(chosen)} of {len(samples)} samples have facts that fit the "
                f"{budget}-token input budget of length {length_name(length)}{extra}, {num_samples} were "
                f"asked for (longest facts: {int(totals.max())} tokens); use longer lengths or fewer samples"
            )
        plan[length] = chosen
    return plan, fact_tokens


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]], bar: tqdm | None = None) -> Path:
    """Write ``rows`` as JSON lines, atomically (the file appears complete or not at all)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False))
                f.write("\n")
                if bar is not None:
                    bar.update(1)

    return atomic_write(path, write)


def build_babilong(
    samples: dict[str, Sequence[Sample]],
    lengths: Sequence[int],
    num_samples: int,
    background: Background,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    out: str | os.PathLike,
    prompt_reserve: int = PROMPT_RESERVE,
    min_sentence_tokens: int = MIN_SENTENCE_TOKENS,
    facts_source: str = "",
    progress: bool = True,
    placement: str = "scattered",
    min_fact_distance: int = 0,
) -> list[Path]:
    """Build every (length, task) set and write ``out/<length>/<task>.jsonl`` plus ``out/manifest.json``.

    The layout mirrors the published sets (config = length, split = task). Everything that can fail on
    user input — task names, lengths, the prompt reserve, samples that do not fit — is checked before the
    first file is written. A background shorter than some length's rows repeats in them: the build warns,
    and the manifest's ``background_repeats`` gives, per such length, how many times over the longest row
    reads it. Rows are built and written one at a time.
    """
    check_out_folder(out, "<length>/<task>.jsonl and manifest.json")
    tasks = [check_task(t) for t in samples]
    check_placement(placement, min_fact_distance)
    lengths = [parse_length(x) for x in lengths]
    for length in lengths:
        input_budget(length, prompt_reserve)
    counter = TokenCounter(tokenizer)
    prepared = prepare_background(background, counter, min_sentence_tokens)

    plans: dict[str, tuple[dict[int, list[int]], list[np.ndarray]]] = {}
    longest: dict[int, int] = {}  # length -> the most background tokens one of its rows needs
    for task in tasks:
        if any(check_task(s.task) != task for s in samples[task]):
            raise ValueError(f"samples given for {task} include samples of another task")
        plans[task] = plan_samples(
            samples[task], lengths, num_samples, counter, seed, prompt_reserve, min_fact_distance
        )
        plan, fact_tokens = plans[task]
        for length in lengths:
            budget = input_budget(length, prompt_reserve)
            if budget is not None:
                need = budget - min(int(fact_tokens[i].sum()) for i in plan[length])
                longest[length] = max(longest.get(length, 0), need)
    # Lengths whose longest row needs more background than there is: how many times over it reads it.
    repeats = {
        length_name(length): round(need / prepared.total_tokens, 2)
        for length, need in longest.items()
        if need > prepared.total_tokens
    }
    if repeats:
        warnings.warn(
            f"background {background.name!r} holds {prepared.total_tokens:,} tokens in "
            f"{len(prepared.sentences):,} sentences of at least {min_sentence_tokens} tokens: rows of length "
            f"{', '.join(repeats)} need more, so their background repeats it (up to {max(repeats.values()):g} "
            "times over); give a longer background to avoid it",
            stacklevel=2,
        )

    out = Path(out)
    planned = [out / length_name(length) / f"{task}.jsonl" for length in lengths for task in tasks]
    for path in [*planned, out / "manifest.json"]:  # temporary files of a build killed part-way
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    manifest = {
        "format": "lm2-babilong-v1",
        "tasks": tasks,
        "lengths": [length_name(x) for x in lengths],
        "length_tokens": lengths,
        "samples_per_task": num_samples,
        "seed": seed,
        "prompt_reserve": prompt_reserve,
        "fact_placement": placement,
        "min_fact_distance": min_fact_distance,
        "min_sentence_tokens": min_sentence_tokens,
        "background": background.name,
        "background_documents": background.documents,
        "background_tokens": prepared.total_tokens,
        "background_repeats": repeats,  # length -> times over its longest row reads the background (> 1)
        "tokenizer": counter.name,
        "facts_source": facts_source,
        "files": [str(p.relative_to(out)) for p in planned],
        "complete": False,
    }

    def write_manifest() -> None:
        atomic_write(out / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))

    # The manifest comes first, marked unfinished, so a set cut short by a kill is recognised as such
    # (evaluation refuses it) instead of passing for a smaller one.
    write_manifest()
    written: list[Path] = []
    bar = tqdm(
        total=len(tasks) * len(lengths) * num_samples, desc="babilong", unit="row", disable=not progress
    )
    with _terminate_as_exit():
        for length in lengths:
            for task in tasks:
                plan, fact_tokens = plans[task]

                rows = (
                    {**build_row(samples[task][i], length, prepared, counter, seed, i, prompt_reserve, fact_tokens[i],
                                 placement, min_fact_distance),
                     "facts_source": facts_source}
                    for i in plan[length]
                )  # fmt: skip
                written.append(write_jsonl(out / length_name(length) / f"{task}.jsonl", rows, bar))
    bar.close()
    manifest["complete"] = True
    write_manifest()
    return written


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit while files are written, so the temporary file is removed.

    (Their default action ends the process on the spot; Ctrl-C already raises KeyboardInterrupt. A
    SIGKILL cannot be caught: the next build removes what it leaves.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = [
    "FACT_PLACEMENTS",
    "FactsTooLong",
    "PreparedBackground",
    "TokenCounter",
    "build_babilong",
    "assemble_input",
    "build_row",
    "check_placement",
    "choose_gaps",
    "plan_samples",
    "prepare_background",
    "take_background",
    "write_jsonl",
]
