"""What a job reads is never what it writes: every input form (globs, `hf:` and text
directories, `tfds:` data, the API's paths) against every output (`--out`, `--plot`, sidecars,
directory outputs, the workdir) by real identity, outputs against each other, and outputs that
are not regular files written in place, never replaced. Each refused case exits 2 with one line
and leaves the input's bytes and mtime as they were."""

import json
import os
import shutil
import socket
import stat
import threading
from pathlib import Path

import pytest
from test_sources import _records, _tiny_tfds_builder, _write_jsonl

import jaxsel
from jaxsel.cli import main
from jaxsel.errors import InputError

TFDS = "tfds:jaxsel_stdlib_heads:train"


@pytest.fixture(scope="module")
def tfds_built(tmp_path_factory):
    _, builder_cls = _tiny_tfds_builder()
    data_dir = tmp_path_factory.mktemp("tfds")
    builder_cls(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


@pytest.fixture()
def w(tmp_path, tfds_built):
    """A pool in every form: JSONL, a saved HF dataset, a text directory, a TFDS split."""
    import datasets

    recs = _records(12)
    _write_jsonl(tmp_path / "pool.jsonl", recs)
    _write_jsonl(tmp_path / "target.jsonl", [{"id": "t", "name": "t", "text": "def f(x): x"}])
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "hf"))
    (tmp_path / "docs").mkdir()
    for i, r in enumerate(recs):
        (tmp_path / "docs" / f"{i}.txt").write_text(r["text"])
    shutil.copytree(tfds_built, tmp_path / "tfds")
    return tmp_path


def _snapshot(path: Path) -> dict:
    """Type, mtime and bytes of a file, or of every entry below a directory (and its own mtime)."""
    entries = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
    return {
        str(p): (os.lstat(p).st_mode, os.lstat(p).st_mtime_ns, p.is_file() and p.read_bytes())
        for p in entries
    }


def _select(w, *extra):
    target = ["--target", str(w / "target.jsonl")]
    return main(["select", "--no-progress", "-k", "2", *target, *extra])


def _score(w, *extra):
    return main(["score", "--no-progress", "--target", str(w / "target.jsonl"), *extra])


def _api(**kw):
    try:
        jaxsel.select(k=2, **kw)
    except InputError as e:
        print(f"error: {e}", file=__import__("sys").stderr)
        return 2
    return 0


def _tfds_shard(w):
    return str(sorted((w / "tfds").rglob("*.array_record-*"))[0])


def _finished_workdir(w):
    pool = ["--pool", str(w / "pool.jsonl"), "--workdir", str(w / "wd")]
    assert _score(w, *pool, "--out", str(w / "s.jsonl")) == 0
    return w / "wd"


def _socket(w):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(w / "sock.jsonl"))
    return w / "sock.jsonl"


def _compare(w, out, plot):
    pool = ["--pool", str(w / "pool.jsonl"), "--target", str(w / "target.jsonl")]
    return main(["compare", "--methods", "random", *pool, "--out", out, "--plot", plot])


def _pool_in_an_output(w):
    assert (
        _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "sel"), "--out-format", "hf")
        == 0
    )
    shutil.copy(w / "pool.jsonl", w / "sel/pool.jsonl")
    return w / "sel"


def _report(w):
    (w / "X").write_text("a finished report")
    return w / "X"


