"""Reusable layers: RMSNorm, RoPE, SwiGLU, grouped-query self-attention and the LM2 memory bank."""

from lm2.layers.attention import SelfAttention
from lm2.layers.memory import MemoryBank, SegmentLayout
from lm2.layers.mlp import SwiGLU
from lm2.layers.norm import RMSNorm
from lm2.layers.rotary import apply_rope, rope_cos_sin

__all__ = ["MemoryBank", "RMSNorm", "SegmentLayout", "SelfAttention", "SwiGLU", "apply_rope", "rope_cos_sin"]
