"""The ``lm2`` command line: every subcommand is a plain typed function.

The parser of each subcommand is derived from its function's signature and the ``Args:`` section of its
docstring (names become ``--dashed-options``, defaults and types come from the annotations), so the
function is the single source of truth and can be called from Python with the same arguments.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from lm2.commands.analyze import analyze_memory
from lm2.commands.data import babi_command, babilong_command, tokenizer_command
from lm2.commands.demo import demo, params
from lm2.commands.evaluate import eval_babilong, eval_harness, eval_mmlu, eval_ppl, eval_rescore
from lm2.commands.reproduce import reproduce
from lm2.commands.state import ask, read
from lm2.commands.train import prepare, train

# Subcommand -> the typed function it runs, or a nested group.
COMMANDS: dict[str, Any] = {
    "demo": demo,
    "params": params,
    "data": {
        "babi": babi_command,
        "babilong": babilong_command,
        "tokenizer": tokenizer_command,
    },
    "prepare": prepare,
    "train": train,
    "eval": {
        "babilong": eval_babilong,
        "mmlu": eval_mmlu,
        "ppl": eval_ppl,
        "harness": eval_harness,
        "rescore": eval_rescore,
    },
    "read": read,
    "ask": ask,
    "analyze": {
        "memory": analyze_memory,
    },
    "reproduce": reproduce,
}

_GROUP_HELP = {
    "data": "generate bAbI stories, build BABILong sets, train a tokenizer",
    "eval": "evaluate checkpoints: BABILong accuracy, MMLU, perplexity, lm-evaluation-harness tasks",
    "analyze": "look inside a trained model: memory read attention, gates and slot roles",
}


def _doc_parts(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description and the per-argument help of a Google-style docstring."""
    doc = inspect.getdoc(func) or ""
    head, _, args = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        if re.match(r"^\S", line):  # a new section ("Returns:") ends Args
            break
        m = re.match(r"^\s{2,4}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return head.strip(), helps


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def add_function_arguments(parser: argparse.ArgumentParser, func: Callable[..., Any]) -> None:
    """Add one ``--option`` per parameter of ``func`` to ``parser``."""
    _, helps = _doc_parts(func)
    hints = typing.get_type_hints(func)
    for name, param in inspect.signature(func).parameters.items():
        tp, optional = _unwrap_optional(hints.get(name, str))
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "help": helps.get(name, "")}
        required = param.default is inspect.Parameter.empty
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = param.default
            if param.default is not None and tp is not bool:
                kwargs["help"] += f" (default: {param.default})"
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is Literal:
            choices = typing.get_args(tp)
            kwargs["choices"] = choices
            kwargs["type"] = type(choices[0])
        else:
            convert = tp if tp in (int, float, str, Path) else str
            kwargs["type"] = _none_or(convert) if optional else convert
            kwargs["metavar"] = name.upper()
        parser.add_argument(flag, **kwargs)


def build_parser(commands: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm2", description="LM2: Large Memory Models — data, training, evaluation."
    )
    _add_group(parser, commands or COMMANDS, depth=0)
    return parser


def _add_group(parser: argparse.ArgumentParser, group: dict[str, Any], depth: int) -> None:
    sub = parser.add_subparsers(dest=f"_cmd{depth}", metavar="COMMAND", required=True)
    for name, target in group.items():
        if isinstance(target, dict):
            child = sub.add_parser(name, help=_GROUP_HELP.get(name, ""), description=_GROUP_HELP.get(name))
            _add_group(child, target, depth + 1)
            continue
        func = target
        description, _ = _doc_parts(func)
        child = sub.add_parser(
            name,
            help=description.splitlines()[0] if description else "",
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_function_arguments(child, func)
        child.set_defaults(_func=func)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lm2`` script."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    func = args.pop("_func")
    kwargs = {k: v for k, v in args.items() if not k.startswith("_cmd")}
    try:
        func(**kwargs)
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a crash: one line, the shell's code for SIGINT. Whatever the
        # command writes atomically (checkpoints, built sets, DONE files) is left complete or absent.
        print(f"lm2: interrupted ({' '.join(sys.argv[1:3]) or 'lm2'})", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # User errors are reported as one clear line; programming errors keep their traceback.
        print(f"lm2: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # What the machine refused (a full disk, a file where a folder belongs, no permission) is no bug.
        hint = (
            "; free some space and run the command again" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        )
        print(f"lm2: error: {err}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
