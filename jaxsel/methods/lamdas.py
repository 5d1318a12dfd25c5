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
or cut short by a crash) is retrained with a warning naming it, or refused by `load_prefix`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxsel import parallel
from jaxsel.batching import bucket_for, bucket_lengths, map_token_rows, pad_rows
from jaxsel.data import Corpus
from jaxsel.data.outputs import check_workdir, write_text
from jaxsel.errors import AssetError, InputError
from jaxsel.kernels import lamdas as K
from jaxsel.kernels import loglik
from jaxsel.methods import BatchScores, Method, Run, register
from jaxsel.models.llama import LlamaConfig, PrefixKV
from jaxsel.models.loaders import DTYPES, LoadedLM
from jaxsel.shards import fingerprint_texts

log = logging.getLogger(__name__)

INITS = ("tokens", "random")
RATIOS = ("mean", "sum")
MIN_BUCKET = 32
META_FILE = "lamdas.json"
FORMAT = 1


def _opt(default, help: str, **flag):
    return dataclasses.field(default=default, metadata={"help": help, **flag})


@dataclasses.dataclass(frozen=True)
class Config:
    """LAMDAS settings; defaults are the paper's (A.5) where it gives them (field help: the CLI
    flags)."""

    model: str | None = _opt(None, "GGUF file or HF directory (None: SmolLM2-135M, embedded)")
    dtype: str = _opt("float32", "compute dtype of the model", choices=DTYPES)
    prefix_len: int = _opt(30, "P, prefix positions per layer (paper: 30)")
    init: str = _opt(
        "tokens",
        "'tokens': model KV of the first P reference tokens; 'random': N(0, init_scale^2)",
        choices=INITS,
        flag="--prefix-init",
    )
    init_scale: float = _opt(1.0, "std of the random prefix init")
    epochs: int = _opt(10, "prefix-tuning epochs (AdamW)")
    lr: float = _opt(1e-3, "AdamW learning rate")
    weight_decay: float = _opt(0.1, "AdamW weight decay")
    batch_size: int = _opt(4, "training batch (reference texts per step)")
    seed: int = _opt(0, "PRNG seed (random init, per-epoch shuffles)")
    max_tokens: int = _opt(512, "texts are truncated to their first N tokens")
    train_max_tokens: int | None = _opt(
        None, "a separate truncation for the reference set (None: max_tokens)"
    )
    score_batch_size: int = _opt(8, "candidates per scoring call (each is run twice)")
    ratio: str = _opt(
        "mean",
        "'mean': per-token geometric-mean ratio; 'sum': p(y|C)/p(y)",
        choices=RATIOS,
    )
    prefix_dir: str | None = _opt(
        None,
        "directory to save the trained prefix in, resume or reuse it from",
        flag="--prefix",
    )
    shard_size: int = _opt(512, "candidates per batch and per resumable shard (with --workdir)")

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


# ----------------------------------------------------------------------- tokens and batches


def _check_fits(cfg: LlamaConfig, max_tokens: int) -> None:
    if max_tokens + 1 > cfg.max_position:
        raise InputError(
            f"lamdas: max_tokens={max_tokens} (+1 separator) exceeds the model's context "
            f"({cfg.max_position})"
        )


# ------------------------------------------------------------------------ jitted functions


@functools.cache
def _train_step_fn(cfg: LlamaConfig, mesh, lr: float, weight_decay: float):
    """`train_step` jitted once per model/mesh/optimiser: state and params replicated, the batch
    sharded over `data`, the old state donated."""
    tx = optax.adamw(lr, weight_decay=weight_decay)
    rep, rows = parallel.replicated(mesh), parallel.sharding("batch", "seq", mesh=mesh)
    step = jax.jit(
        functools.partial(K.train_step, cfg=cfg, tx=tx),
        in_shardings=(rep, rep, rows, rows),
        out_shardings=(rep, rep),
        donate_argnums=0,
    )
    return tx, step


@functools.cache
def _terms_fn(cfg: LlamaConfig, mesh):
    """Per-candidate sums [B, 3] = (sum log-ratio, sum log p(.|C), sum log p(.)) in one call."""

    def terms(params, prefix, tokens, mask):
        cond, plain = K.paired_logprobs(params, prefix, tokens, mask, cfg)
        sums = [loglik.sequence_loglik(x, mask[:, 1:])[0] for x in (cond - plain, cond, plain)]
        return jnp.stack(sums, axis=-1)

    rep, rows = parallel.replicated(mesh), parallel.sharding("batch", "seq", mesh=mesh)
    return jax.jit(
        terms,
        in_shardings=(rep, rep, rows, rows),
        out_shardings=parallel.sharding("batch", None, mesh=mesh),
    )


