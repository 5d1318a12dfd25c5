"""Codecs and the compressor pool: byte definitions, exact pair sizes, levels, executors."""

import bz2
import gzip
import lzma
import random
import zlib

import lz4.frame
import numpy as np
import pytest
import zstandard

from jaxsel.compress import NAMES, CompressorPool, codecs, get
from jaxsel.errors import InputError

# One-shot reference calls, written out independently of jaxsel.compress.codecs.
REFERENCE = {
    "lz4": lambda d, lv: lz4.frame.compress(d, compression_level=lv),
    "gzip": lambda d, lv: gzip.compress(d, lv, mtime=0),
    "zlib": lambda d, lv: zlib.compress(d, lv),
    "zstd": lambda d, lv: zstandard.ZstdCompressor(level=lv).compress(d),
    "bz2": lambda d, lv: bz2.compress(d, lv),
    "lzma": lambda d, lv: lzma.compress(d, preset=lv),
}


def _texts(n, seed=0, words=None, lo=1, hi=60):
    rng = random.Random(seed)
    words = words or [
        "def",
        "return",
        "self",
        "x",
        "(",
        ")",
        ":",
        "\n    ",
        "for",
        "in",
        "the",
        "licence",
        "if",
        "=",
        "0",
        "1",
        "é",
        "λ",
        "import",
        "#",
    ]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))).encode() for _ in range(n)
    ]


def _adversarial(seed=0):
    """Inputs that reach the lz4 parser's corners: tiny (< 13 bytes, no match search), random
    (blocks stored raw, output-budget failures), runs and periodic data (long matches that
    cross from x into y), near and past the 64 KB single-block limit."""
    rng = random.Random(seed)
    out = [
        b"a",
        b"ab" * 3,
        b"abc" * 20,
        b"x" * 5000,
        b"hello world " * 300,
        rng.randbytes(100),
        rng.randbytes(3000),
        rng.randbytes(65536 - 40),
        b"q" * 70000,
    ]
    out += [bytes(rng.choice(b"ab") for _ in range(rng.randint(1, 400))) for _ in range(25)]
    out += [rng.randbytes(rng.randint(1, 50)) + b"z" * rng.randint(0, 40) for _ in range(25)]
    return out


def test_tiny_inputs_by_hand():
    # lz4 frame of N < 13 bytes: the block would be one literal run (1 + N bytes), not smaller
    # than N, so it is stored raw: 15 header bytes (magic, FLG, BD, 8-byte content size, HC)
    # + 4 block size + N + 4 end mark = N + 23.
    c = get("lz4")
    assert [c.size(b"abc"), c.size(b"hello"), c.size(b"abchello")] == [26, 28, 31]
    from jaxsel.methods.zipfit import alignment, ncd

    # NCD(abc, hello) = (C(abchello) − min(26, 28)) / max(26, 28) = 5/28
    assert ncd([26], [28], np.array([[31]]))[0, 0] == 5 / 28
    assert c.pair_sizes([b"abc"], [b"hello"]).tolist() == [[31]]
    # Two targets: alignment = 1 − (5/28 + (C(abcabc) − 26)/26)/2 with C(abcabc) = 29.
    assert alignment([26], [28, 26], c.pair_sizes([b"abc"], [b"hello", b"abc"]))[
        0
    ] == pytest.approx(1 - (5 / 28 + 3 / 26) / 2, abs=1e-15)


def test_lz4_extension_is_built():
    assert codecs._lz4pair is not None, "jaxsel/compress/_lz4pair.c did not build (no C compiler?)"


@pytest.mark.parametrize("name", NAMES)
def test_sizes_are_the_reference_bytes(name):
    c = get(name)
    for t in _texts(5) + [b"x"]:
        assert c.compress(t) == REFERENCE[name](t, c.level)
    assert c.sizes(_texts(3)).tolist() == [len(REFERENCE[name](t, c.level)) for t in _texts(3)]


