"""The README's read-once-ask-many example (issue 18): a real book with one bAbI qa1 story's facts scattered
through it, read once by `lm2 read`, and one question per person of the story asked from the saved state.

    # a BABILong row: the facts of a real qa1 story in a book the recipe never trained on, 128K tokens
    lm2 data babilong --tokenizer data/tok-bpe4096 --tasks qa1 --samples 1 --seed 7 --fact-placement scattered \\
        --babi ../shared/data/babi/en-train --background ../shared/data/background/pg3261-news-from-nowhere.txt \\
        --lengths 128k --out data/example
    python -m benchmarks.read_ask_example questions data/example/128k/qa1.jsonl --out runs/example
    lm2 read --model runs/memory-long-qa1-lm2 --input runs/example/document.txt --out runs/example/state
    lm2 ask --model runs/memory-long-qa1-lm2 --state runs/example/state --questions runs/example/questions.txt \\
        --json > runs/example/answers.jsonl
    python -m benchmarks.read_ask_example score runs/example runs/example/answers.jsonl

``questions`` writes ``document.txt`` (the row's text: the book with the facts in it), ``questions.txt``
("Where is P?" for every person of the story, in order of first mention) and ``expected.jsonl`` (each
question's answer, the person's last place, and how many tokens before the end of the document that
fact is). ``score`` prints a markdown table of the answers against them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lm2.eval.matcher import is_correct


def last_places(facts: list[str], positions: list[dict]) -> list[dict]:
    """Every person of a qa1 story with their last place and that fact's distance (tokens) to the end."""
    people: dict[str, dict] = {}
    for fact, position in zip(facts, positions, strict=True):
        words = fact.rstrip(".").split()
        if len(words) < 3 or words[-2] != "the":
            raise ValueError(f"not a qa1 movement fact ('<person> <verb> ... the <place>.'): {fact!r}")
        people[words[0]] = {"answer": words[-1], "fact": fact, "distance": position["distance"]}
    return [{"question": f"Where is {name}?", **info} for name, info in people.items()]


def write_questions(rows_file: Path, row: int, out: Path) -> list[dict]:
    """Write document.txt, questions.txt and expected.jsonl for row ``row`` of a qa1 BABILong file."""
    lines = rows_file.read_text(encoding="utf-8").splitlines()
    if not 0 <= row < len(lines):
        raise ValueError(f"--row {row}: {rows_file} has rows 0-{len(lines) - 1}")
    record = json.loads(lines[row])
    if record.get("task") != "qa1":
        raise ValueError(f"{rows_file} row {row} is task {record.get('task')!r}; this example asks qa1 questions")
    expected = last_places(record["facts"], record["fact_positions"])
    (asked,) = [e for e in expected if e["question"] == record["question"]]
    if asked["answer"] != record["target"]:  # the row's own question checks the parsing
        raise ValueError(f"row {row}: parsed {asked['answer']!r} for {record['question']!r}, the row says {record['target']!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "document.txt").write_text(record["input"], encoding="utf-8")
    (out / "questions.txt").write_text("".join(e["question"] + "\n" for e in expected), encoding="utf-8")
    (out / "expected.jsonl").write_text("".join(json.dumps(e) + "\n" for e in expected), encoding="utf-8")
    return expected


def score(example: Path, answers_file: Path) -> str:
    """A markdown table: each question, its answer, the fact's distance, the model's answer and whether it is
    right (the `words` verdict of `lm2 eval babilong`)."""
    expected = [json.loads(line) for line in (example / "expected.jsonl").read_text(encoding="utf-8").splitlines()]
    answers = {a["question"]: a["answer"] for a in map(json.loads, answers_file.read_text(encoding="utf-8").splitlines())}
    rows = ["| question | answer | its fact, tokens back | model's answer | right |", "|---|---|---|---|---|"]
    right = 0
    for e in expected:
        given = answers.get(e["question"], "(not asked)")
        ok = given != "(not asked)" and is_correct(given, e["answer"], e["question"], "qa1")
        right += ok
        rows.append(f"| {e['question']} | {e['answer']} | {e['distance']:,} | {given} | {'yes' if ok else 'no'} |")
    return "\n".join(rows) + f"\n\n{right} of {len(expected)} right\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("questions", help="write document.txt, questions.txt and expected.jsonl from a qa1 row")
    q.add_argument("rows", type=Path, help="a qa1 file of `lm2 data babilong` (e.g. data/example/128k/qa1.jsonl)")
    q.add_argument("--row", type=int, default=0, help="which row (default 0)")
    q.add_argument("--out", type=Path, required=True, help="the example's folder")
    s = sub.add_parser("score", help="the answers of `lm2 ask --json` against expected.jsonl")
    s.add_argument("example", type=Path, help="the folder `questions` wrote")
    s.add_argument("answers", type=Path, help="the JSON lines of `lm2 ask --json`")
    args = parser.parse_args()
    try:
        if args.command == "questions":
            for e in write_questions(args.rows, args.row, args.out):
                print(f"{e['question']} {e['answer']} ({e['distance']:,} tokens back)")
            print(f"wrote document.txt, questions.txt and expected.jsonl to {args.out}")
        else:
            print(score(args.example, args.answers), end="")
    except (OSError, ValueError, KeyError) as err:
        print(f"read_ask_example: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
