"""A battery of bad inputs and faults through the `lm2` command line, each classified by what a user sees.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fault_battery.py --out benchmarks/results/fault-battery
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fault_battery.py --lm2 OTHER/.venv/bin/lm2 --out DIR  # another checkout

Every case runs `lm2 ...` in a fresh process (a timeout of 300 s) on files made for it in a scratch folder,
and is put in one class:

- clear error: exit code 2 (130 for Ctrl-C), no traceback, the last line of stderr says what is wrong;
- correct: the command should succeed and did (exit 0);
- traceback: Python's traceback reached the user;
- silently wrong: exit 0 where the input is wrong (or a non-zero exit without a message);
- hang: still running at the timeout.

Writes DIR/battery.md (counts per class and per area, and every case) and DIR/battery.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@dataclass
class Case:
    area: str
    name: str
    args: list[str]
    expect: str = "error"  # "error" or "ok"
    setup: Callable[[Path], None] | None = None
    interrupt: float | None = None  # send SIGINT this many seconds after the start


def qa1_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    import random

    rng = random.Random(seed)
    people, rooms = ["Mary", "John", "Sandra", "Daniel"], ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]
    rows = []
    for _ in range(n):
        where: dict[str, str] = {}
        facts = []
        for _ in range(rng.randint(2, 5)):
            who, room = rng.choice(people), rng.choice(rooms)
            where[who] = room
            facts.append(f"{who} went to the {room}.")
        who = rng.choice(sorted(where))
        rows.append({"input": " ".join(facts), "question": f"Where is {who}?", "target": where[who],
                     "task": "qa1", "length": "0k"})  # fmt: skip
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def train_yaml(w: Path, **changes: Any) -> str:
    data = {"kind": "babilong", "train": [str(w / "rows.jsonl")], "tokenizer": str(w / "tok")}
    data.update(changes.pop("data", {}))
    sections = {
        "model": {"family": "lm2", "preset": "tiny", **changes.pop("model", {})},
        "data": data,
        "curriculum": changes.pop("curriculum", [{"steps": 2}]),
        "optim": {"lr": 1e-3, "warmup_steps": 1, **changes.pop("optim", {})},
        "train": {"batch_size": 4, "save_every": None, "progress": False, **changes.pop("train", {})},
    }
    return json.dumps(sections)  # JSON is YAML


def prepare_scratch(w: Path, lm2: str) -> None:
    """The files the cases share: a tokenizer, rows, a book, a 2-step checkpoint, a finished smoke study."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([lm2, *a], cwd=w, env=env, check=True, capture_output=True)  # noqa: E731
    run("data", "tokenizer", "--out", str(w / "tok"), "--tasks", "qa1", "--num-stories", "50", "--vocab-size", "400")
    write_rows(w / "rows.jsonl", qa1_rows(40))
    (w / "book.txt").write_text("Mary went to the kitchen. The sun was low over the hills. " * 200)
    (w / "run.yaml").write_text(train_yaml(w))
    run("train", "--config", str(w / "run.yaml"), "--out", str(w / "run"))
    shutil.copytree(w / "run" / "checkpoints" / "step-00000002", w / "model")


