"""The run folder of ``lm2 train --out``: its layout, in one place, for training, evaluation, the study and
the report alike.

    OUT/config.yaml                     the run's training config
    OUT/log.jsonl                       one JSON object per logged step and per validation
    OUT/tb/                             TensorBoard events
    OUT/checkpoints/step-NNNNNNNN/      a checkpoint: a Hugging Face model folder (config.json,
                                        model.safetensors, tokenizer files), optimizer.safetensors,
                                        trainer_state.json and, written last, manifest.json (size and
                                        SHA-256 of every other file); built in a hidden .tmp-* folder and
                                        renamed into place when complete
    OUT/last -> checkpoints/step-N      the newest complete checkpoint
    OUT/.lock                           held by the process training into OUT

A checkpoint is *complete* when its manifest exists; the newest complete one is the run's "newest good
step". Nothing here needs torch: reading a run folder is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from lm2.utils.io import atomic_write_text, read_jsonl
from lm2.utils.lock import FolderLock

CHECKPOINTS = "checkpoints"
CONFIG = "config.yaml"
LOG = "log.jsonl"
LAST = "last"
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
OPTIMIZER = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(ValueError):
    """A checkpoint file is missing or damaged; the message names it."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a checkpoint folder named ``step-NNNNNNNN``, else None."""
    m = _STEP_DIR.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_step_dirs(root: str | os.PathLike) -> list[Path]:
    """Every ``step-NNNNNNNN`` folder under ``root``, complete or not, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()), key=lambda p: p.name)


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (those with a manifest) under ``root``, oldest first."""
    return [p for p in list_step_dirs(root) if (p / MANIFEST).is_file()]


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, step: int) -> Path:
    """Record the size and SHA-256 of every file under ``folder`` in ``folder/manifest.json``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "step": step,
        "files": {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files},
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


def verify_checkpoint(path: str | os.PathLike, skip: Collection[str] = ()) -> dict[str, Any]:
    """Check every file of checkpoint ``path`` against its manifest; return the manifest.

    Files named in ``skip`` (e.g. the optimizer state, which evaluation never reads) are not checked.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint file missing: {manifest_path} (an incomplete or foreign checkpoint)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint file corrupt: {manifest_path} ({err})") from err
    for name, info in files.items():
        if name in skip:
            continue
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file missing: {file} (listed in {manifest_path})")
        if file.stat().st_size != info["bytes"] or sha256(file) != info["sha256"]:
            raise CheckpointError(
                f"checkpoint file corrupt: {file} (size or SHA-256 differs from {manifest_path}: it changed "
                "after the save; restore it or use another checkpoint)"
            )
    return manifest


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint ``path`` (step, data position, the run's config, ...)."""
    state_path = Path(path) / STATE
    try:
        return json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint file missing: {state_path}") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint file corrupt: {state_path} ({err})") from err


class RunFolder:
    """``OUT`` of ``lm2 train``, whether a run is writing it or it is only read."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self.config = self.path / CONFIG
        self.log = self.path / LOG
        self.last = self.path / LAST

    @staticmethod
    def holds_run(path: str | os.PathLike) -> bool:
        """Whether ``path`` is a run folder (it has checkpoints/ and is not itself a model folder)."""
        path = Path(path)
        return (path / CHECKPOINTS).is_dir() and not (path / "config.json").is_file()

    def lock(self) -> FolderLock:
        """The lock a training process holds on this folder (acquire it before reading what is there)."""
        return FolderLock(self.path)

    def step_dirs(self) -> list[Path]:
        return list_step_dirs(self.checkpoints)

    def complete_checkpoints(self) -> list[Path]:
        return list_checkpoints(self.checkpoints)

    def newest_checkpoint(self) -> Path:
        """The newest checkpoint, which must be complete: a run whose newest step folder is unfinished (no
        manifest) is refused, never silently read at an older step."""
        steps = self.step_dirs()
        if not steps:
            raise FileNotFoundError(
                f"{self.path} is a training run without checkpoints (no {self.checkpoints}/step-*)"
            )
        if not (steps[-1] / MANIFEST).is_file():
            raise ValueError(
                f"{self.path}: the newest checkpoint {steps[-1].name} has no {MANIFEST} (an unfinished save); "
                f"give the checkpoint to use explicitly, e.g. --model {self.checkpoints / steps[-2].name}"
                if len(steps) > 1
                else f"{self.path}: its only checkpoint {steps[-1].name} has no {MANIFEST} (an unfinished save)"
            )
        return steps[-1]

    def point_last(self, checkpoint: Path) -> None:
        """Make ``OUT/last`` name ``checkpoint`` (a relative link, replaced atomically)."""
        tmp = self.path / f".{LAST}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(checkpoint.relative_to(self.path))
        os.replace(tmp, self.last)

    def repair_last(self) -> None:
        """After a kill between a checkpoint's rename and the link's update, ``OUT/last`` names an older step:
        point it at the newest complete checkpoint again (and drop a link file left half-made)."""
        (self.path / f".{LAST}.tmp").unlink(missing_ok=True)
        complete = self.complete_checkpoints()
        if complete and (not self.last.is_symlink() or self.last.resolve() != complete[-1].resolve()):
            self.point_last(complete[-1])

    def records(self) -> Iterator[dict[str, Any]]:
        """The records of ``OUT/log.jsonl``, in order."""
        return read_jsonl(self.log)

    def cut_log(self, step: int) -> None:
        """Keep the log records up to ``step`` (a resumed run continues the log from there)."""
        if self.log.exists():
            kept = [json.dumps(r) for r in self.records() if r["step"] <= step]
            atomic_write_text(self.log, "".join(line + "\n" for line in kept))


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """The model folder ``path`` names: itself, or for a run folder of ``lm2 train --out`` (or its ``last``
    link) the run's newest complete checkpoint."""
    path = Path(path)
    if path.name == LAST and path.is_symlink() and RunFolder.holds_run(path.parent):
        # a kill between a save's rename and the link's update leaves the link one step behind
        # (or names one deleted since): the run's newest complete checkpoint is what the link stands for
        complete = RunFolder(path.parent).complete_checkpoints()
        if complete:
            return complete[-1]
    if not path.exists():
        raise FileNotFoundError(f"model folder not found: {path}")
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    if not RunFolder.holds_run(path):
        return path
    return RunFolder(path).newest_checkpoint()
