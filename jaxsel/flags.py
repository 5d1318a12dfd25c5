"""CLI flags generated from Config dataclasses: one flag per field, with its type, default and
help taken from the dataclass (`metadata={"help": ...}`, optionally "flag", "choices", "const",
"metavar"), so an option is declared in one place; and `--config` files, whose keys are the same
options (`read_config`)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import os
import re
import sys
import types
import typing
from pathlib import Path
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


# ------------------------------------------------------------------------ config files

NOT_OPTIONS = ("help", "config", "print_config")  # parser entries a config file cannot set


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a `--config` file: JSON, or YAML for *.yaml / *.yml (needs PyYAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--config {path}: {getattr(e, 'strerror', None) or e}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(
                f"{path}: YAML needs PyYAML (pip install pyyaml); or use JSON"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise InputError(
                f"{path}:{line}: not valid YAML ({getattr(e, 'problem', e)})"
            ) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file maps option names to values")
    return data


def read_config(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The options of a `--config` file for `parser`, checked: keys are its option names (the
    flags without dashes: `top_k`, `compressor`), values of the flag's type (null where the
    flag's default is None). A sidecar's "provenance" must be this jaxsel version's. Errors are
    one line naming the file, the line and the key."""
    import jaxsel

    data = read_config_file(path)
    text = Path(path).read_text(encoding="utf-8")
    prov = data.pop("provenance", None)
    if prov is not None:
        version = prov.get("jaxsel_version") if isinstance(prov, dict) else None
        if version != jaxsel.__version__:
            raise InputError(
                f"{path}: written by jaxsel {version}, this is {jaxsel.__version__} (delete its "
                '"provenance" to use its options anyway)'
            )
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_OPTIONS}
    options = {}
    for key, value in data.items():
        where = f"{path}:{_line_of(text, key)}: {key}"
        if key not in actions:
            near = difflib.get_close_matches(str(key), actions, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InputError(f"{where}: unknown option for {parser.prog}{hint}")
        options[key] = _checked(actions[key], value, where)
    return options


def _checked(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        if action.default is None:
            return None
        raise InputError(f"{where}: null is not allowed (default {action.default!r})")
    want = bool if action.nargs == 0 else action.type or str
    if want is float and type(value) is int:
        value = float(value)
    if type(value) is not want:
        raise InputError(f"{where}: expected {want.__name__}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _line_of(text: str, key: str) -> int:
    """The line of `key` in a JSON or YAML text (1 if not found)."""
    pattern = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*:|"{re.escape(key)}"\s*:')
    return next((n for n, ln in enumerate(text.splitlines(), 1) if pattern.search(ln)), 1)
