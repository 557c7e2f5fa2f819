"""Time a full BABILong build: qa1-qa10, 100 samples each, at every length 0k-128k (the issue's target:
under 10 minutes on 2 cores).

    PYTHONPATH=src python benchmarks/bench_babilong_build.py \
        --background ../shared/data/background --babi ../shared/data/babi/en-train

Without --tokenizer it first trains an 8k byte-level BPE on the background and the bAbI stories (timed
separately). Without --babi the facts come from the generator. The output goes to a temporary folder
that is deleted afterwards unless --out is given. Prints one line per phase and the total.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lm2.data.babi.types import parse_tasks
from lm2.data.background import load_background
from lm2.data.builder import build_babilong
from lm2.data.lengths import PROMPT_RESERVE, input_budget, parse_lengths
from lm2.data.make import _babi_samples, sample_texts
from lm2.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--background", default="synthetic", help="synthetic, pg19[:FOLDER] or text files/folders"
    )
    parser.add_argument("--babi", type=Path, help="bAbI folder to take facts from (default: the generator)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: train an 8k BPE first)")
    parser.add_argument("--tasks", default="qa1-qa10")
    parser.add_argument("--lengths", default="all")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the built sets here")
    args = parser.parse_args()

    tasks = parse_tasks(args.tasks)
    lengths = parse_lengths(args.lengths)
    t0 = time.perf_counter()
    max_budget = max(input_budget(x, PROMPT_RESERVE) or 0 for x in lengths)
    background = load_background(args.background, seed=args.seed, min_sentences=max_budget // 8 + 1000)
    if args.babi is not None:
        pools = {t: _babi_samples(args.babi, t, "train") for t in tasks}
    else:
        from lm2.data.babi.generator import generate_samples

        pools = {t: generate_samples(t, 2 * args.samples, args.seed) for t in tasks}
    t1 = time.perf_counter()
    print(f"load background ({len(background.sentences):,} sentences) and facts: {t1 - t0:.1f} s")

    scratch = Path(tempfile.mkdtemp(prefix="bench-babilong-"))
    try:
        if args.tokenizer is None:
            texts = sample_texts(s for t in tasks for s in pools[t]) + background.sentences
            args.tokenizer = save_tokenizer(train_tokenizer(texts, vocab_size=8192), scratch / "tokenizer")
            print(f"train 8k byte-level BPE: {time.perf_counter() - t1:.1f} s")
        tokenizer = load_tokenizer(args.tokenizer)
        out = args.out or scratch / "babilong"
        t2 = time.perf_counter()
        files = build_babilong(pools, lengths, args.samples, background, tokenizer, args.seed, out)
        t3 = time.perf_counter()
        size = sum(f.stat().st_size for f in files)
        print(
            f"build {len(tasks)} tasks x {len(lengths)} lengths x {args.samples} samples "
            f"({len(files)} files, {size / 2**20:,.0f} MiB): {t3 - t2:.1f} s"
        )
        print(
            f"total (load + build, tokenizer training excluded): {t1 - t0 + t3 - t2:.1f} s on {os.cpu_count()} cores"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
