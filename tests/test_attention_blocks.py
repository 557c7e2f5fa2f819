"""Block-local windowed attention (attention_impl="blocked") equals the masked reference ("masked").

Both are computed on the same live model (the implementation is read from the config at every call), in
float64, where two correct computations differ by rounding only (~1e-15) and a query that sees one key
too many or too few differs by ~1e-2. Outputs are compared at valid tokens (padding outputs are never
used; the two paths leave different finite values there) and gradients of a loss over valid tokens. Every
case checks that the blocked path really ran.
"""

from __future__ import annotations

import random

import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM
from lm2.layers import WindowBlocks
from lm2.models.rmt import RMTConfig, RMTForCausalLM
from tests.conftest import TINY_BACKBONE

V = 64
TOL = dict(rtol=1e-10, atol=1e-10)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that attention is far from uniform, so a wrong key changes the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "initial_state" not in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def lm2(**overrides) -> LM2ForCausalLM:
    torch.manual_seed(0)
    fields = dict(
        **TINY_BACKBONE, vocab_size=V, memory_slots=6, memory_heads=2, segment_length=5, pad_token_id=0,
    )  # fmt: skip
    return randomise(LM2ForCausalLM(LM2Config(**{**fields, **overrides})).double())


def rmt(**overrides) -> RMTForCausalLM:
    torch.manual_seed(0)
    fields = dict(
        **TINY_BACKBONE, vocab_size=V, num_mem_tokens=3, segment_length=9, max_position_embeddings=64,
        pad_token_id=0,
    )  # fmt: skip
    return randomise(RMTForCausalLM(RMTConfig(**{**fields, **overrides})).double())


# (builder, block size): odd windows, blocks equal to the window (the default, None) or longer and odd,
# memory written every 5 tokens, the vanilla backbone, short_conv, a window of 1; GQA throughout (4 query
# heads, 2 key/value heads), and plain multi-head attention once.
MODELS = {
    "lm2-w7": (lambda: lm2(attention_window=7), None),
    "lm2-w5-block11": (lambda: lm2(attention_window=5), 11),
    "vanilla-w6": (lambda: lm2(attention_window=6, use_memory=False), None),
    "vanilla-w1-block4": (lambda: lm2(attention_window=1, use_memory=False), 4),
    "vanilla-mha-w3": (lambda: lm2(attention_window=3, use_memory=False, num_key_value_heads=4), None),
    "lm2-conv-w5": (lambda: lm2(attention_window=5, short_conv=3), 9),
}


def make(name: str) -> LM2ForCausalLM:
    builder, block = MODELS[name]
    model = builder()
    model.model.attention_block = block
    return model


@pytest.fixture
def blocked_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls laid out for block-local attention (so that a test cannot pass on the reference alone)."""
    calls: list[int] = []
    build = WindowBlocks.build.__func__

    def counting(cls, *args, **kwargs):
        calls.append(1)
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(WindowBlocks, "build", classmethod(counting))
    return calls


def padding(kind: str, B: int, T: int, seed: int) -> torch.Tensor | None:
    """An attention mask (B, T): none, left padding (generation), right padding (a training batch of
    different lengths, one row much shorter than the block grid) or holes anywhere."""
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    lengths = torch.randint(1, T, (B,), generator=g)
    lengths[0] = T
    cols = torch.arange(T)[None, :]
    if kind == "left":
        return (cols >= T - lengths[:, None]).long()
    if kind == "right":
        lengths[-1] = 3
        return (cols < lengths[:, None]).long()
    mask = (torch.rand(B, T, generator=g) > 0.35).long()
    mask[:, 0] = 1
    return mask


def outputs_and_grads(model, ids, mask, impl: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits at valid tokens and the gradients of a fixed random function of them."""
    model.config.attention_impl = impl
    model.zero_grad(set_to_none=True)
    logits = model(ids, attention_mask=mask, use_cache=False).logits
    valid = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    assert torch.isfinite(logits).all()  # padding outputs too
    picked = logits[valid]  # (valid tokens, V)
    weights = torch.randn(picked.shape, generator=torch.Generator().manual_seed(7), dtype=picked.dtype)
    (picked * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return picked.detach(), grads


@pytest.mark.parametrize("kind", ["none", "left", "right", "holes"])
@pytest.mark.parametrize("name", list(MODELS))
def test_blocked_equals_masked_in_one_call(name: str, kind: str, blocked_calls: list[int]) -> None:
    """One forward over 53 tokens (not a multiple of any block): outputs and every gradient agree."""
    model = make(name).train()
    ids = torch.randint(1, V, (3, 53), generator=torch.Generator().manual_seed(2))
    mask = padding(kind, 3, 53, seed=3)
    want, want_grads = outputs_and_grads(model, ids, mask, "masked")
    assert not blocked_calls
    got, got_grads = outputs_and_grads(model, ids, mask, "blocked")
    assert blocked_calls
    torch.testing.assert_close(got, want, **TOL)
    assert got_grads.keys() == want_grads.keys()
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], **TOL, msg=n)


