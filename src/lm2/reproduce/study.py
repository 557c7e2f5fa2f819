"""``lm2 reproduce``: the paper's tables, figures and memory analyses in one resumable command.

The study is a list of units (tokenizer, each BABILong split, each arm x seed trained, each evaluation,
the memory analysis). A unit is finished when its ``DONE.json`` exists: that file is written last and
atomically, with what the unit measured and how (the equivalent command, its config and output folder),
so a study killed and run again keeps every finished unit and redoes only the others — training resumes
from its last checkpoint, BABILong scoring from its predictions file, data and tokenizer are rebuilt.
The report (results.json, figures, report.md, report.html) is assembled from the DONE files at the end,
and ``--replot`` redraws it from results.json alone.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch
import yaml

from lm2.analysis.run import run_analysis
from lm2.data.make import make_babilong, make_tokenizer
from lm2.data.rows import select_rows
from lm2.data.shards import prepare_text
from lm2.data.texts import text_sources
from lm2.data.tokenizer import load_tokenizer
from lm2.eval.babilong import Candidate, evaluate, make_retriever
from lm2.eval.mmlu import evaluate_mmlu, read_split
from lm2.eval.model_folder import load_model_and_tokenizer
from lm2.eval.ppl import perplexity
from lm2.reproduce.scale import (
    ScaleConfig,
    check_training_config,
    fill,
    load_scale,
    study_paths,
)
from lm2.reproduce.units import Unit
from lm2.train.models import build_config, family_classes
from lm2.train.trainer import Trainer
from lm2.utils.io import atomic_write_text
from lm2.utils.text import comma_list

DONE = "DONE.json"
class Study:
    def __init__(self, scale: ScaleConfig, out: Path, scale_file: Path, seeds: int | None = None) -> None:
        self.cfg, self.out, self.scale_file = scale, Path(out), scale_file
        self.seeds = seeds or scale.seeds
        self.paths = study_paths(str(self.out), scale)
        # read once: each arm's data.kind (its training YAML) decides whether it needs the text units
        self.data_kinds = {arm: scale.data_kind(arm) for arm in scale.arms}
        self.text_arms = {arm for arm, kind in self.data_kinds.items() if kind == "text"}
        self.kept: list[str] = []  # units found finished
        self.ran: list[str] = []  # units computed by this call

    # -- units ---------------------------------------------------------------------------------------

    def unit_dir(self, unit: Unit) -> Path:
        return self.out / "units" / unit.name.replace(":", "/")

    def rel(self, path: str | os.PathLike) -> str:
        """``path`` relative to the study folder: what records keep, so a copied or moved study still reads."""
        return os.path.relpath(path, self.out)

    def done(self, unit: Unit) -> dict[str, Any] | None:
        path = self.unit_dir(unit) / DONE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def run_unit(self, unit: Unit, index: int, total: int) -> dict[str, Any]:
        record = self.done(unit)
        spec = json.loads(json.dumps(self.spec(unit)))  # as it reads back from DONE.json
        if record is not None:
            if record.get("spec") != spec:
                raise ValueError(
                    f"{self.unit_dir(unit)} was made with another configuration than {self.scale_file} gives "
                    "now; use a new --out, or delete that unit's folder to redo it"
                )
            self.kept.append(unit.name)
            print(f"[{index}/{total}] {unit.name}: finished earlier, kept", flush=True)
            return record
        print(f"[{index}/{total}] {unit.name}: running", flush=True)
        start = time.perf_counter()
        record = self.work(unit)
        record["unit"] = unit.name
        record["spec"] = spec
        record["seconds"] = round(time.perf_counter() - start, 2)
        atomic_write_text(self.unit_dir(unit) / DONE, json.dumps(record, indent=1) + "\n")
        self.ran.append(unit.name)
        print(f"[{index}/{total}] {unit.name}: done in {record['seconds']:.1f} s", flush=True)
        return record

    def plan(self, parts: tuple[str, ...]) -> list[Unit]:
        """Every unit the parts need, each after the units it reads."""
        cfg = self.cfg
        arms = cfg.arms_for(parts, self.seeds)
        units = [Unit("tokenizer"), *(Unit("data", split=split) for split in cfg.data)]
        if self.text_arms & set(arms):
            units += [Unit("text_tokenizer")] if cfg.text.tokenizer else []
            units.append(Unit("text_data"))
        units += [Unit("train", arm, seed) for arm, n in arms.items() for seed in range(n)]
        for seed in range(self.seeds):
            if "table1" in parts or "fig3" in parts:
                units += [Unit("table1", arm, seed) for arm in cfg.table1.models if seed < self.arm_seeds(arm)]
                units += [Unit("table1", arm, seed, rag=True) for arm in cfg.table1.rag if seed < self.arm_seeds(arm)]
        if "table2" in parts:
            for seed in range(self.seeds):
                for arm in [a for a in cfg.table2.models if seed < self.arm_seeds(a)]:
                    units += [Unit("ppl", arm, seed)] if cfg.table2.ppl_data else []
                    units += [Unit("mmlu", arm, seed)] if cfg.table2.mmlu_data else []
        if "fig6" in parts or "slots" in parts:
            units.append(Unit("analysis"))
        return units

    def trained(self, unit: Unit) -> tuple[str, int]:
        """(arm, seed) of the trained model ``unit`` makes or reads."""
        return (self.cfg.analysis.arm, 0) if unit.kind == "analysis" else (str(unit.arm), int(unit.seed or 0))

    def spec(self, unit: Unit) -> dict[str, Any]:
        """What a unit's result depends on (placeholders unfilled): a finished unit is kept only if it matches."""
        cfg = self.cfg
        if unit.kind == "tokenizer":
            return {"tokenizer": cfg.tokenizer}
        if unit.kind == "data":
            return {"tokenizer": cfg.tokenizer, "split": cfg.data[unit.split]}
        if unit.kind in ("text_tokenizer", "text_data"):  # the text data may be tokenised by the study's tokenizer
            return {"text": dataclasses.asdict(cfg.text), **({} if cfg.text.tokenizer else {"tokenizer": cfg.tokenizer})}
        arm, seed = self.trained(unit)
        made = {"tokenizer": cfg.tokenizer, "data": cfg.data}
        if arm in self.text_arms:
            made["text"] = dataclasses.asdict(cfg.text)
        raw = {k: "{" + k + "}" for k in self.paths}
        training = {**made, "training": cfg.training_config(arm, seed, raw), "device": cfg.device}
        part = {"train": None, "table1": cfg.table1, "ppl": cfg.table2, "mmlu": cfg.table2, "analysis": cfg.analysis}
        section = part[unit.kind]
        return training if section is None else {**training, unit.kind: dataclasses.asdict(section)}

    def needs(self, unit: Unit) -> list[Unit]:
        """The units whose output ``unit`` reads: it may start only once they are finished."""
        own_tokenizer = Unit("text_tokenizer" if self.cfg.text.tokenizer else "tokenizer")
        if unit.kind in ("tokenizer", "text_tokenizer"):
            return []
        if unit.kind == "data":
            return [Unit("tokenizer")]
        if unit.kind == "text_data":
            return [own_tokenizer]
        arm, seed = self.trained(unit)
        built = [Unit("tokenizer"), *(Unit("data", split=split) for split in self.cfg.data)]
        if arm in self.text_arms:
            built += [u for u in (own_tokenizer, Unit("text_data")) if u not in built]
        return built if unit.kind == "train" else [*built, Unit("train", arm, seed)]

    def arm_seeds(self, arm: str) -> int:
        cap = self.cfg.arms[arm].seeds
        return self.seeds if cap is None else min(cap, self.seeds)

    def work(self, unit: Unit) -> dict[str, Any]:
        """Compute ``unit``; the record of what it measured and how (paths relative to the study folder)."""
        if unit.kind in ("tokenizer", "text_tokenizer"):
            return self.make_tokenizer(unit.kind)
        if unit.kind == "data":
            return self.make_data(str(unit.split))
        if unit.kind == "text_data":
            return self.make_text_data()
        if unit.kind == "analysis":
            return self.analyze()
        arm, seed = self.trained(unit)
        if unit.kind == "train":
            return self.train(arm, seed)
        if unit.kind == "table1":
            return self.eval_babilong(unit, self.cfg.table1.rag[arm] if unit.rag else None)
        return self.eval_ppl(unit) if unit.kind == "ppl" else self.eval_mmlu(unit)

    # -- the work of each kind of unit -----------------------------------------------------------------

    def make_tokenizer(self, kind: str = "tokenizer") -> dict[str, Any]:
        """The study's tokenizer (``kind`` "tokenizer"), or the text arms' own ("text_tokenizer")."""
        key = "tokenizer" if kind == "tokenizer" else "text_tokenizer"
        out = Path(self.paths[key])
        shutil.rmtree(out, ignore_errors=True)  # a tokenizer killed half-way is rebuilt from scratch
        make_tokenizer(self.cfg.tokenizer_spec(key, self.paths), out)
        given = fill(self.cfg.tokenizer if key == "tokenizer" else self.cfg.text.tokenizer, self.paths)
        return {"command": self._command("lm2 data tokenizer", {"out": out, **given}), "output": self.rel(out)}

    def make_data(self, split: str) -> dict[str, Any]:
        out = Path(self.paths["data"]) / split
        shutil.rmtree(out, ignore_errors=True)
        make_babilong(self.cfg.data_spec(split, self.paths), Path(self.paths["tokenizer"]), out)
        args = {"tokenizer": Path(self.paths["tokenizer"]), "out": out, **fill(self.cfg.data[split], self.paths)}
        return {"command": self._command("lm2 data babilong", args), "output": self.rel(out)}

    def make_text_data(self) -> dict[str, Any]:
        commands, outputs = [], []
        tokenizer = load_tokenizer(self.paths["text_tokenizer"])
        for files, key in ((self.cfg.text.inputs, "text_data"), (self.cfg.text.valid, "text_valid")):
            if files:
                out = Path(self.paths[key])
                shutil.rmtree(out, ignore_errors=True)
                inputs = fill(files, self.paths)
                prepare_text(comma_list(inputs), tokenizer, out)
                args = {"inputs": inputs, "tokenizer": Path(self.paths["text_tokenizer"]), "out": out}
                commands.append(self._command("lm2 prepare", args))
                outputs.append(self.rel(out))
        return {"command": " && ".join(commands), "output": ", ".join(outputs)}

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.out / "runs" / f"{arm}-s{seed}"

    def model_dir(self, arm: str, seed: int) -> Path:
        return self.run_dir(arm, seed) / "last"

    def config_file(self, arm: str, seed: int) -> Path:
        """The training config an arm's seed ran with (every number it makes points back to it)."""
        return self.out / "configs" / f"{arm}-s{seed}.yaml"

    def train(self, arm: str, seed: int) -> dict[str, Any]:
        data = self.cfg.training_config(arm, seed, self.paths)
        if self.cfg.device != "auto":
            data.setdefault("train", {})["device"] = self.cfg.device
        config_file = self.config_file(arm, seed)
        atomic_write_text(config_file, yaml.safe_dump(data, sort_keys=False))
        run = self.run_dir(arm, seed)
        # resume=True: a run killed part-way continues from its last checkpoint.
        trainer = Trainer(check_training_config(data), run, resume=True)
        metrics = trainer.run()
        return {
            "command": f"lm2 train --config {self.rel(config_file)} --out {self.rel(run)} --resume",
            "config": self.rel(config_file),
            "output": self.rel(run),
            "steps": trainer.step,
            "resumed_from": self.rel(trainer.resumed_from) if trainer.resumed_from else None,
            "final": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        }

    def eval_babilong(self, unit: Unit, rag: str | None) -> dict[str, Any]:
        t = self.cfg.table1
        arm, seed = self.trained(unit)
        data = ",".join(str(Path(self.paths["data"]) / s) for s in comma_list(t.split))
        groups = select_rows(data, t.tasks, t.lengths, t.samples)
        model = self.model_dir(arm, seed)
        name = self.cfg.label(arm) + ("+RAG" if rag else "")
        out = self.unit_dir(unit)
        candidate = Candidate(name, lambda: load_model_and_tokenizer(model, self.cfg.device))
        retriever = make_retriever(rag) if rag else None
        results = evaluate(
            [candidate], groups, out, batch_size=t.batch_size, retriever=retriever, metric=t.metric
        )
        args = {"model": model, "data": ",".join(self.rel(d) for d in comma_list(data)), "out": out, "tasks": t.tasks,
                "lengths": t.lengths, "samples": t.samples, "rag": rag, "batch_size": t.batch_size,
                "metric": t.metric}  # fmt: skip
        return {
            "command": self._command("lm2 eval babilong", args),
            "config": self.rel(self.config_file(arm, seed)),
            "output": self.rel(out),
            "model": name,
            "accuracy": _no_nan({n: results["accuracy"][n][name] for n in results["lengths"]}),
            "count": {n: results["count"][n][name] for n in results["lengths"]},
        }

    def eval_ppl(self, unit: Unit) -> dict[str, Any]:
        t = self.cfg.table2
        arm, seed = self.trained(unit)
        files = text_sources(comma_list(t.ppl_data))
        model = self.model_dir(arm, seed)
        lm, tokenizer = load_model_and_tokenizer(model, self.cfg.device)
        result = perplexity(lm, tokenizer, files, t.ppl_segment_length, t.ppl_max_tokens)
        args = {"model": model, "data": t.ppl_data, "segment_length": t.ppl_segment_length,
                "max_tokens": t.ppl_max_tokens}  # fmt: skip
        return {
            "command": self._command("lm2 eval ppl", args),
            "config": self.rel(self.config_file(arm, seed)),
            "output": self.rel(self.unit_dir(unit) / DONE),
            "ppl": result["ppl"],
            "nll": result["nll"],
            "tokens": result["tokens"],
            "unknown_share": result["unknown_share"],
            "trained_on": self.data_kinds[arm],  # only "text" trains the model to predict running text
            "files": result["files"],
        }

    def eval_mmlu(self, unit: Unit) -> dict[str, Any]:
        t = self.cfg.table2
        arm, seed = self.trained(unit)
        questions = read_split(t.mmlu_data, t.mmlu_split)
        if t.mmlu_subjects:
            wanted = comma_list(t.mmlu_subjects)
            missing = [s for s in wanted if s not in questions]
            if missing:
                raise ValueError(f"table2.mmlu_subjects: no subject {missing[0]!r} in {t.mmlu_data}")
            questions = {s: questions[s] for s in wanted}
        dev = read_split(t.mmlu_data, "dev") if t.mmlu_shots else {}
        model = self.model_dir(arm, seed)
        lm, tokenizer = load_model_and_tokenizer(model, self.cfg.device)
        result = evaluate_mmlu(lm, tokenizer, questions, dev, t.mmlu_shots, t.batch_size)
        args = {"model": model, "data": t.mmlu_data, "split": t.mmlu_split, "shots": t.mmlu_shots,
                "subjects": t.mmlu_subjects}  # fmt: skip
        return {
            "command": self._command("lm2 eval mmlu", args),
            "config": self.rel(self.config_file(arm, seed)),
            "output": self.rel(self.unit_dir(unit) / DONE),
            "categories": result["categories"],
            "difficulty": result["difficulty"],
            "average": result["average"],
        }

    def analyze(self) -> dict[str, Any]:
        a = self.cfg.analysis
        data = ",".join(str(Path(self.paths["data"]) / s) for s in comma_list(a.split))
        groups = select_rows(data, a.tasks, a.lengths, a.samples)
        rows = [r for g in groups.values() for r in g]
        model = self.model_dir(a.arm, 0)
        lm, tokenizer = load_model_and_tokenizer(model, self.cfg.device)
        out = self.unit_dir(Unit("analysis"))
        result = run_analysis(lm, tokenizer, out, rows=rows)
        args = {"model": model, "sample": ",".join(self.rel(d) for d in comma_list(data)), "out": out,
                "tasks": a.tasks, "lengths": a.lengths, "samples": a.samples}  # fmt: skip
        return {
            "command": self._command("lm2 analyze memory", args),
            "config": self.rel(self.config_file(a.arm, 0)),
            "output": self.rel(out),
            "model": self.cfg.label(a.arm),
            "prompts": len(rows),
            "blocks": result["prompts"][0]["summary"]["blocks"],
        }

    def _command(self, prefix: str, args: dict[str, Any]) -> str:
        """The command line equivalent to a call, run from the study folder: paths inside it are relative."""
        inside = {k: self.rel(v) if isinstance(v, Path) else v for k, v in args.items()}
        return _command(prefix, inside)

    # -- the whole study -------------------------------------------------------------------------------

    def run(self, parts: tuple[str, ...], jobs: int = 1) -> None:
        units = self.plan(parts)
        if jobs == 1:
            for i, unit in enumerate(units, 1):
                self.run_unit(unit, i, len(units))
            return
        self._run_parallel(parts, units, jobs)

    def _run_parallel(self, parts: tuple[str, ...], units: list[Unit], jobs: int) -> None:
        """Up to ``jobs`` units at once in worker processes, every unit after the units it needs.

        Each worker (spawned, so no torch thread pool is forked) rebuilds the study from the scale file once
        and runs the units it is given exactly as the sequential run does, DONE.json included. Workers get
        cpu_count / jobs torch threads each unless OMP_NUM_THREADS says otherwise.
        """
        threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // jobs)
        index = {unit: i for i, unit in enumerate(units, 1)}
        waiting = list(units)
        finished: set[Unit] = set()
        running: dict[Future[None], Unit] = {}
        failed: list[str] = []
        init = (os.getpid(), str(self.scale_file), str(self.out), self.seeds, len(units), threads)
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=init)
        # A SIGTERM to the study ends it through Python (not the default abrupt exit), so the workers are
        # stopped below before it goes; a SIGKILL leaves that to each worker's parent-death signal.
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            while (waiting and not failed) or running:
                ready = [u for u in waiting if all(n in finished or n not in index for n in self.needs(u))]
                for unit in ready:
                    if len(running) >= jobs or failed:
                        break
                    waiting.remove(unit)
                    if self.done(unit) is not None:  # kept, once its spec is checked here
                        self.run_unit(unit, index[unit], len(units))
                        finished.add(unit)
                        continue
                    running[pool.submit(_run_in_worker, unit, index[unit])] = unit
                if not running:
                    if waiting and not failed and not ready:
                        raise RuntimeError(f"study units wait on each other: {', '.join(u.name for u in waiting)}")
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    error = future.exception()
                    if error is None:
                        finished.add(unit)
                        self.ran.append(unit.name)
                    elif isinstance(error, (ValueError, FileNotFoundError)):
                        failed.append(f"{unit.name}: {error}")
                    else:
                        raise RuntimeError(f"study unit {unit.name} failed") from error
        except BaseException:
            _stop_workers(pool)
            raise
        else:
            pool.shutdown()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if failed:
            raise ValueError(
                f"{'; '.join(failed)} (the finished units are kept: run the same command again to continue)"
            )

    def dry_run(self, parts: tuple[str, ...]) -> list[dict[str, Any]]:
        """Build every arm's config and model (on the meta device: no memory, no weights); train nothing."""
        vocab = int(self.cfg.tokenizer.get("vocab_size", 8192))
        rows = []
        for arm, n in self.cfg.arms_for(parts, self.seeds).items():
            for seed in range(n):
                data = self.cfg.training_config(arm, seed, self.paths)
                cfg = check_training_config(data)
                _, model_cls = family_classes(cfg.model.family)
                config = build_config(cfg.model, vocab)
                with torch.device("meta"):
                    model = model_cls(config)
                params = sum(p.numel() for p in model.parameters())
                memory = sum(p.numel() for n, p in model.named_parameters() if ".memory." in n)
                rows.append({"arm": arm, "seed": seed, "family": cfg.model.family, "parameters": params,
                             "memory_parameters": memory, "steps": cfg.total_steps,
                             "batch_size": cfg.train.batch_size})  # fmt: skip
        units = self.plan(parts)
        print(
            f"dry run of scale {self.cfg.name}: {len(units)} units, {len(rows)} training runs "
            f"(parameters for a vocabulary of {vocab}: tokenizer.vocab_size, or 8192 when it is not set)"
        )
        for r in rows:
            print(
                f"  {r['arm']} s{r['seed']}: {r['family']}, {r['parameters']:,} parameters "
                f"({r['memory_parameters']:,} memory), {r['steps']} steps x {r['batch_size']}"
            )
        return rows


