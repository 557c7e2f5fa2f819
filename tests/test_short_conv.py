"""The short causal convolution (``short_conv``): the layer against its reference, and the model's properties
with it on — no leak, chunking invariance, generation, padding, the cache's batch operations, save/load,
from_llama — for LM2, the vanilla backbone and RMT; and that it does what it is for (the learning test)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lm2 import LM2Config, LM2ForCausalLM
from lm2.cli import main as cli_main
from lm2.layers import ConvLayout, ShortConv
from lm2.models.lm2.params import count_parameters
from lm2.models.loading import lm2_config_to_llama
from lm2.models.rmt import RMTConfig, RMTForCausalLM
from lm2.train.config import ModelConfig
from lm2.train.models import build_config
from tests.conftest import TINY_BACKBONE

V = 64  # vocabulary of the random models
TOL = dict(rtol=1e-10, atol=1e-10)  # float64: two correct computations differ by rounding only


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that every path, the convolution included, matters numerically."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "initial_state" not in name:
                p.normal_(0.0, 0.3 if ("memory" in name or "short_conv" in name) else 0.1)
    return model.eval()


def lm2_model(kernel: int = 3, dtype: torch.dtype = torch.float64, **overrides) -> LM2ForCausalLM:
    torch.manual_seed(0)
    fields = dict(
        **TINY_BACKBONE, vocab_size=V, short_conv=kernel, memory_slots=6, memory_heads=2, segment_length=5,
        memory_forget_bias=0.0, pad_token_id=0,
    )  # fmt: skip
    return randomise(LM2ForCausalLM(LM2Config(**{**fields, **overrides})).to(dtype))


def rmt_model(kernel: int = 3, dtype: torch.dtype = torch.float64, **overrides) -> RMTForCausalLM:
    torch.manual_seed(0)
    fields = dict(
        **TINY_BACKBONE, vocab_size=V, short_conv=kernel, num_mem_tokens=3, segment_length=5,
        max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    return randomise(RMTForCausalLM(RMTConfig(**{**fields, **overrides})).to(dtype))


# (name, builder): LM2 with memory written every 5 tokens, the vanilla backbone, the vanilla backbone with
# an attention window shorter than the input, RMT; kernels 3 and 5 (odd, and longer than some pieces below).
MODELS = {
    "lm2-k3": lambda **kw: lm2_model(3, **kw),
    "lm2-k5-window": lambda **kw: lm2_model(5, attention_window=6, **kw),
    "vanilla-k5": lambda **kw: lm2_model(5, use_memory=False, **kw),
    "vanilla-k2-window": lambda **kw: lm2_model(2, use_memory=False, attention_window=4, **kw),
    "rmt-k3": lambda **kw: rmt_model(3, **kw),
    "rmt-k5": lambda **kw: rmt_model(5, **kw),
}
LM2_MODELS = [k for k in MODELS if not k.startswith("rmt")]


def ids_of(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, shape, generator=torch.Generator().manual_seed(seed))


def forward_in_pieces(model, ids: torch.Tensor, cuts: list[int], mask: torch.Tensor | None = None):
    """Logits of ids fed in pieces ending at ``cuts`` (and at the end), the cache carried; and the cache.
    The mask, when given, covers past + new columns, as generate() passes it."""
    cache, logits, start = None, [], 0
    for end in [*cuts, ids.shape[1]]:
        out = model(
            ids[:, start:end],
            attention_mask=None if mask is None else mask[:, :end],
            past_key_values=cache,
            use_cache=True,
        )
        cache, start = out.past_key_values, end
        logits.append(out.logits)
    return torch.cat(logits, 1), cache


def conv_states(cache) -> list[torch.Tensor]:
    return [layer.conv_state for layer in cache.layers]


# --- the layer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_fast_convolution_equals_the_loop_reference(kernel: int) -> None:
    """F.conv1d over the compacted stream == the per-token loop: outputs, carried state and gradients,
    with padding anywhere (a sample with no valid token in the call included), with and without a state."""
    torch.manual_seed(0)
    conv = ShortConv(7, kernel).double()
    x = torch.randn(4, 11, 7, dtype=torch.float64, requires_grad=True)
    state = torch.randn(4, kernel - 1, 7, dtype=torch.float64, requires_grad=True)
    padded = torch.rand(4, 11, generator=torch.Generator().manual_seed(1)) > 0.35
    padded[1] = False  # nothing valid: the look-back passes through unchanged
    padded[2] = False  # two valid tokens (columns 2 and 3): fewer than the kernel for k > 2
    padded[2, 2:4] = True
    for valid in (torch.ones(4, 11, dtype=torch.bool), padded):
        for past in (state, None):
            results = []
            for run in ("fast", "naive"):
                conv.zero_grad()
                x.grad = state.grad = None
                if run == "fast":
                    out, new = conv(x, ConvLayout.build(valid), past)
                else:
                    out, new = conv.forward_naive(x, valid, past)
                (out.square().sum() + new.square().sum()).backward()
                grads = [conv.weight.grad, x.grad, None if past is None else state.grad]
                results.append((out, new, [g.clone() for g in grads if g is not None]))
            (fast, fast_state, fast_grads), (naive, naive_state, naive_grads) = results
            torch.testing.assert_close(fast, naive, **TOL)
            torch.testing.assert_close(fast_state, naive_state, **TOL)
            for a, b in zip(fast_grads, naive_grads, strict=True):
                torch.testing.assert_close(a, b, **TOL)
            assert (fast[~valid] == 0).all() and fast[valid].abs().min() > 0
    # The state is the last k-1 valid inputs: sample 2 has valid columns 2 and 3 only.
    out, new = conv(x, ConvLayout.build(padded), state)
    want = torch.cat([state[2], x[2, 2:4]])[-(kernel - 1) :]
    torch.testing.assert_close(new[2], want, rtol=0, atol=0)
    torch.testing.assert_close(new[1], state[1], rtol=0, atol=0)


def test_the_filter_is_causal_and_column_k_minus_1_weighs_the_token_itself() -> None:
    conv = ShortConv(1, 3).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[100.0, 10.0, 1.0]]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1)
    out, state = conv(x, ConvLayout.build(torch.ones(1, 4, dtype=torch.bool)), None)
    assert out.flatten().tolist() == [1.0, 12.0, 123.0, 234.0]  # zeros before the stream starts
    assert state.flatten().tolist() == [3.0, 4.0]


def test_zero_init_and_bad_arguments() -> None:
    assert ShortConv(4, 3, init="zero").weight.abs().max() == 0
    default = ShortConv(64, 4).weight
    assert 0.3 < default.abs().max() <= 0.5  # PyTorch's Conv1d bound 1/sqrt(k) = 0.5
    with pytest.raises(ValueError, match="kernel_size must be an integer >= 2"):
        ShortConv(4, 1)
    with pytest.raises(ValueError, match="init must be one of"):
        ShortConv(4, 3, init="ones")


# --- the model's properties with the convolution on -----------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_no_leak(name: str) -> None:
    """Changing token j never changes outputs before j, one-shot or token by token; it changes output j."""
    model = MODELS[name]()
    T = 23
    ids = ids_of(2, T)
    with torch.no_grad():
        base = model(ids).logits
        base_steps = forward_in_pieces(model, ids, list(range(1, T)))[0] if name in LM2_MODELS else None
        for j in (0, 6, 13, 22):
            changed = ids.clone()
            changed[:, j] = changed[:, j] % (V - 1) + 1
            one_shot = model(changed).logits
            assert torch.equal(one_shot[:, :j], base[:, :j]), j
            assert (one_shot[:, j] - base[:, j]).abs().max() > 1e-4
            if base_steps is not None:
                steps = forward_in_pieces(model, changed, list(range(1, T)))[0]
                assert torch.equal(steps[:, :j], base_steps[:, :j]), j


def test_the_convolution_changes_what_every_model_computes() -> None:
    """The property tests above and below run with a convolution that matters: zeroing it changes the output."""
    ids = ids_of(2, 23)
    for name, make in MODELS.items():
        model = make()
        with torch.no_grad():
            on = model(ids).logits
            for module in model.modules():
                if isinstance(module, ShortConv):
                    module.weight.zero_()
            assert (model(ids).logits - on).abs().max() > 1e-2, name


CUTS = [
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],  # single tokens
    [1, 3, 4, 11, 12],  # pieces shorter than k - 1
    [7, 19],
]


@pytest.mark.parametrize("name", list(MODELS))
def test_chunking_invariance(name: str) -> None:
    """One forward equals the input fed in pieces with the cache carried (the conv's look-back included),
    whatever the boundaries: single tokens, pieces shorter than the look-back, random cuts."""
    model = MODELS[name]()
    T = 23
    ids = ids_of(2, T, seed=2)
    rng = random.Random(3)
    with torch.no_grad():
        whole = model(ids, use_cache=True)
        for cuts in [*CUTS, sorted(rng.sample(range(1, T), 6))]:
            logits, cache = forward_in_pieces(model, ids, cuts)
            torch.testing.assert_close(logits, whole.logits, **TOL, msg=str(cuts))
            if name in LM2_MODELS:
                for a, b in zip(conv_states(cache), conv_states(whole.past_key_values), strict=True):
                    torch.testing.assert_close(a, b, **TOL)


def test_the_cache_holds_each_blocks_last_valid_inputs() -> None:
    """The look-back in the cache is the last k-1 inputs of each block (the residual stream entering it)."""
    model = lm2_model(5)
    ids = ids_of(2, 13)
    with torch.no_grad():
        out = model(ids, use_cache=True, output_hidden_states=True)
    for i, state in enumerate(conv_states(out.past_key_values)):
        assert state.shape == (2, 4, 32)
        torch.testing.assert_close(state, out.hidden_states[i][:, -4:], rtol=0, atol=0)


def greedy_by_recomputation(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    return ids


@pytest.mark.parametrize("name", ["lm2-k3", "lm2-k5-window", "vanilla-k5", "rmt-k5"])
def test_cached_greedy_generation_equals_recomputation(name: str) -> None:
    model = MODELS[name](dtype=torch.float32)
    prompt = ids_of(2, 7, seed=7)
    got = model.generate(prompt, max_new_tokens=14, do_sample=False, pad_token_id=0)
    assert torch.equal(got, greedy_by_recomputation(model, prompt, 14))
    assert all(len(set(row[7:].tolist())) > 2 for row in got)  # not a degenerate constant continuation


def left_padded(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :], mask[b, width - len(p) :] = p, 1
    return ids, mask


@pytest.mark.parametrize("name", ["lm2-k3", "lm2-k5-window", "vanilla-k5", "rmt-k5"])
def test_left_padded_batch_generation_equals_each_prompt_alone(name: str) -> None:
    """Padding never enters the convolution: a left-padded prompt generates what it generates alone."""
    model = MODELS[name](dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(1, V, (n,), generator=gen) for n in (9, 2, 6)]
    ids, mask = left_padded(prompts)
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    for b, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(batched[b, ids.shape[1] :], alone[0, len(p) :]), b


@pytest.mark.parametrize("name", ["lm2-k3", "lm2-k5-window", "vanilla-k5"])
def test_padding_in_the_middle_of_a_cached_stream_is_skipped(name: str) -> None:
    """Padded columns anywhere, fed in pieces through the cache: each sample's outputs equal its unpadded
    stream's. The convolution looks back over the sample's previous valid inputs, across the padding."""
    model = MODELS[name]()
    streams = [ids_of(1, 17, seed=6)[0], ids_of(1, 8, seed=7)[0]]
    # 23 columns each; sample 1 ends in padding, so some pieces hold nothing valid for it
    holes = [[0, 5, 6, 7, 12, 20], [0, 1, 2, 3, 8, 9, 10, 14, 15, 16, 18, 19, 20, 21, 22]]
    ids = torch.zeros(2, 23, dtype=torch.long)
    mask = torch.ones(2, 23, dtype=torch.long)
    for b, (stream, hole) in enumerate(zip(streams, holes, strict=True)):
        mask[b, hole] = 0
        ids[b, mask[b].bool()] = stream
    with torch.no_grad():
        for cuts in ([], [4, 6, 13], list(range(1, 23))):
            logits, cache = forward_in_pieces(model, ids, cuts, mask)
            for b, stream in enumerate(streams):
                alone = model(stream[None], use_cache=True)
                torch.testing.assert_close(logits[b, mask[b].bool()], alone.logits[0], **TOL, msg=str(cuts))
                for a, c in zip(conv_states(cache), conv_states(alone.past_key_values), strict=True):
                    torch.testing.assert_close(a[b], c[0], **TOL)


def test_windowed_long_input_runs_in_chunks_with_the_same_result() -> None:
    """LM2Model splits a long windowed input into chunks through the cache: the conv's look-back crosses
    the chunk boundaries exactly (with memory, and with use_cache=False too)."""
    model = lm2_model(5, attention_window=6, segment_length=4)
    ids = ids_of(2, 161, seed=8)
    with torch.no_grad():
        model.model.window_chunk = 10**9  # one pass
        whole = model(ids, use_cache=True)
        model.model.window_chunk = 13  # chunks of max(2 * 6, 4, 13) = 13 tokens: 161 = 12 * 13 + 5
        chunked = model(ids, use_cache=True)
        no_cache = model(ids, use_cache=False)
    torch.testing.assert_close(chunked.logits, whole.logits, **TOL)
    assert torch.equal(no_cache.logits, chunked.logits)
    for a, b in zip(conv_states(chunked.past_key_values), conv_states(whole.past_key_values), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_naive_memory_equals_fast_with_the_convolution() -> None:
    """The memory's reference loop and its fast path agree (outputs, final state, every gradient) when the
    blocks' inputs come through the convolution; left padding, pieces across calls."""
    model = lm2_model(3, segment_length=4)
    ids = ids_of(3, 29, seed=9)
    mask = torch.ones_like(ids)
    mask[0, :5], mask[2, :11] = 0, 0
    results = {}
    for impl in ("fast", "naive"):
        for block in model.model.layers:
            block.memory.impl = impl
        model.zero_grad()
        logits, cache = forward_in_pieces(model, ids, [3, 10, 18], mask)
        logits[mask.bool()].square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[impl] = logits, cache, grads
    (fast, fast_cache, fast_grads), (naive, naive_cache, naive_grads) = results["fast"], results["naive"]
    torch.testing.assert_close(fast[mask.bool()], naive[mask.bool()], **TOL)
    for a, b in zip(fast_cache.layers, naive_cache.layers, strict=True):
        torch.testing.assert_close(a.memory, b.memory, **TOL)
        torch.testing.assert_close(a.conv_state, b.conv_state, **TOL)
    assert set(fast_grads) == set(naive_grads) and any("short_conv" in n for n in fast_grads)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], naive_grads[name], rtol=1e-9, atol=1e-10, msg=name)


