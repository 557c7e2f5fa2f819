"""Model families of the lm2 package: LM2 and the RMT baseline, registered with transformers' Auto classes.

This is the one place they are registered. Every ``lm2`` module imports the package ``lm2`` first, which
imports this one, so ``AutoModelForCausalLM.from_pretrained(dir)`` works offline after any lm2 import.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from lm2.models.lm2 import LM2Cache, LM2Config, LM2ForCausalLM, LM2Model
from lm2.models.rmt import RMTCache, RMTConfig, RMTForCausalLM, RMTModel

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
]
