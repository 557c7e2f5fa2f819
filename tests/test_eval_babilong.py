"""``lm2 eval babilong``: data layouts, scoring, the Table 1 outputs, resume after a crash, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from lm2.cli import main
from lm2.data.lengths import length_label
from lm2.data.prompts import answer_text, format_babilong, format_plain, get_prompt_format
from lm2.data.rows import load_rows
from lm2.eval import babilong
from lm2.eval.babilong import Candidate, evaluate, generate_answers, read_predictions, to_markdown
from lm2.eval.model_folder import load_model_and_tokenizer
from tests.conftest import shared_path
from tests.test_eval_fixtures import make_checkpoint, make_tokenizer


def _row(task: str, length: str, i: int, target: str, question: str = "Where is Mary?") -> dict:
    return {
        "input": f"Story {i}. Mary went to the {target}.",
        "question": question,
        "target": target,
        "task": task,
        "length": length,
        "id": i,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class FakeLM:
    """A stand-in for a causal LM: answers each prompt with ``answer(prompt)`` and counts what it saw.

    It speaks through the real tokenizer and the real ``generate_answers`` path (left padding, decoding of
    the new tokens only), so the scoring and bookkeeping around it are tested as in a real run.
    """

    device = torch.device("cpu")

    def __init__(self, tokenizer, answer, crash_after: int | None = None) -> None:
        self.tokenizer, self.answer, self.crash_after = tokenizer, answer, crash_after
        self.prompts: list[str] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        if self.crash_after is not None and len(self.prompts) >= self.crash_after:
            raise RuntimeError("simulated crash")
        assert max_new_tokens == 20 and kwargs["do_sample"] is False
        assert (attention_mask[:, -1] == 1).all(), "prompts must be left-padded"
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tokenizer.decode(ids[mask.bool()])
            self.prompts.append(prompt)
            rows.append(
                self.tokenizer(self.answer(prompt), add_special_tokens=False)["input_ids"][:max_new_tokens]
            )
        width = max(len(r) for r in rows)
        new = torch.full((len(rows), width), self.tokenizer.pad_token_id)
        for b, r in enumerate(rows):
            new[b, : len(r)] = torch.tensor(r)
        return torch.cat([input_ids, new], dim=1)


def _oracle(groups):
    """Answers with the row's target (found by its unique input), so every row is correct."""
    by_input = {r["input"]: r["target"] for rows in groups.values() for r in rows}

    def answer(prompt: str) -> str:
        context = re.findall(r"<context>\n(.*?)\n</context>", prompt, re.S)[-1]  # the row's, not an example's
        return " " + by_input[context].replace(",", " and ") + ". Then"

    return answer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture()
def groups(tmp_path: Path):
    rows = [_row("qa1", "0k", i, t) for i, t in enumerate(["kitchen", "garden", "kitchen", "office"])]
    rows += [_row("qa1", "1k", i, t) for i, t in enumerate(["kitchen", "hallway", "bedroom"])]
    rows += [
        _row("qa7", "0k", i, t, "How many objects is Mary carrying?") for i, t in enumerate(["none", "one"])
    ]
    rows += [
        _row("qa7", "1k", i, t, "How many objects is Mary carrying?") for i, t in enumerate(["two", "none"])
    ]
    return load_rows([_write_jsonl(tmp_path / "rows.jsonl", rows)])


