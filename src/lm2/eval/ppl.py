"""``lm2 eval ppl``: perplexity on text files, with the model's state carried across segments.

Each file is tokenised and fed in segments of ``segment_length`` tokens. A model that returns a cache
(``past_key_values``: LM2's memory and attention cache, or a plain key/value cache) gets it back with the
next segment, so every token is predicted from everything before it — for LM2 through its memory. A model
that returns no cache is scored with a sliding window instead: each segment is predicted with up to
``window - segment_length`` preceding tokens as context.

The first token of a file is scored only when the tokenizer has a BOS token to predict it from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lm2.data.texts import read_text_source
from lm2.models.outputs import CACHE_FIELD, output_cache


def _token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of ``targets`` (T,) under ``logits`` (T, V), in float64."""
    return F.cross_entropy(logits.float(), targets, reduction="sum").double()


@torch.no_grad()
def sequence_nll(
    model: Any, ids: torch.Tensor, segment_length: int, window: int | None = None, bar: tqdm | None = None
) -> tuple[float, int, str]:
    """(summed NLL, scored tokens, mode) of ``ids`` (T,): predictions of ids[1:] from what precedes them.

    ``mode`` is "cache" when the model's ``past_key_values`` carried the state, else "sliding-window".
    ``bar``, a progress bar, advances by the tokens of each segment done.
    """
    if segment_length < 1:
        raise ValueError(f"segment length must be at least 1, got {segment_length}")
    ids = ids.to(model.device)
    total = torch.zeros((), dtype=torch.float64)
    if len(ids) < 2:
        return 0.0, 0, "cache"
    past = None
    prev_last: torch.Tensor | None = None  # logits of the previous segment's last position (V,)
    for start in range(0, len(ids), segment_length):
        seg = ids[start : start + segment_length]
        out = model(input_ids=seg[None], use_cache=True, **{CACHE_FIELD: past})
        past = output_cache(out)
        if past is None:  # no state to carry: score with a sliding window
            return *_sliding_window_nll(model, ids, segment_length, window, bar), "sliding-window"
        logits = out.logits[0]  # (S, V)
        if prev_last is not None:  # the boundary: the last token before the segment predicts its first
            logits = torch.cat([prev_last[None], logits])
            targets = seg
        else:
            targets = seg[1:]
        total += _token_nll(logits[: len(targets)], targets).cpu()
        prev_last = out.logits[0, -1]
        if bar is not None:
            bar.update(len(seg))
    return float(total), len(ids) - 1, "cache"


def _sliding_window_nll(
    model: Any, ids: torch.Tensor, segment_length: int, window: int | None, bar: tqdm | None = None
) -> tuple[float, int]:
    window = window or 2 * segment_length
    if window <= segment_length:
        raise ValueError(f"the window ({window}) must be longer than the segment length ({segment_length})")
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(ids), segment_length):
        end = min(start + segment_length, len(ids))
        ctx_start = max(0, end - window)
        logits = model(input_ids=ids[ctx_start:end][None], use_cache=False).logits[0]  # (end-ctx_start, V)
        first = max(start, 1)  # position of the first token scored here
        pred = logits[first - 1 - ctx_start : end - 1 - ctx_start]
        total += _token_nll(pred, ids[first:end]).cpu()
        if bar is not None:
            bar.update(end - start)
    return float(total), len(ids) - 1


def _tokenize(tokenizer: Any, text: str, budget: int | None) -> list[int]:
    """The tokens of ``text``, or at least its first ``budget`` of them without tokenising a huge file whole.

    A prefix is tokenised, doubling until it yields a margin of tokens beyond the budget: tokenisation is
    local, so the first ``budget`` tokens of the prefix are those of the whole text.
    """
    if budget is None:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    chars = 8 * budget + 1024
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if chars >= len(text) or len(ids) >= budget + 64:
            return ids
        chars *= 2


def perplexity(
    model: Any,
    tokenizer: Any,
    files: Sequence[str | os.PathLike],
    segment_length: int = 512,
    max_tokens: int | None = None,
    window: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-file and total tokens, NLL (nats) and perplexity; at most ``max_tokens`` tokens in all.

    ``unknown_share`` is the fraction of the scored tokens that are the tokenizer's unknown token (0 for a
    tokenizer without one): a small word-level vocabulary turns most of a book into that one token, which
    makes its perplexity low and says little about the text. ``progress`` shows a tqdm bar per file on
    stderr (tokens scored, rate, time left).
    """
    per_file = []
    budget = max_tokens
    unk = getattr(tokenizer, "unk_token_id", None)
    nll_sum, count, unknown, mode = 0.0, 0, 0, "cache"
    for path in files:
        if budget is not None and budget <= 1:
            break
        text = read_text_source(path)
        ids = _tokenize(tokenizer, text, budget)
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        if budget is not None:
            ids = ids[:budget]
            budget -= len(ids)
        if len(ids) < 2:
            raise ValueError(f"{path}: fewer than 2 tokens, nothing to score")
        with tqdm(total=len(ids), desc=f"ppl {Path(path).name}", unit="tok", disable=not progress) as bar:
            nll, n, mode = sequence_nll(model, torch.tensor(ids), segment_length, window, bar)
        n_unk = sum(1 for i in ids[1:] if i == unk) if unk is not None else 0
        per_file.append({"file": str(path), "tokens": n, "nll": nll / n, "ppl": math.exp(nll / n),
                         "unknown_share": n_unk / n})  # fmt: skip
        nll_sum += nll
        count += n
        unknown += n_unk
    if not count:
        raise ValueError("no tokens were scored; raise --max-tokens or give non-empty files")
    return {
        "tokens": count,
        "nll": nll_sum / count,
        "ppl": math.exp(nll_sum / count),
        "unknown_share": unknown / count,
        "mode": mode,
        "segment_length": segment_length,
        "files": per_file,
    }




def to_markdown(results: dict[str, Any]) -> str:
    """Per file and in all: tokens scored, mean NLL per token (nats), perplexity."""
    lines = [
        f"# Perplexity: {results['name']}",
        "",
        f"Segments of {results['segment_length']} tokens, mode {results['mode']}.",
        "",
        "| file | tokens | unknown tokens (%) | NLL | perplexity |",
        "|---|---|---|---|---|",
    ]
    for f in [*results["files"], {**results, "file": "all"}]:
        lines.append(
            f"| {f['file']} | {f['tokens']} | {100 * f['unknown_share']:.1f} | {f['nll']:.4f} | {f['ppl']:.3f} |"
        )
    return "\n".join(lines) + "\n"
