"""Rotary position embedding (RoPE), computed on the fly from explicit position ids.

There is no cached table: the cost is one outer product per forward, positions can be any integers
(per-sample positions make left padding invisible), and nothing has to be re-created after a meta-device
load.
"""

from __future__ import annotations

import math

import torch

LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_inv_freq(
    head_dim: int, theta: float, llama3: dict | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), optionally with Llama 3.1's long-context rescaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float) / head_dim))
    if llama3 is None:
        return inv_freq
    factor, low, high, old_len = (llama3[k] for k in LLAMA3_KEYS)
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are stretched by factor, short ones kept, and the band between interpolated.
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype, llama3: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (B, T, head_dim) for integer positions (B, T)."""
    inv_freq = rope_inv_freq(head_dim, theta, llama3, position_ids.device)
    # float32 angles, as transformers' Llama computes them, so that parity holds to the last bits.
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    if dtype == torch.float64:
        return emb.double().cos(), emb.double().sin()
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, hd) by cos/sin (B, T, hd)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin
