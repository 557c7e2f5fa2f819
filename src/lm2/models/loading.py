"""Checkpoint loading shared by the model families: safetensors only, every weight accounted for, and the
reading of a transformers Llama checkpoint (its config and weights) for ``LM2ForCausalLM.from_llama``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lm2.layers.rotary import LLAMA3_KEYS
from lm2.models.lm2.configuration_lm2 import LM2Config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickles(path: Path) -> None:
    """A checkpoint folder must hold safetensors: pickles can run code when loaded."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{path} holds a pickled checkpoint ({', '.join(pickles)}) and no .safetensors file; only safetensors "
            "checkpoints are loaded (convert it with safetensors.torch.save_file on a trusted machine)"
        )
    raise ValueError(f"{path} holds no .safetensors weights")


def load_every_weight(load: Callable[..., Any], path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
    """Run a ``PreTrainedModel.from_pretrained`` (safetensors by default) and refuse any missing, unexpected
    or mismatched weight instead of letting it be silently re-initialised or dropped."""
    want_info = kwargs.pop("output_loading_info", False)
    kwargs.setdefault("use_safetensors", True)
    model, info = load(path, *args, output_loading_info=True, **kwargs)
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the model: {problems}")
    return (model, info) if want_info else model


def llama_config_to_lm2(llama: Any, **memory_options: Any) -> LM2Config:
    """The LM2Config of a transformers LlamaConfig (or its dict), refusing features LM2 does not implement."""
    cfg = llama if isinstance(llama, dict) else llama.to_dict()
    if cfg.get("model_type", "llama") != "llama":
        raise ValueError(f"from_llama expects a Llama checkpoint, got model_type={cfg.get('model_type')!r}")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    unsupported = {
        "attention_bias": cfg.get("attention_bias", False),
        "mlp_bias": cfg.get("mlp_bias", False),
        "hidden_act": cfg.get("hidden_act", "silu") != "silu",
        "rope_type": rope_type not in ("default", "llama3"),
    }
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim * cfg["num_attention_heads"] != cfg["hidden_size"]:
        unsupported["head_dim"] = True
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ValueError(
            f"this Llama checkpoint uses features LM2 does not implement: {bad} (supported: no biases, silu, "
            f"default or llama3 RoPE, head_dim = hidden_size / num_attention_heads); rope={rope}"
        )
    fields = dict(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads"),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
        rope_llama3={k: rope[k] for k in LLAMA3_KEYS} if rope_type == "llama3" else None,
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
        initializer_range=cfg.get("initializer_range", 0.02),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        pad_token_id=cfg.get("pad_token_id"),
    )
    return LM2Config(**{**fields, **memory_options})


def lm2_config_to_llama(config: LM2Config, **llama_options: Any) -> Any:
    """The transformers ``LlamaConfig`` of an LM2 config's backbone (the inverse of
    :func:`llama_config_to_lm2`): with ``use_memory=False`` the two models take each other's weights."""
    from transformers import LlamaConfig

    if config.short_conv:
        raise ValueError(
            f"transformers' Llama has no short convolution: a backbone with short_conv={config.short_conv} has "
            "no Llama twin (only short_conv=0 does)"
        )
    rope = {"rope_theta": config.rope_theta, "rope_type": "default"}
    if config.rope_llama3:
        rope = {**rope, "rope_type": "llama3", **config.rope_llama3}
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters=rope,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        **llama_options,
    )


def load_llama(path_or_model: Any) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, state dict) of a LlamaForCausalLM object or a local safetensors checkpoint folder."""
    if isinstance(path_or_model, nn.Module):
        return path_or_model.config.to_dict(), dict(path_or_model.state_dict())
    path = Path(path_or_model)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {path} (from_llama reads local folders only)")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json")
    refuse_pickles(path)
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    return json.loads((path / "config.json").read_text()), state


NOT_CAUSAL = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
              "ForMultipleChoice", "ForPreTraining", "ForNextSentencePrediction")  # fmt: skip


def check_causal(config: dict[str, Any], where: str | os.PathLike) -> None:
    """Refuse a model that does not predict the next token (a masked LM, an encoder-decoder, a classifier):
    scored as a causal LM it would give numbers without meaning, and no error."""
    architectures = config.get("architectures") or []
    if config.get("is_encoder_decoder"):
        raise ValueError(f"{where}: an encoder-decoder model ({config.get('model_type')}); lm2 needs a causal LM")
    if architectures and all(a.endswith(NOT_CAUSAL) for a in architectures):
        raise ValueError(
            f"{where}: a {architectures[0]}, not a causal language model (its head does not predict the next "
            "token); lm2 evaluates and trains causal LMs (LM2, RMT, Llama-style ...ForCausalLM)"
        )
