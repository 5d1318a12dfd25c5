"""Reliability (issue 11): verified resumable shards, jobs never adopting each other's shards,
outputs checked before any work and written atomically, crash leftovers, input edge cases.
Each test reproduces one defect found on the first release."""

import json
import logging
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_zipfit import make_pool, make_target

from jaxsel.cli import main
from jaxsel.data import read_jsonl, write_jsonl
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
    p = sorted(wd.glob("shard-*.npy"))[1]  # streamed shards: shard-<part>-<first row>-<tag>
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
    assert main([*argv, "--embeddings", str(emb), "--out", str(emb), "--out-format", "jsonl"]) == 2
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


# ----------------------------------------------------------------------- input edge cases


def _jsonl(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "line",
    [
        rb'{"id": 1, "text": "a\ud800b"}',  # in the text
        rb'{"id": "\udc00", "text": "ab"}',  # in the id
        rb'{"id": 1, "text": "ab", "meta": {"\ud800": ["x"]}}',  # in another field's key
    ],
)
def test_lone_surrogate_is_one_line_error_naming_file_and_line(tmp_path, line):
    p = _jsonl(tmp_path / "p.jsonl", b'{"id": 0, "text": "ok"}\n' + line + b"\n")
    with pytest.raises(InputError, match=r"p\.jsonl:2: .*lone surrogate") as e:
        read_jsonl(p)
    assert "\n" not in str(e.value)