_WORKER: dict[str, Any] = {}  # a parallel study's worker process: its Study and the unit count


def _start_worker(parent: int, scale_file: str, out: str, seeds: int, total: int, threads: int | None) -> None:
    _die_with_parent(parent)
    if threads is not None:
        torch.set_num_threads(threads)
    _WORKER.update(study=Study(load_scale(Path(scale_file)), Path(out), Path(scale_file), seeds), total=total)


def _die_with_parent(parent: int) -> None:
    """Have the kernel stop this worker when the study process ``parent`` dies (Linux), so that killing the
    study never leaves a worker training on, orphaned, into the study folder.

    The signal is armed only from here on; a study that died earlier (while this worker was still starting)
    shows as a parent other than ``parent``: PID 1, or a subreaper that adopted the orphan. The signal was
    seen not to come once on a loaded machine (a worker orphaned, waiting on its task queue), so a daemon
    thread also checks the parent every half second: the worker ends within a second of the study, signal
    or not, on any platform.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="lm2-parent-watch").start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _stop_workers(pool: Any) -> None:
    """End a parallel study's workers now, whatever they are doing (the study itself is ending)."""
    for process in multiprocessing.active_children():
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_in_worker(unit: Unit, index: int) -> None:
    """One unit of a parallel study (``Study._run_parallel``), in a worker process."""
    _WORKER["study"].run_unit(unit, index, _WORKER["total"])


def _no_nan(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def _command(prefix: str, args: dict[str, Any]) -> str:
    """The command line equivalent to a call (options that are None left out)."""
    parts = [prefix]
    for key, value in args.items():
        if value is not None:
            text = str(value)
            parts.append(f"--{key.replace('_', '-')} {text if ' ' not in text and text else repr(text)}")
    return " ".join(parts)




