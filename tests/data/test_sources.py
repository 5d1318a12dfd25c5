"""Streaming readers: every reader's concatenated batches equal the in-memory read, record for
record; parts cover the input exactly once per process; memory holds one batch; bad input is one
line naming the file and the place in it."""

import functools
import gzip
import json
import sysconfig
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from jaxsel.data import read_corpus, sources
from jaxsel.data.sources import open_source, parts_for_process
from jaxsel.errors import InputError


def _real_texts(n: int, max_bytes: int = 3000) -> list[str]:
    """Heads of CPython standard-library modules: real text of varied length."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(stdlib.glob("*.py")):
        text = p.read_text(encoding="utf-8", errors="replace")[: 200 + (len(out) * 97) % max_bytes]
        if text.strip():
            out.append(text)
        if len(out) == n:
            return out
    raise AssertionError("not enough stdlib files")


def _records(n: int) -> list[dict]:
    return [
        {"id": f"doc-{i}", "text": t, "n": i, "meta": {"odd": i % 2 == 1, "tags": ["a"] * (i % 3)}}
        for i, t in enumerate(_real_texts(n))
    ]


def _concat(src, batch_size, parts=None):
    ids, texts, recs, keys = [], [], [], []
    for b in src.batches(batch_size, parts):
        assert len(b) <= batch_size and len({int(k) for k in b.keys[:, 0]}) == 1
        ids += b.ids
        texts += b.texts
        recs += b.records
        keys.append(b.keys)
    return ids, texts, recs, np.concatenate(keys)


def _assert_same_as_corpus(src, corpus, batch_size):
    ids, texts, recs, keys = _concat(src, batch_size)
    assert ids == list(corpus.ids)
    assert texts == list(corpus.texts)
    assert recs == list(corpus.records)
    # keys are strictly increasing in lexicographic order: pool order
    assert (np.diff(keys[:, 0]) >= 0).all()
    same_part = np.diff(keys[:, 0]) == 0
    assert (np.diff(keys[:, 1])[same_part] == 1).all()


def _write_jsonl(path, recs, blank_every=0):
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(recs):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            if blank_every and i % blank_every == 0:
                f.write("\n")
    return path


@pytest.mark.parametrize("id_field", ["id", None])
def test_jsonl_byte_ranges_equal_in_memory(tmp_path, id_field):
    p = _write_jsonl(tmp_path / "pool.jsonl", _records(60), blank_every=7)
    src = open_source(p, id_field=id_field, part_bytes=4000)
    parts = src.parts()
    assert len(parts) > 10
    size = p.stat().st_size
    data = p.read_bytes()
    # ranges tile the file and every cut is a line start
    assert parts[0].start == 0 and parts[-1].stop == size
    for a, b in zip(parts[:-1], parts[1:], strict=True):
        assert a.stop == b.start and data[b.start - 1 : b.start] == b"\n"
    _assert_same_as_corpus(src, read_corpus(p, id_field=id_field), batch_size=3)


def test_jsonl_gz_equals_in_memory(tmp_path):
    p = tmp_path / "pool.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        for r in _records(25):
            f.write(json.dumps(r) + "\n\n")
    src = open_source(p)
    assert len(src.parts()) == 1
    _assert_same_as_corpus(src, read_corpus(p), batch_size=4)


@pytest.mark.parametrize("id_field", ["id", None])
def test_parquet_row_groups_equal_in_memory(tmp_path, id_field):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(_records(50)), p, row_group_size=8)
    src = open_source(p, id_field=id_field)
    assert [(q.start, q.first) for q in src.parts()] == [(g, 8 * g) for g in range(7)]
    _assert_same_as_corpus(src, read_corpus(p, id_field=id_field), batch_size=5)


def test_text_dir_equals_in_memory(tmp_path):
    root = tmp_path / "docs"
    for i, t in enumerate(_real_texts(17)):
        d = root / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:02d}.py").write_text(t, encoding="utf-8")
    src = open_source(root, files_per_part=4)
    assert len(src.parts()) == 5
    _assert_same_as_corpus(src, read_corpus(root), batch_size=3)


def test_list_and_glob_read_in_order(tmp_path):
    recs = _records(20)
    a = _write_jsonl(tmp_path / "a.jsonl", recs[:12])
    b = _write_jsonl(tmp_path / "b.jsonl", recs[12:])
    ids, texts, _, keys = _concat(open_source(str(tmp_path / "*.jsonl"), part_bytes=5000), 4)
    assert ids == [r["id"] for r in recs] and texts == [r["text"] for r in recs]
    assert _concat(open_source([a, b]), 4)[0] == ids
    assert (np.diff(keys[:, 0]) >= 0).all()


def test_hf_saved_dataset_equals_load_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets (the [dev] extra) is not installed")
    recs = _records(40)
    ds = datasets.Dataset.from_list(recs)
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    src = open_source(f"hf:{tmp_path / 'hf'}")
    assert len(src.parts()) == 3
    ids, texts, got, _ = _concat(src, 6)
    ref = list(datasets.load_from_disk(str(tmp_path / "hf")))  # the library's own reader
    assert got == ref and ids == [r["id"] for r in recs] and texts == [r["text"] for r in recs]
    ids, _, _, _ = _concat(open_source(f"hf:{tmp_path / 'hf'}", id_field=None), 7)
    assert ids == [str(i) for i in range(40)]


@functools.cache  # TFDS registers a builder class by name: define it once per process
def _tiny_tfds_builder():
    tfds = pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra is not installed")

    class JaxselStdlibHeads(tfds.core.GeneratorBasedBuilder):
        """Heads of CPython modules as a TFDS text dataset (built by the test, no network)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"name": tfds.features.Text(), "text": tfds.features.Text(), "n": np.int64}
                ),
            )

        def _split_generators(self, dl_manager):
            texts = _real_texts(45)
            return {
                "train": self._generate_examples(texts[:37]),
                "test": self._generate_examples(texts[37:]),
            }

        def _generate_examples(self, texts):
            for i, t in enumerate(texts):
                yield f"m{i}", {"name": f"m{i}", "text": t, "n": len(t)}

    return tfds, JaxselStdlibHeads


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    tfds, builder_cls = _tiny_tfds_builder()
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return data_dir


