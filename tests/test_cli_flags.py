"""Every field of every command's Config (and of every method's) is reachable from its flags:
each leaf field, nested ones included, set to a value other than its default through its flag
lands in the parsed Config."""

import dataclasses
import json

import pytest

from jaxsel import commands, flags, methods
from jaxsel.cli import main
from jaxsel.errors import InputError


def _leaves(cls, prefix=""):
    """(owner class, field, flag prefix) of every non-Config field, nested ones included."""
    for f in dataclasses.fields(cls):
        sub = flags.nested(cls, f)
        if sub is None:
            yield cls, f, prefix
        else:
            yield from _leaves(sub, prefix + f.metadata.get("prefix", f.name + "."))


def _other(cls, f):
    """A value of `f`'s type other than its default, and its words on the command line."""
    typ, many = flags.item_type(cls, f)
    default = f.default if f.default is not dataclasses.MISSING else None
    if "choices" in f.metadata:
        value = next(c for c in f.metadata["choices"] if c != default)
    elif many:
        value = default[:1] if default else ((7, 9) if typ is int else ("a", "b"))
    elif typ is bool:
        value = not default
    elif typ is int:
        value = 3 if default in (None, 2) else default + 1
    elif typ is float:
        value = 0.25 if default is None else default * 2 + 0.5
    else:
        value = "x"
    return value, [str(v) for v in value] if many else [str(value)]


def _argv(cls, f, prefix, words):
    if f.metadata.get("positional"):
        return words
    if flags.item_type(cls, f)[0] is bool:
        return [flags.flag_name(f, prefix).replace("--", "--" if words == ["True"] else "--no-")]
    return [flags.flag_name(f, prefix), *words]


def _command_line(cls, field, words):
    """`words` for `field`, and a made-up value for every other required field, in order."""
    argv = []
    for owner, f, prefix in _leaves(cls):
        if f is field:
            argv += _argv(owner, f, prefix, words)
        elif f.default is dataclasses.MISSING:
            typ = flags.item_type(owner, f)[0]
            argv += _argv(owner, f, prefix, ["5" if typ is int else "in.txt"])
    return argv


CONFIGS = [commands.load(name).Config for name in commands.COMMANDS]
CONFIGS += [methods.get(name).config_cls for name in methods.names()]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_config_field_is_reachable_from_its_flag(cls):
    p = flags.Parser(prog="jaxsel")
    flags.add_config_args(p, cls)
    helptext = p.format_help()
    for owner, f, prefix in _leaves(cls):
        assert f.metadata["help"], f"{owner.__qualname__}.{f.name}: no help"
        if not f.metadata.get("positional"):
            assert flags.flag_name(f, prefix) in helptext
        value, words = _other(owner, f)
        args = p.parse_args(_command_line(cls, f, words))
        dest = f.name if f.metadata.get("positional") else prefix + f.name
        got = getattr(args, dest)
        got = tuple(v for w in got for v in w) if isinstance(got, list) else got
        assert got == value, f"{flags.flag_name(f, prefix)} {words}: {got!r}"
        try:  # ...and its field, unless the Config refuses this made-up value
            config = flags.config_from_args(args, cls)
        except InputError:
            continue
        assert getattr(_part(config, owner), f.name) == value


def _part(config, cls):
    """The (nested) Config of class `cls` inside `config`."""
    if type(config) is cls:
        return config
    parts = [getattr(config, f.name) for f in dataclasses.fields(config)]
    found = [_part(v, cls) for v in parts if dataclasses.is_dataclass(v)]
    return next((v for v in found if v is not None), None)


def test_nested_flags_also_take_their_dashed_spelling():
    from jaxsel.commands.compress import Config
    from jaxsel.finezip import MemorizeConfig

    argv = ["in", "out", "--lora-steps", "2", "--lora-batch", "3", "--lora-targets", "wq,wk"]
    c = flags.parse(Config, [*argv, "--match-scope", "segment"], "jaxsel compress")
    assert c.finezip.lora == MemorizeConfig(steps=2, batch_size=3, targets=("wq", "wk"))
    assert c.finezip.match.scope == "segment"


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compress", "in", "out", "--context", "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: argument --context: invalid int value: 'x'\n"


def test_version(capsys):
    import jaxsel

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"jaxsel {jaxsel.__version__}\n"


@pytest.mark.parametrize("name", methods.names())
def test_every_method_field_is_reachable_from_select_and_score(name):
    """A method's flags join the command's once --method names it (two-phase parsing)."""
    from jaxsel.commands import scoring

    cls = methods.get(name).config_cls
    for cmd in ("select", "score"):
        config_cls = commands.load(cmd).Config
        for owner, f, prefix in _leaves(cls):
            value, words = _other(owner, f)
            argv = ["--method", name, *_argv(owner, f, prefix, words), "--out", "o.jsonl"]
            try:
                job = scoring.parse(cmd, config_cls, argv)
            except InputError:  # the Config refuses this made-up value (hybrid's --of x)
                continue
            assert job.method.name == name and getattr(job.method_config, f.name) == value
            assert job.options[f.name] == value  # what --print-config and a sidecar record


def test_select_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    out = capsys.readouterr().out
    assert "jaxsel select --method NAME --help shows its flags" in out
    for name in methods.names():
        assert f"\n  {name} " in out