@pytest.mark.parametrize("level", [0, 1, 2, 3, 9])
def test_lz4_pair_sizes_exact(level):
    xs = _texts(12, 1) + _adversarial() + [b""]
    ys = _texts(6, 2) + _adversarial(1)[:12] + [b""]
    got = get("lz4", level).pair_sizes(xs, ys)
    want = [[len(REFERENCE["lz4"](x + y, level)) for y in ys] for x in xs]
    assert got.tolist() == want


@pytest.mark.parametrize(
    "name, level", [("gzip", 1), ("gzip", 6), ("gzip", 9), ("zlib", 1), ("zlib", 4), ("zlib", 9)]
)
def test_deflate_pair_sizes_exact(name, level):
    # x ⊕ y split across compressobj.copy(): window slides (> 32 KB), random and repetitive data.
    rng = random.Random(3)
    xs = _texts(6, 4) + [rng.randbytes(2000), b"ab" * 20000, b"".join(_texts(300, 5))]
    ys = _texts(5, 6) + [rng.randbytes(500), b"ab" * 50]
    got = get(name, level).pair_sizes(xs, ys)
    assert got.tolist() == [[len(REFERENCE[name](x + y, level)) for y in ys] for x in xs]


@pytest.mark.parametrize("name", ["zstd", "bz2", "lzma"])
def test_other_pair_sizes_exact(name):
    c = get(name, 1)
    xs, ys = _texts(3, 7), _texts(3, 8)
    assert c.pair_sizes(xs, ys).tolist() == [
        [len(REFERENCE[name](x + y, 1)) for y in ys] for x in xs
    ]


def test_gzip_is_deterministic():
    t = b"".join(_texts(20))
    assert get("gzip").compress(t) == get("gzip").compress(t) == gzip.compress(t, 9, mtime=0)


@pytest.mark.parametrize(
    "name, level, msg",
    [
        ("gzip", 0, "stores without compressing"),
        ("zlib", 0, "stores without compressing"),
        ("gzip", 10, r"1\.\.9"),
        ("lz4", -1, r"0\.\.16"),
        ("lz4", 17, r"0\.\.16"),
        ("bz2", 0, r"1\.\.9"),
        ("lzma", 10, r"0\.\.9"),
        ("zstd", 23, r"\.\.22"),
        ("lz4", 1.5, "integer"),
        ("brotli", None, "unknown compressor 'brotli'"),
    ],
)
def test_bad_codec_or_level(name, level, msg):
    with pytest.raises(InputError, match=msg):
        get(name, level)


@pytest.mark.parametrize(
    "name, level, executor",
    [
        ("gzip", 6, "threads"),
        ("gzip", 6, "processes"),
        ("zstd", 3, "batch"),
        ("zstd", 3, "auto"),
        ("lzma", 1, "auto"),
    ],
)
def test_pool_executors_agree(name, level, executor):
    xs, ys = _texts(23, 9), _texts(7, 10)
    c = get(name, level)
    with CompressorPool(c, ys, workers=2, executor=executor) as pool:
        assert pool.target_sizes.tolist() == c.sizes(ys).tolist()
        assert pool.sizes(xs).tolist() == c.sizes(xs).tolist()
        assert np.array_equal(pool.pair_sizes(xs), c.pair_sizes(xs, ys))
        assert pool.pair_sizes([]).shape == (0, 7)


def test_batch_executor_splits_large_batches(monkeypatch):
    from jaxsel.compress import pool as cpool

    monkeypatch.setattr(cpool, "BATCH_BYTES", 500)  # one pool item per batch, or less
    xs, ys = _texts(5, 11), _texts(4, 12)
    with CompressorPool(get("zstd", 1), ys, executor="batch") as pool:
        assert np.array_equal(pool.pair_sizes(xs), get("zstd", 1).pair_sizes(xs, ys))


def test_pool_bad_arguments():
    with pytest.raises(InputError, match="executor"):
        CompressorPool(get("lz4"), [b"a"], executor="gpu")
    with pytest.raises(InputError, match="workers"):
        CompressorPool(get("lz4"), [b"a"], workers=-1)
    with pytest.raises(InputError, match="batch executor is zstd"):
        CompressorPool(get("gzip"), [b"a"], executor="batch")