def test_surrogate_pairs_are_fine(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", rb'{"id": 1, "text": "smile \ud83d\ude00"}' + b"\n")
    assert read_jsonl(p).texts == ("smile \U0001f600",)


def test_corrupted_gzip_stream_is_one_line_error(tmp_path):
    import gzip

    good = gzip.compress(b"".join(b'{"id": %d, "text": "doc %d"}\n' % (i, i) for i in range(500)))
    for name, data in [
        ("flip.jsonl.gz", good[:40] + bytes([good[40] ^ 0xFF]) + good[41:]),
        ("cut.jsonl.gz", good[: len(good) // 2]),
        ("nogz.jsonl.gz", b"plain text, not gzip\n"),
    ]:
        with pytest.raises(InputError, match=rf"{name}: unreadable") as e:
            read_jsonl(_jsonl(tmp_path / name, data))
        assert "\n" not in str(e.value)


def test_utf8_bom_on_line_1_is_accepted_like_utf8_sig(tmp_path):
    body = '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n'
    p = _jsonl(tmp_path / "p.jsonl", body.encode("utf-8-sig"))
    c = read_jsonl(p)
    assert c.ids == ("a", "b")
    assert [json.loads(x) for x in p.read_text("utf-8-sig").splitlines()] == list(c.records)
    # ... but only on line 1 (elsewhere it is not whitespace in JSON)
    with pytest.raises(InputError, match=r"p\.jsonl:3: malformed JSON"):
        read_jsonl(_jsonl(p, body.encode() + "\ufeff".encode() + b'{"id": "c", "text": "z"}\n'))


def test_nan_and_infinity_literals_are_not_json(tmp_path):
    for lit in ["NaN", "Infinity", "-Infinity"]:
        p = _jsonl(tmp_path / "p.jsonl", b'{"id": 1, "text": "a", "x": %s}\n' % lit.encode())
        with pytest.raises(InputError, match=r"p\.jsonl:1: malformed JSON"):
            read_jsonl(p)


@pytest.fixture()
def eval_pool(tmp_path):
    recs = [
        {"id": i, "text": f"doc {i} " * (i + 1), "domain": "py" if i % 3 else "c"} for i in range(6)
    ]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    return tmp_path


@pytest.mark.parametrize("bad", ['"high"', "true", "[1]", "{}"])
def test_eval_non_numeric_score_names_file_and_line(eval_pool, capsys, bad):
    s = eval_pool / "s.jsonl"
    lines = [f'{{"id": {i}, "score": {bad if i == 3 else i}}}' for i in range(6)]
    s.write_text("\n".join(lines) + "\n")
    assert main(["eval", str(s), "--pool", str(eval_pool / "pool.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {s}:4: score") and "\n" not in err


def test_eval_on_a_small_pool_without_k_and_null_scores(eval_pool, capsys):
    s = eval_pool / "s.jsonl"
    vals = [0.5, None, 2.0, 1.0, None, 3.0]  # null = not ranked (what `score` writes for -inf)
    s.write_text("".join(json.dumps({"id": i, "score": v}) + "\n" for i, v in enumerate(vals)))
    assert main(["eval", str(s), "--pool", str(eval_pool / "pool.jsonl"), "--domain", "py"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 1  # a tenth of 6 items, at least 1
    assert report["precision_at_k"] == 1.0  # the best score (3.0) is item 5, domain py


def test_non_finite_threshold_is_refused_before_scoring(files, capsys):
    for t in ["nan", "inf", "-inf"]:
        argv = ["select", "--pool", str(files / "pool.jsonl"), "--target", "/nonexistent"]
        assert main([*argv, f"--threshold={t}"]) == 2  # before the target is even read
    err = capsys.readouterr().err
    assert err.count("threshold must be a finite number") == 3


def test_score_output_is_strict_json_with_null_for_unranked(tmp_path, capsys):
    from jaxsel.scores import json_score, score_from_json

    assert [json_score(v) for v in [-np.inf, np.inf, 1.5]] == [None, 1.7976931348623157e308, 1.5]
    assert score_from_json(None, "x:1") == -np.inf
    # gip ranks only the greedy prefix: the rest is -inf in Scores, null in the file
    rng = np.random.default_rng(0)
    pool = [{"id": f"d{i}", "text": f"doc {i}"} for i in range(8)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    np.save(tmp_path / "E.npy", rng.standard_normal((8, 5)))
    argv = ["score", "--method", "gip", "--pool", str(tmp_path / "pool.jsonl"), "--no-progress"]
    out = tmp_path / "s.jsonl"
    argv += ["--embeddings", str(tmp_path / "E.npy"), "--greedy-k", "3"]
    assert main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert "Infinity" not in text and "NaN" not in text
    rows = [json.loads(x, parse_constant=lambda c: pytest.fail(c)) for x in text.splitlines()]
    assert sum(r["score"] is None for r in rows) == 5


def test_gip_embeddings_with_huge_or_tiny_norms_normalise_exactly():
    from jaxsel.methods.gip import check_embeddings

    rng = np.random.default_rng(1)
    e = rng.standard_normal((6, 4))
    for scale in [1e307, 1e-300, 1.0]:
        f = check_embeddings(e * scale)
        ref = (e / np.linalg.norm(e, axis=1, keepdims=True)).T
        np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-15)
    with pytest.raises(InputError, match="row 2 is zero"):
        check_embeddings(np.where(np.arange(6)[:, None] == 2, 0.0, e))


def test_ids_keep_their_json_type_in_score_select_and_parquet(tmp_path):
    from jaxsel.data import read_parquet

    pool = make_pool(6, seed=4, long_doc=False)
    ids = [7, "7", 2.5, -3, "x", 10**20]
    recs = [{**r, "id": i} for r, i in zip(pool.records, ids, strict=True)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    write_jsonl(tmp_path / "target.jsonl", make_target(2).records)
    assert read_jsonl(tmp_path / "pool.jsonl").ids == tuple(ids)
    assert _score_cli(tmp_path, "--out", str(tmp_path / "s.jsonl")) == 0
    got = [json.loads(x)["id"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert got == ids and [type(i) for i in got] == [type(i) for i in ids]
    assert _select(tmp_path, "--out", str(tmp_path / "sel.jsonl")) == 0
    sel = [json.loads(x)["id"] for x in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert all(any(s == i and type(s) is type(i) for i in ids) for s in sel)
    # Parquet: one type per column; an int column stays int, mixed int/float is refused
    int_recs = [{**r, "id": i} for r, i in zip(pool.records, [3, 1, 4, 15, 9, 2], strict=True)]
    write_jsonl(tmp_path / "ints.jsonl", int_recs)
    argv = ["select", "--pool", str(tmp_path / "ints.jsonl"), "--no-progress", "-k", "3"]
    argv += ["--target", str(tmp_path / "target.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "sel.parquet")]) == 0
    got = read_parquet(tmp_path / "sel.parquet").ids
    assert all(type(i) is int for i in got) and set(got) <= {3, 1, 4, 15, 9, 2}
    mixed = [{**r, "id": i} for r, i in zip(pool.records, [1, 2.5, 3, 4, 5, 6], strict=True)]
    write_jsonl(tmp_path / "mixed.jsonl", mixed)
    argv[2], argv[5] = str(tmp_path / "mixed.jsonl"), "6"
    assert main([*argv, "--out", str(tmp_path / "m.parquet")]) == 2
    assert not (tmp_path / "m.parquet").exists()


@pytest.mark.parametrize("bad_id", ["true", "null", "[1]", '{"a": 1}', "1e999"])
def test_ids_that_are_not_strings_or_finite_numbers_are_refused(tmp_path, bad_id):
    p = _jsonl(tmp_path / "p.jsonl", b'{"id": %s, "text": "a"}\n' % bad_id.encode())
    msg = r"p\.jsonl:1: (id .* ids must be strings or finite|malformed JSON \(number 1e999)"
    with pytest.raises(InputError, match=msg):
        read_jsonl(p)


def test_duplicate_ids_still_detected_across_number_forms(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1.0, "text": "b"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: duplicate id"):
        read_jsonl(p)
    p = _jsonl(tmp_path / "q.jsonl", b'{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n')
    assert read_jsonl(p).ids == (1, "1")


def test_corpus_built_directly_is_validated():
    from jaxsel.data import Corpus

    ok = Corpus(("a", 2), ("x", "y"), ({"id": "a"}, {"id": 2}))
    assert len(ok.subset([1, 0])) == 2
    for ids, texts, msg in [
        (("a",), ("",), "empty text"),
        (("a",), ("  \n",), "empty text"),
        (("a", "a"), ("x", "y"), "duplicate id"),
        ((None,), ("x",), "ids must be strings"),
        (("a",), (b"x",), "text is bytes"),
        (("a",), ("\ud800",), "lone surrogate"),
    ]:
        with pytest.raises(InputError, match=msg):
            Corpus(ids, texts, tuple({} for _ in ids))
    with pytest.raises(InputError, match="duplicate id"):
        ok.subset([0, 0])
    assert len(Corpus((), (), ())) == 0  # the methods refuse an empty target themselves


def test_lamdas_prefix_dir_that_is_a_file_is_one_line_error(tiny_lm, tmp_path):
    import dataclasses

    from test_lamdas import REF, SMALL

    from jaxsel.methods import lamdas as M

    (tmp_path / "p").write_text("x")
    with pytest.raises(InputError, match="prefix directory .* not a directory"):
        M.train_prefix(tiny_lm, REF, dataclasses.replace(SMALL, prefix_dir=str(tmp_path / "p")))


def test_out_inside_a_text_directory_pool_is_refused(tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.txt").write_text(f"document {i} text")
    (tmp_path / "t.jsonl").write_text('{"id": 1, "text": "document"}\n')
    argv = ["select", "--pool", str(d), "--target", str(tmp_path / "t.jsonl"), "-k", "1"]
    assert main([*argv, "--out", str(d / "sel.jsonl")]) == 2
    assert "inside the input directory" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["0.txt", "1.txt", "2.txt"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "sel.jsonl")]) == 0


def test_fuzz_corpus_replays_cleanly(tmp_path, monkeypatch):
    """Every input the JSONL fuzzer kept (tests/fuzz/corpus_jsonl) meets the reader's contract."""
    from pathlib import Path

    fuzz = Path(__file__).parent / "fuzz"
    monkeypatch.syspath_prepend(str(fuzz))
    from jsonl_contract import check_file

    files = sorted((fuzz / "corpus_jsonl").iterdir())
    assert len(files) >= 4
    accepted = 0
    for f in files:
        data = f.read_bytes()
        path = tmp_path / ("f.jsonl.gz" if data[:2] == b"\x1f\x8b" else "f.jsonl")
        path.write_bytes(data)
        accepted += check_file(path)
    assert 0 < accepted < len(files)  # both outcomes are exercised


@settings(max_examples=30, deadline=None)
@given(
    shard=st.integers(0, 3),
    pos=st.integers(0, 10**6),
    flip=st.integers(1, 255),
    how=st.sampled_from(["flip", "truncate", "append", "swap"]),
)
def test_any_damage_to_any_shard_never_changes_the_result(tmp_path_factory, shard, pos, flip, how):
    wd = tmp_path_factory.mktemp("w")
    fn = lambda s, e: np.sqrt(np.arange(s, e, dtype=np.float64)) + 0.5  # noqa: E731
    clean = run_sharded(10, fn, wd, {"job": "p"}, 3)
    p = _shard(wd, shard)
    data = bytearray(p.read_bytes())
    pos %= len(data)
    if how == "flip":
        data[pos] ^= flip
    elif how == "truncate":
        del data[pos:]
    elif how == "append":
        data += bytes([flip])
    else:  # another shard's bytes under this shard's name
        data = bytearray(_shard(wd, (shard + 1) % 4).read_bytes())
    p.write_bytes(bytes(data))
    calls = []
    out = run_sharded(10, lambda s, e: calls.append(s) or fn(s, e), wd, {"job": "p"}, 3)
    np.testing.assert_array_equal(out, clean)
    assert calls == [3 * shard]  # exactly the damaged shard is redone
