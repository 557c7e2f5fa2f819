"""Unit tests of the trainer: config, data, truncated backpropagation, schedule, checkpoints, faults."""

from __future__ import annotations

import errno
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lm2.data.batch import IGNORE
from lm2.data.qa import QADataset, sample_indices
from lm2.data.shards import TextShards, prepare_text
from lm2.run_folder import CheckpointError, list_checkpoints, verify_checkpoint
from lm2.train.checkpoint import load_checkpoint
from lm2.train.config import load_config
from lm2.train.forward import detach_cache, run_pieces
from lm2.train.trainer import Trainer, TrainingDiverged, lr_at
from tests.test_train_helpers import (
    qa1_rows,
    qa1_run_config,
    tiny_lm2,
    write_config,
)

REPO = Path(__file__).resolve().parents[1]


# -- config -------------------------------------------------------------------------------------------


def test_every_shipped_config_parses_and_validates() -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no YAML"
    for path in configs:
        cfg = load_config(path)
        assert cfg.total_steps > 0, path


def test_every_shipped_config_builds_its_model_config() -> None:
    # A misspelled model override passes load_config and fails only when the run builds the model.
    from lm2.train.models import build_config

    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.model.pretrained is None:
            assert build_config(cfg.model, vocab_size=256).vocab_size >= 256, path


@pytest.mark.parametrize("study", ["memory-qa1", "memory-qa1-5", "memory-long-qa1"])
def test_the_arms_of_a_shipped_study_differ_in_the_model_only(study: str) -> None:
    # The comparison is fair only if every arm sees the same data, curriculum, optimiser and run settings.
    arms = {arm: load_config(REPO / "configs" / f"{study}-{arm}.yaml").to_dict() for arm in ("lm2", "vanilla", "rmt")}
    for arm in ("vanilla", "rmt"):
        for section in ("data", "curriculum", "optim", "train"):
            assert arms[arm][section] == arms["lm2"][section], (study, arm, section)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key optim.lrr; valid keys of optim: lr, min_lr_ratio"),
        ("trian.seed=1", "unknown config key trian; valid keys of the config: model, data, curriculum"),
        ("curriculum.0.step=3", "unknown config key curriculum[0].step; valid keys of curriculum[0]: steps"),
        ("train.batch_size=abc", "train.batch_size must be int, got 'abc'"),
        ("train.grad_accum=3", "must be divisible by train.grad_accum"),
        ("model.family=gpt", "model.family must be one of lm2, rmt, llama, auto"),
        ("train.precision=fp8", "train.precision must be one of fp32, bf16, fp16"),
        ("curriculum.3.steps=1", "curriculum has 1 items"),
    ],
)
def test_bad_config_errors_name_the_key_and_the_valid_values(
    tmp_path: Path, override: str, message: str
) -> None:
    path = qa1_run_config(tmp_path, tmp_path / "tok")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(path, [override])


def test_overrides_are_typed_and_reach_nested_fields(tmp_path: Path) -> None:
    path = qa1_run_config(tmp_path, tmp_path / "tok")
    cfg = load_config(
        path, "optim.lr=3e-4 curriculum.0.steps=7 model.overrides.memory_slots=4 'optim.betas=[0.8, 0.9]'"
    )
    assert cfg.optim.lr == 3e-4 and cfg.curriculum[0].steps == 7 and cfg.optim.betas == [0.8, 0.9]
    assert cfg.model.overrides == {"memory_slots": 4}


def test_misspelled_model_override_lists_the_model_fields(tmp_path: Path, qa1_tokenizer: Path) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer), ["model.overrides.memory_slot=4"])
    with pytest.raises(ValueError, match="unknown model.overrides key 'memory_slot'.*memory_slots"):
        Trainer(cfg, tmp_path / "out")


