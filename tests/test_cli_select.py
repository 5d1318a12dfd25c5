"""`jaxsel score | select` end to end on small files: outputs, ordering, and one-line errors."""

import json

import numpy as np
import pytest
from test_zipfit import make_pool, make_target

from jaxsel import methods
from jaxsel.cli import main
from jaxsel.data import read_jsonl, write_jsonl
from jaxsel.methods import dsir, zipfit
from jaxsel.scores import select_threshold, select_top_k


@pytest.fixture()
def files(tmp_path):
    pool, target = make_pool(10, seed=4, long_doc=False), make_target(3)
    recs = [{**r, "extra": {"n": i}} for i, r in enumerate(pool.records)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    write_jsonl(tmp_path / "target.jsonl", target.records)
    return tmp_path, read_jsonl(tmp_path / "pool.jsonl"), read_jsonl(tmp_path / "target.jsonl")


def _run(tmp, *args):
    return main(
        [
            args[0],
            "--pool",
            str(tmp / "pool.jsonl"),
            "--target",
            str(tmp / "target.jsonl"),
            "--no-progress",
            *args[1:],
        ]
    )


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "argv, cfg",
    [
        ([], zipfit.Config()),
        (["--compressor", "gzip", "--level", "9"], zipfit.Config("gzip", 9)),
        (["--debias", "length"], zipfit.Config(debias="length")),
    ],
)
def test_score_one_row_per_item_in_pool_order(files, argv, cfg):
    tmp, pool, target = files
    assert _run(tmp, "score", "--out", str(tmp / "s.jsonl"), *argv) == 0
    rows = _rows(tmp / "s.jsonl")
    assert [sorted(r) for r in rows] == [["id", "score"]] * len(pool)
    assert [r["id"] for r in rows] == list(pool.ids)
    assert np.array_equal([r["score"] for r in rows], zipfit.score(pool, target, cfg).values)


@pytest.mark.parametrize("method", ["zipfit", "zipfit-fast", "dsir"])
def test_select_top_k_records_best_first(files, method):
    tmp, pool, target = files
    assert _run(tmp, "select", "--method", method, "-k", "4", "--out", str(tmp / "sel.jsonl")) == 0
    rows = _rows(tmp / "sel.jsonl")
    m = methods.get(method)
    scores = m.score(pool, target, m.config_cls())
    idx = select_top_k(scores, 4)
    assert rows == [{**pool.records[i], "score": float(scores.values[i])} for i in idx]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all("extra" in r and "domain" in r for r in rows)


def test_select_threshold(files):
    tmp, pool, target = files
    scores = zipfit.score(pool, target)
    t = float(np.median(scores.values))
    assert _run(tmp, "select", "--threshold", str(t), "--out", str(tmp / "sel.jsonl")) == 0
    rows = _rows(tmp / "sel.jsonl")
    assert [r["id"] for r in rows] == [pool.ids[i] for i in select_threshold(scores, t)]
    assert rows and all(r["score"] > t for r in rows)


def test_select_dsir_gumbel_is_seeded(files):
    tmp, pool, target = files
    outs = []
    for seed in ("1", "1", "2"):
        assert (
            _run(
                tmp,
                "select",
                "--method",
                "dsir",
                "--resample",
                "gumbel",
                "--seed",
                seed,
                "-k",
                "5",
                "--out",
                str(tmp / "g.jsonl"),
            )
            == 0
        )
        outs.append([r["id"] for r in _rows(tmp / "g.jsonl")])
    assert outs[0] == outs[1]
    assert dsir.Config(resample="gumbel", seed=2).seed == 2


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    for n in needles:
        assert n in errors[0]


@pytest.mark.parametrize(
    "content, needle",
    [
        (
            b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff\xfe"}\n',
            "pool.jsonl:2: not valid UTF-8",
        ),
        (b'{"id": 1, "text": "ok"}\n{"id": 2, "text": \n', "pool.jsonl:2: malformed JSON"),
    ],
)
def test_bad_pool_file(files, capsys, content, needle):
    tmp, _, _ = files
    (tmp / "pool.jsonl").write_bytes(content)
    assert _run(tmp, "select", "-k", "1", "--out", str(tmp / "o.jsonl")) == 2
    _one_line_error(capsys, needle)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--compressor", "gzip", "--level", "0"], "stores without compressing"),
        (["--compressor", "lz4", "--level", "20"], "0..16"),
        (["-k", "11"], "larger than the pool"),
        (["--method", "dsir", "--buckets", "0"], "buckets must be positive"),
    ],
)
def test_bad_arguments(files, capsys, argv, needle):
    tmp, _, _ = files
    assert _run(tmp, "select", *argv, "--out", str(tmp / "o.jsonl")) == 2
    _one_line_error(capsys, needle)
    assert not (tmp / "o.jsonl").exists()


def test_empty_target_file(files, capsys):
    tmp, _, _ = files
    (tmp / "target.jsonl").write_text("\n")
    assert _run(tmp, "score", "--out", str(tmp / "o.jsonl")) == 2
    _one_line_error(capsys, "no documents")


def test_unknown_compressor_is_a_usage_error(files):
    tmp, _, _ = files
    with pytest.raises(SystemExit) as e:
        _run(tmp, "score", "--compressor", "snappy", "--out", str(tmp / "o.jsonl"))
    assert e.value.code == 2
