"""One adapter-training loop for every LM-based part of jaxsel (LAMDAS prefixes, FineZip
memorisation, downstream fine-tuning).

The frozen model's parameters are a constant of the loss; gradients reach only the adapter (and
only its trainable parts, `adapters.frozen`). One `TrainState`, one pure `train_step`, jitted once
per (model, mesh, optimiser) at one boundary (`step_fn`). Sequences go into length-grouped batches
(shuffled per epoch, sorted by length inside windows of `group` batches, batch order shuffled
again), each padded to the smallest of a few static bucket lengths, so padding stays small and jit
compiles one shape per bucket. With an `AdapterStore` the state is checkpointed after every epoch
and a rerun resumes from the last stored epoch (or returns a finished adapter untouched).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxsel import parallel
from jaxsel.batching import bucket_for, bucket_lengths, pad_rows
from jaxsel.errors import InputError
from jaxsel.lm.adapters import Adapter, frozen, logprob_kwargs, trainable_leaves
from jaxsel.lm.store import AdapterStore
from jaxsel.models import llama
from jaxsel.models.llama import LlamaConfig
from jaxsel.models.logprobs import LOGIT_CHUNK

log = logging.getLogger(__name__)

MIN_BUCKET = 32  # smallest padded length of a token batch (training and scoring)
# Padded tokens per row group of a training step or a scoring call (`row_groups`): SmolLM2 with
# 512-token texts peaks at 1.81 GB RSS training (1024: 2.11) in the same CPU time; a LAMDAS
# scoring call of 8 x 513 tokens needs 105 MB of XLA temporaries instead of 528, 18% less CPU.
MICRO_TOKENS = 512
SCHEDULES = ("constant", "cosine")


def token_buckets(max_tokens: int) -> tuple[int, ...]:
    """The padded lengths of token batches ([bos, up to max_tokens tokens]), training and
    scoring: powers of two from MIN_BUCKET with their 1.5x midpoints, so a batch carries at most
    1/3 padding (reference texts of ~130 tokens went into 256 with powers of two alone)."""
    return bucket_lengths(max_tokens + 1, MIN_BUCKET, halves=True)


def check_context(cfg: LlamaConfig, max_tokens: int, name: str) -> None:
    """Texts of up to max_tokens tokens plus the separator must fit the model's positions."""
    if max_tokens + 1 > cfg.max_position:
        raise InputError(
            f"{name}: max_tokens={max_tokens} (+1 separator) exceeds the model's context "
            f"({cfg.max_position})"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Adapter training settings.

    Attributes:
      lr: peak learning rate (AdamW).
      weight_decay: AdamW decoupled weight decay (0 = Adam); frozen leaves are never decayed.
      epochs: passes over the training sequences.
      steps: stop after this many optimizer steps (epochs then repeat as needed); None = epochs.
      batch_size: sequences per step (rows rounded up to a multiple of the `data` axis).
      seed: PRNG seed of the per-epoch shuffles.
      max_tokens: texts are truncated to their first max_tokens tokens (plus the separator).
      schedule: "constant" or "cosine" (linear warm-up, then cosine decay to 0 at `steps`).
      warmup_steps: warm-up steps of "cosine".
      group: length-grouping window, in batches (1 = plain shuffled batches).
      micro_tokens: activation-memory bound of a step: a batch of more padded tokens is split
        into row groups (`train_step`'s `groups`) whose gradients are summed, so backward
        memory is that of one group; the update is the same up to float rounding.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 4
    seed: int = 0
    max_tokens: int = 512
    schedule: str = "constant"
    warmup_steps: int = 0
    group: int = 8
    micro_tokens: int = MICRO_TOKENS

    def __post_init__(self):
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.epochs < 0 or (self.steps is not None and self.steps < 0):
            raise InputError("epochs and steps must be >= 0")
        if min(self.batch_size, self.max_tokens, self.group, self.micro_tokens) < 1:
            raise InputError("batch_size, max_tokens, group and micro_tokens must be positive")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "cosine" and not self.steps:
            raise InputError("a cosine schedule needs a step count (steps)")

    def optimizer_key(self) -> tuple:
        """The fields the optimizer (and so the compiled step) depends on."""
        total = self.steps if self.schedule == "cosine" else None
        return (self.lr, self.weight_decay, self.schedule, self.warmup_steps, total)


def _learning_rate(key: tuple) -> float | optax.Schedule:
    lr, _, schedule, warmup, total = key
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1), 0.0)
    return lr


def make_schedule(key: tuple) -> optax.Schedule:
    """The learning rate of every optimizer step (0-based) under `TrainConfig.optimizer_key()`:
    what `make_optimizer` applies, for other trainers that must follow it (benchmarks)."""
    lr = _learning_rate(key)
    return lr if callable(lr) else optax.constant_schedule(lr)


def make_optimizer(key: tuple) -> optax.GradientTransformation:
    """AdamW on the trainable leaves of an adapter, from `TrainConfig.optimizer_key()`."""
    return optax.masked(optax.adamw(_learning_rate(key), weight_decay=key[1]), trainable_leaves)


