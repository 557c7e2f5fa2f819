"""The length curriculum: a stage ends at its step budget or as soon as a validation metric meets its
``advance_when``, the next starts from there, and a run killed anywhere resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lm2.run_folder import RunFolder, list_checkpoints
from lm2.train.config import load_config
from lm2.train.trainer import Trainer
from tests.test_generated_data import word_tok  # noqa: F401  (the fixture)
from tests.test_train_helpers import tiny_lm2, write_config


def _config(tmp_path: Path, tokenizer: Path, stages: list[dict], **train) -> Path:
    return write_config(
        tmp_path / "run.yaml",
        model=tiny_lm2(attention_window=16, segment_length=8),
        data={"kind": "generate", "tokenizer": str(tokenizer), "valid_samples": 4,
              "generate": {"tasks": "qa1", "filler": [0, 16], "facts": [1, 2], "valid_filler": [0, 16]}},
        curriculum=stages,
        optim={"lr": 1e-3, "warmup_steps": 1},
        train={"batch_size": 4, "log_every": 1, "eval_every": 2, "save_every": None, "progress": False,
               "keep_last": 20, **train},
    )  # fmt: skip


def _records(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in RunFolder(out).records()]


def _killed_after(run: Path, step: int, out: Path) -> Path:
    """``run``'s folder as a kill after its checkpoint of ``step`` leaves it: the checkpoints up to it."""
    shutil.copytree(run, out, symlinks=True)
    for ckpt in list_checkpoints(out / "checkpoints"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    return out


def test_a_stage_ends_when_its_metric_is_met_and_the_next_starts_there(tmp_path, word_tok) -> None:  # noqa: F811
    stages = [
        {"name": "near", "steps": 8, "advance_when": "val_loss <= 1000"},  # met at the first validation (step 2)
        {"name": "far", "steps": 3, "advance_when": "val_acc_filler16 >= 2"},  # never met: the budget ends it
    ]
    out = tmp_path / "run"
    Trainer(load_config(_config(tmp_path, word_tok[0], stages)), out).run()
    records = _records(out)
    steps = [(r["step"], r["stage"]) for r in records if "loss" in r]
    assert steps == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    (end,) = [r for r in records if "stage_end" in r]
    assert end["step"] == 2 and end["stage_end"] == 0 and end["name"] == "near" and end["after"] == 2
    assert end["reason"].startswith("val_loss ") and end["reason"].endswith(" <= 1000")
    # each stage's end is a checkpoint the next stage starts from; the last one ends the run
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000005"]


def test_the_last_stage_met_early_ends_the_run(tmp_path, word_tok) -> None:  # noqa: F811
    stages = [{"steps": 2}, {"steps": 9, "advance_when": "val_loss <= 1000"}]
    out = tmp_path / "run"
    Trainer(load_config(_config(tmp_path, word_tok[0], stages)), out).run()
    assert max(r["step"] for r in _records(out)) == 4  # the first validation of stage 1, not its budget of 9


def test_a_run_killed_after_an_early_advance_resumes_exactly(tmp_path, word_tok) -> None:  # noqa: F811
    stages = [{"steps": 10, "advance_when": "val_loss <= 1000"}, {"steps": 5}]
    config = load_config(_config(tmp_path, word_tok[0], stages, save_every=1))
    whole = tmp_path / "whole"
    Trainer(config, whole).run()
    # A kill after the checkpoint of step 4 (two steps into stage 1) loses everything after it.
    killed = _killed_after(whole, 4, tmp_path / "killed")
    resumed = Trainer(config, killed, resume=True)
    assert resumed.step == 4 and resumed.stage_starts == [0, 2] and resumed.position(4) == (1, 2)
    resumed.run()
    assert _records(killed) == _records(whole)
    final = [json.loads((out / "last" / "manifest.json").read_text())["files"] for out in (killed, whole)]
    assert final[0]["model.safetensors"] == final[1]["model.safetensors"]


def test_filler_per_batch_gives_every_row_of_a_step_the_same_length(tmp_path, word_tok) -> None:  # noqa: F811
    config = load_config(_config(tmp_path, word_tok[0], [{"steps": 6}]))
    config.data.generate.filler_range, config.data.generate.filler_per = [0, 200], "batch"
    trainer = Trainer(config, tmp_path / "run")
    widths = []
    for step in range(6):
        (batch,) = trainer.micro_batches(step)
        lengths = (batch.input_ids != trainer.source.data.pad_id).sum(1)
        assert int(lengths.max() - lengths.min()) < 40, lengths  # the same filler; only the facts differ
        widths.append(batch.input_ids.shape[1])
    assert len(set(widths)) > 1  # the length is drawn anew at each step


@pytest.mark.parametrize(
    ("stage", "train", "message"),
    [
        ({"steps": 3, "advance_when": "val_acc >= 0.9"}, {"eval_every": None}, "needs validation during the stage"),
        ({"steps": 3, "advance_when": "val_acc > 0.9"}, {}, "must read 'METRIC >= X'"),
        ({"steps": 3, "advance_when": "loss <= 1"}, {}, "with a validation metric"),
        ({"steps": 3, "advance_when": "val_acc >= nan"}, {}, "must be finite"),
    ],
)
def test_a_bad_advance_rule_is_refused_by_name(tmp_path, word_tok, stage, train, message) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=message):
        load_config(_config(tmp_path, word_tok[0], [stage], **train))


def test_a_rule_on_a_metric_validation_does_not_report_is_refused(tmp_path, word_tok) -> None:  # noqa: F811
    stages = [{"steps": 4, "advance_when": "val_acc_filler999 >= 0.5"}, {"steps": 1}]
    with pytest.raises(ValueError, match="names val_acc_filler999, which validation does not report"):
        Trainer(load_config(_config(tmp_path, word_tok[0], stages)), tmp_path / "run").run()


def test_a_stage_batch_size_sets_its_rows_per_step_and_resumes_exactly(tmp_path, word_tok) -> None:  # noqa: F811
    stages = [{"steps": 2}, {"steps": 3, "batch_size": 2}]
    config = load_config(_config(tmp_path, word_tok[0], stages, save_every=1))
    trainer = Trainer(config, tmp_path / "probe")
    assert [trainer.micro_batches(s)[0].input_ids.shape[0] for s in range(5)] == [4, 4, 2, 2, 2]
    # the stage's rows are the first rows of the batch the run's batch size would draw at that step
    wide = Trainer(load_config(_config(tmp_path, word_tok[0], [{"steps": 2}, {"steps": 3}])), tmp_path / "wide")
    (narrow_batch,), (wide_batch,) = trainer.micro_batches(3), wide.micro_batches(3)
    width = narrow_batch.input_ids.shape[1]
    assert (narrow_batch.input_ids == wide_batch.input_ids[:2, :width]).all()
    whole = tmp_path / "whole"
    Trainer(config, whole).run()
    killed = _killed_after(whole, 3, tmp_path / "killed")
    Trainer(config, killed, resume=True).run()
    assert _records(killed) == _records(whole)
    state = json.loads((whole / "last" / "trainer_state.json").read_text())
    assert state["data_position"]["sequences"] == 4 + 4 + 2 + 2 + 2


def test_a_stage_batch_size_that_does_not_split_is_refused(tmp_path, word_tok) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=r"curriculum\[1\]\.batch_size must be >= 1 and divisible by"):
        load_config(_config(tmp_path, word_tok[0], [{"steps": 2}, {"steps": 3, "batch_size": 3}], grad_accum=2))
