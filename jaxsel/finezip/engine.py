"""FineZip's device side: chunking, the one jitted coding step, and the batch loop.

Dynamic context (FineZip §3): the token stream is cut into chunks of `chunk_len` tokens; token i
of a chunk is predicted from the chunk's tokens before it, with the tokenizer's bos fed first so
the chunk's first token is predicted too. `batch_size` chunks decode side by side as the rows of
one KV cache, sharded over the `data` mesh axis.

How losslessness is guaranteed. Compression and decompression call the *same* jitted function
(`coding_step`, compiled once per (model config, coder, LoRA scale) by `compiled_step`) on arrays
of the same shapes, dtypes and shardings, step by step through the same KV-cache recurrence: the
compressor feeds the true tokens, the decompressor the tokens it has just decoded, which are the
same by induction. Same program + same inputs => bit-identical logits, so

* `ac`: both sides hand bit-identical float32 probability rows to constriction, whose
  float -> integer-frequency quantisation is deterministic, so the range decoder inverts the
  encoder exactly;
* `rank`: the rank of the true token and the token at a given rank are both computed inside that
  same program from the same logits with the same total order (logit descending, then token index
  ascending), so `token_at_rank(rank_of(t)) == t` is exact integer logic.

A teacher-forced forward on compression and incremental steps on decompression would *not* be
safe: the two agree only to float rounding, and one flipped rank or one ulp in a probability
derails every later symbol. What breaks bit-identity: another XLA backend (CPU vs GPU), another
jax/jaxlib version, another device count or batch size (other per-device shapes can compile to
other reductions), another CPU instruction set (XLA:CPU compiles for the host), GPU autotuning
that picks another kernel between processes, or other weights/dtype. The archive header records
what it can (platform, device kind, jax/jaxlib/constriction versions, device count, batch shape,
dtype, model fingerprint); the decompressor refuses a different model and warns about the rest,
and the sha256 of the original makes any divergence a loud `ArchiveError`, never silent
corruption.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxsel import parallel
from jaxsel.kernels.loglik import token_logprobs_and_ranks
from jaxsel.models.llama import (
    KVCache,
    LlamaConfig,
    Lora,
    decode_step,
    init_cache,
    token_logprobs,
    unstack_layers,
)

CODERS = ("ac", "rank")


class Plan(NamedTuple):
    """Static shapes of a coding run; recorded in the archive header, so the decompressor
    rebuilds the identical batches from it alone."""

    n_tokens: int
    chunk_len: int  # L: tokens per chunk (and KV-cache length)
    batch_size: int  # B: chunks per device batch (a multiple of the `data` axis size)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_tokens // self.chunk_len)

    @property
    def n_batches(self) -> int:
        return -(-self.n_chunks // self.batch_size)

    def lengths(self) -> np.ndarray:
        """[n_batches, B] tokens per chunk (0 for padding rows): every chunk is full except the
        last one."""
        lens = np.zeros(self.n_batches * self.batch_size, np.int64)
        lens[: self.n_chunks] = self.chunk_len
        if self.n_tokens % self.chunk_len:
            lens[self.n_chunks - 1] = self.n_tokens % self.chunk_len
        return lens.reshape(self.n_batches, self.batch_size)


def make_plan(n_tokens: int, chunk_len: int, batch_size: int, multiple: int) -> Plan:
    """Shrinks the configured shapes to the input (a short text gets one short chunk) and spreads
    the chunks evenly over the fewest batches of at most `batch_size` rows, in multiples of
    `multiple` (the `data` axis size)."""
    chunk_len = max(1, min(chunk_len, n_tokens))
    n_chunks = -(-n_tokens // chunk_len)
    n_batches = -(-n_chunks // batch_size)
    rows = parallel.round_up(-(-n_chunks // n_batches), multiple)
    return Plan(n_tokens, chunk_len, rows)


def to_batches(tokens: np.ndarray, plan: Plan, pad: int) -> np.ndarray:
    """[n_tokens] -> [n_batches, B, L] int32, chunks in text order, padded with `pad`."""
    flat = np.full(plan.n_batches * plan.batch_size * plan.chunk_len, pad, np.int32)
    flat[: plan.n_tokens] = tokens
    return flat.reshape(plan.n_batches, plan.batch_size, plan.chunk_len)


def from_batches(batches: np.ndarray, plan: Plan) -> np.ndarray:
    """Inverse of `to_batches`: the first n_tokens of the row-major layout."""
    return batches.reshape(-1)[: plan.n_tokens]


# --------------------------------------------------------------------------------- kernel


def order_keys(logits: jax.Array) -> jax.Array:
    """uint32 keys whose ascending order is the logits' descending order.

    The float32 bits are mapped to an order-preserving unsigned integer (flip all bits of
    negatives, set the sign bit of non-negatives) after -0.0 -> +0.0, so equal floats get equal
    keys; then complemented for "descending". Logits are never NaN.
    """
    x = jnp.where(logits == 0, jnp.zeros_like(logits), logits)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    up = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))
    return ~up


def rank_of(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Rank of each target under its row's logits (FineZip's payload): the project's rank rule
    (`kernels.loglik`), rank(t) = #{j : l_j > l_t} + #{j < t : l_j == l_t}, i.e. t's position
    when tokens are sorted by logit descending, ties by index. logits: [B, V] float32,
    targets: [B] int32 -> [B] int32."""
    ones = jnp.ones((logits.shape[0], 1), bool)
    _, ranks = token_logprobs_and_ranks(lambda x: x, logits[:, None], targets[:, None], ones)
    return ranks[:, 0]


