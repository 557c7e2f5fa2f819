"""LM2: Llama-3-style decoder with gated, LSTM-updated memory banks."""

from lm2.models.lm2.cache_lm2 import LM2Cache
from lm2.models.lm2.configuration_lm2 import PRESETS, LM2Config
from lm2.models.lm2.modeling_lm2 import LM2ForCausalLM, LM2Model, LM2PreTrainedModel

__all__ = ["PRESETS", "LM2Cache", "LM2Config", "LM2ForCausalLM", "LM2Model", "LM2PreTrainedModel"]
