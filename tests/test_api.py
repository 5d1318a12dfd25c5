"""The Python API meets the data where it is: DataFrames and Datasets without an id column,
results in the caller's own type, empty texts skipped on request, TFDS with a data_dir, models
kept across calls, and one-line errors for the containers it cannot read."""

import numpy as np
import pytest
from test_sources import tfds_dir  # noqa: F401 (a fixture)
from test_zipfit import make_pool, make_target

import jaxsel
from jaxsel.errors import InputError


def _frame():
    pd = pytest.importorskip("pandas")
    pool = make_pool(10, seed=4, long_doc=False)
    return pd.DataFrame({"text": list(pool.texts), "n": range(10)})  # no id column


def test_a_frame_without_ids_selects_into_a_frame():
    df = _frame()
    target = list(make_target(2).texts)
    scores = jaxsel.score(df, target, method="dsir")
    best = jaxsel.select(df, target, method="dsir", k=4)
    assert type(best) is type(df) and list(best.columns) == ["text", "n", "score"]
    want = sorted(range(10), key=lambda i: (-scores.values[i], i))[:4]
    assert best["n"].tolist() == want
    np.testing.assert_array_equal(best["score"].to_numpy(), scores.values[want])
    table = scores.to_pandas()
    assert table["score"].tolist() == scores.values.tolist()
    assert table["rank"].to_numpy()[want].tolist() == [1, 2, 3, 4]


def test_a_dataset_selects_into_a_dataset():
    datasets = pytest.importorskip("datasets")
    df = _frame()
    ds = datasets.Dataset.from_pandas(df, preserve_index=False)
    target = list(make_target(2).texts)
    best = jaxsel.select(ds, target, method="dsir", k=3)
    assert isinstance(best, datasets.Dataset) and best.column_names == ["text", "n", "score"]
    assert best["n"] == jaxsel.select(df, target, method="dsir", k=3)["n"].tolist()


def test_empty_texts_are_skipped_when_asked():
    records = [
        {"id": "a", "text": "def f(): pass"},
        {"id": "b", "text": " "},
        {"id": "c", "text": "x = 1"},
    ]
    with pytest.raises(InputError, match="on_empty='skip'"):
        jaxsel.score(records, ["def g(): pass"], method="dsir")
    got = jaxsel.select(records, ["def g(): pass"], method="dsir", k=2, on_empty="skip")
    assert sorted(r["id"] for r in got) == ["a", "c"]
    with pytest.raises(InputError, match="on_empty must be"):
        jaxsel.score(records, ["x"], method="dsir", on_empty="drop")


@pytest.mark.parametrize(
    "pool",
    [None, 5, ["a text", {"text": "a record"}], "series", "dataset-dict"],
    ids=["None", "int", "mixed", "Series", "DatasetDict"],
)
def test_containers_it_cannot_read_are_one_line(pool):
    if pool == "series":
        pool = pytest.importorskip("pandas").Series(["a", "b"])
    elif pool == "dataset-dict":
        datasets = pytest.importorskip("datasets")
        pool = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})})
    with pytest.raises(InputError) as e:
        jaxsel.score(pool, ["t"], method="dsir")
    assert "\n" not in str(e.value)


def test_tfds_with_a_data_dir(tfds_dir):  # noqa: F811
    spec = "tfds:jaxsel_stdlib_heads:train"
    got = jaxsel.score(spec, ["import os"], method="dsir", id_field="name", data_dir=tfds_dir)
    assert len(got) == 37


def test_models_are_kept_across_calls(tiny_bert_dir, monkeypatch):
    from jaxsel.models import bert

    loads = []
    real = bert.load_bert
    monkeypatch.setattr(bert, "load_bert", lambda *a, **k: loads.append(a) or real(*a, **k))
    jaxsel.forget_models()
    pool, target = list(make_pool(6, long_doc=False).texts), list(make_target(2).texts)
    first = jaxsel.score(pool, target, method="embed-sim", model=str(tiny_bert_dir))
    again = jaxsel.score(pool, target, method="embed-sim", model=str(tiny_bert_dir))
    assert len(loads) == 1 and again.values.tobytes() == first.values.tobytes()
    jaxsel.forget_models()
    jaxsel.score(pool, target, method="embed-sim", model=str(tiny_bert_dir))
    assert len(loads) == 2


