"""CLI flags generated from Config dataclasses: one flag per field, with its type, default and
help taken from the dataclass (`metadata={"help": ...}`, optionally "flag", "aliases",
"choices", "const", "metavar", "positional", "exclusive"), so an option is declared in one
place; and `--config` files, whose keys are the same options (`read_config`).

Fields are bool/int/float/str (`X | None` too), tuples of one of these (`--targets wq wv` or
`--targets wq,wv`; paths, fields marked "input", are not split at commas) or nested Configs,
whose flags carry the field's name as a prefix (`--lora.rank`, also spelled `--lora-rank`;
metadata "prefix" changes it, "" puts them at the top). Parse errors are one line (`Parser`)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import os
import re
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


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `error: MESSAGE`, with exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message}\n")


def option(default: Any = dataclasses.MISSING, help: str = "", **meta) -> Any:
    """A Config field with its flag's help (and optional metadata: "flag", "aliases",
    "choices", "metavar", "positional", ...); without a default the flag is required."""
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def _hint(cls: type, field: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[field.name]


def _scalar(cls: type, field: dataclasses.Field, hint: Any) -> type:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in args if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
        hint = args[0]
    if hint not in (bool, int, float, str):
        raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
    return hint


def scalar_type(cls: type, field: dataclasses.Field) -> type:
    """The scalar type of a Config field (`X | None` -> X); only bool/int/float/str fields."""
    return _scalar(cls, field, _hint(cls, field))


def item_type(cls: type, field: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, whether the field is a tuple of them) of a non-Config field."""
    hint = _hint(cls, field)
    if typing.get_origin(hint) is tuple:
        return _scalar(cls, field, typing.get_args(hint)[0]), True
    return _scalar(cls, field, hint), False


def nested(cls: type, field: dataclasses.Field) -> type | None:
    """The Config class of a nested-Config field, else None."""
    hint = _hint(cls, field)
    return hint if dataclasses.is_dataclass(hint) else None


def flag_name(field: dataclasses.Field, prefix: str = "") -> str:
    """The CLI flag of a Config field: metadata "flag", else --prefix.field-name."""
    return field.metadata.get("flag", "--" + (prefix + field.name).replace("_", "-"))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _items(typ: type, split: bool):
    """argparse type of a tuple field's words: 'a,b' -> (a, b) (`split`, else ('a,b',)), each
    converted to `typ`."""

    def convert(text: str) -> tuple:
        return (
            tuple(typ(t.strip()) for t in text.split(",") if t.strip()) if split else (typ(text),)
        )

    convert.__name__ = typ.__name__  # argparse names it in "invalid int value: 'x'"
    convert.item_type = typ  # what a --config file's list holds
    return convert


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_config_args(parser, config_cls: type, group=None, prefix: str = "") -> None:
    """Adds one flag per Config field to `group` (default: `parser`): type, default and help
    from the dataclass (a nested Config's from its class: its own defaults, before any
    `__post_init__` resolves them); a nested Config's flags go to an argument group of their
    own."""
    group = parser if group is None else group
    exclusive = {}  # metadata "exclusive": fields of one name go in one mutually exclusive group
    for f in dataclasses.fields(config_cls):
        default = _default(f)
        sub = nested(config_cls, f)
        if sub is not None:
            name = f.metadata.get("prefix", f.name + ".")
            title = f"{f.name}: {f.metadata.get('help') or _summary(sub)}"
            add_config_args(parser, sub, parser.add_argument_group(title), prefix + name)
            continue
        if "help" not in f.metadata:
            raise TypeError(f"{config_cls.__qualname__}.{f.name}: no help in its metadata")
        typ, many = item_type(config_cls, f)
        required = default is dataclasses.MISSING
        shown = " (required)" if required else f" (default: {_shown(default)})"
        if required and f.metadata.get("positional"):
            shown = ""
        kw: dict[str, Any] = {"help": (f.metadata["help"] + shown).replace("%", "%%")}
        if not required:
            kw["default"] = default
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _items(typ, not f.metadata.get("input")) if many else typ
            if "choices" not in f.metadata:
                kw["metavar"] = f.name.upper()
            for opt in ("choices", "const", "metavar"):
                if opt in f.metadata:
                    kw[opt] = f.metadata[opt]
            if "const" in kw:
                kw["nargs"] = "?"
            if many:
                kw["nargs"] = "+"
        if f.metadata.get("positional"):
            if not required and not many:
                kw["nargs"] = "?"
            group.add_argument(f.name, **kw)
            continue
        dest = prefix + f.name
        names = [flag_name(f, prefix), *(_alias(a, prefix) for a in f.metadata.get("aliases", ()))]
        into = group
        if "exclusive" in f.metadata:
            name = f.metadata["exclusive"]
            if name not in exclusive:
                exclusive[name] = group.add_mutually_exclusive_group()
            into = exclusive[name]
        into.add_argument(*names, dest=dest, required=required, **kw)
        hidden = [n.replace(".", "-") for n in names if "." in n]
        if hidden:  # --lora-rank beside --lora.rank
            kw.update(default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            group.add_argument(*hidden, dest=dest, **kw)


def _alias(name: str, prefix: str) -> str:
    """An alias's option string: "-k" as it is, "--batch" under prefix "lora." "--lora.batch"."""
    return "--" + prefix + name[2:] if name.startswith("--") else name


def _summary(cls: type) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")


def config_from_args(args: argparse.Namespace, config_cls: type, prefix="", **overrides) -> Any:
    """The Config from parsed flags (`add_config_args`); `overrides` replace fields."""
    values = {}
    for f in dataclasses.fields(config_cls):
        sub = nested(config_cls, f)
        if sub is not None:
            values[f.name] = config_from_args(
                args, sub, prefix + f.metadata.get("prefix", f.name + ".")
            )
            continue
        value = getattr(args, prefix + f.name if not f.metadata.get("positional") else f.name)
        if isinstance(value, list):  # a tuple field's words, each a tuple
            value = tuple(v for words in value for v in words)
        values[f.name] = value
    values.update(overrides)
    check_options(config_cls, values)
    return config_cls(**values)


def parse(config_cls: type, argv: list[str], prog: str) -> Any:
    """The Config of a command from its argv (`--help` prints every flag and default), over the
    options of its `--config FILE`; `--print-config` prints the resolved options (`options_of`)
    as JSON on stdout and exits 0: that text, given back with --config, is the same Config."""
    config, _ = resolve(config_cls, argv, prog)
    return config


def resolve(config_cls: type, argv: list[str], prog: str) -> tuple[Any, dict[str, Any]]:
    """(Config, its options by option name) of `argv` (see `parse`)."""
    p = Parser(prog=prog, description=config_cls.__doc__)
    add_config_args(p, config_cls)
    add_config_file_args(p)
    args = parse_args(p, argv)
    config = config_from_args(args, config_cls)
    options = options_of(config)
    if args.print_config:
        print(json.dumps(options, indent=1))
        p.exit(0)
    return config, options


CONFIG_HELP = (
    "options from a JSON (or YAML: *.yaml, *.yml) file: keys are the flags without dashes "
    '(e.g. {"top_k": 100}; nested ones with their dot, "lora.rank"); flags given here win'
)


def add_config_file_args(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --print-config."""
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved options as JSON (a --config file) and exit",
    )


def config_path(argv: list[str]) -> str | None:
    """The `--config FILE` of `argv`, before the command's own flags are known."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)` over the options of argv's `--config FILE` (`read_config`):
    flags given on the command line win, and one flag of a mutually exclusive group (e.g. a
    selection rule) replaces the file's members of that group."""
    path = config_path(argv)
    options = read_config(path, parser) if path else {}
    for group in parser._mutually_exclusive_groups:
        dests = [a.dest for a in group._group_actions]
        given = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(dests)))
        if any(getattr(given, d) is not None for d in dests):
            options = {k: v for k, v in options.items() if k not in dests}
    for action in parser._actions:  # a required option the file gives may be left out of argv
        if action.dest in options:
            action.required = False
            if not action.option_strings:
                action.nargs = {None: "?", "+": "*"}.get(action.nargs, action.nargs)
    parser.set_defaults(**options)
    return parser.parse_args(argv)


