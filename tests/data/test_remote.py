"""Inputs and outputs at URLs (`jaxsel.data.fs`), against real fsspec filesystems: memory://,
file:// and, when moto and s3fs are installed (the [dev] extra), s3:// on a local moto server.

The same bytes on local disk and at a URL give the same parts, batches, scores and output
bytes; a selection read from memory:// Parquet shards is written as sharded Parquet, as a
save_to_disk dataset and as ArrayRecord, each read back by its own library and equal to the
JSON Lines output record for record; directories of shards and Hub repository layouts are
read as one pool; every failure is one line (exit 2 from the CLI) and writes nothing."""

import gzip
import io
import json
import logging
import os
import sys
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import jaxsel
from jaxsel.cli import main
from jaxsel.data import fs as jfs
from jaxsel.data import open_source
from jaxsel.data.outputs import Output, check_job
from jaxsel.data.writers import write_records
from jaxsel.errors import InputError

fsspec = pytest.importorskip("fsspec")


def _docs(n=50):
    """Short code-like documents of varied lengths (ids unique)."""
    ops = ["+", "-", "*", "//", "%"]
    return [
        {
            "id": f"d{i:02d}",
            "text": f"def f{i}(x):\n"
            + f"    y = x {ops[i % 5]} {i}\n" * (1 + i % 4)
            + "    return y\n",
            "n": i,
        }
        for i in range(n)
    ]


TARGET = [{"id": "t0", "text": "def g(x):\n    y = x + 1\n    return y\n"}]


def _parquet_bytes(records, row_group_size=7):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf, row_group_size=row_group_size)
    return buf.getvalue()


def _jsonl_bytes(records):
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture()
def mem():
    """A fresh memory:// directory (the memory filesystem is one per process: a unique root,
    removed after the test)."""
    m = fsspec.filesystem("memory")
    root = f"/jaxsel-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}"
    if m.exists(root):
        m.rm(root, recursive=True)


def _put(url, data: bytes):
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)


def _cat(url) -> bytes:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.cat_file(path)


def _files(url) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url)
    return sorted(p[len(path.rstrip("/")) + 1 :] for p in fs.find(path))


def _pool_files(docs):
    """One pool as files of every format: part name -> bytes."""
    return {
        "a.jsonl": _jsonl_bytes(docs[:20]),
        "b.jsonl.gz": gzip.compress(_jsonl_bytes(docs[20:30]), mtime=0),
        "c.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl_bytes(docs[30:38])),
        "d.parquet": _parquet_bytes(docs[38:], row_group_size=4),
    }


def _layout(parts):
    return [(p.kind, p.start, p.stop, p.nbytes, p.first, p.files) for p in parts]


def _batches(src, batch_size=6):
    return [(b.ids, b.texts, b.records, b.keys.tolist()) for b in src.batches(batch_size)]