def test_learning_rate_warms_up_then_follows_the_cosine_to_the_floor() -> None:
    lrs = [lr_at(s, 100, 1e-3, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[55] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lr_at(100, 100, 1e-3, 10, 0.1) == pytest.approx(1e-4)


# -- data ---------------------------------------------------------------------------------------------


def test_loss_is_taken_on_the_answer_and_end_of_text_only(qa1_tokenizer: Path) -> None:
    from lm2.data.tokenizer import load_tokenizer

    tok = load_tokenizer(qa1_tokenizer)
    rows = qa1_rows(5, seed=3)
    ds = QADataset(rows, tok)
    batch = ds.collate([0, 1, 2, 3, 4])
    for b, row in enumerate(rows):
        wanted = batch.targets[b][batch.targets[b] != IGNORE].tolist()
        assert tok.decode(wanted[:-1]) == " " + row["target"]
        assert wanted[-1] == tok.eos_token_id
        n = len(ds.examples[b][0]) - 1
        assert (batch.input_ids[b, n:] == ds.pad_id).all()  # right padding
        # each target is the next input token
        t = (batch.targets[b] != IGNORE).nonzero().flatten()
        assert (batch.input_ids[b, t[:-1] + 1] == batch.targets[b, t[:-1]]).all()
    spans = ds.answer_spans(batch)
    assert int(spans.sum()) == batch.num_targets - len(rows)  # the end-of-text token is not "answer"


def test_rows_are_drawn_as_one_permutation_per_epoch_whatever_the_step_size() -> None:
    pool = np.arange(10, 20)
    steps = np.concatenate([sample_indices(pool, seed=5, stage=0, step=s, batch_size=4) for s in range(5)])
    assert sorted(steps[:10]) == list(range(10, 20)) and sorted(steps[10:20]) == list(range(10, 20))
    again = np.concatenate([sample_indices(pool, 5, 0, s, 2) for s in range(10)])
    assert (steps == again).all()
    assert not (sample_indices(pool, 6, 0, 0, 10) == steps[:10]).all()


def test_text_shards_round_trip_and_refuse_damage(tmp_path: Path, qa1_tokenizer: Path) -> None:
    from lm2.data.tokenizer import load_tokenizer

    tok = load_tokenizer(qa1_tokenizer)
    docs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    docs[0].write_text("Mary went to the kitchen.\r\nJohn moved to the garden.", encoding="utf-8")
    docs[1].write_bytes(b"Sandra went to the office.\xff Daniel went back to the hallway.")
    meta = prepare_text([str(tmp_path / "*.txt")], tok, tmp_path / "shards", shard_tokens=7)
    shards = TextShards(tmp_path / "shards")
    flat = np.concatenate([np.asarray(s) for s in shards.shards]).tolist()
    expected = []
    for d in docs:
        text = d.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        expected += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert flat == expected and meta["tokens"] == len(expected) and len(meta["shards"]) > 1
    batch = shards.training_batch(seed=0, stage=0, step=0, rows=[0, 1], seq_len=5)
    assert (batch.input_ids[:, 1:] == batch.targets[:, :-1]).all()
    # a shard cut short, then a folder whose preparation never finished
    first = tmp_path / "shards" / meta["shards"][0]["file"]
    first.write_bytes(first.read_bytes()[:-2])
    with pytest.raises(ValueError, match=f"{first}.*corrupt shard"):
        TextShards(tmp_path / "shards")
    (tmp_path / "shards" / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json not found"):
        TextShards(tmp_path / "shards")


# -- truncated backpropagation through segments ------------------------------------------------------


def _lm2(**kw):
    from lm2 import LM2Config, LM2ForCausalLM

    torch.manual_seed(0)
    return LM2ForCausalLM(LM2Config.from_preset("tiny", vocab_size=64, segment_length=4, **kw))


def test_pieces_give_the_full_forward_loss_and_truncate_the_gradient() -> None:
    from lm2.data.batch import Batch

    model = _lm2()
    x = torch.randint(1, 64, (2, 24))
    targets = torch.full_like(x, IGNORE)
    targets[:, -3:] = x[:, -3:]  # loss on the last 3 positions only, as for an answer
    batch = Batch(x, targets)

    grads = {}
    for piece in (None, 8):
        model.zero_grad()
        loss = run_pieces(model, batch, piece, loss_scale=1.0, backward=lambda t: t.backward())
        grads[piece] = model.model.embed_tokens.weight.grad.clone()
        if piece is None:
            full = loss
    assert loss == pytest.approx(full, rel=1e-5)  # the same forward values, piece by piece
    early = x[:, :16].unique()
    early = early[~torch.isin(early, x[:, 16:])]  # tokens that occur only before the last piece
    assert len(early) > 0
    assert grads[None][early].abs().sum() > 0  # full backprop reaches them through memory and attention
    assert grads[8][early].abs().sum() == 0  # truncated: nothing flows into earlier pieces


def test_pieces_project_only_the_target_positions_and_give_the_full_loss() -> None:
    from lm2.data.batch import Batch

    model = _lm2()
    x = torch.randint(1, 64, (2, 24))
    targets = torch.full_like(x, IGNORE)
    targets[0, [5, 6, 20]] = x[0, [5, 6, 20]]  # rows with targets at different places
    targets[1, [6, 21]] = x[1, [6, 21]]
    with torch.no_grad():
        full_logits = model(input_ids=x).logits
    expected = F.cross_entropy(
        full_logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )

    class IgnoresKeep(torch.nn.Module):  # a model without logits_to_keep support: full logits every time
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, logits_to_keep: object = None, **kwargs: object):
            return self.inner(**kwargs)

    for m in (model, IgnoresKeep(model)):
        for piece in (None, 8):
            seen: dict[int, torch.Tensor] = {}

            def hook(positions: torch.Tensor, logits: torch.Tensor, seen: dict = seen) -> None:
                assert logits.shape[1] == len(positions)
                seen.update({int(p): logits[:, j] for j, p in enumerate(positions)})

            loss = run_pieces(m, Batch(x, targets), piece, logits_hook=hook)
            assert loss == pytest.approx(float(expected), rel=1e-5)
            assert sorted(seen) == [5, 6, 20, 21]  # the union over rows, and nothing else
            for p, got in seen.items():
                torch.testing.assert_close(got, full_logits[:, p], rtol=1e-5, atol=1e-5)


def test_detach_cache_cuts_the_graph_of_every_cached_tensor() -> None:
    model = _lm2()
    out = model(input_ids=torch.randint(1, 64, (2, 10)), use_cache=True)
    cache = out.past_key_values
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values, layer.memory) if t is not None]
    assert tensors and any(t.requires_grad for t in tensors)
    detach_cache(cache)
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values, layer.memory) if t is not None]
    assert tensors and not any(t.requires_grad for t in tensors)
    assert all(p.requires_grad for p in model.parameters())  # the model itself is untouched


