"""lm2: LM2 Large Memory Models in PyTorch, Hugging Face compatible.

The model classes load on first use (``lm2.LM2ForCausalLM``, ``from lm2 import LM2Config``), which also
registers LM2 and RMT with transformers' Auto classes (``lm2.models`` does that, once); importing the
package alone stays cheap, so ``lm2 --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _v
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("lm2.models"), name)
    raise AttributeError(f"module 'lm2' has no attribute {name!r}")
