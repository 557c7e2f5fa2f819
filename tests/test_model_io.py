"""Save/load, Auto classes, from_llama, parameter counts and the errors bad input gets."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import lm2
from lm2 import LM2Config, LM2ForCausalLM, LM2Model
from lm2.cli import main as cli_main
from lm2.models.lm2.params import count_parameters
from tests.conftest import TINY_BACKBONE


def tiny_model(seed: int = 0, **overrides) -> LM2ForCausalLM:
    torch.manual_seed(seed)
    model = LM2ForCausalLM(LM2Config.from_preset("tiny", **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "initial_state" not in name:
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"memory_init": "learned", "memory_layers": [1], "tie_word_embeddings": True},
        {"short_conv": 5},
        {"memory_norm": True},
    ],
)
def test_save_load_roundtrip_and_auto_classes(tmp_path, overrides) -> None:
    model = tiny_model(**overrides)
    ids = torch.randint(0, 128, (2, 19))
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    for loaded in (LM2ForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, LM2ForCausalLM)
        assert loaded.config.memory_signature() == model.config.memory_signature()
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, want)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LM2Config)
    assert lm2.LM2Model is LM2Model


def llama(tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            **TINY_BACKBONE,
            vocab_size=100,
            rope_parameters={"rope_theta": 1000.0, "rope_type": "default"},
            tie_word_embeddings=tie,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
def test_from_llama_keeps_the_logits(tmp_path, tie: bool) -> None:
    base = llama(tie)
    base.save_pretrained(tmp_path)
    ids = torch.randint(0, 100, (2, 30))
    with torch.no_grad():
        want = base(ids).logits
    for source in (base, tmp_path):
        model = LM2ForCausalLM.from_llama(source, memory_slots=6, memory_heads=2, segment_length=7).eval()
        assert model.config.use_memory and model.config.memory_layer_indices == [0, 1]
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, want, rtol=1e-5, atol=1e-5)
        # The memory is really there and trainable: one step on the read output opens the path.
        model.train()
        model(ids, labels=ids).loss.backward()
        assert model.model.layers[0].memory.o_proj.weight.grad.abs().sum() > 0


def test_from_llama_refuses_what_it_cannot_represent(tmp_path) -> None:
    base = llama()
    base.config.attention_bias = True
    with pytest.raises(ValueError, match="attention_bias"):
        LM2ForCausalLM.from_llama(base)
    base = llama()
    state = {k: v.contiguous() for k, v in base.state_dict().items() if "layers.1.mlp" not in k}
    base.config.save_pretrained(tmp_path)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \[.*layers\.1\.mlp"):
        LM2ForCausalLM.from_llama(tmp_path)


def test_parameter_breakdown() -> None:
    counts = count_parameters(LM2Config.from_preset("lm2-1.7b"))
    # The paper: a ~1.2B backbone plus ~0.5B of memory in all 16 blocks.
    assert 1.15e9 < counts["backbone"] < 1.3e9
    assert 0.4e9 < counts["memory"] < 0.6e9
    assert len(counts["blocks"]) == 16 and all(b["memory"] > 0 for b in counts["blocks"])
    vanilla = count_parameters(LM2Config.from_preset("lm2-1.7b", use_memory=False))
    assert vanilla["memory"] == 0 and vanilla["backbone"] == counts["backbone"]
    # Counted on the meta device, the tiny numbers equal those of a real model.
    config = LM2Config.from_preset("tiny", memory_layers=1, memory_init="learned")
    real = LM2ForCausalLM(config)
    tiny = count_parameters(config)
    assert tiny["total"] == sum(p.numel() for p in real.parameters())
    assert tiny["memory"] == sum(p.numel() for n, p in real.named_parameters() if ".memory." in n)
    assert [b["memory"] > 0 for b in tiny["blocks"]] == [True, False]
    small = count_parameters(LM2Config.from_preset("small"))
    assert 5e6 <= small["total"] <= 20e6


def test_params_command(capsys) -> None:
    assert cli_main(["params", "--preset", "tiny", "--no-use-memory"]) == 0
    out = capsys.readouterr().out
    assert "block 1 backbone" in out and "memory total" in out and "block 0 memory" not in out


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30}, "num_attention_heads"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"memory_layers": [0, 2]}, "out of range"),
        ({"memory_layers": 3}, "memory_layers"),
        ({"segment_length": 0}, "segment_length"),
        ({"memory_topk": 9}, "memory_topk"),
        ({"memory_heads": 5}, "memory_heads"),
        ({"memory_init": "zeros"}, "memory_init"),
        ({"attention_window": 0}, "attention_window"),
        ({"attention_impl": "flash"}, "attention_impl"),
        ({"short_conv": 1}, "short_conv"),
        ({"memory_norm": 1}, "memory_norm"),
    ],
)
def test_contradictory_config_is_refused(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        LM2Config.from_preset("tiny", **overrides)


def test_bad_inputs_are_refused() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.tensor([[1, 2, 128]]))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="empty input"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of"):
        model()
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="unknown preset"):
        LM2Config.from_preset("huge")


def test_loading_a_different_memory_configuration_is_refused(tmp_path) -> None:
    tiny_model().save_pretrained(tmp_path)
    for overrides in ({"use_memory": False}, {"memory_slots": 4}, {"memory_layers": [0]}):
        with pytest.raises(ValueError, match="different memory configuration"):
            LM2ForCausalLM.from_pretrained(tmp_path, **overrides)
    other = LM2Config.from_preset("tiny", memory_init="learned")
    with pytest.raises(ValueError, match="memory_init"):
        LM2ForCausalLM.from_pretrained(tmp_path, config=other)


def test_pickled_checkpoint_is_refused(tmp_path) -> None:
    model = tiny_model()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled checkpoint"):
        LM2ForCausalLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pickled checkpoint"):
        LM2ForCausalLM.from_llama(tmp_path)


def test_demo_command(capsys) -> None:
    threads = torch.get_num_threads()
    try:
        assert cli_main(["demo", "--steps", "2", "--samples", "3"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "memory total" in out and "training vanilla" in out and "step    2  loss" in out
    table = out[out.index("inside (F=0)") :].splitlines()
    assert "32x (F=1024)" in table[0]
    assert [line.split()[0] for line in table[1:4]] == ["LM2", "vanilla", "LM2,"]
    assert cli_main(["demo", "--steps", "0"]) == 2  # a clear user error, not a traceback
