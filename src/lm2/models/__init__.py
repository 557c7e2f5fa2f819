"""Model families of the lm2 package: LM2 and the RMT baseline."""

from lm2.models.lm2 import LM2Cache, LM2Config, LM2ForCausalLM, LM2Model
from lm2.models.rmt import RMTCache, RMTConfig, RMTForCausalLM, RMTModel

__all__ = [
    "LM2Cache",
    "LM2Config",
    "LM2ForCausalLM",
    "LM2Model",
    "RMTCache",
    "RMTConfig",
    "RMTForCausalLM",
    "RMTModel",
]
