"""The LM2 cache: what a forward needs to be continued exactly where it stopped.

Per block: self-attention keys/values (trimmed to the window when one is set), with ``short_conv`` the
block's last k-1 valid inputs (B, k-1, D), and, for memory blocks, the memory state (B, N, D) and the block
inputs of the open (incomplete) segment (B, S, D). Per sample:
the valid-token index of every cached key (-1 = padding) and the number of valid tokens seen, from which
the open segment's fill and the next positions follow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import Cache


class LM2LayerCache:
    """One block's state: its self-attention keys/values, its convolution's look-back and, in a memory
    block, its memory.

    ``update`` appends a call's new keys/values and returns all of them, as transformers' cache layers do;
    ``update_conv`` and ``update_memory`` store what the convolution and the memory bank returned. The block
    reads and writes nothing else.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # (B, Hkv, L, hd)
        self.values: torch.Tensor | None = None  # (B, Hkv, L, hd)
        self.conv_state: torch.Tensor | None = None  # (B, k-1, D) last k-1 valid block inputs (short_conv)
        self.memory: torch.Tensor | None = None  # (B, N, D) memory state after the last completed segment
        self.pending: torch.Tensor | None = None  # (B, S, D) block inputs of the open segment, not yet written
        # The read keys/values of the current memory state: they change only when the memory is written.
        self.memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys/values (B, Hkv, T, hd); return the cached ones followed by them (B, Hkv, L, hd)."""
        if self.keys is not None:
            keys = torch.cat([self.keys, keys], dim=2)
            values = torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values

    def update_conv(self, conv_state: torch.Tensor) -> None:
        self.conv_state = conv_state

    def update_memory(
        self,
        memory: torch.Tensor,
        pending: torch.Tensor | None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        self.memory, self.pending, self.memory_kv = memory, pending, memory_kv

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply fn to every tensor held (batch is dim 0 of each)."""
        for name in ("keys", "values", "conv_state", "memory", "pending"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, fn(t))
        if self.memory_kv is not None:
            self.memory_kv = (fn(self.memory_kv[0]), fn(self.memory_kv[1]))

    def drop_keys(self, start: int) -> None:
        """Forget the first ``start`` cached keys/values."""
        if self.keys is not None:
            self.keys, self.values = self.keys[:, :, start:], self.values[:, :, start:]


class LM2Cache(Cache):
    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[])
        self.num_layers = num_layers
        self.layers: list[LM2LayerCache] = [LM2LayerCache() for _ in range(num_layers)]
        self.key_index: torch.Tensor | None = (
            None  # (B, L) valid-token index of each cached key, -1 = padding
        )
        self.seen_valid: torch.Tensor | None = None  # (B,) valid tokens seen per sample
        self.seen_tokens = 0  # array positions seen (padding included), as generate() counts them

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return f"LM2Cache(layers={self.num_layers}, seen_tokens={self.seen_tokens}, cached_keys={self.cached_length})"

    @property
    def cached_length(self) -> int:
        return 0 if self.key_index is None else self.key_index.shape[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        # The memory cannot be rolled back by dropping tokens.
        return False

    @property
    def is_initialized(self) -> bool:
        return self.seen_valid is not None

    @property
    def batch_size(self) -> int:
        return -1 if self.seen_valid is None else self.seen_valid.shape[0]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("LM2Cache cannot be cropped: the memory state cannot be rolled back")

    def reset(self) -> None:
        self.__init__(self.num_layers)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply fn to every per-sample tensor (batch is dim 0 everywhere)."""
        for layer in self.layers:
            layer.map(fn)
        if self.key_index is not None:
            self.key_index = fn(self.key_index)
            self.seen_valid = fn(self.seen_valid)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def detach(self) -> LM2Cache:
        """Cut the autograd graph of every tensor held (truncated backpropagation through time); returns self."""
        self._map(torch.Tensor.detach)
        return self

    # What ``tensors`` saves of each block: everything but ``memory_kv``, which is a function of ``memory``
    # (its read projections, recomputed bit for bit by the next call when absent). Leaving it out keeps the
    # saved state's size the same whether or not the last call wrote the memory.
    _SAVED = ("keys", "values", "conv_state", "memory", "pending")

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to continue this cache, by name: ``layers.{i}.{keys,values,conv_state,memory,
        pending}`` (those a block holds), ``key_index`` (B, L), ``seen_valid`` (B,) and ``seen_tokens`` (a
        0-d long tensor). :meth:`from_tensors` rebuilds the cache from them."""
        if not self.is_initialized:
            raise ValueError("the cache is empty (no tokens were fed through it): there is nothing to save")
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            for name in self._SAVED:
                t = getattr(layer, name)
                if t is not None:
                    out[f"layers.{i}.{name}"] = t
        out["key_index"] = self.key_index
        out["seen_valid"] = self.seen_valid
        out["seen_tokens"] = torch.tensor(self.seen_tokens, dtype=torch.long)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], num_layers: int) -> LM2Cache:
        """The cache :meth:`tensors` describes (the tensors are used as given, not copied)."""
        known = {f"layers.{i}.{n}" for i in range(num_layers) for n in cls._SAVED}
        known |= {"key_index", "seen_valid", "seen_tokens"}
        unknown = sorted(set(tensors) - known)
        missing = sorted({"key_index", "seen_valid", "seen_tokens"} - set(tensors))
        if unknown or missing:
            raise ValueError(
                f"not the tensors of an LM2 cache with {num_layers} layers: "
                + (f"unknown {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}")
            )
        cache = cls(num_layers)
        for i, layer in enumerate(cache.layers):
            for name in cls._SAVED:
                setattr(layer, name, tensors.get(f"layers.{i}.{name}"))
        cache.key_index = tensors["key_index"]
        cache.seen_valid = tensors["seen_valid"]
        cache.seen_tokens = int(tensors["seen_tokens"])
        return cache

    def trim(self, window: int | None) -> None:
        """Drop the leading cached keys no future token can attend to (padding, or out of the window)."""
        if self.key_index is None:
            return
        alive = self.key_index >= 0
        if window is not None:
            # The next query has index seen_valid; it sees keys with index > seen_valid - window.
            alive &= self.key_index > (self.seen_valid - window)[:, None]
        needed = alive.any(0)
        start = int(needed.float().argmax()) if bool(needed.any()) else self.key_index.shape[1]
        if start == 0:
            return
        self.key_index = self.key_index[:, start:]
        for layer in self.layers:
            layer.drop_keys(start)
