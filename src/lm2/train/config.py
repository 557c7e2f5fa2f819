"""The one typed configuration of a training run, read from YAML with ``--set key.sub=value`` overrides.

Every field lives in a dataclass below; ``load_config`` turns a YAML mapping into them, rejecting any key
that is not a field (the error lists the valid ones) and checking every value in ``Config.validate`` —
the single place where a configuration is judged.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lm2.data.lengths import length_label
from lm2.shipped import config_file
from lm2.utils.io import read_yaml_mapping
from lm2.utils.typed import from_mapping

FAMILIES = ("lm2", "rmt", "llama", "auto")
DATA_KINDS = ("babilong", "babi", "text", "generate")
GENERATE_PLACEMENTS = ("first", "scattered")
GENERATE_QUESTIONS = ("one", "all")
# Tasks whose statements stand alone: any subset of a story's facts that keeps the supporting ones is a story
# with the same answer (checked by an independent solver in the tests). Elsewhere a subset can break the
# story (qa2: a drop without its take), so ``generate.facts`` is refused.
FACT_SUBSET_TASKS = ("qa1", "qa4", "qa9", "qa10")
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_MAX_TOKENS = 32_768  # data.max_tokens when unset (rows read from files)
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelConfig:
    family: Literal["lm2", "rmt", "llama", "auto"] = "lm2"  # "auto": whatever ``pretrained`` holds
    preset: str | None = "tiny"  # the family's preset (``LM2Config.from_preset``); None = class defaults
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields on top of the preset
    pretrained: str | None = None  # a saved model folder to start from instead of random weights


@dataclass
class GenerateConfig:
    """Question-answer samples made on the fly (``data.kind: generate``): bAbI facts, filler, a question.

    Layout of a sample's context: its facts and ``filler`` tokens of background, then the question (see
    docs/training.md). A curriculum stage may override any of these fields (``curriculum[i].generate``).
    """

    tasks: str = "qa1"  # bAbI tasks, one drawn per sample: "qa1", "qa1-qa5", ...
    # relative draw weight of each task of ``tasks``, in order (None: uniform); validation stays uniform.
    # With ``questions: all`` a qa4 story has 1 answer where qa1's has 5: weight 5 gives each task as many
    task_weights: list[float] | None = None
    # background tokens per sample: one drawn uniformly
    filler: list[int] = field(default_factory=lambda: [0])
    filler_range: list[int] | None = None  # [lo, hi]: draw the filler uniformly from lo..hi instead
    # "sample": each sample draws its own filler; "batch": one draw per optimizer step for the whole batch
    # (no padding between rows of different lengths; the draws still cover the range over the steps)
    filler_per: Literal["sample", "batch"] = "sample"
    placement: Literal["first", "scattered"] = "first"  # facts, then filler | facts in random gaps of it
    min_fact_distance: int = 0  # scattered: facts up to the last supporting one this many tokens from the end
    # [lo, hi]: facts per sample = the supporting facts + other facts of the story drawn at random (in
    # order), lo..hi in all (tasks in FACT_SUBSET_TASKS only); None = every fact before the question
    facts: list[int] | None = None
    # [lo, hi]: stories as written, cut after their last question with at most hi statements before it;
    # the question asked has lo..hi statements before it (stories are redrawn until one has such a
    # question). Sound for every task: a curriculum over the length of the story. None = whole stories
    story_facts: list[int] | None = None
    questions: Literal["one", "all"] = "one"  # one question per sample | every question of a story
    background: str = "synthetic"  # as ``lm2 data babilong --background``
    background_sentences: int = 20_000  # sentences of the synthetic haystack (other backgrounds: ignored)
    # validation: accuracy at each of these fillers (None: filler, or filler_range's two ends)
    valid_filler: list[int] | None = None

    def filler_choices(self) -> list[int]:
        """The fillers validation reports by default."""
        return list(self.filler_range) if self.filler_range is not None else list(self.filler)


@dataclass
class DataConfig:
    kind: Literal["babilong", "babi", "text", "generate"] = "babilong"
    # babilong: JSONL files, folders of them or globs; babi: folders of original bAbI files;
    # text: a folder written by ``lm2 prepare``; generate: nothing (samples are made on the fly).
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)  # same kinds as ``train``; empty = no validation
    tasks: str | None = None  # "qa1,qa2" / "qa1-qa5": keep only these tasks (None = all present)
    tokenizer: str | None = None  # a tokenizer folder; None = the one saved with ``model.pretrained``
    prompt_format: str = "plain"  # a layout of lm2.data.prompts
    answer_eos: bool = True  # append the end-of-text token to the answer (and learn to stop there)
    # refuse a row whose prompt + answer is longer than this; None = DEFAULT_MAX_TOKENS (a row is one forward,
    # and its activations grow with it: a bound keeps one long row from exhausting the machine's memory)
    max_tokens: int | None = None
    valid_samples: int = 256  # validation rows (a fixed random subset) or text windows (the first ones)
    valid_split: float = 0.0  # babi: hold out this fraction of stories (from the end) as validation
    generate: GenerateConfig = field(default_factory=GenerateConfig)  # data.kind generate


@dataclass
class StageConfig:
    steps: int = 0  # optimizer steps spent in this stage (with ``advance_when``: at most this many)
    lengths: list[str] | None = None  # babilong: keep rows of these lengths ("0k", "1k", ...); None = all
    seq_len: int | None = None  # text: tokens per training window
    name: str | None = None
    generate: dict[str, Any] | None = None  # data.kind generate: fields of data.generate for this stage
    # "METRIC >= X" or "METRIC <= X" on a validation metric (val_acc, val_acc_filler1024, val_loss, ...): the
    # stage ends at the first validation (train.eval_every) that meets it, and the next starts from there
    advance_when: str | None = None
    # sequences per optimizer step in this stage (None: train.batch_size); a stage of long samples can take
    # fewer per step without changing the rest of the run
    batch_size: int | None = None

    def advance_rule(self) -> tuple[str, str, float] | None:
        """(metric, ">=" or "<=", threshold) of ``advance_when``, None without one."""
        if self.advance_when is None:
            return None
        parts = self.advance_when.split()
        if len(parts) != 3 or parts[1] not in (">=", "<=") or not parts[0].startswith("val_"):
            raise ValueError(
                f"advance_when must read 'METRIC >= X' or 'METRIC <= X' with a validation metric (val_acc, "
                f"val_acc_filler1024, val_loss, ...), got {self.advance_when!r}"
            )
        try:
            threshold = float(parts[2])
        except ValueError:
            raise ValueError(f"advance_when: {parts[2]!r} is not a number") from None
        if not math.isfinite(threshold):
            raise ValueError(f"advance_when: the threshold must be finite, got {parts[2]}")
        return parts[0], parts[1], threshold


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on weights of 2 or more dimensions; norms and biases are exempt
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping


@dataclass
class RunConfig:
    seed: int = 0
    batch_size: int = 32  # sequences per optimizer step, over all processes and accumulation steps
    grad_accum: int = 1  # micro-batches per optimizer step on each process
    micro_batch_tokens: int | None = None  # micro-batches of rows of similar length, at most this many tokens each
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast (fp16 only on GPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tbptt_segments: int | None = None  # backpropagate through at most this many memory segments
    log_every: int = 10
    eval_every: int | None = None  # steps between validations (None = only at the end)
    save_every: int | None = 500  # steps between checkpoints (the last step is always saved)
    keep_last: int = 3  # checkpoints kept on disk
    progress: bool = True  # tqdm bar on the first process


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: list[StageConfig] = field(default_factory=lambda: [StageConfig(steps=100)])
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.curriculum)

    def batch_size_at(self, stage: int) -> int:
        """Sequences per optimizer step in curriculum stage ``stage``."""
        size = self.curriculum[stage].batch_size
        return self.train.batch_size if size is None else size

    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage index, step within that stage) of global step ``step`` (0-based)."""
        start = 0
        for i, stage in enumerate(self.curriculum):
            if step < start + stage.steps:
                return i, step - start
            start += stage.steps
        raise ValueError(f"step {step} is past the end of the curriculum ({self.total_steps} steps)")

    def generate_config(self, stage: int | None = None) -> GenerateConfig:
        """``data.generate`` with the overrides of curriculum stage ``stage`` (None: the last stage)."""
        index = len(self.curriculum) - 1 if stage is None else stage
        extra = self.curriculum[index].generate or {}
        base = {k: v for k, v in dataclasses.asdict(self.data.generate).items() if k not in extra}
        return from_mapping(GenerateConfig, {**base, **extra}, f"curriculum[{index}].generate")

    def validate(self) -> Config:
        """Check every value; raise ``ValueError`` naming the field, the value and what is valid."""
        m, d, o, r = self.model, self.data, self.optim, self.train
        _choice("model.family", m.family, FAMILIES)
        if m.family == "auto" and not m.pretrained:
            raise ValueError("model.family 'auto' needs model.pretrained (a saved model folder)")
        _choice("data.kind", d.kind, DATA_KINDS)
        _choice("train.precision", r.precision, PRECISIONS)
        _choice("train.device", r.device, DEVICES)
        if d.kind == "generate":
            if d.train or d.valid:
                raise ValueError(
                    "data.kind 'generate' makes its samples: leave data.train and data.valid empty"
                )
        elif not d.train:
            raise ValueError("data.train is empty: give the training data (files, folders or globs)")
        if d.tokenizer is None and m.pretrained is None:
            raise ValueError("data.tokenizer is missing: give a tokenizer folder (or model.pretrained)")
        if d.kind == "text" and (len(d.train) != 1 or len(d.valid) > 1):
            raise ValueError(
                "data.kind 'text' takes one prepared folder in data.train (and at most one in data.valid)"
            )
        if d.kind != "text":
            from lm2.data.prompts import get_prompt_format

            get_prompt_format(d.prompt_format)
        if d.tasks is not None:
            from lm2.data.babi.types import parse_tasks

            parse_tasks(d.tasks)
        if d.max_tokens is not None and d.max_tokens < 2:
            raise ValueError(f"data.max_tokens must be >= 2, got {d.max_tokens}")
        if d.max_tokens is not None and d.kind in ("generate", "text"):
            # a silently ignored limit is worse than none: generated samples are as long as their filler
            # (data.generate.filler), text windows as curriculum[].seq_len
            raise ValueError(
                f"data.max_tokens applies to rows read from files (data.kind babilong or babi), not to "
                f"data.kind {d.kind!r}: remove it"
            )
        if d.valid_samples < 1:
            raise ValueError(f"data.valid_samples must be >= 1, got {d.valid_samples}")
        if not 0.0 <= d.valid_split < 1.0:
            raise ValueError(f"data.valid_split must be in [0, 1), got {d.valid_split}")
        if d.valid_split and d.kind != "babi":
            raise ValueError("data.valid_split applies to data.kind 'babi' only; give data.valid instead")
        if not self.curriculum:
            raise ValueError("curriculum is empty: give at least one stage with steps > 0")
        for i, s in enumerate(self.curriculum):
            if s.steps < 1:
                raise ValueError(f"curriculum[{i}].steps must be >= 1, got {s.steps}")
            if s.batch_size is not None and (s.batch_size < 1 or s.batch_size % self.train.grad_accum):
                raise ValueError(
                    f"curriculum[{i}].batch_size must be >= 1 and divisible by train.grad_accum "
                    f"({self.train.grad_accum}), got {s.batch_size}"
                )
            if d.kind == "text" and (s.seq_len is None or s.seq_len < 1):
                raise ValueError(f"curriculum[{i}].seq_len must be a positive int for data.kind 'text'")
            if d.kind != "text" and s.seq_len is not None:
                raise ValueError(f"curriculum[{i}].seq_len applies to data.kind 'text' only; use lengths")
            if d.kind == "text" and s.lengths is not None:
                raise ValueError(f"curriculum[{i}].lengths applies to BABILong rows, not data.kind 'text'")
            if s.lengths is not None:
                s.lengths = [length_label(x) for x in s.lengths]
            if s.generate is not None and d.kind != "generate":
                raise ValueError(f"curriculum[{i}].generate applies to data.kind 'generate' only")
            if d.kind == "generate" and s.lengths is not None:
                raise ValueError(f"curriculum[{i}].lengths applies to BABILong rows; use generate.filler")
            try:
                rule = s.advance_rule()
            except ValueError as err:
                raise ValueError(f"curriculum[{i}].{err}") from None
            if rule is not None and not r.eval_every:
                raise ValueError(
                    f"curriculum[{i}].advance_when needs validation during the stage: set train.eval_every"
                )
        if d.kind == "generate":
            _check_generate(d.generate, "data.generate")
            for i in range(len(self.curriculum)):
                _check_generate(self.generate_config(i), f"curriculum[{i}].generate")
        for name in ("lr", "min_lr_ratio", "weight_decay", "eps", "grad_clip"):
            value = getattr(o, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"optim.{name} must be a finite number, got {value}")
        if o.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {o.lr}")
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        if o.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
        if o.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if o.eps <= 0:
            raise ValueError(f"optim.eps must be > 0, got {o.eps}")
        if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        if o.grad_clip is not None and o.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {o.grad_clip}")
        if r.batch_size < 1 or r.grad_accum < 1:
            raise ValueError(
                f"train.batch_size and train.grad_accum must be >= 1, got {r.batch_size}, {r.grad_accum}"
            )
        if r.batch_size % r.grad_accum:
            raise ValueError(
                f"train.batch_size ({r.batch_size}) must be divisible by train.grad_accum ({r.grad_accum})"
            )
        if r.micro_batch_tokens is not None:
            if r.micro_batch_tokens < 1:
                raise ValueError(f"train.micro_batch_tokens must be >= 1 or null, got {r.micro_batch_tokens}")
            if r.grad_accum != 1:
                raise ValueError(
                    "train.micro_batch_tokens and train.grad_accum both split a step into micro-batches (by "
                    f"tokens, by rows): set one of them, got {r.micro_batch_tokens} and {r.grad_accum}"
                )
        if r.tbptt_segments is not None and r.tbptt_segments < 1:
            raise ValueError(f"train.tbptt_segments must be >= 1 or null, got {r.tbptt_segments}")
        for name in ("log_every", "eval_every", "save_every"):
            value = getattr(r, name)
            if value is not None and value < 1:
                raise ValueError(f"train.{name} must be >= 1 or null, got {value}")
        if r.keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {r.keep_last}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_generate(g: GenerateConfig, where: str) -> None:
    from lm2.data.babi.generator import get_generator
    from lm2.data.babi.types import parse_tasks

    tasks = parse_tasks(g.tasks)
    for task in tasks:
        get_generator(task)
    if g.task_weights is not None and (
        len(g.task_weights) != len(tasks) or not all(w > 0 for w in g.task_weights)
    ):
        raise ValueError(
            f"{where}.task_weights must be one weight > 0 per task of {where}.tasks "
            f"({', '.join(tasks)}), or null; got {g.task_weights}"
        )
    _choice(f"{where}.placement", g.placement, GENERATE_PLACEMENTS)
    _choice(f"{where}.questions", g.questions, GENERATE_QUESTIONS)
    _choice(f"{where}.filler_per", g.filler_per, ("sample", "batch"))
    for name in ("filler", "valid_filler"):
        values = getattr(g, name)
        if values is not None and (not values or any(v < 0 for v in values)):
            raise ValueError(f"{where}.{name} must be a non-empty list of token counts >= 0, got {values}")
    if g.min_fact_distance < 0:
        raise ValueError(f"{where}.min_fact_distance must be >= 0, got {g.min_fact_distance}")
    if g.background_sentences < 1:
        raise ValueError(f"{where}.background_sentences must be >= 1, got {g.background_sentences}")
    if g.filler_range is not None and (
        len(g.filler_range) != 2 or not 0 <= g.filler_range[0] <= g.filler_range[1]
    ):
        raise ValueError(
            f"{where}.filler_range must be [lo, hi] with 0 <= lo <= hi, or null; got {g.filler_range}"
        )
    smallest = min(g.filler_choices() + (g.valid_filler or []))
    if g.min_fact_distance > smallest:
        raise ValueError(
            f"{where}.min_fact_distance ({g.min_fact_distance}) exceeds the smallest filler ({smallest}): "
            "the facts could not lie that far before the question"
        )
    if g.facts is not None and (len(g.facts) != 2 or not 1 <= g.facts[0] <= g.facts[1]):
        raise ValueError(f"{where}.facts must be [lo, hi] with 1 <= lo <= hi, or null; got {g.facts}")
    if g.facts is not None and any(t not in FACT_SUBSET_TASKS for t in tasks):
        raise ValueError(
            f"{where}.facts (keeping a subset of a story's facts) is sound only for tasks whose statements stand "
            f"alone: {', '.join(FACT_SUBSET_TASKS)}; got tasks {g.tasks}"
        )
    if g.story_facts is not None and (
        len(g.story_facts) != 2 or not 1 <= g.story_facts[0] <= g.story_facts[1]
    ):
        raise ValueError(
            f"{where}.story_facts must be [lo, hi] with 1 <= lo <= hi, or null; got {g.story_facts}"
        )
    if g.facts is not None and g.questions == "all":
        raise ValueError(f"{where}.facts applies to questions 'one' (a story keeps all its facts)")


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML; list items by index: ``curriculum.0.steps=5``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {assignment!r} must look like key.sub=value")
    value = yaml.safe_load(text) if text.strip() else None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(
                    f"override {key}: {'.'.join(parts[:i])} has {len(node)} items; {part!r} is not one"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if node is None:
                    node = {}


def load_config(path: str | Path | None = None, overrides: list[str] | str | None = None) -> Config:
    """Read a YAML config (a file, or a shipped config's name; None: the defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(config_file(path))
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return from_mapping(Config, data, "").validate()