# case: (make the victim, run the job, what the one line says); the job must be refused.
REFUSED = {
    "glob pool, out = a matched file": (
        lambda w: w / "pool.jsonl",
        lambda w: _select(w, "--pool", str(w / "poo*.jsonl"), "--out", str(w / "pool.jsonl")),
        "is the input",
    ),
    "glob target, out = a matched file": (
        lambda w: w / "target.jsonl",
        lambda w: main(
            ["select", "--no-progress", "-k", "2", "--pool", str(w / "pool.jsonl")]
            + ["--target", str(w / "targ*.jsonl"), "--out", str(w / "target.jsonl")]
        ),
        "is the input",
    ),
    "hf pool, out = its arrow file": (
        lambda w: w / "hf",
        lambda w: _select(
            w,
            "--pool",
            f"hf:{w / 'hf'}",
            "--out",
            str(w / "hf/data-00000-of-00001.arrow"),
            "--out-format",
            "jsonl",
        ),  # fmt: skip
        "inside the input directory",
    ),
    "hf pool, out = its state.json": (
        lambda w: w / "hf",
        lambda w: _select(
            w,
            "--pool",
            f"hf:{w / 'hf'}",
            "--out",
            str(w / "hf/state.json"),
            "--out-format",
            "jsonl",
        ),  # fmt: skip
        "inside the input directory",
    ),
    "tfds pool, out = a prepared shard under --data-dir": (
        lambda w: w / "tfds",
        lambda w: _select(
            w,
            "--pool",
            TFDS,
            "--data-dir",
            str(w / "tfds"),
            "--id-field",
            "name",
            "--out",
            _tfds_shard(w),
            "--out-format",
            "array_record",
        ),  # fmt: skip
        "inside the input directory",
    ),
    "workdir = the text-directory pool": (
        lambda w: w / "docs",
        lambda w: _score(
            w,
            "--pool",
            str(w / "docs"),
            "--workdir",
            str(w / "docs"),
            "--out",
            str(w / "s.jsonl"),
        ),  # fmt: skip
        "the input directory",
    ),
    "workdir inside the text-directory pool": (
        lambda w: w / "docs",
        lambda w: _score(
            w,
            "--pool",
            str(w / "docs"),
            "--workdir",
            str(w / "docs/wd"),
            "--out",
            str(w / "s.jsonl"),
        ),  # fmt: skip
        "the input directory",
    ),
    "api: out = pool": (
        lambda w: w / "pool.jsonl",
        lambda w: _api(
            pool=str(w / "pool.jsonl"), target=str(w / "target.jsonl"), out=str(w / "pool.jsonl")
        ),
        "is the input",
    ),  # fmt: skip
    "api: out = target": (
        lambda w: w / "target.jsonl",
        lambda w: _api(
            pool=str(w / "pool.jsonl"), target=str(w / "target.jsonl"), out=str(w / "target.jsonl")
        ),
        "is the input",
    ),  # fmt: skip
    "api: out inside an hf pool": (
        lambda w: w / "hf",
        lambda w: _api(
            pool=f"hf:{w / 'hf'}", target=str(w / "target.jsonl"), out=str(w / "hf/x.jsonl")
        ),
        "inside the input directory",
    ),  # fmt: skip
    "compare --out X --plot X": (
        _report,
        lambda w: _compare(w, str(w / "X"), str(w / "X")),
        "is also --out",
    ),
    "compare --out X --plot a hard link of X": (
        _report,
        lambda w: os.link(w / "X", w / "Y") or _compare(w, str(w / "X"), str(w / "Y")),
        "is also --out",
    ),
    "score --workdir WD --out WD/manifest.json": (
        _finished_workdir,
        lambda w: _score(
            w,
            "--pool",
            str(w / "pool.jsonl"),
            "--workdir",
            str(w / "wd"),
            "--out",
            str(w / "wd/manifest.json"),
            "--out-format",
            "jsonl",
        ),  # fmt: skip
        "keeps its own files",
    ),
    "score --workdir WD --out WD": (
        _finished_workdir,
        lambda w: _score(
            w,
            "--pool",
            str(w / "pool.jsonl"),
            "--workdir",
            str(w / "wd"),
            "--out",
            str(w / "wd"),
            "--out-format",
            "jsonl",
        ),  # fmt: skip
        "is a directory",
    ),
    "select --out-format hf --out an earlier output now holding the pool": (
        _pool_in_an_output,
        lambda w: _select(
            w, "--pool", str(w / "sel/pool.jsonl"), "--out", str(w / "sel"), "--out-format", "hf"
        ),
        "contains the input",
    ),
    "select --out-format hf --out a directory jaxsel did not write": (
        lambda w: w / "docs",
        lambda w: _select(
            w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "docs"), "--out-format", "hf"
        ),
        "did not write",
    ),
    "out = a symlink to the pool": (
        lambda w: w / "pool.jsonl",
        lambda w: (
            (w / "link.jsonl").symlink_to(w / "pool.jsonl")
            or _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "link.jsonl"))
        ),
        "is the input",
    ),
    "out = a hard link of the pool": (
        lambda w: w / "pool.jsonl",
        lambda w: (
            os.link(w / "pool.jsonl", w / "hard.jsonl")
            or _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "hard.jsonl"))
        ),
        "is the input",
    ),
    "out's sidecar = the pool": (
        lambda w: os.replace(w / "pool.jsonl", w / "s.jsonl.meta.json") or w / "s.jsonl.meta.json",
        lambda w: _select(w, "--pool", str(w / "s.jsonl.meta.json"), "--out", str(w / "s.jsonl")),
        "sidecar",
    ),
    "out inside the pool directory through a symlinked alias": (
        lambda w: w / "docs",
        lambda w: (
            (w / "alias").symlink_to(w / "docs")
            or _select(w, "--pool", str(w / "docs"), "--out", str(w / "alias/new.jsonl"))
        ),
        "inside the input directory",
    ),
    "out = a socket": (
        _socket,
        lambda w: _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "sock.jsonl")),
        "is a socket",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_output_that_is_an_input_is_refused_and_the_input_untouched(w, case, capsys):
    make_victim, run, says = REFUSED[case]
    victim = make_victim(w)
    before = _snapshot(victim)
    capsys.readouterr()
    assert run(w) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], errors
    assert _snapshot(victim) == before


