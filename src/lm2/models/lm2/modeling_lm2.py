"""LM2: a Llama-3-style decoder whose blocks may own a memory bank (Kang et al., 2025).

Block:  x = x + ShortConv(x)                         (only with short_conv = k > 0; off by default)
        h = input_layernorm(x)
        x = x + SelfAttn(h) + g_out * E_mem(h, M)      (the memory term only in memory blocks)
        x = x + MLP(post_attention_layernorm(x))
With ``use_memory=False`` (and no short_conv) every block is exactly a Llama block, and the weights use
transformers' Llama key names, so Llama checkpoints load directly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

from lm2.layers import (
    ConvLayout,
    MemoryBank,
    RMSNorm,
    SegmentLayout,
    SelfAttention,
    ShortConv,
    SwiGLU,
    WindowBlocks,
    rope_cos_sin,
    window_mask,
)
from lm2.models.lm2.cache_lm2 import LM2Cache, LM2LayerCache
from lm2.models.lm2.configuration_lm2 import LM2Config
from lm2.models.lm_head import CausalLMHeadMixin
from lm2.models.loading import llama_config_to_lm2, load_every_weight, load_llama, refuse_pickles
from lm2.models.outputs import base_output, pick_cache, refuse_unknown

logger = logging.getLogger(__name__)

class LM2Block(nn.Module):
    def __init__(self, config: LM2Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.config = config  # the model's own config object: ``memory_read`` is read at every call
        self.short_conv = ShortConv(config.hidden_size, config.short_conv) if config.short_conv else None
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SelfAttention(
            config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        )
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.memory = (
            MemoryBank(
                config.hidden_size,
                config.memory_slots,
                config.memory_heads,
                topk=config.memory_topk,
                init=config.memory_init,
                forget_bias=config.memory_forget_bias,
                impl=config.memory_impl,
                norm=config.memory_norm,
                eps=config.rms_norm_eps,
            )
            if layer_idx in config.memory_layer_indices
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | WindowBlocks | None,
        layout: SegmentLayout | None,
        cache: LM2LayerCache | None,
        conv_layout: ConvLayout | None,
    ) -> torch.Tensor:
        if self.short_conv is not None:
            # A local mixer before anything else: each position carries its k-1 predecessors, so one
            # attention head can find "the place this person went to" (binding) in a single layer.
            conv_state = cache.conv_state if cache is not None else None
            conv, conv_state = self.short_conv(x, conv_layout, conv_state)
            if cache is not None:
                cache.update_conv(conv_state)
            x = x + conv  # (B, T, D)
        h = self.input_layernorm(x)  # (B, T, D), what both self-attention and memory see
        x = x + self.self_attn(h, cos, sin, mask, cache)
        if self.memory is not None:
            state = cache.memory if cache is not None else None
            if state is None:
                state = self.memory.initial(x.shape[0], x.device, x.dtype)
            pending = cache.pending if cache is not None else None
            state_kv = cache.memory_kv if cache is not None else None
            read, state, pending, state_kv = self.memory(h, layout, state, pending, state_kv)
            if cache is not None:
                cache.update_memory(state, pending, state_kv)
            if self.memory.diagnostics is not None:
                ratio = read.detach().norm(dim=-1) / x.detach().norm(dim=-1).clamp_min(1e-12)
                self.memory.diagnostics["read_ratio"].append(ratio)  # (B, T)
            if self.config.memory_read:
                x = x + read
        return x + self.mlp(self.post_attention_layernorm(x))


class LM2PreTrainedModel(PreTrainedModel):
    config_class = LM2Config
    config: LM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LM2Block"]
    _is_stateful = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved LM2 (safetensors only), refusing a memory configuration other than the saved one.

        Memory fields and ``short_conv`` passed as overrides (or in ``config=``) must match the checkpoint's:
        otherwise weights would be silently dropped or re-initialised. Missing, unexpected or mismatched
        weights are errors.
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            refuse_pickles(path)
            config = kwargs.pop("config", None)
            saved = LM2Config.from_pretrained(path)
            if config is None:
                config, kwargs = LM2Config.from_pretrained(path, return_unused_kwargs=True, **kwargs)
            config.validate_lm2()
            want, have = config.memory_signature(), saved.memory_signature()
            diff = {k: (have[k], want[k]) for k in want if want[k] != have[k]}
            if diff:
                detail = ", ".join(f"{k}: saved {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
                raise ValueError(f"{path} was saved with a different memory configuration ({detail})")
            if config.short_conv != saved.short_conv:
                raise ValueError(
                    f"{path} was saved with short_conv={saved.short_conv}; it cannot be loaded with short_conv="
                    f"{config.short_conv} (the field fixes the blocks' convolution weights): leave it unset"
                )
            kwargs["config"] = config
        return load_every_weight(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)

    @contextlib.contextmanager
    def memory_diagnostics(self) -> Iterator[list[dict[str, list[torch.Tensor]]]]:
        """Record what the memory does during the calls inside the ``with`` block (fast implementation).

        Yields one record per memory block, in block order: ``in_gate``, ``forget_gate`` (per call, (B, C):
        the gate's mean over slots and width for each of the call's C writes), ``write_done`` (per call,
        (B, C): whether sample b really wrote; padding can end a sample earlier) and ``read_ratio`` (per
        call, (B, T): |gated read| / |residual stream| at each token, the residual taken after
        self-attention, where the read is added). Outside the block nothing is recorded or computed.
        """
        banks = [m for m in self.modules() if isinstance(m, MemoryBank)]
        records = [{"in_gate": [], "forget_gate": [], "write_done": [], "read_ratio": []} for _ in banks]
        for bank, record in zip(banks, records, strict=True):
            bank.diagnostics = record
        try:
            yield records
        finally:
            for bank in banks:
                bank.diagnostics = None

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise every parameter kind of the model (also those a checkpoint does not provide)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.fill_(getattr(module, "bias_init", 0.0))  # the memory's forget gate: its bias
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, ShortConv):
            module.reset_parameters()
        if isinstance(module, MemoryBank):
            if module.init == "learned":
                module.initial_state.copy_(
                    module.identity_state(module.initial_state.device, module.initial_state.dtype)
                )


class LM2Model(LM2PreTrainedModel):
    # Shortest chunk a windowed long input is split into (longer when the window or segment is longer).
    window_chunk = 1024
    # Queries per block of block-local windowed attention (attention_impl="blocked"); None = the window.
    attention_block: int | None = None

    def __init__(self, config: LM2Config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LM2Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: LM2Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: LM2Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder over new tokens, continuing the cache when given (``cache=`` or, before
        transformers 5.24, ``past_key_values=``).

        attention_mask: 2-D (B, T) or (B, past + T), 1 = real token, 0 = padding. Padding is never attended
        to and never written into memory. position_ids default to each token's index among its sample's
        valid tokens (so left padding does not shift positions).
        """
        refuse_unknown(kwargs, type(self).__name__)
        if output_attentions:
            raise ValueError("LM2 does not return attention weights: output_attentions is unsupported")
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        output_hidden_states = bool(output_hidden_states)
        return_dict = config.return_dict if return_dict is None else return_dict

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
                raise ValueError(
                    f"token ids must be in [0, {config.vocab_size - 1}] (vocab_size={config.vocab_size}), "
                    f"got values in [{int(input_ids.min())}, {int(input_ids.max())}]"
                )
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, {config.hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        B, T, _ = inputs_embeds.shape
        if B == 0 or T == 0:
            raise ValueError(f"empty input: got batch {B} x length {T}; at least one token is needed")
        device = inputs_embeds.device

        cache = pick_cache(cache, past_key_values)
        if cache is not None and not isinstance(cache, LM2Cache):
            raise ValueError(f"the cache must be an LM2Cache (as returned by this model), got {type(cache).__name__}")
        if cache is None and use_cache:
            cache = LM2Cache(config.num_hidden_layers)
        has_past = cache is not None and cache.is_initialized
        if has_past and cache.batch_size != B:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the input has {B}")

        valid = self._current_mask(attention_mask, B, T, cache.seen_tokens if has_past else 0, device)
        if position_ids is not None and position_ids.shape != (B, T):
            if position_ids.dim() == 2 and position_ids.shape[0] == 1 and position_ids.shape[1] == T:
                position_ids = position_ids.expand(B, T)
            else:
                raise ValueError(f"position_ids must have shape ({B}, {T}), got {tuple(position_ids.shape)}")

        # With a window, a long input runs in chunks through the cache: time linear in T and memory flat,
        # and (chunking invariance) exactly the same result as one pass.
        window = config.attention_window
        chunk = T if window is None else max(2 * window, config.segment_length, self.window_chunk)
        if chunk < T and cache is None:
            cache = LM2Cache(config.num_hidden_layers)
        outputs, hidden_states = [], []
        for start in range(0, T, chunk):
            part = slice(start, start + chunk)
            x, hidden = self._run_blocks(
                inputs_embeds[:, part],
                valid[:, part],
                None if position_ids is None else position_ids[:, part],
                cache,
                output_hidden_states,
            )
            outputs.append(x)
            hidden_states.append(hidden)
        x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)
        if output_hidden_states:
            hidden_states = [torch.cat(per_layer, 1) for per_layer in zip(*hidden_states, strict=True)]
        out = base_output(x, cache if use_cache else None, tuple(hidden_states) if output_hidden_states else None)
        return out if return_dict else out.to_tuple()

    def _run_blocks(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: LM2Cache | None,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """All blocks over embeddings x (B, T, D) continuing the cache; updates the cache in place."""
        config = self.config
        B, T, _ = x.shape
        has_past = cache is not None and cache.is_initialized
        past_valid = cache.seen_valid if has_past else torch.zeros(B, dtype=torch.long, device=x.device)
        # Index of each token among its sample's valid tokens (padding: that of the previous valid token).
        index = past_valid[:, None] + valid.long().cumsum(1) - 1  # (B, T)
        if position_ids is None:
            position_ids = index.clamp(min=0)
        cos, sin = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, x.dtype, config.rope_llama3)

        # Self-attention over [cached keys, new keys]: block by block when that computes far fewer scores
        # than one mask over all keys (work per token bounded by the window); otherwise a mask, or None =
        # nothing hidden but the future (the fused fast path): a fresh call without padding inside the
        # window, or one new token that may see every cached key (no padding anywhere, all in the window).
        new_key_index = torch.where(valid, index, torch.full_like(index, -1))
        key_index = torch.cat([cache.key_index, new_key_index], 1) if has_past else new_key_index  # (B, L)
        window = config.attention_window
        in_window = window is None or window >= key_index.shape[1]
        mask: torch.Tensor | WindowBlocks | None
        blocked = config.attention_impl == "blocked"
        if blocked and WindowBlocks.pays(key_index.shape[1], window, self.attention_block):
            mask = WindowBlocks.build(key_index, past_valid, valid, window, self.attention_block or window)
        elif in_window and bool(valid.all()) and (not has_past or (T == 1 and bool((key_index >= 0).all()))):
            mask = None
        else:
            mask = window_mask(key_index, index, valid, window)

        # The segment layout is shared by all memory blocks (a model without memory needs none).
        layout = None
        if config.memory_layer_indices:
            layout = SegmentLayout.build(valid, past_valid % config.segment_length, config.segment_length)
        conv_layout = ConvLayout.build(valid) if config.short_conv else None
        hidden_states = [x] if output_hidden_states else []
        for block in self.layers:
            layer_cache = None if cache is None else cache.layers[block.layer_idx]
            x = block(x, cos, sin, mask, layout, layer_cache, conv_layout)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.norm(x)
        if output_hidden_states:
            hidden_states[-1] = x

        if cache is not None:
            cache.key_index = key_index
            cache.seen_valid = past_valid + valid.long().sum(1)
            cache.seen_tokens = (cache.seen_tokens if has_past else 0) + T
            cache.trim(window)
        return x, hidden_states

    @staticmethod
    def _current_mask(
        attention_mask: torch.Tensor | None, B: int, T: int, past: int, device: torch.device
    ) -> torch.Tensor:
        """The (B, T) validity of the new tokens from a 2-D mask over the new or over past + new tokens."""
        if attention_mask is None:
            return torch.ones(B, T, dtype=torch.bool, device=device)
        if (
            attention_mask.dim() != 2
            or attention_mask.shape[0] != B
            or attention_mask.shape[1] not in (T, past + T)
        ):
            raise ValueError(
                f"attention_mask must be 2-D with shape ({B}, {T}) or ({B}, {past + T}) (past + new tokens), "
                f"got {tuple(attention_mask.shape)}"
            )
        return attention_mask[:, -T:].to(device=device, dtype=torch.bool)


