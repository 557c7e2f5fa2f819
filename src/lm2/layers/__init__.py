"""Reusable layers: RMSNorm, RoPE, SwiGLU, grouped-query self-attention, the short convolution and the LM2
memory bank."""

from lm2.layers.attention import SelfAttention, WindowBlocks, window_mask
from lm2.layers.conv import ConvLayout, ShortConv
from lm2.layers.memory import MemoryBank, SegmentLayout
from lm2.layers.mlp import SwiGLU
from lm2.layers.norm import RMSNorm
from lm2.layers.rotary import apply_rope, rope_cos_sin

__all__ = [
    "ConvLayout",
    "MemoryBank",
    "RMSNorm",
    "SegmentLayout",
    "SelfAttention",
    "ShortConv",
    "SwiGLU",
    "WindowBlocks",
    "apply_rope",
    "rope_cos_sin",
    "window_mask",
]
