"""ZIP-FIT (Algorithm 1 of the ZIP-FIT paper) and a separately named conditional-compression
variant.

"zipfit", exact: for pool item x and target examples y_1..y_n,

    NCD(x, y) = (C(x ⊕ y) − min(C(x), C(y))) / max(C(x), C(y))     (x ⊕ y: pool item first)
    alignment(x) = 1 − (1/n) Σ_j NCD(x, y_j)

with C = compressed size under one codec (`jaxsel.compress.codecs`; default lz4 level 0, the
paper's best setting in Figure 8 and the official package's default). C(y_j) is computed once,
C(x) once per item, and the N·n pair sizes by the CPU compressor pool, which reuses x's
compression across its n pairs where that is exact (lz4 fast levels, gzip/zlib).

"zipfit-fast" is NOT the paper's score. It costs one compression per pool item instead of n:
the whole target set is a zstd raw-content dictionary T and

    alignment_fast(x) = 1 − C(x | T) / C(x)

the fraction of x's compressed size that the targets explain (mean over dictionary groups of at
most `DICT_BYTES` when the targets are larger). It ranks differently from exact NCD: see
`experiments/zipfit_default.py` for its Spearman agreement and top-K overlap.

`debias="length"` (both methods) standardises scores within pool length bins (20 quantile bins
of byte length, fewer for pools under 1,000 items): exact ZIP-FIT ranks short documents first
(Spearman(score, length) ≈ −0.9 on the default pool), and the standardised score doubles
precision@100 there (experiments/zipfit_default.py). The paper's score is the default.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from typing import NamedTuple

import numpy as np

from jaxsel.compress import CompressorPool, codecs
from jaxsel.compress.pool import EXECUTORS, chunks, default_workers
from jaxsel.data import Corpus
from jaxsel.data.sources import READ_BATCH
from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.methods import (
    LOCAL_AND_RAY,
    BatchScores,
    Run,
    Streamed,
    register,
    require_pool_and_target,
)
from jaxsel.methods.passes import rescored
from jaxsel.shards import fingerprint_texts
from jaxsel.stats import length_buckets

DEBIAS = ("none", "length")
DICT_BYTES = 1 << 20  # zipfit-fast: target bytes per zstd dictionary (well inside its window)
_PAIR_BLOCK = 1 << 22  # pair sizes held at once (int64): 32 MiB, whatever the pool size


@dataclasses.dataclass(frozen=True)
class Config:
    """ZIP-FIT: normalised compression distance to the target set (Algorithm 1, exact).

    Score: higher = more like the target. 1 − mean NCD(x, y_j) over the target items, about
    [0, 1] (NCD may exceed 1 a little, so slightly negative scores occur); with --debias length,
    z-scores within length bins (unbounded, mean 0 in each bin)."""

    compressor: str = option(
        "lz4", "codec for C(.) (lz4 is the paper's best)", choices=codecs.NAMES
    )
    level: int | None = option(None, "codec level; None = the codec's own (lz4 0, gzip 9)")
    debias: str = option(
        "none", "'length': standardise scores within length bins (not the paper's)", choices=DEBIAS
    )
    workers: int = option(0, "compressor threads/processes (0 = all cores)", per_worker=True)
    executor: str = option(
        "auto",
        "compressor pool: threads, processes or batch (zstd); auto: measured per codec",
        choices=EXECUTORS,
    )
    shard_size: int = option(1024, "pool items per batch and per resumable shard (with --workdir)")


@dataclasses.dataclass(frozen=True)
class FastConfig:
    """zipfit-fast: zstd conditional compression given the whole target set.

    Score: higher = more like the target. 1 − C(x | T)/C(x) with T the target set as a zstd
    dictionary: at most 1, about [0, 1) (below 0 where the dictionary costs more than it saves);
    not the paper's NCD. --debias length: z-scores within length bins (unbounded)."""

    level: int = option(9, "zstd level")
    debias: str = option(
        "none", "'length': standardise scores within length bins (not the paper's)", choices=DEBIAS
    )
    workers: int = option(0, "compressor threads (0 = all cores)", per_worker=True)
    shard_size: int = option(4096, "pool items per batch and per resumable shard (with --workdir)")


# ------------------------------------------------------------------------------ pure math


