"""Resumable shards, evaluation helpers (against scipy / hand counts) and mesh helpers."""

import uuid
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxsel.errors import InputError
from jaxsel.evaluate import domain_mix, precision_at_k, precision_by_bucket, spearman
from jaxsel.shards import BatchShards, fingerprint_texts, run_sharded


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


def _memory_dir():
    """A fresh memory:// directory and its filesystem (one memory filesystem per process)."""
    fsspec = pytest.importorskip("fsspec")
    return f"memory://jaxsel-shards-{uuid.uuid4().hex[:8]}/w", fsspec.filesystem("memory")


def _remote_files(m, url) -> dict[str, bytes]:
    root = url[len("memory://") :].rstrip("/")
    return {p[len(root) + 1 :].lstrip("/"): m.cat_file(p) for p in m.find(root)}


def test_a_memory_workdir_holds_the_local_files_byte_for_byte_and_resumes(tmp_path, caplog):
    url, m = _memory_dir()
    calls = []

    def fn(s, e):
        calls.append((s, e))
        return np.arange(s, e) * 0.5

    here = run_sharded(10, fn, tmp_path / "w", {"job": 1}, shard_size=3)
    there = run_sharded(10, fn, url, {"job": 1}, shard_size=3)
    local = {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()}
    assert len(local) == 5 and _remote_files(m, url) == local  # same names, same bytes
    np.testing.assert_array_equal(there, here)
    # one shard deleted, one corrupted (same length, other bytes): only those two are redone
    names = sorted(n for n in local if n.startswith("shard-"))
    root = url[len("memory://") :]
    m.rm(f"{root}/{names[1]}")
    m.pipe_file(f"{root}/{names[2]}", local[names[2]][:-8] + b"\0" * 8)
    calls.clear()
    with caplog.at_level("WARNING", logger="jaxsel.shards"):
        again = run_sharded(10, fn, url, {"job": 1}, shard_size=3)
    assert calls == [(3, 6), (6, 9)]
    assert "does not verify" in caplog.text and names[2] in caplog.text
    np.testing.assert_array_equal(again, here)
    assert _remote_files(m, url) == local  # no temporary or damaged object left
    # the same directory spelled file:// is the local workdir
    calls.clear()
    run_sharded(10, fn, f"file://{tmp_path / 'w'}", {"job": 1}, shard_size=3)
    assert calls == []
    m.rm(root.rsplit("/", 1)[0], recursive=True)


def test_a_memory_workdir_refuses_another_job_a_bad_manifest_and_a_file(tmp_path):
    url, m = _memory_dir()
    run_sharded(4, lambda s, e: np.zeros(e - s), url, {"job": 1}, shard_size=2)
    with pytest.raises(InputError, match="another job"):
        run_sharded(4, lambda s, e: np.zeros(e - s), url, {"job": 2}, shard_size=2)
    root = url[len("memory://") :]
    m.pipe_file(f"{root}/manifest.json", b"[" * 10)
    with pytest.raises(InputError, match=r"manifest.json: not a readable manifest"):
        run_sharded(4, lambda s, e: np.zeros(e - s), url, {"job": 1}, shard_size=2)
    m.pipe_file(f"{root}-file", b"x")
    with pytest.raises(InputError, match=r"-file: exists and is not a directory"):
        run_sharded(4, lambda s, e: np.zeros(e - s), f"{url}-file", {"job": 1}, shard_size=2)
    # a URL folded into a path would be a local directory named "memory:": refused
    with pytest.raises(InputError, match="a remote location given as a path"):
        run_sharded(4, lambda s, e: np.zeros(e - s), Path(url), {"job": 1}, shard_size=2)
    assert not Path("memory:").exists()
    m.rm(root.rsplit("/", 1)[0], recursive=True)


def test_a_failed_remote_write_leaves_nothing_under_its_name(monkeypatch):
    """A shard's bytes reach its final name only whole: a write that fails after its
    temporary object (here the move onto the name) leaves neither, and the rerun redoes it."""
    url, m = _memory_dir()
    moves = []
    real_mv = type(m).mv

    def mv(self, a, b, **kw):
        moves.append(b)
        if len(moves) == 3:  # manifest, shard 0, then shard 1 fails
            raise OSError("simulated network failure")
        return real_mv(self, a, b, **kw)

    monkeypatch.setattr(type(m), "mv", mv)
    calls = []

    def fn(s, e):
        calls.append((s, e))
        return np.arange(s, e) * 1.0

    with pytest.raises(InputError, match="simulated network failure"):
        run_sharded(6, fn, url, {"job": 1}, shard_size=2)
    names = sorted(_remote_files(m, url))
    assert len(names) == 2 and names[0] == "manifest.json" and names[1].startswith("shard-000000-")
    monkeypatch.setattr(type(m), "mv", real_mv)
    calls.clear()
    np.testing.assert_array_equal(run_sharded(6, fn, url, {"job": 1}, shard_size=2), np.arange(6.0))
    assert calls == [(2, 4), (4, 6)]
    m.rm(url[len("memory://") :].rsplit("/", 1)[0], recursive=True)


def test_batch_shards_at_a_url_are_the_local_bytes(tmp_path):
    url, m = _memory_dir()
    vals, stats, fp = np.arange(4.0), {"n": 4, "s": 6.0}, fingerprint_texts(["a", "b"])
    for d in (tmp_path / "w", url):
        store = BatchShards(d, {"k": 1}, 4)
        assert store.empty() and store.load("000000-000000000", fp) is None
        store.save("000000-000000000", vals, stats, fp)
        got = BatchShards(d, {"k": 1}, 4).load("000000-000000000", fp)
        np.testing.assert_array_equal(got[0], vals)
        assert got[1] == stats and not store.empty()
    local = {p.name: p.read_bytes() for p in (tmp_path / "w").iterdir()}
    assert len(local) == 3 and _remote_files(m, url) == local  # manifest, .json, .npy
    # other documents under the same name: both files are discarded, the batch redone
    assert BatchShards(url, {"k": 1}, 4).load("000000-000000000", fingerprint_texts(["c"])) is None
    assert list(_remote_files(m, url)) == ["manifest.json"]
    m.rm(url[len("memory://") :].rsplit("/", 1)[0], recursive=True)


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
