"""What every ``XForCausalLM`` of the package shares: the embedding accessors and the head's logits and loss."""

from __future__ import annotations

import torch
from torch import nn


class CausalLMHeadMixin:
    """For a PreTrainedModel with ``self.model`` (owning the input embeddings) and ``self.lm_head``."""

    model: nn.Module
    lm_head: nn.Linear

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
