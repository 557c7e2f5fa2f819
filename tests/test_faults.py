"""The faults a new user hit (issue 9 item 3): each ends in one line naming the problem and the way out,
exit code 2, and nothing lost."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from lm2.cli import main
from lm2.run_folder import CheckpointError, list_checkpoints, verify_checkpoint
from lm2.train.config import load_config
from lm2.train.trainer import Trainer, TrainingDiverged
from tests.test_train_helpers import (
    qa1_rows,
    qa1_run_config,
    write_jsonl,
)


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (to prove nothing was touched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lm2: error")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture()
def run(tmp_path: Path, qa1_tokenizer: Path) -> tuple[Path, Path]:
    """A finished 4-step run with checkpoints at steps 2 and 4: (config, OUT)."""
    config = qa1_run_config(tmp_path, qa1_tokenizer)
    Trainer(load_config(config), tmp_path / "out").run()
    return config, tmp_path / "out"


# -- resuming ------------------------------------------------------------------------------------------


def test_resume_refuses_a_newest_checkpoint_without_manifest_and_keeps_it(
    run: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    config, out = run
    newest = out / "checkpoints" / "step-00000004"
    (newest / "manifest.json").unlink()
    before = _snapshot(out)
    args = ["train", "--config", str(config), "--out", str(out)]
    assert main([*args, "--resume", "--set", "curriculum.0.steps=6"]) == 2
    err = _one_line_error(capsys)
    assert f"the newest checkpoint {newest} has no manifest.json" in err
    assert "to resume from step-00000002" in err
    # A fresh run into the same OUT would overwrite step-00000004 as well: also refused.
    assert main(args) == 2
    assert "already holds checkpoints (step-00000004)" in _one_line_error(capsys)
    assert _snapshot(out) == before  # nothing written, nothing deleted


def test_every_resume_says_which_checkpoint_it_continues_from(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config, out = run
    assert main(["train", "--config", str(config), "--out", str(out), "--resume",
                 "--set", "curriculum.0.steps=6"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"resuming from {out / 'checkpoints' / 'step-00000004'} (step 4 of 6)" in err
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "new"), "--resume"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err


def test_resume_with_another_model_or_tokenizer_names_what_differs(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lm2.data.prompts import answer_text, format_plain
    from lm2.data.tokenizer import save_tokenizer, train_tokenizer

    config, out = run
    before = _snapshot(out)
    args = ["train", "--config", str(config), "--out", str(out), "--resume", "--set"]
    assert main([*args, "model.overrides.hidden_size=64 curriculum.0.steps=6"]) == 2
    err = _one_line_error(capsys)
    assert "the model section differs" in err
    assert "model.overrides.hidden_size: unset in the checkpoint, 64 now" in err

    other = tmp_path / "other-tok"
    texts = [format_plain(r) + answer_text(r) for r in qa1_rows(200, seed=5)]
    save_tokenizer(train_tokenizer(texts, vocab_size=290), other)
    assert main([*args, f"data.tokenizer={other} curriculum.0.steps=6"]) == 2
    err = _one_line_error(capsys)
    assert "the tokenizer differs from the one saved with it" in err and "290 in" in err
    assert _snapshot(out) == before


def test_a_nan_gradient_after_a_resume_names_the_last_good_checkpoint(run: tuple[Path, Path]) -> None:
    config, out = run
    trainer = Trainer(load_config(config, ["curriculum.0.steps=6"]), out, resume=True)
    assert trainer.step == 4
    # The loss stays finite; only the gradient is poisoned (what an overflow in backward leaves).
    trainer.model.model.embed_tokens.weight.register_hook(lambda g: torch.full_like(g, float("nan")))
    with pytest.raises(
        TrainingDiverged, match=r"gradient norm is nan at step 5.*last good checkpoint is .*step-00000004"
    ):
        trainer.run()
    verify_checkpoint(out / "checkpoints" / "step-00000004")


def test_weights_that_overflow_are_not_saved_as_a_good_checkpoint(
    run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out = run
    trainer = Trainer(load_config(config, ["curriculum.0.steps=6"]), out, resume=True)
    real_step = trainer.optimizer.step

    def overflow(*args, **kwargs):  # the update of step 6 is so large the weights become inf
        result = real_step(*args, **kwargs)
        if trainer.step == 5:  # (the step's loss, computed before the update, was finite)
            with torch.no_grad():
                trainer.model.lm_head.weight.fill_(float("inf"))
        return result

    monkeypatch.setattr(trainer.optimizer, "step", overflow)
    with pytest.raises(
        TrainingDiverged, match=r"weights hold NaN/inf after step 6: not saved.*step-00000004"
    ):
        trainer.run()
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002", "step-00000004"]


# -- saving ----------------------------------------------------------------------------------------------


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, qa1_tokenizer: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import lm2.train.checkpoint as checkpoint

    config = qa1_run_config(tmp_path, qa1_tokenizer)
    real_save = checkpoint.save_file
    calls = []

    def disk_full_on_second_save(tensors, path):
        calls.append(path)
        real_save(tensors, path)
        if len(calls) == 2:  # part of the checkpoint landed, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "save_file", disk_full_on_second_save)
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "cannot save the checkpoint of step 4" in err and "No space left on device" in err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step-00000002'}" in err and "--resume" in err
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-00000002"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    verify_checkpoint(out / "checkpoints" / "step-00000002")


def test_out_naming_an_existing_file_is_refused_before_any_work(
    tmp_path: Path, qa1_tokenizer: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.test_eval_fixtures import make_checkpoint

    taken = tmp_path / "taken.txt"
    taken.write_text("keep me\n")
    config = qa1_run_config(tmp_path, qa1_tokenizer)
    assert main(["train", "--config", str(config), "--out", str(taken)]) == 2
    assert f"--out {taken} is a file" in _one_line_error(capsys)
    model = make_checkpoint(tmp_path / "model")
    text = tmp_path / "book.txt"
    text.write_text("Mary moved to the bathroom. " * 10)
    rows = write_jsonl(tmp_path / "rows.jsonl", qa1_rows(2, seed=1))
    build = f"data babilong --tokenizer {model} --tasks qa1 --lengths 0k --samples 1".split()
    assert main([*build, "--out", str(taken)]) == 2
    assert f"{taken} is a file; give a folder" in _one_line_error(capsys)
    for command in (
        ["eval", "ppl", "--data", str(text)],
        ["eval", "babilong", "--data", str(rows)],
        ["eval", "mmlu", "--data", str(tmp_path)],
    ):
        assert main([*command, "--model", str(model), "--out", str(taken / "sub")]) == 2, command
        assert f"{taken} is a file; give a folder" in _one_line_error(capsys)
    assert taken.read_text() == "keep me\n"


# -- evaluation reads what training wrote ---------------------------------------------------------------


def test_eval_checks_the_manifest_of_a_checkpoint(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lm2.eval.model_folder import load_model_and_tokenizer

    _, out = run
    ckpt = tmp_path / "ckpt"
    shutil.copytree(out / "checkpoints" / "step-00000004", ckpt)
    (ckpt / "optimizer.safetensors").unlink()  # evaluation never reads it: no reason to refuse
    load_model_and_tokenizer(ckpt, device="cpu")
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-200:-136] = bytes(64)  # 64 bytes of a tensor overwritten: still a well-formed safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"checkpoint file corrupt: {weights}"):
        load_model_and_tokenizer(ckpt, device="cpu")
    text = tmp_path / "book.txt"
    text.write_text("Mary moved to the bathroom. " * 10)
    assert main(["eval", "ppl", "--model", str(ckpt), "--data", str(text), "--device", "cpu"]) == 2
    assert f"checkpoint file corrupt: {weights}" in _one_line_error(capsys)


def test_a_run_folder_means_its_newest_checkpoint_and_tables_name_the_run(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lm2.eval.model_folder import model_name
    from lm2.run_folder import resolve_model_dir

    _, out = run
    newest = out / "checkpoints" / "step-00000004"
    assert resolve_model_dir(out) == newest
    assert model_name(out) == model_name(out / "last") == model_name(newest) == "out step 4"
    rows = write_jsonl(tmp_path / "test" / "rows.jsonl", qa1_rows(3, seed=9))
    results = tmp_path / "eval"
    assert main(["eval", "babilong", "--model", str(out), "--data", str(rows), "--out", str(results),
                 "--device", "cpu", "--batch-size", "1"]) == 0  # fmt: skip
    assert "| out step 4 |" in (results / "results.md").read_text()
    assert json.loads((results / "results.json").read_text())["models"] == ["out step 4"]
    capsys.readouterr()
    (newest / "manifest.json").unlink()  # an unfinished save is never passed over silently
    assert (
        main(["eval", "babilong", "--model", str(out), "--data", str(rows), "--out", str(tmp_path / "e2")])
        == 2
    )
    err = _one_line_error(capsys)
    assert "step-00000004 has no manifest.json" in err and "step-00000002" in err


# -- BABILong sets ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory: pytest.TempPathFactory):
    from lm2.data.tokenizer import load_tokenizer
    from tests.test_tokenizer import train_small

    return load_tokenizer(train_small(tmp_path_factory.mktemp("small-tok")))


def _build(out: Path, tok, interrupt_at: int | None = None, how: str = "ctrl-c") -> None:
    """Build qa1, qa2 at 0k and 1k (4 files of 3 rows); stop at the ``interrupt_at``-th row if given."""
    from lm2.data import builder as babilong
    from lm2.data.babi.generator import generate_samples
    from lm2.data.background import synthetic_background

    samples = {t: generate_samples(t, 20, 0) for t in ("qa1", "qa2")}
    real_build_row = babilong.build_row
    count = [0]

    def build_row(*args, **kwargs):
        count[0] += 1
        if count[0] == interrupt_at:
            if how == "sigterm":  # what `timeout` or a scheduler sends
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return real_build_row(*args, **kwargs)

    babilong.build_row = build_row
    try:
        babilong.build_babilong(samples, [0, 1000], 3, synthetic_background(3000, seed=0), tok, 0, out,
                                progress=False)  # fmt: skip
    finally:
        babilong.build_row = real_build_row


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_babilong_build_leaves_no_temp_files_and_eval_refuses_it(
    tmp_path: Path, small_tok, how: str, capsys: pytest.CaptureFixture
) -> None:
    from lm2.data.rows import load_rows

    out = tmp_path / "set"
    (out / "0k").mkdir(parents=True)
    (out / "0k" / ".qa1.jsonl.x1y2.tmp").write_text("left by a build killed with SIGKILL")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        _build(out, small_tok, interrupt_at=8, how=how)  # inside the third file
    assert sorted(p.name for p in out.rglob("*.tmp")) == []
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jsonl")) == ["0k/qa1.jsonl", "0k/qa2.jsonl"]
    with pytest.raises(
        ValueError, match=r"unfinished `lm2 data babilong` build \(missing 1k/qa1.jsonl, 1k/qa2.jsonl\)"
    ):
        load_rows([out])
    with pytest.raises(ValueError, match="unfinished"):  # asking only for what exists does not hide it
        load_rows([out], tasks=["qa1"], lengths=["0k"])
    assert (
        main(["eval", "babilong", "--model", str(tmp_path), "--data", str(out), "--out", str(tmp_path / "e")])
        == 2
    )
    assert "run the same command again" in _one_line_error(capsys)
    _build(out, small_tok)  # run again: complete
    assert list(load_rows([out])) == [("qa1", "0k"), ("qa2", "0k"), ("qa1", "1k"), ("qa2", "1k")]
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_a_sparse_grid_from_mixed_sources_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lm2.data.rows import load_rows, missing_sets
    from tests.test_eval_fixtures import make_checkpoint

    a = write_jsonl(tmp_path / "a.jsonl", qa1_rows(1, seed=1) + qa1_rows(1, seed=2, length="1k"))
    b = write_jsonl(tmp_path / "b.jsonl", [{**r, "task": "qa2"} for r in qa1_rows(1, seed=3)])
    assert missing_sets(load_rows([a, b])) == [("qa2", "1k")]
    model = make_checkpoint(tmp_path / "model")
    args = ["eval", "babilong", "--model", str(model), "--data", f"{a},{b}", "--batch-size", "1"]
    assert main([*args, "--out", str(tmp_path / "e1"), "--device", "cpu"]) == 0
    assert "warning: the data has no qa2 at 1k; those cells will be –" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "e2"), "--device", "cpu", "--lengths", "0k"]) == 0
    assert "warning" not in capsys.readouterr().err  # asked only for what exists


# -- model config -----------------------------------------------------------------------------------------


def test_a_segment_longer_than_the_attention_window_is_refused() -> None:
    from lm2 import LM2Config

    with pytest.raises(ValueError, match=r"attention_window \(4\) must be at least segment_length \(8\)"):
        LM2Config.from_preset("tiny", segment_length=8, attention_window=4)
    LM2Config.from_preset("tiny", segment_length=8, attention_window=8)
    LM2Config.from_preset("tiny", segment_length=8, attention_window=4, use_memory=False)  # no segments


def test_a_window_override_when_loading_is_checked_too(tmp_path: Path) -> None:
    from lm2 import LM2Config, LM2ForCausalLM

    LM2ForCausalLM(LM2Config.from_preset("tiny", segment_length=8)).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="must be at least segment_length"):
        LM2ForCausalLM.from_pretrained(tmp_path / "m", attention_window=4)
