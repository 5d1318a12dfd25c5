"""LAMDAS (Wu et al. 2025): a frozen causal LM as an implicit one-class classifier.

1. Prefix tuning (eq. 1): a domain prefix C of P per-layer keys/values is trained with AdamW on the
   mean token NLL of the reference (target) set; the model weights are frozen constants.
2. Scoring (eq. 3, per token, DESIGN §3): s(y) = exp(mean_t [log p(y_t|y_<t,C) - log p(y_t|y_<t)]),
   both terms from one jit-compiled forward pass over a doubled batch. `ratio="sum"` gives the raw
   sequence ratio p(y|C)/p(y) instead (it overflows to inf / underflows to 0 for long texts that
   the prefix changes a lot). Select with `--threshold 1.0` (the paper's tau = 1) or `-k`.

Texts are prefixed with the tokenizer's document separator (bos, SmolLM2: <|endoftext|>) so the
first text token is predicted too, and **truncated to their first `max_tokens` tokens**: the rest
of a longer text is neither trained on nor scored (`meta["truncated"]` counts such candidates).

The prefix is initialised, by default, from the model's own keys/values of the first P tokens of
the reference set (`init="tokens"`: at step 0, conditioning on C equals conditioning on those real
tokens), or at random (`init="random"`, N(0, init_scale^2)).

With `prefix_dir` the training state is checkpointed after every epoch (orbax) next to a
`lamdas.json` that records the model fingerprint and the training settings: a rerun resumes from
the last finished epoch, or reuses the finished prefix; another model is refused (AssetError),
other settings or another reference set too (InputError). A NaN loss stops training with an
error and leaves the last good epoch's checkpoint in place. Each epoch's checkpoint is
verified: `ckpt-<epoch>.sha256` holds a sha256 over its files bound to the model and settings,
written (atomically) once orbax has committed it; a checkpoint that does not verify (damaged,
or cut short by a crash) is retrained with a warning naming it, or refused by `load_prefix`
(all of this is the LM runtime's `AdapterStore`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel import parallel
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.kernels import lamdas as K
from jaxsel.lm import train as lm_train
from jaxsel.lm.adapters import adapter_hash
from jaxsel.lm.score import reducer_fn, score_texts
from jaxsel.lm.store import AdapterStore
from jaxsel.lm.train import TrainConfig, check_context, train_tokens
from jaxsel.methods import LOCAL, BatchScores, Run, Streamed, register
from jaxsel.models.llama import LlamaConfig, PrefixKV
from jaxsel.models.loaders import DTYPES, LoadedLM
from jaxsel.shards import fingerprint_texts

log = logging.getLogger(__name__)

INITS = ("tokens", "random")
RATIOS = ("mean", "sum")
META_FILE = "lamdas.json"


@dataclasses.dataclass(frozen=True)
class Config:
    """LAMDAS: likelihood ratio under a prefix trained on the target (the LM frozen).

    Score: higher = more like the target. s(y) = exp(mean over tokens of log p(y_t | y_<t, C) −
    log p(y_t | y_<t)), the per-token likelihood ratio with and without the prefix C: in
    (0, ∞), 1 = neutral (the paper's τ = 1: select with --threshold 1), ratios of about 0.5–1.2
    in the paper; --ratio sum gives the sequence ratio p(y | C)/p(y), in [0, ∞] (it overflows
    for long texts).

    Defaults are the paper's (A.5) where it gives them."""

    model: str | None = option(
        None, "GGUF file or HF directory (None: SmolLM2-135M, embedded)", input=True
    )
    dtype: str = option("float32", "compute dtype of the model", choices=DTYPES)
    prefix_len: int = option(30, "P, prefix positions per layer (paper: 30)")
    init: str = option(
        "tokens",
        "'tokens': model KV of the first P reference tokens; 'random': N(0, init_scale^2)",
        choices=INITS,
        flag="--prefix-init",
    )
    init_scale: float = option(1.0, "std of the random prefix init")
    epochs: int = option(10, "prefix-tuning epochs (AdamW)")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(0.1, "AdamW weight decay")
    batch_size: int = option(4, "training batch (reference texts per step)")
    seed: int = option(0, "PRNG seed (random init, per-epoch shuffles)")
    max_tokens: int = option(512, "texts are truncated to their first N tokens")
    train_max_tokens: int | None = option(
        None, "a separate truncation for the reference set (None: max_tokens)"
    )
    score_batch_size: int = option(8, "candidates per scoring call (each is run twice)")
    ratio: str = option(
        "mean",
        "'mean': per-token geometric-mean ratio; 'sum': p(y|C)/p(y)",
        choices=RATIOS,
    )
    prefix_dir: str | None = option(
        None,
        "directory to save the trained prefix in, resume or reuse it from",
        flag="--prefix",
    )
    shard_size: int = option(512, "candidates per batch and per resumable shard (with --workdir)")

    def __post_init__(self):
        positive = ("prefix_len", "batch_size", "max_tokens", "score_batch_size", "shard_size")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"lamdas: {name} must be a positive integer, got {v!r}")
        if self.train_max_tokens is not None and self.train_max_tokens < 1:
            raise InputError(
                f"lamdas: train_max_tokens must be positive, got {self.train_max_tokens}"
            )
        if self.epochs < 0:
            raise InputError(f"lamdas: epochs must be >= 0, got {self.epochs}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InputError(f"lamdas: lr must be a positive number, got {self.lr}")
        if self.dtype not in DTYPES:
            raise InputError(f"lamdas: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.init not in INITS:
            raise InputError(f"lamdas: init must be one of {INITS}, got {self.init!r}")
        if self.ratio not in RATIOS:
            raise InputError(f"lamdas: ratio must be one of {RATIOS}, got {self.ratio!r}")

    @property
    def reference_max_tokens(self) -> int:
        return self.train_max_tokens or self.max_tokens


# ------------------------------------------------------------------------ jitted functions


def _train_config(config: Config) -> TrainConfig:
    """The runtime's training settings for prefix tuning (eq. 1)."""
    return TrainConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        max_tokens=config.reference_max_tokens,
    )


def _train_step_fn(cfg: LlamaConfig, mesh, lr: float, weight_decay: float):
    """(tx, the runtime's jitted train step) for this model/mesh/optimiser."""
    return lm_train.step_fn(
        cfg, mesh, TrainConfig(lr=lr, weight_decay=weight_decay).optimizer_key()
    )


def _terms_fn(cfg: LlamaConfig, mesh):
    """The runtime's jitted `K.paired_sums` for this model and mesh (what scoring runs)."""
    return reducer_fn(K.paired_sums, cfg, mesh)


@functools.cache
def _init_fn(cfg: LlamaConfig):
    return jax.jit(functools.partial(K.prefix_from_tokens, cfg=cfg))


# --------------------------------------------------------------------------------- training


def _identity(lm: LoadedLM, config: Config, reference: Sequence[str]) -> dict:
    """What a trained prefix depends on (epochs excluded: more epochs extend a run)."""
    return {
        "tokenizer": lm.tokenizer.id,
        "dtype": lm.cfg.dtype,
        "prefix_len": config.prefix_len,
        "init": config.init,
        "init_scale": config.init_scale if config.init == "random" else None,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "max_tokens": config.reference_max_tokens,
        "reference": fingerprint_texts(reference),
        "reference_size": len(reference),
    }


def _store(path, lm: LoadedLM, identity: dict | None) -> AdapterStore:
    return AdapterStore(path, lm.fingerprint, identity, META_FILE, "prefix")


def init_prefix(lm: LoadedLM, seqs: Sequence[Sequence[int]], config: Config) -> PrefixKV:
    """The starting prefix: model KV of the first P tokens of the reference stream (cycled when
    the reference set is shorter), or random."""
    if config.init == "random":
        key = jax.random.fold_in(jax.random.key(config.seed), 0)
        return K.random_prefix(key, lm.cfg, config.prefix_len, config.init_scale)
    stream = np.concatenate([np.asarray(s, np.int32) for s in seqs])
    tokens = np.resize(stream, config.prefix_len)  # repeats the stream if it is too short
    return _init_fn(lm.cfg)(lm.params, jnp.asarray(tokens))


def train_prefix(
    lm: LoadedLM,
    reference: Corpus | Sequence[str],
    config: Config,
    *,
    mesh=None,
    progress: bool = False,
) -> tuple[PrefixKV, list[float]]:
    """Prefix tuning on the reference set (eq. 1) with the LM runtime's training loop. Returns
    the prefix and the mean token NLL of every epoch (the loss before each update, averaged over
    the epoch's tokens)."""
    texts = reference.texts if isinstance(reference, Corpus) else tuple(reference)
    if not texts:
        raise InputError("lamdas: the reference (target) set is empty")
    check_context(lm.cfg, config.reference_max_tokens, "lamdas")
    seqs = lm.tokenizer.encode_docs(texts, config.reference_max_tokens)[0]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise InputError(
            "lamdas: no reference text has a token to predict after tokenisation and truncation"
        )
    store = None
    if config.prefix_dir is not None:
        store = _store(config.prefix_dir, lm, _identity(lm, config, texts))
    try:
        return train_tokens(
            lm.params,
            lm.cfg,
            init_prefix(lm, seqs, config),
            seqs,
            _train_config(config),
            store,
            name="lamdas: prefix",
            mesh=mesh,
            progress=progress,
        )
    finally:
        if store:
            store.close()


def load_prefix(path: str | os.PathLike, lm: LoadedLM, epoch: int | None = None) -> PrefixKV:
    """The prefix saved in a checkpoint directory (latest epoch by default). A directory made
    for another model raises AssetError."""
    if not (Path(path) / META_FILE).exists():
        raise InputError(f"{path}: no LAMDAS prefix here ({META_FILE} missing)")
    store = _store(path, lm, None)
    try:
        done = store.epochs()
        if not done or (epoch is not None and epoch not in done):
            raise InputError(f"{path}: no checkpoint for epoch {epoch if epoch else 'any'}")
        why = store.bad_reason(epoch or done[-1])
        if why is not None:
            raise InputError(f"{why}; retrain (train_prefix / --prefix) or delete it")
        ident = store.identity
        tx = lm_train.make_optimizer(
            TrainConfig(lr=ident["lr"], weight_decay=ident["weight_decay"]).optimizer_key()
        )
        rep = parallel.replicated()
        shapes = jax.eval_shape(
            lambda: lm_train.init_train_state(
                K.random_prefix(jax.random.key(0), lm.cfg, ident["prefix_len"]), tx
            )
        )
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes
        )
        state, _ = store.restore(epoch or done[-1], abstract)
    finally:
        store.close()
    return jax.device_get(state.adapter)


