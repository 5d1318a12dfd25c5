"""Cosine similarity of pool embeddings to a target set, reduced to one score per pool item.
Pure JAX (the `embed-sim` method jits and shards it).

With x_i the pool embeddings and t_j the target embeddings (any norm; both are normalised here):

- "centroid": cos(x_i, c) with c = mean_j t_j / |mean_j t_j| (the mean of the target rows as
  given: for unit rows, the normalised centroid direction);
- "max": max_j cos(x_i, t_j);
- "topk": mean of the k largest cos(x_i, t_j).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

REDUCE = ("centroid", "max", "topk")


def _unit(x: jax.Array) -> jax.Array:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    n = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(n > 0, n, 1)


def target_similarity(
    pool: jax.Array, target: jax.Array, *, reduce: str = "centroid", k: int = 1
) -> jax.Array:
    """Per-pool-row similarity to the target set.

    Args:
      pool: [n, d] embeddings of the pool items.
      target: [m, d] embeddings of the target items.
      reduce: "centroid", "max" or "topk" (see the module docstring).
      k: neighbours averaged by "topk" (1 <= k <= m).

    Returns:
      [n] float32 cosine scores in [-1, 1].
    """
    x = _unit(pool.astype(jnp.float32))
    if reduce == "centroid":
        c = _unit(jnp.mean(target.astype(jnp.float32), axis=0))
        return x @ c
    sims = x @ _unit(target.astype(jnp.float32)).T  # [n, m]: the caller bounds n per call
    if reduce == "max":
        return jnp.max(sims, axis=-1)
    if reduce == "topk":
        return jnp.mean(jax.lax.top_k(sims, k)[0], axis=-1)
    raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
