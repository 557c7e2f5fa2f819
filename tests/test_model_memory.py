"""The memory path: naive reference == fast path, gradients, batch independence, information beyond the window."""

from __future__ import annotations

import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM


def tiny(**overrides) -> LM2Config:
    return LM2Config.from_preset("tiny", **overrides)


def build(config: LM2Config, seed: int = 0, dtype: torch.dtype = torch.float32) -> LM2ForCausalLM:
    torch.manual_seed(seed)
    model = LM2ForCausalLM(config).to(dtype)
    # Larger than the default init so that memory reads, gates and writes all matter numerically.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "memory" in name and p.dim() == 2 and "initial_state" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def run(model: LM2ForCausalLM, impl: str, ids: torch.Tensor, mask: torch.Tensor | None, pieces: list[int]):
    """Forward in pieces through the cache with the given memory implementation; loss backward."""
    for block in model.model.layers:
        if block.memory is not None:
            block.memory.impl = impl
    model.zero_grad()
    cache, logits, start = None, [], 0
    for end in pieces:
        out = model(
            ids[:, start:end],
            attention_mask=None if mask is None else mask[:, :end],
            past_key_values=cache,
            use_cache=True,
        )
        cache, start = out.past_key_values, end
        logits.append(out.logits)
    logits = torch.cat(logits, 1)
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    logits[keep].square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits, cache, grads


@pytest.mark.parametrize(
    "overrides, padded, pieces",
    [
        ({}, False, [63]),  # S = 8 does not divide T = 63
        ({"memory_topk": 3, "memory_init": "learned", "memory_layers": [1]}, False, [63]),
        ({"segment_length": 5}, True, [17, 18, 40, 63]),  # left padding, open segments across calls
        ({"segment_length": 5, "short_conv": 4}, True, [2, 18, 40, 63]),  # block inputs through the conv
        ({"segment_length": 5, "memory_norm": True}, True, [17, 18, 40, 63]),  # the state normalised
    ],
)
def test_naive_equals_fast(overrides, padded, pieces) -> None:
    config = tiny(**overrides)
    model = build(config, dtype=torch.float64)
    torch.manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (3, 63))
    mask = None
    if padded:
        mask = torch.ones(3, 63, dtype=torch.long)
        mask[0, :7] = 0
        mask[2, :20] = 0
    fast_logits, fast_cache, fast_grads = run(model, "fast", ids, mask, pieces)
    naive_logits, naive_cache, naive_grads = run(model, "naive", ids, mask, pieces)
    keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    torch.testing.assert_close(fast_logits[keep], naive_logits[keep], rtol=1e-10, atol=1e-10)
    layers = config.memory_layer_indices
    assert layers
    for i in layers:
        torch.testing.assert_close(fast_cache.layers[i].memory, naive_cache.layers[i].memory, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(fast_cache.layers[i].pending, naive_cache.layers[i].pending, rtol=1e-10, atol=1e-10)
        # The state really moved away from its initial value (the writes happened).
        init = model.model.layers[i].memory.initial(3, ids.device, torch.float64)
        assert (fast_cache.layers[i].memory - init).abs().max() > 1e-3
    assert set(fast_grads) == set(naive_grads)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], naive_grads[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("memory_init, memory_norm", [("identity", False), ("learned", False), ("identity", True)])
def test_every_memory_parameter_gets_gradient(memory_init: str, memory_norm: bool) -> None:
    config = tiny(memory_init=memory_init, segment_length=4, memory_norm=memory_norm)
    model = build(config).train()
    ids = torch.randint(0, config.vocab_size, (2, 24))
    model(ids, labels=ids).loss.backward()
    memory_params = [(n, p) for n, p in model.named_parameters() if ".memory." in n]
    # 7 projections + forget bias (+ the learned initial state, + the state norm's scale) per memory block.
    per_block = 8 + (memory_init == "learned") + memory_norm
    assert len(memory_params) == config.num_hidden_layers * per_block
    for name, p in memory_params:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_batch_independence() -> None:
    """A sample's outputs and memory do not depend on the other samples of its batch (padding included)."""
    config = tiny(segment_length=4)
    model = build(config)
    torch.manual_seed(2)
    ids = torch.randint(0, config.vocab_size, (3, 30))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    with torch.no_grad():
        together = model(ids, attention_mask=mask)
        for b in range(3):
            alone = model(ids[b : b + 1, mask[b].bool()])
            torch.testing.assert_close(
                together.logits[b, mask[b].bool()], alone.logits[0], rtol=1e-4, atol=1e-5
            )
            for i in config.memory_layer_indices:
                torch.testing.assert_close(
                    together.past_key_values.layers[i].memory[b],
                    alone.past_key_values.layers[i].memory[0],
                    rtol=1e-4,
                    atol=1e-5,
                )
        # Changing another sample changes nothing for sample 0.
        other = ids.clone()
        other[1:] = torch.randint(0, config.vocab_size, (2, 30))
        changed = model(other, attention_mask=mask)
    torch.testing.assert_close(changed.logits[0], together.logits[0], rtol=0, atol=0)


def test_memory_carries_information_beyond_the_window() -> None:
    """With the window excluding segment 0, a token there changes predictions segments later only via memory."""
    S, W, T = 4, 4, 32
    ids = torch.randint(1, 128, (1, T), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, 1] = (ids[0, 1] + 7) % 128
    for use_memory in (True, False):
        model = build(tiny(use_memory=use_memory, segment_length=S, attention_window=W))
        with torch.no_grad():
            a, b = model(ids).logits, model(changed).logits
        diff = (a - b).abs().amax(-1)[0]  # (T,)
        late = diff[3 * S :]  # segments 3+: far outside the window of the changed token
        if use_memory:
            assert late.min() > 1e-4, late
        else:
            assert late.max() == 0, late
        # Inside the window the change is visible either way; before it, never.
        assert diff[1] > 0 and diff[0] == 0


def test_bf16_autocast_and_bf16_weights() -> None:
    """Mixed precision (CPU autocast) and bf16 weights run forward, backward and generation with memory."""
    config = tiny(segment_length=4, attention_window=8)
    model = build(config).train()
    ids = torch.randint(0, config.vocab_size, (2, 30))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=mask, labels=ids)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        fp32 = model(ids, attention_mask=mask, labels=ids).loss
    assert abs(out.loss.item() - fp32.item()) < 0.05 * fp32.item()  # bf16 rounding, not a different function
    half = build(config).to(torch.bfloat16)
    generated = half.generate(ids[:, :6], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 14)
