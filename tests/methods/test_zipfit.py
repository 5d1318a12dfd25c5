"""ZIP-FIT against a plain transcription of Algorithm 1, for every codec; zipfit-fast; length
debiasing; ties; bad input; resume after a kill; determinism."""

import bz2
import gzip
import json
import lzma
import random
import signal
import subprocess
import sys
import textwrap
import zlib

import lz4.frame
import numpy as np
import pytest
import zstandard

from jaxsel import methods
from jaxsel.data import Corpus, write_jsonl
from jaxsel.errors import InputError
from jaxsel.methods import zipfit
from jaxsel.scores import select_top_k

# Direct codec calls, one per codec, independent of jaxsel.compress.
COMPRESS = {
    "lz4": lambda d, lv: lz4.frame.compress(d, compression_level=lv),
    "gzip": lambda d, lv: gzip.compress(d, lv, mtime=0),
    "zlib": lambda d, lv: zlib.compress(d, lv),
    "zstd": lambda d, lv: zstandard.ZstdCompressor(level=lv).compress(d),
    "bz2": lambda d, lv: bz2.compress(d, lv),
    "lzma": lambda d, lv: lzma.compress(d, preset=lv),
}


def reference_zipfit(pool_texts, target_texts, compress):
    """Algorithm 1, transcribed: one thread, one pair at a time."""

    def C(s):
        return len(compress(s.encode("utf-8")))

    cy = [C(y) for y in target_texts]
    out = []
    for x in pool_texts:
        cx = C(x)
        total = 0.0
        for y, c2 in zip(target_texts, cy, strict=True):
            total += (C(x + y) - min(cx, c2)) / max(cx, c2)
        out.append(1 - total / len(target_texts))
    return np.array(out)


CODE = [
    "def {n}(x, y):\n    return x {op} y\n",
    "for i in range({k}):\n    total += i * {k}\n",
    "class {N}:\n    def __init__(self):\n        self.v = {k}\n",
    "if x > {k}:\n    print('{n}')\nelse:\n    raise ValueError('{n}')\n",
]
PROSE = [
    "The {n} licence permits use, copying and modification. ",
    "Permission is granted to {n} provided that the notice stays. ",
    "Le logiciel « {n} » est fourni tel quel, sans garantie — ça va. ",
    ".TH {N} 1\n.SH NAME\n{n} \\- does {k} things\n",
]


def _doc(rng, parts, n):
    return "".join(
        rng.choice(parts).format(
            n=f"f{rng.randint(0, 30)}",
            N=f"C{rng.randint(0, 9)}",
            op=rng.choice("+-*"),
            k=rng.randint(0, 99),
        )
        for _ in range(n)
    )


def make_pool(n=12, seed=0, long_doc=True):
    rng = random.Random(seed)
    texts, domains = [], []
    for i in range(n):
        dom = "python" if i % 2 == 0 else "prose"
        texts.append(_doc(rng, CODE if dom == "python" else PROSE, rng.randint(1, 40)))
        domains.append(dom)
    if long_doc:  # > 64 KB: several lz4 blocks; > 32 KB: the deflate window slides
        texts.append(_doc(rng, CODE + PROSE, 2500))
        domains.append("mixed")
    return Corpus.from_texts(texts, ids=[f"d{i}" for i in range(len(texts))], domain=domains)


def make_target(n=4, seed=1):
    rng = random.Random(seed)
    return Corpus.from_texts(
        [_doc(rng, CODE, rng.randint(2, 8)) for _ in range(n)], ids=[f"t{i}" for i in range(n)]
    )


SLOW = {("zstd", 19), ("lzma", 6)}  # the 70 KB document costs seconds here
CASES = [
    ("lz4", 0),
    ("lz4", 2),
    ("lz4", 9),
    ("gzip", 1),
    ("gzip", 9),
    ("zlib", 6),
    ("zstd", 3),
    ("zstd", 19),
    ("bz2", 9),
    ("lzma", 6),
]