def cases(w: Path, lm2: str) -> list[Case]:
    def write(name: str, text: str | bytes) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            path = w / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)

        return setup

    def bad_row(**change: Any) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            rows = qa1_rows(6, seed=1)
            rows[2] = {**rows[2], **change}
            write_rows(w / "bad.jsonl", rows)
            (w / "bad.yaml").write_text(train_yaml(w, data={"train": [str(w / "bad.jsonl")]}))

        return setup

    def model_copy(edit: Callable[[Path], None]) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            target = w / "edited"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(w / "model", target)
            edit(target)

        return setup

    def truncate(folder: Path) -> None:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    def tamper(folder: Path) -> None:
        weights = bytearray((folder / "model.safetensors").read_bytes())
        weights[-5] ^= 0xFF
        (folder / "model.safetensors").write_bytes(bytes(weights))

    def big_tokenizer(folder: Path) -> None:
        from lm2.data.tokenizer import save_tokenizer, train_tokenizer

        (folder / "manifest.json").unlink()
        save_tokenizer(train_tokenizer([f"w{i} x{i * 7} y" for i in range(3000)], vocab_size=1200), folder)

    def bert(w: Path) -> None:
        from transformers import BertConfig, BertForMaskedLM

        BertForMaskedLM(BertConfig(vocab_size=400, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)).save_pretrained(w / "bert")  # fmt: skip
        for f in (w / "model").glob("tokenizer*"):
            shutil.copy(f, w / "bert" / f.name)

    def llama(w: Path) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        LlamaForCausalLM(LlamaConfig(vocab_size=400, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2)).save_pretrained(w / "llama")  # fmt: skip
        (w / "auto.yaml").write_text(train_yaml(w, model={"family": "auto", "pretrained": str(w / "llama"),
                                                          "overrides": {"memory_slots": 8}, "preset": None}))  # fmt: skip

    def stale_last(w: Path) -> None:
        shutil.rmtree(w / "stale", ignore_errors=True)
        shutil.copytree(w / "run", w / "stale", symlinks=True)
        ckpts = w / "stale" / "checkpoints"
        shutil.copytree(ckpts / "step-00000002", ckpts / "step-00000001")  # an older complete checkpoint
        (w / "stale" / "last").unlink()
        (w / "stale" / "last").symlink_to("checkpoints/step-00000001")  # what a kill between save and link leaves

    def vanilla(w: Path) -> None:
        (w / "v.yaml").write_text(train_yaml(w, model={"overrides": {"use_memory": False}}))
        subprocess.run([lm2, "train", "--config", "v.yaml", "--out", "vrun"], cwd=w, check=True, capture_output=True)
        shutil.copytree(w / "vrun" / "checkpoints" / "step-00000002", w / "vanilla")

    def missing_input(w: Path) -> None:
        smoke = (ROOT / "configs" / "reproduce" / "smoke.yaml").read_text()
        (w / "missing.yaml").write_text(re.sub(r"(?m)^(\s*ppl_data:).*$", r"\1 nope.txt", smoke))

    ev = ["eval", "babilong", "--model", "model", "--out", "ev"]
    rows, tok = "rows.jsonl", "tok"
    return [
        # data
        Case("data", "unknown task", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa99", "--out", "d"]),
        Case("data", "bad length", ["data", "babilong", "--tokenizer", tok, "--lengths", "5x", "--out", "d"]),
        Case("data", "zero samples", ["data", "babilong", "--tokenizer", tok, "--samples", "0", "--out", "d"]),
        Case("data", "missing tokenizer", ["data", "babilong", "--tokenizer", "nope", "--tasks", "qa1", "--out", "d"]),
        Case("data", "missing background", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa1", "--lengths", "1k",
                                            "--background", "nope.txt", "--out", "d"]),  # fmt: skip
        Case("data", "empty background", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa1", "--lengths", "1k",
                                          "--background", "empty.txt", "--out", "d"], setup=write("empty.txt", "")),  # fmt: skip
        Case("data", "fact distance at 0k", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa1", "--lengths",
                                             "0k,1k", "--fact-distance", "600", "--out", "d"]),  # fmt: skip
        Case("data", "prompt reserve over the length", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa1",
                                                        "--lengths", "1k", "--prompt-reserve", "2000", "--out", "d"]),  # fmt: skip
        Case("data", "unknown tokenizer kind", ["data", "tokenizer", "--kind", "sentencepiece", "--out", "t"]),
        Case("data", "tiny vocabulary", ["data", "tokenizer", "--vocab-size", "10", "--tasks", "qa1", "--out", "t"]),
        Case("data", "zero stories", ["data", "babi", "--tasks", "qa1", "--num-stories", "0", "--out", "b"]),
        Case("data", "--out is a file", ["data", "babi", "--tasks", "qa1", "--num-stories", "2", "--out", "book.txt"]),
        Case("data", "a small set builds", ["data", "babilong", "--tokenizer", tok, "--tasks", "qa1", "--lengths",
                                            "0k,1k", "--samples", "3", "--out", "good"], expect="ok"),  # fmt: skip
        # prepare
        Case("prepare", "binary input", ["prepare", "--inputs", "x.png", "--tokenizer", tok, "--out", "s"],
             setup=write("x.png", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))),
        Case("prepare", "empty text", ["prepare", "--inputs", "empty.txt", "--tokenizer", tok, "--out", "s"],
             setup=write("empty.txt", "")),
        Case("prepare", "missing input", ["prepare", "--inputs", "nope.txt", "--tokenizer", tok, "--out", "s"]),
        Case("prepare", "missing tokenizer", ["prepare", "--inputs", "book.txt", "--tokenizer", "nope", "--out", "s"]),
        Case("prepare", "a book prepares", ["prepare", "--inputs", "book.txt", "--tokenizer", tok, "--out", "s"],
             expect="ok"),
        # train
        Case("train", "missing config", ["train", "--config", "nope.yaml", "--out", "o"]),
        Case("train", "unknown config key", ["train", "--config", "c.yaml", "--out", "o"],
             setup=write("c.yaml", "optim: {lr: 1.0e-3, lrr: 2}\n")),
        Case("train", "key given twice", ["train", "--config", "twice.yaml", "--out", "o"],
             setup=lambda w: (w / "twice.yaml").write_text(
                 train_yaml(w).replace('"lr": 0.001', '"lr": 0.001, "lr": 0.003'))),  # otherwise valid
        Case("train", "infinite lr", ["train", "--config", "run.yaml", "--out", "o", "--set", "optim.lr=.inf"]),
        Case("train", "negative lr", ["train", "--config", "run.yaml", "--out", "o", "--set", "optim.lr=-1"]),
        Case("train", "missing training file", ["train", "--config", "run.yaml", "--out", "o", "--set",
                                                "data.train=[nope.jsonl]"]),  # fmt: skip
        Case("train", "integer target", ["train", "--config", "bad.yaml", "--out", "o"], setup=bad_row(target=5)),
        Case("train", "null question", ["train", "--config", "bad.yaml", "--out", "o"], setup=bad_row(question=None)),
        Case("train", "a 100,000-token row", ["train", "--config", "bad.yaml", "--out", "o"],
             setup=bad_row(input="Mary went to the kitchen. " * 15_000)),
        Case("train", "empty rows file", ["train", "--config", "run.yaml", "--out", "o", "--set",
                                          "data.train=[empty.jsonl]"], setup=write("empty.jsonl", "")),  # fmt: skip
        Case("train", "--out is a file", ["train", "--config", "run.yaml", "--out", "book.txt"]),
        Case("train", "unknown family", ["train", "--config", "run.yaml", "--out", "o", "--set", "model.family=gpt"]),
        Case("train", "unknown override", ["train", "--config", "run.yaml", "--out", "o", "--set",
                                           "model.overrides.memory_slotz=4"]),  # fmt: skip
        Case("train", "segment longer than the window", ["train", "--config", "run.yaml", "--out", "o", "--set",
                                                         "model.overrides.attention_window=4"]),  # fmt: skip
        Case("train", "resume with another model", ["train", "--config", "run.yaml", "--out", "run", "--resume",
                                                    "--set", "model.overrides.hidden_size=64"]),  # fmt: skip
        Case("train", "a new run over checkpoints", ["train", "--config", "run.yaml", "--out", "run"]),
        Case("train", "cuda on a CPU machine", ["train", "--config", "run.yaml", "--out", "o", "--set",
                                                "train.device=cuda"]),  # fmt: skip
        Case("train", "LM2 overrides on a Llama", ["train", "--config", "auto.yaml", "--out", "o"], setup=llama),
        Case("train", "a shipped config's name, misspelt", ["train", "--config", "memory-qa1-lm3", "--out", "o"]),
        Case("train", "Ctrl-C", ["train", "--config", "run.yaml", "--out", "ctrl-c", "--set", "curriculum.0.steps=100000"],
             interrupt=25.0),
        Case("train", "a tiny run trains", ["train", "--config", "run.yaml", "--out", "fresh"], expect="ok"),
        # evaluation
        Case("eval", "missing model", ["eval", "babilong", "--model", "nope", "--data", rows, "--out", "ev"]),
        Case("eval", "a folder without config.json", ["eval", "babilong", "--model", "tok", "--data", rows, "--out", "ev"]),
        Case("eval", "missing data", [*ev, "--data", "nope.jsonl"]),
        Case("eval", "a task the data lacks", [*ev, "--data", rows, "--tasks", "qa7"]),
        Case("eval", "integer target", [*ev, "--data", "bad.jsonl"], setup=bad_row(target=5)),
        Case("eval", "null question", [*ev, "--data", "bad.jsonl"], setup=bad_row(question=None)),
        Case("eval", "cuda on a CPU machine", [*ev, "--data", rows, "--device", "cuda"]),
        Case("eval", "a masked LM", ["eval", "ppl", "--model", "bert", "--data", "book.txt"], setup=bert),
        Case("eval", "tokenizer larger than the vocabulary", ["eval", "ppl", "--model", "edited", "--data", "book.txt"],
             setup=model_copy(big_tokenizer)),
        Case("eval", "truncated weights", ["eval", "ppl", "--model", "edited", "--data", "book.txt"],
             setup=model_copy(truncate)),
        Case("eval", "tampered weights", ["eval", "ppl", "--model", "edited", "--data", "book.txt"],
             setup=model_copy(tamper)),
        Case("eval", "empty MMLU csv", ["eval", "mmlu", "--model", "model", "--data", "mmlu", "--split", "dev",
                                        "--shots", "0"], setup=write("mmlu/dev/anatomy_dev.csv", "")),  # fmt: skip
        Case("eval", "nine shots", ["eval", "mmlu", "--model", "model", "--data", str(SHARED / "mmlu"), "--split", "dev",
                                    "--shots", "9"]),  # fmt: skip
        Case("eval", "binary text for perplexity", ["eval", "ppl", "--model", "model", "--data", "x.png"],
             setup=write("x.png", b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))),
        Case("eval", "max tokens 1", ["eval", "ppl", "--model", "model", "--data", "book.txt", "--max-tokens", "1"]),
        Case("eval", "missing predictions", ["eval", "rescore", "--predictions", "nope", "--out", "r", "--metric", "words"]),
        Case("eval", "retrieval of zero chunks", [*ev, "--data", rows, "--rag", "k=0"]),
        Case("eval", "a stale OUT/last", ["eval", "babilong", "--model", "stale/last", "--data", rows, "--out", "ev2",
                                          "--samples", "3"], expect="ok", setup=stale_last),  # fmt: skip
        Case("eval", "a run folder scores", ["eval", "babilong", "--model", "run", "--data", rows, "--out", "ev3",
                                             "--samples", "3"], expect="ok"),  # fmt: skip
        # the study
        Case("reproduce", "unknown scale", ["reproduce", "--scale", "huge", "--out", "st"]),
        Case("reproduce", "unknown part", ["reproduce", "--scale", "smoke", "--out", "st", "--only", "table9"]),
        Case("reproduce", "replot without results", ["reproduce", "--out", "none", "--replot"]),
        Case("reproduce", "replot of a foreign results.json", ["reproduce", "--out", "foreign", "--replot"],
             setup=write("foreign/results.json", json.dumps({"scale": "x", "table1": [1]}))),
        Case("reproduce", "scale with an unknown key", ["reproduce", "--scale", "bad.yaml", "--out", "st", "--dry-run"],
             setup=write("bad.yaml", "name: x\nseedz: 2\n")),
        Case("reproduce", "zero jobs", ["reproduce", "--scale", "smoke", "--out", "st", "--jobs", "0"]),
        Case("reproduce", "a missing input file", ["reproduce", "--scale", "missing.yaml", "--out", "st"],
             setup=missing_input),
        # analysis, demo, params
        Case("analyze", "a model without memory", ["analyze", "memory", "--model", "vanilla", "--text", "Hi.",
                                                   "--out", "a"], setup=vanilla),  # fmt: skip
        Case("analyze", "text and rows both", ["analyze", "memory", "--model", "model", "--text", "x", "--sample", rows,
                                               "--out", "a"]),  # fmt: skip
        Case("demo", "zero steps", ["demo", "--steps", "0"]),
        Case("params", "unknown preset", ["params", "--preset", "huge"]),
        Case("params", "a preset's parameters", ["params", "--preset", "small"], expect="ok"),
        Case("cli", "help", ["--help"], expect="ok"),
        Case("cli", "unknown command", ["fly"]),
    ]


