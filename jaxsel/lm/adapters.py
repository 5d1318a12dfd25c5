"""The trainable adapters of the LM runtime: what a frozen causal LM can be conditioned with.

- `PrefixKV` (prefix tuning, LAMDAS): per-layer keys/values prepended in every attention layer,
  k/v [L, P, KV, hd]; the length P is the arrays' (static) shape.
- `Lora` (FineZip memorisation, fine-tuning): low-rank deltas; scale, and which parts training
  may change, are static fields of the pytree (`jaxsel.models.llama.Lora`).

Both are pytrees whose leaves are exactly the trainable-or-frozen arrays, so `jax.grad`, optax and
orbax take them as they are. `logprob_kwargs` turns an adapter into the arguments of
`llama.token_logprobs`; `frozen` applies stop_gradient to what training must not change. A new LoRA:
`llama.init_lora`.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.models.llama import Lora, PrefixKV

Adapter = PrefixKV | Lora

__all__ = ["Adapter", "Lora", "PrefixKV", "adapter_hash", "frozen", "logprob_kwargs"]


def logprob_kwargs(adapter: Adapter | None) -> dict:
    """Keyword arguments of `llama.forward` / `token_logprobs` that apply the adapter."""
    if adapter is None:
        return {}
    if isinstance(adapter, PrefixKV):
        return {"prefix": adapter}
    if isinstance(adapter, Lora):
        return {"lora": adapter}
    raise TypeError(f"not an adapter: {type(adapter).__name__}")


def frozen(adapter: Adapter) -> Adapter:
    """The adapter with stop_gradient on the parts its static flags freeze (LoRA-FA's `a`, `b`
    below the last `train_layers` layers): their gradients are exactly 0, so an optimizer that
    sees only zero gradients (Adam: update 0 / (sqrt(0) + eps) = 0) leaves them unchanged."""
    if not isinstance(adapter, Lora):
        return adapter
    a = adapter.a if adapter.train_a else jax.lax.stop_gradient(adapter.a)
    b = adapter.b
    if adapter.train_layers:

        def keep_low(x):
            n = x.shape[0]
            trained = (jnp.arange(n) >= n - adapter.train_layers)[:, None, None]
            return jnp.where(trained, x, jax.lax.stop_gradient(x))

        b = jax.tree.map(keep_low, b)
    return Lora(a, b, adapter.scale, adapter.train_a, adapter.train_layers)


def trainable_leaves(adapter: Adapter):
    """Pytree of bools, one per leaf: False for leaves training never changes (optax.masked keeps
    them out of the optimizer state and of weight decay)."""
    if isinstance(adapter, Lora):
        return Lora(
            jax.tree.map(lambda _: adapter.train_a, adapter.a),
            jax.tree.map(lambda _: True, adapter.b),
            adapter.scale,
            adapter.train_a,
            adapter.train_layers,
        )
    return jax.tree.map(lambda _: True, adapter)


def adapter_hash(adapter: Adapter | None) -> str | None:
    """sha256 of the adapter's leaves and static fields (None for no adapter): the identity of a
    scoring job that uses it."""
    if adapter is None:
        return None
    h = hashlib.sha256(repr(jax.tree.structure(adapter)).encode())
    for a in jax.tree.leaves(adapter):
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:32]
