"""Recurrent Memory Transformer baseline on the LM2 backbone, registered with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from lm2.models.rmt.configuration_rmt import RMTConfig
from lm2.models.rmt.modeling_rmt import RMTCache, RMTForCausalLM, RMTModel

AutoConfig.register(RMTConfig.model_type, RMTConfig, exist_ok=True)
AutoModel.register(RMTConfig, RMTModel, exist_ok=True)
AutoModelForCausalLM.register(RMTConfig, RMTForCausalLM, exist_ok=True)

__all__ = ["RMTCache", "RMTConfig", "RMTForCausalLM", "RMTModel"]
