"""The command line answers ``--help`` without loading torch or transformers (seconds of import here):
every subcommand's function lives in a light module of lm2.commands and imports its library when run."""

from __future__ import annotations

import subprocess
import sys

WALK = """
import argparse, sys
import lm2.cli

def walk(parser, path):
    yield path, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, path + [name])

helps = dict((" ".join(p), text) for p, text in walk(lm2.cli.build_parser(), ["lm2"]))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tokenizers"))
assert not heavy, heavy[:5]
print(len(helps))
for name, text in helps.items():
    assert "usage: " + name in text, name
"""


def test_every_help_loads_no_torch() -> None:
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 18  # lm2, its groups and every subcommand


def test_importing_lm2_loads_the_models_only_when_used() -> None:
    code = (
        "import sys, lm2; assert 'torch' not in sys.modules; "
        "from transformers import AutoConfig; lm2.LM2Config; "
        "assert type(AutoConfig.for_model('lm2')).__name__ == 'LM2Config'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