# --- the cache's batch operations, save/load, from_llama --------------------------------------------------


def test_cache_batch_operations_carry_the_look_back() -> None:
    """reorder / select / repeat the batch, then continue: as if the reordered inputs had been fed."""
    model = lm2_model(5)
    ids = ids_of(3, 16, seed=10)
    order = torch.tensor([2, 0, 0])
    with torch.no_grad():
        want = model(ids[order]).logits[:, 9:]
        for op in ("reorder_cache", "batch_select_indices"):
            cache = model(ids[:, :9], use_cache=True).past_key_values
            getattr(cache, op)(order)
            got = model(ids[order, 9:], past_key_values=cache).logits
            torch.testing.assert_close(got, want, **TOL, msg=op)
        cache = model(ids[:, :9], use_cache=True).past_key_values
        cache.batch_repeat_interleave(2)
        got = model(ids[:, 9:].repeat_interleave(2, 0), past_key_values=cache).logits
        torch.testing.assert_close(got, model(ids).logits[:, 9:].repeat_interleave(2, 0), **TOL)
    model.train()
    cache = model(ids[:, :9], use_cache=True).past_key_values
    assert all(s.requires_grad for s in conv_states(cache))
    assert not any(s.requires_grad for s in conv_states(cache.detach()))


def test_beam_search_with_the_cache_equals_beam_search_recomputing() -> None:
    model = lm2_model(5, dtype=torch.float32)
    prompt = ids_of(2, 5, seed=11)
    kwargs = dict(max_new_tokens=10, num_beams=3, do_sample=False, pad_token_id=0, early_stopping=True)
    assert torch.equal(model.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs))


