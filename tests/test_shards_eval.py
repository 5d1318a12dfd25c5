"""Resumable shards, evaluation helpers (against scipy / hand counts) and mesh helpers."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxsel.errors import InputError
from jaxsel.evaluate import domain_mix, precision_at_k, precision_by_bucket, spearman
from jaxsel.shards import fingerprint_texts, run_sharded


def test_run_sharded_resumes_without_recomputing(tmp_path):
    calls = []

    def fn(s, e):
        calls.append((s, e))
        if len(calls) == 3 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise RuntimeError("simulated crash")
        return np.arange(s, e) * 2.0

    with pytest.raises(RuntimeError):
        run_sharded(10, fn, tmp_path / "w", {"job": 1}, shard_size=3)
    assert calls == [(0, 3), (3, 6), (6, 9)]
    calls.clear()
    out = run_sharded(10, fn, tmp_path / "w", {"job": 1}, shard_size=3)
    assert calls == [(6, 9), (9, 10)]  # finished shards are read back, not recomputed
    np.testing.assert_array_equal(out, np.arange(10) * 2.0)
    assert not list((tmp_path / "w").glob("*.tmp*"))


def test_run_sharded_refuses_another_job(tmp_path):
    run_sharded(4, lambda s, e: np.zeros(e - s), tmp_path, {"job": 1}, 2)
    with pytest.raises(InputError, match="another job"):
        run_sharded(4, lambda s, e: np.zeros(e - s), tmp_path, {"job": 2}, 2)


def test_run_sharded_in_memory_equals_on_disk(tmp_path):
    fn = lambda s, e: np.sqrt(np.arange(s, e))  # noqa: E731
    np.testing.assert_array_equal(
        run_sharded(7, fn, None, {}, 2), run_sharded(7, fn, tmp_path, {}, 2)
    )


def test_fingerprint_is_order_and_boundary_sensitive():
    assert fingerprint_texts(["ab", "c"]) != fingerprint_texts(["a", "bc"])
    assert fingerprint_texts(["a", "b"]) != fingerprint_texts(["b", "a"])
    assert fingerprint_texts(["a", "b"]) == fingerprint_texts(["a", "b"])


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert abs(spearman(a, b) - spearmanr(a, b).statistic) < 1e-12


def test_precision_and_mix_by_hand():
    ranked = ["py", "c", "py", "py", "js"]
    assert precision_at_k(ranked, "py", 4) == 0.75
    assert domain_mix(ranked) == {"py": 0.6, "c": 0.2, "js": 0.2}
    with pytest.raises(InputError):
        precision_at_k(ranked, "py", 6)


def test_precision_by_bucket_by_hand():
    domains = ["py", "c", "py", "c", "py", "c", "py", "c"]
    lengths = [1, 2, 3, 4, 5, 6, 7, 8]  # 2 buckets: items 0-3 short, 4-7 long
    ranking = np.array([4, 5, 0, 1, 6, 7, 2, 3])
    out = precision_by_bucket(ranking, domains, lengths, "py", k=4, n_buckets=2)
    # each bucket holds 2 of the 4 py items -> k' = 2; short: ranking [0, 1, 2, 3] -> 1 of 2 py
    assert [b["k"] for b in out] == [2, 2]
    assert [b["precision"] for b in out] == [0.5, 0.5]
    assert [b["selected_of_top_k"] for b in out] == [2, 2]
