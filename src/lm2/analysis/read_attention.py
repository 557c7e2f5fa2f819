"""What LM2's memory does on a prompt: read attention over the slots and the gates, before and after writing.

For a prompt, one forward pass records each memory block's input h (B=1, T, D) through forward hooks on
the banks (the layer's code is not touched). Everything else is recomputed from the bank's weights:

- the states: M_0 = the initial memory, M_c = after the prompt's c-th full segment is written;
- the read attention of every token over the slots, per head, against three states:
  ``before`` (M_0: the memory as it was before the prompt, the paper's Figure 6 left),
  ``after`` (M_C: the memory after the whole prompt is written, Figure 6 right) and
  ``causal`` (the state each token really read during the pass, M_(p // S) for token p);
- the output gate sigmoid(E_mem W_out) of every token for each of the three reads;
- the input and forget gates of every write, per slot, and the write attention of each slot over the
  tokens of its segment.

The recomputed states are checked against the state the model itself ended with, and the ``causal``
read-out against the read the model added to its residual stream, so the arrays are the model's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lm2.layers.memory import MemoryBank

READS = ("before", "after", "causal")


@dataclass
class BlockMemory:
    """The memory of one block over one prompt (T tokens, N slots, H heads, C writes, D channels)."""

    layer: int
    states: np.ndarray  # (C+1, N, D): M_0 .. M_C
    read: dict[str, np.ndarray]  # READS -> (H, T, N) attention weights (each row sums to 1)
    out_gate: dict[str, np.ndarray]  # READS -> (T, D) sigmoid(E_mem W_out)
    readout: dict[str, np.ndarray]  # READS -> (T, D) g_out * E_mem, what the block adds to its stream
    write_attention: np.ndarray  # (C, H, N, S): slot n's attention over the tokens of segment c
    in_gate: np.ndarray  # (C, N, D)
    forget_gate: np.ndarray  # (C, N, D)
    checks: dict[str, float] = field(default_factory=dict)  # max |difference| to the model's own pass


@dataclass
class MemoryAnalysis:
    tokens: list[str]  # (T,) the prompt's tokens as text
    token_ids: list[int]
    offsets: list[tuple[int, int]]  # (T,) character span of each token in the prompt
    segment_length: int
    blocks: list[BlockMemory]

    def summary(self) -> dict[str, Any]:
        """Plain numbers: per block, mean gates, attention entropy (nats) and the agreement checks."""
        out = []
        for b in self.blocks:
            n = b.states.shape[1]
            entry: dict[str, Any] = {
                "layer": b.layer,
                "writes": int(b.states.shape[0] - 1),
                "checks": b.checks,
            }
            for name in READS:
                att = b.read[name]
                ent = float(-(att * np.log(np.clip(att, 1e-30, None))).sum(-1).mean())
                entry[f"read_entropy_{name}"] = ent
                entry[f"out_gate_{name}"] = float(b.out_gate[name].mean())
            entry["read_entropy_uniform"] = math.log(n)
            entry["in_gate"] = float(b.in_gate.mean()) if b.in_gate.size else None
            entry["forget_gate"] = float(b.forget_gate.mean()) if b.forget_gate.size else None
            out.append(entry)
        return {"tokens": len(self.tokens), "segment_length": self.segment_length, "blocks": out}


def read_weights(bank: MemoryBank, h: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Attention (H, L, N) of tokens h (L, D) over the slots of ``state`` (N, D), top-k applied."""
    L, N = h.shape[0], state.shape[0]
    q = bank.q_proj(h).view(L, bank.heads, bank.head_dim).transpose(0, 1)  # (H, L, hd)
    k = bank.k_proj(bank.projected(state)).view(N, bank.heads, bank.head_dim).transpose(0, 1)  # (H, N, hd)
    scores = q @ k.transpose(-1, -2) / math.sqrt(bank.head_dim)  # (H, L, N)
    if bank.topk is not None and bank.topk < N:
        kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(
            -1, scores.topk(bank.topk, -1).indices, True
        )
        scores = scores.masked_fill(~kept, float("-inf"))
    return scores.softmax(-1)


