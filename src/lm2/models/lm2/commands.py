"""The ``lm2 params`` and ``lm2 demo`` commands."""

from __future__ import annotations

import time

import torch

from lm2.models.lm2.configuration_lm2 import LM2Config
from lm2.models.lm2.modeling_lm2 import LM2ForCausalLM
from lm2.models.lm2.params import count_parameters, format_breakdown

DEMO_TEXT = (
    "Mary moved to the bathroom. John went to the hallway. Where is Mary? bathroom. "
    "Daniel went back to the garden. Sandra journeyed to the kitchen. Where is Daniel? garden. "
)


def params(preset: str = "lm2-1.7b", use_memory: bool = True) -> None:
    """Print the parameter breakdown (backbone vs memory, per block) of a preset, without allocating weights.

    Args:
        preset: One of the presets: tiny, small, lm2-1.7b.
        use_memory: Count the memory banks (--no-use-memory gives the vanilla backbone).
    """
    config = LM2Config.from_preset(preset, use_memory=use_memory)
    print(format_breakdown(count_parameters(config), f"{preset} (use_memory={use_memory})"))


def demo(train_steps: int = 150, max_new_tokens: int = 40, seed: int = 0, threads: int = 1) -> None:
    """Build a small byte-level LM2, print its parameters, fit it briefly to a short text, generate a continuation.

    The model is the tiny preset widened to 64 with a byte vocabulary (~190K parameters, memory in both
    blocks, 16-token segments, a 32-token attention window); about 25 s of CPU time with the defaults.

    Args:
        train_steps: AdamW steps on the demo text before generating (0 = untrained weights).
        max_new_tokens: Bytes to generate after the prompt.
        seed: Random seed.
        threads: CPU threads for torch.
    """
    if train_steps < 0 or max_new_tokens < 1:
        raise ValueError("train_steps must be >= 0 and max_new_tokens >= 1")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    config = LM2Config.from_preset(
        "tiny", vocab_size=256, hidden_size=64, intermediate_size=192, segment_length=16, attention_window=32
    )
    model = LM2ForCausalLM(config)
    print(
        format_breakdown(
            count_parameters(config), "LM2 demo model (byte vocabulary, width 64, S=16, window=32)"
        )
    )

    data = torch.tensor(list((DEMO_TEXT * 4).encode()), dtype=torch.long)
    if train_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
        start, length = time.time(), 96
        model.train()
        for step in range(1, train_steps + 1):
            offsets = torch.randint(0, len(data) - length, (8,))
            batch = torch.stack([data[o : o + length] for o in offsets.tolist()])
            loss = model(batch, labels=batch, use_cache=False).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == train_steps:
                print(f"step {step:4d}  loss {loss.item():.3f}  ({time.time() - start:.1f}s)")
    model.eval()
    prompt = "Mary moved to the bathroom. John went to the hallway. Where is Mary?"
    ids = torch.tensor([list(prompt.encode())])
    start = time.time()
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    elapsed = time.time() - start
    text = bytes(out[0, ids.shape[1] :].tolist()).decode("utf-8", errors="replace")
    print(f"prompt:       {prompt!r}")
    print(f"continuation: {text!r}")
    print(f"({max_new_tokens} tokens in {elapsed:.2f}s with the memory + attention cache)")
