"""End-to-end runs of ``lm2 train``: it learns qa1, SIGKILL + --resume is bit-identical, torchrun DDP works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm2.run_folder import RunFolder, list_checkpoints
from lm2.train.config import load_config
from lm2.train.trainer import Trainer
from tests.test_train_helpers import make_qa1_tokenizer, qa1_rows, tiny_lm2, write_config, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qa1_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_qa1_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def _env() -> dict[str, str]:
    """The subprocess environment: this checkout's package, one thread (identical numerics in every run)."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _train_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lm2.cli", "train", "--config", str(config), "--out", str(out), *extra]


def _losses(out: Path) -> list[dict]:
    """The deterministic part of the training log (timings dropped)."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in RunFolder(out).records()]


def test_tiny_lm2_learns_qa1_well_above_chance(tmp_path: Path, qa1_tokenizer: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", qa1_rows(2000, seed=1))
    valid = write_jsonl(tmp_path / "valid.jsonl", qa1_rows(200, seed=2))  # unseen stories
    config = write_config(
        tmp_path / "run.yaml",
        model=tiny_lm2(hidden_size=64, intermediate_size=128, segment_length=32),
        data={"kind": "babilong", "train": [str(train)], "valid": [str(valid)], "tokenizer": str(qa1_tokenizer),
              "valid_samples": 200},
        curriculum=[{"steps": 110}],
        optim={"lr": 6e-3, "warmup_steps": 20},
        train={"batch_size": 16, "log_every": 20, "save_every": None, "progress": False},
    )  # fmt: skip
    metrics = Trainer(load_config(config), tmp_path / "out").run()
    # chance is 1/6 (six rooms; 0.3 is 5 standard deviations above it on 200 questions); 100 steps
    # measured 0.41 here
    assert metrics["val_acc"] >= 0.3, metrics
    assert list_checkpoints(tmp_path / "out" / "checkpoints")  # the final step is always saved


def test_sigkill_then_resume_gives_exactly_the_uninterrupted_loss_curve(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", qa1_rows(48, seed=0))
    config = write_config(
        tmp_path / "run.yaml",
        model=tiny_lm2(),
        data={"kind": "babilong", "train": [str(data)], "tokenizer": str(qa1_tokenizer)},
        curriculum=[{"steps": 5}, {"steps": 7}],  # the kill lands in stage 0, the resume crosses into stage 1
        optim={"lr": 3e-3, "warmup_steps": 3},
        train={
            "batch_size": 8,
            "grad_accum": 2,
            "log_every": 1,
            "save_every": 3,
            "keep_last": 5,
            "progress": False,
        },
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = subprocess.Popen(_train_cmd(config, whole), env=_env(), stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_train_cmd(config, killed), env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        not list_checkpoints(killed / "checkpoints") and time.monotonic() < deadline and victim.poll() is None
    ):
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(list_checkpoints(killed / "checkpoints")) < 4  # it really stopped part-way

    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    resumed = subprocess.run(
        _train_cmd(config, killed, "--resume"), env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr

    assert _losses(killed) == _losses(whole)
    assert [r["step"] for r in _losses(whole)] == list(range(1, 13))
    final = [json.loads((out / "last" / "manifest.json").read_text())["files"] for out in (killed, whole)]
    assert final[0]["model.safetensors"] == final[1]["model.safetensors"]  # bit-identical weights
    assert final[0]["optimizer.safetensors"] == final[1]["optimizer.safetensors"]


def test_torchrun_two_processes_match_one_and_fail_honestly(tmp_path: Path, qa1_tokenizer: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", qa1_rows(64, seed=0))
    sections = dict(
        model=tiny_lm2(),
        data={"kind": "babilong", "train": [str(data)], "tokenizer": str(qa1_tokenizer)},
        curriculum=[{"steps": 4}],
        optim={"lr": 3e-3, "warmup_steps": 2},
        train={"batch_size": 8, "grad_accum": 2, "log_every": 1, "save_every": None, "progress": False},
    )
    config = write_config(tmp_path / "run.yaml", **sections)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = subprocess.run(
        [*torchrun, "-m", "lm2.cli", "train", "--config", str(config), "--out", str(tmp_path / "ddp")],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    Trainer(load_config(config), tmp_path / "single").run()
    ddp, single = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert [r["step"] for r in ddp] == [1, 2, 3, 4]
    # same global batch, same mean-over-tokens loss: equal up to float summation order
    for a, b in zip(ddp, single, strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)

    sections["data"] = {**sections["data"], "train": [str(tmp_path / "missing.jsonl")]}
    bad = write_config(tmp_path / "bad.yaml", **sections)
    run = subprocess.run(
        [*torchrun, "-m", "lm2.cli", "train", "--config", str(bad), "--out", str(tmp_path / "bad")],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0
    assert "missing.jsonl" in run.stderr
