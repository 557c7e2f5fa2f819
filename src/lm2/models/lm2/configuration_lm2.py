"""Configuration of LM2: a Llama-3-style decoder whose blocks may own a gated, LSTM-updated memory bank."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from lm2.layers.rotary import LLAMA3_KEYS

MEMORY_INITS = ("identity", "learned")
MEMORY_IMPLS = ("fast", "naive")
ATTENTION_IMPLS = ("blocked", "masked")

# The shapes of the presets. "lm2-1.7b" is the paper's model (Section 3): a ~1.2B Llama-3 backbone with
# tied embeddings plus 2048 memory slots of width 2048 in all 16 blocks.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        memory_slots=8,
        memory_heads=2,
        segment_length=8,
    ),
    "small": dict(
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        memory_slots=64,
        memory_heads=4,
        segment_length=64,
        tie_word_embeddings=True,
    ),
    "lm2-1.7b": dict(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        memory_slots=2048,
        memory_heads=32,
        segment_length=2048,
        tie_word_embeddings=True,
    ),
}


class LM2Config(PretrainedConfig):
    """Hyper-parameters of an LM2 model (Hugging Face field names for the backbone).

    Args:
        vocab_size: Number of token ids.
        hidden_size: Width of the residual stream (also the width of a memory slot).
        intermediate_size: Width of the SwiGLU feed-forward layer.
        num_hidden_layers: Number of decoder blocks.
        num_attention_heads: Query heads of self-attention.
        num_key_value_heads: Key/value heads of self-attention (grouped-query attention); None = as many as
            query heads.
        rms_norm_eps: Epsilon of RMSNorm.
        rope_theta: Base of the rotary position embedding.
        rope_llama3: None, or Llama 3.1's RoPE rescaling as a dict with factor, low_freq_factor,
            high_freq_factor and original_max_position_embeddings (as in Llama 3.x checkpoints).
        max_position_embeddings: Longest context the model is meant for (informative; RoPE has no table).
        initializer_range: Standard deviation of the normal weight initialisation.
        tie_word_embeddings: Share the input embedding and the output projection.
        use_cache: Return a cache (attention keys/values + memory state) from forward by default.
        use_memory: Give blocks a memory bank; False is the vanilla Llama baseline through the same code.
        memory_slots: N, the number of slots of each memory bank.
        memory_heads: Heads of the memory cross-attention (must divide hidden_size).
        memory_topk: Each token reads only its k best-matching slots; None = all slots.
        memory_init: "identity" (slot r = unit vector e_(r mod hidden)) or "learned" (a trained initial state).
        memory_layers: Which blocks have memory: None = all, an int k = the first k, or a list of indices.
        segment_length: S, the number of valid tokens between two memory writes.
        memory_forget_bias: Initial bias of the forget gate (positive = keep the old memory at the start).
        attention_window: None = full causal self-attention, or W = each token sees the last W valid tokens
            (itself included).
        attention_impl: How windowed attention is computed (the same outputs at every valid token):
            "blocked" (queries in blocks, each against its own and the previous W-1 keys: work per token
            bounded by the window) or "masked" (the reference: one mask over all of a call's keys). Ignored
            without a window.
        memory_impl: "fast" (segment scan + one batched read) or "naive" (the per-sample reference loop).
        memory_read: Add the memory read to the residual stream. False is an ablation: the memory is still
            written but never read, so the model answers from attention alone (set it on a trained model,
            ``model.config.memory_read = False``, or pass it to ``from_pretrained``).
        short_conv: 0 = off (the backbone is exactly transformers' Llama), or k >= 2: each block first adds a
            causal depthwise convolution of kernel k over its input, ``x = x + conv(x)``: a local mixer that
            lets a token carry its predecessors (not in the paper; see docs/design.md).
        memory_norm: RMS-normalise the memory state (a learned scale per channel) wherever it is projected
            to queries, keys and values; the state itself and its gated update are unchanged. Off (the
            paper's form) a state of unit-norm slots meets tokens of norm sqrt(hidden_size), so every read
            and write attends almost uniformly (not in the paper; see docs/design.md).
    """

    model_type = "lm2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 256,
        intermediate_size: int = 768,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_llama3: dict[str, float] | None = None,
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        use_cache: bool = True,
        use_memory: bool = True,
        memory_slots: int = 64,
        memory_heads: int = 4,
        memory_topk: int | None = None,
        memory_init: str = "identity",
        memory_layers: int | list[int] | None = None,
        segment_length: int = 64,
        memory_forget_bias: float = 1.0,
        attention_window: int | None = None,
        attention_impl: str = "blocked",
        memory_impl: str = "fast",
        memory_read: bool = True,
        short_conv: int = 0,
        memory_norm: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_llama3 = dict(rope_llama3) if rope_llama3 is not None else None
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.use_memory = use_memory
        self.memory_slots = memory_slots
        self.memory_heads = memory_heads
        self.memory_topk = memory_topk
        self.memory_init = memory_init
        self.memory_layers = (
            list(memory_layers) if isinstance(memory_layers, (list, tuple)) else memory_layers
        )
        self.segment_length = segment_length
        self.memory_forget_bias = memory_forget_bias
        self.attention_window = attention_window
        self.attention_impl = attention_impl
        self.memory_impl = memory_impl
        self.memory_read = memory_read
        self.short_conv = short_conv
        self.memory_norm = memory_norm
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )
        self.validate_lm2()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def memory_layer_indices(self) -> list[int]:
        """The sorted indices of the blocks that own a memory bank (empty when use_memory is False)."""
        if not self.use_memory:
            return []
        if self.memory_layers is None:
            return list(range(self.num_hidden_layers))
        if isinstance(self.memory_layers, int):
            return list(range(self.memory_layers))
        return sorted(set(self.memory_layers))

    def validate_lm2(self) -> None:
        """Raise ValueError naming the contradictory field and what would be valid."""

        def positive(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                what = "None or a positive integer" if optional else "a positive integer"
                raise ValueError(f"{name} must be {what}, got {value!r}")

        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "memory_slots",
            "memory_heads",
            "segment_length",
        ):
            positive(name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must divide hidden_size ({self.hidden_size})"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"the attention head size hidden_size/num_attention_heads ({self.head_dim}) must be even for RoPE"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_size % self.memory_heads:
            raise ValueError(
                f"memory_heads ({self.memory_heads}) must divide hidden_size ({self.hidden_size})"
            )
        positive("memory_topk", optional=True)
        positive("attention_window", optional=True)
        window = self.attention_window
        if self.use_memory and window is not None and window < self.segment_length:
            # Memory is written only at segment ends: a token would see neither the older tokens of its
            # own segment (outside the window) nor their memory write (not made yet).
            raise ValueError(
                f"attention_window ({window}) must be at least segment_length ({self.segment_length}) "
                "when use_memory is True, or tokens early in a segment are seen by neither attention nor "
                f"memory; raise attention_window to {self.segment_length} or more, or lower segment_length"
            )
        if self.memory_topk is not None and self.memory_topk > self.memory_slots:
            raise ValueError(
                f"memory_topk ({self.memory_topk}) cannot exceed memory_slots ({self.memory_slots})"
            )
        if self.rope_llama3 is not None:
            missing = [k for k in LLAMA3_KEYS if not isinstance(self.rope_llama3.get(k), (int, float))]
            if missing:
                raise ValueError(
                    f"rope_llama3 needs numeric {list(LLAMA3_KEYS)}; missing or invalid: {missing}"
                )
            if self.rope_llama3["high_freq_factor"] <= self.rope_llama3["low_freq_factor"]:
                raise ValueError("rope_llama3: high_freq_factor must exceed low_freq_factor")
        if self.memory_init not in MEMORY_INITS:
            raise ValueError(f"memory_init must be one of {MEMORY_INITS}, got {self.memory_init!r}")
        if not isinstance(self.memory_read, bool):
            raise ValueError(f"memory_read must be True or False, got {self.memory_read!r}")
        if not isinstance(self.memory_norm, bool):
            raise ValueError(f"memory_norm must be True or False, got {self.memory_norm!r}")
        conv = self.short_conv
        if isinstance(conv, bool) or not isinstance(conv, int) or conv < 0 or conv == 1:
            raise ValueError(
                "short_conv must be 0 (off) or a kernel size >= 2 (a kernel of 1 sees only the token "
                f"itself), got {conv!r}"
            )
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.memory_impl not in MEMORY_IMPLS:
            raise ValueError(f"memory_impl must be one of {MEMORY_IMPLS}, got {self.memory_impl!r}")
        layers = self.memory_layers
        if isinstance(layers, bool) or (layers is not None and not isinstance(layers, (int, list))):
            raise ValueError(f"memory_layers must be None, an int or a list of block indices, got {layers!r}")
        if isinstance(layers, int) and not 0 <= layers <= self.num_hidden_layers:
            raise ValueError(
                f"memory_layers={layers} (the first k blocks) must be in [0, {self.num_hidden_layers}]"
            )
        if isinstance(layers, list):
            bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int)]
            bad += [i for i in layers if isinstance(i, int) and not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(
                    f"memory_layers {bad} out of range: block indices must be in [0, {self.num_hidden_layers - 1}]"
                )

    def memory_signature(self) -> dict[str, Any]:
        """The fields that fix the shapes and meaning of the memory parameters (checked when loading)."""
        return {
            "use_memory": self.use_memory,
            "memory_slots": self.memory_slots,
            "memory_heads": self.memory_heads,
            "memory_init": self.memory_init,
            "memory_norm": self.memory_norm,
            "memory_layers": self.memory_layer_indices,
        }

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LM2Config:
        """A config of the named preset ("tiny", "small", "lm2-1.7b"), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