class LM2ForCausalLM(CausalLMHeadMixin, LM2PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LM2Config) -> None:
        super().__init__(config)
        self.model = LM2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_llama(cls, path_or_model: Any, **memory_options: Any) -> LM2ForCausalLM:
        """Put LM2 memory onto a Hugging Face Llama (a LlamaForCausalLM or a local safetensors folder).

        The backbone takes the Llama weights unchanged; the new memory parameters are initialised and each
        memory read's output projection is zero, so the model's logits equal the Llama's until fine-tuning
        opens the memory path. With ``short_conv=k`` the blocks' new convolutions start at zero too (conv = 0,
        while their gradient is not), so the logits still equal the Llama's. Backbone weights the checkpoint
        lacks, and checkpoint weights the model has no place for, are errors; the newly initialised weights
        are logged.
        """
        llama_config, state = load_llama(path_or_model)
        config = llama_config_to_lm2(llama_config, **memory_options)
        dtype = (
            state["model.embed_tokens.weight"].dtype
            if "model.embed_tokens.weight" in state
            else torch.float32
        )
        model = cls(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if config.tie_word_embeddings:
            missing = [k for k in missing if k != "lm_head.weight"]
        new = [k for k in missing if ".memory." in k or ".short_conv." in k]
        backbone_missing = [k for k in missing if k not in new]
        if backbone_missing or unexpected:
            raise ValueError(
                f"the Llama checkpoint does not fit the LM2 backbone: missing {backbone_missing}, unexpected {unexpected}"
            )
        with torch.no_grad():
            for block in model.model.layers:
                if block.memory is not None:
                    block.memory.o_proj.weight.zero_()
                if block.short_conv is not None:
                    block.short_conv.weight.zero_()
        if new:
            logger.info(
                "from_llama: %d tensors newly initialised (memory in blocks %s, read output projection = 0; "
                "short convolutions = 0; so the logits equal the Llama's): %s",
                len(new),
                config.memory_layer_indices,
                ", ".join(new),
            )
        return model.to(dtype)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: the first forward creates an LM2Cache.
        return False
