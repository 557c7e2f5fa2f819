"""Recurrent Memory Transformer baseline on the LM2 backbone."""

from lm2.models.rmt.configuration_rmt import RMTConfig
from lm2.models.rmt.modeling_rmt import RMTCache, RMTForCausalLM, RMTModel

__all__ = ["RMTCache", "RMTConfig", "RMTForCausalLM", "RMTModel"]