@functools.cache
def _init_fn(cfg: LlamaConfig):
    return jax.jit(functools.partial(K.prefix_from_tokens, cfg=cfg))


# --------------------------------------------------------------------------------- training


def _prefix_hash(prefix: PrefixKV) -> str:
    h = hashlib.sha256()
    for a in prefix:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:32]


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


@contextlib.contextmanager
def _quiet_orbax():
    """orbax logs every save/restore step at INFO through absl; keep it for warnings."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl.setLevel(level)


class _Store:
    """A prefix checkpoint directory: `lamdas.json` (model fingerprint + training identity,
    written once) and `ckpt/<epoch>/` orbax checkpoints of the TrainState with the per-epoch
    losses."""

    def __init__(self, path: str | os.PathLike, fingerprint: str, identity: dict | None):
        import orbax.checkpoint as ocp

        self.path = Path(path)
        check_workdir(self.path, "prefix directory")
        meta_path = self.path / META_FILE
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_bytes())
            except ValueError as e:  # JSON or UTF-8
                raise InputError(f"{meta_path}: malformed ({e}); delete the directory") from None
            if not isinstance(meta, dict) or not isinstance(meta.get("train"), dict):
                raise InputError(f"{meta_path}: not a LAMDAS prefix record; delete the directory")
            if meta.get("model") != fingerprint:
                raise AssetError(
                    f"{self.path}: prefix was trained for another model (fingerprint "
                    f"{str(meta.get('model'))[:12]}..., this model {fingerprint[:12]}...)"
                )
            if identity is not None and meta.get("train") != identity:
                diff = sorted(
                    k
                    for k in identity.keys() | meta.get("train", {}).keys()
                    if identity.get(k) != meta.get("train", {}).get(k)
                )
                raise InputError(
                    f"{self.path}: holds a prefix trained with other settings or another "
                    f"reference set (differs in: {', '.join(diff)}); use another --prefix "
                    "directory or delete it"
                )
            self.identity = meta["train"]
        elif identity is None:
            raise InputError(f"{self.path}: no LAMDAS prefix here ({META_FILE} missing)")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text(
                meta_path,
                json.dumps(
                    {"format": FORMAT, "model": fingerprint, "train": identity},
                    indent=1,
                    sort_keys=True,
                ),
            )
            self.identity = identity
        self.model = fingerprint
        self._ocp = ocp
        with _quiet_orbax():
            self.mgr = ocp.CheckpointManager(
                (self.path / "ckpt").absolute(),
                item_names=("state", "meta"),
                options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
            )

    def epochs(self) -> list[int]:
        return sorted(self.mgr.all_steps())

    def _sum_file(self, epoch: int) -> Path:
        return self.path / f"ckpt-{epoch}.sha256"

    def _digest(self, epoch: int) -> str:
        """sha256 over every file of the epoch's checkpoint (names and bytes), bound to the
        model and the training identity."""
        root = self.path / "ckpt" / str(epoch)
        bind = json.dumps([self.model, self.identity], sort_keys=True)
        h = hashlib.sha256(bind.encode())
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            for part in (p.relative_to(root).as_posix().encode(), p.read_bytes()):
                h.update(len(part).to_bytes(8, "little"))
                h.update(part)
        return h.hexdigest()

    def bad_reason(self, epoch: int) -> str | None:
        """None if the epoch's checkpoint verifies, else why not (naming the file)."""
        sums = self._sum_file(epoch)
        try:
            want = sums.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            return f"{sums}: missing or unreadable (the checkpoint was not committed)"
        if want != self._digest(epoch):
            return f"{self.path / 'ckpt' / str(epoch)}: does not match {sums.name} (damaged)"
        return None

    def verified(self, upto: int) -> int | None:
        """The latest epoch <= upto whose checkpoint verifies; later ones that do not are
        deleted with a warning so they are retrained."""
        for epoch in reversed([e for e in self.epochs() if e <= upto]):
            why = self.bad_reason(epoch)
            if why is None:
                return epoch
            log.warning("lamdas: %s; retraining epoch %d", why, epoch)
            with _quiet_orbax():
                self.mgr.delete(epoch)
            self._sum_file(epoch).unlink(missing_ok=True)
        return None

    def save(self, epoch: int, state: K.TrainState, losses: list[float]) -> None:
        a = self._ocp.args
        with _quiet_orbax():
            self.mgr.save(
                epoch,
                args=a.Composite(state=a.StandardSave(state), meta=a.JsonSave({"losses": losses})),
            )
            self.mgr.wait_until_finished()
        write_text(self._sum_file(epoch), self._digest(epoch))

    def restore(self, epoch: int, abstract: K.TrainState) -> tuple[K.TrainState, list[float]]:
        a = self._ocp.args
        with _quiet_orbax():
            try:
                r = self.mgr.restore(
                    epoch,
                    args=a.Composite(state=a.StandardRestore(abstract), meta=a.JsonRestore()),
                )
            except Exception as e:  # orbax/tensorstore raise many types for a bad checkpoint
                raise InputError(
                    f"{self.path / 'ckpt' / str(epoch)}: unreadable checkpoint "
                    f"({type(e).__name__}); delete it"
                ) from None
        return r["state"], list(r["meta"]["losses"])

    def close(self) -> None:
        with _quiet_orbax():
            self.mgr.close()


