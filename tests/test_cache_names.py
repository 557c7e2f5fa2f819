"""The cache under either name (transformers 5.24 renamed ``past_key_values`` to ``cache``), never dropped."""

from __future__ import annotations

import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM
from lm2.models.outputs import CACHE_FIELD, output_cache
from lm2.models.rmt import RMTConfig, RMTForCausalLM
from tests.conftest import TINY_BACKBONE


def lm2_model() -> LM2ForCausalLM:
    torch.manual_seed(0)
    return LM2ForCausalLM(LM2Config.from_preset("tiny", segment_length=4)).eval()


def rmt_model() -> RMTForCausalLM:
    torch.manual_seed(0)
    config = RMTConfig(
        **TINY_BACKBONE,
        vocab_size=100,
        num_mem_tokens=2,
        segment_length=5,
        pad_token_id=0,
    )
    return RMTForCausalLM(config).eval()


MODELS = [lm2_model, rmt_model]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_either_name_continues_the_cache(make, name: str) -> None:
    model = make()
    ids = torch.randint(0, 100, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids).logits
        first = model(ids[:, :8], use_cache=True)
        rest = model(ids[:, 8:], use_cache=True, **{name: output_cache(first)})
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), whole, atol=1e-5)
    # The output names the cache as the installed transformers reads it.
    assert getattr(rest, CACHE_FIELD) is not None


@pytest.mark.parametrize("make", MODELS)
def test_unknown_keywords_and_a_cache_passed_twice_are_errors(make) -> None:
    model = make()
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = output_cache(model(ids, use_cache=True))
        with pytest.raises(TypeError, match="unexpected keyword arguments: kache"):
            model(ids, kache=cache)
        with pytest.raises(TypeError, match="unexpected keyword arguments: kache"):
            model.model(ids, kache=cache)
        with pytest.raises(ValueError, match="passed twice"):
            model(ids, cache=cache, past_key_values=cache)


@pytest.mark.parametrize("make", MODELS)
def test_generate_uses_the_cache_on_the_installed_transformers(make) -> None:
    """Greedy decoding through generate() (whatever name it passes) equals recomputing every step."""
    model = make()
    prompt = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    got = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0)
    ids = prompt
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(got, ids)
