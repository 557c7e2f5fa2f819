"""The training loop: ``lm2 train --config configs/X.yaml --out DIR [--set k=v ...] [--resume]``.

One optimizer step = ``train.batch_size`` sequences (``curriculum[i].batch_size`` in a stage that sets
it), split evenly over the processes (torchrun) and then over ``train.grad_accum`` micro-batches on each
(or, with ``train.micro_batch_tokens``, into micro-batches of rows of similar length, so a batch of
short and long stories is not padded to its longest). The loss is the mean cross-entropy over every
target token of the step (all processes together), so the step's gradient does not depend on how the
batch was split. Learning rate: linear warmup, then cosine decay to ``lr * min_lr_ratio``.

Truncated backpropagation through segments (``train.tbptt_segments = k``): a sequence is fed in pieces
of k * ``config.segment_length`` tokens, each piece continuing from the previous one's
``past_key_values`` (for LM2 the memory state and the attention keys/values). After each piece the
cache is detached, so the loss of a piece backpropagates through that piece only: into its k memory
writes and attention over its own tokens, never into earlier pieces. The forward values are exactly
those of one pass over the whole sequence (the model's chunking invariance); only the gradient is
truncated. Pieces without any target token (the long context before a BABILong answer) run without
autograd at all, so activation memory is bounded by one piece. Without the option the whole sequence is
one forward and gradients flow through every memory write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from lm2.data.batch import IGNORE, Batch, split_by_length
from lm2.run_folder import MANIFEST, CheckpointError, RunFolder, read_trainer_state, verify_checkpoint
from lm2.train.checkpoint import load_checkpoint, save_checkpoint
from lm2.train.config import Config
from lm2.train.forward import memory_report, run_pieces
from lm2.train.models import build_model, load_tokenizer
from lm2.train.sources import make_source
from lm2.utils.io import atomic_write_text


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


def lr_at(step: int, total: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``lr`` down to ``lr * min_ratio`` at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# ----------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    def __init__(self, config: Config, out: str | Path, resume: bool = False) -> None:
        self.cfg, self.out = config, Path(out)
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        r = config.train
        if r.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        use_cuda = r.device == "cuda" or (r.device == "auto" and torch.cuda.is_available())
        if self.distributed:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if use_cuda:
                torch.cuda.set_device(local)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if use_cuda else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        else:
            self.rank, self.world = 0, 1
            self.device = torch.device("cuda" if use_cuda else "cpu")
        self.main = self.rank == 0
        for name, size in [("train.batch_size", r.batch_size)] + [
            (f"curriculum[{i}].batch_size", s.batch_size) for i, s in enumerate(config.curriculum) if s.batch_size
        ]:
            if size % (self.world * r.grad_accum):
                raise ValueError(
                    f"{name} ({size}) must be divisible by processes x grad_accum ({self.world} x {r.grad_accum})"
                )
        self.micro = r.batch_size // (self.world * r.grad_accum)
        if r.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[r.precision]
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run (it will be created)")
        self.folder = RunFolder(self.out)
        # One writer per run folder: a second `lm2 train` into it is told so before it reads anything there.
        self.lock = self.folder.lock()
        if self.main:
            self.lock.acquire()
        try:
            self._setup(resume)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, resume: bool) -> None:
        config, r = self.cfg, self.cfg.train
        self.ckpt_root = self.folder.checkpoints
        # Every step folder counts, complete or not: a new run must never overwrite one.
        existing = self.folder.step_dirs()
        if existing and not resume:
            raise ValueError(
                f"{self.out} already holds checkpoints ({existing[-1].name}); pass --resume or another --out"
            )

        random.seed(r.seed)
        np.random.seed(r.seed)
        torch.manual_seed(r.seed)
        tok_path = config.data.tokenizer or config.model.pretrained
        self.tokenizer = load_tokenizer(tok_path)
        self.model = build_model(config.model, self.tokenizer).to(self.device)
        if len(self.tokenizer) > self.model.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the model's vocab_size is "
                f"{self.model.config.vocab_size}"
            )
        self.source = make_source(config, self.tokenizer)

        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=tuple(o.betas), eps=o.eps,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler("cuda") if r.precision == "fp16" else None
        self.step = 0
        # The global step at which each curriculum stage began, as far as known: a stage that ends early (its
        # advance_when met) records where the next began; past the last entry stages follow their budgets.
        self.stage_starts = [0]
        self.resumed_from: Path | None = None
        if resume and existing:
            self._resume(existing[-1])
        elif resume and self.main:
            print(f"lm2 train: no checkpoint in {self.ckpt_root}: starting from step 0", file=sys.stderr)
        self.ddp = None
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.piece_len = self._piece_len()

    # -- setup ---------------------------------------------------------------------------------------

    def _piece_len(self) -> int | None:
        k = self.cfg.train.tbptt_segments
        if k is None:
            return None
        seg = getattr(self.model.config, "segment_length", None)
        if not seg:
            raise ValueError(
                f"train.tbptt_segments needs a model with config.segment_length (memory segments); "
                f"{type(self.model).__name__} has none"
            )
        return k * int(seg)

    def _resume(self, path: Path) -> None:
        """Continue from ``path``, the newest step folder; everything is checked before any weight loads."""
        if not (path / MANIFEST).is_file():
            # Never fall back silently to an older checkpoint: training on would overwrite this folder.
            older = self.folder.complete_checkpoints()
            way_out = (
                f"move it out of {self.ckpt_root} to resume from {older[-1].name}"
                if older
                else "move it away"
            )
            raise CheckpointError(
                f"cannot resume: the newest checkpoint {path} has no {MANIFEST} (an unfinished or damaged "
                f"save); nothing was changed: {way_out}, or train into another --out"
            )
        verify_checkpoint(path)
        state = read_trainer_state(path)
        self._check_resumable(path, state)
        load_checkpoint(path, self.model, self.optimizer, verify=False)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.stage_starts = list(state.get("data_position", {}).get("stage_starts", [0]))
        self.resumed_from = path
        if self.main:
            print(
                f"lm2 train: resuming from {path} (step {self.step} of {self.cfg.total_steps})",
                file=sys.stderr,
            )

    def _check_resumable(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse, in one line naming what differs, a checkpoint whose weights would not fit this run."""
        saved_model = state.get("config", {}).get("model")
        if saved_model is not None:
            diffs = _dict_diff(saved_model, self.cfg.to_dict()["model"], "model")
            if diffs:
                raise ValueError(
                    f"cannot resume from {path}: the model section differs from the checkpoint's "
                    f"({'; '.join(diffs)}); resume with the checkpoint's model section or use another --out"
                )
        saved_tok = load_tokenizer(path)
        if saved_tok.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                f"cannot resume from {path}: the tokenizer differs from the one saved with it "
                f"({len(saved_tok)} tokens there, {len(self.tokenizer)} in "
                f"{self.cfg.data.tokenizer or self.cfg.model.pretrained}); set data.tokenizer={path} "
                "or use another --out"
            )
        if state.get("world_size", self.world) != self.world:
            raise ValueError(
                f"cannot resume bit-identically: {path} was written by {state['world_size']} processes, "
                f"this run has {self.world}"
            )

    # -- batches -------------------------------------------------------------------------------------

    def position(self, step: int) -> tuple[int, int]:
        """(curriculum stage, step within it) of global step ``step``; the stage is len(curriculum) past the end."""
        budgets = [stage.steps for stage in self.cfg.curriculum]
        i = max(k for k, start in enumerate(self.stage_starts) if start <= step)
        within = step - self.stage_starts[i]
        if i == len(self.stage_starts) - 1:  # the stages after the last known start follow their budgets
            while i < len(budgets) and within >= budgets[i]:
                within -= budgets[i]
                i += 1
        return i, within

    def _rows(self, step: int) -> tuple[int, int, np.ndarray]:
        """(stage, step within it, this process's rows of the global batch) of optimizer step ``step``."""
        stage, stage_step = self.position(step)
        size = self.cfg.batch_size_at(stage)
        return stage, stage_step, np.arange(self.rank * size // self.world, (self.rank + 1) * size // self.world)

    def micro_batches(self, step: int) -> list[Batch]:
        """This process's micro-batches of optimizer step ``step``."""
        stage, stage_step, rows = self._rows(step)
        r = self.cfg.train
        if r.micro_batch_tokens is not None:  # one draw, then rows of similar length together
            return split_by_length(self.source.batch(stage, stage_step, rows), r.micro_batch_tokens)
        size = self.cfg.batch_size_at(stage)
        micro = size // (self.world * r.grad_accum)
        chunks = [rows[j * micro : (j + 1) * micro] for j in range(r.grad_accum)]
        return [self.source.batch(stage, stage_step, c) for c in chunks]

    def _report_batch(self, step: int) -> Batch:
        """What the memory diagnostics of step ``step`` see: its first micro-batch, or with
        ``train.micro_batch_tokens`` all of this process's rows (its first micro-batch has the shortest)."""
        if self.cfg.train.micro_batch_tokens is None:
            return self.micro_batches(step)[0]
        stage, stage_step, rows = self._rows(step)
        return self.source.batch(stage, stage_step, rows)

    def _on_device(self, batch: Batch) -> Batch:
        fact = batch.fact_mask.to(self.device) if batch.fact_mask is not None else None
        return Batch(batch.input_ids.to(self.device), batch.targets.to(self.device), fact)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _all_sum(self, *values: float) -> list[float]:
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    # -- one step ------------------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, Any]:
        o = self.cfg.optim
        lr = lr_at(step, self.cfg.total_steps, o.lr, o.warmup_steps, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [self._on_device(b) for b in self.micro_batches(step)]
        local_targets = sum(b.num_targets for b in batches)
        local_tokens = sum(self._real_tokens(b) for b in batches)
        n_targets, n_tokens = self._all_sum(local_targets, local_tokens)
        # DDP averages gradients over processes; scale so the result is the mean over all target tokens
        scale = self.world / n_targets
        model = self.ddp or self.model
        loss_sum = 0.0
        for j, batch in enumerate(batches):
            final_micro = j == len(batches) - 1

            def sync(final_piece: bool, final_micro: bool = final_micro) -> contextlib.AbstractContextManager:
                if self.ddp is None or (final_piece and final_micro):
                    return contextlib.nullcontext()
                return self.ddp.no_sync()

            def backward(loss: torch.Tensor) -> None:
                (self.scaler.scale(loss) if self.scaler else loss).backward()

            loss_sum += run_pieces(model, batch, self.piece_len, scale, self._autocast, backward, sync)
        (loss_sum,) = self._all_sum(loss_sum)
        loss = loss_sum / n_targets
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(
                f"loss is {loss} at step {step + 1}: training stopped before the update; {self._last_good()} "
                "(lower optim.lr, raise optim.warmup_steps or set optim.grad_clip, then --resume)"
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = o.grad_clip if o.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if not math.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"the gradient norm is {grad_norm} at step {step + 1}: training stopped before the "
                    f"update; {self._last_good()} (lower optim.lr or set optim.grad_clip, then --resume)"
                )
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stage, _ = self.position(step)
        return {
            "step": step + 1,
            "stage": stage,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": int(n_tokens),
        }

    def _last_good(self) -> str:
        """Where to resume from after a divergence: the newest complete checkpoint (saved with finite weights)."""
        last = self.folder.complete_checkpoints()
        if not last:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {last[-1]}"

    def _real_tokens(self, batch: Batch) -> int:
        """Input positions up to each row's last target (right padding excluded)."""
        return int(batch.row_lengths().sum())

    # -- evaluation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The data source's validation metrics: validation loss, and for question answering the exact-answer
        accuracy (teacher-forced argmax); for running text the perplexity."""
        stage = min(self.position(self.step)[0], len(self.cfg.curriculum) - 1)
        self.model.eval()
        try:
            return self.source.validate(self._score, stage, self.micro)
        finally:
            self.model.train()

    def _score(self, batch: Batch) -> tuple[float, torch.Tensor]:
        """Summed cross-entropy of ``batch``'s targets and the top prediction at each target (IGNORE elsewhere)."""
        batch = Batch(batch.input_ids.to(self.device), batch.targets.to(self.device))
        preds = torch.full_like(batch.targets, IGNORE)

        def keep(positions: torch.Tensor, logits: torch.Tensor) -> None:
            preds[:, positions] = logits.argmax(-1)

        return run_pieces(self.model, batch, self.piece_len, autocast=self._autocast, logits_hook=keep), preds

    # -- the loop ------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        stage, stage_step = self.position(self.step - 1)
        return {
            "config": self.cfg.to_dict(),
            "world_size": self.world,
            "data_position": {
                "stage": stage,
                "stage_step": stage_step + 1,
                "stage_starts": self.stage_starts,
                "sequences": sum(self.cfg.batch_size_at(self.position(k)[0]) for k in range(self.step)),
            },
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def save(self) -> None:
        # A checkpoint is "good" only with finite weights (an update can overflow with a finite loss);
        # every process checks its identical copy, so all stop together.
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(
                f"the weights hold NaN/inf after step {self.step}: not saved; {self._last_good()} "
                "(lower optim.lr or set optim.grad_clip, then --resume)"
            )
        if self.main:
            try:
                path = save_checkpoint(
                    self.ckpt_root,
                    self.step,
                    self.model,
                    self.tokenizer,
                    self.optimizer,
                    self._state(),
                    self.cfg.train.keep_last,
                )
                self.folder.point_last(path)
            except OSError as err:  # a full disk, a lost mount: earlier checkpoints are intact
                reason = err.strerror or str(err)
                raise CheckpointError(
                    f"cannot save the checkpoint of step {self.step} in {self.ckpt_root}: {reason}; "
                    f"nothing was lost, {self._last_good()} (free space, then run again with --resume)"
                ) from err
        if self.distributed:
            dist.barrier()

    def _open_log(self) -> Any:
        """The JSONL log, cut back to the resumed step so the file reads as one uninterrupted run."""
        if self.resumed_from is not None:
            self.folder.cut_log(self.step)
        else:
            self.folder.log.unlink(missing_ok=True)
        return open(self.folder.log, "a", encoding="utf-8")

    def _advance(self, stage: int, done: int, results: dict[str, float], log: Any) -> bool:
        """End stage ``stage`` (``done`` steps into it) now if its ``advance_when`` is met by ``results``; every
        process takes the decision the first one made on its validation."""
        rule = self.cfg.curriculum[stage].advance_rule()
        if rule is None or done >= self.cfg.curriculum[stage].steps:  # no rule, or its budget ends it anyway
            return False
        metric, op, threshold = rule
        value = results.get(metric)
        if self.main and results and value is None:
            raise ValueError(
                f"curriculum[{stage}].advance_when names {metric}, which validation does not report; it reports "
                f"{', '.join(results)}"
            )
        met = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        (votes,) = self._all_sum(float(met))
        if not votes:
            return False
        budgets = [s.steps for s in self.cfg.curriculum]
        while len(self.stage_starts) <= stage:  # stages that began at their predecessor's budget
            self.stage_starts.append(self.stage_starts[-1] + budgets[len(self.stage_starts) - 1])
        self.stage_starts.append(self.step)  # where stage + 1 begins
        if self.main:
            name = self.cfg.curriculum[stage].name or f"stage {stage}"
            record = {"step": self.step, "stage_end": stage, "name": name, "after": done,
                      "reason": f"{metric} {value:.4f} {op} {threshold:g}"}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
        return True

    def run(self) -> dict[str, Any]:
        cfg, r = self.cfg, self.cfg.train
        total = cfg.total_steps
        log = writer = bar = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.folder.repair_last()
            atomic_write_text(self.folder.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            log = self._open_log()
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(
                str(self.out / "tb"), purge_step=self.step + 1 if self.resumed_from else None
            )
            if r.progress:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        last_metrics: dict[str, Any] = {}
        window_tokens, window_start = 0, time.perf_counter()
        n_stages = len(cfg.curriculum)
        try:
            self.model.train()
            while self.position(self.step)[0] < n_stages:
                stage, stage_step = self.position(self.step)
                metrics = self.train_step(self.step)
                self.step += 1
                # the run ends with its last stage: at its budget, or early when its advance_when is met
                final = self.position(self.step)[0] == n_stages
                window_tokens += metrics["tokens"]
                elapsed = time.perf_counter() - window_start
                metrics["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                last_metrics = metrics
                if self.step % r.log_every == 0 or final:
                    if self.main:
                        memory = memory_report(self.model, self._on_device(self._report_batch(self.step - 1)),
                                               self._autocast)  # fmt: skip
                        if memory:
                            metrics["memory"] = memory
                            for block, values in memory.items():
                                for key, value in values.items():
                                    writer.add_scalar(f"memory/{block}/{key}", value, self.step)
                        log.write(json.dumps(metrics) + "\n")
                        log.flush()
                        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                            writer.add_scalar(f"train/{key}", metrics[key], self.step)
                    window_tokens, window_start = 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.4f}",
                        tok_s=f"{metrics['tokens_per_s']:.0f}",
                        lr=f"{metrics['lr']:.2e}",
                    )
                advanced = False
                if (r.eval_every and self.step % r.eval_every == 0) or final:
                    results = self.evaluate() if self.main else {}
                    if results and self.main:
                        log.write(json.dumps({"step": self.step, **results}) + "\n")
                        log.flush()
                        for key, value in results.items():
                            writer.add_scalar(f"valid/{key.removeprefix('val_')}", value, self.step)
                        if bar is not None:
                            bar.write(
                                f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items())
                            )
                    last_metrics.update(results)
                    if not final:
                        advanced = self._advance(stage, stage_step + 1, results, log)
                        final = self.position(self.step)[0] == n_stages
                if (r.save_every and self.step % r.save_every == 0) or final or advanced:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if log is not None:
                log.close()
            self.lock.release()
        return last_metrics


def _dict_diff(old: dict[str, Any], new: dict[str, Any], prefix: str) -> list[str]:
    """``prefix.key: OLD in the checkpoint, NEW now`` for every dotted key whose value differs."""
    diffs = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "unset"), new.get(key, "unset")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _dict_diff(a, b, f"{prefix}.{key}")
        elif a != b:
            diffs.append(f"{prefix}.{key}: {a} in the checkpoint, {b} now")
    return diffs


# ----------------------------------------------------------------------------------------------------
# command line




