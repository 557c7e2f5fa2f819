"""``lm2 eval mmlu``: both layouts, prompts and shots, letter log-likelihoods, category aggregation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from lm2.cli import main
from lm2.eval.mmlu import (
    CATEGORIES,
    LETTERS,
    SUBJECT_CATEGORY,
    Question,
    build_prompt,
    choose_shots,
    difficulty,
    evaluate_mmlu,
    letter_logprobs,
    read_split,
    summarize,
)
from tests.conftest import TINY_BACKBONE, shared_path
from tests.test_eval_fixtures import make_checkpoint, make_tokenizer


@pytest.fixture(scope="module")
def dev() -> dict[str, list[Question]]:
    return read_split(shared_path("mmlu"), "dev")


def test_original_layout_on_the_real_dev_split(dev) -> None:
    assert len(dev) == 57 and all(len(qs) == 5 for qs in dev.values())
    assert set(dev) == set(SUBJECT_CATEGORY)
    q = dev["abstract_algebra"][0]
    assert q.question.startswith("Find all c in Z_3") and q.choices == ("0", "1", "2", "3") and q.answer == 1
    # A quoted field with commas inside stays one option.
    assert dev["abstract_algebra"][1].choices[0] == "True, True"
    # The split folder itself works too.
    assert read_split(shared_path("mmlu", "dev"), "dev") == dev


def test_standard_category_map() -> None:
    assert Counter(SUBJECT_CATEGORY.values()) == {
        "STEM": 18,
        "Humanities": 13,
        "Social Sciences": 12,
        "Other": 14,
    }
    assert SUBJECT_CATEGORY["high_school_european_history"] == "Humanities"
    assert SUBJECT_CATEGORY["professional_accounting"] == "Other"
    assert SUBJECT_CATEGORY["high_school_statistics"] == "STEM"
    assert SUBJECT_CATEGORY["public_relations"] == "Social Sciences"
    assert [difficulty(s) for s in ("high_school_physics", "college_medicine", "professional_law", "virology")] == [
        "High School", "College", "Professional", "General Knowledge"
    ]  # fmt: skip


def test_hugging_face_layout_matches_the_original(tmp_path, dev) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    for i, subject in enumerate(["anatomy", "virology"]):
        records = [
            {"question": q.question, "subject": subject, "choices": list(q.choices), "answer": q.answer}
            for q in dev[subject]
        ]
        (tmp_path / subject).mkdir()
        if i == 0:
            pq.write_table(pa.Table.from_pylist(records), tmp_path / subject / "dev-00000-of-00001.parquet")
        else:
            (tmp_path / subject / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    hf = read_split(tmp_path, "dev")
    assert hf == {"anatomy": dev["anatomy"], "virology": dev["virology"]}
    with pytest.raises(ValueError, match="no MMLU test split found"):
        read_split(tmp_path, "test")


def test_bad_files_are_named(tmp_path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "anatomy_dev.csv").write_text("What?,a,b,c,d,E\n")
    with pytest.raises(ValueError, match=r"anatomy_dev.csv:1: answer 'E' is not one of A, B, C, D"):
        read_split(tmp_path, "dev")
    (tmp_path / "dev" / "anatomy_dev.csv").write_text("What?,a,b,c,A\n")
    with pytest.raises(ValueError, match=r"anatomy_dev.csv:1: expected 6 fields"):
        read_split(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="MMLU folder not found"):
        read_split(tmp_path / "missing", "dev")


def test_shots_exclude_the_question_itself(dev) -> None:
    pool = dev["anatomy"]
    shots = choose_shots(pool[0], pool, 4)
    assert pool[0] not in shots and shots == pool[1:5]
    prompt = build_prompt(pool[0], shots[:2])
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert prompt.count("Answer:") == 3 and prompt.endswith(
        f"{pool[0].question}\nA. {pool[0].choices[0]}".split("\n")[-1]
        + "\n"
        + "\n".join(f"{L}. {c}" for L, c in zip("BCD", pool[0].choices[1:], strict=True))
        + "\nAnswer:"
    )
    assert f"Answer: {LETTERS[pool[1].answer]}\n\n" in prompt
    with pytest.raises(ValueError, match="5-shot prompts need 5 dev questions other than the one asked"):
        evaluate_mmlu(None, None, {"anatomy": pool}, dev, shots=5)


def test_summary_groups_by_category_and_difficulty() -> None:
    per_subject = {
        "high_school_physics": [True, False],  # STEM, High School
        "college_physics": [True, True],  # STEM, College
        "philosophy": [False, False, False, True],  # Humanities, General Knowledge
    }
    s = summarize(per_subject)
    assert s["categories"]["STEM"] == {"accuracy": 75.0, "n": 4}
    assert s["categories"]["Humanities"] == {"accuracy": 25.0, "n": 4}
    assert list(s["categories"]) == [c for c in CATEGORIES if c in ("STEM", "Humanities")]
    assert s["difficulty"]["High School"]["accuracy"] == 50.0
    assert s["difficulty"]["General Knowledge"]["accuracy"] == 25.0
    assert s["average"] == {"accuracy": 50.0, "n": 8}


def _naive_logprob(model, tokenizer, prompt: str, letter: str) -> float:
    ctx = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + letter)["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([full])).logits[0].float(), dim=-1)
    return float(sum(logp[t - 1, full[t]] for t in range(len(ctx), len(full))))


@pytest.mark.parametrize("vocab_size", [400, 262])  # " A" is one token, or two (Ġ + A) with almost no merges
def test_letter_logprobs_equal_a_direct_computation(dev, vocab_size) -> None:
    tokenizer = make_tokenizer(vocab_size)
    assert (len(tokenizer(" A", add_special_tokens=False)["input_ids"]) == 1) == (vocab_size == 400)
    torch.manual_seed(0)
    config = LlamaConfig(**TINY_BACKBONE, vocab_size=len(tokenizer), max_position_embeddings=4096)
    model = LlamaForCausalLM(config).eval()
    # The four shortest questions (of different lengths, so the batches are padded), one with a shot.
    qs = sorted((q for qs in dev.values() for q in qs), key=lambda q: len(build_prompt(q, [])))[:4]
    prompts = [build_prompt(q, []) for q in qs[:3]] + [build_prompt(qs[3], qs[:1])]
    scores = letter_logprobs(model, tokenizer, prompts, batch_size=3)  # right-padded batches of mixed length
    expected = torch.tensor([[_naive_logprob(model, tokenizer, p, L) for L in LETTERS] for p in prompts])
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


class _AlwaysLetter:
    """A fake LM that puts all probability on one token: it always answers the same letter."""

    def __init__(self, token_id: int, vocab: int) -> None:
        self.token_id, self.vocab, self.device = token_id, vocab, torch.device("cpu")

    def __call__(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token_id] = 10.0
        return SimpleNamespace(logits=logits)


def test_scoring_on_the_real_dev_split_with_a_constant_answer(dev) -> None:
    tokenizer = make_tokenizer()
    c_token = tokenizer(" C", add_special_tokens=False)["input_ids"][0]
    results = evaluate_mmlu(
        _AlwaysLetter(c_token, len(tokenizer)), tokenizer, dev, dev, shots=3, batch_size=16
    )
    for subject, qs in dev.items():
        expected = 100.0 * sum(q.answer == 2 for q in qs) / len(qs)
        assert results["subjects"][subject] == {"accuracy": expected, "n": 5}
    stem = [q for s, qs in dev.items() if SUBJECT_CATEGORY[s] == "STEM" for q in qs]
    assert results["categories"]["STEM"]["accuracy"] == pytest.approx(
        100.0 * sum(q.answer == 2 for q in stem) / len(stem)
    )
    assert results["average"]["n"] == 285
    assert sum(r["n"] for r in results["categories"].values()) == 285
    assert sum(r["n"] for r in results["difficulty"].values()) == 285


def test_cli_tiny_model_on_the_real_dev_split(tmp_path: Path) -> None:
    data = shared_path("mmlu")
    ckpt = make_checkpoint(tmp_path / "tiny")
    # One subject per category and per difficulty keeps this quick; the constant-answer test covers all 57.
    subjects = "abstract_algebra,high_school_geography,college_medicine,professional_accounting,philosophy"
    args = ["eval", "mmlu", "--model", str(ckpt), "--data", str(data), "--split", "dev", "--device", "cpu"]
    args += ["--subjects", subjects]
    assert main([*args, "--shots", "1", "--out", str(tmp_path / "out"), "--batch-size", "4"]) == 0
    results = json.loads((tmp_path / "out" / "mmlu.json").read_text())
    assert list(results["subjects"]) == sorted(subjects.split(",")) and results["average"]["n"] == 25
    assert set(results["categories"]) == set(CATEGORIES)
    assert set(results["difficulty"]) == {"High School", "College", "Professional", "General Knowledge"}
    assert 0.0 <= results["average"]["accuracy"] <= 100.0
    assert "| STEM |" in (tmp_path / "out" / "mmlu.md").read_text()
    assert main([*args, "--shots", "5"]) == 2  # dev has only 4 other questions per subject
    assert main([*args, "--shots", "6"]) == 2
    assert main([*args, "--subjects", "astrology"]) == 2
