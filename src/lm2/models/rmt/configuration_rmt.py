"""Configuration of the Recurrent Memory Transformer baseline (Bulatov et al., 2022) on the LM2 backbone."""

from __future__ import annotations

from typing import Any

from lm2.models.lm2.configuration_lm2 import LM2Config


class RMTConfig(LM2Config):
    """An :class:`LM2Config` whose backbone runs without LM2 memory, plus the RMT recurrence.

    Every backbone field (``hidden_size``, ``num_hidden_layers``, ...) means what it means for LM2, so RMT
    and LM2 compare on exactly the same backbone. ``segment_length`` is the number of text tokens per
    RMT segment (LM2 uses the same field for its memory-write interval).

    Args:
        num_mem_tokens: learnable memory embeddings; each segment reads them at its start and writes the
            next memory at its end, so a segment occupies ``num_mem_tokens + segment_length +
            num_mem_tokens`` positions.
        bptt_depth: ``None`` back-propagates through every segment of a forward call (full BPTT). ``k >= 1``
            keeps the gradient only through the memory that enters a sample's last ``k`` segments of the
            call (the RMT authors' ``k2``); older memory is detached. The learnable initial memory always
            receives the gradient of the segment that reads it first.
    """

    model_type = "rmt"

    def __init__(self, num_mem_tokens: int = 16, bptt_depth: int | None = None, **kwargs: Any) -> None:
        if kwargs.get("use_memory"):
            raise ValueError(
                "RMT runs the backbone without LM2 memory (its memory is the num_mem_tokens embeddings); "
                "leave use_memory unset or False"
            )
        kwargs["use_memory"] = False
        self.num_mem_tokens = num_mem_tokens
        self.bptt_depth = bptt_depth
        super().__init__(**kwargs)
        if not isinstance(num_mem_tokens, int) or num_mem_tokens < 1:
            raise ValueError(f"num_mem_tokens must be an integer >= 1, got {num_mem_tokens!r}")
        if bptt_depth is not None and (not isinstance(bptt_depth, int) or bptt_depth < 1):
            raise ValueError(f"bptt_depth must be None (full BPTT) or an integer >= 1, got {bptt_depth!r}")
        span = 2 * num_mem_tokens + self.segment_length
        if span > self.max_position_embeddings:
            raise ValueError(
                f"an RMT segment spans 2 * num_mem_tokens + segment_length = {span} positions, more than "
                f"max_position_embeddings = {self.max_position_embeddings}"
            )