@pytest.fixture()
def null_clone(w):
    """A character device like /dev/null (major 1, minor 3), made here (root only)."""
    node = w / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return node


def test_a_character_device_output_is_written_in_place(w, null_clone):
    """...as JSON Lines, as stdout is: a device's name says nothing of a format."""
    st = os.stat(null_clone)
    assert _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(null_clone)) == 0
    after = os.stat(null_clone)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (st.st_ino, st.st_rdev)
    assert not list(w.glob(".null*")) and not (w / "null.meta.json").exists()


def test_a_fifo_output_is_written_in_place(w):
    _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(w / "ref.jsonl"))
    fifo = w / "fifo.jsonl"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    assert _select(w, "--pool", str(w / "pool.jsonl"), "--out", str(fifo)) == 0
    reader.join(10)
    assert got == [(w / "ref.jsonl").read_bytes()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and not (w / "fifo.jsonl.meta.json").exists()


def test_outputs_beside_the_workdir_files_are_allowed(w):
    wd = w / "wd"
    pool = ["--pool", str(w / "pool.jsonl"), "--workdir", str(wd)]
    assert _score(w, *pool, "--out", str(wd / "scores.jsonl")) == 0
    assert (wd / "manifest.json").is_file() and (wd / "scores.jsonl").is_file()


def test_unwritable_parquet_values_and_a_runaway_manifest_are_one_line(tmp_path, capsys):
    """An integer id past int64 written as Parquet; a manifest of 100,000 '[' in a workdir."""
    pool, target = tmp_path / "pool.jsonl", tmp_path / "t.jsonl"
    pool.write_text(
        "".join(
            json.dumps({"id": 2**70 if i == 0 else i, "text": f"def f{i}(): pass"}) + "\n"
            for i in range(12)
        )
    )
    target.write_text(json.dumps({"id": 0, "text": "def g(): return 1"}) + "\n")
    common = ["--pool", str(pool), "--target", str(target), "--no-progress"]
    assert main(["select", *common, "-k", "3", "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "do not fit one parquet schema" in err[-1]
    assert not (tmp_path / "o.parquet").exists()
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "manifest.json").write_text("[" * 100_000)
    argv = ["score", *common, "--workdir", str(wd), "--out", str(tmp_path / "s.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not a readable manifest" in err[-1]
