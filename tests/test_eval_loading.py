"""Loading a checkpoint for evaluation: every missing or corrupt file is named in the error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lm2.eval.model_folder import check_checkpoint, load_model_and_tokenizer, resolve_device
from tests.test_eval_fixtures import make_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("load") / "tiny")


@pytest.fixture()
def ckpt(good, tmp_path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "copy"))


def test_loads_model_and_tokenizer(good) -> None:
    model, tokenizer = load_model_and_tokenizer(good, "cpu")
    assert not model.training and model.device.type == "cpu"
    assert tokenizer.pad_token_id is not None


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        check_checkpoint(tmp_path / "nope")


def test_missing_config(ckpt) -> None:
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config.json: missing"):
        check_checkpoint(ckpt)


def test_corrupt_config(ckpt) -> None:
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: corrupt"):
        check_checkpoint(ckpt)


def test_missing_weights(ckpt) -> None:
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights found; expected one of model.safetensors"):
        check_checkpoint(ckpt)


def test_truncated_weights(ckpt) -> None:
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"model.safetensors: (corrupt|truncated)"):
        check_checkpoint(ckpt)


def test_garbage_weights(ckpt) -> None:
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model.safetensors: corrupt"):
        load_model_and_tokenizer(ckpt, "cpu")


def test_missing_shard(ckpt) -> None:
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "lm_head.weight": "model-00001-of-00002.safetensors",
            "x": "model-00002-of-00002.safetensors",
        }
    }
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002.safetensors: missing"):
        check_checkpoint(ckpt)


def test_missing_tokenizer(ckpt) -> None:
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no tokenizer found"):
        check_checkpoint(ckpt)


def test_unknown_architecture_is_named(ckpt) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "model_type": "not-a-model"}))
    with pytest.raises(ValueError, match=r"not-a-model"):
        load_model_and_tokenizer(ckpt, "cpu")


def test_bad_device_and_dtype(good) -> None:
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_model_and_tokenizer(good, "cpu", "fp8")