@pytest.mark.parametrize("name, level", CASES)
def test_equals_algorithm_1(name, level):
    pool, target = make_pool(long_doc=(name, level) not in SLOW), make_target()
    got = zipfit.score(pool, target, zipfit.Config(name, level, workers=2))
    want = reference_zipfit(pool.texts, target.texts, lambda d: COMPRESS[name](d, level))
    assert np.abs(got.values - want).max() < 1e-12
    assert got.meta["compressor"] == name and got.meta["level"] == level


def test_default_is_lz4_lowest_level():
    assert zipfit.Config().compressor == "lz4"
    s = methods.get("zipfit").score(make_pool(6, long_doc=False), make_target(2))
    assert (s.meta["compressor"], s.meta["level"]) == ("lz4", 0)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_deterministic_across_runs_and_executors(executor):
    pool, target = make_pool(9, seed=5), make_target(3)
    base = zipfit.score(pool, target, zipfit.Config("gzip", 9, workers=1, executor="threads"))
    again = zipfit.score(
        pool, target, zipfit.Config("gzip", 9, workers=2, executor=executor, shard_size=2)
    )
    assert np.array_equal(base.values, again.values)


def test_ties_keep_pool_order():
    pool = Corpus.from_texts(
        ["def f(x): return x", "The licence text here.", "def f(x): return x"], ids=["a", "b", "c"]
    )
    s = zipfit.score(pool, make_target(2))
    assert s.values[0] == s.values[2]
    order = select_top_k(s, 3).tolist()
    assert order.index(0) < order.index(2)