def test_tfds_equals_data_source(tfds_dir):
    import tensorflow_datasets as tfds

    spec = "tfds:jaxsel_stdlib_heads:train"
    src = open_source(spec, id_field="name", data_dir=tfds_dir)
    ids, texts, recs, _ = _concat(src, 5)
    ref = tfds.data_source("jaxsel_stdlib_heads", split="train", data_dir=str(tfds_dir))
    want = [
        {k: (v.decode() if isinstance(v, bytes) else int(v)) for k, v in r.items()} for r in ref
    ]
    assert len(want) == 37 and recs == want
    assert ids == [r["name"] for r in want] and texts == [r["text"] for r in want]
    assert sorted(texts) == sorted(_real_texts(45)[:37])
    # read_corpus goes through the same reader for tfds: specs
    c = read_corpus(spec, id_field=None, data_dir=tfds_dir)
    assert c.ids == tuple(str(i) for i in range(37)) and list(c.texts) == texts


def test_tfds_not_prepared_names_the_directory(tmp_path, tfds_dir):
    with pytest.raises(InputError, match=rf"tfds:jaxsel_stdlib_heads: not prepared in {tmp_path}"):
        open_source("tfds:jaxsel_stdlib_heads:train", data_dir=tmp_path).parts()
    with pytest.raises(InputError, match=rf"tfds:no_such_dataset_xyz: not prepared in {tmp_path}"):
        open_source("tfds:no_such_dataset_xyz:train", data_dir=tmp_path).parts()
    with pytest.raises(InputError, match=r"no split 'validation' \(splits: "):
        open_source("tfds:jaxsel_stdlib_heads:validation", data_dir=tfds_dir).parts()
    with pytest.raises(InputError, match=r"expected tfds:NAME\[/CONFIG\]:SPLIT"):
        open_source("tfds:jaxsel_stdlib_heads", data_dir=tfds_dir).parts()


def test_hf_path_that_is_not_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets (the [dev] extra) is not installed")
    with pytest.raises(InputError, match=r"not a dataset saved with Dataset.save_to_disk"):
        open_source(f"hf:{tmp_path}").parts()
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(_records(3))})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=rf"a DatasetDict; choose a split: hf:{tmp_path}/dd/train"):
        open_source(f"hf:{tmp_path / 'dd'}").parts()


