"""``lm2 eval mmlu``: k-shot MMLU accuracy by subject, category and difficulty (PAPER.md Table 2).

Each question is asked in the layout of Hendrycks et al. (2021): a header naming the subject, k solved
examples from the dev split, then the question, its four options and ``Answer:``. The prediction is the
letter whose continuation (" A" ... " D") the model gives the highest log-likelihood; nothing is generated.

Two layouts are read:

- original: ``<root>/{dev,val,test}/<subject>_<split>.csv``, no header: question, A, B, C, D, answer letter
  (``--data`` may also be a split folder itself);
- Hugging Face cais/mmlu: ``<root>/<subject>/<split>[-*].{parquet,json,jsonl}`` with ``question``,
  ``choices`` (four strings) and ``answer`` (0-3); the split names dev / validation / test.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

LETTERS = ("A", "B", "C", "D")
SPLITS = ("dev", "val", "test")
_HF_SPLITS = {"dev": "dev", "val": "validation", "test": "test"}

# The standard subject -> category map of the MMLU authors (hendrycks/test, categories.py).
_SUBCATEGORY_TO_CATEGORY = {
    "physics": "STEM", "chemistry": "STEM", "biology": "STEM", "computer science": "STEM",
    "math": "STEM", "engineering": "STEM",
    "history": "Humanities", "philosophy": "Humanities", "law": "Humanities",
    "politics": "Social Sciences", "culture": "Social Sciences", "economics": "Social Sciences",
    "geography": "Social Sciences", "psychology": "Social Sciences",
    "other": "Other", "business": "Other", "health": "Other",
}  # fmt: skip
SUBJECT_SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer science",
    "college_mathematics": "math", "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics", "econometrics": "economics",
    "electrical_engineering": "engineering", "elementary_mathematics": "math", "formal_logic": "philosophy",
    "global_facts": "other", "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science", "high_school_european_history": "history",
    "high_school_geography": "geography", "high_school_government_and_politics": "politics",
    "high_school_macroeconomics": "economics", "high_school_mathematics": "math",
    "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math",
    "high_school_us_history": "history", "high_school_world_history": "history", "human_aging": "health",
    "human_sexuality": "culture", "international_law": "law", "jurisprudence": "law",
    "logical_fallacies": "philosophy", "machine_learning": "computer science", "management": "business",
    "marketing": "business", "medical_genetics": "health", "miscellaneous": "other",
    "moral_disputes": "philosophy", "moral_scenarios": "philosophy", "nutrition": "health",
    "philosophy": "philosophy", "prehistory": "history", "professional_accounting": "other",
    "professional_law": "law", "professional_medicine": "health", "professional_psychology": "psychology",
    "public_relations": "politics", "security_studies": "politics", "sociology": "culture",
    "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}  # fmt: skip
SUBJECT_CATEGORY = {s: _SUBCATEGORY_TO_CATEGORY[c] for s, c in SUBJECT_SUBCATEGORY.items()}
CATEGORIES = ("STEM", "Humanities", "Social Sciences", "Other")
DIFFICULTIES = ("High School", "College", "Professional", "General Knowledge")


def difficulty(subject: str) -> str:
    """The paper's difficulty groups, by subject name prefix; subjects without one are general knowledge."""
    for prefix, name in (
        ("high_school_", "High School"),
        ("college_", "College"),
        ("professional_", "Professional"),
    ):
        if subject.startswith(prefix):
            return name
    return "General Knowledge"


def category(subject: str) -> str:
    if subject not in SUBJECT_CATEGORY:
        raise ValueError(
            f"unknown MMLU subject {subject!r}; the 57 subjects are {', '.join(sorted(SUBJECT_CATEGORY))}"
        )
    return SUBJECT_CATEGORY[subject]


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0-3


# ---------------------------------------------------------------------------------------------------- reading
def _read_csv(path: Path, subject: str) -> list[Question]:
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, rec in enumerate(csv.reader(f), start=1):
            if not rec:
                continue
            if len(rec) != 6:
                raise ValueError(
                    f"{path}:{lineno}: expected 6 fields (question, A, B, C, D, answer), got {len(rec)}"
                )
            letter = rec[5].strip().upper()
            if letter not in LETTERS:
                raise ValueError(f"{path}:{lineno}: answer {rec[5]!r} is not one of A, B, C, D")
            out.append(Question(subject, rec[0], tuple(rec[1:5]), LETTERS.index(letter)))  # type: ignore[arg-type]
    if not out:
        raise ValueError(f"{path}: no questions (the file is empty); give MMLU CSVs with one question a line")
    return out


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet
        except ImportError as err:
            raise ValueError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from err
        return pyarrow.parquet.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _hf_question(rec: dict[str, Any], subject: str, where: str) -> Question:
    try:
        choices = tuple(rec["choices"])
        answer = rec["answer"]
        question = rec["question"]
    except KeyError as err:
        raise ValueError(
            f"{where}: record lacks {err}; cais/mmlu records have question, choices, answer"
        ) from err
    if isinstance(answer, str):
        answer = LETTERS.index(answer.upper()) if answer.upper() in LETTERS else int(answer)
    if len(choices) != 4 or not 0 <= int(answer) < 4:
        raise ValueError(
            f"{where}: need 4 choices and an answer 0-3, got {len(choices)} choices, answer {answer!r}"
        )
    return Question(str(rec.get("subject") or subject), question, choices, int(answer))  # type: ignore[arg-type]