@pytest.mark.parametrize("where", ["memory", "file"])
def test_the_same_bytes_at_a_url_give_the_same_parts_batches_and_selection(tmp_path, mem, where):
    docs = _docs()
    local = str(tmp_path / "local")
    base = mem if where == "memory" else f"file://{tmp_path}/remote"
    files = _pool_files(docs)
    for root in (local, base):
        for name, data in files.items():
            _put_or_write(f"{root}/pool/{name}", data)
            if ".jsonl" in name:
                _put_or_write(f"{root}/jl/{name}", data)
        _put_or_write(f"{root}/target.jsonl", _jsonl_bytes(TARGET))
    names = sorted(files)
    loc = open_source([f"{local}/pool/{n}" for n in names], part_bytes=300)
    rem = open_source([f"{base}/pool/{n}" for n in names], part_bytes=300)
    assert len(loc.parts()) > 6  # byte ranges of a.jsonl and row groups of d.parquet
    assert _layout(rem.parts()) == _layout(loc.parts())
    assert _batches(rem) == _batches(loc)
    # a directory of JSON Lines shards (mixed compressions) and a glob name the same pool
    jl = [n for n in names if ".jsonl" in n]
    ref = open_source([f"{local}/jl/{n}" for n in jl], part_bytes=300)
    d_loc, d_rem = (open_source(f"{r}/jl", part_bytes=300) for r in (local, base))
    g_rem = open_source(f"{base}/jl/*.jsonl*", part_bytes=300)
    assert _layout(d_loc.parts()) == _layout(d_rem.parts()) == _layout(ref.parts())
    assert _batches(d_rem) == _batches(g_rem) == _batches(ref)
    # a compression method's scores and the selection's bytes are identical
    a = jaxsel.select(
        f"{local}/pool/*", f"{local}/target.jsonl", "zipfit", k=9, out=f"{local}/a.jsonl"
    )
    b = jaxsel.select(
        f"{base}/pool/*", f"{base}/target.jsonl", "zipfit", k=9, out=f"{base}/o/b.jsonl"
    )
    assert a == b and len(a) == 9
    assert _cat(f"{base}/o/b.jsonl") == (tmp_path / "local" / "a.jsonl").read_bytes()
    s_loc = jaxsel.score(f"{local}/pool/*", f"{local}/target.jsonl", "zipfit").values
    s_rem = jaxsel.score(f"{base}/pool/*", f"{base}/target.jsonl", "zipfit").values
    np.testing.assert_array_equal(s_rem, s_loc)


def test_a_skipped_record_logs_its_location_and_reading_goes_on(tmp_path, mem, caplog):
    """Printing a line's location opens the file a second time while it is read."""
    docs = [{"id": f"d{i}", "text": "x" * 20} for i in range(30)]
    docs[12]["text"] = "   "
    for root in (str(tmp_path), mem):
        _put_or_write(f"{root}/p.jsonl", _jsonl_bytes(docs))
    with caplog.at_level(logging.WARNING):
        loc = open_source(f"{tmp_path}/p.jsonl", on_empty="skip", part_bytes=200)
        rem = open_source(f"{mem}/p.jsonl", on_empty="skip", part_bytes=200)
        assert _batches(rem) == _batches(loc)
    assert sum(len(b[0]) for b in _batches(rem)) == 29
    assert any(f"{mem}/p.jsonl:13" in r.getMessage() for r in caplog.records)


def _read_array_record(path):
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        return [json.loads(r) for r in reader.read_all()]
    finally:
        reader.close()


def test_a_selection_from_memory_parquet_shards_in_every_output_format(tmp_path, mem):
    """The issue's case: memory:// Parquet shards -> select -> sharded Parquet, save_to_disk,
    ArrayRecord (at memory:// URLs), each read by its own library, equal to the JSONL output."""
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("array_record")
    import pyarrow.dataset as pds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    docs = _docs()
    for s in range(3):
        _put(f"{mem}/pool/part-{s:05d}.parquet", _parquet_bytes(docs[s::3]))
    _put(f"{mem}/pool/_SUCCESS", b"")  # a writer's marker: skipped
    _put(f"{mem}/target.jsonl", _jsonl_bytes(TARGET))
    pool, target = f"{mem}/pool", f"{mem}/target.jsonl"
    common = {"method": "zipfit", "k": 17}
    ref = jaxsel.select(pool, target, out=tmp_path / "sel.jsonl", **common)
    expected = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert ref == expected and len(expected) == 17
    jaxsel.select(pool, target, out=f"{mem}/out/pq", out_format="parquet", out_shards=3, **common)
    jaxsel.select(pool, target, out=f"{mem}/out/hf", out_format="hf", out_shards=2, **common)
    jaxsel.select(pool, target, out=f"{mem}/out/sel.array_record", **common)

    m = fsspec.filesystem("memory")
    root = mem[len("memory://") :]
    ds = pds.dataset(f"{root}/out/pq", format="parquet", filesystem=PyFileSystem(FSSpecHandler(m)))
    assert [os.path.basename(f) for f in ds.files] == [
        f"part-{i:05d}-of-00003.parquet" for i in range(3)
    ]
    assert ds.to_table().to_pylist() == expected
    assert datasets.load_from_disk(f"{mem}/out/hf").to_list() == expected
    m.get(f"{root}/out/sel.array_record", str(tmp_path / "sel.array_record"))
    assert _read_array_record(tmp_path / "sel.array_record") == expected

    # the CLI writes the same bytes as the API
    for out, extra in (
        ("pq", ["--out-format", "parquet", "--out-shards", "3"]),
        ("hf", ["--out-format", "hf", "--out-shards", "2"]),
        ("sel.array_record", []),
    ):
        args = ["select", "--no-progress", "--method", "zipfit", "-k", "17", "--pool", pool]
        assert main([*args, "--target", target, "--out", f"{mem}/cli/{out}", *extra]) == 0
    for name in _files(f"{mem}/out"):
        if not name.endswith("meta.json"):  # the sidecars name the command line
            assert _cat(f"{mem}/cli/{name}") == _cat(f"{mem}/out/{name}"), name
    assert _files(f"{mem}/cli") == _files(f"{mem}/out")


