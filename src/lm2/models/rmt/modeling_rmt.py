"""Recurrent Memory Transformer (Bulatov et al., 2022) on a decoder, as the BABILong authors run it.

The text is cut into segments of ``segment_length`` tokens. Segment c is fed to the project's own backbone
(:class:`LM2Model` with ``use_memory=False``, through ``inputs_embeds`` and ``position_ids``) as

    [ memory_c (M read tokens) ; segment c (L <= S tokens) ; memory_c (M write tokens) ]

and the last layer's hidden states at the M trailing write positions become memory_{c+1}. The read tokens
let every token of the segment see the memory; the write tokens come last, so causally they see the whole
segment while no text token sees them. Logits are cropped to the segment. memory_0 is a learnable
(M, hidden_size) parameter.

Positions restart in every segment: read memory at 0..M-1, text at M..M+L-1, write memory at
M+L..2M+L-1. Every segment therefore looks the same to the backbone whatever its index, which is what
lets a model trained on a few segments run on many.

Segments are counted per sample in *valid* (non-padding) tokens since the start of the stream, never by
the array index of a call: padding is dropped before segmenting, so a left-padded sample in a batch is
processed exactly as it would be alone, and splitting one input into several calls (carrying
``past_key_values``) gives the same result as one call.

The cache (:class:`RMTCache`) holds the memory and the *embeddings* of the current, incomplete segment.
A call re-runs that partial segment together with the new tokens (at most S tokens of extra work per
step); when the segment fills, the memory is written and the partial segment starts empty.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

from lm2.models.lm2.modeling_lm2 import LM2ForCausalLM, LM2Model
from lm2.models.lm_head import CausalLMHeadMixin
from lm2.models.loading import load_every_weight, refuse_pickles
from lm2.models.outputs import base_output, pick_cache, refuse_unknown
from lm2.models.rmt.configuration_rmt import RMTConfig


class RMTCache:
    """The recurrent state of a batch: memory, the current partial segment, and how much was consumed.

    ``memory`` is (B, M, D); ``pending[b]`` is (f_b, D), the embeddings of sample b's tokens since its last
    memory write (f_b < segment_length); ``seen`` counts the columns of input consumed so far (what
    ``get_seq_length`` reports to ``generate()``, including padding columns).
    """

    is_compileable = False

    def __init__(self, memory: torch.Tensor, pending: list[torch.Tensor], seen: int) -> None:
        if memory.shape[0] != len(pending):
            raise ValueError(
                f"memory has batch {memory.shape[0]} but there are {len(pending)} pending segments"
            )
        self.memory = memory
        self.pending = pending
        self.seen = seen

    @property
    def batch_size(self) -> int:
        return self.memory.shape[0]

    @property
    def is_linear(self) -> list[bool]:
        # generate() (transformers 5.24) asks this of a cache passed in, to decide whether the prompt it is
        # given also holds the tokens already consumed: [False] = answer as an attention cache does (slice
        # them off by get_seq_length), which is what continuing from this state needs.
        return [False]

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.seen

    def detach(self) -> RMTCache:
        """A copy cut from the autograd graph (truncated BPTT across calls)."""
        return RMTCache(self.memory.detach(), [p.detach() for p in self.pending], self.seen)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state, by name: ``memory`` (B, M, D), ``pending.{b}`` (f_b, D) and ``seen`` (a
        0-d long tensor). :meth:`from_tensors` rebuilds the cache from them."""
        out = {"memory": self.memory, "seen": torch.tensor(self.seen, dtype=torch.long)}
        out.update({f"pending.{b}": p for b, p in enumerate(self.pending)})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> RMTCache:
        """The cache :meth:`tensors` describes (the tensors are used as given, not copied)."""
        if "memory" not in tensors or "seen" not in tensors:
            raise ValueError(
                f"not the tensors of an RMT cache: need memory and seen, got {', '.join(sorted(tensors))}"
            )
        batch = tensors["memory"].shape[0]
        expected = {"memory", "seen"} | {f"pending.{b}" for b in range(batch)}
        if set(tensors) != expected:
            raise ValueError(
                f"not the tensors of an RMT cache of batch {batch}: expected {', '.join(sorted(expected))}, "
                f"got {', '.join(sorted(tensors))}"
            )
        pending = [tensors[f"pending.{b}"] for b in range(batch)]
        return cls(tensors["memory"], pending, int(tensors["seen"]))

    def batch_select_indices(self, indices: torch.Tensor | list[int]) -> None:
        """Keep the samples ``indices``, in that order (used by beam search and batch pruning)."""
        index = torch.as_tensor(indices, device=self.memory.device, dtype=torch.long)
        self.memory = self.memory.index_select(0, index)
        self.pending = [self.pending[int(i)] for i in index.tolist()]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.memory = self.memory.repeat_interleave(repeats, dim=0)
        self.pending = [p for p in self.pending for _ in range(repeats)]


