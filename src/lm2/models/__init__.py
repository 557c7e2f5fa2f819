"""Model families of the lm2 package."""

from lm2.models.lm2 import LM2Cache, LM2Config, LM2ForCausalLM, LM2Model

__all__ = ["LM2Cache", "LM2Config", "LM2ForCausalLM", "LM2Model"]
