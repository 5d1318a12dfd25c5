"""Perplexity filter: score = -mean token NLL of a text under a causal LM (higher = more fluent).

The classic untargeted quality filter (CCNet-style perplexity filtering, with the embedded
SmolLM2-135M by default); the target set is not used. Each text is prefixed with the tokenizer's
document separator (SmolLM2: <|endoftext|>) so its first token is predicted too, and **truncated
to its first `max_tokens` tokens**: the rest of a longer text is not scored
(`meta["truncated"]` counts such texts). A text with no token left after tokenisation gets -inf.

The pool streams in batches of `shard_size` texts (one resumable shard each, with a workdir);
inside a batch texts go shortest first into device batches of `batch_size` rows (padded to a
multiple of the `data` axis and to one of a few bucket lengths, so jit compiles one shape per
bucket), sharded over `data`: the LM runtime's `score_texts` (`jaxsel.lm`); this module adds the
mean and the perplexity.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.lm import score as lm_score
from jaxsel.methods import LOCAL, BatchScores, Run, Streamed, register
from jaxsel.models import llama
from jaxsel.models.loaders import DTYPES, LoadedLM


@dataclasses.dataclass(frozen=True)
class Config:
    """ppl: minus the mean token NLL under a causal LM (a fluency filter).

    Score: higher = more fluent under the LM (lower perplexity), not more like the target (the
    target is not used). Minus the mean token NLL in nats per token: ≤ 0, unbounded below
    (−inf for a text without a scored token); perplexity = exp(−score)."""

    model: str | None = option(
        None, "*.gguf file or HF directory (None: the embedded SmolLM2-135M)", input=True
    )
    dtype: str = option("float32", "compute dtype", choices=DTYPES)
    max_tokens: int = option(512, "texts are truncated to their first N tokens")
    batch_size: int = option(8, "texts per device call (rounded up to a multiple of the devices)")
    shard_size: int = option(512, "texts per batch and per resumable shard (with --workdir)")

    def __post_init__(self):
        for name in ("max_tokens", "batch_size", "shard_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"ppl: {name} must be a positive integer, got {v!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"ppl: dtype must be one of {DTYPES}, got {self.dtype!r}")


def _loglik_fn(cfg: llama.LlamaConfig, mesh):
    """The runtime's jitted `sum_logprob` for this model and mesh (what scoring runs)."""
    return lm_score.reducer_fn(lm_score.sum_logprob, cfg, mesh)


def text_logliks(
    lm: LoadedLM,
    texts: Sequence[str],
    config: Config,
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    mesh=None,
) -> lm_score.TokenScores:
    """Sum of token log-probs per text (values [N, 1]), tokens scored, truncated flags."""
    return lm_score.score_texts(
        lm,
        None,
        texts,
        lm_score.sum_logprob,
        max_tokens=config.max_tokens,
        batch_size=config.batch_size,
        name="ppl",
        workdir=workdir,
        shard_size=config.shard_size,
        progress=progress,
        mesh=mesh,
    )


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest)
    lm: LoadedLM
    config: Config
    mesh: jax.sharding.Mesh


def prepare(pool, target, config: Config, run: Run) -> State:
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
    total, tokens = res.values.total, res.n_tokens
    values = np.where(tokens > 0, total / np.maximum(tokens, 1), -np.inf)
    stats = {
        "loglik": float(total.sum()),
        "tokens_scored": int(tokens.sum()),
        "truncated": int(res.truncated.sum()),
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


PPL = Streamed("ppl", Config, prepare, score_batch, describe, LOCAL)
score = register(PPL).score