def _abstract_state(cfg: LlamaConfig, prefix_len: int, tx, mesh) -> K.TrainState:
    rep = parallel.replicated(mesh)
    shapes = jax.eval_shape(
        lambda: K.init_train_state(K.random_prefix(jax.random.key(0), cfg, prefix_len), tx)
    )
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


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
    """Prefix tuning on the reference set (eq. 1). Returns the prefix and the mean token NLL of
    every epoch (the loss before each update, averaged over the epoch's tokens)."""
    texts = reference.texts if isinstance(reference, Corpus) else tuple(reference)
    if not texts:
        raise InputError("lamdas: the reference (target) set is empty")
    _check_fits(lm.cfg, config.reference_max_tokens)
    mesh = mesh or parallel.data_mesh()
    seqs = lm.tokenizer.encode_docs(texts, config.reference_max_tokens)[0]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise InputError(
            "lamdas: no reference text has a token to predict after tokenisation and truncation"
        )
    tx, step = _train_step_fn(lm.cfg, mesh, config.lr, config.weight_decay)
    rep = parallel.replicated(mesh)
    store = None
    if config.prefix_dir is not None:
        store = _Store(config.prefix_dir, lm.fingerprint, _identity(lm, config, texts))
    try:
        # Every epoch is kept, so a run asked for fewer epochs than stored gets exactly those.
        start = store.verified(config.epochs) if store else None
        if start is not None:
            abstract = _abstract_state(lm.cfg, config.prefix_len, tx, mesh)
            state, losses = store.restore(start, abstract)
            log.info("lamdas: prefix at epoch %d restored from %s", start, store.path)
        else:
            start, losses = 0, []
            state = jax.device_put(K.init_train_state(init_prefix(lm, seqs, config), tx), rep)
        state = _train_epochs(lm, seqs, config, state, losses, start, step, mesh, store, progress)
    finally:
        if store:
            store.close()
    return jax.device_get(state.prefix), losses


