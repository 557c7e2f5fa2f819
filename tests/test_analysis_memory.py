"""lm2.analysis: the memory arrays equal a direct computation from the layer's weights (float64, odd sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM
from lm2.analysis.read_attention import analyze_prompt
from lm2.analysis.roles import CLASSES, SlotRoles, char_classes, token_classes
from lm2.cli import main
from tests.test_eval_fixtures import make_tokenizer

TEXT = "Mary moved to the bathroom. John went to the hallway. Daniel picked up the football. Where is Mary?"


def _model(
    tokenizer, topk: int | None = None, window: int | None = None, layers=None, norm: bool = False
) -> LM2ForCausalLM:
    torch.manual_seed(3)
    config = LM2Config(
        vocab_size=len(tokenizer), hidden_size=18, intermediate_size=22, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, memory_slots=7, memory_heads=3, segment_length=5,
        memory_topk=topk, attention_window=window, memory_layers=layers, max_position_embeddings=4096,
        memory_norm=norm,
    )  # fmt: skip
    model = LM2ForCausalLM(config).double().eval()
    with torch.no_grad():  # a non-trivial state: random gate weights and biases, not the initial ones
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _read_attention(h, state, wq, wk, H: int, hd: int, topk: int | None) -> np.ndarray:
    a = np.zeros((H, h.shape[0], state.shape[0]))
    for head in range(H):
        cols = slice(head * hd, (head + 1) * hd)
        scores = (h @ wq.T)[:, cols] @ (state @ wk.T)[:, cols].T / math.sqrt(hd)
        if topk is not None:
            cut = np.sort(scores, -1)[:, -topk][:, None]
            scores = np.where(scores >= cut, scores, -np.inf)
        a[head] = _softmax(scores)
    return a


def _direct(model, tokenizer, text):
    """Every block's input by an independent route (hidden states + input norm), then numpy all the way."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        hidden = model.model(input_ids=ids, output_hidden_states=True).hidden_states
    out = {}
    for i, layer in enumerate(model.model.layers):
        if layer.memory is None:
            continue
        bank = layer.memory
        W = {n: getattr(bank, n).weight.detach().numpy() for n in ("q_proj", "k_proj", "v_proj", "in_gate")}
        W["forget"] = bank.forget_gate.weight.detach().numpy()
        b_forget = bank.forget_gate.bias.detach().numpy()

        def projected(M, norm=bank.state_norm):
            """What the projections see of a state: RMS-normalised with memory_norm."""
            if norm is None:
                return M
            return M / np.sqrt((M**2).mean(-1, keepdims=True) + norm.eps) * norm.weight.detach().numpy()

        with torch.no_grad():
            h = layer.input_layernorm(hidden[i])[0].numpy()  # (T, D)
        T, D = h.shape
        H, hd, N, S = bank.heads, bank.head_dim, bank.slots, model.config.segment_length
        M = np.zeros((N, D))
        M[np.arange(N), np.arange(N) % D] = 1.0
        states, in_gates, forget_gates = [M], [], []
        for c in range(T // S):
            seg = h[c * S : (c + 1) * S]
            u = np.zeros((N, D))
            for head in range(H):
                cols = slice(head * hd, (head + 1) * hd)
                q, k, v = (
                    (projected(M) @ W["q_proj"].T)[:, cols],
                    (seg @ W["k_proj"].T)[:, cols],
                    (seg @ W["v_proj"].T)[:, cols],
                )
                u[:, cols] = _softmax(q @ k.T / math.sqrt(hd)) @ v
            g_in = 1 / (1 + np.exp(-(u @ W["in_gate"].T)))
            g_f = 1 / (1 + np.exp(-(u @ W["forget"].T + b_forget)))
            M = g_in * np.tanh(u) + g_f * M
            states.append(M)
            in_gates.append(g_in)
            forget_gates.append(g_f)

        def attention(state, h=h, W=W, H=H, hd=hd, topk=bank.topk):
            return _read_attention(h, projected(state), W["q_proj"], W["k_proj"], H, hd, topk)

        # token p reads the state after p // S writes
        causal = np.concatenate([attention(states[p // S])[:, p : p + 1] for p in range(T)], axis=1)
        out[i] = dict(
            before=attention(states[0]), after=attention(states[-1]), causal=causal,
            states=np.stack(states), in_gate=np.stack(in_gates), forget_gate=np.stack(forget_gates),
        )  # fmt: skip
    return out


@pytest.mark.parametrize(
    "options",
    [{}, {"topk": 3}, {"window": 6, "layers": [0, 2]}, {"norm": True}],
    ids=["dense", "topk", "window-chunks", "memory-norm"],
)
def test_arrays_match_a_direct_computation_from_the_weights(options) -> None:
    tokenizer = make_tokenizer()
    model = _model(tokenizer, **options)
    analysis = analyze_prompt(model, tokenizer, TEXT)
    direct = _direct(model, tokenizer, TEXT)
    T = len(tokenizer(TEXT)["input_ids"])
    assert T % 5 and T // 5 >= 3  # a partly filled last segment, several writes
    assert [b.layer for b in analysis.blocks] == sorted(direct)
    for block in analysis.blocks:
        want = direct[block.layer]
        for name in ("before", "after", "causal"):
            assert block.read[name].shape == (3, T, 7)
            np.testing.assert_allclose(block.read[name], want[name], atol=1e-10)
            np.testing.assert_allclose(block.read[name].sum(-1), 1.0, atol=1e-12)
        np.testing.assert_allclose(block.states, want["states"], atol=1e-10)
        np.testing.assert_allclose(block.in_gate, want["in_gate"], atol=1e-10)
        np.testing.assert_allclose(block.forget_gate, want["forget_gate"], atol=1e-10)
        # The recomputation is the model's own pass: final state and the read it added to the stream.
        assert block.checks["final_state"] < 1e-10 and block.checks["causal_readout"] < 1e-10
    # "before" differs from "after" once the memory was written
    assert not np.allclose(analysis.blocks[0].read["before"], analysis.blocks[0].read["after"])


def test_a_model_without_memory_is_refused() -> None:
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    model = LM2ForCausalLM(LM2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                     use_memory=False))  # fmt: skip
    with pytest.raises(ValueError, match="no memory blocks"):
        analyze_prompt(model, tokenizer, TEXT)


def _row() -> dict:
    facts = ["Mary moved to the bathroom.", "John went to the hallway."]
    bg = "The sun was low over the hills. Nobody spoke."
    text = f"{facts[0]} {bg} {facts[1]}"
    return {
        "input": text, "question": "Where is Mary?", "target": "bathroom", "task": "qa1", "length": "1k",
        "id": 0, "facts": facts, "supporting": [0],
        "fact_positions": [
            {"sentence": 0, "char_start": 0, "char_end": len(facts[0]), "token_start": 0},
            {"sentence": 2, "char_start": text.index(facts[1]), "char_end": len(text), "token_start": 0},
        ],
    }  # fmt: skip


def test_token_classes_follow_the_known_fact_positions() -> None:
    tokenizer = make_tokenizer()
    prompt, chars = char_classes(_row())
    enc = tokenizer(prompt, return_offsets_mapping=True)
    classes = token_classes(prompt, chars, enc["offset_mapping"])
    words = {}
    for (a, b), k in zip(enc["offset_mapping"], classes, strict=True):
        words.setdefault(CLASSES[k], []).append(prompt[a:b])
    assert "bathroom" in "".join(words["supporting fact"]) and "Mary" in "".join(words["supporting fact"])
    assert "hallway" in "".join(words["other fact"])
    assert "sun" in "".join(words["background"])
    assert "Where" in "".join(words["question"])
    assert "Answer" in "".join(words["answer marker"])
    assert "context" in "".join(words["markup"])


def test_slot_roles_ratio_is_one_for_uniform_attention() -> None:
    tokenizer = make_tokenizer()
    model = _model(tokenizer)
    with torch.no_grad():  # zero query weights: every slot attends evenly to its segment, every token evenly
        for layer in model.model.layers:
            layer.memory.q_proj.weight.zero_()
    prompt, chars = char_classes(_row())
    analysis = analyze_prompt(model, tokenizer, prompt)
    roles = SlotRoles()
    roles.add(analysis, token_classes(prompt, chars, analysis.offsets))
    summary = roles.summary()
    for block in summary["blocks"]:
        read = np.array([[np.nan if v is None else v for v in row] for row in block["read_ratio"]])
        np.testing.assert_allclose(read[~np.isnan(read)], 1.0, atol=1e-6)
        write = np.array([[np.nan if v is None else v for v in row] for row in block["write_ratio"]])
        np.testing.assert_allclose(write[~np.isnan(write)], 1.0, atol=1e-6)


def test_cli_writes_arrays_figures_and_roles(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tokenizer = make_tokenizer()
    model = _model(tokenizer).float()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(_row()) + "\n" + json.dumps({**_row(), "id": 1}) + "\n")
    out = tmp_path / "an"
    assert main(["analyze", "memory", "--model", str(tmp_path / "ckpt"), "--sample", str(rows), "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    result = json.loads((out / "analysis.json").read_text())
    assert result["roles"]["prompts"] == 2 and len(result["roles"]["blocks"]) == 3
    for layer in range(3):
        assert (out / f"fig6_block{layer}.png").stat().st_size > 1000
        assert (out / f"slots_block{layer}.png").stat().st_size > 1000
    arrays = np.load(out / "heatmaps.npz")
    assert arrays["block0_before"].shape == (len(result["heatmap_tokens"]), 7)
    assert main(["analyze", "memory", "--model", str(tmp_path / "ckpt"), "--out", str(out)]) == 2