def read_split(root: str | os.PathLike, split: str) -> dict[str, list[Question]]:
    """subject -> questions of ``split`` ("dev", "val" or "test") in either layout."""
    if split not in SPLITS:
        raise ValueError(f"unknown MMLU split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MMLU folder not found: {root}")
    # Original layout: <root>/<split>/<subject>_<split>.csv, or <root> is the split folder itself.
    for folder in (root / split, root):
        files = sorted(folder.glob(f"*_{split}.csv"))
        if files:
            return {
                f.name[: -len(f"_{split}.csv")]: _read_csv(f, f.name[: -len(f"_{split}.csv")]) for f in files
            }
    # Hugging Face layout: <root>/<subject>/<split>[-*].{parquet,json,jsonl}
    hf = _HF_SPLITS[split]
    out: dict[str, list[Question]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name in SUBJECT_CATEGORY):
        files = sorted(
            f
            for f in sub.iterdir()
            if f.name.split("-")[0].split(".")[0] == hf and f.suffix in (".parquet", ".json", ".jsonl")
        )
        for f in files:
            for i, rec in enumerate(_read_records(f)):
                out.setdefault(sub.name, []).append(_hf_question(rec, sub.name, f"{f} (record {i})"))
    if not out:
        raise ValueError(
            f"{root}: no MMLU {split} split found; expected {split}/<subject>_{split}.csv (original layout) "
            f"or <subject>/{hf}-*.parquet|json (cais/mmlu layout)"
        )
    return out


# ---------------------------------------------------------------------------------------------------- prompts
def _pretty(subject: str) -> str:
    return subject.replace("_", " ")


def format_question(q: Question, with_answer: bool) -> str:
    text = q.question.strip() + "".join(
        f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices, strict=True)
    )
    return text + ("\nAnswer: " + LETTERS[q.answer] + "\n\n" if with_answer else "\nAnswer:")


def build_prompt(q: Question, shots: Sequence[Question]) -> str:
    """Header, the solved ``shots``, then ``q`` up to ``Answer:`` (the letter follows after a space)."""
    header = f"The following are multiple choice questions (with answers) about {_pretty(q.subject)}.\n\n"
    return header + "".join(format_question(s, True) for s in shots) + format_question(q, False)


def choose_shots(q: Question, dev: list[Question], k: int) -> list[Question]:
    """The first k dev questions of the subject, never ``q`` itself (when evaluating dev)."""
    return [s for s in dev if s != q][:k]


# ---------------------------------------------------------------------------------------------------- scoring
def _continuations(
    tokenizer: Any, prompts: Sequence[str], contexts: list[list[int]]
) -> list[list[list[int]]]:
    """The tokens of " A" ... " D" after each prompt, as the tokenizer splits prompt + letter.

    All prompts end in the same line ("Answer:"), so the split is worked out once per distinct last line
    and checked against a full encoding of the first prompt with it; where that check fails (a tokenizer
    that merges across lines), every prompt of the group is encoded in full.
    """
    out: list[list[list[int]]] = [[] for _ in prompts]
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt[prompt.rfind("\n") + 1 :], []).append(i)
    for tail, members in groups.items():
        base = tokenizer(tail, add_special_tokens=False)["input_ids"]
        conts = []
        for letter in LETTERS:
            full = tokenizer(tail + " " + letter, add_special_tokens=False)["input_ids"]
            conts.append(full[len(base) :] if full[: len(base)] == base else None)
        first = members[0]
        whole = [tokenizer(prompts[first] + " " + letter)["input_ids"] for letter in LETTERS]
        if all(c is not None and w == contexts[first] + c for c, w in zip(conts, whole, strict=True)):
            for i in members:
                out[i] = conts
            continue
        for i in members:
            for letter in LETTERS:
                full = tokenizer(prompts[i] + " " + letter)["input_ids"]
                ctx = contexts[i]
                if full[: len(ctx)] != ctx:  # the merge crossed the boundary: encode the letter alone
                    full = ctx + tokenizer(" " + letter, add_special_tokens=False)["input_ids"]
                out[i].append(full[len(ctx) :])
    return out