def token_at_rank(logits: jax.Array, ranks: jax.Array) -> jax.Array:
    """Inverse of `rank_of` for each row: the token whose rank is `ranks`.

    logits: [B, V], ranks: [B] int32 in [0, V) -> [B] int32. `order_keys` orders tokens exactly
    as `rank_of`'s float comparisons do (-0.0 == +0.0, no NaNs). A radix select instead of a sort
    (a [B, V] sort costs ~25x a model step on XLA:CPU): 32 rounds, one per key bit from the top,
    each keeping the half of the candidates that holds the wanted rank (counting, exact integer
    logic); the survivors share one key and the tie goes to the (rank)-th lowest index.
    """
    keys = order_keys(logits)

    def round_(i, carry):
        cand, r = carry
        bit = ((keys >> (31 - i).astype(jnp.uint32)) & 1) == 1
        zeros = cand & ~bit
        n0 = jnp.sum(zeros, axis=1).astype(jnp.int32)
        low = r < n0
        return jnp.where(low[:, None], zeros, cand & bit), jnp.where(low, r, r - n0)

    cand = jnp.ones(keys.shape, bool)
    cand, r = jax.lax.fori_loop(0, 32, round_, (cand, ranks.astype(jnp.int32)))
    # the r-th (0-based) surviving index: the first position where the running count reaches r+1
    hit = jnp.cumsum(cand, axis=1, dtype=jnp.int32) == (r + 1)[:, None]
    return jnp.argmax(hit & cand, axis=1).astype(jnp.int32)


def coding_step(
    params: dict,
    lora_ab,
    cache: KVCache,
    tokens: jax.Array,
    targets: jax.Array,
    ranks: jax.Array,
    *,
    cfg: LlamaConfig,
    coder: str,
    lora_scale: float,
):
    """One decoding step of a batch of chunks, shared verbatim by compressor and decompressor.

    tokens: [B] the tokens at position cache.pos (bos at 0); targets: [B] the true next tokens
    (compressor; anything for the decompressor); ranks: [B] the coded ranks (decompressor;
    anything for the compressor); lora_ab: (a, b) dicts or None.

    Returns the updated cache and, for `ac`, probabilities [B, V] float32 (softmax on device, so
    no host-side float math enters the model); for `rank`, (rank_of(targets) [B],
    token_at_rank(ranks) [B]). Both directions get both outputs from one program: the logits
    cannot differ between compression and decompression because they come from the same
    executable on the same inputs.
    """
    lora = None if lora_ab is None else Lora(*lora_ab, lora_scale)
    logits, cache = decode_step(params, cache, tokens, cfg, lora=lora)
    if coder == "ac":
        return cache, jax.nn.softmax(logits, axis=-1)
    return cache, (rank_of(logits, targets), token_at_rank(logits, ranks))


