"""The recall task of ``lm2 demo`` and the memory learning test: a word tokenizer of generated qa1
prompts, the tiny model, and its training run (through the trainer of ``lm2 train``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lm2.models.lm2.configuration_lm2 import LM2Config
from lm2.train.config import (
    Config,
    DataConfig,
    GenerateConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    StageConfig,
)


def recall_tokenizer(tasks: str = "qa1", stories: int = 200, seed: int = 0) -> PreTrainedTokenizerBase:
    """A word-level tokenizer of generated bAbI prompts + the synthetic haystack (~170 words for qa1)."""
    from lm2.data.babi.generator import generate_stories
    from lm2.data.babi.types import parse_tasks
    from lm2.data.background import synthetic_background
    from lm2.data.make import sample_texts
    from lm2.data.tokenizer import train_word_tokenizer

    made = [s for t in parse_tasks(tasks) for s in generate_stories(t, stories, seed)]
    texts = sample_texts(x for story in made for x in story.samples())
    return train_word_tokenizer(texts + synthetic_background(2000, seed).sentences)


def recall_config(vocab_size: int, use_memory: bool, window: int = 32, **overrides: Any) -> LM2Config:
    """The demo's model: width 64, 2 blocks, 4 heads (2 key/value), RoPE, an attention window; LM2 adds
    16 memory slots per block read by 2 heads and written every ``window`` tokens, the state RMS-normalised
    where it is projected and the forget gate starting at keep (bias 7: sigmoid 0.999), so that a fact
    survives 32 writes of filler (docs/results.md, the demo's section)."""
    return LM2Config.from_preset("tiny", vocab_size=vocab_size, **{**recall_overrides(use_memory, window), **overrides})


def recall_overrides(use_memory: bool, window: int = 32) -> dict[str, Any]:
    """The fields :func:`recall_config` sets on the ``tiny`` preset (a training config's model.overrides)."""
    return dict(
        hidden_size=64, intermediate_size=192, attention_window=window, segment_length=window,
        memory_slots=16, memory_heads=2, memory_norm=True, memory_forget_bias=7.0, use_memory=use_memory,
    )  # fmt: skip


def recall_run(
    tokenizer: str | Path,
    use_memory: bool,
    steps: int,
    samples: int,
    seed: int = 0,
    window: int = 32,
    train_windows: Sequence[int] = (0, 1, 2, 4),
    valid_windows: Sequence[int] = (0, 2, 8, 32),
    background_sentences: int = 3000,
    filler_per: str = "sample",
) -> Config:
    """The demo's training run: generated qa1 samples of one fact, ``F`` filler tokens (``train_windows``
    times the window), the question; AdamW at a constant lr 3e-3 (batch 32, no weight decay, gradients
    clipped at 1), through every memory write; validation accuracy with ``valid_windows`` times the window
    of filler (``val_acc_filler<F>``), ``samples`` questions each. ``filler_per: batch`` gives every row of
    a step the same filler (no padding to the longest draw)."""
    return Config(
        model=ModelConfig(family="lm2", preset="tiny", overrides=recall_overrides(use_memory, window)),
        data=DataConfig(
            kind="generate", tokenizer=str(tokenizer), answer_eos=False, valid_samples=samples,
            generate=GenerateConfig(
                tasks="qa1", filler=[k * window for k in train_windows], facts=[1, 1],
                background_sentences=background_sentences, valid_filler=[k * window for k in valid_windows],
                filler_per=filler_per,
            ),
        ),
        curriculum=[StageConfig(steps=steps)],
        optim=OptimConfig(lr=3e-3, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0, betas=[0.9, 0.999]),
        train=RunConfig(seed=seed, batch_size=32, log_every=max(1, steps // 4), save_every=None, keep_last=1,
                        progress=False, device="cpu"),
    ).validate()  # fmt: skip


