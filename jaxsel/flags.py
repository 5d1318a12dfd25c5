"""CLI flags generated from Config dataclasses: one flag per field, with its type, default and
help taken from the dataclass (`metadata={"help": ...}`, optionally "flag", "choices", "const",
"metavar"), so an option is declared in one place."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any


def scalar_type(cls: type, field: dataclasses.Field) -> type:
    """The scalar type of a Config field (`X | None` -> X); only bool/int/float/str fields."""
    hint = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))[field.name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in args if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
        hint = args[0]
    if hint not in (bool, int, float, str):
        raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
    return hint


def flag_name(field: dataclasses.Field) -> str:
    """The CLI flag of a Config field: metadata "flag", else --field-name."""
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def add_config_args(parser, config_cls: type) -> None:
    """Adds one flag per Config field: type, default and help from the dataclass."""
    for f in dataclasses.fields(config_cls):
        if "help" not in f.metadata:
            raise TypeError(f"{config_cls.__qualname__}.{f.name}: no help in its metadata")
        typ = scalar_type(config_cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": default,
            "help": f"{f.metadata['help']} (default: {default})",
        }
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = typ
            for opt in ("choices", "const", "metavar"):
                if opt in f.metadata:
                    kw[opt] = f.metadata[opt]
            if "const" in kw:
                kw["nargs"] = "?"
        parser.add_argument(flag_name(f), **kw)


def config_from_args(args: argparse.Namespace, config_cls: type, **overrides) -> Any:
    """The Config from parsed flags (`add_config_args`); `overrides` replace fields."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
    return config_cls(**{**values, **overrides})