@functools.cache
def compiled_step(cfg: LlamaConfig, coder: str, lora_scale: float) -> Callable:
    """The jit boundary: `coding_step` with the cache and every per-row array sharded over the
    `data` axis, the cache donated (updated in place). Cached, so compressor and decompressor
    in one process share one executable and the loop never re-traces."""
    rows = parallel.sharding("batch")
    cache = _cache_shardings(cfg)
    out = parallel.sharding("batch", "vocab") if coder == "ac" else (rows, rows)
    step = functools.partial(coding_step, cfg=cfg, coder=coder, lora_scale=lora_scale)
    return jax.jit(step, out_shardings=(cache, out), donate_argnums=(2,))


def _cache_shardings(cfg: LlamaConfig) -> KVCache:
    per_layer = (parallel.sharding("batch", None, None, None),) * cfg.num_layers
    return KVCache(per_layer, per_layer, parallel.replicated())


def new_cache(cfg: LlamaConfig, plan: Plan) -> KVCache:
    """An empty, sharded cache; every layer's k and v get their own buffer (all donated)."""
    shapes = jax.eval_shape(lambda: init_cache(cfg, plan.batch_size, plan.chunk_len))
    return jax.tree.map(
        lambda s, d: jnp.zeros(s.shape, s.dtype, device=d), shapes, _cache_shardings(cfg)
    )


def sample_bits(params: dict, cfg: LlamaConfig, ids: np.ndarray, bos: int) -> float:
    """Bits the model gives the tokens `ids` from bos on (one teacher-forced row, float64 sum):
    the compressor's cheap estimate of coding them, never part of an archive."""
    tokens = np.concatenate([[bos], ids]).astype(np.int32)[None]
    lp, _ = _compiled_logprobs(cfg)(params, tokens, np.ones(tokens.shape, bool))
    return float(-np.sum(np.asarray(lp, np.float64)) / np.log(2))


@functools.cache
def _compiled_logprobs(cfg: LlamaConfig) -> Callable:
    return jax.jit(functools.partial(token_logprobs, cfg=cfg))


# ----------------------------------------------------------------------------------- loop


class BatchCoder:
    """What differs between compressing and decompressing one batch; the device calls do not.

    `inputs(t)` gives the (targets, ranks) rows of step t, `feed(t, out)` consumes the step's
    host outputs and returns the next input tokens [B] (true or decoded tokens, pad elsewhere).
    """

    def inputs(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def feed(self, t: int, out) -> np.ndarray:
        raise NotImplementedError


def run(
    params: dict,
    lora_ab,
    cfg: LlamaConfig,
    coder: str,
    lora_scale: float,
    plan: Plan,
    bos: int,
    make: Callable[[int], BatchCoder],
    *,
    lanes: int = 2,
    progress: bool = False,
) -> None:
    """Steps every batch through its chunk length with `compiled_step`.

    `lanes` batches are in flight at once, round robin: while the device runs one batch's step,
    the host codes another's (JAX dispatch is asynchronous). Lanes change the schedule only, never
    what a batch computes, so the compressor and decompressor may use different values.
    """
    step = compiled_step(cfg, coder, lora_scale)
    rows = parallel.sharding("batch")
    params = jax.device_put(unstack_layers(params), parallel.replicated())
    if lora_ab is not None:
        lora_ab = jax.device_put(lora_ab, parallel.replicated())
    lengths = plan.lengths()
    bar = tqdm(total=plan.n_tokens, unit="tok", disable=not progress, smoothing=0.1)
    for g0 in range(0, plan.n_batches, lanes):
        group = list(range(g0, min(g0 + lanes, plan.n_batches)))
        coders = [make(b) for b in group]
        caches = [new_cache(cfg, plan) for _ in group]
        toks = [np.full(plan.batch_size, bos, np.int32) for _ in group]
        steps = [int(lengths[b].max()) for b in group]
        for t in range(max(steps)):
            live = [i for i in range(len(group)) if t < steps[i]]
            outs = {}
            for i in live:
                tgt, rk = coders[i].inputs(t)
                caches[i], outs[i] = step(
                    params,
                    lora_ab,
                    caches[i],
                    jax.device_put(toks[i], rows),
                    jax.device_put(tgt, rows),
                    jax.device_put(rk, rows),
                )
            for i in live:
                toks[i] = coders[i].feed(t, jax.device_get(outs[i]))
                bar.update(int(np.sum(lengths[group[i]] > t)))
    bar.close()
