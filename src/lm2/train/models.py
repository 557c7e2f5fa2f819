"""Build the model and tokenizer a run names: ``model.family`` (lm2 | rmt | llama | auto), preset, overrides.

Any Hugging Face causal LM works with the trainer; the families are the ones this project registers
(LM2, the RMT baseline) plus transformers' Llama. ``auto`` loads whatever ``model.pretrained`` holds.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from lm2.data.tokenizer import load_tokenizer
from lm2.train.config import ModelConfig

__all__ = ["build_config", "build_model", "family_classes", "load_tokenizer"]

# family -> (module, config class, model class); imported only when that family is asked for.
FAMILY_CLASSES = {
    "lm2": ("lm2", "LM2Config", "LM2ForCausalLM"),
    "rmt": ("lm2.models.rmt", "RMTConfig", "RMTForCausalLM"),
    "llama": ("transformers", "LlamaConfig", "LlamaForCausalLM"),
}

# Llama presets take the backbone of the LM2 preset of the same name, so "vanilla" runs match LM2's shapes.
_BACKBONE_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings",
)  # fmt: skip


def family_classes(family: str) -> tuple[type, type]:
    module, config_name, model_name = FAMILY_CLASSES[family]
    try:
        mod = importlib.import_module(module)
        return getattr(mod, config_name), getattr(mod, model_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"model.family {family!r} needs {module}.{model_name}, which this installation lacks ({err})"
        ) from err


def _check_overrides(config_cls: type, overrides: dict[str, Any], family: str) -> None:
    """A misspelled override would be silently stored by a PretrainedConfig: refuse unknown fields."""
    known = set(config_cls().to_dict())
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise ValueError(
            f"unknown model.overrides key {unknown[0]!r} for family {family!r}; valid keys: {', '.join(sorted(known))}"
        )


def build_config(cfg: ModelConfig, vocab_size: int) -> Any:
    """The model config of a fresh run: preset + overrides, vocabulary sized to the tokenizer."""
    config_cls, _ = family_classes(cfg.family)
    overrides = dict(cfg.overrides)
    _check_overrides(config_cls, overrides, cfg.family)
    if overrides.get("vocab_size", vocab_size) < vocab_size:
        raise ValueError(
            f"model.overrides.vocab_size {overrides['vocab_size']} < the tokenizer's {vocab_size}"
        )
    overrides.setdefault("vocab_size", vocab_size)
    if cfg.preset is None:
        return config_cls(**overrides)
    if hasattr(config_cls, "from_preset"):
        return config_cls.from_preset(cfg.preset, **overrides)
    if cfg.family == "llama":
        lm2_config, _ = family_classes("lm2")
        base = lm2_config.from_preset(cfg.preset)
        fields = {k: getattr(base, k) for k in _BACKBONE_FIELDS if hasattr(base, k)}
        return config_cls(**{**fields, **overrides})
    raise ValueError(f"model.family {cfg.family!r} has no presets; set model.preset: null and give overrides")


def build_model(cfg: ModelConfig, tokenizer: Any) -> Any:
    """A fresh model (weights from the current torch RNG) or one loaded from ``cfg.pretrained``."""
    if cfg.pretrained:
        from transformers import AutoConfig, AutoModelForCausalLM

        from lm2.models.loading import check_causal

        if cfg.family != "auto":
            family_classes(cfg.family)  # the family must be installed (LM2 and RMT are registered by lm2.models)
        path = Path(cfg.pretrained)
        if not path.is_dir():
            raise FileNotFoundError(f"model.pretrained folder not found: {path}")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"model.pretrained: {config_file} missing (a model folder of save_pretrained)")
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        check_causal(saved, f"model.pretrained {path}")
        # an override must name a field of the checkpoint's own config (an LM2 field on a Llama is an error)
        fields = set(saved)
        if "model_type" in saved:
            fields |= set(AutoConfig.for_model(saved["model_type"]).to_dict())
        unknown = [k for k in cfg.overrides if k not in fields]
        if unknown:
            raise ValueError(
                f"model.overrides.{unknown[0]} is not a field of the {saved.get('model_type', '?')!r} config in "
                f"{path}; remove it (its fields: {', '.join(sorted(saved)[:12])}, ...)"
            )
        model = AutoModelForCausalLM.from_pretrained(str(path), **cfg.overrides)
        expected = {"lm2": "lm2", "rmt": "rmt", "llama": "llama"}.get(cfg.family)
        if expected and model.config.model_type != expected:
            raise ValueError(
                f"model.pretrained holds a {model.config.model_type!r} model but model.family is {cfg.family!r}"
            )
        return model
    _, model_cls = family_classes(cfg.family)
    config = build_config(cfg, len(tokenizer))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(config, name, value)
    return model_cls(config)
