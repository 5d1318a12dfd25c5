"""Progress a user can plan by: the bar of a streamed pass has a total known before reading
(file bytes, Parquet rows), ends exactly at it, and a resumed pass says how much is already
done and leaves the reused work out of its rate."""

import gzip
import json
import logging
import re

import numpy as np
import pytest

from jaxsel.data.progress import PoolProgress, batch_count, part_sizes
from jaxsel.data.sources import open_source
from jaxsel.methods.runtime import LocalEngine, map_batches

TEXTS = [f"doc {i}: " + "word " * (i % 7 + 1) + "é" * (i % 3) for i in range(40)]


def _jsonl(path, texts=TEXTS):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def _parquet(path, row_group_size=9):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _walk(source, batch_size, reused=lambda batch: False):
    """A PoolProgress driven over every batch; (it, n after each batch)."""
    parts = source.parts()
    bar = PoolProgress.of(source, parts, "t", disable=False)
    seen = []
    for batch in source.batches(batch_size):
        bar.advance(batch, computed=not reused(batch))
        seen.append(bar.n)
    bar.end()
    bar.close()
    return bar, seen


def test_jsonl_total_is_the_file_bytes_and_the_bar_ends_there(tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl")
    source = open_source(path, part_bytes=300)  # several byte-range parts
    assert len(source.parts()) > 3
    assert part_sizes(source.parts()) == ("B", [p.nbytes for p in source.parts()])
    bar, seen = _walk(source, batch_size=4)
    size = path.stat().st_size
    assert bar.unit == "B" and bar.total == size and bar.bar.total == size
    assert bar.n == size and bar.bar.n == size and bar.docs == len(TEXTS)
    assert seen == sorted(seen) and 0 < seen[0] < size  # credited as batches complete
    assert batch_count(source.parts(), 4) is None  # rows unknown before reading


def test_parquet_total_is_the_row_groups_rows(tmp_path):
    source = open_source(_parquet(tmp_path / "pool.parquet"))
    assert len(source.parts()) == 5  # 40 rows in row groups of 9
    bar, seen = _walk(source, batch_size=4)
    assert bar.unit == "row" and bar.bar.total == len(TEXTS) and bar.n == len(TEXTS)
    rows = np.cumsum([len(b) for b in source.batches(4)])
    assert seen == rows.tolist()  # exactly the rows read so far
    assert batch_count(source.parts(), 4) == sum(-(-n // 4) for n in (9, 9, 9, 9, 4))


def test_a_gzip_part_is_credited_by_its_trailer_ratio(tmp_path):
    path = tmp_path / "pool.jsonl.gz"
    raw = _jsonl(tmp_path / "plain.jsonl").read_bytes()
    path.write_bytes(gzip.compress(raw, mtime=0))
    source = open_source(path)
    bar, seen = _walk(source, batch_size=8)
    size = path.stat().st_size
    assert bar.total == size and bar.n == size
    assert 0 < seen[0] < seen[-2] < size  # moves inside the one part, before its end
    # ~ compressed bytes per text byte: the first batch's share is near its share of the text
    share = sum(len(t.encode()) for t in TEXTS[:8]) / len(raw)
    assert abs(seen[0] / size - share) < 0.5 * share


def test_reused_batches_advance_the_bar_but_not_its_rate(tmp_path):
    source = open_source(_parquet(tmp_path / "pool.parquet"))
    first = {int(b.keys[0, 0]) for b in source.batches(4)}
    old = sorted(first)[:2]  # the batches of the first two row groups were done before
    bar, _ = _walk(source, 4, reused=lambda b: int(b.keys[0, 0]) in old)
    assert bar.reused == 18 and bar.n == len(TEXTS) and bar.new_docs == len(TEXTS) - 18
    assert bar.bar.initial == 18  # tqdm's rate (and ETA) counts n - initial only
    assert bar.bar.format_dict["n"] - bar.bar.format_dict["initial"] == len(TEXTS) - 18


def _scores(batch):
    return np.array([len(t) for t in batch.texts], np.float64), {"docs": len(batch)}


def _make():
    return _scores


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_a_resumed_pass_logs_what_is_done_and_shows_its_total(tmp_path, caplog, capsys, kind):
    if kind == "parquet":
        source = open_source(_parquet(tmp_path / "pool.parquet"))
    else:
        source = open_source(_jsonl(tmp_path / "pool.jsonl"), part_bytes=300)
    work = tmp_path / "work"
    kw = dict(batch_size=4, workdir=work, key={"t": 1}, desc="m", progress=True)
    first = map_batches(source, _make, LocalEngine(), **kw)
    for _ in range(3):  # stopped after three batches
        next(first)
    first.close()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="jaxsel"):
        out = list(map_batches(source, _make, LocalEngine(), **kw))
    assert np.concatenate([v for _, v, _ in out]).tolist() == [len(t) for t in TEXTS]
    lines = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    n = sum(1 for _ in source.batches(4))
    if kind == "parquet":
        assert lines == [f"m: resuming: 3 of {n} batches already done (read back from {work})"]
    else:
        parts = len(source.parts())
        want = f"m: resuming: 3 batches already done, in 2 of {parts} parts (read back from {work})"
        assert lines == [want]
    err = capsys.readouterr().err.split("\r")[-1]
    total = len(TEXTS) if kind == "parquet" else (tmp_path / "pool.jsonl").stat().st_size
    assert "100%" in err and f"{len(TEXTS)} doc" in err
    reused = sum(len(b) for b, _, _ in out[:3])
    assert f", {reused} read back" in err  # the rate beside it counts the others only
    if kind == "parquet":
        assert f"{total}/{total}" in err
    else:
        assert re.search(r"(\d+(\.\d+)?k)/\1 .*B/s", err)  # bytes (KiB), n = total


def test_an_in_memory_pool_counts_documents(tmp_path):
    from jaxsel.data.adapters import CorpusSource
    from jaxsel.data.records import Corpus

    source = CorpusSource(Corpus.from_texts(TEXTS))
    bar, seen = _walk(source, batch_size=16)
    assert bar.unit == "doc" and bar.bar.total == len(TEXTS) and seen == [16, 32, 40]


def test_compare_says_which_method_runs_with_its_bar(tmp_path, caplog, capsys):
    from jaxsel.cli import main

    pool, target = tmp_path / "pool.jsonl", tmp_path / "t.jsonl"
    rows = [{"id": i, "text": t, "domain": "py" if i % 2 else "en"} for i, t in enumerate(TEXTS)]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target.write_text(json.dumps({"id": "t", "text": "word word"}) + "\n")
    argv = ["compare", "--pool", str(pool), "--target", str(target), "--methods", "dsir,random"]
    with caplog.at_level(logging.INFO, logger="jaxsel"):
        assert main([*argv, "--domain", "py", "-k", "5"]) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compare:")]
    assert said[0] == "compare: method 1 of 2: dsir" and said[2] == "compare: method 2 of 2: random"
    assert said[1].startswith("compare: dsir done in ")
    err = capsys.readouterr().err
    assert re.search(rf"dsir: 100%\|[^|]*\| {len(TEXTS)}/{len(TEXTS)} ", err)  # its own bar
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jaxsel"):
        assert main([*argv, "--domain", "py", "-k", "5", "--no-progress"]) == 0
    assert not [r for r in caplog.records if r.getMessage().startswith("compare:")]
    assert "dsir: " not in capsys.readouterr().err


def test_a_resumed_in_memory_pass_knows_its_batch_count(tmp_path, caplog):
    from jaxsel.data.adapters import CorpusSource
    from jaxsel.data.records import Corpus

    source = CorpusSource(Corpus.from_texts(TEXTS))
    kw = dict(batch_size=16, workdir=tmp_path, key={"t": 2}, desc="m")
    first = map_batches(source, _make, LocalEngine(), **kw)
    next(first)
    first.close()
    with caplog.at_level(logging.INFO, logger="jaxsel"):
        list(map_batches(source, _make, LocalEngine(), **kw))
    said = [r.getMessage() for r in caplog.records]
    assert f"m: resuming: 1 of 3 batches already done (read back from {tmp_path})" in said


def test_map_by_length_reads_back_shards_outside_its_rate(tmp_path, capsys):
    from jaxsel.batching import map_by_length

    lengths = list(range(20, 0, -1))
    calls = []

    def compute(idx):
        calls.append(len(idx))
        if len(calls) == 3:
            raise KeyboardInterrupt  # a stopped job: two shards of 4 are finished
        return np.asarray(idx, np.float64)[:, None]

    kw = dict(workdir=tmp_path, key={"t": 3}, shard_size=4, progress=True, desc="lm")
    with pytest.raises(KeyboardInterrupt):
        map_by_length(lengths, 4, compute, **kw)
    capsys.readouterr()
    rows = map_by_length(lengths, 4, compute, **kw)
    assert rows[:, 0].tolist() == list(range(20)) and calls == [4, 4, 4, 4, 4, 4]
    err = capsys.readouterr().err.split("\r")[-1]
    assert "20/20" in err and "8 read back" in err
