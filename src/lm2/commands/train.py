"""``lm2 train`` and ``lm2 prepare``: a training run from a YAML config, and running text tokenised into shards."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from lm2.utils.text import comma_list


def _exit_distributed(code: int) -> None:
    """End a torchrun process with an honest exit code and without gloo's abort at interpreter exit."""
    import torch.distributed as dist


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
    processes with ``torchrun --nproc_per_node N -m lm2.cli train ...``. Each shipped config's header
    says how long it trains on 2 cores.

    Args:
        config: a YAML config file, or the name of a shipped one (memory-qa1-lm2, ...; lm2/configs, which
            configs/ in a checkout links to; docs/training.md).
        out: the output folder.
        set: overrides, space-separated key.sub=value pairs, e.g. "optim.lr=3e-4 train.batch_size=16".
        resume: continue from the newest checkpoint in OUT (bit-identically); starts afresh if there is none.
    """
    from lm2.train.config import load_config
    from lm2.train.trainer import Trainer, TrainingDiverged

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


def prepare(inputs: str, tokenizer: Path, out: Path, shard_tokens: int = 50_000_000) -> None:
    """Tokenise text files once into memory-mapped shards for language-model pretraining (data.kind: text).

    Args:
        inputs: comma-separated text files, folders (searched for *.txt) or globs; synthetic or
            synthetic:SEED for the labelled synthetic haystack.
        tokenizer: a tokenizer folder.
        out: the output folder (shard-NNNNN.bin + meta.json).
        shard_tokens: tokens per shard file.
    """
    from lm2.data.shards import prepare_text
    from lm2.data.tokenizer import load_tokenizer

    meta = prepare_text(
        comma_list(inputs), load_tokenizer(tokenizer), out, shard_tokens
    )
    print(
        f"{meta['tokens']} tokens from {len(meta['sources'])} files in {len(meta['shards'])} shards -> {out}"
    )
