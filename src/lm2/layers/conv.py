"""A short causal depthwise convolution over each sample's valid tokens: an optional local mixer.

With kernel size k, one filter w (D, k) per channel, and x_t^(i) the i-th valid input before token t of the
same sample (x_t^(0) = x_t; zeros before the stream starts):

    conv(x)_t = sum_{i=0}^{k-1} w[:, k-1-i] * x_t^(i)          (column k-1 weighs the token itself)

"Valid" is what the attention mask says: padding never enters the convolution, and the look-back skips
it, wherever it lies (left padding, or a padded column in the middle of a cached stream). So a sample is
convolved exactly as it would be alone and unpadded, and a stream fed in pieces is convolved as in one call
when the last k-1 valid inputs are carried between calls (the ``state``, (B, k-1, D)).

Two implementations compute the same function: ``forward`` (one ``F.conv1d`` over the stream, compacted
to its valid tokens when the call has padding) and ``forward_naive`` (the reference: a plain loop over
samples and tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

SHORT_CONV_INITS = ("default", "zero")


@dataclass
class ConvLayout:
    """Where each valid token of a call lies among its sample's valid tokens (shared by all blocks)."""

    valid: torch.Tensor  # (B, T) bool
    all_valid: bool  # no padding in this call: the stream is the input itself

    @classmethod
    def build(cls, valid: torch.Tensor) -> ConvLayout:
        return cls(valid=valid, all_valid=bool(valid.all()))

    @cached_property
    def rank(self) -> torch.Tensor:
        """(B, T) index of each token among its sample's valid tokens of the call (padding: the previous
        one's, or 0)."""
        return (self.valid.long().cumsum(1) - 1).clamp(min=0)

    @cached_property
    def count(self) -> torch.Tensor:
        """(B,) valid tokens of each sample in this call."""
        return self.valid.long().sum(1)

    @cached_property
    def token_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample, index in the call) of every valid token, each (V,)."""
        return self.valid.nonzero(as_tuple=True)


class ShortConv(nn.Module):
    """Depthwise causal convolution of kernel ``kernel_size`` over the residual stream (B, T, D).

    init: "default" draws the filters as PyTorch's ``nn.Conv1d`` does (uniform in +-1/sqrt(k), the fan-in
    of a depthwise filter); "zero" starts at conv = 0, so a block with the convolution added computes
    exactly what it did without it (``LM2ForCausalLM.from_llama``). No bias: Llama has none, and a constant
    added to the residual stream is not a mixer.
    """

    def __init__(self, hidden_size: int, kernel_size: int, init: str = "default") -> None:
        super().__init__()
        if init not in SHORT_CONV_INITS:
            raise ValueError(f"short conv init must be one of {SHORT_CONV_INITS}, got {init!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 2:
            raise ValueError(f"short conv kernel_size must be an integer >= 2, got {kernel_size!r}")
        self.hidden_size, self.kernel_size, self.init = hidden_size, kernel_size, init
        self.weight = nn.Parameter(torch.empty(hidden_size, kernel_size))  # (D, k)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.init == "zero":
                self.weight.zero_()
            else:
                bound = 1.0 / math.sqrt(self.kernel_size)
                self.weight.uniform_(-bound, bound)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """The look-back before a stream starts: k-1 zero inputs (B, k-1, D)."""
        return x.new_zeros(x.shape[0], self.kernel_size - 1, self.hidden_size)

    def forward(
        self, x: torch.Tensor, layout: ConvLayout, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """conv(x) (B, T, D) (zero at padding) and the new state: the last k-1 valid inputs (B, k-1, D).

        state: the last k-1 valid inputs before this call (B, k-1, D), None at the start of the stream.
        """
        B, T, D = x.shape
        k = self.kernel_size
        past = self.initial_state(x) if state is None else state.to(x.dtype)
        if layout.all_valid:
            stream = torch.cat([past, x], 1)  # (B, k-1+T, D)
        else:
            # Compact each sample's valid tokens after its look-back: stream[b, k-1+r] = its r-th valid token.
            b_idx, t_idx = layout.token_index
            stream = torch.cat([past, x.new_zeros(B, T, D)], 1)
            stream = stream.index_put((b_idx, k - 1 + layout.rank[b_idx, t_idx]), x[b_idx, t_idx])
        # Depthwise: one (1, k) filter per channel, groups = D; no padding, the look-back is in the stream.
        out = F.conv1d(stream.transpose(1, 2), self.weight.unsqueeze(1), groups=D)  # (B, D, T)
        out = out.transpose(1, 2)  # (B, T, D)
        if layout.all_valid:
            return out, stream[:, T:].clone()  # a copy: a view would keep the whole stream alive in the cache
        # Sample b's stream holds k-1+count_b inputs: its last k-1 are the next call's look-back.
        tail = layout.count[:, None] + torch.arange(k - 1, device=x.device)  # (B, k-1)
        new_state = stream.gather(1, tail[..., None].expand(B, k - 1, D))
        out = out.gather(1, layout.rank[..., None].expand(B, T, D))  # back from stream order to columns
        return torch.where(layout.valid[..., None], out, torch.zeros_like(out)), new_state

    def forward_naive(
        self, x: torch.Tensor, valid: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference: per sample, walk the tokens, weigh the last k valid inputs, remember each one."""
        B, T, D = x.shape
        k = self.kernel_size
        past = self.initial_state(x) if state is None else state.to(x.dtype)
        outs, states = [], []
        for b in range(B):
            seen = list(past[b])  # the valid inputs so far, oldest first (k-1 zeros at the stream start)
            rows = []
            for t in range(T):
                if not valid[b, t]:
                    rows.append(x.new_zeros(D))
                    continue
                seen.append(x[b, t])
                rows.append(sum(self.weight[:, k - 1 - i] * seen[-1 - i] for i in range(k)))
            outs.append(torch.stack(rows))
            states.append(torch.stack(seen[len(seen) - (k - 1) :]))
        return torch.stack(outs), torch.stack(states)