# -- checkpoints and faults ----------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_last_k_and_names_damaged_files(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=6, keep_last=2))
    trainer = Trainer(cfg, tmp_path / "out")
    trainer.run()
    ckpts = list_checkpoints(tmp_path / "out" / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000004", "step-00000006"]
    assert (tmp_path / "out" / "last").resolve() == ckpts[-1].resolve()

    fresh = Trainer(cfg, tmp_path / "other")
    state = load_checkpoint(ckpts[-1], fresh.model, fresh.optimizer)
    assert state["step"] == 6 and state["data_position"]["sequences"] == 48
    for (name, a), b in zip(
        trainer.model.state_dict().items(), fresh.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    params = list(trainer.model.parameters())
    for p, q in zip(params, fresh.model.parameters(), strict=True):
        a, b = trainer.optimizer.state[p], fresh.optimizer.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=f"checkpoint file corrupt: {weights}"):
        verify_checkpoint(ckpts[-1])
    with pytest.raises(CheckpointError, match=f"checkpoint file corrupt: {weights}"):
        Trainer(cfg, tmp_path / "out", resume=True)  # resuming never silently skips a damaged checkpoint
    (ckpts[0] / "optimizer.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=f"checkpoint file missing: {ckpts[0] / 'optimizer.safetensors'}"
    ):
        load_checkpoint(ckpts[0], fresh.model, fresh.optimizer)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, qa1_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=4))
    import lm2.train.checkpoint as checkpoint

    real_save = checkpoint.save_file
    calls = []

    def disk_full_on_second_save(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            real_save(tensors, path)  # part of the file lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_on_second_save)
    with pytest.raises(CheckpointError, match="cannot save the checkpoint of step 4.*No space left"):
        Trainer(cfg, tmp_path / "out").run()
    root = tmp_path / "out" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002"]
    assert not list(root.glob(".tmp-*"))  # the half-written checkpoint is gone
    verify_checkpoint(root / "step-00000002")


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=2))
    Trainer(cfg, tmp_path / "out").run()
    longer = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=4))
    trainer = Trainer(longer, tmp_path / "out", resume=True)
    assert trainer.step == 2
    with torch.no_grad():
        trainer.model.model.embed_tokens.weight.fill_(float("nan"))  # what a blown-up update leaves
    with pytest.raises(
        TrainingDiverged, match=r"loss is nan at step 3.*last good checkpoint is .*step-00000002"
    ):
        trainer.run()
    root = tmp_path / "out" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000002"]
    verify_checkpoint(root / "step-00000002")
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]


def test_existing_checkpoints_need_resume_and_missing_data_is_named(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=2))
    Trainer(cfg, tmp_path / "out").run()
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        Trainer(cfg, tmp_path / "out")
    cfg.data.train = [str(tmp_path / "nope.jsonl")]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        Trainer(cfg, tmp_path / "fresh")
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer), ["curriculum.0.lengths=[4k]"])
    with pytest.raises(ValueError, match="no training rows of length 4k; the data has lengths 0k"):
        Trainer(cfg, tmp_path / "fresh2")