# ---------------------------------------------------------------------------------- scoring


class Terms(NamedTuple):
    """Per-text sums over its (first max_tokens) tokens, each [N]."""

    log_ratio: np.ndarray  # float64: sum of log p(y_t | y_<t, C) - log p(y_t | y_<t)
    conditioned: np.ndarray  # float64: sum of log p(y_t | y_<t, C)
    plain: np.ndarray  # float64: sum of log p(y_t | y_<t)
    n_tokens: np.ndarray  # int64: tokens scored
    truncated: np.ndarray  # bool: the text had more than max_tokens tokens


def likelihood_terms(
    lm: LoadedLM,
    prefix: PrefixKV,
    texts: Sequence[str],
    config: Config,
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    mesh=None,
) -> Terms:
    """Eq. 3's terms of every text (`Terms`).

    The LM runtime's `score_texts` with the `K.paired_sums` reducer: texts shortest first in
    batches of `score_batch_size` (padded to a multiple of the device count and to a bucket
    length), sharded over `data`; resumable with a workdir.
    """
    res = score_texts(
        lm,
        prefix,
        texts,
        K.paired_sums,
        max_tokens=config.max_tokens,
        batch_size=config.score_batch_size,
        name="lamdas",
        workdir=workdir,
        shard_size=config.shard_size,
        progress=progress,
        mesh=mesh,
    )
    return Terms(*res.values, res.n_tokens, res.truncated)


