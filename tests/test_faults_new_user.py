"""The faults a new user and an adversarial one hit (issue 20): each is one line naming what is wrong and
the way out (exit code 2, 130 for Ctrl-C), or the right result; none is a traceback or a silent wrong answer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lm2.cli
from lm2.cli import main
from lm2.run_folder import RunFolder, list_checkpoints, resolve_model_dir
from lm2.train.config import load_config
from lm2.train.trainer import Trainer
from tests.test_train_helpers import qa1_rows, qa1_run_config, tiny_lm2, write_config, write_jsonl

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lm2:")]
    assert len(lines) == 1, lines
    return lines[0]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, qa1_tokenizer: Path) -> Path:
    """A finished 2-step run of the tiny LM2: its newest checkpoint."""
    tmp = tmp_path_factory.mktemp("ckpt")
    Trainer(load_config(qa1_run_config(tmp, qa1_tokenizer, steps=2)), tmp / "out").run()
    return resolve_model_dir(tmp / "out")


# -- one writer per folder -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_train_into_a_busy_run_folder_is_refused_and_a_dead_ones_lock_is_taken_over(
    tmp_path: Path, qa1_tokenizer: Path, capsys: pytest.CaptureFixture
) -> None:
    config = qa1_run_config(tmp_path, qa1_tokenizer, steps=100_000, save_every=1)
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "lm2.cli", "train", "--config", str(config), "--out", str(out)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # on a loaded machine the first run may take minutes to start
        while not list_checkpoints(out / "checkpoints") and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert list_checkpoints(out / "checkpoints"), "the first run never saved a checkpoint"
        capsys.readouterr()
        assert main(["train", "--config", str(config), "--out", str(out), "--resume"]) == 2
        err = _one_line_error(capsys)
        assert f"{out} is being written by process {first.pid}" in err and "another --out" in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed run's lock died with it: the next run takes the folder over and resumes
    newest = int(list_checkpoints(out / "checkpoints")[-1].name.removeprefix("step-"))
    steps = f"curriculum.0.steps={newest + 1}"
    assert main(["train", "--config", str(config), "--out", str(out), "--resume", "--set", steps]) == 0


@pytest.mark.slow
def test_a_second_study_into_a_busy_study_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "study"
    first = subprocess.Popen([sys.executable, "-m", "lm2.cli", "reproduce", "--scale", "smoke", "--out", str(out)],
                             cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "units").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (out / "units").exists(), "the first study never started"
        capsys.readouterr()
        assert main(["reproduce", "--scale", "smoke", "--out", str(out)]) == 2
        assert f"{out} is being written by process {first.pid}" in _one_line_error(capsys)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


# -- bounded memory ------------------------------------------------------------------------------------


def test_a_row_longer_than_the_default_bound_is_refused_by_name(tmp_path: Path, qa1_tokenizer: Path) -> None:
    row = {**qa1_rows(1, seed=0)[0], "input": "Mary went to the kitchen. " * 12_000}  # ~80,000 tokens
    data = write_jsonl(tmp_path / "long.jsonl", [*qa1_rows(3, seed=1), row])
    config = write_config(tmp_path / "run.yaml", model=tiny_lm2(),
                          data={"kind": "babilong", "train": [str(data)], "tokenizer": str(qa1_tokenizer)},
                          curriculum=[{"steps": 1}], train={"progress": False})  # fmt: skip
    with pytest.raises(ValueError, match=r"row long:4 \(qa1, length 0k\) has \d+ tokens, more than data.max_tokens = 32768"):
        Trainer(load_config(config), tmp_path / "out")  # refused before any step, not an out-of-memory kill
    assert Trainer(load_config(config, ["data.max_tokens=200000"]), tmp_path / "out2").source  # raised: accepted


# -- rows, files and models checked the same way everywhere ---------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": 5}, "long.jsonl:2: target must be a string, got int 5"),
        ({"question": None}, "long.jsonl:2: question must be a string, got NoneType None"),
        ({"target": " "}, "long.jsonl:2: target is empty"),
        ({"length": None}, "long.jsonl:2: length must be a string or a number"),
    ],
)
def test_a_bad_row_is_refused_naming_file_and_line_in_training_and_evaluation(
    tmp_path: Path, qa1_tokenizer: Path, checkpoint: Path, capsys, change, message
) -> None:
    rows = qa1_rows(3, seed=0)
    rows[1] = {**rows[1], **change}
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    for row in rows:
        row.setdefault("length", "0k")
    config = write_config(tmp_path / "run.yaml", model=tiny_lm2(),
                          data={"kind": "babilong", "train": [str(data)], "tokenizer": str(qa1_tokenizer)},
                          curriculum=[{"steps": 1}], train={"progress": False})  # fmt: skip
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert message in _one_line_error(capsys)
    assert main(["eval", "babilong", "--model", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 2
    assert message in _one_line_error(capsys)


def test_an_empty_rows_file_and_an_empty_mmlu_csv_are_refused(tmp_path: Path, checkpoint: Path, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["eval", "babilong", "--model", str(checkpoint), "--data", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "empty.jsonl: no rows (the file is empty)" in _one_line_error(capsys)
    (tmp_path / "mmlu" / "dev").mkdir(parents=True)
    (tmp_path / "mmlu" / "dev" / "anatomy_dev.csv").write_text("")
    assert main(["eval", "mmlu", "--model", str(checkpoint), "--data", str(tmp_path / "mmlu"), "--split", "dev",
                 "--shots", "0"]) == 2  # fmt: skip
    assert "anatomy_dev.csv: no questions (the file is empty)" in _one_line_error(capsys)


def test_a_cuda_device_on_a_cpu_only_torch_is_refused_by_every_command(
    tmp_path: Path, checkpoint: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    book = tmp_path / "book.txt"
    book.write_text("Mary went to the kitchen. " * 50)
    for args in (["eval", "ppl", "--data", str(book)], ["eval", "mmlu", "--data", str(tmp_path)],
                 ["analyze", "memory", "--text", "hello", "--out", str(tmp_path / "a")]):  # fmt: skip
        assert main([*args, "--model", str(checkpoint), "--device", "cuda"]) == 2, args
        assert "--device cuda: this machine's torch sees no CUDA device; use auto or cpu" in _one_line_error(capsys)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(
    tmp_path: Path, checkpoint: Path, capsys
) -> None:
    from lm2.data.tokenizer import save_tokenizer, train_tokenizer

    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    (model / "manifest.json").unlink()  # a hand-assembled folder, not a checkpoint of lm2 train
    texts = [f"word{i} and more word{i * 7} text" for i in range(3000)]
    save_tokenizer(train_tokenizer(texts, vocab_size=1000), model)
    book = tmp_path / "book.txt"
    book.write_text("Mary went to the kitchen. " * 50)
    assert main(["eval", "ppl", "--model", str(model), "--data", str(book)]) == 2
    err = _one_line_error(capsys)
    assert "tokens but the model's vocabulary has" in err and "give the tokenizer saved with the model" in err


def test_a_masked_language_model_is_refused_as_a_causal_one(tmp_path: Path, checkpoint: Path, capsys) -> None:
    from transformers import BertConfig, BertForMaskedLM

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=400, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(bert)  # fmt: skip
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, bert / name)
    book = tmp_path / "book.txt"
    book.write_text("Mary went to the kitchen. " * 50)
    assert main(["eval", "ppl", "--model", str(bert), "--data", str(book)]) == 2
    assert "a BertForMaskedLM, not a causal language model" in _one_line_error(capsys)


def test_lm2_prepare_refuses_binary_input_and_clears_a_killed_runs_temporary_shard(
    tmp_path: Path, qa1_tokenizer: Path, capsys
) -> None:
    png = tmp_path / "figure.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert main(["prepare", "--inputs", str(png), "--tokenizer", str(qa1_tokenizer), "--out", str(tmp_path / "s")]) == 2
    assert "figure.png: not a text file (it holds binary data)" in _one_line_error(capsys)
    out = tmp_path / "shards"
    out.mkdir()
    (out / ".shard-00000.bin.k2j4.tmp").write_bytes(b"half a shard")  # what a kill during a write leaves
    book = tmp_path / "book.txt"
    book.write_text("Mary went to the kitchen. " * 50)
    assert main(["prepare", "--inputs", str(book), "--tokenizer", str(qa1_tokenizer), "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))


# -- configs ---------------------------------------------------------------------------------------------


def test_a_key_given_twice_in_a_config_is_refused(tmp_path: Path, qa1_tokenizer: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{kind: babilong, tokenizer: {qa1_tokenizer}}}\noptim: {{lr: 1.0e-3, lr: 3.0e-3}}\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "run.yaml:2: the key 'lr' is given twice in one mapping" in _one_line_error(capsys)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_learning_rate_is_refused_by_name(tmp_path: Path, qa1_tokenizer: Path, value: str) -> None:
    with pytest.raises(ValueError, match="optim.lr must be a finite number"):
        load_config(qa1_run_config(tmp_path, qa1_tokenizer), [f"optim.lr={value}"])


def test_lm2_overrides_on_another_family_are_refused_by_name(tmp_path: Path, qa1_tokenizer: Path, capsys) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(llama)  # fmt: skip
    data = write_jsonl(tmp_path / "train.jsonl", qa1_rows(8, seed=0))
    config = write_config(tmp_path / "run.yaml",
                          model={"family": "auto", "pretrained": str(llama), "overrides": {"memory_slots": 8}},
                          data={"kind": "babilong", "train": [str(data)], "tokenizer": str(qa1_tokenizer)},
                          curriculum=[{"steps": 1}], train={"progress": False})  # fmt: skip
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "model.overrides.memory_slots is not a field of the 'llama' config" in _one_line_error(capsys)


# -- interrupts and kills --------------------------------------------------------------------------------


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def params(preset: str = "tiny") -> None:
        """Stand-in for a command the user interrupts.

        Args:
            preset: unused.
        """
        raise KeyboardInterrupt

    monkeypatch.setitem(lm2.cli.COMMANDS, "params", params)
    assert main(["params"]) == 130
    assert _one_line_error(capsys).startswith("lm2: interrupted")


def test_last_names_the_newest_complete_checkpoint_after_a_kill_between_save_and_link(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    out = tmp_path / "out"
    config = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=4))
    Trainer(config, out).run()
    folder = RunFolder(out)
    folder.point_last(folder.complete_checkpoints()[0])  # the link one save behind, as a kill leaves it
    (out / ".last.tmp").symlink_to("checkpoints")  # and a half-made link beside it
    assert resolve_model_dir(out / "last") == folder.complete_checkpoints()[-1]  # readers take the newest
    (out / "last").unlink()
    (out / "last").symlink_to("checkpoints/step-00000001")  # a checkpoint deleted since: a dangling link
    assert resolve_model_dir(out / "last") == folder.complete_checkpoints()[-1]
    Trainer(load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=5)), out, resume=True).run()
    assert (out / "last").resolve() == folder.complete_checkpoints()[-1].resolve()
    assert not (out / ".last.tmp").exists()


# -- the study ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_folder_copied_or_moved_replots_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    from lm2.commands.reproduce import reproduce

    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    reproduce(out=first, scale="smoke", only="table1,fig6")
    copy = tmp_path / "copy"
    shutil.copytree(first, copy, symlinks=True)
    (copy / "report.md").unlink()
    reproduce(out=copy, replot=True)  # every path in results.json is relative to the study folder
    report = (copy / "report.md").read_text()
    links = [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line and ".png" in line]
    assert links and all((copy / link).is_file() for link in links), links
    assert str(first) not in report and str(first) not in (copy / "results.json").read_text()
    alone = tmp_path / "alone"  # results.json kept without its units (as a report saved in a repository)
    alone.mkdir()
    shutil.copy(first / "results.json", alone)
    reproduce(out=alone, replot=True)
    report = (alone / "report.md").read_text()
    links = [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line and ".png" in line]
    assert links and all((alone / link).is_file() for link in links), links
    assert "The heatmaps are not drawn: their source" in report and (alone / "report.html").is_file()
    assert "(not in this folder: results.json → scale_config holds it)" in report
    moved = tmp_path / "moved"
    first.rename(moved)
    capsys.readouterr()
    reproduce(out=moved, scale="smoke", only="table1,fig6")
    assert "ran 0" in capsys.readouterr().out  # every unit kept at its new place


def test_a_study_checks_its_inputs_and_extras_before_the_first_unit(tmp_path: Path, monkeypatch, capsys) -> None:
    import importlib.util

    from lm2.shipped import SCALES

    bad = tmp_path / "bad.yaml"
    bad.write_text((SCALES / "smoke.yaml").read_text().replace('ppl_data: "synthetic:3"', f"ppl_data: {tmp_path}/no-book.txt"))
    assert main(["reproduce", "--scale", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert "table2.ppl_data: " in _one_line_error(capsys) and not (tmp_path / "s" / "units").exists()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["reproduce", "--scale", "smoke", "--out", str(tmp_path / "s2")]) == 2
    assert "matplotlib, which is not installed: pip install 'lm2[plots]'" in _one_line_error(capsys)
    assert not (tmp_path / "s2").exists()


def test_replot_of_a_results_file_of_another_shape_is_one_line(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "results.json").write_text(json.dumps({"scale": "smoke", "table1": [1, 2]}))
    assert main(["reproduce", "--out", str(tmp_path), "--replot"]) == 2
    assert "results.json: not a results.json of lm2 reproduce" in _one_line_error(capsys)