@pytest.mark.parametrize("name", ["lm2-k3", "vanilla-k5", "rmt-k5"])
def test_save_load_round_trip_through_the_auto_classes(tmp_path, name: str) -> None:
    model = MODELS[name](dtype=torch.float32)  # float64 kernels may round differently on reloaded tensors
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.short_conv == model.config.short_conv
    ids = ids_of(2, 17, seed=12)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    for other in (0, model.config.short_conv + 1):
        with pytest.raises(ValueError, match=f"saved with short_conv=.*cannot be loaded with short_conv={other}"):
            type(model).from_pretrained(tmp_path, short_conv=other)


@pytest.mark.parametrize("tie", [False, True])
def test_from_llama_with_short_conv_starts_at_the_llamas_logits(tie: bool) -> None:
    """The new convolutions start at zero, so the logits equal the Llama's; their gradient is not zero."""
    torch.manual_seed(0)
    rope = {"rope_theta": 1000.0, "rope_type": "default"}
    llama = LlamaForCausalLM(LlamaConfig(**TINY_BACKBONE, vocab_size=V, rope_parameters=rope, tie_word_embeddings=tie))
    randomise(llama)
    ids = ids_of(2, 21, seed=13)
    with torch.no_grad():
        want = llama(ids).logits
    for memory in (False, True):
        model = LM2ForCausalLM.from_llama(llama, use_memory=memory, short_conv=5, segment_length=4).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, want, rtol=1e-5, atol=1e-5)
        model.train()
        model(ids, labels=ids).loss.backward()
        for block in model.model.layers:
            assert block.short_conv.weight.abs().max() == 0 and block.short_conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no Llama twin"):
        lm2_config_to_llama(model.config)