class RMTPreTrainedModel(PreTrainedModel):
    config_class = RMTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = []
    _is_stateful = True  # the memory cannot be rolled back, so assisted decoding is refused

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, RMTModel):
            # The RMT authors draw memory from N(0, std of the embeddings); the backbone's embeddings are
            # initialised with this std, so new memory starts on the embeddings' scale.
            module.memory.normal_(mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved RMT (safetensors only, as LM2). Missing, unexpected or mismatched weights (e.g. a
        different ``num_mem_tokens`` or ``short_conv``) are errors rather than silently re-initialised."""
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            refuse_pickles(path)
            saved_config = RMTConfig.from_pretrained(path)
            saved = saved_config.num_mem_tokens
            config = kwargs.get("config")
            asked = kwargs.get("num_mem_tokens", getattr(config, "num_mem_tokens", saved))
            if asked != saved:
                raise ValueError(
                    f"{path} was saved with num_mem_tokens={saved}; its memory cannot be loaded as {asked} tokens"
                )
            conv = saved_config.short_conv
            asked = kwargs.get("short_conv", getattr(config, "short_conv", conv))
            if asked != conv:
                raise ValueError(
                    f"{path} was saved with short_conv={conv}; it cannot be loaded with short_conv={asked} "
                    "(the field fixes the blocks' convolution weights): leave it unset"
                )
        return load_every_weight(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    def _return_dict(self, return_dict: bool | None) -> bool:
        return self.config.return_dict if return_dict is None else return_dict

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is an RMTCache, created by the first forward


class RMTModel(RMTPreTrainedModel):
    """The backbone wrapped in the memory recurrence; returns the text tokens' last hidden states."""

    def __init__(self, config: RMTConfig) -> None:
        super().__init__(config)
        self.backbone = LM2Model(config)
        self.memory = nn.Parameter(torch.empty(config.num_mem_tokens, config.hidden_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: RMTCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: RMTCache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        refuse_unknown(kwargs, type(self).__name__)
        past = pick_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if position_ids is not None:
            raise ValueError(
                "RMT sets its own positions (they restart in every segment); do not pass position_ids"
            )
        if output_attentions or output_hidden_states:
            raise ValueError(
                "RMT returns only the last hidden states; output_attentions/hidden_states are unsupported"
            )
        if past is not None and not isinstance(past, RMTCache):
            raise ValueError(
                f"RMT's cache must be an RMTCache, got {type(past).__name__}"
            )
        use_cache = self.config.use_cache if use_cache is None else use_cache

        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
            vocab = self.config.vocab_size
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
                bad = input_ids[(input_ids < 0) | (input_ids >= vocab)][0].item()
                raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab})")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be (batch, length, {self.config.hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        B, T, _ = inputs_embeds.shape
        if T == 0:
            raise ValueError("empty input: the sequence has no tokens")

        seen = past.seen if past is not None else 0
        valid = self._valid_mask(attention_mask, B, T, seen)  # (B, T) bool
        if past is None:
            memory = self.memory.unsqueeze(0).expand(B, -1, -1)  # (B, M, D)
            pending = [inputs_embeds.new_zeros(0, self.config.hidden_size) for _ in range(B)]
        else:
            if past.batch_size != B:
                raise ValueError(
                    f"the cache holds {past.batch_size} samples but the input has {B}"
                )
            memory, pending = past.memory, past.pending

        hidden, memory, pending = self._recur(inputs_embeds, valid, memory, pending)
        cache = RMTCache(memory, pending, seen + T) if use_cache else None
        out = base_output(hidden, cache)
        return out if self._return_dict(return_dict) else out.to_tuple()

    @staticmethod
    def _valid_mask(attention_mask: torch.Tensor | None, B: int, T: int, seen: int) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones(B, T, dtype=torch.bool)
        if attention_mask.dim() != 2 or attention_mask.shape[0] != B:
            raise ValueError(
                f"attention_mask must be (batch, length) 0/1, got shape {tuple(attention_mask.shape)}"
            )
        if attention_mask.shape[1] == seen + T:  # the Hugging Face convention: past + current columns
            attention_mask = attention_mask[:, seen:]
        elif attention_mask.shape[1] != T:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} columns; expected {T} (this call) or "
                f"{seen + T} (the {seen} already consumed + this call)"
            )
        return attention_mask.bool().cpu()

    def _recur(
        self, embeds: torch.Tensor, valid: torch.Tensor, memory: torch.Tensor, pending: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Run the segment recurrence; returns hidden states (B, T, D), the memory and the new partials."""
        B, T, D = embeds.shape
        S, M, k = self.config.segment_length, self.config.num_mem_tokens, self.config.bptt_depth
        device = embeds.device

        # Each sample's stream: its partial segment from the cache, then its valid new tokens.
        positions = [valid[b].nonzero().squeeze(1).to(device) for b in range(B)]
        streams = [torch.cat([pending[b], embeds[b, positions[b]]]) for b in range(B)]
        n_segments = [math.ceil(len(s) / S) for s in streams]
        outputs: list[list[torch.Tensor]] = [[] for _ in range(B)]

        for c in range(max(n_segments)):
            rows = [b for b in range(B) if n_segments[b] > c]
            chunks = [streams[b][c * S : (c + 1) * S] for b in rows]
            lengths = [len(x) for x in chunks]
            width = max(lengths)
            inputs, pos, keep = [], [], []
            for b, x, n in zip(rows, chunks, lengths, strict=True):
                gap = width - n  # right padding inside the segment, so the write tokens line up at the end
                inputs.append(torch.cat([memory[b], x, x.new_zeros(gap, D), memory[b]]))  # (2M + width, D)
                pos.append(
                    torch.cat(
                        [
                            torch.arange(M + n),
                            torch.zeros(gap, dtype=torch.long),
                            torch.arange(M + n, 2 * M + n),
                        ]
                    )
                )
                keep.append(torch.cat([torch.ones(M + n), torch.zeros(gap), torch.ones(M)]))
            x = torch.stack(inputs)  # (R, 2M + width, D)
            mask = None if width == min(lengths) else torch.stack(keep).to(device=device, dtype=torch.long)
            h = self.backbone(
                inputs_embeds=x,
                attention_mask=mask,
                position_ids=torch.stack(pos).to(device),
                use_cache=False,
                return_dict=True,
            ).last_hidden_state  # (R, 2M + width, D)

            written, new_memory = [], []
            for i, (b, n) in enumerate(zip(rows, lengths, strict=True)):
                outputs[b].append(h[i, M : M + n])
                if n == S:  # a full segment writes the next memory
                    state = h[i, M + width :]  # (M, D)
                    if k is not None and c + 1 < n_segments[b] - k:
                        state = state.detach()  # truncated BPTT: only the last k segments keep the graph
                    written.append(b)
                    new_memory.append(state)
            if written:
                index = torch.tensor(written, device=device)
                memory = memory.index_put((index,), torch.stack(new_memory).to(memory.dtype))

        # Scatter every sample's new-token outputs back to their columns in one go (padding stays zero).
        # The partial segment's first outputs were returned by an earlier call and are dropped.
        rows = torch.cat([torch.full_like(positions[b], b) for b in range(B)])
        values = [torch.cat(outputs[b])[len(pending[b]) :] for b in range(B) if outputs[b]]
        dtype = values[0].dtype if values else embeds.dtype  # autocast may run the backbone in bf16
        hidden = embeds.new_zeros(B, T, D, dtype=dtype)
        if values:
            hidden = hidden.index_put((rows, torch.cat(positions)), torch.cat(values))
        new_pending = []
        for stream in streams:
            tail = len(stream) % S
            new_pending.append(stream[len(stream) - tail :] if tail else stream[:0])
        return hidden, memory, new_pending


class RMTForCausalLM(CausalLMHeadMixin, RMTPreTrainedModel, GenerationMixin):
    """RMT with a language-model head; ``generate()`` carries the memory from segment to segment."""

    _tied_weights_keys = {"lm_head.weight": "model.backbone.embed_tokens.weight"}

    def __init__(self, config: RMTConfig) -> None:
        super().__init__(config)
        self.model = RMTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_lm2(
        cls, model_or_path: LM2ForCausalLM | str | os.PathLike, **rmt_options: Any
    ) -> RMTForCausalLM:
        """An RMT whose backbone and head are those of a vanilla LM2 model (``use_memory=False``).

        This is how the paper's RMT-1.7B is made: the pretrained vanilla-Llama-1.7B with RMT's memory
        tokens added, then fine-tuned. ``rmt_options`` (``num_mem_tokens``, ``segment_length``,
        ``bptt_depth``, ...) go to :class:`RMTConfig`; the memory tokens are freshly initialised.
        """
        model = model_or_path
        if isinstance(model_or_path, (str, os.PathLike)):
            model = LM2ForCausalLM.from_pretrained(model_or_path)
        if not isinstance(model, LM2ForCausalLM):
            raise ValueError(f"from_lm2 needs an LM2ForCausalLM or its folder, got {type(model).__name__}")
        if model.config.use_memory:
            raise ValueError(
                "from_lm2 needs the vanilla backbone (use_memory=False); this model has LM2 memory banks"
            )
        skip = {"model_type", "architectures", "transformers_version", "use_memory"}
        fields = {k: v for k, v in model.config.to_dict().items() if k not in skip}
        rmt = cls(RMTConfig(**{**fields, **rmt_options})).to(dtype=model.dtype)
        rmt.model.backbone.load_state_dict(model.model.state_dict())
        rmt.lm_head.load_state_dict(model.lm_head.state_dict())
        return rmt

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs.pop("position_ids", None)  # generate() derives them from the mask; RMT sets its own
        return inputs
