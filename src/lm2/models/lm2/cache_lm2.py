"""The LM2 cache: what a forward needs to be continued exactly where it stopped.

Per block: self-attention keys/values (trimmed to the window when one is set) and, for memory blocks,
the memory state (B, N, D) and the block inputs of the open (incomplete) segment (B, S, D). Per sample:
the valid-token index of every cached key (-1 = padding) and the number of valid tokens seen, from which
the open segment's fill and the next positions follow.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache


class LM2Cache(Cache):
    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[])
        self.num_layers = num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.memory: list[torch.Tensor | None] = [None] * num_layers
        self.segment: list[torch.Tensor | None] = [None] * num_layers
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

    def _map(self, fn) -> None:
        """Apply fn to every per-sample tensor (batch is dim 0 everywhere)."""
        for store in (self.keys, self.values, self.memory, self.segment):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = fn(t)
        if self.key_index is not None:
            self.key_index = fn(self.key_index)
            self.seen_valid = fn(self.seen_valid)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

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
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t[:, :, start:]
