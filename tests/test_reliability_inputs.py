"""Inputs that were taken silently or ended in a traceback: every one is now a one-line error
before any input is read (CLI: `error: ...`, exit 2; Python API: an InputError)."""

import dataclasses
import json

import numpy as np
import pytest

import jaxsel
from jaxsel import methods
from jaxsel.cli import main
from jaxsel.errors import InputError
from jaxsel.flags import check_options

POOL = [
    f"def f{i}(x):\n    return x + {i}\n" if i % 2 else f"the cat sat {i} times" for i in range(12)
]
TARGET = ["def g(y):\n    return y\n"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------ jaxsel eval


@pytest.fixture()
def eval_files(tmp_path):
    recs = [{"id": i, "text": f"doc {i} " * (i + 1), "domain": "py" if i % 3 else "c"}
            for i in range(6)]  # fmt: skip
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return tmp_path, recs


@pytest.mark.parametrize("k", ["0", "-2"])
def test_eval_k_that_is_not_positive_is_refused_before_reading(tmp_path, capsys, k):
    """-k 0 was taken as "no -k" (precision at the default cut-off)."""
    argv = ["eval", str(tmp_path / "absent.jsonl"), "--pool", str(tmp_path / "absent-pool.jsonl")]
    assert main([*argv, "-k", k]) == 2
    assert _one_line(capsys) == f"error: k must be positive, got {k}"


def test_compare_k_that_is_not_positive_is_refused_before_the_methods_run(tmp_path, capsys):
    argv = ["compare", "--pool", str(tmp_path / "absent.jsonl"), "-k", "5", "0"]
    assert main(argv) == 2
    assert _one_line(capsys) == "error: k must be positive, got 0"


def test_selection_report_k_zero_is_an_error():
    from jaxsel.evaluate import selection_report

    pool = jaxsel.Corpus.from_records([{"id": i, "text": "x", "domain": "a"} for i in range(3)])
    with pytest.raises(InputError, match="k=0 outside 1..2"):
        selection_report(pool, [("f:1", {"id": 0}), ("f:2", {"id": 1})], "a", "domain", 0, "f")


@pytest.mark.parametrize("bad", ['"abc"', "true", "[1]", '"NaN"'])
def test_eval_selection_whose_score_is_not_a_number_names_file_and_line(eval_files, capsys, bad):
    """A selection (records, best first; not a whole score file) with score 'abc' gave
    precision 1.0."""
    root, recs = eval_files
    sel = root / "sel.jsonl"
    rows = [json.dumps({**recs[i], "score": 0.9}) for i in (1, 2)]
    rows[1] = rows[1].replace("0.9", bad)
    sel.write_text("\n".join(rows) + "\n")
    assert main(["eval", str(sel), "--pool", str(root / "pool.jsonl")]) == 2
    assert _one_line(capsys).startswith(f"error: {sel}:2: score ")


def test_eval_selection_with_numeric_or_null_scores_still_works(eval_files, capsys):
    root, recs = eval_files
    sel = root / "sel.jsonl"
    sel.write_text("".join(json.dumps({**recs[i], "score": s}) + "\n"
                           for i, s in ((1, 2.5), (2, None), (4, 1))))  # fmt: skip
    assert main(["eval", str(sel), "--pool", str(root / "pool.jsonl"), "--domain", "py"]) == 0
    assert json.loads(capsys.readouterr().out)["precision_at_k"] == 1.0


# ------------------------------------------------------------------------ the Python API


@pytest.mark.parametrize(
    "rule, msg",
    [
        ({"budget_bytes": float("nan")}, "budget must be a positive finite number, got nan"),
        ({"budget_bytes": float("inf")}, "budget must be a positive finite number, got inf"),
        ({"budget_bytes": "100"}, "budget must be a positive finite number, got '100'"),
        ({"budget_bytes": 0}, "budget must be a positive finite number, got 0"),
        ({"threshold": "0.5"}, "threshold must be a finite number, got '0.5'"),
        ({"threshold": True}, "threshold must be a finite number, got True"),
        ({"threshold": float("nan")}, "threshold must be a finite number, got nan"),
        ({"k": "3"}, "k must be an integer, got '3'"),
        ({"k": 0}, "k must be positive, got 0"),
        ({}, "give exactly one of k, threshold, budget_bytes"),
        ({"k": 3, "threshold": 0.5}, "give exactly one of k, threshold, budget_bytes"),
    ],
)
def test_api_select_rule_is_checked_before_reading(tmp_path, rule, msg):
    absent = str(tmp_path / "absent.jsonl")  # never opened: the rule fails first
    with pytest.raises(InputError) as e:
        jaxsel.select(absent, absent, **rule)
    assert str(e.value) == msg


@pytest.mark.parametrize(
    "method, options, msg",
    [
        ("random", {"seed": "1"}, "option seed must be an integer, got '1'"),
        ("random", {"seed": 1.5}, "option seed must be an integer, got 1.5"),
        ("random", {"seed": -1}, "option seed must be >= 0, got -1"),
        ("dsir", {"seed": True}, "option seed must be an integer, got True"),
        ("zipfit", {"shard_size": 0}, "option shard_size must be >= 1, got 0"),
        ("zipfit", {"shard_size": -1}, "option shard_size must be >= 1, got -1"),
        ("dsir", {"shard_size": "8"}, "option shard_size must be an integer, got '8'"),
        ("dsir", {"smoothing": float("nan")}, "option smoothing must be a finite number, got nan"),
        ("zipfit", {"compressor": 3}, "option compressor must be a string, got 3"),
    ],
)
def test_api_options_of_the_wrong_type_or_range_are_one_line(tmp_path, method, options, msg):
    absent = str(tmp_path / "absent.jsonl")
    for call in (jaxsel.score, lambda *a, **kw: jaxsel.select(*a, k=1, **kw)):
        with pytest.raises(InputError) as e:
            call(absent, absent, method=method, **options)
        assert str(e.value) == msg


def test_api_numpy_and_int_values_are_accepted():
    got = jaxsel.select(POOL, TARGET, method="random", seed=np.int64(3), threshold=np.float64(0.5))
    assert all(r["score"] > 0.5 for r in got)
    assert jaxsel.select(POOL, TARGET, method="dsir", budget_bytes=1e3, smoothing=1)  # int float
    assert len(jaxsel.score(POOL, TARGET, method="zipfit", level=None)) == len(POOL)


@pytest.mark.parametrize("name", methods.names())
def test_every_method_default_config_passes_the_option_check(name):
    cls = methods.get(name).config_cls
    check_options(cls, {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--method", "random", "--seed", "-1"], "option seed must be >= 0, got -1"),
        (["--shard-size", "0"], "option shard_size must be >= 1, got 0"),  # embedded pool
    ],
)
def test_cli_option_out_of_range_is_one_line(tmp_path, capsys, argv, msg):
    assert main(["score", *argv, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert _one_line(capsys) == f"error: {msg}"
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------- in-memory forms a pool cannot take


def _series():
    import pandas as pd

    return pd.Series(POOL)


def _dataset_dict():
    import datasets

    return datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": POOL, "id": list(range(len(POOL)))})}
    )


@pytest.mark.parametrize("make", [_series, _dataset_dict], ids=["Series", "DatasetDict"])
@pytest.mark.parametrize("role", ["pool", "target"])
def test_series_or_dataset_dict_is_one_line(make, role):
    data = {"pool": POOL, "target": TARGET, role: make()}
    with pytest.raises(InputError) as e:
        jaxsel.score(data["pool"], data["target"], method="dsir")
    assert "\n" not in str(e.value)
