"""The trainable adapters of the LM runtime: what a frozen causal LM can be conditioned with.

- `PrefixKV` (prefix tuning, LAMDAS): per-layer keys/values prepended in every attention layer,
  k/v [L, P, KV, hd]; the length P is the arrays' (static) shape.
- `Lora` (FineZip memorisation, fine-tuning): low-rank deltas; scale, and which parts training
  may change, are static fields of the pytree (`jaxsel.models.llama.Lora`).
- `Full` (full fine-tuning, `jaxsel downstream --full`): a dense delta on every parameter.

Both are pytrees whose leaves are exactly the trainable-or-frozen arrays, so `jax.grad`, optax and
orbax take them as they are. `logprob_kwargs` turns an adapter into the arguments of
`llama.token_logprobs`; `frozen` applies stop_gradient to what training must not change. A new LoRA:
`llama.init_lora`; a new `Full`: `init_full`.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.models.llama import Lora, PrefixKV


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Full:
    """Full fine-tuning as an adapter: W_eff = W + delta[name] for every parameter of the model
    (embeddings, norms, every layer's weights; `delta` has the params' tree, float32).

    Training the delta from zeros is exactly full fine-tuning of the weights: the loss sees only
    W + delta, so its gradient w.r.t. delta is its gradient w.r.t. W, and AdamW's update does
    not depend on the offset W (weight decay, when asked for, pulls W_eff back to the pretrained
    weights rather than to 0). The model itself stays the frozen constant of the one training
    loop, as for every adapter.
    """

    delta: dict


def init_full(params: dict) -> Full:
    """A zero delta (the unchanged model) on every parameter of `params`."""
    return Full(jax.tree.map(lambda w: jnp.zeros(w.shape, jnp.float32), params))


Adapter = PrefixKV | Lora | Full

__all__ = [
    "Adapter",
    "Full",
    "Lora",
    "PrefixKV",
    "adapter_hash",
    "frozen",
    "init_full",
    "logprob_kwargs",
]


def logprob_kwargs(adapter: Adapter | None) -> dict:
    """Keyword arguments of `llama.forward` / `token_logprobs` that apply the adapter."""
    if adapter is None:
        return {}
    if isinstance(adapter, PrefixKV):
        return {"prefix": adapter}
    if isinstance(adapter, Lora):
        return {"lora": adapter}
    if isinstance(adapter, Full):
        return {"delta": adapter.delta}
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
