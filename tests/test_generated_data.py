"""Training samples generated on the fly (data.kind: generate): layout, determinism, loss, trainer use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lm2.data.babi.generator import generate_stories
from lm2.data.background import synthetic_background
from lm2.data.batch import IGNORE
from lm2.data.generated import GeneratedQA
from lm2.data.tokenizer import save_tokenizer, train_word_tokenizer
from lm2.train.config import FACT_SUBSET_TASKS, GenerateConfig, load_config
from lm2.train.trainer import Trainer
from tests.babi_solvers_1_10 import solve
from tests.test_train_helpers import tiny_lm2, write_config


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory: pytest.TempPathFactory):
    from lm2.data.make import sample_texts

    stories = [
        s for t in ("qa1", "qa2", "qa3", "qa4", "qa9", "qa10") for s in generate_stories(t, 100, seed=0)
    ]
    texts = (
        sample_texts(x for story in stories for x in story.samples()) + synthetic_background(2000).sentences
    )
    folder = save_tokenizer(train_word_tokenizer(texts), tmp_path_factory.mktemp("tok") / "word")
    from lm2.data.tokenizer import load_tokenizer

    return folder, load_tokenizer(folder)


@pytest.fixture(scope="module")
def gen_qa(word_tok) -> GeneratedQA:
    return GeneratedQA(word_tok[1], background_sentences=2000)


def tokens(tok, ids) -> list[str]:
    return tok.convert_ids_to_tokens([int(i) for i in ids])


def test_facts_first_then_exactly_f_filler_tokens_then_the_question(word_tok, gen_qa) -> None:
    tok = word_tok[1]
    g = GenerateConfig(tasks="qa1", filler=[0, 37, 64], facts=[1, 1])
    seen = set()
    for r in range(30):
        (row,) = gen_qa.rows(g, (0, 0, 0, r))
        ((ids, loss, fact),) = gen_qa.encode([[row]])
        toks = tokens(tok, ids)
        assert row["facts"] == [row["input"][: len(row["facts"][0])]] and row["supporting"] == [0]
        end_fact = int(np.flatnonzero(fact)[-1]) + 1
        close = toks.index("/") - 1  # "<" of "</context>"
        assert close - end_fact == row["filler_tokens"] == row["fact_positions"][0]["distance"]
        assert tok.unk_token not in toks
        # the loss is on the answer and the end-of-text token only
        assert tokens(tok, ids[loss]) == [row["target"], tok.eos_token]
        seen.add(row["filler_tokens"])
    assert seen == {0, 37, 64}


def test_samples_are_a_pure_function_of_their_key(gen_qa) -> None:
    g = GenerateConfig(tasks="qa1-qa3", filler=[16, 32], placement="scattered")
    a = gen_qa.batch(g, seed=1, stage=0, step=5, rows=range(8))
    b = gen_qa.batch(g, seed=1, stage=0, step=5, rows=range(8))
    c = gen_qa.batch(g, seed=1, stage=0, step=6, rows=range(8))
    assert a.input_ids.equal(b.input_ids) and a.targets.equal(b.targets) and a.fact_mask.equal(b.fact_mask)
    assert not a.input_ids[:, :20].equal(c.input_ids[:, :20])
    # a row does not depend on the other rows of its batch (processes draw disjoint slices of one batch)
    part = gen_qa.batch(g, seed=1, stage=0, step=5, rows=[3])
    width = part.input_ids.shape[1]
    assert part.input_ids[0].equal(a.input_ids[3, :width]) and (a.targets[3, width:] == IGNORE).all()


def test_filler_range_draws_every_length_in_it(gen_qa) -> None:
    g = GenerateConfig(tasks="qa1", filler_range=[5, 9], facts=[1, 1])
    seen = {gen_qa.rows(g, (0, 0, 0, r))[0]["filler_tokens"] for r in range(60)}
    assert seen == {5, 6, 7, 8, 9}
    assert {r["filler_tokens"] for r in gen_qa.validation_rows(g, 0, 2)} == {5, 9}


def test_scattered_facts_keep_the_minimum_distance(gen_qa) -> None:
    g = GenerateConfig(tasks="qa2", filler=[80], placement="scattered", min_fact_distance=50)
    for r in range(20):
        (row,) = gen_qa.rows(g, (0, 0, 0, r))
        last = max(row["supporting"])
        assert all(p["distance"] >= 50 for p in row["fact_positions"][: last + 1])
        assert row["input_tokens"] == 80 + sum(gen_qa._count(row["facts"]))


@pytest.mark.parametrize("task", FACT_SUBSET_TASKS)
def test_fewer_facts_keep_the_answer(gen_qa, task: str) -> None:
    # the kept facts (the supporting ones + random others, in order) still determine the same answer,
    # by an independent solver that shares no code with the generator
    g = GenerateConfig(tasks=task, filler=[0], facts=[1, 4])
    for r in range(100):
        (row,) = gen_qa.rows(g, (0, 0, 0, r))
        assert len(row["supporting"]) <= len(row["facts"]) <= max(4, len(row["supporting"]))
        ((answer, _),) = solve([*row["facts"], row["question"]])
        assert answer == row["target"]


@pytest.mark.parametrize("task", ["qa2", "qa3"])
def test_story_facts_cut_stories_as_written(gen_qa, task: str) -> None:
    # a curriculum over the story's length for any task: the story's own prefix, so always coherent
    g = GenerateConfig(tasks=task, filler=[0], story_facts=[2, 6])
    for r in range(30):
        (row,) = gen_qa.rows(g, (0, 0, 0, r))
        assert 2 <= len(row["facts"]) <= 6
        ((answer, _),) = solve([*row["facts"], row["question"]])
        assert answer == row["target"]
    story = gen_qa.rows(
        GenerateConfig(tasks="qa1", filler=[0], story_facts=[3, 5], questions="all"), (0, 0, 0, 0)
    )
    told = np.cumsum([len(r["facts"]) for r in story])
    assert told[-1] <= 5 and told[-1] >= 3
    with pytest.raises(ValueError, match="no story among 1000 has a question after 3..3 statements"):
        gen_qa.rows(GenerateConfig(tasks="qa1", filler=[0], story_facts=[3, 3]), (0, 0, 0, 0))


def test_story_mode_asks_every_question_in_place_with_loss_on_every_answer(word_tok, gen_qa) -> None:
    tok = word_tok[1]
    g = GenerateConfig(tasks="qa1", filler=[8], questions="all")
    rows = gen_qa.rows(g, (0, 0, 0, 0))
    assert len(rows) > 1
    ((ids, loss, fact),) = gen_qa.encode([rows])
    assert tokens(tok, ids[loss]) == [t for r in rows for t in (r["target"], tok.eos_token)]
    assert sum(tokens(tok, ids).count(w) for w in ("Question",)) == len(rows)
    statements = [line for story in [rows] for r in story for line in r["facts"]]
    assert int(fact.sum()) == sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in statements)
    answers = solve([x for r in rows for x in (*r["facts"], r["question"])])
    assert [a for a, _ in answers] == [r["target"] for r in rows]


def _generate_config(tmp_path: Path, tokenizer: Path, **generate) -> Path:
    return write_config(
        tmp_path / "run.yaml",
        model=tiny_lm2(attention_window=16, segment_length=8),
        data={"kind": "generate", "tokenizer": str(tokenizer), "valid_samples": 4,
              "generate": {"tasks": "qa1", "filler": [0, 16], "facts": [1, 2], **generate}},
        curriculum=[{"steps": 2, "generate": {"filler": [0]}}, {"steps": 2}],
        optim={"lr": 1e-3, "warmup_steps": 1},
        train={"batch_size": 4, "log_every": 1, "save_every": 4, "progress": False},
    )  # fmt: skip


def test_trainer_draws_generated_batches_per_stage_and_reports_accuracy_per_filler(
    tmp_path, word_tok
) -> None:
    cfg = load_config(_generate_config(tmp_path, word_tok[0], valid_filler=[0, 32]))
    assert cfg.generate_config(0).filler == [0] and cfg.generate_config(1).filler == [0, 16]
    assert cfg.generate_config(0).facts == [1, 2]
    trainer = Trainer(cfg, tmp_path / "run")
    again = Trainer(cfg, tmp_path / "other")
    for step in range(4):
        (a,), (b,) = trainer.micro_batches(step), again.micro_batches(step)
        assert a.input_ids.equal(b.input_ids)  # a resumed run draws the same samples
    (first,) = trainer.micro_batches(0)
    assert first.input_ids.shape[1] < 40  # stage 0: no filler
    trainer.run()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    final = log[-1]
    assert {"val_acc", "val_acc_filler0", "val_acc_filler32"} <= set(final)
    assert len(trainer.source.valid) == 8
    # the memory diagnostics of every logged step: gates on segments with and without a fact, read size
    for record in log:
        if "loss" in record:
            for block in ("block0", "block1"):
                values = record["memory"][block]
                assert {"in_gate_fact", "forget_gate_fact", "read_ratio", "read_ratio_answer"} <= set(values)
                assert all(0 < values[k] < 1 for k in values if "gate" in k) and values["read_ratio"] > 0


def test_memory_report_without_fact_positions_and_without_memory(word_tok, gen_qa) -> None:
    from lm2 import LM2Config, LM2ForCausalLM
    from lm2.data.batch import Batch
    from lm2.train.forward import memory_report

    batch = gen_qa.batch(GenerateConfig(tasks="qa1", filler=[20]), 0, 0, 0, range(4))
    config = LM2Config.from_preset("tiny", vocab_size=len(word_tok[1]))
    report = memory_report(LM2ForCausalLM(config), Batch(batch.input_ids, batch.targets))
    assert set(report) == {"block0", "block1"}
    assert set(report["block0"]) == {"in_gate", "forget_gate", "read_ratio", "read_ratio_answer"}
    vanilla = LM2ForCausalLM(LM2Config.from_preset("tiny", vocab_size=len(word_tok[1]), use_memory=False))
    assert memory_report(vanilla, batch) == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.train=[x.jsonl]",
            "data.kind 'generate' makes its samples: leave data.train and data.valid empty",
        ),
        ("data.generate.placement=last", "data.generate.placement must be one of first, scattered"),
        ("data.generate.min_fact_distance=8", "min_fact_distance (8) exceeds the smallest filler (0)"),
        ("data.generate.facts=[3,1]", "facts must be [lo, hi] with 1 <= lo <= hi"),
        ("data.generate.filler_range=[9,2]", "filler_range must be [lo, hi] with 0 <= lo <= hi"),
        ("data.generate.story_facts=[0,2]", "story_facts must be [lo, hi] with 1 <= lo <= hi"),
        ("data.generate.tasks=qa99", "unknown bAbI task"),
        (
            "data.generate.task_weights=[1,2]",
            "task_weights must be one weight > 0 per task of data.generate.tasks (qa1)",
        ),
        (
            "data.generate.tasks=qa1,qa4 data.generate.task_weights=[1,0]",
            "task_weights must be one weight > 0 per task",
        ),
        (
            "data.generate.tasks=qa1-qa2",
            "facts (keeping a subset of a story's facts) is sound only for tasks",
        ),
        ("curriculum.0.generate.filer=[1]", "unknown config key curriculum[0].generate.filer"),
        ("curriculum.0.lengths=[1k]", "curriculum[0].lengths applies to BABILong rows; use generate.filler"),
        ("data.max_tokens=512", "data.max_tokens applies to rows read from files (data.kind babilong or babi)"),
    ],
)
def test_bad_generate_configs_are_named(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(_generate_config(tmp_path, tmp_path / "tok"), override.split(" "))


def test_task_weights_set_the_training_draw_and_leave_validation_uniform(gen_qa) -> None:
    weighted = GenerateConfig(tasks="qa1,qa4", task_weights=[1, 9])
    drawn = [gen_qa.rows(weighted, (0, 0, step, 0))[0]["task"] for step in range(400)]
    assert 0.85 < drawn.count("qa4") / len(drawn) < 0.95
    uniform = [row["task"] for row in gen_qa.validation_rows(weighted, 0, 400)]
    assert 0.4 < uniform.count("qa4") / len(uniform) < 0.6


def test_built_babilong_rows_mark_their_fact_tokens(word_tok) -> None:
    from lm2.data.babi.generator import generate_samples
    from lm2.data.builder import TokenCounter, build_row, prepare_background
    from lm2.data.qa import QADataset

    tok = word_tok[1]
    counter = TokenCounter(tok)
    bg = prepare_background(synthetic_background(500, seed=0), counter)
    samples = generate_samples("qa1", 3, seed=0)
    rows = [build_row(s, 200, bg, counter, seed=0, sample_id=i) for i, s in enumerate(samples)]
    ds = QADataset(rows, tok)
    batch = ds.collate(range(3))
    for b, row in enumerate(rows):
        marked = tok.convert_ids_to_tokens(batch.input_ids[b][batch.fact_mask[b]].tolist())
        facts = [t for f in row["facts"] for t in tok.tokenize(f)]
        assert marked == facts
    assert (
        QADataset([{k: r[k] for k in ("input", "question", "target")} for r in rows], tok)
        .collate(range(3))
        .fact_mask
        is None
    )


def test_validation_reports_accuracy_per_task_and_maps_verdicts_back_to_their_rows(tmp_path, word_tok) -> None:
    import torch

    from lm2.data.batch import IGNORE
    from lm2.train.sources import answer_accuracy

    cfg = load_config(_generate_config(tmp_path, word_tok[0], tasks="qa1,qa4", valid_filler=[0, 32]))
    source = Trainer(cfg, tmp_path / "run").source
    valid = source.valid
    tasks = [r["task"] for r in valid.rows]
    assert set(tasks) == {"qa1", "qa4"} and source.groups[1] == tasks

    def right(i: int) -> bool:  # a fake model that answers exactly the rows of an odd number of tokens
        return len(valid.examples[i][0]) % 2 == 1

    def score(batch):  # it knows a row by its length (its tokens = the positions up to its last target + 1)
        preds = batch.targets.clone()
        for b, n in enumerate(batch.row_lengths().tolist()):
            if (n + 1) % 2 == 0:
                preds[b] = torch.where(batch.targets[b] != IGNORE, batch.targets[b] + 1, IGNORE)
        return 0.0, preds

    results = answer_accuracy(score, valid, 3, source.groups)
    verdicts = [right(i) for i in range(len(valid))]
    assert results["val_acc"] == sum(verdicts) / len(verdicts)
    for labels in source.groups:
        for group in set(labels):
            hits = [v for v, g in zip(verdicts, labels, strict=True) if g == group]
            assert results[f"val_acc_{group}"] == sum(hits) / len(hits), group
