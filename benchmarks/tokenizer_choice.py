"""Which tokenizer the CPU recipe should use, so that a book never seen in training is text, not unknowns.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.tokenizer_choice
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.tokenizer_choice --candidates word-babi,bpe-4096   # a subset

Every candidate is built the way ``lm2 data tokenizer`` builds it (``lm2.data.make.make_tokenizer``: 1,000
generated stories per task of qa1-qa5, seed 0, plus a background) into a temporary folder, timed, and
loaded back from that folder as a model would load it:

- ``word-babi``: word-level over the stories with the synthetic background (the current recipe's ~200 words);
- ``word-books-4096``, ``word-books-8192``: word-level over the stories plus the two training books;
- ``bpe-2048``, ``bpe-4096``, ``bpe-8192``: byte-level BPE over the stories plus the two training books
  (``bpe-4096`` is ``lm2 data tokenizer --kind bpe --vocab-size 4096 --tasks qa1-qa5 --background BOOKS``).

Measured on the held-out book (never in any tokenizer's training text), read with the BABILong builder's
own loader (``lm2.data.background.load_background``: Gutenberg header gone, cleaned sentences) and joined
with spaces as the builder joins its haystack: the share of tokens that are the unknown token (counted, so
byte-level BPE's 0 is checked, not assumed), tokens per whitespace word, and the share of sampled sentences
with ``decode(encode(s)) == s``, exactly and up to spaces. On bAbI (the real qa1-qa5 training files when ``--babi`` has them, else
freshly generated stories with another seed): tokens per fact sentence, and the share of word types, and of
answer words, that are one known token as they sit in the text (after a space) — the answer is one word,
so a split one costs the model extra steps to produce. Writes a markdown table (stdout),
``benchmarks/results/tokenizer_choice.json`` and ``benchmarks/results/tokenizer_choice.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import tokenizers
from transformers import PreTrainedTokenizerBase

from benchmarks.bench_model import machine as bench_machine
from lm2.data.babi.format import find_task_file, read_stories, vocabulary
from lm2.data.babi.generator import generate_stories
from lm2.data.babi.types import Question, Statement, Story, parse_tasks
from lm2.data.background import SYNTHETIC, load_background
from lm2.data.make import TokenizerSpec, make_tokenizer
from lm2.data.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TRAIN_BOOKS = ("pg16215-jack-sheppard.txt", "tinyshakespeare.txt")
HELD_OUT_BOOK = "pg3261-news-from-nowhere.txt"
TASKS = "qa1-qa5"
BOOKS = "books"  # a candidate whose background is the training books (filled in once --books is known)
CANDIDATES: dict[str, dict] = {
    "word-babi": dict(kind="word", background=SYNTHETIC),
    "word-books-4096": dict(kind="word", vocab_size=4096, background=BOOKS),
    "word-books-8192": dict(kind="word", vocab_size=8192, background=BOOKS),
    "bpe-2048": dict(kind="bpe", vocab_size=2048, background=BOOKS),
    "bpe-4096": dict(kind="bpe", vocab_size=4096, background=BOOKS),
    "bpe-8192": dict(kind="bpe", vocab_size=8192, background=BOOKS),
}
ROUND_TRIP_SENTENCES = 500
BABI_STORIES = 200  # per task
SHOWN_SPLITS = 12  # split bAbI words listed per candidate


def machine() -> str:
    # tokenizers trains and encodes on a thread pool unless TOKENIZERS_PARALLELISM=false; it moves build times.
    parallel = os.environ.get("TOKENIZERS_PARALLELISM", "unset")
    return f"{bench_machine()}, tokenizers {tokenizers.__version__} (TOKENIZERS_PARALLELISM={parallel})"


def babi_stories(babi: Path) -> tuple[list[Story], str]:
    """The first stories of each qa1-qa5 file in ``babi``, or generated ones when the files are absent."""
    tasks = parse_tasks(TASKS)
    try:
        files = [find_task_file(babi, t, "train") for t in tasks]
    except FileNotFoundError:
        # seed 1: the tokenizers were trained on seed 0's stories, so these are not their training text
        return [s for t in tasks for s in generate_stories(t, BABI_STORIES, 1)], "generated (seed 1)"
    stories = []
    for t, f in zip(tasks, files, strict=True):
        it = read_stories(f, t)
        stories += [next(it) for _ in range(BABI_STORIES)]
    return stories, f"real bAbI files in {babi}"


def one_token(tok: PreTrainedTokenizerBase, word: str) -> bool:
    """``word`` after a space (as facts and the answer sit in the input) is one token, and not the unknown."""
    ids = tok.encode(" " + word, add_special_tokens=False)
    return len(ids) == 1 and ids[0] != tok.unk_token_id


def measure(tok: PreTrainedTokenizerBase, book: str, sample: list[str], stories: list[Story]) -> dict:
    ids = tok.encode(book, add_special_tokens=False)
    unk = ids.count(tok.unk_token_id)
    decoded = [tok.decode(tok.encode(s, add_special_tokens=False)) for s in sample]
    failed = [s for s, d in zip(sample, decoded, strict=True) if d != s]
    # the word-level decoder re-spaces quotes, colons and apostrophes ('" Heaven? "', "can ' t"): this
    # count separates those sentences from the ones that lost words to the unknown token
    lost = sum("".join(s.split()) != "".join(d.split()) for s, d in zip(sample, decoded, strict=True))
    facts = [line.text for s in stories for line in s.lines if isinstance(line, Statement)]
    fact_tokens = [len(tok.encode(" " + f, add_special_tokens=False)) for f in facts]
    words = sorted(vocabulary(stories))
    answers = sorted(
        {a for s in stories for line in s.lines if isinstance(line, Question) for a in line.answer.split(",")}
    )
    split = [w for w in words if not one_token(tok, w)]
    return {
        "vocab_size": len(tok),
        "book_tokens": len(ids),
        "book_unk_tokens": unk,
        "book_unk_fraction": unk / len(ids),
        "book_tokens_per_word": len(ids) / len(book.split()),
        "round_trip_fraction": 1 - len(failed) / len(sample),
        "round_trip_failure_example": failed[0] if failed else None,
        "round_trip_ignoring_spaces_fraction": 1 - lost / len(sample),
        "babi_facts": len(facts),
        "babi_tokens_per_fact": sum(fact_tokens) / len(facts),
        "babi_words": len(words),
        "babi_words_one_token_fraction": 1 - len(split) / len(words),
        "babi_words_split": split,
        "babi_answers": len(answers),
        "babi_answers_one_token_fraction": sum(one_token(tok, a) for a in answers) / len(answers),
    }


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['machine']}",
        "",
        f"Held-out book: {meta['held_out_book']} ({meta['held_out_sentences']:,} sentences, "
        f"{meta['held_out_words']:,} whitespace words, joined with spaces as the BABILong builder joins them); "
        f"round-trip over {meta['round_trip_sentences']} sampled sentences: decoded exactly, and up to "
        f"spaces (nothing lost, only re-spaced). bAbI: {meta['babi_source']}, "
        f"{BABI_STORIES} stories per task of {TASKS}; a word counts as one token when ' word' encodes to one "
        "known token. Build: `make_tokenizer` (as `lm2 data tokenizer`), story generation and saving included.",
        "",
        "| tokenizer | vocab | build s | book: unk tokens | book: tokens/word | book: round-trips | book: "
        "round-trips up to spaces | bAbI: tokens/fact | bAbI words as 1 token | bAbI answers as 1 token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['vocab_size']:,} | {r['build_s']:.1f} | {r['book_unk_tokens']:,} "
            f"({100 * r['book_unk_fraction']:.2f}%) | {r['book_tokens_per_word']:.2f} | "
            f"{100 * r['round_trip_fraction']:.1f}% | {100 * r['round_trip_ignoring_spaces_fraction']:.1f}% | "
            f"{r['babi_tokens_per_fact']:.2f} | "
            f"{100 * r['babi_words_one_token_fraction']:.1f}% of {r['babi_words']} | "
            f"{100 * r['babi_answers_one_token_fraction']:.1f}% of {r['babi_answers']} |"
        )
    splits = [r for r in rows if r["babi_words_split"]]
    if splits:
        lines.append("")
    for r in splits:
        shown = ", ".join(r["babi_words_split"][:SHOWN_SPLITS])
        more = len(r["babi_words_split"]) - SHOWN_SPLITS
        lines.append(
            f"- {r['name']}: bAbI words not one token: {shown}" + (f" (+{more} more)" if more > 0 else "")
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--books", type=Path, default=SHARED / "background", help="folder with the three books")
    p.add_argument("--babi", type=Path, default=SHARED / "babi" / "en-train", help="real bAbI files, if any")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated subset to build")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "tokenizer_choice.json")
    p.add_argument("--md", type=Path, default=ROOT / "benchmarks" / "results" / "tokenizer_choice.md")
    args = p.parse_args()
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    missing = [b for b in (*TRAIN_BOOKS, HELD_OUT_BOOK) if not (args.books / b).is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} not in {args.books} (the shared books this benchmark needs)")
        return

    train_books = ",".join(str(args.books / b) for b in TRAIN_BOOKS)
    held_out = load_background(str(args.books / HELD_OUT_BOOK))
    book = " ".join(held_out.sentences)
    sample = random.Random(0).sample(held_out.sentences, min(ROUND_TRIP_SENTENCES, len(held_out.sentences)))
    stories, babi_source = babi_stories(args.babi)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            options = dict(CANDIDATES[name], tasks=TASKS)
            if options["background"] == BOOKS:
                options["background"] = train_books
            start = time.perf_counter()
            make_tokenizer(TokenizerSpec(**options), Path(tmp) / name)
            build_s = time.perf_counter() - start
            tok = load_tokenizer(Path(tmp) / name)
            row = {"name": name, "spec": options, "build_s": build_s, **measure(tok, book, sample, stories)}
            print(f"{name}: {row['vocab_size']} tokens, built in {build_s:.1f} s", file=sys.stderr)
            rows.append(row)
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM") if k in os.environ]
    meta = {
        "machine": machine(),
        "command": shlex.join([*env, ".venv/bin/python", "-m", "benchmarks.tokenizer_choice", *sys.argv[1:]]),
        "held_out_book": HELD_OUT_BOOK,
        "held_out_sentences": len(held_out.sentences),
        "held_out_words": len(book.split()),
        "round_trip_sentences": len(sample),
        "babi_source": babi_source,
    }
    text = table(rows, meta)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(f"Command: `{meta['command']}`\n\n{text}")


if __name__ == "__main__":
    main()