def test_a_directory_of_shards_or_of_text_files_and_a_mixed_one(tmp_path, mem):
    docs = _docs(12)
    for root in (str(tmp_path / "pq"), f"{mem}/pq"):
        for s in (1, 0):  # written out of order: read sorted
            _put_or_write(f"{root}/part-{s}.parquet", _parquet_bytes(docs[s * 6 : s * 6 + 6]))
        _put_or_write(f"{root}/.hidden.crc", b"x")
        assert open_source(root).to_corpus().ids == tuple(d["id"] for d in docs)
        _put_or_write(f"{root}/notes.txt", b"hello")
        with pytest.raises(
            InputError, match=r"mixed with other files \(notes.txt\).*glob.*\*\.parquet"
        ):
            open_source(root).parts()
    for root in (str(tmp_path / "txt"), f"{mem}/txt"):
        _put_or_write(f"{root}/b/x.txt", b"second")
        _put_or_write(f"{root}/a.py", b"first")
        c = open_source(root).to_corpus()
        assert c.ids == ("a.py", "b/x.txt") and c.texts == ("first", "second")


def _put_or_write(spec, data):
    if jfs.is_url(spec):
        _put(spec, data)
    else:
        os.makedirs(os.path.dirname(spec), exist_ok=True)
        with open(spec, "wb") as f:
            f.write(data)


@pytest.mark.parametrize("nested", [False, True])
def test_a_hub_repository_layout_by_split(tmp_path, mem, nested):
    docs = _docs(15)
    shards = {"train": [docs[:5], docs[5:11]], "test": [docs[11:]]}
    for root in (str(tmp_path / "repo"), f"{mem}/repo"):
        _put_or_write(f"{root}/README.md", b"---\nlicense: mit\n---\n")
        for split, parts in shards.items():
            for i, recs in enumerate(parts):
                name = f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
                if nested:
                    name = f"{split}/{i:05d}.parquet"
                elif len(parts) == 1:
                    name = f"{split}.parquet"  # one shard, no numbers
                _put_or_write(f"{root}/data/{name}", _parquet_bytes(recs, 4))
        with pytest.raises(
            InputError, match=r"several splits; choose one: hf:.*repo:test, hf:.*:train$"
        ):
            open_source(f"hf:{root}").parts()
        train = open_source(f"hf:{root}:train").to_corpus()
        assert train.ids == tuple(d["id"] for d in docs[:11])
        assert open_source(f"hf:{root}:test").to_corpus().ids == tuple(d["id"] for d in docs[11:])
        with pytest.raises(InputError, match=r"no split 'dev'"):
            open_source(f"hf:{root}:dev").parts()


