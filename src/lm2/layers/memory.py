"""The LM2 memory bank: a gated cross-attention read every token, an LSTM-like write every S valid tokens.

State M has shape (B, N, D): N slots of width D (= hidden size). With h the block's normalised input:

    read   E_mem = o_proj(MHA(q = h W_Q, k = M W_K, v = M W_V))      (optional top-k over slots)
           g_out = sigmoid(E_mem W_out);  the block adds g_out * E_mem to its residual stream
    write  U = MHA(q = M W_Q, k = h_c W_K, v = h_c W_V)               (each slot reads the segment h_c)
           g_in = sigmoid(U W_in);  g_forget = sigmoid(U W_forget + b_forget)
           M <- g_in * tanh(U) + g_forget * M

With ``norm`` (the config's memory_norm, not in the paper) M is RMS-normalised wherever it is projected
(M W_K, M W_V in the read, M W_Q in the write), so slots meet tokens at the tokens' scale; the update
itself uses M as it is.

Read and write share W_Q, W_K, W_V (the paper's Eq. 1 has one set; see docs/design.md). Tokens of a
segment read the state left by the previous segment's write, so nothing flows backwards in time.

Segments are counted per sample in valid tokens since the start of the stream, wherever call boundaries
and padding fall. Two implementations compute exactly the same function:

- ``forward_fast``: places the valid tokens on a (B, G, S, D) grid of segments (row = segment, column =
  place in it), scans the G writes (cheap: N queries against S keys each), then does every read in one
  batched cross-attention with segments as a batch dimension, (B*G, H, S, N).
- ``forward_naive``: the reference; a plain Python loop over samples and tokens that reads, appends the
  token to the open segment, and writes when the segment is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from lm2.layers.norm import RMSNorm


@dataclass
class SegmentLayout:
    """Where each valid token of a call falls in its sample's segment stream (shared by all memory blocks).

    Position p of a valid token = tokens already in the open segment before the call (fill) + its rank
    among the call's valid tokens; it lies on grid row p // S (the state it reads = after that many
    writes in this call) and column p % S. The per-token indices are computed on first use only: a
    decoding step without padding never needs them.
    """

    valid: torch.Tensor  # (B, T) bool
    fill: torch.Tensor  # (B,) tokens of the open segment carried in from before the call
    n_writes: torch.Tensor  # (B,) writes completed during this call
    grid_rows: int  # G: grid rows holding this call's tokens
    dense: bool  # no padding and no open segment: the grid is a reshape of the input
    segment_length: int
    all_valid: bool  # no padding in this call
    max_writes: int  # the most writes any sample completes during this call

    @classmethod
    def build(cls, valid: torch.Tensor, fill: torch.Tensor, segment_length: int) -> SegmentLayout:
        S, T = segment_length, valid.shape[1]
        all_valid = bool(valid.all())
        total = fill + (T if all_valid else valid.long().sum(1))  # (B,) tokens of the stream after the call
        longest = int(fill.max()) + T if all_valid else int(total.max())
        return cls(
            valid=valid,
            fill=fill,
            n_writes=total // S,
            grid_rows=max(1, -(-longest // S)),
            dense=all_valid and longest == T,
            segment_length=S,
            all_valid=all_valid,
            max_writes=longest // S,
        )

    @cached_property
    def token_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample, index in the call) of every valid token, each (V,)."""
        return self.valid.nonzero(as_tuple=True)

    @property
    def b_idx(self) -> torch.Tensor:
        return self.token_index[0]

    @property
    def t_idx(self) -> torch.Tensor:
        return self.token_index[1]

    @cached_property
    def stream_position(self) -> torch.Tensor:
        """(V,) position p of every valid token in its sample's segment stream."""
        pos = self.fill[:, None] + self.valid.long().cumsum(1) - 1  # (B, T)
        return pos[self.b_idx, self.t_idx]

    @cached_property
    def append_columns(self) -> torch.Tensor:
        """(B, T, 1) column of the open segment each token lands in, for a call without padding or write."""
        T = self.valid.shape[1]
        return (self.fill[:, None] + torch.arange(T, device=self.fill.device))[..., None]

    @cached_property
    def row(self) -> torch.Tensor:
        return self.stream_position // self.segment_length

    @cached_property
    def col(self) -> torch.Tensor:
        return self.stream_position % self.segment_length


