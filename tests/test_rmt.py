"""Recurrent Memory Transformer baseline: causality, recurrence, caching, gradients, save/load, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lm2.models.rmt import RMTCache, RMTConfig, RMTForCausalLM
from tests.conftest import TINY_BACKBONE

M, S = 3, 5  # memory tokens, segment length: odd sizes so segments never align with anything by chance


def _config(**overrides) -> RMTConfig:
    fields = dict(
        **TINY_BACKBONE,
        vocab_size=64,
        max_position_embeddings=64,
        num_mem_tokens=M,
        segment_length=S,
        eos_token_id=None,
        pad_token_id=0,
    )
    fields.update(overrides)
    return RMTConfig(**fields)


def _model(seed: int = 0, **overrides) -> RMTForCausalLM:
    torch.manual_seed(seed)
    return RMTForCausalLM(_config(**overrides)).double().eval()


def _ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 64, shape, generator=torch.Generator().manual_seed(seed))


# Two computations that must agree are compared in float64, where the only differences left are the
# rounding of differently shaped kernels (~1e-16); a real error (a token seeing the wrong memory or
# position) is of order 1e-2.
ATOL = 1e-10


def test_no_leak_and_memory_carries_information_across_segments() -> None:
    model = _model()
    ids = _ids(2, 23)
    base = model(ids).logits  # (2, 23, V)
    for j in (0, 4, 5, 12, 22):
        changed = ids.clone()
        changed[:, j] = (changed[:, j] % 63) + 1
        logits = model(changed).logits
        assert torch.equal(logits[:, :j], base[:, :j]), f"changing token {j} changed earlier logits"
        assert (logits[:, j:] - base[:, j:]).abs().max() > 1e-3, f"token {j} has no effect at all"
    # Token 0 lives in segment 0; segments 2-4 can only learn of it through the memory chain.
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] % 63) + 1
    later = model(changed).logits[:, 2 * S :] - base[:, 2 * S :]
    assert later.abs().amax(dim=-1).min() > 1e-6


@pytest.mark.parametrize("cuts", [(1, 2, 3, 4), (4, 11, 12), (5, 10, 15, 20), (7, 19)])
def test_chunking_invariance(cuts: tuple[int, ...]) -> None:
    model = _model()
    ids = _ids(2, 23)
    whole = model(ids, use_cache=True)
    cache, pieces = None, []
    for a, b in zip((0, *cuts), (*cuts, 23), strict=True):
        out = model(ids[:, a:b], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.memory, whole.past_key_values.memory, atol=ATOL, rtol=0)
    assert cache.seen == 23 and [len(p) for p in cache.pending] == [23 % S] * 2


def test_left_padding_is_invisible() -> None:
    model = _model()
    a, b = _ids(1, 13, seed=2), _ids(1, 6, seed=3)
    batch = torch.zeros(2, 13, dtype=torch.long)
    batch[0], batch[1, 7:] = a[0], b[0]
    mask = (torch.arange(13) >= torch.tensor([[0], [7]])).long()
    logits = model(batch, attention_mask=mask).logits
    torch.testing.assert_close(logits[0], model(a).logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits[1, 7:], model(b).logits[0], atol=ATOL, rtol=0)
    generated = model.generate(batch, attention_mask=mask, max_new_tokens=9, do_sample=False)
    assert torch.equal(generated[0], model.generate(a, max_new_tokens=9, do_sample=False)[0])
    assert torch.equal(generated[1, 7:], model.generate(b, max_new_tokens=9, do_sample=False)[0])


def test_cached_greedy_generation_equals_recomputation() -> None:
    model = _model()
    prompt = _ids(2, 7)
    # 13 new tokens cross two segment boundaries (at 10 and 15 tokens), so the memory is written twice.
    generated = model.generate(prompt, max_new_tokens=13, do_sample=False)
    seq = prompt
    for _ in range(13):
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(generated, seq)
    assert torch.equal(generated, model.generate(prompt, max_new_tokens=13, do_sample=False, use_cache=False))


def test_beam_search_and_sampling_run() -> None:
    model = _model()
    prompt = _ids(2, 6)
    beams = model.generate(prompt, max_new_tokens=8, num_beams=3, do_sample=False)
    assert beams.shape == (2, 14) and torch.equal(beams[:, :6], prompt)
    torch.manual_seed(0)
    samples = model.generate(prompt, max_new_tokens=8, do_sample=True, num_return_sequences=2)
    assert samples.shape == (4, 14) and torch.equal(samples[::2, :6], prompt)


def _segment_grads(bptt_depth: int | None, n_segments: int = 4) -> tuple[list[bool], bool]:
    """Which segments' input embeddings, and whether the initial memory, get gradient from the last
    segment's loss alone."""
    model = _model(bptt_depth=bptt_depth).train()
    ids = _ids(1, n_segments * S)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits
    logits[:, -S:].logsumexp(-1).sum().backward()
    per_segment = embeds.grad[0].abs().sum(-1).view(n_segments, S).sum(-1)
    return [bool(g > 0) for g in per_segment], bool(model.model.memory.grad.abs().sum() > 0)


def test_gradients_reach_the_memory_through_segments() -> None:
    segments, memory = _segment_grads(None)
    assert segments == [True, True, True, True] and memory


