"""Outputs by name and for training jobs, and their provenance: every format is read back by its
own library equal to the JSON Lines output record for record; directory outputs appear whole or
not at all; every output has a sidecar that reruns the selection to the same bytes."""

import gzip
import hashlib
import json
import os

import numpy as np
import pytest
from test_sources import _records, _write_jsonl

import jaxsel
from jaxsel.cli import main
from jaxsel.data import read_corpus
from jaxsel.data.writers import OutSpec, write_output
from jaxsel.errors import InputError


@pytest.fixture()
def w(tmp_path, monkeypatch):
    """A pool with nested fields and a target, in the working directory."""
    monkeypatch.chdir(tmp_path)
    _write_jsonl(tmp_path / "pool.jsonl", _records(12))
    _write_jsonl(tmp_path / "target.jsonl", [{"id": "t", "text": "def f(x):\n    return x\n"}])
    return tmp_path


BASE = ["select", "--no-progress", "--pool", "pool.jsonl", "--target", "target.jsonl"]
SELECT = [*BASE, "-k", "7"]


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def _array_records(paths):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    from array_record.python.array_record_module import ArrayRecordReader

    records = []
    for p in paths:
        reader = ArrayRecordReader(str(p))
        records += [json.loads(b) for b in reader.read_all()]
        reader.close()
    source = ArrayRecordDataSource([str(p) for p in paths])  # grain's random-access reader
    assert [json.loads(source[i]) for i in range(len(source))] == records
    return records


def _parquet_dir(path):
    import pyarrow.dataset as pds

    files = sorted(str(p) for p in path.glob("part-*.parquet"))
    assert pds.dataset(str(path), format="parquet").files == files  # the sidecar is skipped
    return pds.dataset(files, format="parquet").to_table().to_pylist()


def _hf_dir(path):
    import datasets

    return datasets.load_from_disk(str(path)).to_list()