def ncd(cx: np.ndarray, cy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """NCD from compressed sizes: cx [N], cy [n], cxy [N, n] -> [N, n] float64."""
    cx = np.asarray(cx, np.int64)[:, None]
    cy = np.asarray(cy, np.int64)[None, :]
    return (cxy - np.minimum(cx, cy)) / np.maximum(cx, cy)


def alignment(cx: np.ndarray, cy: np.ndarray, cxy: np.ndarray) -> np.ndarray:
    """ZIP-FIT alignment 1 − mean_j NCD(x_i, y_j): [N] float64 (Algorithm 1, step 5)."""
    return 1.0 - ncd(cx, cy, cxy).mean(axis=1)


def length_debiased(values: np.ndarray, lengths, n_bins: int | None = None) -> np.ndarray:
    """Scores standardised ((v − median) / std) within quantile bins of length."""
    values = np.asarray(values, np.float64)
    if n_bins is None:
        n_bins = int(np.clip(values.size // 50, 1, 20))
    bins = length_buckets(lengths, n_bins)
    out = np.empty_like(values)
    for b in np.unique(bins):
        m = bins == b
        sd = values[m].std()
        out[m] = (values[m] - np.median(values[m])) / (sd if sd > 0 else 1.0)
    return out


# ------------------------------------------------------------------------------ methods


def _check(target: Corpus | None, debias: str, name: str) -> None:
    require_pool_and_target(None, target, name)
    if debias not in DEBIAS:
        raise InputError(f"debias must be one of {', '.join(DEBIAS)}, got {debias!r}")


def pool_lengths(pool) -> list[int]:
    """The UTF-8 byte length of every pool document, streamed in pool order."""
    return [len(t.encode("utf-8")) for b in pool.batches(READ_BATCH) for t in b.texts]


def _rescore(values: np.ndarray, pool, config) -> np.ndarray:
    """debias="length": standardised within length bins of the whole pool."""
    return length_debiased(values, pool_lengths(pool))


def _build(method: Streamed):
    """The method for a config: streamed, or with the length-debiasing rescore pass."""
    debiased = rescored(method, _rescore)
    return lambda config: debiased if config.debias == "length" else method


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest)
    pool: CompressorPool  # holds the targets and their compressed sizes
    block: int  # pool items per pair-size block
    meta: dict


def prepare(pool, target: Corpus | None, config: Config, run: Run) -> State:
    """C(y_j) of every target, once, in a compressor pool that lives as long as the run."""
    _check(target, config.debias, "zipfit")
    codec = codecs.get(config.compressor, config.level)
    ys = [t.encode("utf-8") for t in target.texts]
    cp = run.enter(CompressorPool(codec, ys, config.workers, config.executor))
    key = {
        "method": "zipfit",
        "codec": codec.name,
        "level": codec.level,
        "target": fingerprint_texts(target.texts),
    }
    meta = {
        "compressor": codec.name,
        "level": codec.level,
        "executor": cp.executor,
        "workers": cp.workers,
        "debias": config.debias,
    }
    return State(key, cp, max(1, _PAIR_BLOCK // len(ys)), meta)


def score_batch(state: State, batch) -> BatchScores:
    """Exact ZIP-FIT alignment of each document of the batch (higher = closer to the targets)."""
    xs = [t.encode("utf-8") for t in batch.texts]
    cp = state.pool
    out = []
    for s in range(0, len(xs), state.block):
        chunk = xs[s : s + state.block]
        out.append(alignment(cp.sizes(chunk), cp.target_sizes, cp.pair_sizes(chunk)))
    return BatchScores(np.concatenate(out), {"pairs": len(xs) * len(cp.targets)})


def describe(state: State, stats: dict) -> dict:
    return {**state.meta, "pairs": int(stats.get("pairs", 0))}


ZIPFIT = Streamed("zipfit", Config, prepare, score_batch, describe, LOCAL_AND_RAY)
score = register(ZIPFIT, _build(ZIPFIT)).score


def _dict_groups(ys: list[bytes]) -> list[bytes]:
    """Consecutive targets joined into dictionaries of at most DICT_BYTES (one per oversized
    target)."""
    groups, cur, size = [], [], 0
    for y in ys:
        if cur and size + len(y) > DICT_BYTES:
            groups.append(b"".join(cur))
            cur, size = [], 0
        cur.append(y)
        size += len(y)
    groups.append(b"".join(cur))
    return groups


def _fast_sizes(xs: list[bytes], dicts, level: int) -> np.ndarray:
    """[len(xs), 1 + len(dicts)]: C(x) and C(x | T_g) for each dictionary group."""
    import zstandard

    plain = zstandard.ZstdCompressor(level=level)
    conds = [zstandard.ZstdCompressor(level=level, dict_data=d) for d in dicts]
    return np.array(
        [[len(plain.compress(x))] + [len(c.compress(x)) for c in conds] for x in xs], np.int64
    )


class FastState(NamedTuple):
    key: dict
    dicts: list  # zstd raw-content dictionaries of the target groups
    level: int
    workers: int
    executor: cf.ThreadPoolExecutor
    meta: dict


def prepare_fast(pool, target: Corpus | None, config: FastConfig, run: Run) -> FastState:
    """The target set as zstd dictionaries (precomputed for the level), once."""
    import zstandard

    _check(target, config.debias, "zipfit-fast")
    codecs.get("zstd", config.level)  # validates the level
    groups = _dict_groups([t.encode("utf-8") for t in target.texts])
    dicts = []
    for g in groups:
        d = zstandard.ZstdCompressionDict(g, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        d.precompute_compress(level=config.level)
        dicts.append(d)
    key = {
        "method": "zipfit-fast",
        "level": config.level,
        "dict_bytes": DICT_BYTES,
        "target": fingerprint_texts(target.texts),
    }
    workers = config.workers or default_workers()
    meta = {
        "compressor": "zstd",
        "level": config.level,
        "dictionaries": len(dicts),
        "definition": "1 - C(x|T)/C(x)",
        "debias": config.debias,
    }
    ex = run.enter(cf.ThreadPoolExecutor(workers))
    return FastState(key, dicts, config.level, workers, ex, meta)


def score_batch_fast(state: FastState, batch) -> BatchScores:
    """Conditional-compression alignment 1 − C(x | T)/C(x) (not the paper's NCD score)."""
    xs = [t.encode("utf-8") for t in batch.texts]
    parts = state.executor.map(
        lambda c: _fast_sizes(c, state.dicts, state.level), chunks(xs, state.workers)
    )
    sizes = np.concatenate(list(parts))
    return BatchScores(1.0 - (sizes[:, 1:] / sizes[:, :1]).mean(axis=1))


def describe_fast(state: FastState, stats: dict) -> dict:
    return dict(state.meta)


ZIPFIT_FAST = Streamed(
    "zipfit-fast", FastConfig, prepare_fast, score_batch_fast, describe_fast, LOCAL_AND_RAY
)
score_fast = register(ZIPFIT_FAST, _build(ZIPFIT_FAST)).score
