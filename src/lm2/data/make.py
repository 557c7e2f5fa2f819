"""Building data sets and tokenizers, as ``lm2 data ...`` and the study do: bAbI files from the generator,
BABILong sets, tokenizers trained on bAbI and background text.

Each builder takes a typed spec (the options of its command, and the schema of a study's ``tokenizer`` and
``data`` sections), checks the whole spec before it writes anything, and writes every file atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from lm2.data.babi.format import find_task_file, read_stories, write_stories
from lm2.data.babi.types import Sample, parse_tasks
from lm2.data.background import SYNTHETIC, Background, load_background
from lm2.data.builder import build_babilong, check_placement
from lm2.data.lengths import DEFAULT_LENGTHS, PROMPT_RESERVE, input_budget, parse_lengths
from lm2.data.prompts import answer_text, format_plain
from lm2.data.tokenizer import (
    TOKENIZER_KINDS,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    train_word_tokenizer,
)


def _generator(name: str) -> Callable[[str, int, int], list]:
    try:
        from lm2.data.babi import generator
    except ImportError:
        raise ValueError(
            "the bAbI generator (lm2.data.babi.generator) is not available in this installation; "
            "pass --babi DIR to take stories from bAbI files instead"
        ) from None
    return getattr(generator, name)


def check_count(name: str, value: int, limit: int = 10_000_000) -> None:
    if not 1 <= value <= limit:
        raise ValueError(f"--{name} must be between 1 and {limit:,}, got {value}")


def make_babi(tasks: str, num_stories: int, out: Path, seed: int = 0, split: str = "train") -> list[Path]:
    """Generate ``num_stories`` bAbI stories of each task into ``out`` in the original format; the files."""
    names = parse_tasks(tasks)
    check_count("num-stories", num_stories)
    generate_stories = _generator("generate_stories")
    stories = {t: generate_stories(t, num_stories, seed) for t in tqdm(names, desc="generating", unit="task")}
    return [write_stories(task_stories, out, task, split) for task, task_stories in stories.items()]


@dataclass
class BabilongSpec:
    """A BABILong set to build (``lm2 data babilong``'s options; a study's ``data.<split>``)."""

    tasks: str = "qa1-qa10"
    lengths: str = DEFAULT_LENGTHS
    samples: int = 100
    background: str = SYNTHETIC
    seed: int = 0
    babi: str | None = None
    split: str = "train"
    prompt_reserve: int = PROMPT_RESERVE
    min_sentence_tokens: int = 10
    fact_placement: Literal["scattered", "first"] = "scattered"
    fact_distance: int = 0

    def validate(self) -> BabilongSpec:
        parse_tasks(self.tasks)
        check_placement(self.fact_placement, self.fact_distance)
        for length in parse_lengths(self.lengths):
            input_budget(length, self.prompt_reserve)  # refuses a length the prompt reserve leaves no room in
        check_count("samples", self.samples, 1_000_000)
        lengths = parse_lengths(self.lengths)
        if self.fact_distance and 0 in lengths:
            raise ValueError(
                f"length 0k holds no background to keep facts {self.fact_distance} tokens before the question; "
                "build 0k without --fact-distance"
            )
        short = [x for x in lengths if x <= self.fact_distance] if self.fact_distance else []
        if short:
            raise ValueError(
                f"fact_distance {self.fact_distance} leaves no room at length {short[0]} tokens; every "
                "length of the split must exceed the distance (put 0k in a split of its own)"
            )
        return self


def _babi_samples(directory: Path, task: str, split: str) -> list[Sample]:
    return [
        s for story in read_stories(find_task_file(directory, task, split), task) for s in story.samples()
    ]


# The synthetic haystack's size is capped (its generator's default): beyond about 1.6M tokens per row the
# rows repeat it instead of the build holding a haystack that grows with the length.
SYNTHETIC_MAX_SENTENCES = 200_000


def _synthetic_size(max_budget: int) -> int:
    # Synthetic sentences hold 16+ tokens under any sensible tokenizer; keep a generous margin.
    return min(SYNTHETIC_MAX_SENTENCES, max(2000, max_budget // 8 + 1000))


def make_babilong(spec: BabilongSpec, tokenizer: Path, out: Path) -> list[Path]:
    """Build the BABILong set ``spec`` with ``tokenizer`` into ``out``; the files written."""
    spec.validate()
    names = parse_tasks(spec.tasks)
    token_lengths = parse_lengths(spec.lengths)
    budgets = [input_budget(x, spec.prompt_reserve) or 0 for x in token_lengths]
    tok = load_tokenizer(tokenizer)
    bg = load_background(spec.background, seed=spec.seed, min_sentences=_synthetic_size(max(budgets)))
    if spec.babi is not None:
        pools = {t: _babi_samples(Path(spec.babi), t, spec.split) for t in names}
        facts_source = f"babi:{spec.babi}"
    else:
        generate_samples = _generator("generate_samples")
        pool = max(2 * spec.samples, spec.samples + 100)  # spare samples for lengths whose budget some overflow
        pools = {t: generate_samples(t, pool, spec.seed) for t in tqdm(names, desc="generating", unit="task")}
        facts_source = f"generator(seed={spec.seed})"
    return build_babilong(
        pools, token_lengths, spec.samples, bg, tok, spec.seed, out, spec.prompt_reserve, spec.min_sentence_tokens,
        facts_source, placement=spec.fact_placement, min_fact_distance=spec.fact_distance,
    )  # fmt: skip


def sample_texts(samples: Iterable[Sample]) -> list[str]:
    """Tokenizer training text: each sample in the exact prompt layout training and evaluation use."""
    texts = []
    for s in samples:
        row = {"input": " ".join(s.facts), "question": s.question, "target": s.answer}
        texts.append(format_plain(row) + answer_text(row))
    return texts


@dataclass
class TokenizerSpec:
    """A tokenizer to train (``lm2 data tokenizer``'s options; a study's ``tokenizer`` section)."""

    vocab_size: int = 8192
    background: str = SYNTHETIC
    tasks: str = "all"
    num_stories: int = 1000
    babi: str | None = None
    seed: int = 0
    kind: Literal["bpe", "word"] = "bpe"
    min_frequency: int | None = None

    def validate(self) -> TokenizerSpec:
        parse_tasks(self.tasks)
        if self.kind not in TOKENIZER_KINDS:
            raise ValueError(f"--kind must be one of {', '.join(TOKENIZER_KINDS)}, got {self.kind!r}")
        if self.min_frequency is not None and self.min_frequency < 1:
            raise ValueError(f"--min-frequency must be at least 1, got {self.min_frequency}")
        check_count("num-stories", self.num_stories)
        return self


def make_tokenizer(spec: TokenizerSpec, out: Path) -> str:
    """Train the tokenizer ``spec`` on bAbI stories plus background text and save it to ``out``; returns
    what was written, in words."""
    spec.validate()
    names = parse_tasks(spec.tasks)
    if spec.babi is not None:
        stories = [s for t in names for s in read_stories(find_task_file(Path(spec.babi), t, "train"), t)]
    else:
        generate_stories = _generator("generate_stories")
        stories = [
            s
            for t in tqdm(names, desc="generating", unit="task")
            for s in generate_stories(t, spec.num_stories, spec.seed)
        ]
    bg: Background = load_background(spec.background, seed=spec.seed, min_sentences=20_000)
    texts = sample_texts(s for story in stories for s in story.samples()) + bg.sentences
    if spec.kind == "word":
        tok = train_word_tokenizer(texts, vocab_size=spec.vocab_size, min_frequency=spec.min_frequency or 1)
    else:
        tok = train_tokenizer(texts, vocab_size=spec.vocab_size, min_frequency=spec.min_frequency or 2)
    save_tokenizer(tok, out)
    note = ""
    if len(tok) < spec.vocab_size:  # the training text has fewer distinct words (word) or merges (bpe)
        more = "distinct words" if spec.kind == "word" else "merges to learn"
        note = f"; up to {spec.vocab_size} were allowed, but the training text has no more {more}"
    what = "word-level vocabulary" if spec.kind == "word" else "byte-level BPE"
    return f"a {len(tok)}-token {what} (background: {bg.name}) to {out}{note}"
