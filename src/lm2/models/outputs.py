"""The cache's name in ``forward()`` and in model outputs, whichever transformers release is installed.

transformers 5.24 renamed the decoding cache: ``generate()`` passes it to ``forward`` as ``cache=`` and
reads it back from ``output.cache``; earlier 5.x releases pass and read ``past_key_values``. A model
whose forward takes only one name lets the other vanish into ``**kwargs`` and decodes every step with
no history, without an error. So the models here take both names (refusing both at once), refuse any
keyword they do not know, and build their outputs under the name the installed release reads.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

#: The output field (and forward keyword) the installed transformers uses for the cache.
CACHE_FIELD: str = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def pick_cache(cache: Any, past_key_values: Any) -> Any:
    """The cache passed under either name; passing it under both is an error."""
    if cache is not None and past_key_values is not None:
        raise ValueError("the cache was passed twice, as cache= and as past_key_values=: pass it once")
    return cache if cache is not None else past_key_values


def refuse_unknown(kwargs: dict[str, Any], model: str) -> None:
    """An unknown keyword reaching forward() is an error, never silently dropped."""
    if kwargs:
        raise TypeError(f"{model}.forward() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")


def base_output(
    hidden: torch.Tensor, cache: Any, hidden_states: tuple[torch.Tensor, ...] | None = None
) -> BaseModelOutputWithPast:
    """A base model's output with the cache under the installed release's name."""
    return BaseModelOutputWithPast(
        last_hidden_state=hidden, hidden_states=hidden_states, **{CACHE_FIELD: cache}
    )


def causal_lm_output(
    loss: torch.Tensor | None,
    logits: torch.Tensor,
    cache: Any,
    hidden_states: tuple[torch.Tensor, ...] | None = None,
) -> CausalLMOutputWithPast:
    """A causal LM's output with the cache under the installed release's name."""
    return CausalLMOutputWithPast(
        loss=loss, logits=logits, hidden_states=hidden_states, **{CACHE_FIELD: cache}
    )


def output_cache(output: Any) -> Any:
    """The cache of a model output, read under the installed release's name."""
    return getattr(output, CACHE_FIELD)
