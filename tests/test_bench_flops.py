"""The benchmark's FLOP count: torch's counter misses the CPU attention kernel, the runner adds it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_model import CPU_ATTENTION_FLOPS, attention_share


def counted(fn) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(("causal", "pairs"), [(False, 63 * 63), (True, 63 * 64 // 2)])
def test_cpu_attention_flops_count_the_computed_pairs(causal: bool, pairs: int) -> None:
    B, H, Hkv, T, hd = 2, 4, 2, 63, 8
    q = torch.randn(B, H, T, hd, requires_grad=True)
    k = torch.randn(B, Hkv, T, hd, requires_grad=True)
    v = torch.randn(B, Hkv, T, hd, requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    forward = counted(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True))
    backward = counted(lambda: out.sum().backward())
    # Forward: QK^T and PV, each 2 FLOPs (one multiply-add) per pair and head dim; backward: five such products.
    assert forward == 2 * 2 * B * H * pairs * hd
    assert backward == 5 * 2 * B * H * pairs * hd
    plain = FlopCounterMode(display=False)  # torch's own table alone counts none of it
    with plain:
        F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    assert plain.get_total_flops() == 0


def test_causal_share_of_rectangular_calls() -> None:
    assert attention_share(4, 4, False) == 1.0
    assert attention_share(4, 4, True) == 10 / 16
    assert attention_share(1, 5, True) == 1 / 5  # top-left aligned: the single query sees key 0 only
    assert attention_share(6, 3, True) == (1 + 2 + 3 + 3 + 3 + 3) / 18
