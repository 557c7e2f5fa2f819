"""The typed configuration of a reproduction study (configs/reproduce/<scale>.yaml), validated in one place.

A scale names the tokenizer and the BABILong sets to build (keyword arguments of ``lm2 data tokenizer``
and ``lm2 data babilong``), a base training config (the schema of configs/*.yaml) and the arms trained from
it (each a ``set`` of overrides on the base, or another training YAML), and which arms each part of the
study uses. Strings may hold ``{work}`` (the study folder), ``{data}`` (its BABILong sets) and
``{tokenizer}`` (its tokenizer), filled in when the study runs.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm2.data.background import SYNTHETIC, background_paths
from lm2.data.make import BabilongSpec, TokenizerSpec
from lm2.shipped import SCALES
from lm2.train.config import Config, DataConfig, apply_override
from lm2.utils.io import read_yaml_mapping
from lm2.utils.text import comma_list
from lm2.utils.typed import from_mapping

PARTS = ("table1", "table2", "fig3", "fig5", "fig6", "slots")


@dataclass
class ArmConfig:
    config: str | None = None  # a training YAML; None = the scale's base
    set: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, on top of the config
    label: str | None = None  # the name in tables and figures (default: the arm's key)
    seeds: int | None = None  # train at most this many seeds of this arm (default: the study's)


@dataclass
class Table1Config:
    models: list[str] = field(default_factory=list)  # arms scored as they are
    rag: dict[str, str] = field(default_factory=dict)  # arm -> BM25 spec: the arm over retrieved context
    split: str = "test"  # data split(s) scored, comma-separated
    tasks: str | None = None
    lengths: str | None = None
    samples: int | None = None
    batch_size: int = 8
    metric: str = "words"  # how answers are scored: lm2 eval babilong --metric (words | babilong)


@dataclass
class Table2Config:
    models: list[str] = field(default_factory=list)
    ppl_data: str | None = None  # held-out text files/folders, comma-separated
    ppl_max_tokens: int | None = 20000
    ppl_segment_length: int = 256
    mmlu_data: str | None = None
    mmlu_split: str = "dev"
    mmlu_shots: int = 0
    mmlu_subjects: str | None = None
    batch_size: int = 8


@dataclass
class TextConfig:
    """Running text for arms that train as language models (``data.kind: text``), e.g. Table 2's.

    The study tokenises ``inputs`` once (``lm2 prepare``) into ``{text_data}``, and ``valid`` (if given)
    into ``{text_valid}`` for the arms' validation loss (Figure 5's curves); ``tokenizer`` gives the
    arguments of ``lm2 data tokenizer`` for a tokenizer of its own in ``{text_tokenizer}`` (empty: the
    study's tokenizer serves, and ``{text_tokenizer}`` names it).
    """

    inputs: str | None = None  # text files/folders/globs, comma-separated; None = no text arms
    valid: str | None = None  # the same, for validation
    tokenizer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fig5Config:
    arms: list[str] = field(default_factory=list)  # memory in the first 1, k, all blocks, and vanilla
    metric: str = "val_loss"  # a validation metric of the trainer's log


@dataclass
class AnalysisConfig:
    arm: str = "lm2"
    split: str = "test"  # data split(s), comma-separated
    tasks: str | None = None
    lengths: str | None = None
    samples: int = 8


@dataclass
class ScaleConfig:
    name: str = "custom"
    description: str = ""
    seeds: int = 1
    device: str = "auto"
    tokenizer: dict[str, Any] = field(default_factory=dict)  # a TokenizerSpec (`lm2 data tokenizer`'s options)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> a BabilongSpec (`lm2 data babilong`)
    base: dict[str, Any] = field(default_factory=dict)  # a training config mapping
    arms: dict[str, ArmConfig] = field(default_factory=dict)
    table1: Table1Config = field(default_factory=Table1Config)
    table2: Table2Config = field(default_factory=Table2Config)
    fig5: Fig5Config = field(default_factory=Fig5Config)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def label(self, arm: str) -> str:
        return self.arms[arm].label or arm

    def arms_for(self, parts: tuple[str, ...], seeds: int) -> dict[str, int]:
        """The arms to train for these parts and how many seeds of each (the analysis needs seed 0 only)."""
        need: dict[str, int] = {}

        def want(arms: Any, n: int) -> None:
            for arm in arms:
                cap = self.arms[arm].seeds
                need[arm] = max(need.get(arm, 0), n if cap is None else min(cap, n))

        if "table1" in parts or "fig3" in parts:
            want(list(self.table1.models) + list(self.table1.rag), seeds)
        if "table2" in parts:
            want(self.table2.models, seeds)
        if "fig5" in parts:
            want(self.fig5.arms, seeds)
        if "fig6" in parts or "slots" in parts:
            want([self.analysis.arm], 1)
        return {a: need[a] for a in self.arms if a in need}

    def training_config(self, arm: str, seed: int, paths: dict[str, str]) -> dict[str, Any]:
        """The training config mapping of ``arm`` at seed offset ``seed``, placeholders filled in."""
        spec = self.arms[arm]
        if spec.config is not None:
            path = Path(spec.config)
            if not path.is_file():
                raise FileNotFoundError(f"arm {arm}: training config not found: {path}")
            data = read_yaml_mapping(path)
        else:
            data = copy.deepcopy(self.base)
        for key, value in spec.set.items():
            apply_override(data, f"{key}={json.dumps(value)}")
        data.setdefault("train", {})
        data["train"]["seed"] = int(data["train"].get("seed", 0)) + seed
        return fill(data, paths)

    def validate(self) -> ScaleConfig:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not self.arms:
            raise ValueError("arms is empty: name at least one model to train")
        # the builders' own schemas: unknown keys, wrong types and bad values are refused before any unit runs
        self.tokenizer_spec("tokenizer")
        if self.text.tokenizer:
            self.tokenizer_spec("text_tokenizer")
        for split in self.data:
            self.data_spec(split)
        refs = [("table1.models", a) for a in self.table1.models] + [
            ("table1.rag", a) for a in self.table1.rag
        ]
        refs += [("table2.models", a) for a in self.table2.models] + [
            ("fig5.arms", a) for a in self.fig5.arms
        ]
        refs.append(("analysis.arm", self.analysis.arm))
        for name, arm in self.arms.items():
            if arm.seeds is not None and arm.seeds < 1:
                raise ValueError(f"arms.{name}.seeds must be >= 1 or null, got {arm.seeds}")
        for where, arm in refs:
            if arm not in self.arms:
                raise ValueError(f"{where} names arm {arm!r}; the arms are {', '.join(self.arms)}")
        for split in set(comma_list(self.table1.split)) | set(comma_list(self.analysis.split)):
            if split not in self.data:
                raise ValueError(
                    f"the study evaluates on data split {split!r}; data has {', '.join(self.data)}"
                )
        from lm2.eval.matcher import METRICS

        if self.table1.metric not in METRICS:
            raise ValueError(f"table1.metric must be one of {', '.join(METRICS)}; got {self.table1.metric!r}")
        if self.table2.mmlu_shots < 0 or self.table2.mmlu_shots > 5:
            raise ValueError(f"table2.mmlu_shots must be 0..5, got {self.table2.mmlu_shots}")
        for arm in self.arms:  # every arm's training config must pass the trainer's own validation
            try:
                check_training_config(self.training_config(arm, 0, study_paths("WORK", self)))
            except ValueError as err:
                raise ValueError(f"arm {arm}: {err}") from err
            if self.uses_text(arm) and not self.text.inputs:
                raise ValueError(f"arm {arm} trains on running text (data.kind text): give text.inputs")
        return self

    def tokenizer_spec(self, key: str = "tokenizer", paths: dict[str, str] | None = None) -> TokenizerSpec:
        """The study's tokenizer (``key`` "tokenizer") or the text arms' own ("text_tokenizer"), placeholders
        filled from ``paths`` when given."""
        raw, where = (self.tokenizer, "tokenizer") if key == "tokenizer" else (self.text.tokenizer, "text.tokenizer")
        spec = from_mapping(TokenizerSpec, fill(raw, paths or {}), where)  # an unknown key is named in full
        try:
            return spec.validate()
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def data_spec(self, split: str, paths: dict[str, str] | None = None) -> BabilongSpec:
        """The BABILong set of data split ``split``, placeholders filled from ``paths`` when given."""
        spec = from_mapping(BabilongSpec, fill(self.data[split], paths or {}), f"data.{split}")
        try:
            return spec.validate()
        except ValueError as err:
            raise ValueError(f"data.{split}: {err}") from None

    def check_inputs(self) -> None:
        """Refuse, before any unit runs, a file or folder the scale names that is not there (a path holding a
        placeholder is made by the study itself and is not checked)."""
        wanted: list[tuple[str, str]] = []  # (where in the scale, path)
        sections = [("tokenizer", self.tokenizer), *((f"data.{k}", v) for k, v in self.data.items())]
        if self.text.tokenizer:
            sections.append(("text.tokenizer", self.text.tokenizer))
        for where, section in sections:
            wanted += [(f"{where}.background", p) for p in background_paths(str(section.get("background", "")))]
            wanted += [(f"{where}.babi", str(section["babi"]))] if section.get("babi") else []
        for where, spec in (("text.inputs", self.text.inputs), ("text.valid", self.text.valid),
                            ("table2.ppl_data", self.table2.ppl_data)):  # fmt: skip
            wanted += [(where, p) for p in comma_list(spec) if not p.startswith(SYNTHETIC)]
        if self.table2.mmlu_data:
            wanted.append(("table2.mmlu_data", self.table2.mmlu_data))
        for arm in self.arms:
            generate = (self.training_config(arm, 0, study_paths("WORK", self)).get("data") or {}).get("generate")
            if generate and generate.get("background"):
                where = f"arm {arm}: data.generate.background"
                wanted += [(where, p) for p in background_paths(generate["background"])]
        for where, path in wanted:
            if "{" not in path and not any(Path(m).exists() for m in [path, *glob.glob(path)]):
                raise FileNotFoundError(f"{where}: {path} not found (checked before the study starts)")

    def data_kind(self, arm: str) -> str:
        """What ``arm`` trains on: its training config's ``data.kind`` (only "text" is running text)."""
        data = self.training_config(arm, 0, study_paths("WORK", self)).get("data") or {}
        return data.get("kind", DataConfig().kind)

    def uses_text(self, arm: str) -> bool:
        """Whether ``arm`` trains on the study's running text (``data.kind: text``)."""
        return self.data_kind(arm) == "text"


def study_paths(work: str, cfg: ScaleConfig) -> dict[str, str]:
    """What the placeholders of a scale config stand for in study folder ``work``."""
    tokenizer = f"{work}/tokenizer"
    return {
        "work": work,
        "data": f"{work}/data",
        "tokenizer": tokenizer,
        "text_data": f"{work}/text/data",
        "text_valid": f"{work}/text/valid",
        "text_tokenizer": f"{work}/text/tokenizer" if cfg.text.tokenizer else tokenizer,
    }


def fill(value: Any, paths: dict[str, str]) -> Any:
    """Replace the placeholders of ``study_paths`` ({work}, {data}, ...) in every string of a mapping/list."""
    if isinstance(value, str):
        for key, path in paths.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, dict):
        return {k: fill(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, paths) for v in value]
    return value


def check_training_config(data: dict[str, Any]) -> Config:
    """A training config mapping as the trainer reads it (validated)."""
    return from_mapping(Config, copy.deepcopy(data), "").validate()


def scale_path(scale: str) -> Path:
    """configs/reproduce/<scale>.yaml for a scale name, or the YAML file given."""
    path = Path(scale)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = SCALES / f"{scale}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SCALES.glob("*.yaml"))
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(known)} (or a YAML file)")
    return path


def load_scale(scale: str | Path) -> ScaleConfig:
    path = scale_path(str(scale))
    data = read_yaml_mapping(path)
    arms = data.pop("arms", {}) or {}
    if not isinstance(arms, dict):
        raise ValueError(f"{path}: arms must be a mapping of name -> {{config, set, label}}")
    cfg = from_mapping(ScaleConfig, data, "")
    cfg.arms = {name: from_mapping(ArmConfig, spec or {}, f"arms.{name}") for name, spec in arms.items()}
    try:
        return cfg.validate()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def to_dict(cfg: ScaleConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
