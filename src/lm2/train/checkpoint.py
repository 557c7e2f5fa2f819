"""Checkpoints of a training run: the tensors saved and loaded to resume bit-identically.

A checkpoint (the layout and its manifest: :mod:`lm2.run_folder`) is a Hugging Face model folder plus
``optimizer.safetensors`` (AdamW moments and RNG states) and ``trainer_state.json`` (step, data
position, gradient-scaler and RNG states, the run's config). It is built in a hidden temporary folder and
renamed into place only when complete, so a kill or a full disk during a save leaves the previous
checkpoints untouched; loading checks the manifest and names any missing or damaged file. No pickle
anywhere: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lm2.run_folder import (
    MANIFEST,
    OPTIMIZER,
    STATE,
    CheckpointError,
    list_checkpoints,
    read_trainer_state,
    step_dir_name,
    verify_checkpoint,
    write_manifest,
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

# ----------------------------------------------------------------------------------------------------
# RNG and optimizer state <-> (tensors, JSON)


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py_version, py_state, py_gauss = meta["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ----------------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(
    root: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root``, then delete all but the newest ``keep_last``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = root / step_dir_name(step)
    if final.exists() and not (final / MANIFEST).is_file():  # not ours to replace: it may hold the only copy
        raise CheckpointError(
            f"{final} exists but is not a complete checkpoint (no {MANIFEST}); move it away or use another --out"
        )
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        opt_tensors, opt_meta = optimizer_state(optimizer)
        rng_tensors, rng_meta = rng_state()
        save_file({**opt_tensors, **rng_tensors}, str(tmp / OPTIMIZER))
        full_state = {**state, "step": step, "optimizer": opt_meta, "rng": rng_meta}
        (tmp / STATE).write_text(json.dumps(full_state, indent=1), encoding="utf-8")
        manifest = write_manifest(tmp, step)
        for p in sorted(p for p in tmp.rglob("*") if p.is_file() and p != manifest) + [manifest]:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (a resumed run re-saving): swap it out whole
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [path / "model.safetensors"]


def load_checkpoint(
    path: str | Path, model: Any, optimizer: torch.optim.Optimizer | None, verify: bool = True
) -> dict[str, Any]:
    """Load weights (and optimizer + RNG state) from checkpoint ``path`` in place; return the trainer state.

    ``verify=False`` skips the manifest check (for a caller that has just run :func:`verify_checkpoint`).
    """
    path = Path(path)
    if verify:
        verify_checkpoint(path)
    weights: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        try:
            weights.update(load_file(str(file)))
        except Exception as err:
            raise CheckpointError(f"checkpoint file unreadable: {file} ({err})") from err
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches: name the first tensor, not torch's multi-line report
        shapes = dict(model.state_dict())
        bad = [k for k, v in weights.items() if k in shapes and shapes[k].shape != v.shape]
        detail = (
            f"{bad[0]} is {tuple(weights[bad[0]].shape)} there and {tuple(shapes[bad[0]].shape)} in the model"
            if bad
            else str(err).splitlines()[0]
        )
        raise CheckpointError(f"checkpoint weights in {path} do not fit the model: {detail}") from None
    loaded = {p.data_ptr() for n, p in model.named_parameters() if n in weights}
    params = dict(model.named_parameters())
    missing = [k for k in result.missing_keys if k not in params or params[k].data_ptr() not in loaded]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint weights in {path} do not fit the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    state = read_trainer_state(path)
    if optimizer is not None:
        opt_path = path / OPTIMIZER
        try:
            tensors = load_file(str(opt_path))
        except Exception as err:
            raise CheckpointError(f"checkpoint file unreadable: {opt_path} ({err})") from err
        load_optimizer_state(
            optimizer, {k: v for k, v in tensors.items() if k.startswith("state.")}, state["optimizer"]
        )
        set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state["rng"])
    return state
