"""The README's commands run as written (issue 9 item 4): its BABILong experiment block is read from
README.md here and run with small sizes, so an edit that breaks it fails this test."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from lm2.cli import main

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- tests/test_readme.py runs this block"

# What the test changes, and only this: sizes. Each pattern must match, or the README changed shape and
# this test must be told how to shrink the new form.
SHRINK = [
    (r"^lm2 data tokenizer .*", lambda m: m.group(0) + " --num-stories 20 --vocab-size 400"),
    (r"--samples \d+", lambda m: "--samples 2"),
    (
        r'^(lm2 train .*--set ")([^"]*)"',
        lambda m: (
            f"{m.group(1)}{m.group(2)} curriculum.0.steps=1 curriculum.1.steps=1 train.batch_size=2 "
            'data.valid_samples=4"'
        ),
    ),
    (r"^lm2 eval babilong .*", lambda m: m.group(0) + " --samples 1 --device cpu"),
]


def readme_block(marker: str) -> list[str]:
    """The commands of the fenced block after ``marker``, continuation lines joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert marker in text, f"README.md lost the marker {marker!r} of the block this test runs"
    body = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def shrink(commands: list[str]) -> list[str]:
    out = list(commands)
    for pattern, repl in SHRINK:
        hits = 0
        for i, command in enumerate(out):
            out[i], n = re.subn(pattern, repl, command)
            hits += n
        assert hits, f"no README command matches {pattern!r}: update SHRINK in {__file__}"
    return out


def test_the_readme_experiment_block_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = shrink(readme_block(MARK))
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the block runs from the repository root
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command)
        if argv == ["source", ".venv/bin/activate"]:
            # The set-up's environment (here the one running the tests) has the script it puts on PATH.
            bin_dir = Path(sys.prefix) / "bin"
            assert (bin_dir / "activate").is_file() and (bin_dir / "lm2").is_file()
            continue
        assert argv[0] == "lm2", f"the README block runs something this test cannot: {command}"
        assert main(argv[1:]) == 0, command
    for split in ("train", "valid", "test"):
        assert json.loads((tmp_path / "data" / split / "manifest.json").read_text())["complete"] is True
    results = json.loads((tmp_path / "runs" / "eval" / "results.json").read_text())
    assert results["models"] == ["lm2 step 2"] and results["lengths"] == ["0k", "1k"]
    assert results["tasks"] == ["qa1", "qa2", "qa3", "qa4", "qa5"]


def test_the_readme_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)\n```", text, flags=re.S)
    assert blocks, "README.md has no python block any more: drop this test"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "out" / "lm2-small" / "model.safetensors").is_file()


def _doc_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every command line in the bash blocks of README.md and docs/*.md."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for body in re.findall(r"```bash\n(.*?)\n```", path.read_text(encoding="utf-8"), flags=re.S):
            for line in body.replace("\\\n", " ").splitlines():
                argv = shlex.split(line, comments=True)
                while argv and re.match(r"^[A-Z_]+=", argv[0]):  # VAR=value prefixes
                    argv = argv[1:]
                for i, arg in enumerate(argv):  # the command ends where its output is redirected or piped
                    if arg in (">", ">>", "|", "2>", "&&"):
                        argv = argv[:i]
                        break
                if argv:
                    found.append((path.name, argv))
    return found


def test_every_documented_lm2_command_parses_and_names_files_that_exist() -> None:
    """Each `lm2 ...` line of the docs is a valid command line (no made-up options, no [optional] syntax),
    and the configs and scripts the docs run are in the repository."""
    from lm2.cli import build_parser

    parser = build_parser()
    checked = 0
    for name, argv in _doc_commands():
        if argv[0] in ("lm2", ".venv/bin/lm2") or argv[:3] == ["torchrun", "--nproc_per_node", "2"]:
            args = argv[argv.index("lm2.cli") + 1 :] if "lm2.cli" in argv else argv[1:]
            try:
                parsed = vars(parser.parse_args(args))
            except SystemExit:
                pytest.fail(f"{name}: not a valid lm2 command line: {' '.join(argv)}")
            config = parsed.get("config")
            assert config is None or (REPO / config).is_file(), f"{name}: no {config}"
            checked += 1
        for arg in argv:
            if re.match(r"^(scripts|benchmarks|configs)/\S+\.(sh|py|yaml)$", arg):
                assert (REPO / arg).is_file(), f"{name}: {arg} does not exist"
    assert checked >= 15
