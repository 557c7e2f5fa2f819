"""One forward over a training or validation batch: in pieces with the cache carried (truncated
backpropagation through time between pieces), logits only where there are targets; and the memory
diagnostics of a batch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from lm2.data.batch import IGNORE, Batch
from lm2.models.outputs import CACHE_FIELD, output_cache


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
