"""Vanilla parity: with memory off, LM2 is transformers' LlamaForCausalLM on the same weights."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lm2 import LM2Config, LM2ForCausalLM
from lm2.models.loading import lm2_config_to_llama
from lm2.models.outputs import CACHE_FIELD, output_cache
from tests.conftest import TINY_BACKBONE


def llama_twin(config: LM2Config) -> LlamaForCausalLM:
    return LlamaForCausalLM(lm2_config_to_llama(config, attn_implementation="eager"))


@pytest.mark.parametrize("tie", [False, True])
def test_vanilla_matches_transformers_llama(tie: bool) -> None:
    torch.manual_seed(0)
    config = LM2Config.from_preset("tiny", use_memory=False, tie_word_embeddings=tie, rope_theta=500.0)
    llama = llama_twin(config).eval()
    ours = LM2ForCausalLM(config).eval()
    missing, unexpected = ours.load_state_dict(llama.state_dict(), strict=True)
    assert not missing and not unexpected
    ids = torch.randint(0, config.vocab_size, (3, 37))
    with torch.no_grad():
        ref = llama(ids).logits
        got = ours(ids).logits
        # Incremental decoding through the cache gives the same logits too.
        ref_step = llama(ids[:, :30], use_cache=True)
        ref_next = llama(ids[:, 30:], **{CACHE_FIELD: output_cache(ref_step)}).logits
        got_step = ours(ids[:, :30], use_cache=True)
        got_next = ours(ids[:, 30:], cache=output_cache(got_step)).logits
    assert ref.abs().max() > 0.1  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_next, ref_next, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_next, got[:, 30:], rtol=1e-5, atol=1e-5)


def test_vanilla_has_no_memory_parameters() -> None:
    model = LM2ForCausalLM(LM2Config.from_preset("tiny", use_memory=False))
    assert not [n for n, _ in model.named_parameters() if "memory" in n]
    llama = llama_twin(model.config)
    assert set(model.state_dict()) == set(llama.state_dict())


def test_llama3_rope_scaling_matches_transformers() -> None:
    """Llama 3.x checkpoints rescale RoPE frequencies; from_llama carries that over exactly."""
    torch.manual_seed(0)
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,  # short, so that every frequency band is rescaled here
    }
    llama = LlamaForCausalLM(
        LlamaConfig(
            **TINY_BACKBONE,
            vocab_size=64,
            rope_parameters=rope,
            max_position_embeddings=64,
        )
    ).eval()
    with torch.no_grad():
        for p in llama.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    ours = LM2ForCausalLM.from_llama(llama, use_memory=False).eval()
    assert ours.config.rope_llama3 is not None
    plain = LM2ForCausalLM(LM2Config(**{**ours.config.to_dict(), "rope_llama3": None})).eval()
    plain.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 64, (2, 40))
    with torch.no_grad():
        ref = llama(ids).logits
        torch.testing.assert_close(ours(ids).logits, ref, rtol=1e-5, atol=1e-5)
        assert (plain(ids).logits - ref).abs().max() > 1e-3  # the rescaling matters at these positions
