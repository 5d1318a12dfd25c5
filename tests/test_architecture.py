"""The layering written in docs/architecture.md, held against every import of jaxsel/."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "jaxsel"


def _floors() -> dict[str, int]:
    """unit -> floor, from the table of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    floors = {}
    for n, units in re.findall(r"^\| (\d+) \| ([\w_, ]+) \|$", text, re.M):
        for unit in units.split(","):
            floors[unit.strip()] = int(n)
    return floors


def _unit(module: str) -> str:
    """The unit of a dotted module name: its sub-package, or its top-level module."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _imports() -> dict[str, set[str]]:
    """file (relative) -> the jaxsel modules it imports anywhere in it."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        mods = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "jaxsel":
                    mods |= {f"jaxsel.{a.name}" for a in node.names}
                elif node.module.startswith("jaxsel."):
                    mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods |= {a.name for a in node.names if a.name.startswith("jaxsel.")}
        out[str(f.relative_to(ROOT))] = mods
    return out


def _file_unit(path: str) -> str:
    parts = Path(path).with_suffix("").parts  # ("jaxsel", ...)
    return "__init__" if parts == ("jaxsel", "__init__") else parts[1]


def test_every_import_runs_down_the_floors():
    floors = _floors()
    units = {_file_unit(f) for f in _imports()}
    assert units <= set(floors), f"units missing from docs/architecture.md: {units - set(floors)}"
    up = [
        f"{f} -> {m}"
        for f, mods in _imports().items()
        for m in mods
        if floors[_unit(m)] > floors[_file_unit(f)]
    ]
    assert not up, "imports that run up the floors:\n" + "\n".join(up)


def test_no_two_units_import_each_other_in_a_loop():
    edges: dict[str, set[str]] = {}
    for f, mods in _imports().items():
        src = _file_unit(f)
        edges.setdefault(src, set()).update(u for u in map(_unit, mods) if u != src)
    seen, done = set(), set()

    def visit(u, path):
        assert u not in seen - done, f"import loop: {' -> '.join([*path, u])}"
        if u in done:
            return
        seen.add(u)
        for v in sorted(edges.get(u, ())):
            visit(v, [*path, u])
        done.add(u)

    for u in sorted(edges):
        visit(u, [])


def test_the_method_contract_and_the_pipeline_stay_where_they_belong():
    imports = _imports()
    assert not imports["jaxsel/methods/contract.py"]  # the contract imports nothing of jaxsel
    assert not any("ray" in m for m in imports["jaxsel/pipeline.py"])  # engines are handed in
    assert not any(m.startswith("jaxsel.methods") for m in imports["jaxsel/ray_engine.py"])


def test_a_compression_method_from_python_does_not_import_jax():
    """The pipeline imports JAX only when a job needs a device or several processes: scoring
    and selecting with zipfit from Python, in a fresh interpreter, leave JAX unimported (the
    same scores as in a process where JAX is loaded: the method never calls it)."""
    import subprocess
    import sys

    code = (
        "import sys, jaxsel\n"
        "texts = ['def add(a, b):\\n    return a + b\\n', 'The quick brown fox.', 'import os']\n"
        "s = jaxsel.score(texts, ['def mul(a, b):\\n    return a * b\\n'], method='zipfit')\n"
        "top = jaxsel.select(texts, ['def mul(a, b): return a * b'], method='zipfit', k=1)\n"
        "print('jax' in sys.modules, repr(s.values.tolist()), top[0]['text'][:3])\n"
    )
    run = lambda pre: subprocess.run(  # noqa: E731
        [sys.executable, "-c", pre + code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    alone, loaded = run(""), run("import jax\n")
    assert alone[0] == "False" and loaded[0] == "True", (alone, loaded)
    assert alone[1] == loaded[1]