class MemoryBank(nn.Module):
    # A recorder set by ``LM2PreTrainedModel.memory_diagnostics`` (None otherwise: nothing is computed).
    # The fast path appends, per call, the mean input and forget gate of every write (B, C) and whether
    # the write happened (B, C); the block appends the read's size relative to the residual stream (B, T).
    diagnostics: dict[str, list[torch.Tensor]] | None = None

    def __init__(
        self,
        hidden_size: int,
        slots: int,
        heads: int,
        topk: int | None = None,
        init: str = "identity",
        forget_bias: float = 1.0,
        impl: str = "fast",
        norm: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if impl not in ("fast", "naive"):
            raise ValueError(f"memory impl must be 'fast' or 'naive', got {impl!r}")
        # Chosen once per model (the config's memory_impl): "fast" or the "naive" reference loop.
        self.impl = impl
        self.hidden_size, self.slots, self.heads, self.topk = hidden_size, slots, heads, topk
        self.head_dim = hidden_size // heads
        self.init = init
        self.forget_bias = forget_bias
        # Shared by the read (tokens query slots) and the write (slots query the segment).
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # mixes the read's heads
        self.out_gate = nn.Linear(hidden_size, hidden_size, bias=False)  # W_out
        self.in_gate = nn.Linear(hidden_size, hidden_size, bias=False)  # W_in
        self.forget_gate = nn.Linear(hidden_size, hidden_size, bias=True)  # W_forget, b_forget
        # What the model's weight initialisation fills the bias with: transformers initialises module by
        # module, and a MemoryBank without parameters of its own is never visited itself.
        self.forget_gate.bias_init = forget_bias
        if init == "learned":
            self.initial_state = nn.Parameter(self.identity_state())
        # The identity state's slots have norm 1 and a write adds g_in * tanh(U), at most 1 per channel,
        # while the tokens are normalised to norm sqrt(D): unnormalised, the slots' keys and queries are
        # about sqrt(D) times smaller than the tokens', and the attention stays near uniform.
        self.state_norm = RMSNorm(hidden_size, eps) if norm else None

    def projected(self, state: torch.Tensor) -> torch.Tensor:
        """What the projections see of a state (X, N, D): normalised with ``norm``, else the state itself."""
        return state if self.state_norm is None else self.state_norm(state)

    def state_keys_values(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The read keys and values (X, H, N, hd) of a state (X, N, D)."""
        return self.keys_values(self.projected(state))

    def identity_state(
        self, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The rectangular identity (N, D): slot r is the unit vector e_(r mod D)."""
        eye = torch.zeros(self.slots, self.hidden_size, device=device, dtype=dtype)
        r = torch.arange(self.slots, device=device)
        eye[r, r % self.hidden_size] = 1.0
        return eye

    def initial(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The state before any write, (B, N, D)."""
        if self.init == "learned":
            state = self.initial_state.to(dtype)
        else:
            state = self.identity_state(device, dtype)
        return state.unsqueeze(0).expand(batch_size, -1, -1)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (X, H, L, hd) of source (X, L, D): the slots for a read, a segment for a write."""
        X, L, _ = source.shape
        k = self.k_proj(source).view(X, L, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(source).view(X, L, self.heads, self.head_dim).transpose(1, 2)
        return k, v

    def _attend(self, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: int | None) -> torch.Tensor:
        """Multi-head attention from q_in (X, Lq, D) to keys/values (X, H, Lk, hd), heads concatenated."""
        X, Lq, D = q_in.shape
        q = self.q_proj(q_in).view(X, Lq, self.heads, self.head_dim).transpose(1, 2)  # (X, H, Lq, hd)
        if topk is None or topk >= k.shape[2]:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (X, H, Lq, Lk)
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(
                -1, scores.topk(topk, dim=-1).indices, True
            )
            y = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
        return y.transpose(1, 2).reshape(X, Lq, D)  # (X, Lq, D)

    def read(
        self, h: torch.Tensor, state: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Gated memory read-out g_out * E_mem for tokens h (X, L, D) from states (X, N, D).

        kv: the states' keys/values when already computed (they change only when the memory is written).
        """
        k, v = self.state_keys_values(state) if kv is None else kv
        e_mem = self.o_proj(self._attend(h, k, v, self.topk))
        return torch.sigmoid(self.out_gate(e_mem)) * e_mem

    def write(
        self,
        state: torch.Tensor,
        segment: torch.Tensor | None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        gates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The state (X, N, D) after writing one full segment (X, S, D).

        kv: the segment's keys/values when already computed (the fast path projects every segment at once);
        gates: ``self.gate_weights()`` when already built (once per scan instead of once per write).
        """
        return self.gated_write(state, segment, kv, gates)[0]

    def gated_write(
        self,
        state: torch.Tensor,
        segment: torch.Tensor | None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        gates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`write`, also returning its input and forget gates, each (X, N, D)."""
        u = self._attend(self.projected(state), *(self.keys_values(segment) if kv is None else kv), None)
        weight, bias = self.gate_weights() if gates is None else gates
        g_in, g_forget = torch.sigmoid(F.linear(u, weight, bias)).chunk(2, dim=-1)
        return g_in * torch.tanh(u) + g_forget * state, g_in, g_forget

    def gate_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_in and W_forget stacked (2D, D), with the bias (2D,) (zero for W_in): both gates in one product."""
        bias = self.forget_gate.bias
        return (
            torch.cat([self.in_gate.weight, self.forget_gate.weight]),
            torch.cat([torch.zeros_like(bias), bias]),
        )

    def forward(
        self,
        h: torch.Tensor,
        layout: SegmentLayout,
        state: torch.Tensor,
        pending: torch.Tensor | None,
        state_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Read for every valid token of h (B, T, D) and write every completed segment.

        state: (B, N, D) memory before the call; pending: (B, S, D) block inputs of the open segment
        (first ``layout.fill`` rows used) or None when nothing is open; state_kv: the state's read
        keys/values if known. Returns the gated read-out (B, T, D) (zero at padding), the final state
        (B, N, D), the new pending inputs of the open segment (B, S, D) and the final state's keys/values
        (None when a write made them unknown).
        """
        if self.impl == "fast":
            return self.forward_fast(h, layout, state, pending, state_kv)
        return (*self.forward_naive(h, layout, state, pending), None)

    def forward_fast(
        self,
        h: torch.Tensor,
        layout: SegmentLayout,
        state: torch.Tensor,
        pending: torch.Tensor | None,
        state_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        B, T, D = h.shape
        S, G = layout.segment_length, layout.grid_rows
        if G == 1 and layout.max_writes == 0:
            # Nothing is written (decoding between writes, short pieces): every token reads the state it
            # started with, reusing the state's keys/values, and only the open segment grows. Buffer rows
            # past the fill are never read (the grid below masks them), so they need no clearing here.
            open_segment = h.new_zeros(B, S, D) if pending is None else pending.to(h.dtype)
            if layout.all_valid:
                # Token t of every sample lands in column fill + t (no write: it stays below S).
                new_pending = open_segment.scatter(1, layout.append_columns.expand(B, T, D), h)
            else:
                new_pending = open_segment.index_put((layout.b_idx, layout.col), h[layout.b_idx, layout.t_idx])
            kv = state_kv if state_kv is not None else self.state_keys_values(state)
            out = self.read(h, state, kv)
            if not layout.all_valid:
                out = torch.where(layout.valid[..., None], out, torch.zeros_like(out))
            return out, state, new_pending, kv

        # Grid of segments (B, G+1, S, D); the spare last row is the empty open segment after an exact fill.
        if layout.dense and T == G * S:
            # Whole segments only: the grid is h itself and nothing stays open.
            grid = h.reshape(B, G, S, D)
        elif layout.dense:
            grid = F.pad(h, (0, 0, 0, (G + 1) * S - T)).view(B, G + 1, S, D)
        else:
            grid = h.new_zeros(B, G + 1, S, D)
            if pending is not None:
                open_rows = torch.arange(S, device=h.device)[None, :] < layout.fill[:, None]  # (B, S)
                first = torch.where(open_rows[..., None], pending.to(h.dtype), grid[:, 0])
                grid = torch.cat([first[:, None], grid[:, 1:]], dim=1)
            grid = grid.index_put((layout.b_idx, layout.row, layout.col), h[layout.b_idx, layout.t_idx])

        # Scan the writes: states[c] is the memory after c writes of this call. The segments' keys/values
        # depend only on h, so they are projected for all segments in one product before the scan.
        n_max = layout.max_writes
        states = [state]
        if n_max:
            seg_k, seg_v = self.keys_values(grid[:, :n_max].reshape(B * n_max, S, D))
            seg_k = seg_k.view(B, n_max, self.heads, S, self.head_dim)  # (B, C, H, S, hd)
            seg_v = seg_v.view(B, n_max, self.heads, S, self.head_dim)
            gates = self.gate_weights()
            all_write = bool((layout.n_writes == n_max).all())
        gate_means: list[tuple[torch.Tensor, torch.Tensor]] = []
        for c in range(n_max):
            new, g_in, g_forget = self.gated_write(state, None, (seg_k[:, c], seg_v[:, c]), gates)
            state = new if all_write else torch.where((c < layout.n_writes)[:, None, None], new, state)
            states.append(state)
            if self.diagnostics is not None:
                gate_means.append((g_in.detach().mean((1, 2)), g_forget.detach().mean((1, 2))))
        if self.diagnostics is not None and n_max:
            self.diagnostics["in_gate"].append(torch.stack([g for g, _ in gate_means], 1))  # (B, C)
            self.diagnostics["forget_gate"].append(torch.stack([f for _, f in gate_means], 1))
            self.diagnostics["write_done"].append(
                torch.arange(n_max, device=h.device)[None, :] < layout.n_writes[:, None]
            )

        if grid.shape[1] == G:
            new_pending = h.new_zeros(B, S, D)
        else:
            new_pending = grid[torch.arange(B, device=h.device), layout.n_writes]  # (B, S, D)
        if G == 1:
            # Every token of the call reads the state it started with (the piece ends exactly at a segment
            # boundary): read from h directly, instead of from a grid row.
            kv = state_kv if state_kv is not None else self.state_keys_values(states[0])
            out = self.read(h, states[0], kv)
            if not layout.all_valid:
                out = torch.where(layout.valid[..., None], out, torch.zeros_like(out))
            return out, state, new_pending, None  # a write made the new keys/values unknown

        # Every read at once: grid row g reads the state after g writes.
        read_states = torch.stack(states[:G], dim=1)  # (B, G, N, D)
        r = self.read(grid[:, :G].reshape(B * G, S, D), read_states.reshape(B * G, self.slots, D))
        r = r.view(B, G, S, D)
        if layout.dense:
            out = r.reshape(B, G * S, D)[:, :T]
        else:
            out = r.new_zeros(B, T, D).index_put(
                (layout.b_idx, layout.t_idx), r[layout.b_idx, layout.row, layout.col]
            )
        return out, state, new_pending, None  # G > 1: some sample wrote, its new keys/values are not known

    def forward_naive(
        self, h: torch.Tensor, layout: SegmentLayout, state: torch.Tensor, pending: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, D = h.shape
        S = layout.segment_length
        outs, finals, pendings = [], [], []
        for b in range(B):
            m = state[b : b + 1]  # (1, N, D)
            open_segment = (
                [pending[b, i].to(h.dtype) for i in range(int(layout.fill[b]))] if pending is not None else []
            )
            rows = []
            for t in range(T):
                if not layout.valid[b, t]:
                    rows.append(h.new_zeros(D))
                    continue
                token = h[b, t].view(1, 1, D)
                rows.append(self.read(token, m)[0, 0])  # reads the state before this segment's write
                open_segment.append(h[b, t])
                if len(open_segment) == S:
                    m = self.write(m, torch.stack(open_segment)[None])
                    open_segment = []
            outs.append(torch.stack(rows))
            finals.append(m[0])
            padding = [h.new_zeros(D)] * (S - len(open_segment))
            pendings.append(torch.stack(open_segment + padding))
        return torch.stack(outs), torch.stack(finals), torch.stack(pendings)