def test_constant_answer_scores_the_fraction_of_matching_targets(tmp_path, tokenizer, groups) -> None:
    models = [
        Candidate("always-kitchen", lambda: (FakeLM(tokenizer, lambda p: " kitchen."), tokenizer)),
        Candidate("always-none", lambda: (FakeLM(tokenizer, lambda p: " None, I think"), tokenizer)),
        Candidate("oracle", lambda: (FakeLM(tokenizer, _oracle(groups)), tokenizer)),
    ]
    results = evaluate(models, groups, tmp_path / "out", batch_size=3)
    acc = results["accuracy"]
    assert acc["0k"]["always-kitchen"] == {"qa1": 50.0, "qa7": 0.0, "avg": 25.0}
    assert acc["1k"]["always-kitchen"]["qa1"] == pytest.approx(100 / 3)
    assert acc["0k"]["always-none"]["qa7"] == 50.0 and acc["1k"]["always-none"]["qa7"] == 50.0
    assert all(acc[n]["oracle"]["avg"] == 100.0 for n in ("0k", "1k"))
    assert results["count"]["1k"]["oracle"] == {"qa1": 3, "qa7": 2}

    out = tmp_path / "out"
    md = (out / "results.md").read_text()
    assert md.index("## 0k") < md.index("## 1k")
    assert "| model | qa1 | qa7 | avg |" in md
    assert "| always-kitchen | 50.0 | 0.0 | 25.0 |" in md
    assert md.index("## 1k") < md.index("## average over tasks")
    assert "| model | 0k | 1k |" in md and "| always-none | 25.0 | 25.0 |" in md
    with open(out / "results.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["length", "model", "qa1", "qa7", "avg"]
    assert [r[:2] for r in table[1:]] == [
        [n, m] for n in ("0k", "1k") for m in ("always-kitchen", "always-none", "oracle")
    ]
    assert json.loads((out / "results.json").read_text())["accuracy"]["0k"]["oracle"]["avg"] == 100.0
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == 3 * 11
    assert {"model", "task", "length", "id", "prediction", "target", "correct"} <= set(preds[0])


def test_resume_after_a_crash_computes_only_the_missing_rows(tmp_path, tokenizer, groups) -> None:
    total = sum(len(r) for r in groups.values())
    crashing = FakeLM(tokenizer, lambda p: " kitchen", crash_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate([Candidate("m", lambda: (crashing, tokenizer))], groups, tmp_path / "out", batch_size=2)
    pred_path = tmp_path / "out" / "predictions.jsonl"
    assert len(read_predictions(pred_path)) == 4  # two whole batches were saved before the crash
    with open(pred_path, "a") as f:
        f.write('{"model": "m", "task": "qa1", "len')  # a write torn by the crash

    resumed = FakeLM(tokenizer, lambda p: " kitchen")
    results = evaluate([Candidate("m", lambda: (resumed, tokenizer))], groups, tmp_path / "out", batch_size=2)
    assert len(resumed.prompts) == total - 4
    assert not set(resumed.prompts) & set(crashing.prompts)
    fresh = evaluate(
        [Candidate("m", lambda: (FakeLM(tokenizer, lambda p: " kitchen"), tokenizer))], groups, tmp_path / "b"
    )
    assert results["accuracy"] == fresh["accuracy"]
    assert len(read_predictions(pred_path)) == total

    # Everything scored: a third run loads no model at all.
    def no_load():
        raise AssertionError("the model was loaded although every row is scored")

    evaluate([Candidate("m", no_load)], groups, tmp_path / "out")


def test_resume_refuses_predictions_from_a_different_prompt(tmp_path, tokenizer, groups) -> None:
    model = Candidate("m", lambda: (FakeLM(tokenizer, lambda p: " kitchen"), tokenizer))
    evaluate([model], groups, tmp_path / "out")
    with pytest.raises(ValueError, match="different prompt"):
        evaluate([model], groups, tmp_path / "out", prompt="babilong")


def test_retriever_hook_shortens_the_context(tmp_path, tokenizer, groups) -> None:
    fake = FakeLM(tokenizer, lambda p: " kitchen")
    evaluate(
        [Candidate("m+RAG", lambda: (fake, tokenizer))],
        groups,
        tmp_path / "out",
        retriever=lambda row: row["input"].split(". ", 1)[1],
    )
    assert fake.prompts and all("Story" not in p and "Mary went to the" in p for p in fake.prompts)
    # A retriever may return the row (as lm2.baselines.rag does); only its input is taken.
    fake = FakeLM(tokenizer, lambda p: " kitchen")
    results = evaluate(
        [Candidate("m+RAG", lambda: (fake, tokenizer))],
        groups,
        tmp_path / "out2",
        retriever=lambda row: {"input": "Mary went to the kitchen.", "kept": [1]},
    )
    assert set(fake.prompts) == {format_plain({"input": "Mary went to the kitchen.", "question": q}) for q in
                                 ("Where is Mary?", "How many objects is Mary carrying?")}  # fmt: skip
    assert results["count"]["0k"]["m+RAG"] == {"qa1": 4, "qa7": 2}


def test_missing_task_or_length_is_a_clear_error(tmp_path) -> None:
    path = _write_jsonl(
        tmp_path / "rows.jsonl", [_row("qa1", "0k", 0, "kitchen"), _row("qa2", "1k", 0, "garden")]
    )
    with pytest.raises(ValueError, match=r"no qa1 rows at length 1k; qa1 has lengths 0k"):
        load_rows([path], tasks=["qa1"], lengths=["1k"])
    with pytest.raises(ValueError, match=r"no qa3 rows .*tasks present: qa1, qa2"):
        load_rows([path], tasks=["qa3"], lengths=["0k"])
    with pytest.raises(ValueError, match=r"no rows at length 2k; lengths present: 0k, 1k"):
        load_rows([path], lengths=["2k"])
    # Unasked dimensions take what the data has: no error for the sets a sparse grid lacks.
    assert sorted(load_rows([path])) == [("qa1", "0k"), ("qa2", "1k")]
    assert sorted(load_rows([path], tasks=["qa2"])) == [("qa2", "1k")]
    assert sorted(load_rows([path], lengths=["0k"])) == [("qa1", "0k")]
    with pytest.raises(ValueError, match="unknown bAbI task"):
        load_rows([path], tasks=["qa99"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "question": "q", "task": "qa1", "length": "0k"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: row lacks target"):
        load_rows([bad])
    with pytest.raises(FileNotFoundError, match="data not found"):
        load_rows([tmp_path / "nope"])


def test_length_labels() -> None:
    # The project's convention (lm2 data babilong): k = 1000 tokens.
    assert [length_label(x) for x in ("0k", "1K", 1000, "4000", 0, "128k", 500, 1024)] == [
        "0k", "1k", "1k", "4k", "0k", "128k", "500", "1024"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="bad length"):
        length_label("long")


def test_published_layout_parquet_json_and_save_to_disk(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    records = [{"input": f"ctx {i}", "question": "Where is Mary?", "target": "garden"} for i in range(3)]
    root = tmp_path / "babilong"
    (root / "0k").mkdir(parents=True)
    (root / "0k" / "qa1.json").write_text(json.dumps(records))
    (root / "1k").mkdir()
    pq.write_table(pa.Table.from_pylist(records), root / "1k" / "qa1-00000-of-00001.parquet")
    (root / "2k" / "qa1").mkdir(parents=True)  # what datasets' save_to_disk writes
    with pa.OSFile(str(root / "2k" / "qa1" / "data-00000-of-00001.arrow"), "wb") as sink:
        table = pa.Table.from_pylist(records)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (root / "2k" / "qa1" / "dataset_info.json").write_text("{}")
    (root / "2k" / "qa1" / "state.json").write_text("{}")
    (root / "data" / "qa2").mkdir(parents=True)  # the hub's data/<task>/<length>.json
    (root / "data" / "qa2" / "4k.json").write_text(json.dumps(records))
    groups = load_rows([root])
    assert sorted(groups) == [("qa1", "0k"), ("qa1", "1k"), ("qa1", "2k"), ("qa2", "4k")]
    assert sorted(load_rows([root], tasks=["qa2"])) == [("qa2", "4k")]
    for rows in groups.values():
        assert [r["input"] for r in rows] == ["ctx 0", "ctx 1", "ctx 2"]
        assert len({r["id"] for r in rows}) == 3


def test_babi_files_give_0k_rows() -> None:
    folder = shared_path("babi", "en-train")
    groups = load_rows([folder], tasks=["qa1", "qa8"], samples=7)
    assert sorted(groups) == [("qa1", "0k"), ("qa8", "0k")]
    row = groups[("qa1", "0k")][0]
    assert row["question"] == "Where is Mary?" and row["target"] == "bathroom"
    assert row["input"] == "Mary moved to the bathroom. John went to the hallway."
    assert all(len(rows) == 7 for rows in groups.values())


def test_prompt_layouts() -> None:
    row = {
        "input": "Mary went to the garden.",
        "question": "Where is Mary?",
        "target": "garden",
        "task": "qa1",
    }
    plain = format_plain(row)
    assert (
        plain.endswith("Question: Where is Mary?\nAnswer:")
        and "<context>\nMary went to the garden.\n</context>" in plain
    )
    full = format_babilong(row)
    # instruction, examples, post-prompt, then the context and the question, in that order
    assert full.index("<example>") < full.index("single word") < full.rindex("<context>\nMary went")
    assert full.endswith("Question: Where is Mary?\nAnswer:")
    assert full.count("<example>") == 2
    assert format_babilong({**row, "task": "qa15"}).count("<example>") == 0  # generic instruction
    assert answer_text(row) == " garden"
    with pytest.raises(ValueError, match="valid formats: babilong, plain"):
        get_prompt_format("chat")


def test_cli_on_real_babi_with_a_tiny_llama(tmp_path) -> None:
    folder = shared_path("babi", "en-train")
    llama = make_checkpoint(tmp_path / "llama")
    lm2 = make_checkpoint(tmp_path / "lm2", family="lm2")
    out = tmp_path / "out"
    args = ["eval", "babilong", "--model", f"{llama},{lm2}", "--data", str(folder), "--tasks", "qa1,qa7"]
    args += ["--samples", "2", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--batch-size", "3"]) == 0
    preds = read_predictions(out / "predictions.jsonl")
    assert len(preds) == 8 and {p["model"] for p in preds} == {"llama", "lm2"}
    md = (out / "results.md").read_text()
    assert md.index("| llama |") < md.index("| lm2 |")

    # Batched, left-padded greedy generation gives the same answers as one prompt at a time.
    groups = load_rows([folder], tasks=["qa1", "qa7"], samples=2)
    prompts = [format_plain(r) for rows in groups.values() for r in rows]
    for ckpt in (llama, lm2):
        model, tok = load_model_and_tokenizer(ckpt, "cpu")
        assert generate_answers(model, tok, prompts) == [
            generate_answers(model, tok, [p])[0] for p in prompts
        ]

    assert main([*args, "--out", str(out), "--lengths", "1k"]) == 2  # the bAbI files are 0k only
    assert main([*args, "--out", str(out), "--tasks", "qa21"]) == 2
    assert main([*args, "--out", str(out), "--model", str(tmp_path / "missing")]) == 2


def test_table_marks_cells_with_nothing_scored() -> None:
    results = {
        "tasks": ["qa1"],
        "lengths": ["0k"],
        "models": ["m"],
        "accuracy": {"0k": {"m": {"qa1": float("nan"), "avg": float("nan")}}},
    }
    assert "| m | – | – |" in to_markdown(results)


def test_rag_spec_without_the_baselines_package_is_a_clear_error(monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name == "lm2.baselines.rag":
            raise ModuleNotFoundError(name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(babilong.importlib, "import_module", fake_import)
    with pytest.raises(ValueError, match="needs lm2.baselines.rag"):
        babilong.make_retriever("bm25:k=5")
    retriever = babilong.make_retriever("lm2.data.prompts:format_plain")
    assert retriever is format_plain


def test_sets_built_by_lm2_data_babilong(tmp_path, tokenizer) -> None:
    babi = shared_path("babi", "en-train")
    tokenizer.save_pretrained(tmp_path / "tok")
    build = ["data", "babilong", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "sets")]
    build += ["--tasks", "qa1,qa8", "--lengths", "0k,1k", "--samples", "3", "--babi", str(babi)]
    assert main(build) == 0
    groups = load_rows([tmp_path / "sets"], tasks=["qa1", "qa8"], lengths=["0k", "1k"])
    assert sorted(groups) == [("qa1", "0k"), ("qa1", "1k"), ("qa8", "0k"), ("qa8", "1k")]
    assert all(len(rows) == 3 for rows in groups.values())
    assert len(tokenizer(groups[("qa1", "1k")][0]["input"])["input_ids"]) > 500  # facts hidden in a haystack
    oracle = Candidate("oracle", lambda: (FakeLM(tokenizer, _oracle(groups)), tokenizer))
    results = evaluate([oracle], groups, tmp_path / "out", prompt="babilong")
    assert all(results["accuracy"][n]["oracle"]["avg"] == 100.0 for n in ("0k", "1k"))


@pytest.mark.parametrize("family", ["llama", "lm2"])
def test_prompts_read_in_chunks_get_the_answers_of_one_call(tmp_path, groups, family) -> None:
    """--chunk-tokens: a prompt longer than the chunk is read in pieces with the cache carried (transformers'
    cache for Llama, LM2's own), then answered from it: the predictions of one call, with reading speed."""
    ckpt = make_checkpoint(tmp_path / family, family=family)
    candidates = [Candidate(family, lambda: load_model_and_tokenizer(ckpt, "cpu"))]
    whole = evaluate(candidates, groups, tmp_path / "whole", batch_size=3, chunk_tokens=None)

    def predictions(out: Path) -> dict:
        return {(r["task"], r["length"], r["id"]): r["prediction"] for r in read_predictions(out / "predictions.jsonl")}

    # The prompts are 37-44 tokens: every one goes through the chunks, cut at 5, 7 or 10 (segments of 8).
    for chunk in (5, 7, 10):
        out = tmp_path / f"chunks-{chunk}"
        chunked = evaluate(candidates, groups, out, batch_size=3, chunk_tokens=chunk)
        assert predictions(out) == predictions(tmp_path / "whole")
        assert chunked["accuracy"] == whole["accuracy"]
        assert chunked["speed"][family]["tokens"] == whole["speed"][family]["tokens"] > 11 * 36
    assert len(set(predictions(tmp_path / "whole").values())) > 1
    assert "## reading speed" in (tmp_path / "whole" / "results.md").read_text()
    assert json.loads((tmp_path / "whole" / "results.json").read_text())["speed"][family]["tokens_per_second"] > 0