def options_of(config, prefix: str = "") -> dict[str, Any]:
    """A Config's options by option name (a flag without dashes; nested ones with their
    prefix), tuples as lists, less `NOT_OPTIONS`: itself a valid `--config` file."""
    out: dict[str, Any] = {}
    cls = type(config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if nested(cls, f) is not None:
            out |= options_of(value, prefix + f.metadata.get("prefix", f.name + "."))
        elif f.name not in NOT_OPTIONS:
            key = f.name if f.metadata.get("positional") else prefix + f.name
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def check_options(config_cls: type, options: dict[str, Any]) -> None:
    """Options by field name (the Python API's keywords, parsed flags), checked before the Config
    is built as a flag's type checks its text: of the field's scalar type (an int for a float
    too, None where the default is None; a tuple of them for a tuple field), floats finite,
    `LEAST` bounds. Nested Configs and unknown names are the Config's to refuse."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name, value in options.items():
        if name not in fields or nested(config_cls, fields[name]) is not None:
            continue
        if value is None and fields[name].default is None:
            continue
        typ, many = item_type(config_cls, fields[name])
        kind, what = KINDS[typ]
        if many and not isinstance(value, tuple):
            raise InputError(f"option {name} must be a tuple, got {value!r}")
        for v in value if many else (value,):
            if not isinstance(v, kind) or (typ is not bool and isinstance(v, bool)):
                raise InputError(f"option {name} must be {what}, got {value!r}")
            if typ is float and not math.isfinite(v):
                raise InputError(f"option {name} must be a finite number, got {value!r}")
            if name in LEAST and v < LEAST[name]:
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
    from jaxsel.version import __version__

    data = read_config_file(path)
    text = Path(path).read_text(encoding="utf-8")
    prov = data.pop("provenance", None)
    if prov is not None:
        version = prov.get("jaxsel_version") if isinstance(prov, dict) else None
        if version != __version__:
            raise InputError(
                f"{path}: written by jaxsel {version}, this is {__version__} (delete its "
                '"provenance" to use its options anyway)'
            )
    actions: dict[str, argparse.Action] = {}
    for a in parser._actions:  # (a nested flag's hidden dashed spelling comes second)
        if a.dest not in NOT_OPTIONS:
            actions.setdefault(a.dest, a)
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
    if action.nargs == "+":  # a tuple field: a list of items (argparse's form: [tuple])
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return [tuple(_checked_item(action, action.type.item_type, v, where) for v in value)]
    want = bool if action.nargs == 0 else action.type or str
    return _checked_item(action, want, value, where)


def _checked_item(action: argparse.Action, want: type, value: Any, where: str) -> Any:
    if want is float and type(value) is int:
        value = float(value)
    if type(value) is not want:
        raise InputError(f"{where}: expected {want.__name__}, got {value!r}")
    if want is float and not math.isfinite(value):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise InputError(f"{where}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _line_of(text: str, key: str) -> int:
    """The line of `key` in a JSON or YAML text (1 if not found)."""
    pattern = re.compile(rf'^\s*("{re.escape(key)}"|{re.escape(key)})\s*:|"{re.escape(key)}"\s*:')
    return next((n for n, ln in enumerate(text.splitlines(), 1) if pattern.search(ln)), 1)
