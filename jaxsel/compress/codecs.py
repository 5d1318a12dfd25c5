"""Codecs for compression distances: each is one exact byte definition of C(x) = len(compress(x)).

| name | C(x) is the length of                                 | levels        | default |
|------|-------------------------------------------------------|---------------|---------|
| lz4  | `lz4.frame.compress(x, compression_level=L)`           | 0..16         | 0       |
| gzip | `gzip.compress(x, L, mtime=0)` (no timestamp)          | 1..9          | 9       |
| zlib | `zlib.compress(x, L)`                                  | 1..9          | 6       |
| zstd | `zstandard.ZstdCompressor(level=L).compress(x)`        | -131072..22   | 3       |
| bz2  | `bz2.compress(x, L)`                                   | 1..9          | 9       |
| lzma | `lzma.compress(x, preset=L)`                           | 0..9          | 6       |

lz4 level 0 (its fast parser; levels 1-2 are the same parser, 3+ are LZ4-HC) is ZIP-FIT's default:
the paper's best setting (Figure 8) and the official `zip-fit` package's. Deflate level 0 (gzip,
zlib) only stores the input, so every NCD would be ~1: it is refused.

`Codec.pair_sizes` gives C(x ⊕ y) for many pairs, exactly as the one-shot calls above would, but
without compressing x again for every y where the codec allows it:
- lz4 levels 0-2: x's parse is run once and resumed for every y (`_lz4pair.c`);
- gzip, zlib: x is fed once to a `zlib.compressobj`, which is copied for every y (deflate's
  output does not depend on how its input is split: tests check it against the one-shot call);
- the others compress x ⊕ y from scratch.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import lzma
import threading
import zlib
from collections.abc import Callable, Sequence

import lz4.frame
import numpy as np

from jaxsel.errors import InputError

try:  # built from _lz4pair.c at install time; optional (see pyproject.toml)
    from jaxsel.compress import _lz4pair
except ImportError:  # pragma: no cover - only without a C compiler
    _lz4pair = None

_GZIP_WBITS = 31  # zlib's gzip wrapper: what gzip.compress(..., mtime=0) returns
_ZLIB_WBITS = zlib.MAX_WBITS
_LZ4_FAST_MAX = 2  # lz4 frame levels below LZ4HC_CLEVEL_MIN (3) use the fast parser
_zstd_local = threading.local()


def _zstd_compress(data: bytes, level: int) -> bytes:
    # ZstdCompressor objects are not thread-safe: one per thread and level.
    cache = _zstd_local.__dict__.setdefault("compressors", {})
    if level not in cache:
        import zstandard

        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level].compress(data)


@dataclasses.dataclass(frozen=True)
class _Spec:
    lo: int
    hi: int
    default: int
    compress: Callable[[bytes, int], bytes]


_SPECS: dict[str, _Spec] = {
    "lz4": _Spec(0, 16, 0, lambda d, lv: lz4.frame.compress(d, compression_level=lv)),
    "gzip": _Spec(1, 9, 9, lambda d, lv: zlib.compress(d, lv, _GZIP_WBITS)),
    "zlib": _Spec(1, 9, 6, lambda d, lv: zlib.compress(d, lv, _ZLIB_WBITS)),
    "zstd": _Spec(-131072, 22, 3, _zstd_compress),
    "bz2": _Spec(1, 9, 9, lambda d, lv: bz2.compress(d, lv)),
    "lzma": _Spec(0, 9, 6, lambda d, lv: lzma.compress(d, preset=lv)),
}

NAMES = tuple(_SPECS)


@dataclasses.dataclass(frozen=True)
class Codec:
    """A compressor at one level (make it with `get`)."""

    name: str
    level: int

    def compress(self, data: bytes) -> bytes:
        return _SPECS[self.name].compress(data, self.level)

    def size(self, data: bytes) -> int:
        return len(self.compress(data))

    def sizes(self, texts: Sequence[bytes]) -> np.ndarray:
        """C(t) for each text: int64 [len(texts)]."""
        return np.fromiter((self.size(t) for t in texts), np.int64, len(texts))

    def pair_sizes(self, xs: Sequence[bytes], ys: Sequence[bytes]) -> np.ndarray:
        """C(x_i ⊕ y_j) for every pair, the pool item first: int64 [len(xs), len(ys)].

        One thread; the codecs release the GIL while they compress, so threads scale."""
        if self.name == "lz4" and self.level <= _LZ4_FAST_MAX and _lz4pair is not None:
            out = np.empty((len(xs), len(ys)), np.int64)
            _lz4pair.pair_sizes(xs, ys, 1, out)
            for i, j in zip(*np.nonzero(out < 0), strict=True):  # several blocks, or y empty
                out[i, j] = self.size(xs[i] + ys[j])
            return out
        if self.name in ("gzip", "zlib"):
            return _deflate_pair_sizes(
                xs, ys, self.level, _GZIP_WBITS if self.name == "gzip" else _ZLIB_WBITS
            )
        out = np.empty((len(xs), len(ys)), np.int64)
        for i, x in enumerate(xs):
            out[i] = [self.size(x + y) for y in ys]
        return out


def _deflate_pair_sizes(xs, ys, level: int, wbits: int) -> np.ndarray:
    out = np.empty((len(xs), len(ys)), np.int64)
    for i, x in enumerate(xs):
        head = zlib.compressobj(level, zlib.DEFLATED, wbits)
        n = len(head.compress(x))
        for j, y in enumerate(ys):
            c = head.copy()
            out[i, j] = n + len(c.compress(y)) + len(c.flush())
    return out


@functools.cache
def get(name: str, level: int | None = None) -> Codec:
    """The codec `name` at `level` (None: its default), or an InputError saying what is allowed."""
    if name not in _SPECS:
        raise InputError(f"unknown compressor {name!r}; choose one of {', '.join(NAMES)}")
    spec = _SPECS[name]
    if level is None:
        level = spec.default
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise InputError(f"{name} level must be an integer, got {level!r}")
    if name in ("gzip", "zlib") and level == 0:
        raise InputError(
            f"{name} level 0 stores without compressing, so every NCD would be ~1; "
            "use a level in 1..9"
        )
    if not spec.lo <= level <= spec.hi:
        raise InputError(f"{name} level must be in {spec.lo}..{spec.hi}, got {level}")
    return Codec(name, int(level))
