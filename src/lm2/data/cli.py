"""``lm2 data ...``: generate bAbI files, build BABILong sets, train a tokenizer.

Each command checks its whole input before it writes anything, and writes every file atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from tqdm.auto import tqdm

from lm2.data.babi.format import find_task_file, read_stories, write_stories
from lm2.data.babi.types import Sample, parse_tasks
from lm2.data.background import SYNTHETIC, Background, load_background
from lm2.data.builder import build_babilong, check_placement
from lm2.data.lengths import PROMPT_RESERVE, input_budget, parse_lengths
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


def _check_count(name: str, value: int, limit: int = 10_000_000) -> None:
    if not 1 <= value <= limit:
        raise ValueError(f"--{name} must be between 1 and {limit:,}, got {value}")


def babi_command(tasks: str, num_stories: int, out: Path, seed: int = 0, split: str = "train") -> None:
    """Generate bAbI stories and write them in the original format, one file per task.

    Files are named like the originals (qa1_single-supporting-fact_train.txt), so every reader of the
    original bAbI folders reads them.

    Args:
        tasks: tasks to generate: 'qa1,qa2', a range 'qa1-qa10', or 'all'.
        num_stories: stories per task.
        out: output folder.
        seed: random seed; the same seed gives the same files.
        split: the split name in the file names (train, test, valid).
    """
    names = parse_tasks(tasks)
    _check_count("num-stories", num_stories)
    generate_stories = _generator("generate_stories")
    stories = {t: generate_stories(t, num_stories, seed) for t in tqdm(names, desc="generating", unit="task")}
    for task, task_stories in stories.items():
        path = write_stories(task_stories, out, task, split)
        print(f"wrote {len(task_stories)} stories to {path}")


def _babi_samples(directory: Path, task: str, split: str) -> list[Sample]:
    return [
        s for story in read_stories(find_task_file(directory, task, split), task) for s in story.samples()
    ]


def _synthetic_size(max_budget: int) -> int:
    # Synthetic sentences hold 16+ tokens under any sensible tokenizer; keep a generous margin.
    return max(2000, max_budget // 8 + 1000)


def babilong_command(
    tokenizer: Path,
    out: Path,
    tasks: str = "qa1-qa10",
    lengths: str = "0k,1k,2k,4k,8k,16k,32k,64k,128k",
    samples: int = 100,
    background: str = SYNTHETIC,
    seed: int = 0,
    babi: Path | None = None,
    split: str = "train",
    prompt_reserve: int = PROMPT_RESERVE,
    min_sentence_tokens: int = 10,
    fact_placement: Literal["scattered", "first"] = "scattered",
    fact_distance: int = 0,
) -> None:
    """Build BABILong sets: bAbI facts hidden in background text, at each length in tokens.

    Writes OUT/<length>/<task>.jsonl (one row per sample: input, question, target, task, length,
    fact_positions, background, ...) and OUT/manifest.json. Lengths count tokens of --tokenizer in the
    input (facts + background): 1k = an input of 1000 tokens; 0k = the facts alone. --prompt-reserve 300
    gives the BABILong authors' convention (1k = the whole prompt, 700 of it input).

    Args:
        tokenizer: a Hugging Face tokenizer folder (train one with `lm2 data tokenizer`).
        out: output folder.
        tasks: bAbI tasks: 'qa1,qa2', 'qa1-qa10' or 'all'.
        lengths: comma-separated lengths: 0k, 1k, 2k, 4k, ..., 128k, 1m, or integers (tokens); 'all' = 0k-128k.
        samples: samples per task and length.
        background: 'synthetic' (built-in offline haystack), 'pg19', 'pg19:FOLDER', or text files/folders
            (comma-separated).
        seed: random seed; the same seed gives the same files.
        babi: take facts from the bAbI files in this folder instead of the generator.
        split: which bAbI file split to read with --babi (train, test, valid).
        prompt_reserve: tokens of each length left for the prompt around the input (the authors: 300).
        min_sentence_tokens: skip background sentences shorter than this.
        fact_placement: 'scattered' (facts in random gaps of the background, in order) or 'first' (all
            facts before the background: they lie the whole background away from the question).
        fact_distance: every fact up to the last supporting one lies at least this many tokens of the input
            before the question (0 = anywhere); samples whose facts leave no room are skipped.
    """
    names = parse_tasks(tasks)
    check_placement(fact_placement, fact_distance)
    token_lengths = parse_lengths(lengths)
    _check_count("samples", samples, 1_000_000)
    budgets = [input_budget(x, prompt_reserve) or 0 for x in token_lengths]
    tok = load_tokenizer(tokenizer)
    bg = load_background(background, seed=seed, min_sentences=_synthetic_size(max(budgets)))

    if babi is not None:
        pools = {t: _babi_samples(babi, t, split) for t in names}
        facts_source = f"babi:{babi}"
    else:
        generate_samples = _generator("generate_samples")
        pool = max(2 * samples, samples + 100)  # spare samples for lengths whose budget some overflow
        pools = {t: generate_samples(t, pool, seed) for t in tqdm(names, desc="generating", unit="task")}
        facts_source = f"generator(seed={seed})"
    written = build_babilong(
        pools, token_lengths, samples, bg, tok, seed, out, prompt_reserve, min_sentence_tokens, facts_source,
        placement=fact_placement, min_fact_distance=fact_distance,
    )  # fmt: skip
    print(f"wrote {len(written)} files ({len(names)} tasks x {len(token_lengths)} lengths) to {out}")


def sample_texts(samples: Iterable[Sample]) -> list[str]:
    """Tokenizer training text: each sample in the exact prompt layout training and evaluation use."""
    texts = []
    for s in samples:
        row = {"input": " ".join(s.facts), "question": s.question, "target": s.answer}
        texts.append(format_plain(row) + answer_text(row))
    return texts


def tokenizer_command(
    out: Path,
    vocab_size: int = 8192,
    background: str = SYNTHETIC,
    tasks: str = "all",
    num_stories: int = 1000,
    babi: Path | None = None,
    seed: int = 0,
    kind: Literal["bpe", "word"] = "bpe",
    min_frequency: int | None = None,
) -> None:
    """Train a tokenizer (byte-level BPE or word-level) on bAbI stories plus background text; save it as a HF folder.

    The folder loads with transformers.AutoTokenizer.from_pretrained(OUT) and is saved with models.
    Special tokens: <|endoftext|> (eos/bos) and <|pad|>; the word-level kind adds <|unk|> for words it
    has not seen.

    Args:
        out: output folder.
        vocab_size: largest vocabulary size, special tokens (and for bpe the 256 byte symbols) included.
        background: 'synthetic', 'pg19', 'pg19:FOLDER', or text files/folders (comma-separated).
        tasks: bAbI tasks whose stories to train on: 'qa1,qa2', 'qa1-qa10' or 'all'.
        num_stories: generated stories per task (ignored with --babi).
        babi: take stories from the bAbI files in this folder instead of the generator.
        seed: random seed for the generator and the synthetic background.
        kind: 'bpe' (byte-level BPE: any text round-trips) or 'word' (one token per word or punctuation
            mark, case kept; unseen words become <|unk|>: for bAbI-scale models).
        min_frequency: keep only tokens seen at least this often (default: 2 for bpe, 1 for word).
    """
    names = parse_tasks(tasks)
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"--kind must be one of {', '.join(TOKENIZER_KINDS)}, got {kind!r}")
    if min_frequency is not None and min_frequency < 1:
        raise ValueError(f"--min-frequency must be at least 1, got {min_frequency}")
    _check_count("num-stories", num_stories)
    if babi is not None:
        stories = [s for t in names for s in read_stories(find_task_file(babi, t, "train"), t)]
    else:
        generate_stories = _generator("generate_stories")
        stories = [
            s
            for t in tqdm(names, desc="generating", unit="task")
            for s in generate_stories(t, num_stories, seed)
        ]
    bg: Background = load_background(background, seed=seed, min_sentences=20_000)
    texts = sample_texts(s for story in stories for s in story.samples()) + bg.sentences
    if kind == "word":
        tok = train_word_tokenizer(texts, vocab_size=vocab_size, min_frequency=min_frequency or 1)
    else:
        tok = train_tokenizer(texts, vocab_size=vocab_size, min_frequency=min_frequency or 2)
    save_tokenizer(tok, out)
    note = ""
    if len(tok) < vocab_size:  # the training text has fewer distinct words (word) or merges (bpe)
        more = "distinct words" if kind == "word" else "merges to learn"
        note = f"; up to {vocab_size} were allowed, but the training text has no more {more}"
    what = "word-level vocabulary" if kind == "word" else "byte-level BPE"
    print(f"wrote a {len(tok)}-token {what} (background: {bg.name}) to {out}{note}")
