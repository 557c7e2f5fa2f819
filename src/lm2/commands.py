"""The ``lm2 params`` and ``lm2 demo`` commands."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lm2.models.lm2.configuration_lm2 import LM2Config
from lm2.models.lm2.modeling_lm2 import LM2ForCausalLM
from lm2.models.lm2.params import count_parameters, format_breakdown
from lm2.train.config import GenerateConfig
from lm2.train.data import IGNORE, VALID_STREAM, GeneratedQA


def params(preset: str = "lm2-1.7b", use_memory: bool = True, short_conv: int = 0) -> None:
    """Print the parameter breakdown (backbone vs memory, per block) of a preset, without allocating weights.

    Args:
        preset: One of the presets: tiny, small, lm2-1.7b.
        use_memory: Count the memory banks (--no-use-memory gives the vanilla backbone).
        short_conv: Kernel size of the blocks' short convolution (0 = none, the presets' default).
    """
    config = LM2Config.from_preset(preset, use_memory=use_memory, short_conv=short_conv)
    title = f"{preset} (use_memory={use_memory}" + (f", short_conv={short_conv})" if short_conv else ")")
    print(format_breakdown(count_parameters(config), title))


def recall_tokenizer(tasks: str = "qa1", stories: int = 200, seed: int = 0) -> PreTrainedTokenizerBase:
    """A word-level tokenizer of generated bAbI prompts + the synthetic haystack (~170 words for qa1)."""
    from lm2.data.babi.generator import generate_stories
    from lm2.data.babi.types import parse_tasks
    from lm2.data.background import synthetic_background
    from lm2.data.cli import sample_texts
    from lm2.data.tokenizer import train_word_tokenizer

    made = [s for t in parse_tasks(tasks) for s in generate_stories(t, stories, seed)]
    texts = sample_texts(x for story in made for x in story.samples())
    return train_word_tokenizer(texts + synthetic_background(2000, seed).sentences)


def recall_config(vocab_size: int, use_memory: bool, window: int = 32, **overrides: Any) -> LM2Config:
    """The demo's model: width 64, 2 blocks, 4 heads (2 key/value), RoPE, an attention window; LM2 adds
    16 memory slots per block read by 2 heads and written every ``window`` tokens."""
    fields = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=192, attention_window=window,
        segment_length=window, memory_slots=16, memory_heads=2, use_memory=use_memory,
    )  # fmt: skip
    return LM2Config.from_preset("tiny", **{**fields, **overrides})


def train_recall(
    model: torch.nn.Module,
    data: GeneratedQA,
    gen: GenerateConfig,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 0,
) -> float:
    """AdamW on generated samples (one forward per sample, gradients through every memory write); the loss
    is the mean cross-entropy of the answer tokens. Returns the wall time in seconds."""
    from lm2.train.trainer import run_pieces

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = data.batch(gen, seed, 0, step, range(batch_size))
        scale = 1.0 / batch.num_targets
        loss = run_pieces(model, batch, None, scale, backward=lambda x: x.backward()) * scale
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            print(f"  step {step + 1:4d}  loss {loss:.3f}  ({time.perf_counter() - start:.0f}s)", flush=True)
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def recall_accuracy(
    model: torch.nn.Module,
    data: GeneratedQA,
    gen: GenerateConfig,
    filler: int,
    samples: int = 200,
    seed: int = 0,
    batch_size: int = 50,
) -> float:
    """Share of ``samples`` held-out samples with ``filler`` tokens between facts and question whose every
    answer token is the model's top prediction (drawn from the validation stream, never trained on)."""
    fixed = dataclasses.replace(gen, filler=[filler], filler_range=None, questions="one")
    model.eval()
    hits = 0
    for start in range(0, samples, batch_size):
        rows = range(start, min(start + batch_size, samples))
        batch = data.batch(fixed, seed, VALID_STREAM, filler, rows)
        logits = model(input_ids=batch.input_ids, use_cache=False).logits  # (B, T, V)
        answer = batch.targets != IGNORE
        hits += int(((logits.argmax(-1) == batch.targets) | ~answer).all(dim=1).sum())
    return hits / samples


def demo(steps: int = 160, samples: int = 200, seed: int = 0, threads: int = 1) -> None:
    """Show the memory at work: a tiny LM2 recalls a fact from beyond its attention window; vanilla cannot.

    Trains a tiny LM2 and the same backbone without memory (both with a 32-token attention window) on
    generated bAbI qa1 samples: one fact, F filler tokens of the synthetic haystack (F drawn from 0, 32,
    64, 128), the question; loss on the answer word. Then prints the accuracy with the fact inside the
    window and 2x, 8x and 32x the window before the question, for LM2, vanilla and LM2 with its memory read
    switched off (model.config.memory_read = False). Chance is 1/6 (six rooms). Deterministic for a seed;
    about two minutes on two CPU cores.

    Args:
        steps: AdamW steps (batch 32, lr 3e-3) for each model.
        samples: held-out samples per accuracy cell.
        seed: random seed (weights, training and test samples).
        threads: CPU threads for torch.
    """
    if steps < 1 or samples < 1:
        raise ValueError(f"steps and samples must be >= 1, got {steps} and {samples}")
    torch.set_num_threads(threads)
    start = time.perf_counter()
    tokenizer = recall_tokenizer(seed=seed)
    data = GeneratedQA(tokenizer, answer_eos=False, seed=seed, background_sentences=3000)
    window = 32
    gen = GenerateConfig(tasks="qa1", filler=[0, window, 2 * window, 4 * window], facts=[1, 1])
    models = {}
    for name, use_memory in (("LM2", True), ("vanilla", False)):
        torch.manual_seed(seed)
        config = recall_config(len(tokenizer), use_memory, window)
        model = LM2ForCausalLM(config)
        if use_memory:
            print(
                format_breakdown(count_parameters(config), f"demo LM2 (word vocabulary of {len(tokenizer)})")
            )
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {name} ({n_params:,} parameters, attention window {window}) for {steps} steps:")
        train_recall(model, data, gen, steps, seed=seed, log_every=max(1, steps // 4))
        models[name] = model

    distances = {"inside": 0, "2x": 2 * window, "8x": 8 * window, "32x": 32 * window}
    rows = {
        "LM2": (models["LM2"], True),
        "vanilla": (models["vanilla"], True),
        "LM2, read off": (models["LM2"], False),
    }
    print(
        f"\naccuracy on {samples} held-out samples per cell (chance 1/6 = 0.17); F filler tokens between the"
    )
    print(f"fact and the question; the attention window is {window} tokens")
    header = "".join(f"{f'{k} (F={f})':>16}" for k, f in distances.items())
    print(f"{'':16}{header}")
    for name, (model, read) in rows.items():
        model.config.memory_read = read
        cells = "".join(
            f"{recall_accuracy(model, data, gen, f, samples, seed):>16.2f}" for f in distances.values()
        )
        model.config.memory_read = True
        print(f"{name:16}{cells}")
    print(f"({time.perf_counter() - start:.0f}s)")