def test_a_target_with_its_own_fields():
    pool = [{"id": i, "text": t} for i, t in enumerate(make_pool(8, long_doc=False).texts)]
    target = [{"name": f"t{i}", "content": t} for i, t in enumerate(make_target(2).texts)]
    got = jaxsel.score(pool, target, method="dsir", target_fields=("content", "name"))
    want = jaxsel.score(pool, [r["content"] for r in target], method="dsir")
    assert got.values.tobytes() == want.values.tobytes()
    with pytest.raises(InputError, match="missing field 'text'"):
        jaxsel.score(pool, target, method="dsir")


@pytest.mark.parametrize(
    "out, options, flags",
    [
        ("sel.parquet", {}, []),
        ("sel.jsonl.gz", {}, []),
        (
            "shards",
            {"out_format": "jsonl", "out_shards": 2},
            ["--out-format", "jsonl", "--out-shards", "2"],
        ),
        (
            "rows",
            {"out_format": "parquet", "max_rows_per_file": 2},
            ["--out-format", "parquet", "--max-rows-per-file", "2"],
        ),
    ],
)
def test_select_out_writes_the_bytes_jaxsel_select_writes(tmp_path, out, options, flags):
    """out_format / out_shards / max_rows_per_file: the API's files are the CLI's, byte for
    byte (the sidecar aside: it records how each was called)."""
    import json

    from jaxsel.cli import main

    pool, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    docs = make_pool(12, seed=3, long_doc=False)
    pool.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs.texts))
    )
    target.write_text(json.dumps({"id": "t", "text": make_target(1).texts[0]}) + "\n")
    api, cli = tmp_path / "api" / out, tmp_path / "cli" / out
    api.parent.mkdir()
    cli.parent.mkdir()
    jaxsel.select(str(pool), str(target), method="dsir", k=5, out=str(api), **options)
    argv = ["select", "--method", "dsir", "--pool", str(pool), "--target", str(target)]
    assert main([*argv, "-k", "5", "--out", str(cli), *flags, "--no-progress"]) == 0

    def files(root):
        found = [p for p in root.parent.rglob("*") if p.is_file()]
        return {p.relative_to(root.parent): p.read_bytes() for p in found if ".meta." not in p.name}

    got, want = files(api), files(cli)
    assert len(want) == (1 if "." in out else 3 if "max_rows_per_file" in options else 2)
    assert got == want


def test_select_out_options_are_checked_as_the_cli_checks_them(tmp_path):
    pool, target = ["a b c", "d e f", "a b d"], ["a b"]
    with pytest.raises(InputError, match=r"give --out-shards or --max-rows-per-file, not both"):
        jaxsel.select(
            pool,
            target,
            method="dsir",
            k=1,
            out=str(tmp_path / "d"),
            out_format="jsonl",
            out_shards=2,
            max_rows_per_file=3,
        )
    with pytest.raises(InputError, match=r"out .*d: a directory of shards; give --out-format"):
        jaxsel.select(pool, target, method="dsir", k=1, out=str(tmp_path / "d"), out_shards=2)
    with pytest.raises(InputError, match=r"the name says parquet, --out-format says jsonl"):
        jaxsel.select(
            pool, target, method="dsir", k=1, out=str(tmp_path / "a.parquet"), out_format="jsonl"
        )
    with pytest.raises(InputError, match=r"out_shards must be an integer, got '2'"):
        jaxsel.select(
            pool,
            target,
            method="dsir",
            k=1,
            out=str(tmp_path / "d"),
            out_format="jsonl",
            out_shards="2",
        )
    with pytest.raises(InputError, match=r"describe out; give out"):
        jaxsel.select(pool, target, method="dsir", k=1, out_format="jsonl")
    assert not any(tmp_path.iterdir())  # nothing written before the options are checked