@pytest.mark.parametrize(("k", "expected"), [(1, [False, False, True, True]), (2, [False, True, True, True])])
def test_truncated_bptt_cuts_the_memory_chain(k: int, expected: list[bool]) -> None:
    # Documented rule: only the memory entering a sample's last k segments keeps its graph.
    segments, memory = _segment_grads(k)
    assert segments == expected and not memory
    assert _segment_grads(3) == ([True] * 4, True)  # depth >= segments - 1 is full BPTT


def test_loss_is_the_shifted_mean_cross_entropy() -> None:
    model = _model()
    ids = _ids(2, 12)
    labels = ids.clone()
    labels[0, :4] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected.float())  # HF computes the loss in float32


def test_save_load_round_trip_through_auto_classes(tmp_path) -> None:
    model = _model(bptt_depth=2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, RMTConfig) and config.num_mem_tokens == M and config.bptt_depth == 2
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    assert isinstance(loaded, RMTForCausalLM)
    ids = _ids(2, 17)
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert torch.equal(loaded.model.memory, model.model.memory)


def test_cache_batch_operations() -> None:
    memory = torch.arange(3.0).view(3, 1, 1)
    cache = RMTCache(memory, [torch.zeros(i, 1) for i in range(3)], seen=4)
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    assert cache.memory.flatten().tolist() == [2.0, 0.0, 0.0] and [len(p) for p in cache.pending] == [2, 0, 0]
    cache.batch_repeat_interleave(2)
    assert cache.memory.flatten().tolist() == [2.0, 2.0, 0.0, 0.0, 0.0, 0.0] and cache.get_seq_length() == 4


def test_bad_input_is_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match="empty input"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="do not pass position_ids"):
        model(_ids(1, 4), position_ids=torch.arange(4)[None])
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="attention_mask has 3 columns"):
        model(_ids(1, 4), attention_mask=torch.ones(1, 3, dtype=torch.long))
    cache = model(_ids(2, 4), use_cache=True).past_key_values
    with pytest.raises(ValueError, match="holds 2 samples but the input has 1"):
        model(_ids(1, 4), past_key_values=cache)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_mem_tokens": 0}, "num_mem_tokens must be an integer >= 1"),
        ({"bptt_depth": 0}, "bptt_depth must be None"),
        ({"segment_length": 0}, "segment_length must be a positive integer"),
        ({"use_memory": True}, "without LM2 memory"),
        ({"num_mem_tokens": 30}, "more than max_position_embeddings"),
    ],
)
def test_contradictory_config_is_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_from_lm2_takes_the_vanilla_backbone_and_head() -> None:
    from lm2.models.lm2 import LM2Config, LM2ForCausalLM

    fields = dict(_config().to_dict())
    backbone = {k: fields[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")}
    torch.manual_seed(0)
    vanilla = LM2ForCausalLM(LM2Config(use_memory=False, num_attention_heads=4, **backbone))
    rmt = RMTForCausalLM.from_lm2(vanilla, num_mem_tokens=2, segment_length=6, bptt_depth=1)
    assert (rmt.config.num_mem_tokens, rmt.config.segment_length, rmt.config.bptt_depth) == (2, 6, 1)
    theirs = vanilla.model.state_dict()
    for name, tensor in rmt.model.backbone.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert torch.equal(rmt.lm_head.weight, vanilla.lm_head.weight)
    with pytest.raises(ValueError, match="vanilla backbone"):
        RMTForCausalLM.from_lm2(LM2ForCausalLM(LM2Config(use_memory=True, num_attention_heads=4, **backbone)))


def test_tuple_outputs_when_asked() -> None:
    model = _model()
    ids = _ids(1, 7)
    logits, cache = model(ids, use_cache=True, return_dict=False)
    assert torch.equal(logits, model(ids).logits) and isinstance(cache, RMTCache)


def test_rmt_learns_to_carry_a_key_through_memory() -> None:
    """A key at the start of segment 0 must be recalled at the end of segment 2: segments never attend to
    each other, so only the memory can carry it. Measured: 99% after 60 steps (chance 1/8)."""
    torch.manual_seed(0)
    n_keys, query = 8, 8
    model = RMTForCausalLM(_config(vocab_size=32, num_mem_tokens=2, segment_length=6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(n_keys + 1, 32, (n, 18), generator=g)  # 3 segments of filler
        key = torch.randint(0, n_keys, (n,), generator=g)
        x[:, 0], x[:, -2], x[:, -1] = key, query, key
        return x, key

    for step in range(70):
        x, key = batch(32, seed=step)
        labels = torch.full_like(x, -100)
        labels[:, -1] = key
        loss = model(x, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, key = batch(256, seed=10_000)
    with torch.no_grad():
        accuracy = (model(x).logits[:, -2].argmax(-1) == key).float().mean().item()
    assert accuracy >= 0.8, f"recall through memory {accuracy:.2f}"


def test_bf16_autocast_trains_and_keeps_the_memory_dtype() -> None:
    torch.manual_seed(0)
    model = RMTForCausalLM(_config())
    ids = _ids(2, 17)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids, use_cache=True)
    out.loss.backward()
    assert out.past_key_values.memory.dtype == torch.float32 and torch.isfinite(out.loss)
    assert model.model.memory.grad.abs().sum() > 0


def test_loading_refuses_pickles_and_a_different_memory_size(tmp_path) -> None:
    model = _model()
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(ValueError, match="saved with num_mem_tokens=3; its memory cannot be loaded as 4"):
        RMTForCausalLM.from_pretrained(tmp_path / "ok", num_mem_tokens=M + 1)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled checkpoint"):
        RMTForCausalLM.from_pretrained(pickled)
