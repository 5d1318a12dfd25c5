"""The streaming pipeline and the method contract: bounded top-K = a full sort, streamed scores =
one-batch scores, generated CLI flags for every method, resumable shards, the top-level API on
every pool form, and `jaxsel select` output equal to the in-memory selection written whole."""

import argparse
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_zipfit import make_pool, make_target

import jaxsel
from jaxsel import flags, methods, pipeline
from jaxsel.cli import main
from jaxsel.data import Corpus, read_jsonl, write_jsonl, write_records
from jaxsel.errors import InputError
from jaxsel.scores import Scores, select_budget, select_threshold, select_top_k
from jaxsel.shards import BatchShards

# ------------------------------------------------------------------------- bounded top-K


def _full_sort(scores, keys, k):
    """Brute force: every (score, key) sorted by score desc, then key asc."""
    items = sorted(zip(scores.tolist(), map(tuple, keys.tolist()), strict=True),
                   key=lambda sk: (-sk[0], sk[1]))  # fmt: skip
    return items[:k]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 0.5, 1.0, 2.0]), min_size=1, max_size=60),
    st.integers(1, 70),
    st.integers(1, 9),
    st.integers(1, 3),
)
def test_bounded_top_k_equals_a_full_sort(values, k, batch, parts):
    scores = np.array(values)
    n = scores.size
    # keys over `parts` parts in pool order: (part, row within part)
    part = np.minimum(np.arange(n) * parts // n, parts - 1)
    row = np.arange(n) - np.searchsorted(part, part)
    keys = np.stack([part, row], axis=1).astype(np.int64)
    top = pipeline.TopK(k, records=True)
    recs = [{"key": tuple(kk)} for kk in keys.tolist()]
    for s in range(0, n, batch):
        top.add(scores[s : s + batch], keys[s : s + batch], recs[s : s + batch])
    got = list(zip(top.scores.tolist(), map(tuple, top.keys.tolist()), strict=True))
    assert got == _full_sort(scores, keys, k)
    assert [r["key"] for r in top.records] == [g[1] for g in got]
    # ...and equals the library's in-memory rule (ties by pool order)
    if k <= n:
        idx = select_top_k(Scores(scores, "x"), k)
        assert [tuple(keys[i]) for i in idx] == [g[1] for g in got]


# ------------------------------------------------------------- streamed = in-memory scores


@pytest.mark.parametrize(
    "name, options",
    [
        ("zipfit", {}),
        ("zipfit", {"compressor": "gzip", "debias": "length"}),
        ("zipfit-fast", {"level": 3}),
        ("dsir", {}),
        ("dsir", {"resample": "gumbel", "seed": 5}),
        ("random", {"seed": 3}),
    ],
)
def test_streamed_scores_equal_one_batch(name, options):
    pool, target = make_pool(23, seed=1, long_doc=False), make_target(3)
    m = methods.get(name)
    one = m.score(pool, target, m.config(**options, **_shard(m, 10_000)))
    many = m.score(pool, target, m.config(**options, **_shard(m, 4)))
    np.testing.assert_array_equal(one.values, many.values)
    assert one.meta == many.meta


def _shard(m, n):
    fields = {f.name for f in dataclasses.fields(m.config_cls)}
    return {"shard_size": n} if "shard_size" in fields else {}


def test_dsir_streamed_equals_the_whole_pool_formula():
    from jaxsel.methods import dsir

    pool, target = make_pool(17, seed=3, long_doc=False), make_target(2)
    h = dsir.Hasher(100, 2)
    ratio = dsir.log_ratio(h.counts(target.texts), h.counts(pool.texts), 1e-8)
    want = dsir.log_weights(h, pool.texts, ratio)
    got = dsir.score(pool, target, dsir.Config(buckets=100, shard_size=5)).values
    np.testing.assert_array_equal(got, want)


def test_dsir_bounded_ngram_cache_gives_the_same_scores(monkeypatch):
    from jaxsel.methods import dsir

    pool, target = make_pool(17, seed=3, long_doc=False), make_target(2)
    want = dsir.score(pool, target).values
    monkeypatch.setattr(dsir, "CACHE_GRAMS", 50)  # full after the first few documents
    np.testing.assert_array_equal(dsir.score(pool, target).values, want)


# ------------------------------------------------------------------- generated CLI flags


@pytest.mark.parametrize("name", methods.names())
def test_generated_flags_cover_every_config_field(name):
    m = methods.get(name)
    p = argparse.ArgumentParser()
    flags.add_config_args(p, m.config_cls)
    assert flags.config_from_args(p.parse_args([]), m.config_cls) == m.config_cls()
    from jaxsel.commands import load, scoring

    for cmd in ("score", "select"):  # the flags fit beside the command's own (no clash)
        full, _ = scoring.parser(cmd, load(cmd).Config, ["--method", name])
        assert full.parse_known_args(["--method", name])[0].method == name
    helptext = p.format_help()
    for f in dataclasses.fields(m.config_cls):
        assert f.metadata["help"] and flags.flag_name(f) in helptext
    # every field is reachable: set each one to a non-default value through its flag
    for f in dataclasses.fields(m.config_cls):
        value = _other_value(m.config_cls, f)
        if value is None:
            continue
        args = p.parse_args([flags.flag_name(f), str(value)])
        assert getattr(args, f.name) == value  # the flag reaches its field...
        try:
            cfg = flags.config_from_args(args, m.config_cls)
        except InputError:  # ...whose Config may refuse this made-up value (hybrid's --of x)
            continue
        assert getattr(cfg, f.name) == value
        assert cfg == dataclasses.replace(m.config_cls(), **{f.name: value})


def _other_value(cls, f):
    if "choices" in f.metadata:
        return next((c for c in f.metadata["choices"] if c != f.default), None)
    typ = flags.scalar_type(cls, f)
    if typ is str:
        return "x"
    if typ is int:
        return 3 if f.default != 3 else 4
    if typ is float:
        return 0.25
    return None


def test_misspelled_options_are_errors(capsys):
    with pytest.raises(InputError, match="zipfit has no option 'levle'"):
        jaxsel.score(["a b"], ["a"], levle=3)
    with pytest.raises(SystemExit):
        main(["select", "--levle", "3", "--out", "-"])
    assert "unrecognized arguments: --levle" in capsys.readouterr().err


def test_method_contract_is_checked():
    """Every field of both method types is required."""
    with pytest.raises(TypeError, match="missing"):
        methods.Streamed("x", object, prepare=lambda *a: None)
    with pytest.raises(TypeError, match="missing"):
        methods.WholePool("x", object, score=lambda *a: None)


# ----------------------------------------------------------------------------------- API


def test_api_accepts_every_pool_form(tmp_path):
    import datasets
    import pandas as pd

    pool, target = make_pool(12, seed=2, long_doc=False), make_target(2)
    want = methods.get("zipfit").score(pool, target).values
    path = tmp_path / "pool.jsonl"
    write_jsonl(path, pool.records)
    df = pd.DataFrame(list(pool.records))
    ds = datasets.Dataset.from_list(list(pool.records))
    for form in (pool, str(path), path, df, ds, list(pool.records)):
        np.testing.assert_array_equal(jaxsel.score(form, target).values, want)
    np.testing.assert_array_equal(jaxsel.score(list(pool.texts), list(target.texts)).values, want)
    best = jaxsel.select(df, target, k=3).to_dict("records")  # a DataFrame for a DataFrame
    idx = select_top_k(Scores(want, "zipfit"), 3)
    assert best == [{**pool.records[i], "score": float(want[i])} for i in idx]
    with pytest.raises(InputError, match="cannot read a corpus from int"):
        jaxsel.score(5, target)
    with pytest.raises(InputError, match="exactly one of"):
        jaxsel.select(pool, target, k=3, threshold=0.5)


# ------------------------------------------------------ CLI select = the in-memory selection


@pytest.fixture()
def files(tmp_path):
    pool, target = make_pool(40, seed=6, long_doc=False), make_target(3)
    recs = [{**r, "extra": {"n": i, "u": "ü"}} for i, r in enumerate(pool.records)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    write_jsonl(tmp_path / "target.jsonl", target.records)
    return tmp_path, read_jsonl(tmp_path / "pool.jsonl"), read_jsonl(tmp_path / "target.jsonl")


@pytest.mark.parametrize(
    "rule",
    [["-k", "7"], ["-k", "40"], ["--threshold", "MEDIAN"], ["--budget-bytes", "3000"]],
)
@pytest.mark.parametrize("method, options", [("zipfit", []), ("dsir", ["--shard-size", "6"])])
@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
@pytest.mark.parametrize("kept", [16384, 2])
def test_cli_select_bytes_equal_the_full_sort_written_whole(
    files, rule, method, options, ext, kept, monkeypatch
):
    """kept=2: a top-K above RECORDS_KEPT picks its records in a second pass."""
    monkeypatch.setattr(pipeline, "RECORDS_KEPT", kept)
    tmp, pool, target = files
    m = methods.get(method)
    scores = m.score(pool, target)
    if rule[0] == "--threshold":
        rule = [rule[0], str(float(np.median(scores.values)))]
    out = tmp / f"sel.{ext}"
    argv = [
        "select",
        "--method",
        method,
        "--pool",
        str(tmp / "pool.jsonl"),
        "--target",
        str(tmp / "target.jsonl"),
        "--no-progress",
        "--out",
        str(out),
        *options,
        *rule,
    ]
    assert main(argv) == 0
    if rule[0] == "-k":
        idx = select_top_k(scores, int(rule[1]))
    elif rule[0] == "--threshold":
        idx = select_threshold(scores, float(rule[1]))
    else:
        idx = select_budget(scores, pool.nbytes(), int(rule[1]))
    ref = tmp / f"ref.{ext}"
    write_records(ref, [{**pool.records[i], "score": float(scores.values[i])} for i in idx])
    assert out.read_bytes() == ref.read_bytes()


def test_cli_score_streams_in_pool_order(files):
    tmp, pool, target = files
    out = tmp / "s.jsonl"
    argv = [
        "score",
        "--method",
        "dsir",
        "--pool",
        str(tmp / "pool.jsonl"),
        "--target",
        str(tmp / "target.jsonl"),
        "--no-progress",
        "--out",
        str(out),
        "--shard-size",
        "7",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(pool.ids)
    assert [r["score"] for r in rows] == methods.get("dsir").score(pool, target).values.tolist()


# -------------------------------------------------------------------------------- resume


def _shard_file(tmp_path, row, suffix):
    (p,) = tmp_path.glob(f"shard-000000-{row:09d}-*.{suffix}")
    return p


def test_resume_recomputes_only_missing_or_corrupt_shards(tmp_path, monkeypatch):
    from jaxsel.compress import pool as cpool
    from jaxsel.methods import zipfit

    pool, target = make_pool(20, seed=8, long_doc=False), make_target(2)
    cfg = zipfit.Config(shard_size=3)
    full = zipfit.score(pool, target, cfg, workdir=tmp_path)
    _shard_file(tmp_path, 6, "npy").unlink()  # killed between its .json and its .npy
    bad = _shard_file(tmp_path, 15, "npy")
    bad.write_bytes(bad.read_bytes()[:-8] + np.float64(0.5).tobytes())  # one score flipped
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.npy")}
    calls = []
    real = cpool.CompressorPool.pair_sizes
    monkeypatch.setattr(
        cpool.CompressorPool, "pair_sizes", lambda self, xs: calls.append(xs) or real(self, xs)
    )
    again = zipfit.score(pool, target, cfg, workdir=tmp_path)
    texts = [t.encode("utf-8") for t in pool.texts]
    assert calls == [texts[6:9], texts[15:18]]  # only those two batches, nothing else
    np.testing.assert_array_equal(again.values, full.values)
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.npy")}
    # the five good shards untouched; the damaged one rewritten under its name, the missing one
    # written anew
    assert len(after) == 7 and after[bad.name] != before[bad.name]
    assert {n: t for n, t in after.items() if n in before and n != bad.name} == {
        n: t for n, t in before.items() if n != bad.name
    }


def test_shards_of_a_changed_pool_are_redone(tmp_path):
    from jaxsel.methods import zipfit

    pool, target = make_pool(6, seed=8, long_doc=False), make_target(2)
    cfg = zipfit.Config(shard_size=3)
    zipfit.score(pool, target, cfg, workdir=tmp_path)
    other = Corpus.from_texts(list(pool.texts[::-1]))
    got = zipfit.score(other, target, cfg, workdir=tmp_path)
    np.testing.assert_array_equal(got.values, zipfit.score(other, target, cfg).values)


def test_batch_shards_round_trip(tmp_path):
    store = BatchShards(tmp_path, {"job": 1}, 2)
    assert store.load("a", "fp") is None
    store.save("a", np.array([1.0, 2.5]), {"tokens": 3}, "fp")
    values, stats = BatchShards(tmp_path, {"job": 1}, 2).load("a", "fp")
    assert values.tolist() == [1.0, 2.5] and stats == {"tokens": 3}
    assert BatchShards(tmp_path, {"job": 1}, 2).load("a", "other documents") is None
    assert not list(tmp_path.glob("shard-a-*"))  # the unverifiable shard was removed
    with pytest.raises(InputError, match="another job"):
        BatchShards(tmp_path, {"job": 2}, 2)


@pytest.mark.parametrize("form", ["jsonl", "jsonl.gz", "parquet"])
def test_streamed_files_of_many_parts_select_as_in_memory(tmp_path, form):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxsel.data.sources import open_source

    pool, target = make_pool(30, seed=9, long_doc=False), make_target(2)
    path = tmp_path / f"pool.{form}"
    if form == "parquet":
        pq.write_table(pa.Table.from_pylist(list(pool.records)), path, row_group_size=7)
    else:
        write_jsonl(tmp_path / "pool.jsonl", pool.records)
        if form == "jsonl.gz":
            import gzip

            path.write_bytes(gzip.compress((tmp_path / "pool.jsonl").read_bytes(), mtime=0))
    source = open_source(path, part_bytes=600)
    assert form != "jsonl" or len(source.parts()) > 3
    m = methods.get("zipfit")
    cfg = m.config(shard_size=4)
    with methods.Run() as run:
        streamed = pipeline.score(m, source, target, cfg, run)
        sel = pipeline.select(m, source, target, cfg, run, k=9)
    want = m.score(pool, target)
    np.testing.assert_array_equal(streamed.values, want.values)
    idx = select_top_k(want, 9)
    got = pipeline.selected_records(source, sel)
    assert got == [{**pool.records[i], "score": float(want.values[i])} for i in idx]


def test_run_loads_each_model_once(monkeypatch):
    """`compare` runs every method in one Run: ppl and lamdas share one loaded LM."""
    import tokenizers
    from llama_ref import random_params, tiny_tokenizer_json
    from test_llama import TINY

    from jaxsel.methods import lamdas, ppl
    from jaxsel.models import loaders
    from jaxsel.models.tokenizer import Tokenizer

    tok = Tokenizer(tokenizers.Tokenizer.from_str(tiny_tokenizer_json(TINY.vocab_size)), 0, 0)
    lm = loaders.LoadedLM(TINY, random_params(TINY, seed=1), tok, "tiny")
    loads = []
    monkeypatch.setattr(loaders, "load_lm", lambda model, dtype: loads.append(model) or lm)
    ref = Corpus.from_texts(["def f(x): return x", "print(1)"])
    with methods.Run() as run:
        a = ppl.PPL.prepare(None, None, ppl.Config(), run)
        b = lamdas.LAMDAS.prepare(
            None, ref, lamdas.Config(epochs=0, prefix_len=2, init="random", max_tokens=16), run
        )
    assert a.lm is b.lm is lm and loads == [None]


def test_a_resumed_run_says_what_it_read_back(tmp_path, caplog):
    """The progress bar counts documents computed in this run; what a resume read back from the
    workdir is said once (and shown beside the bar)."""
    from jaxsel.methods import zipfit

    pool, target = make_pool(10, long_doc=False), make_target(2)
    cfg = zipfit.Config(workers=1, shard_size=3)
    caplog.set_level("INFO", logger="jaxsel")
    zipfit.score(pool, target, cfg, workdir=tmp_path)
    assert not [r for r in caplog.records if "read back" in r.getMessage()]
    sorted(tmp_path.glob("shard-*.npy"))[0].unlink()
    zipfit.score(pool, target, cfg, workdir=tmp_path)
    said = [r.getMessage() for r in caplog.records if "read back" in r.getMessage()]
    assert said[-1] == "zipfit: 3 of 4 batches read back from the workdir"