# --- configuration, parameter counts, trainer overrides ----------------------------------------------------


def test_off_by_default_and_refused_when_invalid() -> None:
    config = LM2Config.from_preset("tiny")
    assert config.short_conv == 0
    assert not [n for n in LM2ForCausalLM(config).state_dict() if "short_conv" in n]
    for bad in (1, -3, True, 2.5, "5"):
        with pytest.raises(ValueError, match="short_conv must be 0 \\(off\\) or a kernel size >= 2"):
            LM2Config.from_preset("tiny", short_conv=bad)
    assert RMTConfig(**TINY_BACKBONE, short_conv=4).short_conv == 4


def test_parameter_counts_include_the_convolution(capsys) -> None:
    config = LM2Config.from_preset("tiny", short_conv=5)
    counts = count_parameters(config)
    assert [b["short_conv"] for b in counts["blocks"]] == [32 * 5, 32 * 5]
    assert counts["total"] == sum(p.numel() for p in LM2ForCausalLM(config).parameters())
    assert counts["backbone"] - count_parameters(LM2Config.from_preset("tiny"))["backbone"] == 2 * 32 * 5
    assert cli_main(["params", "--preset", "tiny", "--short-conv", "5"]) == 0
    out = capsys.readouterr().out
    assert "short_conv=5" in out and out.count("of which short conv") == 2 and "160" in out


