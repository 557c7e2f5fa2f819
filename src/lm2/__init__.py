"""lm2: LM2 Large Memory Models in PyTorch, Hugging Face compatible."""

from importlib.metadata import version as _v

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from lm2.models import (
    LM2Cache,
    LM2Config,
    LM2ForCausalLM,
    LM2Model,
    RMTCache,
    RMTConfig,
    RMTForCausalLM,
    RMTModel,
)

__version__ = _v("lm2")

# Registered on import, so `import lm2` then AutoModelForCausalLM.from_pretrained(dir) works offline.
for _config, _model, _causal_lm in (
    (LM2Config, LM2Model, LM2ForCausalLM),
    (RMTConfig, RMTModel, RMTForCausalLM),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForCausalLM.register(_config, _causal_lm, exist_ok=True)

__all__ = [
    "LM2Cache",
    "LM2Config",
    "LM2ForCausalLM",
    "LM2Model",
    "RMTCache",
    "RMTConfig",
    "RMTForCausalLM",
    "RMTModel",
    "__version__",
]
