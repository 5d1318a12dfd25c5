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

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from jaxsel.compress import CompressorPool, codecs
from jaxsel.compress.pool import EXECUTORS
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.evaluate import length_buckets
from jaxsel.methods import register, require_pool_and_target
from jaxsel.scores import Scores
from jaxsel.shards import fingerprint_texts, run_sharded

DEBIAS = ("none", "length")
DICT_BYTES = 1 << 20  # zipfit-fast: target bytes per zstd dictionary (well inside its window)
_PAIR_BLOCK = 1 << 22  # pair sizes held at once (int64): 32 MiB, whatever the pool size


@dataclasses.dataclass(frozen=True)
class Config:
    """Exact ZIP-FIT.

    Attributes:
      compressor: codec name (`jaxsel.compress.NAMES`).
      level: codec level; None = the codec's default (lz4 0, gzip 9, ...).
      debias: "none" (the paper's score) or "length" (standardised within length bins).
      workers: compressor threads/processes; 0 = all cores.
      executor: "auto" (the measured faster one per codec), "threads", "processes" or
        "batch" (zstd's multi_compress_to_buffer).
      shard_size: pool items per resumable shard (with a workdir).
    """

    compressor: str = "lz4"
    level: int | None = None
    debias: str = "none"
    workers: int = 0
    executor: str = "auto"
    shard_size: int = 1024


@dataclasses.dataclass(frozen=True)
class FastConfig:
    """zipfit-fast: zstd conditional compression given the whole target set."""

    level: int = 9
    debias: str = "none"
    workers: int = 0
    shard_size: int = 4096


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


def _check(pool: Corpus, target: Corpus | None, debias: str, name: str) -> None:
    require_pool_and_target(pool, target, name)
    if debias not in DEBIAS:
        raise InputError(f"debias must be one of {', '.join(DEBIAS)}, got {debias!r}")


def _finish(values, pool, debias, name, meta) -> Scores:
    meta["debias"] = debias
    if debias == "length":
        values = length_debiased(values, pool.nbytes())
    return Scores(values, name, meta)


@register("zipfit", Config)
def score(
    pool: Corpus,
    target: Corpus | None,
    config: Config = Config(),
    *,
    workdir=None,
    progress: bool = False,
) -> Scores:
    """Exact ZIP-FIT alignment of every pool item (higher = closer to the target set)."""
    _check(pool, target, config.debias, "zipfit")
    codec = codecs.get(config.compressor, config.level)
    xs = [t.encode("utf-8") for t in pool.texts]
    ys = [t.encode("utf-8") for t in target.texts]
    key = {
        "method": "zipfit",
        "codec": codec.name,
        "level": codec.level,
        "pool": fingerprint_texts(pool.texts),
        "target": fingerprint_texts(target.texts),
    }
    block = max(1, _PAIR_BLOCK // len(ys))
    with (
        CompressorPool(codec, ys, config.workers, config.executor) as cp,
        tqdm(total=len(pool), unit="doc", desc="zipfit", disable=not progress) as bar,
    ):

        def shard(start: int, stop: int) -> np.ndarray:
            out = []
            for s in range(start, stop, block):
                chunk = xs[s : min(s + block, stop)]
                out.append(alignment(cp.sizes(chunk), cp.target_sizes, cp.pair_sizes(chunk)))
            return np.concatenate(out)

        values = run_sharded(len(pool), shard, workdir, key, config.shard_size, bar.update)
        meta = {
            "compressor": codec.name,
            "level": codec.level,
            "executor": cp.executor,
            "workers": cp.workers,
            "pairs": len(xs) * len(ys),
        }
    return _finish(values, pool, config.debias, "zipfit", meta)


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


@register("zipfit-fast", FastConfig)
def score_fast(
    pool: Corpus,
    target: Corpus | None,
    config: FastConfig = FastConfig(),
    *,
    workdir=None,
    progress: bool = False,
) -> Scores:
    """Conditional-compression alignment 1 − C(x | T)/C(x) (not the paper's NCD score)."""
    import concurrent.futures as cf

    import zstandard

    from jaxsel.compress.pool import chunks, default_workers

    _check(pool, target, config.debias, "zipfit-fast")
    codecs.get("zstd", config.level)  # validates the level
    xs = [t.encode("utf-8") for t in pool.texts]
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
        "pool": fingerprint_texts(pool.texts),
        "target": fingerprint_texts(target.texts),
    }
    workers = config.workers or default_workers()
    with (
        cf.ThreadPoolExecutor(workers) as ex,
        tqdm(total=len(pool), unit="doc", desc="zipfit-fast", disable=not progress) as bar,
    ):

        def shard(start: int, stop: int) -> np.ndarray:
            parts = ex.map(
                lambda c: _fast_sizes(c, dicts, config.level), chunks(xs[start:stop], workers)
            )
            sizes = np.concatenate(list(parts))
            return 1.0 - (sizes[:, 1:] / sizes[:, :1]).mean(axis=1)

        values = run_sharded(len(pool), shard, workdir, key, config.shard_size, bar.update)
    meta = {
        "compressor": "zstd",
        "level": config.level,
        "dictionaries": len(dicts),
        "definition": "1 - C(x|T)/C(x)",
    }
    return _finish(values, pool, config.debias, "zipfit-fast", meta)


# ------------------------------------------------------------------------------ CLI


def add_args(p, name: str) -> None:
    if name == "zipfit":
        p.add_argument(
            "--compressor",
            default="lz4",
            choices=codecs.NAMES,
            help="codec for C(.) (default: lz4, the paper's best)",
        )
        p.add_argument(
            "--level",
            type=int,
            default=None,
            help="codec level (default: the codec's own; lz4 0, gzip 9)",
        )
        p.add_argument(
            "--executor",
            default="auto",
            choices=EXECUTORS,
            help="compressor pool: threads, processes or batch (zstd); auto: measured per codec",
        )
    else:
        p.add_argument("--level", type=int, default=9, help="zstd level (default: 9)")
    p.add_argument(
        "--debias",
        default="none",
        choices=DEBIAS,
        help="'length': standardise scores within length bins (not the paper's)",
    )
    p.add_argument("--workers", type=int, default=0, help="compressor workers (0 = all cores)")
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="pool items per resumable shard (with --workdir)",
    )


def config_from_args(args, name: str):
    if name == "zipfit":
        cfg = Config(args.compressor, args.level, args.debias, args.workers, args.executor)
    else:
        cfg = FastConfig(args.level, args.debias, args.workers)
    if args.shard_size is not None:
        cfg = dataclasses.replace(cfg, shard_size=args.shard_size)
    return cfg
