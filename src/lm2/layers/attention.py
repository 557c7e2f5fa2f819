"""Grouped-query causal self-attention with RoPE through scaled_dot_product_attention.

Two ways to compute windowed attention (each query sees the last W valid tokens, itself included), which
give the same outputs at every valid token:

- ``masked`` (the reference): one (T, L) boolean mask over all cached and new keys, built from the keys'
  valid-token indices; the work per token grows with the call's length.
- ``blocked`` (:class:`WindowBlocks`): each sample's valid tokens are laid out in order on a stream, queries
  go in blocks of Q >= W, and block j attends to its own Q keys and the W-1 keys before it, with the exact
  window mask inside; the work per token is O(Q + W), whatever the call's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lm2.layers.rotary import apply_rope


def window_mask(
    key_index: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, window: int | None
) -> torch.Tensor:
    """The reference's mask (B, 1, T, L), True = may attend: query t (valid-token index ``index`` (B, T))
    sees the valid keys (``key_index`` (B, L), -1 = padding) at or before it, within ``window`` if set."""
    k_idx, q_idx = key_index[:, None, :], index[:, :, None]
    mask = (k_idx >= 0) & (k_idx <= q_idx)
    if window is not None:
        mask &= q_idx - k_idx < window
    # Padding queries see everything: their outputs are never used, and this keeps them finite.
    return (mask | ~valid[:, :, None])[:, None]  # (B, 1, T, L)


@dataclass
class WindowBlocks:
    """Where the queries and keys of one call lie on the block grid (shared by all blocks of the model).

    Per sample, the key stream is Q slots for the keys before the call (only the last W-1 are ever used),
    then the call's valid tokens in order, padded to n_blocks * Q: slot Q + r holds the r-th valid token of
    the call, slot Q - i the i-th most recent cached valid key. The query stream is the call's valid tokens
    in order (slot r = r-th valid token). Because the streams hold valid tokens only, the window in
    valid-token indices is a window in slots, so query block j (slots jQ .. jQ+Q-1) needs exactly the key
    slots jQ + Q - (W-1) .. jQ + 2Q - 1: the last W-1 of key block j and all of key block j + 1.

    When the slots are a plain shift of the columns (no padding inside the call except at each row's end,
    and the cache ends with each sample's last W-1 valid keys: training batches, long unpadded inputs), the
    streams are slices and pads of the tensors; otherwise they are gathered through ``key_column`` and
    ``query_column``.
    """

    block: int  # Q: queries per block
    window: int  # W
    n_blocks: int  # blocks of queries in the call
    mask: torch.Tensor  # (B * n_blocks, 1, Q, Q + W - 1) True = may attend
    key_shift: int | None  # key slot s is column s + key_shift of [cached; new], or None: see key_column
    key_column: torch.Tensor | None  # (B, (n_blocks + 1) * Q) column of each key slot (gathered case)
    query_column: torch.Tensor | None  # (B, n_blocks * Q) column of each query slot; None: slot r = column r
    query_slot: torch.Tensor | None  # (B, T) query slot of each column (gathered case)
    valid: torch.Tensor | None  # (B, T) the call's valid tokens (gathered case: padding outputs are zeroed)

    # Scores per query of the masked path (a call's L keys) over those of the blocked one (Q + W - 1) from
    # which the blocked path is used: below it, laying out the blocks costs more than the scores it saves
    # (benchmarks/bench_attention.py, section (d): at the recipe's shape the blocked layer ran at 0.92x
    # the masked one at a ratio of 1.5, and 1.25x at 2).
    MIN_SAVING = 2

    @classmethod
    def pays(cls, keys: int, window: int | None, block: int | None) -> bool:
        """Whether a call with ``keys`` keys (cached + new) should attend block by block (blocks of
        ``block`` queries, None = the window)."""
        return window is not None and keys >= cls.MIN_SAVING * ((block or window) + window - 1)

    @classmethod
    def build(
        cls, key_index: torch.Tensor, past_valid: torch.Tensor, valid: torch.Tensor, window: int, block: int
    ) -> WindowBlocks:
        """The layout of a call from the valid-token index of every key (B, L) (cached then new, -1 =
        padding), the valid tokens seen before the call (B,) and the call's validity (B, T)."""
        if block < window:
            raise ValueError(f"the attention block ({block}) must be at least the window ({window})")
        B, L = key_index.shape
        T = valid.shape[1]
        Q, P = block, window - 1
        device = key_index.device
        count = valid.long().sum(1)  # (B,) valid tokens of the call
        n_blocks = max(1, -(-int(count.max()) // Q))
        slots = (n_blocks + 1) * Q

        # Key slots: a valid key with index i goes to slot Q + i - past_valid; only the last P cached keys
        # (slots Q-P .. Q-1) can be seen by a query of this call.
        slot = key_index - past_valid[:, None] + Q  # (B, L)
        alive = (key_index >= 0) & (slot >= Q - P)
        b_idx, col = alive.nonzero(as_tuple=True)
        key_slot = slot[b_idx, col]
        key_ok = torch.zeros(B, slots, dtype=torch.bool, device=device)
        key_ok[b_idx, key_slot] = True
        shift = L - T - Q  # column of slot 0 when the slots are the columns shifted
        if bool((col == key_slot + shift).all()):
            key_shift, key_column = shift, None
        else:
            key_shift = None
            key_column = torch.zeros(B, slots, dtype=torch.long, device=device)
            key_column[b_idx, key_slot] = col

        # Query slots: the r-th valid token of the call is slot r.
        query_ok = torch.arange(n_blocks * Q, device=device)[None, :] < count[:, None]  # (B, n*Q)
        first = torch.arange(T, device=device)[None, :] < count[:, None]  # (B, T)
        if bool((valid == first).all()):  # each row's valid tokens come first: slot r is column r
            query_column = query_slot = kept_valid = None
        else:
            rank = valid.long().cumsum(1) - 1  # (B, T)
            vb, vt = valid.nonzero(as_tuple=True)
            query_column = torch.zeros(B, n_blocks * Q, dtype=torch.long, device=device)
            query_column[vb, rank[vb, vt]] = vt
            query_slot, kept_valid = rank.clamp(min=0), valid

        # Query i of a block (slot jQ + i) and key k of its keys (key slot jQ + Q - P + k) are
        # i + P - k valid tokens apart: in the window when 0 <= i + P - k <= P.
        i = torch.arange(Q, device=device)[:, None]
        k = torch.arange(Q + P, device=device)[None, :]
        band = (k >= i) & (k <= i + P)  # (Q, Q + P)
        key_ok = key_ok.view(B, n_blocks + 1, Q)
        block_keys = torch.cat([key_ok[:, :-1, Q - P :], key_ok[:, 1:]], 2)  # (B, n, Q + P)
        mask = band & block_keys[:, :, None, :]
        # Query slots past a row's valid tokens see their whole block: never used, and no empty softmax row.
        mask |= ~query_ok.view(B, n_blocks, Q, 1)
        return cls(
            block=Q,
            window=window,
            n_blocks=n_blocks,
            mask=mask.view(B * n_blocks, 1, Q, Q + P),
            key_shift=key_shift,
            key_column=key_column,
            query_column=query_column,
            query_slot=query_slot,
            valid=kept_valid,
        )

    def query_blocks(self, q: torch.Tensor) -> torch.Tensor:
        """Queries (B, H, T, hd) on the block grid (B * n, H, Q, hd)."""
        B, H, T, hd = q.shape
        q = q.transpose(1, 2)  # (B, T, H, hd): a block is then a contiguous run of rows
        width = self.n_blocks * self.block
        if self.query_column is None:
            # Columns past the grid can only be padding (a row holds at most n * Q valid tokens).
            q = F.pad(q[:, :width], (0, 0, 0, 0, 0, max(0, width - T)))
        else:
            q = q.gather(1, self.query_column[:, :, None, None].expand(B, width, H, hd))
        return q.reshape(B * self.n_blocks, self.block, H, hd).transpose(1, 2)

    def key_blocks(self, k: torch.Tensor) -> torch.Tensor:
        """Keys or values (B, Hkv, L, hd), cached then new, as the keys of each query block
        (B * n, Hkv, Q + W - 1, hd)."""
        B, Hkv, L, hd = k.shape
        Q, P, n = self.block, self.window - 1, self.n_blocks
        k = k.transpose(1, 2)  # (B, L, Hkv, hd)
        slots = (n + 1) * Q
        if self.key_shift is None:
            k = k.gather(1, self.key_column[:, :, None, None].expand(B, slots, Hkv, hd))
        else:
            start = max(0, self.key_shift)
            front = start - self.key_shift
            k = F.pad(k[:, start:], (0, 0, 0, 0, front, slots - front - (L - start)))
        k = k.view(B, n + 1, Q, Hkv, hd)
        k = torch.cat([k[:, :-1, Q - P :], k[:, 1:]], 2)  # (B, n, Q + P, Hkv, hd)
        return k.view(B * n, Q + P, Hkv, hd).transpose(1, 2)

    def unblock(self, y: torch.Tensor, T: int) -> torch.Tensor:
        """Outputs on the grid (B * n, H, Q, hd) back to the call's columns (B, T, H * hd)."""
        _, H, Q, hd = y.shape
        y = y.transpose(1, 2).reshape(-1, self.n_blocks * Q, H * hd)  # (B, n * Q, H * hd)
        if self.query_slot is None:
            return F.pad(y[:, :T], (0, 0, 0, max(0, T - y.shape[1])))
        y = y.gather(1, self.query_slot[..., None].expand(-1, T, H * hd))
        return torch.where(self.valid[..., None], y, torch.zeros_like(y))


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def forward(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | WindowBlocks | None,
        cache: Any | None = None,
    ) -> torch.Tensor:
        """Attend from h (B, T, D) to the cached keys/values followed by h's own; returns (B, T, D).

        mask: boolean (B, 1, T, L) with True = may attend; or None when nothing but the future is hidden:
        plain causal attention without a past, or a single query (T = 1) that sees every key; or the
        :class:`WindowBlocks` of block-local windowed attention. cache: this layer's cache, anything with
        ``update(keys, values)`` returning the cached keys/values followed by the new ones (B, Hkv, L, hd),
        as transformers' cache layers do.
        """
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, L, hd)
        gqa = self.num_heads != self.num_kv_heads
        if isinstance(mask, WindowBlocks):
            q, k, v = mask.query_blocks(q), mask.key_blocks(k), mask.key_blocks(v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mask, enable_gqa=gqa)  # (B*n,H,Q,hd)
            return self.o_proj(mask.unblock(y, T))
        if mask is None:
            # is_causal aligns the mask top-left, so it is right without a past; one query sees all keys.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, D)
        return self.o_proj(y)