@pytest.mark.parametrize(
    ("family", "overrides", "tbptt"),
    [("lm2", {}, 2), ("rmt", {"num_mem_tokens": 2}, 2), ("llama", {}, None)],
)
def test_every_family_trains_and_its_checkpoint_loads_with_auto_classes(
    tmp_path: Path, qa1_tokenizer: Path, family: str, overrides: dict, tbptt: int | None
) -> None:
    from transformers import AutoModelForCausalLM

    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=2, tbptt_segments=tbptt))
    cfg.model.family, cfg.model.overrides = family, overrides
    trainer = Trainer(cfg, tmp_path / "out")
    metrics = trainer.run()
    assert math.isfinite(metrics["loss"]) and trainer.piece_len == (None if tbptt is None else 2 * 8)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "last").eval()
    x = torch.randint(0, 300, (2, 20))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, trainer.model(input_ids=x).logits)


def test_text_pretraining_runs_a_length_curriculum_and_reports_perplexity(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    from lm2.data.tokenizer import load_tokenizer

    tok = load_tokenizer(qa1_tokenizer)
    for split, seed in (("train", 0), ("valid", 1)):
        text = "\n".join(f"{r['input']} {r['question']} {r['target']}." for r in qa1_rows(60, seed=seed))
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
        prepare_text([str(tmp_path / f"{split}.txt")], tok, tmp_path / split, shard_tokens=1000)
    config = write_config(
        tmp_path / "lm.yaml",
        model=tiny_lm2(),
        data={"kind": "text", "train": [str(tmp_path / "train")], "valid": [str(tmp_path / "valid")],
              "tokenizer": str(qa1_tokenizer), "valid_samples": 8},
        curriculum=[{"steps": 2, "seq_len": 16}, {"steps": 2, "seq_len": 40}],
        optim={"lr": 3e-3, "warmup_steps": 1},
        train={"batch_size": 4, "log_every": 1, "save_every": None, "progress": False},
    )  # fmt: skip
    metrics = Trainer(load_config(config), tmp_path / "out").run()
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["stage"] for r in steps] == [0, 0, 1, 1]
    assert [r["tokens"] for r in steps] == [4 * 16, 4 * 16, 4 * 40, 4 * 40]  # the window grows by stage
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["val_loss"] < math.log(len(tok))  # better than uniform after four steps


def test_cli_exit_codes_user_error_2_and_diverged_3(
    tmp_path: Path, qa1_tokenizer: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lm2.cli import main

    config = qa1_run_config(tmp_path, qa1_tokenizer)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "a"), "--set", "optim.lrr=1"]) == 2
    assert "unknown config key optim.lrr" in capsys.readouterr().err

    def diverge(self: Trainer) -> None:
        raise TrainingDiverged("loss is nan at step 1")

    monkeypatch.setattr(Trainer, "run", diverge)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(config), "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 3 and "loss is nan at step 1" in capsys.readouterr().err


def test_fine_tuning_starts_from_a_saved_model_and_its_tokenizer(tmp_path: Path, qa1_tokenizer: Path) -> None:
    cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=2))
    first = Trainer(cfg, tmp_path / "pre")
    first.run()
    tuned = load_config(
        qa1_run_config(tmp_path, qa1_tokenizer, steps=1),
        f"model.family=auto model.pretrained={tmp_path / 'pre' / 'last'} data.tokenizer=null",
    )
    second = Trainer(tuned, tmp_path / "tuned")
    assert len(second.tokenizer) == len(first.tokenizer)
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert math.isfinite(second.run()["loss"])


def test_gradient_accumulation_matches_one_batch_and_bf16_autocast_trains(
    tmp_path: Path, qa1_tokenizer: Path
) -> None:
    logs = {}
    for name, sets in (("one", ""), ("accum", "train.grad_accum=4"), ("bf16", "train.precision=bf16")):
        cfg = load_config(qa1_run_config(tmp_path, qa1_tokenizer, steps=3), sets)
        Trainer(cfg, tmp_path / name).run()
        logs[name] = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
    for a, b in zip(logs["one"], logs["accum"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)  # the mean over the same target tokens
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert all(math.isfinite(r["loss"]) for r in logs["bf16"])
    assert logs["bf16"][0]["loss"] == pytest.approx(
        logs["one"][0]["loss"], rel=2e-2
    )  # same model, bf16 matmuls
