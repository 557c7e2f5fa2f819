"""The training loop: ``lm2 train --config configs/X.yaml --out DIR [--set k=v ...] [--resume]``.

One optimizer step = ``train.batch_size`` sequences, split evenly over the processes (torchrun) and
then over ``train.grad_accum`` micro-batches on each. The loss is the mean cross-entropy over every
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
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from lm2.data.rows import read_rows
from lm2.models.outputs import CACHE_FIELD, output_cache
from lm2.train.checkpoint import (
    MANIFEST,
    CheckpointError,
    list_checkpoints,
    list_step_dirs,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from lm2.train.config import Config, load_config
from lm2.train.data import (
    IGNORE,
    Batch,
    GeneratedQA,
    QADataset,
    TextShards,
    read_babi_rows,
    sample_indices,
    split_stories,
)
from lm2.train.models import build_model, load_tokenizer
from lm2.utils.io import atomic_write_text


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------------
# pieces, caches, loss


def detach_cache(cache: Any) -> Any:
    """The cache cut from the autograd graph (truncated backpropagation through time between pieces).

    LM2's and RMT's caches detach themselves; transformers' ``DynamicCache`` (the llama family) is
    detached layer by layer.
    """
    if hasattr(cache, "detach"):
        return cache.detach()
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None:
            layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
    return cache


def run_pieces(
    model: Any,
    batch: Batch,
    piece_len: int | None,
    loss_scale: float | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    backward: Callable[[torch.Tensor], None] | None = None,
    sync: Callable[[bool], contextlib.AbstractContextManager] = lambda final: contextlib.nullcontext(),
    logits_hook: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> float:
    """Forward ``batch`` in pieces of ``piece_len`` tokens (None: one piece); return the summed cross-entropy.

    With ``backward`` given, ``backward(ce_sum * loss_scale)`` runs after each piece that has targets,
    inside ``sync(is_final_backward)`` (DDP's no_sync for all but the last). Logits are computed only at
    the positions where some row of the batch has a target (an answer of a few tokens after a long
    context costs the vocabulary projection of those few); ``logits_hook(positions, logits)`` sees them
    with their column indices in the batch (evaluation).
    """
    x, y = batch.input_ids, batch.targets
    width = x.shape[1]
    step = piece_len or width
    bounds = [(s, min(s + step, width)) for s in range(0, width, step)]
    # (k,) columns of each piece where some row has a target
    target_cols = [(y[:, s:e] != IGNORE).any(0).nonzero().squeeze(1) for s, e in bounds]
    has_targets = [len(cols) > 0 for cols in target_cols]
    if not any(has_targets):
        return 0.0
    last = max(i for i, h in enumerate(has_targets) if h)  # later pieces could not change the loss
    cache, total = None, 0.0
    for i, (s, e) in enumerate(bounds[: last + 1]):
        learn = backward is not None and has_targets[i]
        cols = target_cols[i]
        keep = {} if len(cols) == e - s else {"logits_to_keep": cols}
        with sync(i == last), torch.set_grad_enabled(learn):
            with autocast():
                out = model(input_ids=x[:, s:e], use_cache=last > 0, **{CACHE_FIELD: cache}, **keep)
            logits = out.logits.float()  # (B, k, V)
            if logits.shape[1] != len(cols):  # a model that ignores logits_to_keep
                logits = logits[:, cols]
            if logits_hook is not None:
                logits_hook(s + cols, logits.detach())
            ce = F.cross_entropy(
                logits.flatten(0, 1), y[:, s:e][:, cols].flatten(), ignore_index=IGNORE, reduction="sum"
            )
            if learn:
                backward(ce * loss_scale)
        total += ce.item()
        cache = detach_cache(output_cache(out)) if i < last else None
    return total


@torch.no_grad()
def memory_report(
    model: Any,
    batch: Batch,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, dict[str, float]]:
    """What each memory block does on ``batch`` (one extra forward without gradients), per block index:

    ``in_gate`` / ``forget_gate``: the mean input / forget gate of the writes, split into ``_fact`` (the
    segment holds a fact token) and ``_other`` (filler, prompt, question) when the batch has a
    ``fact_mask``; ``read_ratio``: mean |gated read| / |residual stream| over the tokens up to each row's
    last target, ``read_ratio_answer`` the same at the positions that predict an answer token. Empty for a
    model without memory blocks. Segments past a row's last target are left out.
    """
    if not hasattr(model, "memory_diagnostics") or not getattr(model.config, "memory_layer_indices", None):
        return {}
    with model.memory_diagnostics() as records, autocast():
        model(input_ids=batch.input_ids, use_cache=False)
    B, T = batch.input_ids.shape
    S = model.config.segment_length
    targets = batch.targets != IGNORE  # (B, T)
    length = T - torch.argmax(targets.flip(1).int(), dim=1)  # (B,) tokens up to the last target
    real = torch.arange(T, device=length.device)[None, :] < length[:, None]  # (B, T)
    report: dict[str, dict[str, float]] = {}
    for layer, record in zip(model.config.memory_layer_indices, records, strict=True):
        ratio = torch.cat(record["read_ratio"], 1).float()  # (B, T)
        block = {"read_ratio": float(ratio[real].mean()), "read_ratio_answer": float(ratio[targets].mean())}
        if record["in_gate"]:
            g_in = torch.cat(record["in_gate"], 1).float()  # (B, W) every write of every call, in order
            g_forget = torch.cat(record["forget_gate"], 1).float()
            done = torch.cat(record["write_done"], 1)
            segment = done.long().cumsum(1) - 1  # (B, W) the k-th write of a row stores its segment k
            done &= segment * S < length[:, None]
            groups = {"": done}
            if batch.fact_mask is not None:
                n = -(-T // S)
                fact = F.pad(batch.fact_mask.to(done.device), (0, n * S - T)).view(B, n, S).any(-1)  # (B, n)
                has_fact = fact.gather(1, segment.clamp(0, n - 1)) & done
                groups = {"_fact": has_fact, "_other": done & ~has_fact}
            for suffix, mask in groups.items():
                if mask.any():
                    block[f"in_gate{suffix}"] = float(g_in[mask].mean())
                    block[f"forget_gate{suffix}"] = float(g_forget[mask].mean())
        report[f"block{layer}"] = block
    return report


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
        if r.batch_size % (self.world * r.grad_accum):
            raise ValueError(
                f"train.batch_size ({r.batch_size}) must be divisible by processes x grad_accum "
                f"({self.world} x {r.grad_accum})"
            )
        self.micro = r.batch_size // (self.world * r.grad_accum)
        if r.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train.precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[r.precision]
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run (it will be created)")
        self.ckpt_root = self.out / "checkpoints"
        # Every step folder counts, complete or not: a new run must never overwrite one.
        existing = list_step_dirs(self.ckpt_root)
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
        self._load_data()

        decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.dim() < 2]
        o = config.optim
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=tuple(o.betas), eps=o.eps,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler("cuda") if r.precision == "fp16" else None
        self.step = 0
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

    def _load_data(self) -> None:
        d = self.cfg.data
        from lm2.data.babi.types import parse_tasks

        tasks = parse_tasks(d.tasks) if d.tasks else None
        self.valid_batches: list[Batch] = []
        self.valid_groups: list[str] = []  # per validation row: the group its accuracy is also reported in
        kwargs = dict(prompt_format=d.prompt_format, answer_eos=d.answer_eos, max_tokens=d.max_tokens)
        if d.kind == "generate":
            g = d.generate
            self.generated = GeneratedQA(
                self.tokenizer, g.background, d.prompt_format, d.answer_eos, self.cfg.train.seed
            )
            self.generate_stages = [self.cfg.generate_config(i) for i in range(len(self.cfg.curriculum))]
            valid_rows = self.generated.validation_rows(
                self.cfg.generate_config(), self.cfg.train.seed, d.valid_samples
            )
            self.valid_qa = QADataset(valid_rows, self.tokenizer, **kwargs)
            self.valid_groups = [f"filler{r['filler_tokens']}" for r in valid_rows]
            return
        if d.kind == "text":
            self.text = TextShards(d.train[0])
            if self.text.vocab_size > len(self.tokenizer):
                raise ValueError(
                    f"{d.train[0]} was tokenised with {self.text.vocab_size} tokens; data.tokenizer has {len(self.tokenizer)}"
                )
            self.valid_text = TextShards(d.valid[0]) if d.valid else None
            return
        if d.kind == "babi":
            stories = read_babi_rows(d.train, tasks)
            train_rows, valid_rows = split_stories(stories, d.valid_split)
            if d.valid:
                valid_rows = [r for s in read_babi_rows(d.valid, tasks) for r in s]
        else:
            train_rows = read_rows(d.train)
            valid_rows = read_rows(d.valid) if d.valid else []
            if tasks:
                train_rows = [r for r in train_rows if r.get("task") in tasks]
                valid_rows = [r for r in valid_rows if r.get("task") in tasks]
                if not train_rows:
                    raise ValueError(f"no training rows of tasks {d.tasks} in {', '.join(d.train)}")
        self.qa = QADataset(train_rows, self.tokenizer, **kwargs)
        self.pools = [self.qa.pool(stage.lengths) for stage in self.cfg.curriculum]  # checked up front
        if len(valid_rows) > d.valid_samples:  # a fixed subset spread over every task and length
            keep = np.sort(np.random.default_rng(0).permutation(len(valid_rows))[: d.valid_samples])
            valid_rows = [valid_rows[i] for i in keep]
        self.valid_qa = QADataset(valid_rows, self.tokenizer, **kwargs) if valid_rows else None
        if self.valid_qa is not None and len(set(self.valid_qa.lengths)) > 1:
            self.valid_groups = list(self.valid_qa.lengths)

    def _resume(self, path: Path) -> None:
        """Continue from ``path``, the newest step folder; everything is checked before any weight loads."""
        if not (path / MANIFEST).is_file():
            # Never fall back silently to an older checkpoint: training on would overwrite this folder.
            older = list_checkpoints(self.ckpt_root)
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

    def micro_batches(self, step: int) -> list[Batch]:
        """This process's micro-batches of optimizer step ``step``."""
        stage, stage_step = self.cfg.stage_at(step)
        r = self.cfg.train
        rows = np.arange(self.rank * r.batch_size // self.world, (self.rank + 1) * r.batch_size // self.world)
        chunks = [rows[j * self.micro : (j + 1) * self.micro] for j in range(r.grad_accum)]
        if self.cfg.data.kind == "text":
            seq_len = self.cfg.curriculum[stage].seq_len
            return [self.text.training_batch(r.seed, stage, stage_step, c, seq_len) for c in chunks]
        if self.cfg.data.kind == "generate":
            gen = self.generate_stages[stage]
            return [self.generated.batch(gen, r.seed, stage, stage_step, c) for c in chunks]
        idx = sample_indices(self.pools[stage], r.seed, stage, stage_step, r.batch_size)
        return [self.qa.collate(idx[c]) for c in chunks]

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
        stage, _ = self.cfg.stage_at(step)
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
        last = list_checkpoints(self.ckpt_root)
        if not last:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {last[-1]}"

    def _real_tokens(self, batch: Batch) -> int:
        """Input positions up to each row's last target (right padding excluded)."""
        mask = batch.targets != IGNORE
        last = mask.shape[1] - torch.argmax(mask.flip(1).int(), dim=1)
        return int(last.sum())

    # -- evaluation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss, and for question answering the exact-answer accuracy (teacher-forced argmax)."""
        self.model.eval()
        try:
            if self.cfg.data.kind == "text":
                if self.valid_text is None:
                    return {}
                stage, _ = self.cfg.stage_at(min(self.step, self.cfg.total_steps - 1))
                seq_len = self.cfg.curriculum[stage].seq_len
                batches = self.valid_text.validation_batches(seq_len, self.cfg.data.valid_samples, self.micro)
                total = count = 0.0
                for b in batches:
                    b = Batch(b.input_ids.to(self.device), b.targets.to(self.device))
                    total += run_pieces(self.model, b, self.piece_len, autocast=self._autocast)
                    count += b.num_targets
                return {"val_loss": total / count, "val_ppl": math.exp(min(total / count, 50.0))}
            if self.valid_qa is None:
                return {}
            total = count = 0.0
            correct: list[bool] = []
            for start in range(0, len(self.valid_qa), self.micro):
                b = self.valid_qa.collate(range(start, min(start + self.micro, len(self.valid_qa))))
                b = Batch(b.input_ids.to(self.device), b.targets.to(self.device))
                preds = torch.full_like(b.targets, IGNORE)

                def keep(positions: torch.Tensor, logits: torch.Tensor, preds: torch.Tensor = preds) -> None:
                    preds[:, positions] = logits.argmax(-1)

                total += run_pieces(self.model, b, self.piece_len, autocast=self._autocast, logits_hook=keep)
                count += b.num_targets
                span = self.valid_qa.answer_spans(b)
                correct += ((preds == b.targets) | ~span).all(dim=1).tolist()
            results = {"val_loss": total / count, "val_acc": sum(correct) / len(correct)}
            for group in dict.fromkeys(
                self.valid_groups
            ):  # accuracy per length / filler, in first-seen order
                hits = [ok for ok, g in zip(correct, self.valid_groups, strict=True) if g == group]
                results[f"val_acc_{group}"] = sum(hits) / len(hits)
            return results
        finally:
            self.model.train()

    # -- the loop ------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        stage, stage_step = self.cfg.stage_at(self.step - 1)
        return {
            "config": self.cfg.to_dict(),
            "world_size": self.world,
            "data_position": {
                "stage": stage,
                "stage_step": stage_step + 1,
                "sequences": self.step * self.cfg.train.batch_size,
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
                link = self.out / "last"
                tmp = self.out / ".last.tmp"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(path.relative_to(self.out))
                os.replace(tmp, link)
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
        path = self.out / "log.jsonl"
        if self.resumed_from is not None and path.exists():
            kept = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif self.resumed_from is None:
            path.unlink(missing_ok=True)
        return open(path, "a", encoding="utf-8")

    def run(self) -> dict[str, Any]:
        cfg, r = self.cfg, self.cfg.train
        total = cfg.total_steps
        log = writer = bar = None
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
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
        try:
            self.model.train()
            while self.step < total:
                metrics = self.train_step(self.step)
                self.step += 1
                window_tokens += metrics["tokens"]
                elapsed = time.perf_counter() - window_start
                metrics["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                last_metrics = metrics
                if self.step % r.log_every == 0 or self.step == total:
                    if self.main:
                        memory = memory_report(self.model, self._on_device(self.micro_batches(self.step - 1)[0]),
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
                if (r.eval_every and self.step % r.eval_every == 0) or self.step == total:
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
                if (r.save_every and self.step % r.save_every == 0) or self.step == total:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if log is not None:
                log.close()
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


def _exit_distributed(code: int) -> None:
    """End a torchrun process with an honest exit code and without gloo's abort at interpreter exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    if dist.is_initialized():
        if code == 0:
            dist.barrier()
        dist.destroy_process_group()
    os._exit(code)


def train(config: Path, out: Path, set: str | None = None, resume: bool = False) -> None:
    """Train a model from a YAML config: language-model pretraining on text shards or BABILong fine-tuning.

    Writes checkpoints (Hugging Face model folders with optimizer and RNG state) under OUT/checkpoints,
    OUT/last pointing at the newest, OUT/log.jsonl and TensorBoard events in OUT/tb. Run several
    processes with ``torchrun --nproc_per_node N -m lm2.cli train ...``.

    Args:
        config: the YAML config file (see configs/ and docs/training.md).
        out: the output folder.
        set: overrides, space-separated key.sub=value pairs, e.g. "optim.lr=3e-4 train.batch_size=16".
        resume: continue from the newest checkpoint in OUT (bit-identically); starts afresh if there is none.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        cfg = load_config(config, shlex.split(set) if set else None)
        Trainer(cfg, out, resume=resume).run()
    except TrainingDiverged as err:
        # A diverged run is not a crash: one clear line and its own exit code (3).
        print(f"lm2: training stopped (rank {os.environ.get('RANK', '0')}): {err}", file=sys.stderr)
        if distributed:
            _exit_distributed(3)
        raise SystemExit(3) from None
    except BaseException as err:
        if not distributed:
            raise
        user_error = isinstance(err, (ValueError, FileNotFoundError))
        if user_error:
            print(f"lm2: error (rank {os.environ.get('RANK', '?')}): {err}", file=sys.stderr)
        else:
            import traceback

            traceback.print_exc()
        _exit_distributed(2 if user_error else 1)
    if distributed:
        _exit_distributed(0)


def iter_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a run's log.jsonl."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
