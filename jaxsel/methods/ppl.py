"""Perplexity filter: score = -mean token NLL of a text under a causal LM (higher = more fluent).

The classic untargeted quality filter (CCNet-style perplexity filtering, with the embedded
SmolLM2-135M by default); the target set is not used. Each text is prefixed with the tokenizer's
document separator (SmolLM2: <|endoftext|>) so its first token is predicted too, and **truncated
to its first `max_tokens` tokens**: the rest of a longer text is not scored
(`meta["truncated"]` counts such texts). A text with no token left after tokenisation gets -inf.

Texts go shortest first into batches of `batch_size` rows (padded to a multiple of the `data`
axis and to one of a few bucket lengths, so jit compiles one shape per bucket), sharded over
`data`; with a workdir the scoring runs in resumable shards. All of this is the LM runtime's
`score_texts` (`jaxsel.lm`); this module adds the mean and the perplexity.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.lm import score as lm_score
from jaxsel.methods import register
from jaxsel.models import llama
from jaxsel.models.loaders import DTYPES, LoadedLM
from jaxsel.scores import Scores


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


def _loglik_fn(cfg: llama.LlamaConfig, mesh):
    """The runtime's jitted `sum_logprob` for this model and mesh (what `score` runs)."""
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
    total, tokens = res.values[:, 0], res.n_tokens
    values = np.where(tokens > 0, total / np.maximum(tokens, 1), -np.inf)
    nll = float(-total.sum() / max(tokens.sum(), 1))
    meta = {
        "config": dataclasses.asdict(config),
        "model": lm.fingerprint,
        "tokens_scored": int(tokens.sum()),
        "truncated": int(res.truncated.sum()),
        "unscored": int((tokens == 0).sum()),
        "nll": nll,
        "perplexity": float(np.exp(nll)),
    }
    return Scores(values, "ppl", meta)
