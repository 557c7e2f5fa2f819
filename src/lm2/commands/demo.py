"""``lm2 demo`` and ``lm2 params``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

# Filler of the training samples, in windows: up to 8x, so that the fact outlives 32x at test time
TRAIN_WINDOWS = (0, 1, 2, 4, 8)


def params(preset: str = "lm2-1.7b", use_memory: bool = True, short_conv: int = 0) -> None:
    """Print the parameter breakdown (backbone vs memory, per block) of a preset, without allocating weights.

    Args:
        preset: One of the presets: tiny, small, lm2-1.7b.
        use_memory: Count the memory banks (--no-use-memory gives the vanilla backbone).
        short_conv: Kernel size of the blocks' short convolution (0 = none, the presets' default).
    """
    from lm2.models.lm2.configuration_lm2 import LM2Config
    from lm2.models.lm2.params import count_parameters, format_breakdown

    config = LM2Config.from_preset(preset, use_memory=use_memory, short_conv=short_conv)
    title = f"{preset} (use_memory={use_memory}" + (f", short_conv={short_conv})" if short_conv else ")")
    print(format_breakdown(count_parameters(config), title))


def demo(steps: int = 500, samples: int = 200, seed: int = 0, threads: int = 1, out: Path | None = None) -> None:
    """Show the memory at work: a tiny LM2 recalls a fact from beyond its attention window; vanilla cannot.

    Trains a tiny LM2 and the same backbone without memory (both with a 32-token attention window) on
    generated bAbI qa1 samples: one fact, F filler tokens of the synthetic haystack (F drawn from 0, 32,
    64, 128, 256 once per step), the question; loss on the answer word. Both train through `lm2 train`'s
    trainer. Then prints the accuracy with the fact inside the window and 2x, 8x and 32x the window before
    the question, for LM2, vanilla and LM2 with its memory read switched off (model.config.memory_read =
    False). Chance is 1/6 (six rooms). Deterministic for a seed; about two minutes on two CPU cores
    (docs/results.md).

    Args:
        steps: AdamW steps (batch 32, lr 3e-3) for each model.
        samples: held-out samples per accuracy cell.
        seed: random seed (weights, training and test samples).
        threads: CPU threads for torch.
        out: keep the two training runs (OUT/lm2, OUT/vanilla: run folders of `lm2 train`) here; default: a
            temporary folder, removed at the end.
    """
    import tempfile

    import torch

    from lm2.data.tokenizer import save_tokenizer
    from lm2.models.lm2.params import count_parameters, format_breakdown
    from lm2.recall import recall_run, recall_tokenizer
    from lm2.train.trainer import Trainer

    if steps < 1 or samples < 1:
        raise ValueError(f"steps and samples must be >= 1, got {steps} and {samples}")
    torch.set_num_threads(threads)
    start = time.perf_counter()
    window = 32
    with tempfile.TemporaryDirectory(prefix="lm2-demo-") as tmp:
        root = Path(out) if out is not None else Path(tmp)
        tokenizer = save_tokenizer(recall_tokenizer(seed=seed), root / "tokenizer")
        trainers: dict[str, Trainer] = {}
        metrics: dict[str, dict[str, Any]] = {}
        for name, use_memory in (("LM2", True), ("vanilla", False)):
            cfg = recall_run(tokenizer, use_memory, steps, samples, seed, window, train_windows=TRAIN_WINDOWS,
                             filler_per="batch")  # fmt: skip
            trainer = Trainer(cfg, root / name.lower())
            if use_memory:
                vocab = trainer.model.config.vocab_size
                print(format_breakdown(count_parameters(trainer.model.config), f"demo LM2 (word vocabulary of {vocab})"))
            n_params = sum(p.numel() for p in trainer.model.parameters())
            print(f"training {name} ({n_params:,} parameters, attention window {window}) for {steps} steps", flush=True)
            metrics[name] = trainer.run()
            trainers[name] = trainer
            for record in trainer.folder.records():
                if "loss" in record:
                    print(f"  step {record['step']:4d}  loss {record['loss']:.3f}")
        trainers["LM2"].model.config.memory_read = False
        metrics["LM2, read off"] = trainers["LM2"].evaluate()
    distances = {"inside": 0, "2x": 2 * window, "8x": 8 * window, "32x": 32 * window}
    print(
        f"\naccuracy on {samples} held-out samples per cell (chance 1/6 = 0.17); F filler tokens between the"
    )
    print(f"fact and the question; the attention window is {window} tokens")
    header = "".join(f"{f'{k} (F={f})':>16}" for k, f in distances.items())
    print(f"{'':16}{header}")
    for name, values in metrics.items():
        cells = "".join(f"{values[f'val_acc_filler{f}']:>16.2f}" for f in distances.values())
        print(f"{name:16}{cells}")
    print(f"({time.perf_counter() - start:.0f}s)")