class TrainState(NamedTuple):
    """The adapter being trained and its optimizer state; the model is an argument, never
    state."""

    step: jax.Array  # int32 [], optimizer steps taken
    adapter: Adapter
    opt_state: optax.OptState

    @property
    def prefix(self) -> Adapter:
        """The adapter, under LAMDAS's name for it."""
        return self.adapter


def init_train_state(adapter: Adapter, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), adapter, tx.init(adapter))


def adapter_nll(
    adapter: Adapter,
    params: dict,
    tokens: jax.Array,
    mask: jax.Array,
    cfg: LlamaConfig,
    count: jax.Array | None = None,
) -> jax.Array:
    """Mean token NLL of a batch under the adapted model, over the predicted (real) tokens.

    tokens = [bos, y_1..y_n] right-padded [B, T] int32, mask [B, T] bool. The adapter comes first
    so `jax.grad` differentiates it only; frozen parts get exactly zero gradient. `count`: the
    divisor (default: this batch's real tokens; a row group passes its whole batch's). The layers
    run under remat (`llama.forward`), so backward memory holds only their matmul outputs."""
    kw = logprob_kwargs(frozen(adapter))
    lp, _ = llama.token_logprobs(
        params, tokens, mask, cfg, remat=True, chunk_tokens=LOGIT_CHUNK, **kw
    )
    return -jnp.sum(lp) / (jnp.maximum(jnp.sum(mask[:, 1:]), 1) if count is None else count)


def row_groups(rows: int, length: int, data: int, micro_tokens: int) -> int:
    """The fewest row groups (a divisor of rows // data, so every group spans every device
    equally) with at most `micro_tokens` padded tokens each; one row per device at most."""
    per = rows // data
    return next(
        (n for n in range(1, per + 1) if per % n == 0 and rows // n * length <= micro_tokens),
        per,
    )


def interleave_groups(arrays: tuple, groups: int) -> tuple:
    """[B, ...] arrays -> [groups, B // groups, ...]: group j = rows j, j + groups, ... (with
    `row_groups`' divisor, every group spans every device of a `data`-sharded batch equally)."""
    return tuple(
        a.reshape(a.shape[0] // groups, groups, *a.shape[1:]).swapaxes(0, 1) for a in arrays
    )


def train_step(
    state: TrainState,
    params: dict,
    tokens: jax.Array,
    mask: jax.Array,
    groups: int = 1,
    *,
    cfg: LlamaConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, jax.Array]:
    """One optimizer step on the adapter. Returns the new state and the batch loss *before* the
    update.

    `groups` (static, divides B): the rows are split into that many interleaved groups (group j =
    rows j, j + groups, ...) whose loss and gradient terms are summed in a `lax.scan`, so the
    backward pass holds one group's activations; the step equals the whole-batch one up to float
    rounding."""
    if groups == 1:
        loss, grads = jax.value_and_grad(adapter_nll)(state.adapter, params, tokens, mask, cfg)
    else:
        count = jnp.maximum(jnp.sum(mask[:, 1:]), 1).astype(jnp.float32)
        grad_fn = jax.value_and_grad(adapter_nll)

        def group(acc, xs):
            part = grad_fn(state.adapter, params, xs[0], xs[1], cfg, count)
            return jax.tree.map(jnp.add, acc, part), None

        xs = interleave_groups((tokens, mask), groups)
        zero = jax.tree.map(jnp.zeros_like, (count, state.adapter))
        (loss, grads), _ = jax.lax.scan(group, zero, xs)
    updates, opt_state = tx.update(grads, state.opt_state, state.adapter)
    adapter = optax.apply_updates(state.adapter, updates)
    return TrainState(state.step + 1, adapter, opt_state), loss


@functools.cache
def step_fn(cfg: LlamaConfig, mesh, optimizer: tuple):
    """(tx, jitted `train_step`) once per model/mesh/optimizer: state and params replicated, the
    batch sharded over `data`, the old state donated, `groups` static."""
    tx = make_optimizer(optimizer)
    rep, rows = parallel.replicated(mesh), parallel.sharding("batch", "seq", mesh=mesh)
    step = jax.jit(
        functools.partial(train_step, cfg=cfg, tx=tx),
        in_shardings=(rep, rep, rows, rows),
        out_shardings=(rep, rep),
        donate_argnums=0,
        static_argnums=4,
    )
    return tx, step


def epoch_batches(lengths: np.ndarray, config: TrainConfig, epoch: int) -> list[np.ndarray]:
    """Index batches of one epoch: a seeded shuffle, sorted by length inside windows of
    `group` batches (so a batch holds similar lengths), then the batches in shuffled order."""
    key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), len(lengths)))
    window = config.batch_size * config.group
    grouped = np.concatenate(
        [
            perm[s : s + window][np.argsort(lengths[perm[s : s + window]], kind="stable")]
            for s in range(0, len(perm), window)
        ]
    )
    batches = [
        grouped[s : s + config.batch_size] for s in range(0, len(grouped), config.batch_size)
    ]
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), len(batches)))
    return [batches[i] for i in order]


