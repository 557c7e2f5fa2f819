"""What every ``XForCausalLM`` of the package shares: the embedding accessors, forward, logits and loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from lm2.models.outputs import causal_lm_output, output_cache, pick_cache, refuse_unknown


class CausalLMHeadMixin:
    """For a PreTrainedModel with ``self.model`` (owning the input embeddings) and ``self.lm_head``."""

    model: nn.Module
    lm_head: nn.Linear
    config: Any

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def logits_and_loss(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor | None,
        logits_to_keep: int | torch.Tensor,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T', V) of the kept positions of hidden (B, T, D) and, with labels (B, T), the shifted
        next-token cross-entropy over all positions (ignoring -100; ``num_items_in_batch`` is honoured)."""
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        if labels is None:
            return logits, None
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}")
        full_logits = logits if logits.shape[1] == hidden.shape[1] else self.lm_head(hidden)
        # transformers' causal-LM loss shifts the labels, not the logits (no copy of the (B, T, V) logits).
        loss = self.loss_function(
            logits=full_logits,
            labels=labels,
            vocab_size=self.config.vocab_size,
            num_items_in_batch=num_items_in_batch,
        )
        return logits, loss

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Any | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits for the new tokens; with labels, the mean next-token cross-entropy (ignoring -100).

        The cache comes as ``cache=`` (transformers >= 5.24) or ``past_key_values=`` (earlier releases).
        """
        refuse_unknown(kwargs, type(self).__name__)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits, loss = self.logits_and_loss(out.last_hidden_state, labels, logits_to_keep, num_items_in_batch)
        result = causal_lm_output(loss, logits, output_cache(out), out.hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return result if return_dict else result.to_tuple()