def pieces(model, ids, mask, cuts: list[int]) -> tuple[torch.Tensor, object]:
    """Logits of ids fed in pieces ending at ``cuts``, the cache carried, the mask over past + new columns
    (as generate() passes it); and the final cache."""
    cache, logits, start = None, [], 0
    for end in [*cuts, ids.shape[1]]:
        out = model(ids[:, start:end], attention_mask=mask[:, :end], past_key_values=cache, use_cache=True)
        cache, start = out.past_key_values, end
        logits.append(out.logits)
    return torch.cat(logits, 1), cache


@pytest.mark.parametrize("name", ["lm2-w7", "lm2-w5-block11", "vanilla-w6", "lm2-conv-w5"])
def test_blocked_equals_masked_through_the_cache(name: str, blocked_calls: list[int]) -> None:
    """Pieces of random lengths (shorter and longer than a block) with padding anywhere: the same logits at
    valid tokens and the same cache (keys, their indices, memory) as the reference fed in one call."""
    model = make(name)
    B, T = 3, 90
    ids = torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(4))
    mask = padding("holes", B, T, seed=5)
    mask[1, :20] = 0  # a left-padded row: its first pieces are all padding
    mask[1, 20] = 1
    valid = mask.bool()
    with torch.no_grad():
        model.config.attention_impl = "masked"
        whole = model(ids, attention_mask=mask, use_cache=True)
        model.config.attention_impl = "blocked"
        rng = random.Random(6)
        for _ in range(4):
            cuts = sorted(rng.sample(range(1, T), rng.randint(1, 6)))
            calls = len(blocked_calls)
            logits, cache = pieces(model, ids, mask, cuts)
            assert len(blocked_calls) > calls, cuts  # some piece was long enough to run blocked
            torch.testing.assert_close(logits[valid], whole.logits[valid], **TOL, msg=str(cuts))
            assert torch.equal(cache.key_index, whole.past_key_values.key_index)
            for mine, ref in zip(cache.layers, whole.past_key_values.layers, strict=True):
                kept = cache.key_index[:, None, :, None] >= 0  # padding keys are never attended to
                torch.testing.assert_close(mine.keys * kept, ref.keys * kept, **TOL)
                if mine.memory is not None:
                    torch.testing.assert_close(mine.memory, ref.memory, **TOL)


@pytest.mark.parametrize("name", ["lm2-w7", "vanilla-w6"])
def test_generation_is_the_same(name: str, blocked_calls: list[int]) -> None:
    """Left-padded prompts longer than a block (the prompt runs blocked, each decoding step masked):
    greedy generation gives the same tokens as the reference."""
    model = make(name)
    gen = torch.Generator().manual_seed(8)
    prompts = [torch.randint(1, V, (n,), generator=gen) for n in (31, 12, 24)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
    tokens = {}
    for impl in ("masked", "blocked"):
        model.config.attention_impl = impl
        tokens[impl] = model.generate(
            ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0
        )
    assert blocked_calls
    assert torch.equal(tokens["blocked"], tokens["masked"])
    assert len(set(tokens["blocked"][0, width:].tolist())) > 2  # not a degenerate constant continuation


@pytest.mark.parametrize("block", [None, 4])
def test_rmt_backbone_blocked_equals_masked(block: int | None, blocked_calls: list[int]) -> None:
    """RMT runs its backbone on [memory; segment; memory] (3 + 9 + 3 tokens, right padding inside the
    segment for a shorter sample) with positions of its own: a window of 3 makes that blocked."""
    model = rmt(attention_window=3).train()
    model.model.backbone.attention_block = block
    ids = torch.randint(1, V, (2, 40), generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(ids)
    mask[1, :13] = 0  # a shorter sample: its segments end elsewhere
    want, want_grads = outputs_and_grads(model, ids, mask, "masked")
    assert not blocked_calls
    got, got_grads = outputs_and_grads(model, ids, mask, "blocked")
    assert blocked_calls
    torch.testing.assert_close(got, want, **TOL)
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], **TOL, msg=n)


def test_work_per_query_is_bounded_by_the_block() -> None:
    """Each query block is scored against Q + W - 1 keys however long the call is; a block shorter than
    the window is refused (it would need more than one previous block). Calls run blocked from twice as
    many keys as a block scores: decoding steps and short calls keep the masked path."""
    W, Q = 6, 8
    past = torch.zeros(2, dtype=torch.long)
    for T in (20, 200, 2000):
        index, valid = torch.arange(T)[None].expand(2, T), torch.ones(2, T, dtype=torch.bool)
        blocks = WindowBlocks.build(index, past, valid, W, Q)
        assert blocks.mask.shape == (2 * -(-T // Q), 1, Q, Q + W - 1)
        assert blocks.key_shift is not None and blocks.query_column is None  # no padding: slices, no gather
    with pytest.raises(ValueError, match="at least the window"):
        WindowBlocks.build(index, past, valid, W, W - 1)
    assert WindowBlocks.pays(26, W, Q) and not WindowBlocks.pays(25, W, Q)
    assert not WindowBlocks.pays(10**6, None, Q)  # no window: full attention


def test_the_default_is_blocked_and_full_attention_is_unchanged(blocked_calls: list[int]) -> None:
    assert LM2Config().attention_impl == "blocked"
    model = lm2()  # no window: full causal attention, whatever attention_impl says
    ids = torch.randint(1, V, (2, 40), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        model(ids)
    assert not blocked_calls