def ratio_scores(terms: Terms, ratio: str = "mean") -> np.ndarray:
    """s(y) from `likelihood_terms`: exp(mean log-ratio) or exp(sum log-ratio), [N]."""
    log_s = terms.log_ratio
    if ratio == "mean":
        log_s = log_s / np.maximum(terms.n_tokens, 1)
    with np.errstate(over="ignore"):
        return np.exp(log_s)


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest): model, trained prefix, truncation
    lm: LoadedLM
    prefix: PrefixKV
    losses: list[float]  # per-epoch training NLL
    config: Config
    mesh: jax.sharding.Mesh


def prepare(pool, target: Corpus | None, config: Config, run: Run) -> State:
    """Trains (or restores) the domain prefix on `target`, once.

    With a workdir and no `config.prefix_dir`, the prefix is checkpointed in workdir/prefix,
    so an interrupted job resumes its training as well as its scoring.
    """
    if target is None or not len(target):
        raise InputError("lamdas needs a non-empty reference (target) set")
    lm = run.lm(config.model, config.dtype)
    if config.prefix_dir is None and run.workdir is not None:
        config = dataclasses.replace(config, prefix_dir=run.subdir("prefix"))
    prefix, losses = train_prefix(lm, target, config, mesh=run.mesh, progress=run.progress)
    key = {
        "method": "lamdas",
        "model": lm.fingerprint,
        "dtype": lm.cfg.dtype,
        "prefix": adapter_hash(prefix),
        "max_tokens": config.max_tokens,
        "ratio": config.ratio,
    }
    return State(key, lm, prefix, losses, config, run.mesh)


def score_batch(state: State, batch) -> BatchScores:
    """s(y) of each candidate of the batch (eq. 3)."""
    terms = likelihood_terms(state.lm, state.prefix, batch.texts, state.config, mesh=state.mesh)
    tokens = terms.n_tokens
    stats = {
        "documents": len(tokens),
        "tokens_scored": int(tokens.sum()),
        "truncated": int(terms.truncated.sum()),
        "mean_log_ratio_sum": float((terms.log_ratio / np.maximum(tokens, 1)).sum()),
        "loglik_conditioned": float(terms.conditioned.sum()),
        "loglik_plain": float(terms.plain.sum()),
    }
    return BatchScores(ratio_scores(terms, state.config.ratio), stats)


def describe(state: State, stats: dict) -> dict:
    tokens = max(stats.get("tokens_scored", 0), 1)
    return {
        "config": dataclasses.asdict(state.config),
        "model": state.lm.fingerprint,
        "train_nll": state.losses,
        "tokens_scored": int(stats.get("tokens_scored", 0)),
        "truncated": int(stats.get("truncated", 0)),
        "mean_log_ratio": stats.get("mean_log_ratio_sum", 0.0) / max(stats.get("documents", 0), 1),
        "nll_conditioned": -stats.get("loglik_conditioned", 0.0) / tokens,
        "nll_plain": -stats.get("loglik_plain", 0.0) / tokens,
    }


LAMDAS = Streamed("lamdas", Config, prepare, score_batch, describe, LOCAL)
score = register(LAMDAS).score
