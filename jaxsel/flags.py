"""CLI flags generated from Config dataclasses: one flag per field, with its type, default and
help taken from the dataclass (`metadata={"help": ...}`, optionally "flag", "choices", "const",
"metavar"), so an option is declared in one place."""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import sys
import types
import typing
from typing import Any

from jaxsel.errors import InputError

# Fields every Config that has them means alike: the least value each takes (numpy's
# generators take no negative seed; a batch holds at least one document).
LEAST = {"seed": 0, "shard_size": 1}
# a field's scalar type -> the values it takes (numpy's too), in words
KINDS = {
    bool: (bool, "True or False"),
    int: (numbers.Integral, "an integer"),
    float: (numbers.Real, "a number"),
    str: (str, "a string"),
}


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
    values.update(overrides)
    check_options(config_cls, values)
    return config_cls(**values)


def check_options(config_cls: type, options: dict[str, Any]) -> None:
    """Options by field name (the Python API's keywords, parsed flags), checked before the Config
    is built as a flag's type checks its text: of the field's scalar type (an int for a float
    too, None where the default is None), floats finite, `LEAST` bounds. Unknown names are the
    Config's to refuse."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name, value in options.items():
        if name not in fields or (value is None and fields[name].default is None):
            continue
        typ = scalar_type(config_cls, fields[name])
        kind, what = KINDS[typ]
        if not isinstance(value, kind) or (typ is not bool and isinstance(value, bool)):
            raise InputError(f"option {name} must be {what}, got {value!r}")
        if typ is float and not math.isfinite(value):
            raise InputError(f"option {name} must be finite, got {value!r}")
        if name in LEAST and value < LEAST[name]:
            raise InputError(f"option {name} must be >= {LEAST[name]}, got {value!r}")
