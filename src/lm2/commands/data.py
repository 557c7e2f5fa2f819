"""``lm2 data ...``: generate bAbI files, build BABILong sets, train a tokenizer (the builders: lm2.data.make).

Each command checks its whole input before it writes anything, and writes every file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lm2.data.babi.types import parse_tasks
from lm2.data.background import SYNTHETIC
from lm2.data.lengths import DEFAULT_LENGTHS, PROMPT_RESERVE, parse_lengths


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
    from lm2.data.make import make_babi

    for path in make_babi(tasks, num_stories, out, seed, split):
        print(f"wrote {num_stories} stories to {path}")


def babilong_command(
    tokenizer: Path,
    out: Path,
    tasks: str = "qa1-qa10",
    lengths: str = DEFAULT_LENGTHS,
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
    gives the BABILong authors' convention (1k = the whole prompt, 700 of it input). The defaults build
    qa1-qa10 at every length from 0k to 128k, 100 rows each (9,000 rows, about 1.3 GB of text): 1.5-2.5
    minutes on 2 cores; ask for fewer tasks and lengths for a quick set.

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
    from lm2.data.make import BabilongSpec, make_babilong

    spec = BabilongSpec(
        tasks, lengths, samples, background, seed, None if babi is None else str(babi), split, prompt_reserve,
        min_sentence_tokens, fact_placement, fact_distance,
    )  # fmt: skip
    written = make_babilong(spec, tokenizer, out)
    shape = f"{len(parse_tasks(tasks))} tasks x {len(parse_lengths(lengths))} lengths"
    print(f"wrote {len(written)} files ({shape}) to {out}")


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
    from lm2.data.make import TokenizerSpec, make_tokenizer

    spec = TokenizerSpec(
        vocab_size, background, tasks, num_stories, None if babi is None else str(babi), seed, kind, min_frequency
    )
    print(f"wrote {make_tokenizer(spec, out)}")