def test_parquet_text_missing_in_one_row_group(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "holes.parquet"
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(p, schema) as w:
        w.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"]}, schema=schema))
        w.write_table(pa.table({"id": ["c", "d"], "text": [None, None]}, schema=schema))
    with pytest.raises(
        InputError, match=rf"^{p}: row group 1, row 2: text is NoneType, not a string$"
    ):
        list(open_source(p).batches(10))
    with pytest.raises(InputError, match=rf"^{p}: missing column 'body'"):
        list(open_source(p, text_field="body").batches(10))


def test_bad_jsonl_in_a_later_range_names_its_line(tmp_path):
    recs = _records(30)
    p = _write_jsonl(tmp_path / "p.jsonl", recs)
    lines = p.read_bytes().splitlines(keepends=True)
    lines[24] = b'{"id": "x", "body": "no text"}\n'
    p.write_bytes(b"".join(lines))
    src = open_source(p, part_bytes=3000)
    assert src.parts()[-1].start > 0
    with pytest.raises(InputError, match=rf"^{p}:25: missing field 'text'"):
        list(src.batches(4))
    lines[24] = json.dumps({"id": "doc-3", "text": "again"}).encode() + b"\n"
    p.write_bytes(b"".join(lines))
    with pytest.raises(
        InputError, match=rf"^{p}:25: duplicate id 'doc-3' \(first seen at {p}:4\)$"
    ):
        list(open_source(p, part_bytes=3000).batches(4))


def test_empty_texts_skip_or_refuse(tmp_path):
    p = _write_jsonl(tmp_path / "p.jsonl", [{"id": 1, "text": "a"}, {"id": 2, "text": " "}])
    with pytest.raises(InputError, match=rf"{p}:2: empty text"):
        list(open_source(p).batches(2))
    _assert_same_as_corpus(open_source(p, on_empty="skip"), read_corpus(p, on_empty="skip"), 1)
    q = _write_jsonl(tmp_path / "q.jsonl", [{"id": 1, "text": ""}])
    with pytest.raises(InputError, match="no documents"):
        list(open_source(q, on_empty="skip").batches(2))


def test_parts_for_process_cover_each_part_once(tmp_path):
    p = _write_jsonl(tmp_path / "pool.jsonl", _records(60))
    parts = open_source(p, part_bytes=2500).parts()
    for count in range(1, len(parts) + 1):
        got = [parts_for_process(parts, i, count) for i in range(count)]
        assert all(got) and sum(got, []) == parts
        assert got == [parts_for_process(parts, i, count) for i in range(count)]
    # fewer parts than processes: one part each, the rest read nothing
    got = [parts_for_process(parts[:2], i, 5) for i in range(5)]
    assert got == [[parts[0]], [parts[1]], [], [], []]
    with pytest.raises(InputError, match=r"process index 2 is not in \[0, 2\)"):
        parts_for_process(parts, 2, 2)


def test_stream_holds_one_batch_not_the_file(tmp_path):
    """A 24 MB JSONL read in 256 KB ranges: Python's peak allocation stays far below the file."""
    p = tmp_path / "big.jsonl"
    line = json.dumps({"id": 0, "text": "x" * 1000})
    with open(p, "w") as f:
        for i in range(24000):
            f.write(line.replace('"id": 0', f'"id": {i}', 1) + "\n")
    size = p.stat().st_size
    tracemalloc.start()
    try:
        src = open_source(p, part_bytes=256 << 10)
        parts = src.parts()
        plan_peak = tracemalloc.get_traced_memory()[1]
        n = sum(len(b) for b in src.batches(64, parts[10:]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(parts) > 90 and n > 20000
    assert plan_peak < 2 << 20, plan_peak
    assert peak < size / 10, (peak, size)


def test_ids_keep_their_type_and_compare_as_read_corpus_does(tmp_path):
    recs = [{"id": 1, "text": "a"}, {"id": "1", "text": "b"}, {"id": 2.5, "text": "c"}]
    p = _write_jsonl(tmp_path / "p.jsonl", recs)
    _assert_same_as_corpus(open_source(p, part_bytes=30), read_corpus(p), 2)
    q = _write_jsonl(tmp_path / "q.jsonl", [*recs, {"id": 1.0, "text": "d"}])
    with pytest.raises(
        InputError, match=r"q.jsonl:4: duplicate id 1.0 \(first seen at .*q.jsonl:1\)"
    ):
        read_corpus(q)
    with pytest.raises(
        InputError, match=r"q.jsonl:4: duplicate id 1.0 \(first seen at .*q.jsonl:1\)"
    ):
        list(open_source(q, part_bytes=30).batches(2))


def _first_duplicate(ids: list) -> tuple[int, int] | None:
    """Brute force: (row, earlier row) of the first id an earlier row has, or None."""
    seen: dict = {}
    for i, x in enumerate(ids):
        if x in seen:
            return i, seen[x]
        seen[x] = i
    return None


@pytest.mark.parametrize("seed", range(6))
def test_id_digests_sorted_runs_match_a_brute_force_set(seed):
    """Runs of 7 rows (many runs, several digest ranges): the rows whose digest repeats and the
    reported duplicate are those of a Python dict over the ids."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 300))
    # half the seeds draw from a large space (no duplicate), half from a small one
    space = 10**9 if seed % 2 else n * 3
    ids = [f"d{v}" for v in rng.choice(space, n, replace=seed % 2 == 0)]
    if seed == 4:  # the pair split across the first and the last run
        ids = [f"u{i}" for i in range(n)]
        ids[-1] = ids[0]
    seen = sources.IdDigests(run_size=7)
    at = 0
    while at < n:
        size = int(rng.integers(1, 12))
        rows = list(range(at, min(n, at + size)))
        keys = np.stack([np.zeros(len(rows), np.int64), np.array(rows, np.int64)], 1)
        seen.add(sources.Batch([ids[r] for r in rows], ["t"] * len(rows), [{}] * len(rows), keys))
        at += size
    assert len(seen.runs) >= n // 18  # runs of 7..17 rows
    digests, keys = seen.repeated()
    counts = {x: ids.count(x) for x in ids}
    assert sorted(keys[:, 1].tolist()) == [i for i, x in enumerate(ids) if counts[x] > 1]
    assert len(set(digests.tolist())) == sum(1 for c in counts.values() if c > 1)
    want = _first_duplicate(ids)
    assert (want is not None) == (seed % 2 == 0)

    def locate(key):
        return ids[key[1]], f"row {key[1]}"

    seen = sources.IdDigests(run_size=7)
    for r in range(n):
        seen.add(sources.Batch([ids[r]], ["t"], [{}], np.array([[0, r]], np.int64)))
    if want is None:
        seen.verify(locate)
    else:
        msg = f"^row {want[0]}: duplicate id '{ids[want[0]]}' \\(first seen at row {want[1]}\\)$"
        with pytest.raises(InputError, match=msg):
            seen.verify(locate)
    assert seen.file is None  # the temporary file is closed (deleted) after the check


def test_id_digest_collision_of_distinct_ids_is_not_a_duplicate():
    """Equal digests (forced) of different ids: confirmed against the ids, nothing raised."""
    ids = ["a", "b", "a2"]
    keys = np.array([[0, 0], [0, 1], [1, 0]], np.int64)
    sources.IdDigests.check(
        np.array([5, 5, 5], np.uint64), keys, lambda k: (ids[k[0] * 2 + k[1]], str(k))
    )


def test_duplicate_id_split_across_sorted_runs_of_a_stream(tmp_path, monkeypatch):
    """A jsonl pool read with runs of 3 ids: the same one-line error as with one run."""
    monkeypatch.setattr(sources, "ID_RUN", 3)
    p = tmp_path / "pool.jsonl"
    rows = [{"id": f"doc-{i}", "text": f"text {i}"} for i in range(40)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sum(len(b.texts) for b in open_source(p, part_bytes=300).batches(4)) == 40
    rows[30]["id"] = "doc-3"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(
        InputError, match=rf"^{p}:31: duplicate id 'doc-3' \(first seen at {p}:4\)$"
    ):
        list(open_source(p, part_bytes=300).batches(4))


def test_inputs_are_the_files_and_directories_read(tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", _records(2))
    b = _write_jsonl(tmp_path / "b.jsonl", _records(3))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.txt").write_text("x")
    specs = [str(tmp_path / "*.jsonl"), tmp_path / "docs", a, f"hf:{tmp_path / 'hf'}"]
    assert open_source(specs).inputs() == [a, b, tmp_path / "docs", tmp_path / "hf"]


def test_inputs_of_tfds_is_the_prepared_dataset_directory(tfds_dir):
    src = open_source("tfds:jaxsel_stdlib_heads:train", data_dir=tfds_dir)
    assert src.inputs() == [tfds_dir / "jaxsel_stdlib_heads" / "1.0.0"]


def test_damaged_tfds_shard_is_one_line(tfds_dir, tmp_path):
    """A prepared TFDS split whose array_record shard was damaged on disk: one line naming the
    split and the records, never array_record's RuntimeError."""
    import shutil

    copy = tmp_path / "tfds"
    shutil.copytree(tfds_dir, copy)
    (shard,) = sorted(copy.rglob("*train.array_record*"))
    data = bytearray(shard.read_bytes())
    for i in range(64, len(data) - 64, 97):  # flip bytes all through the records
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))
    src = open_source("tfds:jaxsel_stdlib_heads:train", id_field="name", data_dir=copy)
    with pytest.raises(InputError) as e:
        list(src.batches(8))
    assert "\n" not in str(e.value) and "tfds:jaxsel_stdlib_heads:train" in str(e.value)


def test_damaged_parquet_page_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "p.parquet"
    rows = [{"id": i, "text": "hello world " * 50 + str(i)} for i in range(200)]
    pq.write_table(pa.Table.from_pylist(rows), p, compression="NONE")
    data = bytearray(p.read_bytes())
    data[2000] ^= 0xFF  # inside the first data page's text values
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"p.parquet: row group 0, near row \d+ unreadable") as e:
        list(open_source(p).batches(50))
    assert "\n" not in str(e.value)
