"""Read once, ask many (lm2.state): asking from a state read in chunks equals one call over document +
question, for every family; a saved state loads bit-identical and refuses what it cannot be; its size is
flat in the document's length where the model's state is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM, RMTConfig, RMTForCausalLM
from lm2.models.outputs import CACHE_FIELD
from lm2.state import MANIFEST_FILE, STATE_FILE, ModelState, ask_ids, read_tokens

VOCAB = 37
# Odd sizes throughout: width 24 in 3 heads over 1 key/value head, segments of 5, a window of 11.
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3,
    num_key_value_heads=1, max_position_embeddings=1 << 17,
)  # fmt: skip
MEMORY = dict(memory_slots=3, memory_heads=3, segment_length=5)

FAMILIES = {
    "lm2": lambda: LM2ForCausalLM(LM2Config(**SHAPE, **MEMORY, attention_window=11)),
    "lm2-full-attention": lambda: LM2ForCausalLM(LM2Config(**SHAPE, **MEMORY)),
    "lm2-short-conv": lambda: LM2ForCausalLM(LM2Config(**SHAPE, **MEMORY, attention_window=11, short_conv=3)),
    "vanilla": lambda: LM2ForCausalLM(LM2Config(**SHAPE, use_memory=False)),
    "vanilla-window": lambda: LM2ForCausalLM(LM2Config(**SHAPE, use_memory=False, attention_window=11)),
    "rmt": lambda: RMTForCausalLM(RMTConfig(**SHAPE, num_mem_tokens=3, segment_length=7)),
}


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FAMILIES[name]().to(dtype).eval()
    with torch.no_grad():  # well-separated greedy choices, so the comparison of tokens is a real one
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model.lm_head.weight.mul_(5.0)
    return model


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(family: str) -> torch.nn.Module:
    return build(family)


def one_shot(model, doc: torch.Tensor, question: torch.Tensor, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy tokens and the question's logits of one call over document + question."""
    full = torch.cat([doc, question], 1)
    with torch.no_grad():
        logits = model(full).logits[:, doc.shape[1] :]
    mask = torch.ones_like(full)  # explicit: generate() would take every id 0 (pad_token_id) for padding
    generated = model.generate(full, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0)
    return generated[:, full.shape[1] :], logits