def test_a_saved_dataset_dict_split_and_a_saved_dataset_at_a_url(tmp_path, mem):
    datasets = pytest.importorskip("datasets")
    docs = _docs(10)
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(docs[:7]),
            "test": datasets.Dataset.from_list(docs[7:]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert open_source(f"hf:{tmp_path / 'dd'}:test").to_corpus().ids == ("d07", "d08", "d09")
    with pytest.raises(InputError, match=r"a DatasetDict; choose a split"):
        open_source(f"hf:{tmp_path / 'dd'}").parts()
    # jaxsel's own save_to_disk writer at a URL, read back through hf:URL
    write_records(f"{mem}/hf.jsonl", docs)  # written, then re-written as an hf directory
    from jaxsel.data.writers import out_spec, write_output

    write_output(out_spec(f"{mem}/saved", "hf", shards=3), docs)
    c = open_source(f"hf:{mem}/saved").to_corpus()
    assert c.ids == tuple(d["id"] for d in docs) and list(c.records) == docs


def test_hub_urls_route_through_huggingface_hub_and_fail_in_one_line(monkeypatch, capsys):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: the Hub is unreachable
    for spec in ("hf://datasets/org/name", "hf:hf://datasets/org/name:train"):
        with pytest.raises(InputError, match=r"^hf://datasets/org/name\S*: cannot reach hf://"):
            open_source(spec).parts()
    with pytest.raises(InputError, match=r"cannot reach hf://"):
        open_source("hf://datasets/org/name/data/train-00000-of-00001.parquet").parts()
    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    monkeypatch.delitem(registry._registry, "hf", raising=False)
    with pytest.raises(InputError, match=r"hf:// needs a filesystem package .*jaxsel\[remote\]"):
        open_source("hf://datasets/org/name").parts()


def test_missing_packages_unknown_protocols_and_missing_files_are_one_line(
    monkeypatch, mem, tmp_path, capsys
):
    registry = sys.modules["fsspec.registry"]
    monkeypatch.setitem(
        registry.known_implementations,
        "jxmissing",
        {"class": "jaxsel_no_such_pkg.FS", "err": "Install jaxsel-no-such-pkg to access it"},
    )
    with pytest.raises(
        InputError, match=r"^jxmissing://b/x.parquet: jxmissing:// needs a .*\[remote\]'$"
    ):
        open_source("jxmissing://b/x.parquet").parts()
    with pytest.raises(InputError, match=r"^nope://b/x.jsonl: unknown filesystem protocol 'nope'$"):
        open_source("nope://b/x.jsonl").parts()
    with pytest.raises(InputError, match=r"^memory://\S+/absent.parquet: no such file$"):
        open_source(f"{mem}/absent.parquet").parts()
    with pytest.raises(InputError, match=r": no file matches$"):
        open_source(f"{mem}/*.parquet")
    _put(f"{mem}/t.jsonl", _jsonl_bytes(TARGET))
    args = [
        "select",
        "--no-progress",
        "--method",
        "random",
        "-k",
        "1",
        "--target",
        f"{mem}/t.jsonl",
    ]
    cases = [
        (
            ["--pool", "jxmissing://b/x.parquet", "--out", str(tmp_path / "o.jsonl")],
            "jaxsel[remote]",
        ),
        (
            [
                "--pool",
                f"{mem}/t.jsonl",
                "--out",
                str(tmp_path / "o.jsonl"),
                "--workdir",
                f"{mem}/t.jsonl",
            ],
            "t.jsonl: exists and is not a directory",
        ),
    ]
    if "gcsfs" not in sys.modules and not _installed("gcsfs"):
        cases.append((["--pool", "gs://b/x.parquet", "--out", str(tmp_path / "o.jsonl")], "gcsfs"))
    for extra, words in cases:
        capsys.readouterr()
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert "gs:/b" not in err
    assert not (tmp_path / "o.jsonl").exists()


def _installed(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_url_outputs_are_checked_against_inputs_and_each_other(tmp_path, mem):
    _put(f"{mem}/pool/a.jsonl", _jsonl_bytes(_docs(4)))
    pool = f"{mem}/pool"
    _put(f"{mem}/prev/_jaxsel.meta.json", b"{}")  # a directory output of an earlier job ...
    _put(f"{mem}/prev/x.jsonl", _jsonl_bytes(_docs(1)))  # ... holding an input of this one
    ins = open_source([pool, f"{mem}/prev/x.jsonl"]).inputs()
    assert ins == [pool, f"{mem}/prev/x.jsonl"]
    refused = [
        ([Output("--out", f"{mem}/pool/a.jsonl")], r"is the input|inside the input directory"),
        ([Output("--out", f"{mem}/pool/new.jsonl")], r"is inside the input directory"),
        ([Output("--out", f"{mem}/prev", True)], r"contains the input"),
        ([Output("--out", f"{mem}/pool/a.jsonl/x", True)], r"inside the input directory"),
        (
            [
                Output("--out", f"{mem}/o.jsonl"),
                Output("--scores", f"{mem.replace('//', '///')}//o.jsonl/"),
            ],
            r"is also --out",
        ),
        (
            [Output("--out", f"{mem}/d", True), Output("--scores", f"{mem}/d/x.jsonl")],
            r"inside \(or contains\) --out",
        ),
        ([Output("--out", pool)], r"is a directory"),
    ]
    for outs, words in refused:
        with pytest.raises(InputError, match=words):
            check_job(outs, ins)
    # file:// is its local path: the same file under two spellings
    (tmp_path / "in.jsonl").write_bytes(_jsonl_bytes(_docs(2)))
    with pytest.raises(InputError, match=r"is the input"):
        check_job([Output("--out", f"file://{tmp_path}/in.jsonl")], [str(tmp_path / "in.jsonl")])
    with pytest.raises(InputError, match=r"is the input"):
        check_job([Output("--out", str(tmp_path / "in.jsonl"))], [f"file://{tmp_path}/in.jsonl"])
    # a remote directory jaxsel did not write is never replaced
    _put(f"{mem}/theirs/data.bin", b"keep")
    with pytest.raises(InputError, match=r"did not write"):
        check_job([Output("--out", f"{mem}/theirs", True)], ins)
    check_job([Output("--out", f"{mem}/fresh.jsonl"), Output("--out2", f"{mem}/fresh", True)], ins)
    left = ["pool/a.jsonl", "prev/_jaxsel.meta.json", "prev/x.jsonl", "theirs/data.bin"]
    assert _files(mem) == left  # the probes left nothing


def test_remote_writes_are_whole_or_absent(mem):
    recs = [{"id": 1, "text": "a", "v": 1}, {"id": 2, "text": "b", "v": "two"}]
    with pytest.raises(InputError, match=r"do not fit one parquet schema"):
        write_records(f"{mem}/o.parquet", recs)
    from jaxsel.data.writers import out_spec, write_output

    with pytest.raises(InputError, match=r"do not fit one parquet schema"):
        write_output(out_spec(f"{mem}/dir", "parquet", max_rows=1), recs)
    assert not fsspec.filesystem("memory").exists(mem[len("memory://") :])
    good = [{"id": i, "text": str(i)} for i in range(5)]
    write_output(out_spec(f"{mem}/dir", "parquet", shards=3), good, meta={"run": 1})
    write_output(out_spec(f"{mem}/dir", "parquet", shards=2), good, meta={"run": 2})
    assert _files(f"{mem}/dir") == [
        "_jaxsel.meta.json",
        "part-00000-of-00002.parquet",
        "part-00001-of-00002.parquet",
    ]
    assert json.loads(_cat(f"{mem}/dir/_jaxsel.meta.json")) == {"run": 2}
    assert _files(mem) == [f"dir/{n}" for n in _files(f"{mem}/dir")]  # no temporary names


# --------------------------------------------------------------- a workdir at a URL


def _zipfit_argv(pool, target, workdir, out):
    return [
        "score",
        "--no-progress",
        "--method",
        "zipfit",
        "--shard-size",
        "8",
        "--pool",
        pool,
        "--target",
        target,
        "--workdir",
        workdir,
        "--out",
        out,
    ]


def _tree(url) -> dict[str, bytes]:
    """Relative name -> bytes of every file below a URL or a local directory."""
    if not jfs.is_url(url):
        return {n: open(os.path.join(url, n), "rb").read() for n, _ in jfs.files(url)}
    return {n: _cat(f"{url}/{n}") for n in _files(url)}


def _read_back(caplog) -> str:
    return " ".join(
        r.getMessage() for r in caplog.records if "read back from the workdir" in r.getMessage()
    )


def _resumes_only_the_damaged_shards(tmp_path, wd, caplog, capsys):
    """A zipfit job with a local workdir and with the workdir `wd` (a URL): the same files,
    byte for byte, and the same output; then one shard deleted and one corrupted at `wd`: the
    rerun computes those two only, and writes the same bytes."""
    docs = _docs()
    (tmp_path / "pool.jsonl").write_bytes(_jsonl_bytes(docs))
    (tmp_path / "target.jsonl").write_bytes(_jsonl_bytes(TARGET))
    pool, target = str(tmp_path / "pool.jsonl"), str(tmp_path / "target.jsonl")
    assert main(_zipfit_argv(pool, target, str(tmp_path / "wd"), str(tmp_path / "a.jsonl"))) == 0
    assert main(_zipfit_argv(pool, target, wd, str(tmp_path / "b.jsonl"))) == 0, capsys.readouterr()
    local = _tree(str(tmp_path / "wd"))
    shards = sorted(n for n in local if n.endswith(".npy"))
    assert len(shards) == 7 and _tree(wd) == local  # 50 documents, 8 a batch
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    fs, root = fsspec.core.url_to_fs(wd)
    fs.rm(f"{root}/{shards[1]}")
    fs.pipe_file(f"{root}/{shards[4]}", local[shards[4]][:-4] + b"\xff" * 4)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(_zipfit_argv(pool, target, wd, str(tmp_path / "c.jsonl"))) == 0
    assert "5 of 7 batches read back" in _read_back(caplog)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert _tree(wd) == local  # recomputed the same bytes; nothing temporary or damaged left
    return pool, target


def test_a_memory_workdir_keeps_verified_atomic_shards(tmp_path, mem, caplog, capsys):
    wd = f"{mem}/wd"
    pool, target = _resumes_only_the_damaged_shards(tmp_path, wd, caplog, capsys)
    # the Python API on the same workdir: everything read back, the same scores
    caplog.clear()
    with caplog.at_level(logging.INFO):
        got = jaxsel.score(pool, target, "zipfit", workdir=wd, shard_size=8)
    assert "7 of 7 batches read back" in _read_back(caplog)
    want = jaxsel.score(pool, target, "zipfit", shard_size=8)
    np.testing.assert_array_equal(got.values, want.values)
    # outputs at the workdir's own names are refused, beside them allowed; a workdir that is
    # (inside) a remote input directory is refused
    _put(f"{mem}/in/pool.jsonl", _jsonl_bytes(_docs()))
    for out, words in [
        (f"{wd}/manifest.json", "keeps its own files"),
        (f"{wd}/shard-x.jsonl", "keeps its own files"),
        (f"{wd}/sub/s.jsonl", "keeps its own files"),
        (wd, "is a directory"),  # as for a local workdir
    ]:
        capsys.readouterr()
        argv = _zipfit_argv(pool, target, f"memory://{mem[9:]}//wd/", out)  # respelled
        assert main([*argv, "--out-format", "jsonl"]) == 2, out
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    for workdir in (f"{mem}/in", f"{mem}/in/wd"):
        argv = _zipfit_argv(f"{mem}/in", target, workdir, str(tmp_path / "d.jsonl"))
        assert main(argv) == 2
        assert "is (inside) the input directory" in capsys.readouterr().err
    assert main(_zipfit_argv(pool, target, wd, f"{wd}/scores.jsonl")) == 0
    assert _cat(f"{wd}/scores.jsonl") == (tmp_path / "a.jsonl").read_bytes()
    assert not (tmp_path / "d.jsonl").exists()


def test_adapter_checkpoints_stay_local(mem):
    """LAMDAS's prefix checkpoints (`jaxsel.lm.store`) are written locally only: a prefix
    directory inside a remote workdir is refused in one line, nothing is created locally."""
    pytest.importorskip("orbax.checkpoint")
    from jaxsel.lm.store import AdapterStore

    with pytest.raises(InputError, match="remote location given as a path.*written locally"):
        AdapterStore(f"{mem}/wd/prefix", "fp", {"a": 1}, "lamdas.json", "prefix")
    assert not os.path.exists("memory:")


# --------------------------------------------------------------- a local S3 server (moto)


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("s3fs", reason="s3fs (the [dev] extra) is not installed")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_server, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"jaxsel-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem().mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_on_a_local_moto_server(tmp_path, s3, monkeypatch, capsys):
    docs = _docs()
    for s in range(2):
        data = _parquet_bytes(docs[s::2])
        _put(f"{s3}/pool/part-{s}.parquet", data)
        _put_or_write(str(tmp_path / "pool" / f"part-{s}.parquet"), data)
    _put(f"{s3}/target.jsonl", _jsonl_bytes(TARGET))
    (tmp_path / "target.jsonl").write_bytes(_jsonl_bytes(TARGET))
    kw = {"method": "zipfit", "k": 11}
    loc = jaxsel.select(
        str(tmp_path / "pool"), str(tmp_path / "target.jsonl"), out=tmp_path / "a.jsonl", **kw
    )
    rem = jaxsel.select(f"{s3}/pool", f"{s3}/target.jsonl", out=f"{s3}/out/a.jsonl", **kw)
    assert rem == loc
    assert _cat(f"{s3}/out/a.jsonl") == (tmp_path / "a.jsonl").read_bytes()
    jaxsel.select(
        f"{s3}/pool",
        f"{s3}/target.jsonl",
        out=f"{s3}/out/pq",
        out_format="parquet",
        out_shards=2,
        **kw,
    )
    assert _files(f"{s3}/out/pq") == [
        "_jaxsel.meta.json",
        "part-00000-of-00002.parquet",
        "part-00001-of-00002.parquet",
    ]
    got = [
        r
        for n in ("part-00000-of-00002.parquet", "part-00001-of-00002.parquet")
        for r in pq.read_table(io.BytesIO(_cat(f"{s3}/out/pq/{n}"))).to_pylist()
    ]
    assert got == loc
    # an output inside the input prefix is refused; missing credentials are one line
    args = [
        "select",
        "--no-progress",
        "--method",
        "random",
        "-k",
        "1",
        "--target",
        f"{s3}/target.jsonl",
    ]
    assert main([*args, "--pool", f"{s3}/pool", "--out", f"{s3}/pool/x.jsonl"]) == 2
    assert "inside the input directory" in capsys.readouterr().err
    import s3fs

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    assert main([*args, "--pool", f"{s3}/pool", "--out", str(tmp_path / "b.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no credentials found for s3://" in err, err
    assert "AWS_ACCESS_KEY_ID" in err and "Traceback" not in err
    assert not (tmp_path / "b.jsonl").exists()


def test_an_s3_workdir_keeps_verified_atomic_shards(tmp_path, s3, caplog, capsys):
    pool, target = _resumes_only_the_damaged_shards(tmp_path, f"{s3}/wd", caplog, capsys)
    got = jaxsel.score(pool, target, "zipfit", workdir=f"{s3}/wd", shard_size=8)
    want = jaxsel.score(pool, target, "zipfit", shard_size=8)
    np.testing.assert_array_equal(got.values, want.values)
