"""LM2: a Llama-3-style decoder whose blocks may own a memory bank (Kang et al., 2025).

Block:  h = input_layernorm(x)
        x = x + SelfAttn(h) + g_out * E_mem(h, M)      (the memory term only in memory blocks)
        x = x + MLP(post_attention_layernorm(x))
With ``use_memory=False`` every block is exactly a Llama block, and the weights use transformers' Llama
key names, so Llama checkpoints load directly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from lm2.layers import MemoryBank, RMSNorm, SegmentLayout, SelfAttention, SwiGLU, rope_cos_sin
from lm2.models.lm2.cache_lm2 import LM2Cache
from lm2.models.lm2.configuration_lm2 import LM2Config


class LM2Block(nn.Module):
    def __init__(self, config: LM2Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
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
            )
            if layer_idx in config.memory_layer_indices
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        layout: SegmentLayout,
        cache: LM2Cache | None,
        memory_impl: str,
    ) -> torch.Tensor:
        i = self.layer_idx
        h = self.input_layernorm(x)  # (B, T, D), what both self-attention and memory see
        past_kv = None
        if cache is not None and cache.keys[i] is not None:
            past_kv = (cache.keys[i], cache.values[i])
        attn, (k, v) = self.self_attn(h, cos, sin, mask, past_kv)
        if cache is not None:
            cache.keys[i], cache.values[i] = k, v
        x = x + attn
        if self.memory is not None:
            state = cache.memory[i] if cache is not None else None
            if state is None:
                state = self.memory.initial(x.shape[0], x.device, x.dtype)
            buffer = cache.segment[i] if cache is not None else None
            read, state, buffer = self.memory(h, layout, state, buffer, impl=memory_impl)
            if cache is not None:
                cache.memory[i], cache.segment[i] = state, buffer
            x = x + read
        return x + self.mlp(self.post_attention_layernorm(x))


class LM2PreTrainedModel(PreTrainedModel):
    config_class = LM2Config
    config: LM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LM2Block"]
    _is_stateful = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise every parameter kind of the model (also those a checkpoint does not provide)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
        if isinstance(module, MemoryBank):
            module.forget_gate.bias.fill_(module.forget_bias)
            if module.init == "learned":
                module.initial_state.copy_(
                    module.identity_state(module.initial_state.device, module.initial_state.dtype)
                )


class LM2Model(LM2PreTrainedModel):
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
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder over new tokens, continuing ``past_key_values`` when given.

        attention_mask: 2-D (B, T) or (B, past + T), 1 = real token, 0 = padding. Padding is never attended
        to and never written into memory. position_ids default to each token's index among its sample's
        valid tokens (so left padding does not shift positions).
        """
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

        cache = past_key_values
        if cache is not None and not isinstance(cache, LM2Cache):
            raise ValueError(
                f"past_key_values must be an LM2Cache (as returned by this model), got {type(cache).__name__}"
            )
        if cache is None and use_cache:
            cache = LM2Cache(config.num_hidden_layers)
        has_past = cache is not None and cache.is_initialized
        if has_past and cache.batch_size != B:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the input has {B}")

        valid = self._current_mask(attention_mask, B, T, cache.seen_tokens if has_past else 0, device)
        past_valid = cache.seen_valid if has_past else torch.zeros(B, dtype=torch.long, device=device)
        # Index of each token among its sample's valid tokens (padding: that of the previous valid token).
        index = past_valid[:, None] + valid.long().cumsum(1) - 1  # (B, T)
        if position_ids is None:
            position_ids = index.clamp(min=0)
        elif position_ids.shape != (B, T):
            if position_ids.dim() == 2 and position_ids.shape[0] == 1 and position_ids.shape[1] == T:
                position_ids = position_ids.expand(B, T)
            else:
                raise ValueError(f"position_ids must have shape ({B}, {T}), got {tuple(position_ids.shape)}")
        cos, sin = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, inputs_embeds.dtype)

        # Self-attention mask over [cached keys, new keys]; None = plain causal (the fused fast path).
        new_key_index = torch.where(valid, index, torch.full_like(index, -1))
        key_index = torch.cat([cache.key_index, new_key_index], 1) if has_past else new_key_index  # (B, L)
        window = config.attention_window
        if not has_past and bool(valid.all()) and (window is None or window >= T):
            mask = None
        else:
            k_idx, q_idx = key_index[:, None, :], index[:, :, None]
            mask = (k_idx >= 0) & (k_idx <= q_idx)
            if window is not None:
                mask &= q_idx - k_idx < window
            # Padding queries see everything: their outputs are never used, and this keeps them finite.
            mask = (mask | ~valid[:, :, None])[:, None]  # (B, 1, T, L)

        fill = past_valid % config.segment_length
        layout = SegmentLayout.build(valid, fill, config.segment_length)

        x = inputs_embeds
        hidden_states = [x] if output_hidden_states else None
        for block in self.layers:
            x = block(x, cos, sin, mask, layout, cache, config.memory_impl)
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
        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )
        return out if return_dict else out.to_tuple()

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


class LM2ForCausalLM(LM2PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LM2Config) -> None:
        super().__init__(config)
        self.model = LM2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: the first forward creates an LM2Cache.
        return False

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: LM2Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits for the new tokens; with labels, the mean next-token cross-entropy (ignoring -100)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            if labels.shape != hidden.shape[:2]:
                raise ValueError(
                    f"labels must have shape {tuple(hidden.shape[:2])}, got {tuple(labels.shape)}"
                )
            full_logits = logits if logits.shape[1] == hidden.shape[1] else self.lm_head(hidden)
            loss = F.cross_entropy(
                full_logits[:, :-1].float().reshape(-1, self.config.vocab_size),
                labels[:, 1:].reshape(-1).to(full_logits.device),
                ignore_index=-100,
            )
        result = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states
        )
        return result if return_dict else result.to_tuple()
