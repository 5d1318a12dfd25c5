"""LAMDAS kernels: prefix tuning on a reference set and the likelihood-ratio score. Pure JAX.

A *domain prefix* C is a list of per-layer keys/values (`PrefixKV`, k/v: [L, P, KV, hd]) that
every query of the frozen model attends to before the text (prefix tuning). It is learned by
maximising the reference set's likelihood (LAMDAS eq. 1), and a candidate y is scored by how much
the prefix raises its likelihood (eq. 3), normalised per token (DESIGN §3):

    s(y) = exp( mean_t [ log p(y_t | y_<t, C) - log p(y_t | y_<t) ] ).

Token layout used throughout: `tokens` [B, T] int32 = [bos, y_1..y_n] right-padded, `mask`
[B, T] bool marks the n + 1 real positions; log-probs come out [B, T-1], one per predicted token
y_1..y_n (the bos makes the first text token predicted too), 0 at padding.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsel.models import llama
from jaxsel.models.llama import LlamaConfig, PrefixKV
from jaxsel.models.logprobs import LOGIT_CHUNK, sequence_loglik

__all__ = [
    "PairedSums",
    "paired_logprobs",
    "paired_sums",
    "prefix_from_tokens",
    "random_prefix",
]


# ------------------------------------------------------------------------------- likelihoods


def paired_logprobs(
    params: dict,
    prefix: PrefixKV,
    tokens: jax.Array,
    mask: jax.Array,
    cfg: LlamaConfig,
    conditioned: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Both terms of the LAMDAS ratio (eq. 3) in one forward pass over a doubled batch.

    Row b appears twice, side by side ([B, 2, T] -> [2B, T]): once seeing the prefix, once with
    the prefix masked out. Interleaving (rather than stacking two halves) keeps both copies of an
    item on the device that holds it when the batch is sharded over `data`.

    Args:
      tokens, mask: [B, T] (see the module docstring).
      prefix: the domain prefix C, k/v [L, P, KV, hd].
      conditioned: [B] bool, items whose first copy sees the prefix (default all); an item with
        False gets two unconditioned terms, so its ratio is exactly 1.

    Returns:
      (log p(y_t | y_<t, C), log p(y_t | y_<t)), each [B, T-1] float32, 0 at padding. The
      [2B, T, V] logits are never stored whole (`models.logprobs` projects the vocabulary in
      chunks).
    """
    b, t = tokens.shape
    if conditioned is None:
        conditioned = jnp.ones((b,), bool)
    see = jnp.stack([conditioned, jnp.zeros((b,), bool)], axis=1).reshape(2 * b)
    lp, _ = llama.token_logprobs(
        params,
        jnp.repeat(tokens, 2, axis=0),  # row b -> rows 2b, 2b+1
        jnp.repeat(mask, 2, axis=0),
        cfg,
        prefix=prefix,
        prefix_mask=see,
        chunk_tokens=LOGIT_CHUNK,
    )
    lp = lp.reshape(b, 2, t - 1)
    return lp[:, 0], lp[:, 1]


class PairedSums(NamedTuple):
    """`paired_sums`' result: per-row sums over the real tokens, each [B]."""

    log_ratio: jax.Array  # sum of log p(y_t | y_<t, C) - log p(y_t | y_<t)
    conditioned: jax.Array  # sum of log p(y_t | y_<t, C)
    plain: jax.Array  # sum of log p(y_t | y_<t)


def paired_sums(
    params: dict, prefix: PrefixKV, tokens: jax.Array, mask: jax.Array, *, cfg: LlamaConfig
) -> PairedSums:
    """The LM runtime reducer of LAMDAS scoring (eq. 3's terms, summed over each row)."""
    cond, plain = paired_logprobs(params, prefix, tokens, mask, cfg)
    return PairedSums(*(sequence_loglik(x, mask[:, 1:])[0] for x in (cond - plain, cond, plain)))


# Prefix tuning (eq. 1) is the LM runtime's adapter training (`jaxsel.lm.train`) with a PrefixKV
# adapter: its loss `adapter_nll` is the mean token NLL of a reference batch given the prefix
# (the prefix comes first so `jax.grad` differentiates it only).


# ------------------------------------------------------------------------------ initialisation


def random_prefix(
    key: jax.Array, cfg: LlamaConfig, prefix_len: int, scale: float = 1.0
) -> PrefixKV:
    """k, v ~ N(0, scale^2), [L, P, KV, hd] float32."""
    shape = (cfg.num_layers, prefix_len, cfg.num_kv_heads, cfg.head_dim)
    kk, kv = jax.random.split(key)
    return PrefixKV(
        scale * jax.random.normal(kk, shape, jnp.float32),
        scale * jax.random.normal(kv, shape, jnp.float32),
    )


def prefix_from_tokens(params: dict, tokens: jax.Array, cfg: LlamaConfig) -> PrefixKV:
    """The model's own keys/values of a real token sequence, as a prefix.

    tokens: [P] int32. Runs the P tokens through the model one by one (`decode_step`) and keeps
    every layer's keys and values. The prefix is position-free while the text that follows starts
    at position 0, so keys are re-rotated from their position j to j - P: the text then sees the
    prefix at exactly the relative offsets it would have after those P tokens, i.e. with this
    prefix log p(y | C) equals the plain model's log p(y | tokens) (tested).

    Returns k, v: [L, P, KV, hd] float32.
    """
    p_len = tokens.shape[0]
    cache = llama.init_cache(cfg, 1, p_len)
    step = functools.partial(llama.decode_step, cfg=cfg)
    cache = jax.lax.fori_loop(0, p_len, lambda i, c: step(params, c, tokens[i][None])[1], cache)
    # -> [L, P, KV, hd]; k carries RoPE at positions 0..P-1
    k = jnp.stack([jnp.transpose(c[0], (2, 0, 1)) for c in cache.k])  # c: [1, KV, hd, P]
    v = jnp.stack([jnp.swapaxes(c[0], 0, 1) for c in cache.v])  # c: [1, KV, P, hd]
    cos, sin = llama.rope_cos_sin(jnp.full((1, 1), -p_len, jnp.int32), cfg)  # rotate by -P
    k = llama.apply_rope(k, cos, sin)  # [L, P, KV, hd] read as [B=L, T=P, N=KV, hd]
    return PrefixKV(k.astype(jnp.float32), v.astype(jnp.float32))