def test_target_fields_of_their_own_and_quiet_logs(tmp_path, capsys):
    """A pool with `text` and a target with `content`/`name` in one command; other libraries'
    INFO lines only with -v."""
    import json

    from jaxsel.cli import main

    pool, target = tmp_path / "pool.jsonl", tmp_path / "t.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": i, "text": f"def f{i}(x): return x"}) + "\n" for i in range(6))
    )
    target.write_text(json.dumps({"name": "a", "content": "def g(y): return y"}) + "\n")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "text": "def g(y): return y"}) + "\n")
    outs = []
    for t, extra in (
        (target, ["--target-text-field", "content", "--target-id-field", "name"]),
        (plain, []),
    ):
        out = tmp_path / f"{t.stem}.out.jsonl"
        argv = ["select", "--method", "dsir", "--pool", str(pool), "--target", str(t), "-k", "3"]
        assert main([*argv, *extra, "--out", str(out), "--no-progress"]) == 0
        outs.append([json.loads(line)["id"] for line in out.read_text().splitlines()])
    assert outs[0] == outs[1]
    capsys.readouterr()
    assert main(["-v", "--version"]) == 0 and main(["--version"]) == 0


FLAG_COMMANDS = [n for n in commands.COMMANDS if not hasattr(commands.load(n), "parse")]


@pytest.mark.parametrize("name", FLAG_COMMANDS)
def test_print_config_fed_back_with_config_is_the_same_config(name, tmp_path):
    """For every field of every command: the options --print-config prints, given back as a
    --config file (JSON; YAML once), resolve to the same Config with no flag at all."""
    cls, prog = commands.load(name).Config, f"jaxsel {name}"
    checked = 0
    for owner, f, _ in _leaves(cls):
        value, words = _other(owner, f)
        try:
            config, options = flags.resolve(cls, _command_line(cls, f, words), prog)
        except InputError:  # the Config refuses this made-up value
            continue
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(options))
        again, options_again = flags.resolve(cls, ["--config", str(path)], prog)
        assert again == config and options_again == options, f.name
        checked += 1
    assert checked >= len(list(_leaves(cls))) // 2
    yaml = pytest.importorskip("yaml")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(options))
    assert flags.resolve(cls, ["--config", str(path)], prog)[0] == config


def test_print_config_prints_json_and_exits_0(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compress", "in.txt", "out.fz", "--context", "64", "--print-config"])
    assert e.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["input"] == "in.txt" and printed["context"] == 64
    path = tmp_path / "c.json"
    path.write_text(json.dumps(printed))
    c = flags.parse(commands.load("compress").Config, ["--config", str(path)], "jaxsel compress")
    assert (c.input, c.output, c.finezip.context) == ("in.txt", "out.fz", 64)
    # flags given on the command line win over the file's
    c = flags.parse(
        commands.load("compress").Config, ["--config", str(path), "--context", "32"], "x"
    )
    assert c.finezip.context == 32


@pytest.mark.parametrize(
    "text, line, message",
    [
        (
            '{\n "k": [5],\n "domian": "c"\n}',
            3,
            "domian: unknown option for jaxsel compare; did you mean 'domain'?",
        ),
        ('{\n "domain": 3\n}', 2, "domain: expected str, got 3"),
        ('{\n "methods": "zipfit"\n}', 2, "methods: expected a list, got 'zipfit'"),
        ('{\n "k": [5, "x"]\n}', 2, "k: expected int, got 'x'"),
        ('{\n "k": [5],\n "methods": [1]\n}', 3, "methods: expected str, got 1"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_line(tmp_path, capsys, text, line, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert main(["compare", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}:{line}: {message}\n"


def test_a_yaml_config_file_gives_a_commands_options(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text("methods: [dsir, random]\nk: [5, 10]\nlora.rank: 4\n")
    with pytest.raises(InputError, match=r"c.yaml:3: lora.rank: unknown option"):
        flags.parse(commands.load("compare").Config, ["--config", str(path)], "jaxsel compare")
    path.write_text("methods: [dsir, random]\nk: [5, 10]\n")
    c = flags.parse(commands.load("compare").Config, ["--config", str(path)], "jaxsel compare")
    assert (c.methods, c.k) == (("dsir", "random"), (5, 10))


@pytest.mark.parametrize("name", methods.names())
def test_every_methods_help_says_what_its_scores_mean(name, capsys):
    """`select --method NAME --help` shows the method's Config docstring, whose "Score:"
    paragraph gives the direction (what higher means) and the range or scale."""
    import re

    with pytest.raises(SystemExit):
        main(["select", "--method", name, "--help"])
    out = capsys.readouterr().out
    section = out[out.index(f"{name} options:") :]
    para = re.search(r"Score: (higher [^\n]*(?:\n  [^\n]+)*)", section)
    assert para, f"{name}: no 'Score: higher ...' paragraph in its help"
    text = " ".join(para.group(1).split())
    assert re.match(r"higher (= |means )", text), text
    interval = r"[\[(]−?[\d∞.a-z ]*, [^\])]*[\])]"  # [0, 1), (0, ∞), [−1, 1], ...
    assert re.search(interval, text) or "unbounded" in text, f"{name}: no range in: {text}"