@pytest.mark.parametrize("family", ["lm2", "rmt"])
def test_trainer_model_overrides_accept_short_conv(family: str) -> None:
    config = build_config(ModelConfig(family=family, preset="tiny", overrides={"short_conv": 4}), vocab_size=50)
    assert config.short_conv == 4


def test_bf16_autocast_and_bf16_weights() -> None:
    model = lm2_model(5, dtype=torch.float32, attention_window=8, segment_length=4).train()
    ids = ids_of(2, 19, seed=14)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, attention_mask=mask, labels=ids, use_cache=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.layers[0].short_conv.weight.grad.abs().sum() > 0
    generated = model.to(torch.bfloat16).generate(ids[:, :6], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert generated.shape == (2, 11)


# --- what the convolution is for -----------------------------------------------------------------------

PERSONS, PLACES, FACTS = 4, 5, 5
WENT, WHERE, ASK = 0, 1, 2  # "went", "where", "?"; then the persons' and the places' ids
PERSON, PLACE = 3, 3 + PERSONS


def binding_stories(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """qa1 in miniature: FACTS statements "person went place" (persons repeat), then "where person ?",
    asked about the person of a random statement; the answer is that person's latest place. Returns the
    inputs (n, 3 * FACTS + 3), the answers (n,) and the accuracy of answering with the last statement's place."""
    g = torch.Generator().manual_seed(seed)
    persons = torch.randint(0, PERSONS, (n, FACTS), generator=g)
    places = torch.randint(0, PLACES, (n, FACTS), generator=g)
    facts = torch.stack([PERSON + persons, torch.full_like(persons, WENT), PLACE + places], -1).view(n, -1)
    who = persons.gather(1, torch.randint(0, FACTS, (n, 1), generator=g))[:, 0]
    latest = ((persons == who[:, None]) * torch.arange(1, FACTS + 1)).argmax(1)  # the person's last statement
    answer = PLACE + places.gather(1, latest[:, None])[:, 0]
    question = torch.stack([torch.full_like(who, WHERE), PERSON + who, torch.full_like(who, ASK)], -1)
    return torch.cat([facts, question], 1), answer, (latest == FACTS - 1).float().mean().item()


def binding_accuracy(short_conv: int, steps: int = 400, seed: int = 0) -> tuple[float, float]:
    """Train the recipe's backbone (width 64, 2 blocks, 4 heads) on fresh stories; (accuracy on 500 unseen
    stories, the last-statement shortcut's accuracy there)."""
    torch.manual_seed(seed)
    config = LM2Config(
        vocab_size=PLACE + PLACES, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, use_memory=False, short_conv=short_conv, max_position_embeddings=64,
    )  # fmt: skip
    model = LM2ForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.0)
    for step in range(steps):
        ids, answer, _ = binding_stories(32, seed=1000 * seed + step)
        loss = torch.nn.functional.cross_entropy(model(ids).logits[:, -1], answer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ids, answer, shortcut = binding_stories(500, seed=10**6)
    with torch.no_grad():
        return (model(ids).logits[:, -1].argmax(-1) == answer).float().mean().item(), shortcut


def test_the_convolution_learns_the_binding_the_plain_backbone_does_not() -> None:
    """The option's purpose: with short_conv a tiny backbone binds place to person within a few hundred
    steps; without it the same backbone sits on a plateau (issue 17: qa1's ~52%). About 10 s per model
    on one thread of the shared machine."""
    with_conv, shortcut = binding_accuracy(short_conv=5)
    without, _ = binding_accuracy(short_conv=0)
    assert shortcut < 0.5, shortcut  # the last statement's place is not the answer most of the time
    assert with_conv >= 0.9, with_conv  # measured: 0.98-1.00 for seeds 0-3 (1.00 for seed 0)
    assert without < 0.7, without  # measured: 0.45-0.51 for seeds 0-3 (0.51 for seed 0)