def from_state(
    model, state: ModelState, question: torch.Tensor, new: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same, asked from the state (on copies: the state itself is never extended)."""
    with torch.no_grad():
        logits = model(question, use_cache=True, **{CACHE_FIELD: state.copy().cache}).logits
    return ask_ids(model, state, question, new, pad_token_id=0), logits


@pytest.mark.parametrize(
    ("doc_len", "chunk"),
    [(53, 7), (53, 3), (53, 10), (53, 53), (53, 4096), (12, 1)],  # mid-segment, segment-aligned, one piece
)
def test_read_then_ask_equals_one_call(model, doc_len: int, chunk: int) -> None:
    doc, question = tokens(doc_len, 1), tokens(4, 2)
    want_tokens, want_logits = one_shot(model, doc, question, new=9)
    state = read_tokens(model, doc, chunk_tokens=chunk)
    assert state.tokens == doc_len
    got_tokens, got_logits = from_state(model, state, question, new=9)
    assert torch.equal(got_tokens, want_tokens)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-9, atol=1e-9)
    assert len(set(want_tokens[0].tolist())) > 1  # not a degenerate constant answer


def test_generation_inputs_drive_generate_directly(model) -> None:
    doc, question = tokens(29, 3), tokens(3, 4)
    want, _ = one_shot(model, doc, question, new=6)
    state = read_tokens(model, doc, chunk_tokens=8)
    out = model.generate(
        **state.generation_inputs(question), max_new_tokens=6, do_sample=False, pad_token_id=0
    )
    assert torch.equal(out[:, question.shape[1] :], want)


def test_saved_state_asks_bit_identically(model, tmp_path: Path) -> None:
    doc, question = tokens(41, 5), tokens(5, 6)
    live = read_tokens(model, doc, chunk_tokens=9)
    live.info["prompt"] = "raw"
    folder = live.save(tmp_path / "state")
    loaded = ModelState.load(folder, model)
    assert loaded.tokens == 41 and loaded.fingerprint == live.fingerprint and loaded.info == {"prompt": "raw"}
    assert loaded.tensors().keys() == live.tensors().keys()
    for name, t in live.tensors().items():
        assert torch.equal(loaded.tensors()[name], t), name
    live_tokens, live_logits = from_state(model, live, question, new=7)
    loaded_tokens, loaded_logits = from_state(model, loaded, question, new=7)
    assert torch.equal(loaded_tokens, live_tokens)
    assert torch.equal(loaded_logits, live_logits)


def test_asking_from_a_copy_leaves_the_original_unchanged(model, family: str) -> None:
    state = read_tokens(model, tokens(23, 7), chunk_tokens=6)
    before = {name: t.clone() for name, t in state.tensors().items()}
    copy = state.copy()
    question = tokens(4, 8)
    with torch.no_grad():
        out = model(question, use_cache=True, **{CACHE_FIELD: copy.cache})
    ask_ids(model, state, question, 5, pad_token_id=0)
    ask_ids(model, copy, question, 5, pad_token_id=0)
    after = state.tensors()
    assert after.keys() == before.keys()
    for name, t in before.items():
        assert torch.equal(after[name], t), name
    # The copy itself moved on (LM2's cache is extended in place; RMT's forward returns a new one).
    extended = copy.cache if family != "rmt" else getattr(out, CACHE_FIELD)
    assert int(extended.get_seq_length()) == 27 and state.cache.get_seq_length() == 23


def _saved(tmp_path: Path, name: str = "lm2") -> tuple[torch.nn.Module, Path]:
    model = build(name)
    return model, read_tokens(model, tokens(31, 9), chunk_tokens=8).save(tmp_path / "state")


def test_refuses_a_state_of_another_config(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    torch.manual_seed(0)
    other = LM2ForCausalLM(LM2Config(**SHAPE, **{**MEMORY, "memory_slots": 4}, attention_window=11)).double()
    with pytest.raises(ValueError, match="another model config.*memory_slots: state 3, this model 4"):
        ModelState.load(folder, other)


def test_refuses_a_state_of_another_family(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    with pytest.raises(ValueError, match="family lm2; this model's family is vanilla"):
        ModelState.load(folder, build("vanilla-window"))
    with pytest.raises(ValueError, match="family lm2; this model's family is rmt"):
        ModelState.load(folder, build("rmt"))


def test_refuses_another_dtype(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    with pytest.raises(ValueError, match="read in float64; this model runs in float32"):
        ModelState.load(folder, build("lm2", dtype=torch.float32))


def test_refuses_a_truncated_or_tampered_file(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    data = (folder / STATE_FILE).read_bytes()
    (folder / STATE_FILE).write_bytes(data[:-10])
    with pytest.raises(ValueError, match="cut short"):
        ModelState.load(folder, model)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    (folder / STATE_FILE).write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        ModelState.load(folder, model)
    (folder / STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="state.safetensors: missing"):
        ModelState.load(folder, model)


def test_refuses_a_missing_manifest_or_folder(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["sha256"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="corrupt, it lacks sha256"):
        ModelState.load(folder, model)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
        ModelState.load(folder, model)
    with pytest.raises(FileNotFoundError, match="state folder not found"):
        ModelState.load(tmp_path / "nowhere", model)


def test_refuses_an_empty_document_and_a_question_longer_than_the_window() -> None:
    model = build("lm2")
    with pytest.raises(ValueError, match="empty document"):
        read_tokens(model, torch.zeros(1, 0, dtype=torch.long))
    state = read_tokens(model, tokens(20, 10))
    with pytest.raises(ValueError, match="12 tokens, longer than the model's attention window of 11"):
        ask_ids(model, state, tokens(12, 11))
    with pytest.raises(ValueError, match="empty question"):
        ask_ids(model, state, torch.zeros(1, 0, dtype=torch.long))


# 64 (LM2) and 16 (RMT: a loop over 2,341 segments) times longer, no multiple of the chunk, and the same length
# modulo both segment lengths (5 and 7): RMT's open segment holds the last (length mod 7) tokens' embeddings.
@pytest.mark.parametrize(("name", "length"), [("lm2", 1024 + 35 * 1843), ("rmt", 1024 + 35 * 439)])
def test_state_size_does_not_grow_with_the_document(name: str, length: int) -> None:
    model = build(name, dtype=torch.float32)
    short = read_tokens(model, tokens(1024, 12))
    long = read_tokens(model, tokens(length, 13))
    assert long.tokens == length
    assert long.nbytes() == short.nbytes()
    assert {k: t.shape for k, t in long.tensors().items()} == {k: t.shape for k, t in short.tensors().items()}


def test_vanilla_without_a_window_keeps_every_key() -> None:
    """Documented: vanilla's state is its attention cache; without a window it grows with the document."""
    model = build("vanilla", dtype=torch.float32)
    short, long = read_tokens(model, tokens(100, 14)), read_tokens(model, tokens(400, 15))
    # Per token and block: a key and a value of head dim 8 per key/value head (fp32); once: its index (int64).
    per_token = SHAPE["num_hidden_layers"] * 2 * SHAPE["num_key_value_heads"] * 8 * 4 + 8
    assert long.nbytes() - short.nbytes() == 300 * per_token
