"""DSIR against a plain transcription of the reference package's featurisation and weights."""

import hashlib
import re
from collections import Counter

import numpy as np
import pytest
from test_zipfit import make_pool, make_target

from jaxsel import methods
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.methods import dsir
from jaxsel.scores import select_top_k


def reference_counts(text, buckets=10_000, n=2):
    """data_selection.hashed_ngram_dsir.get_ngram_counts, transcribed (WordPunct = the regex)."""
    words = re.findall(r"\w+|[^\w\s]+", text.lower())
    grams = words + [
        " ".join(words[i : i + k]) for k in range(2, n + 1) for i in range(len(words) - k + 1)
    ]
    counts = np.zeros(buckets, dtype=int)
    for g in grams:
        counts[int(hashlib.sha256(g.encode("utf-8")).hexdigest(), 16) % buckets] += 1
    return counts


def reference_weights(pool, target, buckets=10_000, n=2):
    raw = sum(reference_counts(t, buckets, n) for t in pool)
    tgt = sum(reference_counts(t, buckets, n) for t in target)
    log_diff = np.log(tgt / tgt.sum() + 1e-8) - np.log(raw / raw.sum() + 1e-8)
    return np.array([np.dot(log_diff, reference_counts(t, buckets, n)) for t in pool])


def test_features_by_hand():
    h = dsir.Hasher(10_000, 2)
    ids = h.ids("Hello, World! hello")
    # tokens: hello , world ! hello -> 5 unigrams + 4 bigrams
    assert len(ids) == 9
    assert Counter(ids.tolist())[h.bucket("hello")] >= 2
    assert h.bucket("hello") == int(hashlib.sha256(b"hello").hexdigest(), 16) % 10_000
    assert h.bucket("world !") == int(hashlib.sha256(b"world !").hexdigest(), 16) % 10_000
    want = reference_counts("Hello, World! hello")
    assert np.array_equal(np.bincount(ids, minlength=10_000), want)


@pytest.mark.parametrize("buckets, n", [(10_000, 2), (97, 3), (1000, 1)])
def test_weights_equal_reference(buckets, n):
    pool, target = make_pool(10, seed=8, long_doc=False), make_target(4)
    got = dsir.score(pool, target, dsir.Config(buckets=buckets, ngrams=n))
    want = reference_weights(pool.texts, target.texts, buckets, n)
    assert np.allclose(got.values, want, rtol=1e-12, atol=1e-9)
    assert got.meta["resample"] == "topk"


def test_target_like_items_rank_first():
    pool, target = make_pool(20, seed=9, long_doc=False), make_target(6)
    s = methods.get("dsir").score(pool, target, dsir.Config())
    top = [pool.records[i]["domain"] for i in select_top_k(s, 5)]
    assert top.count("python") >= 4


def test_gumbel_resampling_is_seeded():
    pool, target = make_pool(12, long_doc=False), make_target(3)
    plain = dsir.score(pool, target, dsir.Config())
    a = dsir.score(pool, target, dsir.Config(resample="gumbel", seed=3))
    b = dsir.score(pool, target, dsir.Config(resample="gumbel", seed=3))
    c = dsir.score(pool, target, dsir.Config(resample="gumbel", seed=4))
    assert np.array_equal(a.values, b.values) and not np.array_equal(a.values, c.values)
    noise = a.values - plain.values
    assert np.allclose(noise, np.random.default_rng(3).gumbel(size=len(pool)))


def test_resume_with_workdir(tmp_path):
    pool, target = make_pool(9, long_doc=False), make_target(2)
    cfg = dsir.Config(shard_size=2)
    first = dsir.score(pool, target, cfg, workdir=tmp_path)
    assert len(list(tmp_path.glob("shard-*.npy"))) == 5
    again = dsir.score(pool, target, cfg, workdir=tmp_path)
    assert np.array_equal(first.values, again.values)


def test_pool_counts_resume_from_their_shards(tmp_path, monkeypatch):
    """With a workdir, the first pass keeps each batch's bucket counts as a shard: a rerun
    after a kill (one count shard and every score shard missing) counts that batch alone and
    gives the same scores."""
    pool, target = make_pool(9, long_doc=False), make_target(2)
    cfg = dsir.Config(shard_size=2)
    first = dsir.score(pool, target, cfg, workdir=tmp_path)
    counts = sorted((tmp_path / "pool-counts").glob("shard-*.npy"))
    assert len(counts) == 5
    counts[2].unlink()  # rows 4 and 5
    for p in tmp_path.glob("shard-*"):
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in counts if p.exists()}
    calls = []
    real = dsir.Hasher.counts
    monkeypatch.setattr(dsir.Hasher, "counts", lambda h, t: calls.append(list(t)) or real(h, t))
    again = dsir.score(pool, target, cfg, workdir=tmp_path)
    assert calls == [list(target.texts), list(pool.texts[4:6])]  # the target; that batch
    assert np.array_equal(first.values, again.values) and counts[2].exists()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"buckets": 0}, "buckets"),
        ({"ngrams": 0}, "ngrams"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"resample": "multinomial"}, "resample"),
    ],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        dsir.Config(**kwargs)


def test_empty_target():
    with pytest.raises(InputError, match="non-empty target"):
        dsir.score(make_pool(3, long_doc=False), Corpus((), (), ()), dsir.Config())
