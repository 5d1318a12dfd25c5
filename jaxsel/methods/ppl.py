"""Perplexity filter: score = -mean token NLL of a text under a causal LM (higher = more fluent).

The classic untargeted quality filter (CCNet-style perplexity filtering, with the embedded
SmolLM2-135M by default); the target set is not used. Each text is prefixed with the tokenizer's
document separator (SmolLM2: <|endoftext|>) so its first token is predicted too, and **truncated
to its first `max_tokens` tokens**: the rest of a longer text is not scored
(`meta["truncated"]` counts such texts). A text with no token left after tokenisation gets -inf.

The pool streams in batches of `shard_size` texts (one resumable shard each, with a workdir);
inside a batch texts go shortest first into device batches of `batch_size` rows (padded to a
multiple of the `data` axis and to one of a few bucket lengths, so jit compiles one shape per
bucket), sharded over `data`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.batching import map_token_rows
from jaxsel.errors import InputError
from jaxsel.kernels.loglik import sequence_loglik
from jaxsel.methods import BatchScores, Method, Run, register
from jaxsel.models import llama
from jaxsel.models.loaders import DTYPES, LoadedLM

MIN_BUCKET = 32


def _opt(default, help: str, **flag):
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclasses.dataclass(frozen=True)
class Config:
    """Perplexity scoring settings (field help: the CLI flags)."""

    model: str | None = _opt(None, "*.gguf file or HF directory (None: the embedded SmolLM2-135M)")
    dtype: str = _opt("float32", "compute dtype", choices=DTYPES)
    max_tokens: int = _opt(512, "texts are truncated to their first N tokens")
    batch_size: int = _opt(8, "texts per device call (rounded up to a multiple of the devices)")
    shard_size: int = _opt(512, "texts per batch and per resumable shard (with --workdir)")

    def __post_init__(self):
        for name in ("max_tokens", "batch_size", "shard_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"ppl: {name} must be a positive integer, got {v!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"ppl: dtype must be one of {DTYPES}, got {self.dtype!r}")


@functools.cache
def _loglik_fn(cfg: llama.LlamaConfig, mesh):
    """tokens, mask [B, T] -> sum of log p over each row's predicted tokens [B], jitted once per
    model and mesh: params replicated, rows sharded over `data`."""

    def loglik(params, tokens, mask):
        lp, _ = llama.token_logprobs(params, tokens, mask, cfg)
        return sequence_loglik(lp, mask[:, 1:])[0]

    rep, rows = parallel.replicated(mesh), parallel.sharding("batch", "seq", mesh=mesh)
    return jax.jit(loglik, in_shardings=(rep, rows, rows), out_shardings=parallel.sharding("batch"))


def text_logliks(
    lm: LoadedLM,
    texts: Sequence[str],
    config: Config,
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    mesh=None,
) -> np.ndarray:
    """[N, 3] float64 per text: sum of token log-probs, number of tokens scored, 1 if truncated."""
    if config.max_tokens + 1 > lm.cfg.max_position:
        raise InputError(
            f"ppl: max_tokens={config.max_tokens} (+1 separator) exceeds the model's context "
            f"({lm.cfg.max_position})"
        )
    mesh = mesh or parallel.data_mesh()
    fn = _loglik_fn(lm.cfg, mesh)
    params = jax.device_put(lm.params, parallel.replicated(mesh))
    rows = parallel.round_up(config.batch_size, parallel.data_size(mesh))
    return map_token_rows(
        lm.tokenizer,
        texts,
        config.max_tokens,
        rows,
        lambda tokens, mask: fn(params, tokens, mask),
        key={
            "what": "ppl",
            "model": lm.fingerprint,
            "dtype": lm.cfg.dtype,
            "max_tokens": config.max_tokens,
        },
        batch_size=config.batch_size,
        min_bucket=MIN_BUCKET,
        workdir=workdir,
        shard_size=config.shard_size,
        progress=progress,
        desc="ppl score",
    )


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest)
    lm: LoadedLM
    config: Config
    mesh: jax.sharding.Mesh


def prepare(target, config: Config, run: Run) -> State:
    """Loads the model (once per run); `target` is not used."""
    lm = run.lm(config.model, config.dtype)
    key = {
        "method": "ppl",
        "model": lm.fingerprint,
        "dtype": lm.cfg.dtype,
        "max_tokens": config.max_tokens,
    }
    return State(key, lm, config, run.mesh)


def score_batch(state: State, batch) -> BatchScores:
    """-mean token NLL of each text (its first max_tokens tokens); -inf without a token."""
    res = text_logliks(state.lm, batch.texts, state.config, mesh=state.mesh)
    total, tokens = res[:, 0], res[:, 1]
    values = np.where(tokens > 0, total / np.maximum(tokens, 1), -np.inf)
    stats = {
        "loglik": float(total.sum()),
        "tokens_scored": int(tokens.sum()),
        "truncated": int(res[:, 2].sum()),
        "unscored": int((tokens == 0).sum()),
    }
    return BatchScores(values, stats)


def describe(state: State, stats: dict) -> dict:
    tokens = stats.get("tokens_scored", 0)
    nll = float(-stats.get("loglik", 0.0) / max(tokens, 1))
    return {
        "config": dataclasses.asdict(state.config),
        "model": state.lm.fingerprint,
        "tokens_scored": int(tokens),
        "truncated": int(stats.get("truncated", 0)),
        "unscored": int(stats.get("unscored", 0)),
        "nll": nll,
        "perplexity": float(np.exp(nll)),
    }


PPL = register(Method("ppl", Config, prepare=prepare, score_batch=score_batch, describe=describe))
score = PPL.score
