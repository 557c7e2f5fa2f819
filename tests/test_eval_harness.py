"""The lm-evaluation-harness adapter, on a local multiple-choice task and a tiny LM2 checkpoint.

Runs only where the optional extra is installed (``pip install 'lm2[eval]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lm2.cli import main
from lm2.eval.harness import run_harness
from lm2.eval.model_folder import load_model_and_tokenizer
from tests.test_eval_fixtures import make_checkpoint

DOCS = [
    {"question": "Where is Mary?", "choices": ["kitchen", "garden", "office"], "answer": 0},
    {"question": "Is John in the kitchen?", "choices": ["yes", "no"], "answer": 1},
    {"question": "What is Sandra carrying?", "choices": ["apple", "milk", "nothing"], "answer": 2},
    {"question": "How many objects is Daniel carrying?", "choices": ["none", "one", "two"], "answer": 1},
]

TASK_YAML = """task: lm2_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _loglik(model, tokenizer, context: str, continuation: str) -> float:
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return float(sum(logp[t - 1, whole[t]] for t in range(len(ctx), len(whole))))


def test_harness_scores_an_lm2_checkpoint_like_a_direct_computation(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("lm_eval", reason="the optional extra lm2[eval] is not installed")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "lm2_local_mc.yaml").write_text(TASK_YAML.format(data=data))
    ckpt = make_checkpoint(tmp_path / "lm2", family="lm2")

    tasks = str(tmp_path / "tasks")
    results = run_harness(str(ckpt), ["lm2_local_mc"], include_path=tasks, device="cpu", builtin_tasks=False)
    acc = results["results"]["lm2_local_mc"]["acc,none"]

    model, tokenizer = load_model_and_tokenizer(ckpt, "cpu")
    hits = []
    samples = {s["doc_id"]: s for s in results["samples"]["lm2_local_mc"]}
    for i, doc in enumerate(DOCS):
        context = f"Question: {doc['question']}\nAnswer:"
        scores = [_loglik(model, tokenizer, context, " " + c) for c in doc["choices"]]
        harness_scores = [float(r[0]) for r in samples[i]["filtered_resps"]]
        assert harness_scores == pytest.approx(scores, abs=1e-3)
        hits.append(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    assert acc == pytest.approx(sum(hits) / len(hits))

    out = tmp_path / "harness.json"
    args = ["eval", "harness", "--model", str(ckpt), "--tasks", "lm2_local_mc", "--device", "cpu"]
    args += ["--include-path", tasks, "--no-builtin-tasks"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["lm2_local_mc"]["acc,none"] == pytest.approx(acc)
    assert main([*args, "--tasks", "no_such_task"]) == 2