def _train_epochs(lm, seqs, config, state, losses, start, step, mesh, store, progress):
    params = jax.device_put(lm.params, parallel.replicated(mesh))
    rows = parallel.round_up(config.batch_size, parallel.data_size(mesh))
    buckets = bucket_lengths(config.reference_max_tokens + 1, MIN_BUCKET)
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    n = len(seqs)
    for epoch in range(start, config.epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        total, count = 0.0, 0
        bar = tqdm(
            range(0, n, config.batch_size),
            desc=f"prefix epoch {epoch + 1}",
            unit="batch",
            disable=not progress,
        )
        for i, b0 in enumerate(bar):
            batch = [seqs[j] for j in perm[b0 : b0 + config.batch_size]]
            tokens, mask = pad_rows(batch, rows, bucket_for(max(map(len, batch)), buckets))
            state, loss = step(state, params, tokens, mask)
            loss = float(loss)
            if not np.isfinite(loss):
                _diverged(f"non-finite loss at epoch {epoch + 1}, batch {i + 1}", store)
            ntok = int(mask[:, 1:].sum())
            total, count = total + loss * ntok, count + ntok
            bar.set_postfix(nll=f"{loss:.4f}")
        bar.close()
        if not all(bool(jnp.isfinite(a).all()) for a in state.prefix):
            _diverged(f"non-finite prefix after epoch {epoch + 1}", store)
        losses.append(total / count)
        log.info(
            "lamdas: epoch %d/%d reference NLL %.4f nats/token",
            epoch + 1,
            config.epochs,
            losses[-1],
        )
        if store:
            store.save(epoch + 1, state, losses)
    return state


def _diverged(what: str, store: _Store | None) -> None:
    kept = ""
    if store and store.epochs():
        kept = f"; the last good checkpoint (epoch {store.epochs()[-1]}) is kept in {store.path}"
    raise InputError(f"lamdas: prefix training diverged ({what}); lower --lr{kept}")


def load_prefix(path: str | os.PathLike, lm: LoadedLM, epoch: int | None = None) -> PrefixKV:
    """The prefix saved in a checkpoint directory (latest epoch by default). A directory made
    for another model raises AssetError."""
    if not (Path(path) / META_FILE).exists():
        raise InputError(f"{path}: no LAMDAS prefix here ({META_FILE} missing)")
    store = _Store(path, lm.fingerprint, None)
    try:
        done = store.epochs()
        if not done or (epoch is not None and epoch not in done):
            raise InputError(f"{path}: no checkpoint for epoch {epoch if epoch else 'any'}")
        why = store.bad_reason(epoch or done[-1])
        if why is not None:
            raise InputError(f"{why}; retrain (train_prefix / --prefix) or delete it")
        tx = optax.adamw(store.identity["lr"], weight_decay=store.identity["weight_decay"])
        abstract = _abstract_state(lm.cfg, store.identity["prefix_len"], tx, parallel.data_mesh())
        state, _ = store.restore(epoch or done[-1], abstract)
    finally:
        store.close()
    return jax.device_get(state.prefix)


# ---------------------------------------------------------------------------------- scoring


def likelihood_terms(
    lm: LoadedLM,
    prefix: PrefixKV,
    texts: Sequence[str],
    config: Config,
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    mesh=None,
) -> np.ndarray:
    """Per-text sums over its (first max_tokens) tokens, [N, 5] float64: sum log-ratio,
    sum log p(y_t|y_<t,C), sum log p(y_t|y_<t), number of tokens scored, 1 if truncated.

    Texts are scored shortest first in batches of `score_batch_size` (padded to a multiple of
    the device count and to a bucket length), sharded over `data`; resumable with a workdir.
    """
    _check_fits(lm.cfg, config.max_tokens)
    mesh = mesh or parallel.data_mesh()
    fn = _terms_fn(lm.cfg, mesh)
    params = jax.device_put(lm.params, parallel.replicated(mesh))
    dev_prefix = jax.device_put(prefix, parallel.replicated(mesh))
    rows = parallel.round_up(config.score_batch_size, parallel.data_size(mesh))
    return map_token_rows(
        lm.tokenizer,
        texts,
        config.max_tokens,
        rows,
        lambda tokens, mask: fn(params, dev_prefix, tokens, mask),
        key={
            "what": "lamdas",
            "model": lm.fingerprint,
            "dtype": lm.cfg.dtype,
            "prefix": _prefix_hash(prefix),
            "max_tokens": config.max_tokens,
        },
        batch_size=config.score_batch_size,
        min_bucket=MIN_BUCKET,
        workdir=workdir,
        shard_size=config.shard_size,
        progress=progress,
        desc="lamdas score",
    )


def ratio_scores(terms: np.ndarray, ratio: str = "mean") -> np.ndarray:
    """s(y) from `likelihood_terms` rows: exp(mean log-ratio) or exp(sum log-ratio)."""
    log_s = terms[:, 0] / np.maximum(terms[:, 3], 1) if ratio == "mean" else terms[:, 0]
    with np.errstate(over="ignore"):
        return np.exp(log_s)


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest): model, trained prefix, truncation
    lm: LoadedLM
    prefix: PrefixKV
    losses: list[float]  # per-epoch training NLL
    config: Config
    mesh: jax.sharding.Mesh


def prepare(target: Corpus | None, config: Config, run: Run) -> State:
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
        "prefix": _prefix_hash(prefix),
        "max_tokens": config.max_tokens,
        "ratio": config.ratio,
    }
    return State(key, lm, prefix, losses, config, run.mesh)


def score_batch(state: State, batch) -> BatchScores:
    """s(y) of each candidate of the batch (eq. 3)."""
    terms = likelihood_terms(state.lm, state.prefix, batch.texts, state.config, mesh=state.mesh)
    tokens = terms[:, 3]
    stats = {
        "documents": len(tokens),
        "tokens_scored": int(tokens.sum()),
        "truncated": int(terms[:, 4].sum()),
        "mean_log_ratio_sum": float((terms[:, 0] / np.maximum(tokens, 1)).sum()),
        "loglik_conditioned": float(terms[:, 1].sum()),
        "loglik_plain": float(terms[:, 2].sum()),
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


LAMDAS = register(
    Method("lamdas", Config, prepare=prepare, score_batch=score_batch, describe=describe)
)
score = LAMDAS.score
