"""Typed configs from YAML mappings: a dataclass built from a mapping, every key checked against its fields
and every leaf value against its annotation, with errors that name the dotted key and what is valid."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal


def from_mapping(cls: type, data: Any, where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a mapping, recursing into nested dataclasses and lists of them."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(data).__name__}: {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key {prefix}{unknown[0]}; valid keys of {where or 'the config'}: {', '.join(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        tp, path = hints[key], f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(tp):
            value = from_mapping(tp, value, path)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            if not isinstance(value, list):
                raise ValueError(f"{path} must be a list of stages, got {value!r}")
            value = [from_mapping(typing.get_args(tp)[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            value = _coerce(tp, value, path)
        kwargs[key] = value
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check a leaf value against its annotation (ints may stand for floats; a bare string for a list)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value  # checked against the choices in validate()
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"{path} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path} must be a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"{path} must be {tp.__name__}, got {value!r}")
    return value
