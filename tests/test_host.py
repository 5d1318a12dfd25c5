"""The command line's compilation cache (`jaxsel.host`): where it lives, when it is off, and that
a second run loads every program the first compiled and writes the same bytes."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsel import host


def test_cache_dir_per_cpu_and_its_switches(monkeypatch, tmp_path):
    for var in ("JAXSEL_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAXSEL_CACHE", str(tmp_path / "jaxsel"))
    mine = host.compile_cache_dir()
    assert mine.parent == tmp_path / "jaxsel" / "xla" and len(mine.name) == 16
    monkeypatch.setattr(host, "cpu_signature", lambda: "aarch64 0x41 3/0xd0c isa:0123456789ab")
    assert host.compile_cache_dir().parent == mine.parent and host.compile_cache_dir() != mine
    monkeypatch.setenv("JAXSEL_COMPILE_CACHE", str(tmp_path / "mine"))
    assert host.compile_cache_dir().parent == tmp_path / "mine"
    monkeypatch.setenv("JAXSEL_COMPILE_CACHE", "off")
    assert host.compile_cache_dir() is None
    monkeypatch.setenv("JAXSEL_COMPILE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert host.compile_cache_dir() is None  # the user's own JAX setting wins
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    # once JAX is imported (a notebook, a test) its configuration is the caller's: nothing set
    import jax  # noqa: F401

    assert host.use_compile_cache() is None
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_second_run_loads_what_the_first_compiled(tmp_path):
    """`jaxsel compress` + `decompress` with a tiny GGUF model, twice on one cache: the first
    run fills it (mode 0700), the second compiles nothing new and writes the same bytes."""
    sys.path.insert(0, str(Path(__file__).parent / "models"))
    from test_llama import _tiny_llama_default_rope, _write_gguf

    model = tmp_path / "tiny.gguf"
    _write_gguf(model, _tiny_llama_default_rope())
    text = tmp_path / "in.txt"
    text.write_text("def add(a, b):\n    return a + b\n" * 4)
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "JAXSEL_COMPILE_CACHE": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # every program, however quick
    }
    jaxsel = [sys.executable, "-m", "jaxsel.cli"]

    def both(run: int) -> bytes:
        fz, out = tmp_path / f"a{run}.fz", tmp_path / f"out{run}.txt"
        model_args = ["--model", str(model)]
        compress = ["compress", *model_args, "--context", "64", "--no-fallback", str(text), str(fz)]
        for args in (compress, ["decompress", *model_args, str(fz), str(out)]):
            r = subprocess.run(jaxsel + args, env=env, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert "cache" not in r.stderr.lower(), r.stderr  # no warning from JAX's cache
        assert out.read_bytes() == text.read_bytes()
        return fz.read_bytes()

    first = both(1)
    (where,) = cache.iterdir()  # one directory: this CPU's
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    entries = sorted(p.name for p in where.iterdir())
    assert any("coding_step" in e for e in entries), entries
    assert both(2) == first
    assert sorted(p.name for p in where.iterdir()) == entries


@pytest.mark.parametrize("setting", ["off", "a-file/cache"])
def test_off_or_unmakeable_runs_without_cache(tmp_path, setting):
    """Off, or a directory that cannot be made (under a regular file): no cache, nothing set,
    nothing written, the command goes on."""
    (tmp_path / "a-file").write_text("")
    env = {**os.environ, "JAXSEL_COMPILE_CACHE": setting, "JAXSEL_CACHE": str(tmp_path / "x")}
    code = "import os; from jaxsel import host; print(host.use_compile_cache(), "
    code += "os.environ.get('JAX_COMPILATION_CACHE_DIR'))"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0 and r.stdout.split() == ["None", "None"], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
