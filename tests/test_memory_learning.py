"""The memory path learns: a tiny LM2 recalls a fact beyond its attention window, vanilla cannot, and
switching the read off undoes it. Equivalence tests cannot see a memory that computes the right function
but does not train; this one does, in about half a minute on one thread."""

from __future__ import annotations

import pytest
import torch

from lm2 import LM2ForCausalLM
from lm2.data.tokenizer import save_tokenizer
from lm2.recall import recall_config, recall_run, recall_tokenizer
from lm2.train.trainer import Trainer

WINDOW = 16  # attention window = memory segment; two blocks see at most 2 * (16 - 1) = 30 tokens back


@pytest.fixture(scope="module")
def recall_data(tmp_path_factory):
    tokenizer = recall_tokenizer(stories=50)
    return tokenizer, save_tokenizer(tokenizer, tmp_path_factory.mktemp("recall") / "tokenizer")


def build(tokenizer, use_memory: bool, seed: int = 0, **overrides) -> LM2ForCausalLM:
    torch.manual_seed(seed)
    return LM2ForCausalLM(recall_config(len(tokenizer), use_memory, WINDOW, **overrides))


def test_switching_the_read_off_leaves_the_vanilla_backbone(recall_data) -> None:
    tokenizer, _ = recall_data
    lm2 = build(tokenizer, True).eval()
    vanilla = build(tokenizer, False).eval()
    missing, unexpected = vanilla.load_state_dict(lm2.state_dict(), strict=False)
    assert not missing and unexpected and all(".memory." in k for k in unexpected)
    ids = torch.randint(0, len(tokenizer), (3, 5 * WINDOW + 3))
    with torch.no_grad():
        on = lm2(ids).logits
        lm2.config.memory_read = False
        off = lm2(ids).logits
        lm2.config.memory_read = True
        base = vanilla(ids).logits
    assert torch.allclose(off, base, atol=1e-5) and not torch.allclose(on, base, atol=1e-3)
    with pytest.raises(ValueError, match="memory_read must be True or False"):
        recall_config(10, True, memory_read="no")


def test_memory_diagnostics_record_gates_and_read_size_only_when_asked(recall_data) -> None:
    tokenizer, _ = recall_data
    model = build(tokenizer, True).eval()
    ids = torch.randint(0, len(tokenizer), (2, 3 * WINDOW + 5))
    with torch.no_grad(), model.memory_diagnostics() as records:
        model(ids)
    assert len(records) == 2  # one per memory block
    assert (model.model.layers[1].memory.forget_gate.bias == model.config.memory_forget_bias).all()
    for record in records:
        (g_in,), (g_forget,), (done,), (ratio,) = (record[k] for k in ("in_gate", "forget_gate", "write_done",
                                                                       "read_ratio"))  # fmt: skip
        assert g_in.shape == g_forget.shape == done.shape == (2, 3) and done.all()
        assert ((g_in > 0) & (g_in < 1)).all() and (g_forget > g_in).all()  # the forget gate starts near keep
        assert ratio.shape == ids.shape and (ratio > 0).all()
    assert all(m.diagnostics is None for m in model.modules() if hasattr(m, "diagnostics"))


def test_a_tiny_lm2_learns_to_recall_a_fact_beyond_its_window(recall_data, tmp_path) -> None:
    _, tokenizer = recall_data
    # one fact, F filler tokens, the question; loss on the answer word (six rooms: chance 1/6), through the
    # trainer of `lm2 train`, as `lm2 demo` trains
    far = 2 * WINDOW  # the fact lies 2 * 16 + 13 tokens before the answer: beyond both blocks' reach

    def run(use_memory: bool, steps: int) -> Trainer:
        cfg = recall_run(tokenizer, use_memory, steps, samples=100, window=WINDOW, train_windows=(0, 1, 2),
                         valid_windows=(2,), background_sentences=500)  # fmt: skip
        trainer = Trainer(cfg, tmp_path / ("lm2" if use_memory else "vanilla"))
        trainer.run()
        return trainer

    lm2 = run(True, 130)
    recalled = lm2.evaluate()[f"val_acc_filler{far}"]
    lm2.model.config.memory_read = False
    without_read = lm2.evaluate()[f"val_acc_filler{far}"]

    # The vanilla control cannot see the fact at this distance however long it trains; what it guards is
    # the task itself (no answer leaking into the question or filler), so a shorter run suffices.
    attention_only = run(False, 60).evaluate()[f"val_acc_filler{far}"]

    assert recalled >= 0.9, recalled  # measured: 1.00 for seeds 0-3
    assert without_read <= 0.4, without_read  # measured: 0.12-0.20
    assert attention_only <= 0.4, attention_only  # measured: 0.11-0.21
