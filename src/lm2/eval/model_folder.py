"""Load a model and its tokenizer from a checkpoint folder, with errors that name the file at fault.

A checkpoint folder is what ``save_pretrained`` writes for the model and the tokenizer: ``config.json``,
the weights (``model.safetensors``, a sharded ``model.safetensors.index.json`` + shards, or
``pytorch_model.bin``) and the tokenizer files (``tokenizer.json`` or ``tokenizer_config.json`` + vocab).
Any Hugging Face causal LM works; LM2 and RMT are registered with the Auto classes by `lm2.models`, which
every lm2 module imports (through the package `lm2`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from lm2.models.loading import check_causal
from lm2.run_folder import (
    MANIFEST,
    OPTIMIZER,
    STATE,
    checkpoint_step,
    resolve_model_dir,
    sha256,
    verify_checkpoint,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

def model_name(path: str | os.PathLike) -> str:
    """The name of a model in tables: ``RUN step N`` for a checkpoint of ``lm2 train``, else the folder name."""
    real = resolve_model_dir(path).resolve()  # OUT/last is a link to OUT/checkpoints/step-N
    step = checkpoint_step(real)
    if step is not None and real.parent.name == "checkpoints":
        return f"{real.parent.parent.name} step {step}"
    return Path(path).name or real.name


def check_checkpoint(path: str | os.PathLike) -> Path:
    """Check that ``path`` holds a loadable model + tokenizer; raise naming the missing or corrupt file.

    ``path`` may be a run folder of ``lm2 train`` (its newest checkpoint is taken); the folder checked is
    returned. A checkpoint with a ``manifest.json`` (as ``lm2 train`` writes) has every file evaluation
    reads checked against the sizes and SHA-256 sums in it.
    """
    path = resolve_model_dir(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: missing (a model folder needs config.json from save_pretrained)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config}: corrupt, not valid JSON ({err})") from err
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{path}: no weights found; expected one of {', '.join(WEIGHT_FILES)}")
    for file in _safetensors_files(weights[0]):
        _check_safetensors(file)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path}: no tokenizer found; expected {' or '.join(TOKENIZER_FILES)} (save the tokenizer "
            "with the model)"
        )
    if (path / MANIFEST).is_file():  # damaged weights would load fine and score nonsense
        verify_checkpoint(path, skip=(OPTIMIZER, STATE))
    return path


def weights_sha256(path: str | os.PathLike) -> str:
    """One SHA-256 for the weights of model folder ``path`` (a run folder: its newest checkpoint), from the
    sums its ``manifest.json`` records when ``lm2 train`` wrote one (checked on loading), else computed.

    What a saved state records of the model that read it: two checkpoints of one config (two steps of a run)
    have the same config fingerprint but not the same weights.
    """
    path = resolve_model_dir(path)
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{path}: no weights found; expected one of {', '.join(WEIGHT_FILES)}")
    files = _safetensors_files(weights[0]) or [weights[0]]
    recorded = {}
    if (path / MANIFEST).is_file():
        recorded = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("files", {})
    h = hashlib.sha256()
    for file in files:
        digest = recorded.get(file.name, {}).get("sha256") or sha256(file)
        h.update(f"{file.name} {digest}\n".encode())
    return h.hexdigest()


def _safetensors_files(weights: Path) -> list[Path]:
    if weights.name == "model.safetensors":
        return [weights]
    if weights.name.endswith(".index.json"):
        try:
            index = json.loads(weights.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ValueError(f"{weights}: corrupt shard index ({err})") from err
        missing = [s for s in shards if not (weights.parent / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{weights.parent / missing[0]}: missing (listed in {weights.name})")
        return [weights.parent / s for s in shards]
    return []


def _check_safetensors(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # reading each tensor catches files cut short after the header
                f.get_slice(key)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{file}: corrupt or truncated safetensors file ({err})") from err
    expected = _safetensors_data_end(file)
    if file.stat().st_size < expected:
        raise ValueError(f"{file}: truncated, {file.stat().st_size} bytes but the header needs {expected}")


def _safetensors_data_end(file: Path) -> int:
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda' or 'cuda:N' checked against this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: lm2 runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this machine's torch sees no CUDA device; use auto or cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    return resolved


def load_model_and_tokenizer(
    path: str | os.PathLike, device: str = "auto", dtype: str = "float32"
) -> tuple[Any, Any]:
    """The model (in eval mode, on ``device``) and tokenizer saved in ``path``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    target = resolve_device(device)  # before any loading: a wrong device is one line, not minutes later
    path = check_checkpoint(path)
    check_causal(json.loads((path / "config.json").read_text(encoding="utf-8")), path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except (ValueError, KeyError) as err:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        raise ValueError(f"{path}: cannot load the model (model_type {model_type!r}): {err}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # tokenizers raises bare Exceptions on corrupt JSON
        raise ValueError(f"{path}: cannot load the tokenizer: {err}") from err
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
            f"{model.config.vocab_size}: they were not trained together (its ids past {model.config.vocab_size - 1} "
            "have no embedding); give the tokenizer saved with the model"
        )
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{path}: the tokenizer has neither a pad nor an eos token; batching needs one")
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(target).eval(), tokenizer
