"""Compare generated bAbI stories with the original training files, task by task, and print a table.

    PYTHONPATH=src python scripts/compare_babi.py --real /work/shared/data/babi/en-train --samples 5000

Columns: mean facts (statements before the question) per sample, real vs generated, and the two-sample
Kolmogorov-Smirnov statistic between those distributions; mean lines per story; the share of the real
files' word types that generated text uses, and generated word types the real files lack; whether the
answer label sets are equal; the total-variation distance between the answer distributions.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lm2.data.babi.format import find_task_file, read_stories, vocabulary
from lm2.data.babi.generator import available_tasks, iter_stories
from lm2.data.babi.types import Sample, Story, parse_tasks


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    gap = 0.0
    while i < len(xs) and j < len(ys):
        v = min(xs[i], ys[j])
        while i < len(xs) and xs[i] == v:
            i += 1
        while j < len(ys) and ys[j] == v:
            j += 1
        gap = max(gap, abs(i / len(xs) - j / len(ys)))
    return gap


def samples_of(stories: Sequence[Story]) -> list[Sample]:
    return [s for story in stories for s in story.samples()]


def stories_for_samples(task: str, num_samples: int, seed: int) -> list[Story]:
    """Whole generated stories, enough of them to hold ``num_samples`` questions."""
    stories: list[Story] = []
    count = 0
    for story in iter_stories(task, seed):
        if count >= num_samples:
            break
        stories.append(story)
        count += len(story.samples())
    return stories


def answer_labels(task: str, samples: Sequence[Sample]) -> set[str]:
    """qa8's lists count by their items ("apple,milk" -> apple, milk); other answers as they are."""
    if task == "qa8":
        return {item for s in samples for item in s.answer.split(",")}
    return {s.answer for s in samples}


def total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def compare(task: str, real_dir: Path, num_samples: int, seed: int) -> dict[str, object]:
    real = list(read_stories(find_task_file(real_dir, task)))
    gen = stories_for_samples(task, num_samples, seed)
    real_s, gen_s = samples_of(real), samples_of(gen)
    real_f = [len(s.facts) for s in real_s]
    gen_f = [len(s.facts) for s in gen_s]
    real_w, gen_w = vocabulary(real), vocabulary(gen)
    return {
        "task": task,
        "real_samples": len(real_s),
        "gen_samples": len(gen_s),
        "real_facts": sum(real_f) / len(real_f),
        "gen_facts": sum(gen_f) / len(gen_f),
        "ks": ks_statistic(real_f, gen_f),
        "real_lines": sum(len(s.lines) for s in real) / len(real),
        "gen_lines": sum(len(s.lines) for s in gen) / len(gen),
        "coverage": len(real_w & gen_w) / len(real_w),
        "extra_words": sorted(gen_w - real_w),
        "labels_equal": answer_labels(task, real_s) == answer_labels(task, gen_s),
        "answer_tv": total_variation(Counter(s.answer for s in real_s), Counter(s.answer for s in gen_s)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path("../shared/data/babi/en-train"))
    parser.add_argument("--tasks", default=",".join(available_tasks()))
    parser.add_argument("--samples", type=int, default=5000, help="generated samples per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.real.is_dir():
        parser.error(f"--real {args.real} is not a folder of bAbI files")
    header = (
        "| task | facts/sample real | generated | KS | lines/story real | generated "
        "| vocab covered | extra words | labels equal | answer TV |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for task in parse_tasks(args.tasks):
        r = compare(task, args.real, args.samples, args.seed)
        print(
            f"| {task} | {r['real_facts']:.2f} | {r['gen_facts']:.2f} | {r['ks']:.3f} "
            f"| {r['real_lines']:.1f} | {r['gen_lines']:.1f} | {r['coverage']:.0%} "
            f"| {', '.join(r['extra_words']) or '-'} | {'yes' if r['labels_equal'] else 'NO'} "
            f"| {r['answer_tv']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