def readout(
    bank: MemoryBank, weights: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated read-out (L, D) and output gate (L, D) given read weights (H, L, N) over ``state``."""
    H, L, N = weights.shape
    v = bank.v_proj(bank.projected(state)).view(N, H, bank.head_dim).transpose(0, 1)  # (H, N, hd)
    e_mem = bank.o_proj((weights @ v).transpose(0, 1).reshape(L, bank.hidden_size))  # (L, D)
    gate = torch.sigmoid(bank.out_gate(e_mem))
    return gate * e_mem, gate


def write_parts(
    bank: MemoryBank, state: torch.Tensor, segment: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One write: (new state (N, D), attention (H, N, S), input gate (N, D), forget gate (N, D))."""
    N, S = state.shape[0], segment.shape[0]
    q = bank.q_proj(bank.projected(state)).view(N, bank.heads, bank.head_dim).transpose(0, 1)  # (H, N, hd)
    k = bank.k_proj(segment).view(S, bank.heads, bank.head_dim).transpose(0, 1)  # (H, S, hd)
    v = bank.v_proj(segment).view(S, bank.heads, bank.head_dim).transpose(0, 1)
    att = (q @ k.transpose(-1, -2) / math.sqrt(bank.head_dim)).softmax(-1)  # (H, N, S)
    u = (att @ v).transpose(0, 1).reshape(N, bank.hidden_size)  # (N, D)
    g_in = torch.sigmoid(bank.in_gate(u))
    g_forget = torch.sigmoid(bank.forget_gate(u))
    return g_in * torch.tanh(u) + g_forget * state, att, g_in, g_forget


@torch.no_grad()
def analyze_prompt(model: Any, tokenizer: Any, text: str) -> MemoryAnalysis:
    """Run ``model`` (an LM2ForCausalLM with memory) over ``text`` and analyse every memory block."""
    banks = [
        (i, layer.memory)
        for i, layer in enumerate(getattr(getattr(model, "model", None), "layers", []))
        if getattr(layer, "memory", None) is not None
    ]
    if not banks:
        raise ValueError(
            f"{type(model).__name__} has no memory blocks to analyse: give an LM2 checkpoint with use_memory"
        )
    enc = tokenizer(text, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if not ids:
        raise ValueError("the prompt is empty after tokenisation")
    device = next(model.parameters()).device
    inputs: dict[int, list[torch.Tensor]] = {i: [] for i, _ in banks}
    outputs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i, _ in banks}
    handles = []
    for i, bank in banks:
        # A windowed model runs a long prompt in several calls: collect every call's block input.
        handles.append(bank.register_forward_pre_hook(lambda _m, args, i=i: inputs[i].append(args[0][0])))
        handles.append(
            bank.register_forward_hook(lambda _m, _a, out, i=i: outputs[i].append((out[0][0], out[1][0])))
        )
    try:
        model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    finally:
        for handle in handles:
            handle.remove()

    S = int(model.config.segment_length)
    blocks = []
    for i, bank in banks:
        h = torch.cat(inputs[i])  # (T, D)
        model_read = torch.cat([o[0] for o in outputs[i]])  # (T, D)
        model_final = outputs[i][-1][1]  # (N, D)
        blocks.append(_analyze_block(i, bank, h, S, model_read, model_final))
    tokens = [tokenizer.decode([t]) for t in ids]
    offsets = [tuple(int(x) for x in o) for o in enc.get("offset_mapping", [(0, 0)] * len(ids))]
    return MemoryAnalysis(tokens, ids, offsets, S, blocks)


def _analyze_block(
    layer: int, bank: MemoryBank, h: torch.Tensor, S: int, model_read: torch.Tensor, model_final: torch.Tensor
) -> BlockMemory:
    T = h.shape[0]
    state = bank.initial(1, h.device, h.dtype)[0]  # (N, D)
    states, write_att, g_ins, g_forgets = [state], [], [], []
    for c in range(T // S):
        state, att, g_in, g_forget = write_parts(bank, state, h[c * S : (c + 1) * S])
        states.append(state)
        write_att.append(att)
        g_ins.append(g_in)
        g_forgets.append(g_forget)
    C = len(states) - 1
    read, gates, outs = {}, {}, {}
    for name, st in (("before", states[0]), ("after", states[-1])):
        w = read_weights(bank, h, st)
        read[name], (outs[name], gates[name]) = w, readout(bank, w, st)
    # Causal: token p read the state after p // S writes; compute per segment row.
    parts_w, parts_o, parts_g = [], [], []
    for g in range(-(-T // S)):
        piece = h[g * S : (g + 1) * S]
        w = read_weights(bank, piece, states[g])
        o, gt = readout(bank, w, states[g])
        parts_w.append(w)
        parts_o.append(o)
        parts_g.append(gt)
    read["causal"], outs["causal"], gates["causal"] = (
        torch.cat(parts_w, 1),
        torch.cat(parts_o),
        torch.cat(parts_g),
    )
    checks = {
        "final_state": float((states[-1] - model_final).abs().max()),
        "causal_readout": float((outs["causal"] - model_read).abs().max()),
    }
    N, D, H = bank.slots, bank.hidden_size, bank.heads

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy() if t.dtype != torch.float64 else t.detach().cpu().numpy()

    return BlockMemory(
        layer=layer,
        states=np_(torch.stack(states)),
        read={k: np_(v) for k, v in read.items()},
        out_gate={k: np_(v) for k, v in gates.items()},
        readout={k: np_(v) for k, v in outs.items()},
        write_attention=np_(torch.stack(write_att)) if C else np.zeros((0, H, N, S), np.float32),
        in_gate=np_(torch.stack(g_ins)) if C else np.zeros((0, N, D), np.float32),
        forget_gate=np_(torch.stack(g_forgets)) if C else np.zeros((0, N, D), np.float32),
        checks=checks,
    )