def test_python_ranks_above_prose():
    pool, target = make_pool(20, seed=3, long_doc=False), make_target(6)
    s = zipfit.score(pool, target)
    top = [pool.records[i]["domain"] for i in select_top_k(s, 5)]
    assert top.count("python") >= 4


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"compressor": "gzip", "level": 0}, "stores without compressing"),
        ({"compressor": "snappy"}, "unknown compressor"),
        ({"compressor": "lz4", "level": 99}, r"0\.\.16"),
        ({"debias": "size"}, "debias must be"),
        ({"executor": "gpu"}, "executor"),
    ],
)
def test_bad_config(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        zipfit.score(make_pool(3, long_doc=False), make_target(1), zipfit.Config(**kwargs))


@pytest.mark.parametrize("name", ["zipfit", "zipfit-fast"])
def test_empty_target_set(name):
    m = methods.get(name)
    empty = Corpus((), (), ())
    with pytest.raises(InputError, match="non-empty target"):
        m.score(make_pool(3, long_doc=False), empty, m.config_cls())
    with pytest.raises(InputError, match="non-empty target"):
        m.score(make_pool(3, long_doc=False), None, m.config_cls())


def test_k_larger_than_pool():
    s = zipfit.score(make_pool(3, long_doc=False), make_target(1))
    with pytest.raises(InputError, match="larger than the pool"):
        select_top_k(s, 4)


# ------------------------------------------------------------------------- zipfit-fast


def reference_fast(pool_texts, target_texts, level, dict_bytes):
    groups, cur = [], []
    for y in target_texts:
        b = y.encode()
        if cur and sum(map(len, cur)) + len(b) > dict_bytes:
            groups.append(b"".join(cur))
            cur = []
        cur.append(b)
    groups.append(b"".join(cur))
    plain = zstandard.ZstdCompressor(level=level)
    out = []
    for x in pool_texts:
        bx = x.encode()
        cx = len(plain.compress(bx))
        ratios = []
        for g in groups:
            d = zstandard.ZstdCompressionDict(g, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            ratios.append(len(zstandard.ZstdCompressor(level=level, dict_data=d).compress(bx)) / cx)
        out.append(1 - sum(ratios) / len(ratios))
    return np.array(out)


@pytest.mark.parametrize("dict_bytes", [zipfit.DICT_BYTES, 300])
def test_fast_is_conditional_compression(monkeypatch, dict_bytes):
    monkeypatch.setattr(zipfit, "DICT_BYTES", dict_bytes)
    pool, target = make_pool(8, long_doc=False), make_target(5)
    got = methods.get("zipfit-fast").score(pool, target, zipfit.FastConfig(level=5))
    want = reference_fast(pool.texts, target.texts, 5, dict_bytes)
    assert np.abs(got.values - want).max() < 1e-12
    assert got.method == "zipfit-fast" and got.meta["definition"] == "1 - C(x|T)/C(x)"
    assert got.meta["dictionaries"] == (1 if dict_bytes > 10_000 else 5)  # targets > 300 bytes


def test_fast_is_not_the_exact_score():
    pool, target = make_pool(8, long_doc=False), make_target(3)
    exact = methods.get("zipfit").score(pool, target, zipfit.Config())
    fast = methods.get("zipfit-fast").score(pool, target, zipfit.FastConfig())
    assert exact.method == "zipfit" and not np.allclose(exact.values, fast.values)


# ------------------------------------------------------------------------- length debiasing


def test_length_debiased_standardises_within_bins():
    rng = np.random.default_rng(0)
    lengths = np.repeat([100, 1000, 10000, 100000], 50)
    values = rng.normal(size=200) - np.log(lengths)  # a strong length trend
    out = zipfit.length_debiased(values, lengths, n_bins=4)
    for b in range(4):
        m = slice(50 * b, 50 * b + 50)
        assert np.median(out[m]) == pytest.approx(0, abs=1e-12)
        assert out[m].std() == pytest.approx(1)
        assert np.array_equal(np.argsort(out[m]), np.argsort(values[m]))  # order kept in a bin
    const = zipfit.length_debiased(np.ones(10), np.arange(10), n_bins=2)
    assert np.array_equal(const, np.zeros(10))


def test_debias_option():
    pool, target = make_pool(10, long_doc=False), make_target(3)
    raw = zipfit.score(pool, target)
    deb = zipfit.score(pool, target, zipfit.Config(debias="length"))
    assert deb.meta["debias"] == "length" and raw.meta["debias"] == "none"
    assert np.allclose(deb.values, zipfit.length_debiased(raw.values, pool.nbytes()))


# ------------------------------------------------------------------------- resume after a kill

KILLER = textwrap.dedent("""
    import os, signal, sys
    from jaxsel.compress import pool
    calls = 0
    orig = pool.CompressorPool.pair_sizes
    def pair_sizes(self, xs):
        global calls
        calls += 1
        if calls == 4:  # mid-run, with three shards on disk
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, xs)
    pool.CompressorPool.pair_sizes = pair_sizes
    from jaxsel.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_resume_after_kill(tmp_path, monkeypatch):
    pool, target = make_pool(15, seed=2, long_doc=False), make_target(4)
    write_jsonl(tmp_path / "pool.jsonl", pool.records)
    write_jsonl(tmp_path / "target.jsonl", target.records)
    wd = tmp_path / "work"
    args = [
        "score",
        "--pool",
        str(tmp_path / "pool.jsonl"),
        "--target",
        str(tmp_path / "target.jsonl"),
        "--workdir",
        str(wd),
        "--shard-size",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "resumed.jsonl"),
    ]
    proc = subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    done = sorted(wd.glob("shard-*.npy"))
    assert len(done) == 3
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}

    from jaxsel.cli import main
    from jaxsel.compress import pool as cpool

    calls = []
    orig = cpool.CompressorPool.pair_sizes
    monkeypatch.setattr(
        cpool.CompressorPool, "pair_sizes", lambda self, xs: calls.append(len(xs)) or orig(self, xs)
    )
    assert main(args) == 0
    assert len(calls) == 8 - 3  # 15 items in shards of 2: only the 5 missing shards
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == before
    monkeypatch.undo()
    rows = [json.loads(line) for line in (tmp_path / "resumed.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(pool.ids)
    assert np.array_equal([r["score"] for r in rows], zipfit.score(pool, target).values)


def test_workdir_of_another_job_is_refused(tmp_path):
    pool, target = make_pool(4, long_doc=False), make_target(2)
    zipfit.score(pool, target, workdir=tmp_path)
    with pytest.raises(InputError, match="another job"):
        zipfit.score(pool, target, zipfit.Config("gzip"), workdir=tmp_path)


def test_progress_bar(capsys):
    zipfit.score(make_pool(4, long_doc=False), make_target(2), progress=True)
    assert "zipfit" in capsys.readouterr().err