def classify(case: Case, code: int | None, err: str) -> str:
    if code is None:
        return "hang"
    if "Traceback (most recent call last)" in err:
        return "traceback"
    last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    told = last[0].startswith(("lm2: error", "lm2: interrupted", "lm2: training stopped", "usage:", "lm2: "))
    told = told or "error:" in last[0]
    if case.expect == "ok":
        return "correct" if code == 0 else ("clear error" if told else "silently wrong")
    if code in (2, 130) and told:
        return "clear error"
    return "silently wrong"


def run_case(lm2: str, w: Path, case: Case) -> dict[str, Any]:
    if case.setup is not None:
        case.setup(w)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([lm2, *case.args], cwd=w, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        if case.interrupt is not None:
            try:
                proc.wait(timeout=case.interrupt)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        code = None
    verdict = classify(case, code, err)
    shown = [line for line in err.strip().splitlines() if line.strip()][-1:] or [""]
    return {"area": case.area, "case": case.name, "args": case.args, "expect": case.expect, "exit": code,
            "class": verdict, "seconds": round(time.monotonic() - start, 1), "said": shown[0][:300]}  # fmt: skip


def to_markdown(results: list[dict[str, Any]], lm2: str) -> str:
    classes = ["clear error", "correct", "traceback", "silently wrong", "hang"]
    counts = Counter(r["class"] for r in results)
    areas = sorted({r["area"] for r in results}, key=[r["area"] for r in results].index)
    lines = [
        "# Fault battery",
        "",
        f"`{lm2}` on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}), "
        f"{len(results)} cases.",
        "",
        "| area | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for area in areas:
        c = Counter(r["class"] for r in results if r["area"] == area)
        lines.append(f"| {area} | " + " | ".join(str(c[k]) for k in classes) + " |")
    lines.append("| **all** | " + " | ".join(f"**{counts[k]}**" for k in classes) + " |")
    lines += ["", "| area | case | expected | exit | class | what the user saw (last line of stderr) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        said = r["said"].replace("|", "\\|")
        lines.append(f"| {r['area']} | {r['case']} | {r['expect']} | {r['exit']} | {r['class']} | {said} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm2", default=str(ROOT / ".venv" / "bin" / "lm2"), help="the lm2 executable to test")
    parser.add_argument("--out", type=Path, required=True, help="folder for battery.md and battery.json")
    parser.add_argument("--only", default="", help="comma-separated areas (default: all)")
    args = parser.parse_args()
    w = Path(tempfile.mkdtemp(prefix="lm2-battery-"))
    try:
        (w / "configs").symlink_to(ROOT / "configs")
        prepare_scratch(w, args.lm2)
        results = []
        for case in cases(w, args.lm2):
            if args.only and case.area not in args.only.split(","):
                continue
            results.append(run_case(args.lm2, w, case))
            print(f"{results[-1]['class']:>15}  {case.area}: {case.name}  ({results[-1]['seconds']} s)", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "battery.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "battery.md").write_text(to_markdown(results, args.lm2))
        print(to_markdown(results, args.lm2))
    finally:
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