# out, extra flags, how its own library reads it back
FORMATS = {
    "jsonl.gz": ("sel.jsonl.gz", [], lambda p: [json.loads(x) for x in gzip.open(p)]),
    "jsonl.zst": ("sel.jsonl.zst", [], lambda p: list(read_corpus(p).records)),
    "parquet": (
        "sel.parquet",
        [],
        lambda p: __import__("pyarrow.parquet").parquet.read_table(p).to_pylist(),
    ),
    "array_record": ("sel.array_record", [], lambda p: _array_records([p])),
    "hf": ("sel-hf", ["--out-format", "hf"], _hf_dir),
    "hf, 3 shards": ("sel-hf3", ["--out-format", "hf", "--out-shards", "3"], _hf_dir),
    "parquet, 3 shards": ("sel-pq", ["--out-format", "parquet", "--out-shards", "3"], _parquet_dir),
    "parquet, 2 rows per file": (
        "sel-pq2",
        ["--out-format", "parquet", "--max-rows-per-file", "2"],
        _parquet_dir,
    ),
    "jsonl, 3 shards": (
        "sel-jl",
        ["--out-format", "jsonl", "--out-shards", "3"],
        lambda p: [r for f in sorted(p.glob("part-*.jsonl")) for r in _jsonl(f)],
    ),
    "array_record, 2 shards": (
        "sel-ar",
        ["--out-format", "array_record", "--out-shards", "2"],
        lambda p: _array_records(sorted(p.glob("part-*.array_record"))),
    ),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_reads_back_equal_to_the_jsonl_output(w, fmt):
    out, extra, read = FORMATS[fmt]
    assert main([*SELECT, "--out", "sel.jsonl"]) == 0
    assert main([*SELECT, "--out", out, *extra]) == 0
    assert read(w / out) == _jsonl(w / "sel.jsonl")
    meta = w / out / "_jaxsel.meta.json" if (w / out).is_dir() else w / f"{out}.meta.json"
    assert json.loads(meta.read_text())["out"] == out


def test_shards_are_named_and_cut_as_save_to_disk_cuts(w):
    import pyarrow.parquet as pq

    def rows(out, *flags):
        assert main([*SELECT, "--out", out, *flags]) == 0
        files = sorted((w / out).glob("part-*"))
        return [p.name for p in files], [pq.read_metadata(p).num_rows for p in files]

    names, sizes = rows("pq", "--out-format", "parquet", "--out-shards", "3")
    assert names == [f"part-0000{i}-of-00003.parquet" for i in range(3)] and sizes == [3, 2, 2]
    assert (w / "pq" / "_jaxsel.meta.json").is_file()
    # 7 rows of at most 2 per file; the earlier output is replaced whole
    names, sizes = rows("pq", "--out-format", "parquet", "--max-rows-per-file", "2")
    assert names == [f"part-0000{i}-of-00004.parquet" for i in range(4)] and sizes == [2, 2, 2, 1]
    # more shards than rows: one file per row, as datasets does
    names, sizes = rows("pq", "--out-format", "parquet", "--out-shards", "9")
    assert len(names) == 7 and sizes == [1] * 7


def test_hf_directory_is_what_save_to_disk_writes(w, tmp_path_factory):
    import datasets
    import pyarrow as pa

    assert main([*SELECT, "--out", "ours", "--out-format", "hf", "--out-shards", "2"]) == 0
    ref = tmp_path_factory.mktemp("ref") / "theirs"
    datasets.Dataset.from_list(_hf_dir(w / "ours")).save_to_disk(str(ref), num_shards=2)
    ours = w / "ours"
    assert (ours / "dataset_info.json").read_text() == (ref / "dataset_info.json").read_text()
    state, their_state = (json.loads((d / "state.json").read_text()) for d in (ours, ref))
    assert state.keys() == their_state.keys() and len(state["_fingerprint"]) == 16
    assert {**state, "_fingerprint": ""} == {**their_state, "_fingerprint": ""}
    for name in ("data-00000-of-00002.arrow", "data-00001-of-00002.arrow"):
        a, b = (pa.ipc.open_stream(pa.memory_map(str(d / name))).read_all() for d in (ours, ref))
        assert a.equals(b) and a.schema.metadata == b.schema.metadata
    assert list(read_corpus(f"hf:{ours}").records) == _hf_dir(ours)  # jaxsel reads it too


def test_score_writes_every_format_too(w):
    score = ["score", "--no-progress", "--pool", "pool.jsonl", "--target", "target.jsonl"]
    assert main([*score, "--out", "s.jsonl"]) == 0
    assert main([*score, "--out", "s.parquet"]) == 0
    assert main([*score, "--out", "s", "--out-format", "parquet", "--out-shards", "4"]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(w / "s.parquet").to_pylist() == _jsonl(w / "s.jsonl")
    assert _parquet_dir(w / "s") == _jsonl(w / "s.jsonl")


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--out", "sel.arrow"], "unknown output extension"),
        (["--out", "sel.json"], "unknown output extension"),
        (["--out", "sel.parquet", "--out-format", "jsonl"], "the name says parquet"),
        (["--out", "d", "--out-shards", "2"], "give --out-format"),
        (["--out", "-", "--out-format", "parquet"], "standard output"),
        (["--out", "d", "--out-format", "jsonl", "--out-shards", "0"], "must be positive"),
        (["--out", "d.jsonl", "--out-shards", "2", "--max-rows-per-file", "2"], "not both"),
    ],
)
def test_bad_outputs_are_one_line_and_nothing_is_written(w, capsys, flags, says):
    before = sorted(os.listdir(w))
    assert main([*SELECT, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert sorted(os.listdir(w)) == before


def test_a_directory_output_appears_whole_or_not_at_all(w, capsys):
    out = OutSpec(str(w / "d"), "parquet", shards=2)
    mixed = [{"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 3, "v": "text"}]
    with pytest.raises(InputError, match="file 2"):
        write_output(out, mixed)
    assert sorted(os.listdir(w)) == ["pool.jsonl", "target.jsonl"]  # no directory, no temp
    write_output(out, mixed[:2], meta={"run": 1})
    first = sorted(os.listdir(w / "d"))
    with pytest.raises(InputError):
        write_output(out, mixed, meta={"run": 2})
    assert sorted(os.listdir(w / "d")) == first  # the earlier output, whole
    assert json.loads((w / "d/_jaxsel.meta.json").read_text()) == {"run": 1}
    write_output(out, mixed[:1], meta={"run": 3})  # a jaxsel output is replaced whole
    assert len(list((w / "d").glob("part-*"))) == 1
    assert sorted(os.listdir(w)) == ["d", "pool.jsonl", "target.jsonl"]


def test_jsonl_zst_reader_streams_and_names_a_damaged_file(w):
    import zstandard

    data = (w / "pool.jsonl").read_bytes()
    (w / "p.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    assert read_corpus(w / "p.jsonl.zst").records == read_corpus(w / "pool.jsonl").records
    (w / "bad.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data)[:-40])
    with pytest.raises(InputError, match=r"bad.jsonl.zst: unreadable after line"):
        read_corpus(w / "bad.jsonl.zst")


# ------------------------------------------------------------------------------ provenance


def test_sidecar_records_how_the_output_was_made(w):
    assert main([*SELECT, "--method", "random", "--seed", "3", "--out", "sel.jsonl"]) == 0
    meta = json.loads((w / "sel.jsonl.meta.json").read_text())
    how = meta.pop("provenance")
    assert meta["method"] == "random" and meta["top_k"] == 7 and meta["seed"] == 3
    assert how["jaxsel_version"] == jaxsel.__version__ and how["method"] == "random"
    assert how["config"]["seed"] == 3 and how["seed"] == 3
    assert how["pool_sha256"] == hashlib.sha256((w / "pool.jsonl").read_bytes()).hexdigest()
    assert how["target_sha256"] == hashlib.sha256((w / "target.jsonl").read_bytes()).hexdigest()
    assert how["argv"][:2] == ["jaxsel", "select"] and "--seed" in how["argv"]
    assert how["engine"] == "local" and how["processes"] == 1 and how["time_utc"].endswith("+00:00")


@pytest.mark.parametrize(
    "method, out, extra",
    [
        ("zipfit", "sel.jsonl", ["--compressor", "gzip", "--threshold", "0.05"]),
        ("random", "sel.jsonl.zst", ["--seed", "5", "-k", "6"]),
        ("dsir", "sel-hf", ["--out-format", "hf", "--out-shards", "2", "--budget-bytes", "3000"]),
    ],
)
def test_rerun_from_the_sidecar_gives_the_same_bytes(w, method, out, extra):
    assert main([*BASE, "--method", method, *extra, "--out", out]) == 0
    is_dir = (w / out).is_dir()
    side = w / out / "_jaxsel.meta.json" if is_dir else w / f"{out}.meta.json"
    (w / "again").mkdir()
    rerun = str(w / "again" / out)
    assert main(["select", "--no-progress", "--config", str(side), "--out", rerun]) == 0
    files = sorted(p.name for p in (w / out).iterdir()) if is_dir else [""]
    for name in files:
        if name != "_jaxsel.meta.json":
            assert (w / "again" / out / name).read_bytes() == (w / out / name).read_bytes()


def test_score_sidecar_reruns_too(w):
    score = ["score", "--no-progress", "--pool", "pool.jsonl", "--target", "target.jsonl"]
    assert main([*score, "--method", "dsir", "--out", "s.jsonl"]) == 0
    assert main(["score", "--config", "s.jsonl.meta.json", "--out", "t.jsonl"]) == 0
    assert (w / "t.jsonl").read_bytes() == (w / "s.jsonl").read_bytes()


def test_print_config_is_the_sidecar_options(w, capsys):
    flags = [*SELECT, "--compressor", "gzip", "--out", "sel.jsonl"]
    assert main([*flags, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not (w / "sel.jsonl").exists()
    assert main(flags) == 0
    meta = json.loads((w / "sel.jsonl.meta.json").read_text())
    del meta["provenance"]
    assert printed == meta and printed["compressor"] == "gzip" and printed["top_k"] == 7


def test_config_file_json_or_yaml_and_flags_win(w, capsys):
    (w / "c.json").write_text(json.dumps({"method": "dsir", "top_k": 3, "pool": "pool.jsonl"}))
    (w / "c.yaml").write_text("method: dsir\nthreshold: 0.5\npool: pool.jsonl\n")
    printed = []
    for cfg in ("c.json", "c.yaml"):
        assert main(["select", "--config", cfg, "--target", "target.jsonl", "--print-config"]) == 0
        printed.append(json.loads(capsys.readouterr().out))
    json_opts, yaml_opts = printed
    assert (json_opts["method"], json_opts["top_k"], json_opts["pool"]) == ("dsir", 3, "pool.jsonl")
    assert (yaml_opts["threshold"], yaml_opts["top_k"]) == (0.5, None)
    # a rule given on the command line replaces the file's; other flags override keys
    argv = ["select", "--config", "c.json", "--threshold", "0.1", "--text-field", "x"]
    assert main([*argv, "--print-config"]) == 0
    opts = json.loads(capsys.readouterr().out)
    assert (opts["top_k"], opts["threshold"], opts["text_field"]) == (None, 0.1, "x")


@pytest.mark.parametrize(
    "name, text, says",
    [
        (
            "c.json",
            '{"method": "zipfit",\n "top_kk": 3}',
            r"c.json:2: top_kk: unknown option .* 'top_k'",
        ),
        ("c.json", '{\n "top_k": "3"}', r"c.json:2: top_k: expected int, got '3'"),
        ("c.json", '{"compressor": "gzipp"}', r"c.json:1: compressor: 'gzipp' is not one of"),
        ("c.json", '{"seed": 1}', r"c.json:1: seed: unknown option for jaxsel select"),
        ("c.json", '{"skip_empty": 1}', r"skip_empty: expected bool"),
        ("c.json", '{"text_field": null}', r"text_field: null is not allowed"),
        ("c.json", "[1, 2]", r"c.json: a config file maps option names"),
        ("c.json", '{"top_k": 3,}', r"c.json:1: not valid JSON"),
        ("c.yaml", "top_k: [1\n", r"c.yaml:2: not valid YAML"),
        ("c.json", '{"provenance": {"jaxsel_version": "0.0.1"}}', r"written by jaxsel 0.0.1"),
        ("missing.json", None, r"--config missing.json: No such file"),
    ],
)
def test_bad_config_is_one_line_naming_file_line_and_key(w, capsys, name, text, says):
    if text is not None:
        (w / name).write_text(text)
    assert main([*SELECT, "--config", name, "--out", "sel.jsonl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").search(says, err[0]), err
    assert not (w / "sel.jsonl").exists()


def test_api_select_out_follows_the_name_and_has_a_sidecar(w):
    sel = jaxsel.select("pool.jsonl", "target.jsonl", method="dsir", k=4, out="sel.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(w / "sel.parquet").to_pylist() == sel
    meta = json.loads((w / "sel.parquet.meta.json").read_text())
    assert (meta["method"], meta["top_k"], meta["pool"]) == ("dsir", 4, "pool.jsonl")
    assert (
        main(
            [
                "select",
                "--no-progress",
                "--config",
                "sel.parquet.meta.json",
                "--out",
                "again.parquet",
            ]
        )
        == 0
    )
    assert (w / "again.parquet").read_bytes() == (w / "sel.parquet").read_bytes()
    with pytest.raises(InputError, match="unknown output extension"):
        jaxsel.select("pool.jsonl", "target.jsonl", k=4, out="sel.arrow")
    np.testing.assert_equal(sorted(os.listdir(w))[:2], ["again.parquet", "again.parquet.meta.json"])