@torch.no_grad()
def letter_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """(len(prompts), 4) log-likelihoods of " A" ... " D" after each prompt.

    A letter's continuation may be several tokens for some tokenizers; their log-probabilities are summed.
    When every letter is one token, one forward pass per prompt scores all four. Sequences are
    right-padded, which leaves a causal model's real positions untouched, and sorted by length.
    """
    contexts = tokenizer(list(prompts))["input_ids"]
    seqs: list[tuple[int, list[int], list[tuple[int, list[int]]]]] = []  # (prompt, tokens, [(letter, cont)])
    for i, (ctx, conts) in enumerate(
        zip(contexts, _continuations(tokenizer, prompts, contexts), strict=True)
    ):
        if all(len(c) == 1 for c in conts):
            seqs.append((i, ctx, list(enumerate(conts))))
        else:
            seqs.extend((i, ctx + c[:-1], [(j, c)]) for j, c in enumerate(conts))
    scores = torch.full((len(prompts), 4), float("nan"))
    order = sorted(range(len(seqs)), key=lambda s: -len(seqs[s][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in tqdm(range(0, len(order), batch_size), desc="mmlu", unit="batch"):
        chunk = [seqs[s] for s in order[start : start + batch_size]]
        width = max(len(ids) for _, ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, (_, seq, _) in enumerate(chunk):
            ids[b, : len(seq)] = torch.tensor(seq)
            mask[b, : len(seq)] = 1
        logits = model(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
        ).logits  # (B, T, V)
        for b, (i, seq, conts) in enumerate(chunk):
            for j, cont in conts:
                # The continuation's tokens are predicted from the last len(cont) positions of seq.
                first = len(seq) - len(cont)
                logp = F.log_softmax(logits[b, first : len(seq)].float(), dim=-1).cpu()  # (len(cont), V)
                scores[i, j] = logp[torch.arange(len(cont)), torch.tensor(cont)].sum()
    return scores


def evaluate_mmlu(
    model: Any,
    tokenizer: Any,
    questions: dict[str, list[Question]],
    dev: dict[str, list[Question]],
    shots: int,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Accuracy by subject, category and difficulty (%), with counts; averages are over questions."""
    if not 0 <= shots <= 5:
        raise ValueError(f"shots must be between 0 and 5, got {shots}")
    asked: list[Question] = []
    prompts: list[str] = []
    for subject in sorted(questions):
        category(subject)
        pool = dev.get(subject, [])
        for q in questions[subject]:
            examples = choose_shots(q, pool, shots)
            if len(examples) < shots:
                raise ValueError(
                    f"{subject}: {shots}-shot prompts need {shots} dev questions other than the one asked; "
                    f"the dev split has {len(pool)}"
                )
            asked.append(q)
            prompts.append(build_prompt(q, examples))
    scores = letter_logprobs(model, tokenizer, prompts, batch_size)
    per_subject: dict[str, list[bool]] = {}
    for q, s in zip(asked, scores, strict=True):
        per_subject.setdefault(q.subject, []).append(int(s.argmax()) == q.answer)
    return summarize(per_subject)


def summarize(per_subject: dict[str, list[bool]]) -> dict[str, Any]:
    def group(names: dict[str, str], order: Sequence[str]) -> dict[str, dict[str, float]]:
        out = {}
        for name in order:
            hits = [h for s, v in per_subject.items() if names[s] == name for h in v]
            if hits:
                out[name] = {"accuracy": 100.0 * sum(hits) / len(hits), "n": len(hits)}
        return out

    everything = [h for v in per_subject.values() for h in v]
    return {
        "subjects": {
            s: {"accuracy": 100.0 * sum(v) / len(v), "n": len(v)} for s, v in sorted(per_subject.items())
        },
        "categories": group(SUBJECT_CATEGORY, CATEGORIES),
        "difficulty": group({s: difficulty(s) for s in per_subject}, DIFFICULTIES),
        "average": {"accuracy": 100.0 * sum(everything) / len(everything), "n": len(everything)},
    }


def to_markdown(results: dict[str, Any], name: str) -> str:
    lines = [f"# MMLU accuracy (%): {name}", "", "| group | accuracy | n |", "|---|---|---|"]
    for key in ("categories", "difficulty"):
        for group, r in results[key].items():
            lines.append(f"| {group} | {r['accuracy']:.1f} | {r['n']} |")
    avg = results["average"]
    lines += [
        f"| Average | {avg['accuracy']:.1f} | {avg['n']} |",
        "",
        "| subject | accuracy | n |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | {r['accuracy']:.1f} | {r['n']} |" for s, r in results["subjects"].items()]
    return "\n".join(lines) + "\n"


