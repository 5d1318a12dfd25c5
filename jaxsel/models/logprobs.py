"""Per-token log-likelihoods and ranks of given tokens under a causal LM's output head, computed
on device without ever returning (or, by default, storing) the [B, T, V] logits.

The vocabulary projection runs over sequence chunks (`lax.map`), each chunk under
`jax.checkpoint`, so forward memory is O(B * chunk * V) and a backward pass recomputes a chunk's
logits instead of keeping all of them.

Rank (FineZip's "paper mode"): the number of vocabulary entries whose logit is strictly greater
than the true token's, plus those with an equal logit at a lower token index, i.e. the true
token's position in a *stable* descending sort (0 = the model's top choice). A plain sort is not
stable on ties, which would make ranks irreproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Vocabulary-projection rows alive at once (`llama.token_logprobs`' chunks), LM training and
# scoring: 512 x 49,152 float32 logits = 100 MB per buffer (2048 rows held ~0.8 GB in a training
# step's backward) at no measured cost in speed. FineZip keeps `llama.token_logprobs`' own
# default: its archives depend on the exact computation.
LOGIT_CHUNK = 512


def token_logprobs_and_ranks(
    logits_fn: Callable[[jax.Array], jax.Array],
    hidden: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    *,
    with_ranks: bool = True,
    chunk_tokens: int = 2048,
) -> tuple[jax.Array, jax.Array | None]:
    """log p(target) and rank of each target token.

    Args:
      logits_fn: [B, C, D] -> [B, C, V] float32 logits (e.g. `partial(lm_logits, params,
        cfg=cfg)`); called once per chunk of C positions.
      hidden: [B, T, D] states that predict `targets`.
      targets: [B, T] int token ids.
      mask: [B, T] bool, False positions get log-prob 0 and rank 0.
      with_ranks: also compute ranks (one extra pass over each chunk's logits).
      chunk_tokens: B * C, the number of logit rows alive at once (C >= 1).

    Returns:
      logprobs [B, T] float32 (log-softmax at the target), ranks [B, T] int32 or None.
    """
    b, t, d = hidden.shape
    c = max(1, min(t, chunk_tokens // max(b, 1)))
    n = -(-t // c)
    pad = n * c - t
    hs = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)
    ys = jnp.pad(targets.astype(jnp.int32), ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

    @jax.checkpoint
    def chunk(args):
        h, y = args
        logits = logits_fn(h).astype(jnp.float32)  # [B, C, V]
        true = jnp.take_along_axis(logits, y[..., None], axis=-1)  # [B, C, 1]
        lp = true[..., 0] - jax.nn.logsumexp(logits, axis=-1)
        if not with_ranks:
            return lp, jnp.zeros_like(y)
        ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
        ahead = (logits > true) | ((logits == true) & (ids < y[..., None]))
        return lp, jnp.sum(ahead, axis=-1, dtype=jnp.int32)

    lp, rk = jax.lax.map(chunk, (hs, ys))
    lp = jnp.where(mask, lp.swapaxes(0, 1).reshape(b, n * c)[:, :t], 0.0)
    if not with_ranks:
        return lp, None
    return lp, jnp.where(mask, rk.swapaxes(0, 1).reshape(b, n * c)[:, :t], 0)


def sequence_loglik(token_logprobs: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sum and mean over the real tokens of each row: [B, T] -> ([B], [B]); an empty row has
    sum 0 and mean 0."""
    m = mask.astype(token_logprobs.dtype)
    total = jnp.sum(token_logprobs * m, axis=-1)
    return total, total / jnp.maximum(jnp.sum(m, axis=-1), 1)
