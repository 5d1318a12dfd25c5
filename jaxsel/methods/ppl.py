"""Perplexity filter: score = -mean token NLL of a text under a causal LM (higher = more fluent).

The classic untargeted quality filter (CCNet-style perplexity filtering, with the embedded
SmolLM2-135M by default); the target set is not used. Each text is prefixed with the tokenizer's
document separator (SmolLM2: <|endoftext|>) so its first token is predicted too, and **truncated
to its first `max_tokens` tokens**: the rest of a longer text is not scored
(`meta["truncated"]` counts such texts). A text with no token left after tokenisation gets -inf.

Texts go shortest first into batches of `batch_size` rows (padded to a multiple of the `data`
axis and to one of a few bucket lengths, so jit compiles one shape per bucket), sharded over
`data`; with a workdir the scoring runs in resumable shards.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.batching import map_token_rows
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.kernels.loglik import sequence_loglik
from jaxsel.methods import register
from jaxsel.models import llama
from jaxsel.models.loaders import DTYPES, LoadedLM
from jaxsel.scores import Scores

MIN_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class Config:
    """Perplexity scoring settings.

    Attributes:
      model: "smollm2" / None (the embedded SmolLM2-135M), a *.gguf file or an HF directory.
      dtype: compute dtype, "float32" or "bfloat16".
      max_tokens: texts are truncated to their first max_tokens tokens.
      batch_size: texts per device call (rounded up to a multiple of the device count).
      shard_size: texts per resumable shard (with a workdir).
    """

    model: str | None = None
    dtype: str = "float32"
    max_tokens: int = 512
    batch_size: int = 8
    shard_size: int = 512

    def __post_init__(self):
        for name in ("max_tokens", "batch_size", "shard_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"ppl: {name} must be a positive integer, got {v!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"ppl: dtype must be one of {DTYPES}, got {self.dtype!r}")


def add_args(p, name):
    d = Config()
    p.add_argument("--model", help="*.gguf file or HF directory (default: SmolLM2-135M, embedded)")
    p.add_argument("--dtype", default=d.dtype, choices=DTYPES)
    p.add_argument(
        "--max-tokens",
        type=int,
        default=d.max_tokens,
        help="texts are truncated to their first N tokens",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="texts per device call")


def config_from_args(args, name) -> Config:
    return Config(
        model=args.model, dtype=args.dtype, max_tokens=args.max_tokens, batch_size=args.batch_size
    )


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


@register("ppl", Config)
def score(
    pool: Corpus,
    target: Corpus | None,
    config: Config,
    *,
    workdir=None,
    progress: bool = True,
    lm: LoadedLM | None = None,
    mesh=None,
    **_,
) -> Scores:
    """Scores every pool item by -mean token NLL (nats); `target` is ignored."""
    if lm is None:
        from jaxsel.models.loaders import load_lm

        lm = load_lm(config.model, config.dtype)
    res = text_logliks(lm, pool.texts, config, workdir=workdir, progress=progress, mesh=mesh)
    total, tokens = res[:, 0], res[:, 1]
    values = np.where(tokens > 0, total / np.maximum(tokens, 1), -np.inf)
    nll = float(-total.sum() / max(tokens.sum(), 1))
    meta = {
        "config": dataclasses.asdict(config),
        "model": lm.fingerprint,
        "tokens_scored": int(tokens.sum()),
        "truncated": int(res[:, 2].sum()),
        "unscored": int((tokens == 0).sum()),
        "nll": nll,
        "perplexity": float(np.exp(nll)),
    }
    return Scores(values, "ppl", meta)