def train_tokens(
    params: dict,
    cfg: LlamaConfig,
    adapter: Adapter,
    seqs: Sequence[Sequence[int]],
    config: TrainConfig,
    store: AdapterStore | None = None,
    *,
    name: str = "adapter",
    mesh=None,
    progress: bool = False,
    on_step: Callable[[int, float, TrainState], None] | None = None,
) -> tuple[Adapter, list[float]]:
    """`train_adapter` on token sequences ([bos, y_1..y_n] each, at least 2 tokens).

    Returns the trained adapter (host arrays) and the mean token NLL of every epoch (each batch's
    loss before its update, weighted by its tokens). `on_step(step, loss, state)` is called after
    every optimizer step (1-based step count)."""
    if store is not None and config.steps is not None:
        raise ValueError("checkpoints are per epoch: use epochs, not steps, with a store")
    mesh = mesh or parallel.data_mesh()
    tx, step = step_fn(cfg, mesh, config.optimizer_key())
    rep = parallel.replicated(mesh)
    # Every epoch is kept, so a run asked for fewer epochs than stored gets exactly those.
    start = store.verified(config.epochs) if store else None
    if start is not None:
        shapes = jax.eval_shape(lambda: init_train_state(adapter, tx))
        abstract = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes
        )
        state, losses = store.restore(start, abstract)
        log.info("%s: state at epoch %d restored from %s", name, start, store.path)
    else:
        start, losses = 0, []
        # Fresh buffers: the step donates the state, which must never free the caller's arrays.
        fresh = jax.tree.map(lambda x: jnp.array(x, copy=True), adapter)
        state = jax.device_put(init_train_state(fresh, tx), rep)
    params = jax.device_put(params, rep)
    data = parallel.data_size(mesh)
    rows = parallel.round_up(config.batch_size, data)
    buckets = token_buckets(config.max_tokens)
    lengths = np.array([len(s) for s in seqs])
    epoch, steps_left = start, config.steps
    while epoch < config.epochs if steps_left is None else steps_left > 0:
        total, count = 0.0, 0
        batches = epoch_batches(lengths, config, epoch)
        if steps_left is not None:
            batches = batches[:steps_left]
            steps_left -= len(batches)
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}", unit="batch", disable=not progress)
        for i, idx in enumerate(bar):
            batch = [seqs[j] for j in idx]
            tokens, mask = pad_rows(batch, rows, bucket_for(max(map(len, batch)), buckets))
            groups = row_groups(rows, tokens.shape[1], data, config.micro_tokens)
            state, loss = step(state, params, tokens, mask, groups)
            loss = float(loss)
            if not np.isfinite(loss):
                _diverged(f"non-finite loss at epoch {epoch + 1}, batch {i + 1}", name, store)
            ntok = int(mask[:, 1:].sum())
            total, count = total + loss * ntok, count + ntok
            bar.set_postfix(nll=f"{loss:.4f}")
            if on_step is not None:
                on_step(int(state.step), loss, state)
        bar.close()
        if not all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(state.adapter)):
            _diverged(f"non-finite adapter after epoch {epoch + 1}", name, store)
        losses.append(total / max(count, 1))
        log.info("%s: epoch %d NLL %.4f nats/token", name, epoch + 1, losses[-1])
        epoch += 1
        if store:
            store.save(epoch, state, losses)
    return jax.device_get(state.adapter), losses


def _diverged(what: str, name: str, store: AdapterStore | None) -> None:
    kept = ""
    if store and store.epochs():
        kept = f"; the last good checkpoint (epoch {store.epochs()[-1]}) is kept in {store.path}"
    raise InputError(f"{name} training diverged ({what}); lower --lr{kept}")


def train_adapter(
    lm,
    adapter: Adapter,
    texts: Sequence[str],
    config: TrainConfig,
    store: AdapterStore | None = None,
    *,
    name: str = "adapter",
    mesh=None,
    progress: bool = False,
    on_step: Callable[[int, float, TrainState], None] | None = None,
) -> tuple[Adapter, list[float]]:
    """Trains `adapter` on `texts` under the frozen model `lm` (a `LoadedLM`); only the adapter
    changes.

    Each text becomes [separator, its first `config.max_tokens` tokens]; texts with no token to
    predict are skipped (none left is an InputError). See `train_tokens` for the result."""
    check_context(lm.cfg, config.max_tokens, name)
    seqs = [s for s in lm.tokenizer.encode_docs(texts, config.max_tokens)[0] if len(s) >= 2]
    if not seqs:
        raise InputError(
            f"{name}: no training text has a token to predict after tokenisation and truncation"
        )
    return train_tokens(
        lm.params,
        lm.cfg,
        adapter,
        seqs,
        config,
        store,
        name=name,
        mesh=mesh,
        progress=progress,
        on_step=on_step,
    )
