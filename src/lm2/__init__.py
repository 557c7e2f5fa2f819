"""lm2: LM2 Large Memory Models in PyTorch, Hugging Face compatible."""

from importlib.metadata import version as _v

# Importing lm2.models registers LM2 and RMT with the Auto classes (once, there).
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
