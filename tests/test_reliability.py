"""Reliability (issue 11): verified resumable shards, jobs never adopting each other's shards,
outputs checked before any work and written atomically, crash leftovers, input edge cases.
Each test reproduces one defect found on the first release."""

import logging
import os
import tempfile

import numpy as np
import pytest
from test_zipfit import make_pool, make_target

from jaxsel.cli import main
from jaxsel.data import write_jsonl
from jaxsel.errors import InputError
from jaxsel.shards import run_sharded

# --------------------------------------------------------------------------------- shards


def _fn(calls, scale=1.0):
    def fn(s, e):
        calls.append((s, e))
        return np.arange(s, e) * scale

    return fn


def _shard(wd, i):
    (p,) = sorted(wd.glob(f"shard-{i:06d}-*.npy"))
    return p


def test_bit_flip_in_a_shard_is_redone_with_a_warning(tmp_path, caplog):
    wd = tmp_path / "w"
    clean = run_sharded(10, _fn([]), wd, {"job": 1}, 3)
    p = _shard(wd, 1)
    good = p.read_bytes()
    data = bytearray(good)
    data[-3] ^= 0x10  # inside the array data, past the .npy header
    p.write_bytes(bytes(data))
    calls = []
    with caplog.at_level(logging.WARNING):
        out = run_sharded(10, _fn(calls), wd, {"job": 1}, 3)
    assert calls == [(3, 6)]
    np.testing.assert_array_equal(out, clean)
    assert str(p) in caplog.text and "redoing shard 1" in caplog.text
    assert _shard(wd, 1).read_bytes() == good  # the same content commits under the same name


@pytest.mark.parametrize("damage", ["empty", "truncated", "appended"])
def test_empty_or_truncated_shard_is_redone(tmp_path, caplog, damage):
    wd = tmp_path / "w"
    run_sharded(10, _fn([]), wd, {"job": 1}, 3)
    p = _shard(wd, 2)
    data = p.read_bytes()
    p.write_bytes({"empty": b"", "truncated": data[:-5], "appended": data + b"\0"}[damage])
    calls = []
    with caplog.at_level(logging.WARNING):
        out = run_sharded(10, _fn(calls), wd, {"job": 1}, 3)
    assert calls == [(6, 9)]
    np.testing.assert_array_equal(out, np.arange(10.0))
    assert str(p) in caplog.text


def test_another_job_never_adopts_shards_without_the_manifest(tmp_path):
    wd = tmp_path / "w"
    run_sharded(10, _fn([]), wd, {"target": "a"}, 3)
    (wd / "manifest.json").unlink()
    calls = []
    out = run_sharded(10, _fn(calls, 2.0), wd, {"target": "b"}, 3)
    assert len(calls) == 4  # every shard recomputed
    np.testing.assert_array_equal(out, np.arange(10) * 2.0)
    # and the old job's shards, now gone, are not silently mixed back either
    calls = []
    np.testing.assert_array_equal(run_sharded(10, _fn(calls, 2.0), wd, {"target": "b"}, 3), out)
    assert calls == []


def test_shards_of_the_same_job_resume_without_the_manifest(tmp_path):
    wd = tmp_path / "w"
    run_sharded(10, _fn([]), wd, {"job": 1}, 3)
    (wd / "manifest.json").unlink()
    calls = []
    run_sharded(10, _fn(calls), wd, {"job": 1}, 3)
    assert calls == []  # they verify on their own
    assert (wd / "manifest.json").is_file()


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"[1, 2"])
def test_garbage_manifest_is_one_line_error_naming_it(tmp_path, content):
    wd = tmp_path / "w"
    run_sharded(4, _fn([]), wd, {"job": 1}, 2)
    (wd / "manifest.json").write_bytes(content)
    with pytest.raises(InputError, match="manifest.json: not a readable manifest") as e:
        run_sharded(4, _fn([]), wd, {"job": 1}, 2)
    assert "\n" not in str(e.value)


def test_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
    f = tmp_path / "w"
    f.write_text("x")
    calls = []
    with pytest.raises(InputError, match="not a directory"):
        run_sharded(4, _fn(calls), f, {"job": 1}, 2)
    assert calls == []


