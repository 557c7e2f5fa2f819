"""The model's correctness properties on a CUDA device (CI has none: run this where a GPU is).

    python benchmarks/gpu_check.py --device cuda      # prints one PASS/FAIL line per property, exit 1 on a FAIL

The same properties the CPU suite proves (tests/test_model_*.py, tests/test_rmt.py), re-checked on the
device's own kernels: naive memory reference = fast path (outputs, final state, gradients; float64),
chunking invariance through the cache (float64), cached greedy generation = recomputation (LM2, vanilla,
RMT), vanilla parity with transformers' Llama, and a bf16-autocast training step of every family with
finite loss and gradients. ``--device cpu`` runs the same checks here (how the script itself is tested).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from transformers import LlamaForCausalLM

from lm2 import LM2Config, LM2ForCausalLM, RMTConfig, RMTForCausalLM
from lm2.models.loading import lm2_config_to_llama
from lm2.models.outputs import output_cache

BACKBONE = dict(
    vocab_size=97,
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
)


def lm2(device: str, dtype: torch.dtype = torch.float32, **overrides) -> LM2ForCausalLM:
    torch.manual_seed(0)
    config = LM2Config(**{**BACKBONE, "memory_slots": 7, "memory_heads": 2, "segment_length": 5, **overrides})
    model = LM2ForCausalLM(config)
    with torch.no_grad():  # larger than the default init, so reads, gates and writes all matter numerically
        for name, p in model.named_parameters():
            if "memory" in name and p.dim() == 2 and "initial_state" not in name:
                p.normal_(0.0, 0.3)
    return model.to(device=device, dtype=dtype).eval()


def rmt(device: str) -> RMTForCausalLM:
    torch.manual_seed(0)
    return RMTForCausalLM(RMTConfig(**BACKBONE, num_mem_tokens=3, segment_length=7)).to(device).eval()


def ids_for(device: str, batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, BACKBONE["vocab_size"], (batch, length), generator=g).to(device)


def run_pieces(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, cuts: list[int]):
    cache, logits, start = None, [], 0
    for end in [*cuts, ids.shape[1]]:
        out = model(
            ids[:, start:end],
            attention_mask=None if mask is None else mask[:, :end],
            cache=cache,
            use_cache=True,
        )
        cache, start = output_cache(out), end
        logits.append(out.logits)
    return torch.cat(logits, 1), cache


def check_naive_equals_fast(device: str) -> str:
    model = lm2(device, torch.float64)
    ids = ids_for(device, 3, 63, 1)
    mask = torch.ones(3, 63, dtype=torch.long, device=device)
    mask[0, :7] = 0
    mask[2, :20] = 0
    results = {}
    for impl in ("fast", "naive"):
        for block in model.model.layers:
            block.memory.impl = impl
        model.zero_grad()
        logits, cache = run_pieces(model, ids, mask, [17, 18, 40])
        logits[mask.bool()].square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[impl] = (logits, cache, grads)
    (fl, fc, fg), (nl, nc, ng) = results["fast"], results["naive"]
    keep = mask.bool()
    torch.testing.assert_close(fl[keep], nl[keep], rtol=1e-10, atol=1e-10)
    for i in range(len(model.model.layers)):
        torch.testing.assert_close(fc.layers[i].memory, nc.layers[i].memory, rtol=1e-10, atol=1e-10)
    assert set(fg) == set(ng) and fg
    for name in fg:
        torch.testing.assert_close(fg[name], ng[name], rtol=1e-9, atol=1e-10, msg=name)
    return f"{len(fg)} gradients equal"


def check_chunking(device: str) -> str:
    for window in (None, 6):
        model = lm2(device, torch.float64, attention_window=window)
        ids = ids_for(device, 2, 45, 2)
        with torch.no_grad():
            whole = model(ids).logits
            pieces, _ = run_pieces(model, ids, None, [3, 4, 17, 30])
        torch.testing.assert_close(pieces, whole, rtol=1e-10, atol=1e-10)
    return "window none and 6"


def greedy_by_recomputation(model: torch.nn.Module, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], 1)
    return ids


def check_generation(device: str) -> str:
    for name, model in (("lm2", lm2(device)), ("vanilla", lm2(device, use_memory=False)), ("rmt", rmt(device))):
        prompt = ids_for(device, 2, 9, 3)
        got = model.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
        want = greedy_by_recomputation(model, prompt, 20)
        assert torch.equal(got, want), f"{name}: cached greedy differs from recomputation"
    return "lm2, vanilla, rmt: 20 tokens each"


def check_llama_parity(device: str) -> str:
    config = lm2(device, use_memory=False).config
    llama = LlamaForCausalLM(lm2_config_to_llama(config, attn_implementation="eager")).to(device).eval()
    ours = LM2ForCausalLM(config).to(device).eval()
    ours.load_state_dict(llama.state_dict(), strict=True)
    ids = ids_for(device, 3, 37, 4)
    with torch.no_grad():
        ref, got = llama(ids).logits, ours(ids).logits
    # TF32 matmuls (the CUDA default for some kernels) round differently from fp32: a looser bound.
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
    return f"max |diff| {float((got - ref).abs().max()):.1e}"


def check_bf16_training(device: str) -> str:
    losses = []
    for model in (lm2(device), lm2(device, use_memory=False), rmt(device)):
        model.train()
        ids = ids_for(device, 4, 40, 5)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
        losses.append(f"{loss.item():.3f}")
    return "losses " + " / ".join(losses)


CHECKS: dict[str, Callable[[str], str]] = {
    "naive memory reference = fast path (float64, padding, pieces, gradients)": check_naive_equals_fast,
    "chunking invariance through the cache (float64)": check_chunking,
    "cached greedy generation = recomputation": check_generation,
    "vanilla = transformers' Llama logits": check_llama_parity,
    "bf16 autocast training step (lm2, vanilla, rmt)": check_bf16_training,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    device = p.parse_args().device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is available (use --device cpu to run the checks here)")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"device: {name}, torch {torch.__version__}")
    failed = 0
    for title, check in CHECKS.items():
        t0 = time.perf_counter()
        try:
            detail = check(device)
            print(f"PASS {title}: {detail} ({time.perf_counter() - t0:.1f} s)")
        except Exception as err:  # report every property, then fail
            failed += 1
            print(f"FAIL {title}: {type(err).__name__}: {err}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
