"""lm2: LM2 Large Memory Models in PyTorch, Hugging Face compatible."""

from importlib.metadata import version as _v

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from lm2.models import LM2Cache, LM2Config, LM2ForCausalLM, LM2Model

__version__ = _v("lm2")

AutoConfig.register(LM2Config.model_type, LM2Config, exist_ok=True)
AutoModel.register(LM2Config, LM2Model, exist_ok=True)
AutoModelForCausalLM.register(LM2Config, LM2ForCausalLM, exist_ok=True)

__all__ = ["LM2Cache", "LM2Config", "LM2ForCausalLM", "LM2Model", "__version__"]