def test_no_predictable_temp_name_is_followed(tmp_path):
    wd = tmp_path / "w"
    wd.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # the names the first release wrote through
    for name in ["manifest.json.tmp", "shard-000000.npy.tmp.npy", "shard-000000.npy.tmp"]:
        (wd / name).symlink_to(victim)
    run_sharded(4, _fn([]), wd, {"job": 1}, 2)
    assert victim.read_text() == "precious"
    assert not [p for p in wd.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def _score_cli(tmp, *extra):
    return main(
        [
            "score",
            "--pool",
            str(tmp / "pool.jsonl"),
            "--target",
            str(tmp / "target.jsonl"),
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture()
def files(tmp_path):
    write_jsonl(tmp_path / "pool.jsonl", make_pool(10, seed=4, long_doc=False).records)
    write_jsonl(tmp_path / "target.jsonl", make_target(3).records)
    write_jsonl(tmp_path / "target2.jsonl", make_target(2).records)
    return tmp_path


def test_cli_bit_flip_in_workdir_gives_the_clean_scores(files):
    wd, out = files / "w", files / "s.jsonl"
    assert _score_cli(files, "--out", str(files / "clean.jsonl")) == 0
    assert _score_cli(files, "--workdir", str(wd), "--shard-size", "4", "--out", str(out)) == 0
    p = _shard(wd, 1)
    data = bytearray(p.read_bytes())
    data[-8] ^= 0x01
    p.write_bytes(bytes(data))
    assert _score_cli(files, "--workdir", str(wd), "--shard-size", "4", "--out", str(out)) == 0
    assert out.read_bytes() == (files / "clean.jsonl").read_bytes()


def test_cli_other_target_after_manifest_deleted_is_not_the_old_job(files):
    wd = files / "w"
    a, b = files / "a.jsonl", files / "b.jsonl"
    _score_cli(files, "--workdir", str(wd), "--out", str(a))
    (wd / "manifest.json").unlink()
    t2 = ["--target", str(files / "target2.jsonl")]
    argv = ["score", "--pool", str(files / "pool.jsonl"), "--no-progress", *t2]
    assert main([*argv, "--workdir", str(wd), "--out", str(b)]) == 0
    assert main([*argv, "--out", str(files / "c.jsonl")]) == 0
    assert b.read_bytes() == (files / "c.jsonl").read_bytes()
    assert b.read_bytes() != a.read_bytes()


# ------------------------------------------------------------- outputs: checked, then atomic


def _select(tmp, *extra):
    return main(
        [
            "select",
            "--pool",
            str(tmp / "pool.jsonl"),
            "--target",
            str(tmp / "target.jsonl"),
            "--no-progress",
            "-k",
            "3",
            *extra,
        ]
    )


def _no_stray(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or "tmp" in p.name)


@pytest.mark.parametrize("which", ["pool", "target", "symlink", "hardlink"])
def test_out_that_is_an_input_is_refused_before_any_work(files, capsys, which):
    pool = files / "pool.jsonl"
    before = pool.read_bytes(), (files / "target.jsonl").read_bytes()
    out = {"pool": pool, "target": files / "target.jsonl"}.get(which, files / "alias.jsonl")
    if which == "symlink":
        out.symlink_to(pool)
    elif which == "hardlink":
        os.link(pool, out)
    for cmd in ("select", "score"):
        argv = [cmd, "--pool", str(pool), "--target", str(files / "target.jsonl"), "--no-progress"]
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "refusing to overwrite" in err and len(err.strip().splitlines()) == 1
    assert (pool.read_bytes(), (files / "target.jsonl").read_bytes()) == before


def test_embeddings_input_is_not_an_output(files, capsys):
    emb = files / "E.npy"
    np.save(emb, np.ones((10, 4)))
    argv = ["select", "--method", "gip", "--pool", str(files / "pool.jsonl"), "-k", "2"]
    assert main([*argv, "--embeddings", str(emb), "--out", str(emb)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(emb), np.ones((10, 4)))


def test_compress_and_decompress_refuse_output_equal_to_input(tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello hello hello\n")
    assert main(["compress", str(f), str(f)]) == 2
    assert main(["decompress", str(f), str(f)]) == 2
    assert capsys.readouterr().err.count("refusing to overwrite") == 2
    assert f.read_bytes() == b"hello hello hello\n"


@pytest.mark.parametrize("case", ["out_is_dir", "parent_is_file", "workdir_is_file"])
def test_bad_output_locations_fail_in_one_line_before_scoring(files, capsys, monkeypatch, case):
    from jaxsel.methods import zipfit

    def boom(*a, **k):
        raise AssertionError("scored before checking outputs")

    monkeypatch.setattr(zipfit, "score", boom)
    (files / "d").mkdir()
    (files / "f").write_text("x")
    extra = {
        "out_is_dir": ["--out", str(files / "d")],
        "parent_is_file": ["--out", str(files / "f" / "x.jsonl")],
        "workdir_is_file": ["--workdir", str(files / "f"), "--out", str(files / "o.jsonl")],
    }[case]
    listing = sorted(files.rglob("*"))
    assert _select(files, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert sorted(files.rglob("*")) == listing  # no stray files


def _unwritable_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    for d in (ro, "/sys"):  # root writes through 0o555 but not into sysfs
        try:
            fd, name = tempfile.mkstemp(dir=d)
        except OSError:
            return d
        os.close(fd)
        os.unlink(name)
    pytest.skip("no unwritable directory on this machine")


def test_unwritable_output_dir_is_refused_up_front(files, capsys, tmp_path):
    d = _unwritable_dir(tmp_path)
    assert main(["compress", str(files / "pool.jsonl"), f"{d}/x.fz"]) == 2
    assert _select(files, "--out", f"{d}/x.jsonl") == 2
    err = capsys.readouterr().err
    assert err.count("not writable") == 2 and len(err.strip().splitlines()) == 2


def test_compress_missing_parent_is_created_not_a_late_failure(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(bytes(range(256)) * 4)  # not text: no model is loaded
    out = tmp_path / "no" / "dir" / "a.fz"
    assert main(["compress", str(f), str(out)]) == 0
    assert main(["decompress", str(out), str(tmp_path / "b.bin")]) == 0
    assert (tmp_path / "b.bin").read_bytes() == f.read_bytes()


def test_outputs_never_follow_a_planted_temp_symlink(files):
    victim = files / "victim"
    victim.write_text("precious")
    out = files / "sel.jsonl"
    (files / "sel.jsonl.tmp").symlink_to(victim)  # the first release's temp name
    assert _select(files, "--out", str(out)) == 0
    assert victim.read_text() == "precious"
    assert len(out.read_text().splitlines()) == 3
    assert _no_stray(files) == ["sel.jsonl.tmp"]  # the planted link, untouched
    assert (files / "sel.jsonl.tmp").is_symlink()


def test_atomic_open_keeps_the_old_file_on_failure_and_sets_normal_mode(tmp_path):
    from jaxsel.data.outputs import atomic_open, save_npy

    p = tmp_path / "x.json"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("partial")
        raise RuntimeError("crash mid-write")
    assert p.read_text() == "old" and sorted(tmp_path.iterdir()) == [p]
    save_npy(tmp_path / "e.npy", np.arange(3.0))
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), np.arange(3.0))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "e.npy").stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------- LAMDAS checkpoint leftovers


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from test_lamdas import write_tiny_dir

    from jaxsel.models import loaders

    d = tmp_path_factory.mktemp("tiny-llama")
    write_tiny_dir(d, seed=0)
    return loaders.load_hf_dir(d)


def _flip_largest(root):
    p = max((q for q in root.rglob("*") if q.is_file()), key=lambda q: q.stat().st_size)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x04
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("damage", ["bit_flip", "empty_file", "no_checksum"])
def test_damaged_lamdas_checkpoint_is_retrained_or_refused(tiny_lm, tmp_path, caplog, damage):
    import dataclasses

    import jax
    from test_lamdas import REF, SMALL

    from jaxsel.methods import lamdas as M

    cfg = dataclasses.replace(SMALL, epochs=2, prefix_dir=str(tmp_path / "p"))
    clean, clean_losses = M.train_prefix(tiny_lm, REF, cfg)
    ck = tmp_path / "p" / "ckpt" / "2"
    if damage == "bit_flip":
        _flip_largest(ck)
    elif damage == "empty_file":
        max(ck.rglob("d/*"), key=lambda q: q.stat().st_size).write_bytes(b"")
    else:  # a crash between orbax's commit and the checksum
        (tmp_path / "p" / "ckpt-2.sha256").unlink()
    with pytest.raises(InputError, match=r"ckpt.2|ckpt-2\.sha256") as e:
        M.load_prefix(tmp_path / "p", tiny_lm)
    assert "\n" not in str(e.value)
    # epoch 1 still verifies and is what an explicit request gets
    M.load_prefix(tmp_path / "p", tiny_lm, epoch=1)
    with caplog.at_level(logging.WARNING):
        prefix, losses = M.train_prefix(tiny_lm, REF, cfg)
    assert "retraining epoch 2" in caplog.text and "ckpt" in caplog.text
    jax.tree.map(np.testing.assert_array_equal, prefix, clean)
    assert losses == clean_losses
    jax.tree.map(np.testing.assert_array_equal, M.load_prefix(tmp_path / "p", tiny_lm), clean)


@pytest.mark.parametrize("content", [b"[1]", b"\xff", b"{"])
def test_garbage_lamdas_record_is_one_line_error(tiny_lm, tmp_path, content):
    import dataclasses

    from test_lamdas import REF, SMALL

    from jaxsel.methods import lamdas as M

    (tmp_path / M.META_FILE).write_bytes(content)
    with pytest.raises(InputError, match=M.META_FILE):
        M.train_prefix(tiny_lm, REF, dataclasses.replace(SMALL, prefix_dir=str(tmp_path)))
    with pytest.raises(InputError, match=M.META_FILE):
        M.load_prefix(tmp_path, tiny_lm)
