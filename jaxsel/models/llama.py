"""Llama-family causal decoder (Llama, SmolLM2, Qwen2) as pure functions over a param pytree.

Layers are stacked on a leading axis L and run with `lax.scan`, so a 30-layer model traces one
layer and compiles in about a second. Two entry points share the layer code:

- `forward`: teacher-forced over a right-padded batch (mask), optionally with a prefix of raw
  per-layer keys/values (prefix tuning, LAMDAS) visible to a per-row subset of the batch, and
  optionally with LoRA deltas (FineZip online memorisation). Inputs, not forks: a prefix masked off
  for a row and a LoRA with b = 0 give the plain model (to float rounding; the same function).
- `decode_step`: one token per row against a KV cache; equal to `forward` up to float rounding.

Parameters (HF layout for Q/K, i.e. `rotate_half` RoPE; weights stored as [in, out]):

    {"embed": [V, D],
     "layers": {"attn_norm": [L, D], "wq": [L, D, H*hd], "wk": [L, D, KV*hd], "wv": [L, D, KV*hd],
                "wo": [L, H*hd, D], "mlp_norm": [L, D], "w_gate": [L, D, F], "w_up": [L, D, F],
                "w_down": [L, F, D],
                optional Qwen2 biases "bq": [L, H*hd], "bk": [L, KV*hd], "bv": [L, KV*hd]},
     "final_norm": [D],
     "lm_head": [D, V]}                # only when the head is not tied to the embedding

Numerics follow HF transformers' `LlamaForCausalLM`: RMSNorm in float32, softmax in float32,
RoPE `cos/sin` computed in float32 from the checkpoint's theta (and llama3-style scaling).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from operator import itemgetter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.models.logprobs import token_logprobs_and_ranks

LORA_TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama-family decoder; hashable, so it can be a static jit argument.

    `rope_scaling` is the HF `rope_scaling` dict as a sorted tuple of (key, value) pairs
    (`rope_type` "linear" or "llama3"), or None. `dtype` is the compute dtype.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    tie_embeddings: bool
    max_position: int
    rope_scaling: tuple | None = None
    dtype: str = "float32"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


class PrefixKV(NamedTuple):
    """Prefix-tuning keys/values prepended in every layer; raw (no RoPE: position-free).

    k, v: [L, P, KV, hd] shared by all rows, or [L, B, P, KV, hd] per row.
    """

    k: jax.Array
    v: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Lora:
    """Low-rank deltas: W_eff = W + scale * a @ b for each named weight.

    a[name]: [L, in, r], b[name]: [L, r, out]; names from `LORA_TARGETS`; scale = alpha / r.
    Only `a` and `b` are pytree leaves; the hyper-parameters are static (part of the treedef, so
    a jitted function sees them as constants and retraces when they change):
      scale: alpha / r.
      train_a: whether training updates `a` (False: LoRA-FA, `a` is a frozen projection).
      train_layers: training updates `b` of the last `train_layers` layers only (0 = all).
    The forward pass reads only a, b and scale; `jaxsel.lm` reads the training flags.
    """

    a: dict
    b: dict
    scale: float = dataclasses.field(metadata={"static": True})
    train_a: bool = dataclasses.field(default=True, metadata={"static": True})
    train_layers: int = dataclasses.field(default=0, metadata={"static": True})


class KVCache(NamedTuple):
    """Keys (after RoPE) and values of the tokens decoded so far, one array per layer.

    k: L arrays [B, KV, hd, S] (keys transposed: attention scores then reduce over hd with the
    positions as the vectorised minor axis), v: L arrays [B, KV, S, hd]; pos: int32 scalar, the
    position the next token goes to. Per-layer arrays (not one stacked [L, ...] array scanned
    over) let a jitted step update each layer in place: slicing a stacked cache in a layer loop
    copies it, which cost 3x the whole step for SmolLM2 at batch 64 x 512 on a 2-core CPU.
    sink: ring caches only (`decode_step(ring=True)`), L arrays [B, KV, hd], the keys of
    position 0 kept apart (reading them from `k` beside the in-place update copied the whole
    cache: 2.5x the step).
    """

    k: tuple
    v: tuple
    pos: jax.Array
    sink: tuple = ()


# ----------------------------------------------------------------------------------- pieces


def rms_norm(x: jax.Array, w: jax.Array, eps: float) -> jax.Array:
    """x: [..., D], w: [D]. Normalises in float32 and scales in the input dtype (as HF)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return w.astype(x.dtype) * y.astype(x.dtype)


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies [hd/2] (float32), with HF's "linear" or "llama3" rope scaling."""
    hd = cfg.head_dim
    # float32 throughout, as HF computes it, so long positions give the same angles.
    inv = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    sc = dict(cfg.rope_scaling or ())
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "linear":
        inv = inv / sc["factor"]
    elif kind == "llama3":
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old = sc["original_max_position_embeddings"]
        wavelen = np.float32(2 * math.pi) / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = np.where(medium, smoothed, scaled)
    elif kind != "default":
        raise ValueError(f"unsupported rope_type {kind!r}")
    return inv.astype(np.float32)


def rope_cos_sin(positions: jax.Array, cfg: LlamaConfig) -> tuple[jax.Array, jax.Array]:
    """positions: [B, T] int -> cos, sin: [B, T, hd] float32 (HF's cat(freqs, freqs) layout)."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(rope_inv_freq(cfg))
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [B, T, N, hd]; cos/sin: [B, T, hd]. x*cos + rotate_half(x)*sin."""
    half = x.shape[-1] // 2
    rot = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None].astype(x.dtype), sin[:, :, None].astype(x.dtype)
    return x * cos + rot * sin


def attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """Grouped-query softmax attention (logits and softmax in float32).

    q: [B, T, H, hd]; k, v: [B, S, KV, hd] with H a multiple of KV; allowed: [B, T, S] bool.
    Every query row must allow at least one key. `jax.nn.dot_product_attention` ran ~1.5x
    faster than a grouped einsum + softmax for SmolLM2 at 512 tokens on the 2-core development
    CPU (a one-off measurement on a busy machine), and can pick cuDNN on GPU.
    """
    return jax.nn.dot_product_attention(
        q, k, v, mask=allowed[:, None], scale=1.0 / math.sqrt(q.shape[-1])
    )


def _proj(x: jax.Array, lp: dict, name: str, lora_l) -> jax.Array:
    """x @ W (+ scale * (x @ a) @ b): the LoRA delta is applied without forming W + a @ b."""
    y = x @ lp[name].astype(x.dtype)
    if lora_l is not None and name in lora_l[0]:
        a, b, scale = lora_l
        y = y + scale * ((x @ a[name].astype(x.dtype)) @ b[name].astype(x.dtype))
    return y


def _qkv(x, lp, cos, sin, cfg: LlamaConfig, lora_l):
    """Pre-norm input [B, T, D] -> q [B, T, H, hd], k, v [B, T, KV, hd] (RoPE on q and k)."""
    b, t, _ = x.shape
    h = rms_norm(x, lp["attn_norm"], cfg.rms_eps)
    q, k, v = (_proj(h, lp, n, lora_l) for n in ("wq", "wk", "wv"))
    if "bq" in lp:  # Qwen2
        q, k, v = (a + lp[n].astype(a.dtype) for a, n in ((q, "bq"), (k, "bk"), (v, "bv")))
    q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def _finish(x, attn, lp, cfg: LlamaConfig, lora_l):
    """Residual after attention, then the SwiGLU MLP block."""
    b, t = attn.shape[:2]
    x = x + _proj(attn.reshape(b, t, -1), lp, "wo", lora_l)
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_eps)
    g = jax.nn.silu(_proj(h, lp, "w_gate", lora_l)) * _proj(h, lp, "w_up", lora_l)
    return x + _proj(g, lp, "w_down", lora_l)


def _lora_xs(lora: Lora | None):
    return None if lora is None else (lora.a, lora.b)


def _lora_l(lora_xs, lora: Lora | None):
    return None if lora is None else (lora_xs[0], lora_xs[1], lora.scale)


# ------------------------------------------------------------------------------ entry points


def forward(
    params: dict,
    tokens: jax.Array,
    mask: jax.Array,
    cfg: LlamaConfig,
    *,
    prefix: PrefixKV | None = None,
    prefix_mask: jax.Array | None = None,
    lora: Lora | None = None,
    positions: jax.Array | None = None,
    remat: bool = False,
) -> jax.Array:
    """Teacher-forced forward pass.

    Args:
      tokens: [B, T] int32; mask: [B, T] bool, True = real token (padding on the right).
      prefix: keys/values every query attends to before the tokens (causal order: prefix first).
      prefix_mask: [B] bool, rows that see the prefix (default all); False rows ignore it
        entirely, so conditioned and unconditioned rows share one call.
      lora: low-rank deltas on the named weights.
      positions: [B, T] RoPE positions (default arange(T); the prefix has no position).
      remat: for training: under `jax.grad` each layer keeps only the outputs of its weight
        matmuls and recomputes the rest (norms, RoPE, attention, SwiGLU) in the backward pass.
        SmolLM2 then stores ~21 KB per token and layer instead of ~44 KB plus the [H, T, S]
        attention probabilities, for a few % more compute (measured: no slower on 2 CPU cores,
        the smaller working set offsets the recompute). The values are the same either way.

    Returns:
      final-normed hidden states [B, T, D] in the compute dtype (`lm_logits` gives logits).
    """
    b, t = tokens.shape
    dt = cfg.compute_dtype
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    cos, sin = rope_cos_sin(positions, cfg)
    causal = jnp.tril(jnp.ones((t, t), bool))
    # A query always sees itself, so fully padded rows stay finite (their outputs are ignored).
    allowed = (causal & mask[:, None, :]) | jnp.eye(t, dtype=bool)
    if prefix is not None:
        p_len = prefix.k.shape[-3]
        pm = jnp.ones((b,), bool) if prefix_mask is None else prefix_mask
        allowed = jnp.concatenate([jnp.broadcast_to(pm[:, None, None], (b, t, p_len)), allowed], -1)
        prefix_xs = (prefix.k, prefix.v)
    else:
        prefix_xs = None

    def layer(x, xs):
        lp, lxs, pxs = xs
        lora_l = _lora_l(lxs, lora)
        q, k, v = _qkv(x, lp, cos, sin, cfg, lora_l)
        if pxs is not None:
            pk, pv = (jnp.broadcast_to(a, (b, *a.shape[-3:])).astype(dt) for a in pxs)
            k, v = jnp.concatenate([pk, k], axis=1), jnp.concatenate([pv, v], axis=1)
        return _finish(x, attention(q, k, v, allowed), lp, cfg, lora_l), None

    if remat:
        layer = jax.checkpoint(
            layer, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
        )
    x = params["embed"][tokens].astype(dt)
    x, _ = jax.lax.scan(layer, x, (params["layers"], _lora_xs(lora), prefix_xs))
    return rms_norm(x, params["final_norm"], cfg.rms_eps)


def lm_logits(params: dict, hidden: jax.Array, cfg: LlamaConfig) -> jax.Array:
    """hidden: [..., D] -> logits [..., V] float32 (tied head = embedding transposed)."""
    if cfg.tie_embeddings:
        w = params["embed"].astype(hidden.dtype)
        return jnp.einsum("...d,vd->...v", hidden, w, preferred_element_type=jnp.float32)
    w = params["lm_head"].astype(hidden.dtype)
    return jnp.einsum("...d,dv->...v", hidden, w, preferred_element_type=jnp.float32)


def token_logprobs(
    params: dict,
    tokens: jax.Array,
    mask: jax.Array,
    cfg: LlamaConfig,
    *,
    prefix: PrefixKV | None = None,
    prefix_mask: jax.Array | None = None,
    lora: Lora | None = None,
    delta: dict | None = None,
    with_ranks: bool = False,
    chunk_tokens: int = 2048,
    remat: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """log p(tokens[:, t] | tokens[:, :t]) (and ranks) for t = 1..T-1, never forming [B, T, V].

    `delta` (the params' tree) is added to every parameter first: full fine-tuning as an adapter
    (`jaxsel.lm.adapters.Full`). Returns logprobs [B, T-1] float32 and ranks [B, T-1] int32 (or
    None); positions where `mask[:, 1:]` is False are 0. Prepend the tokenizer's `bos_id` to
    score a text's first token. `remat`: see `forward` (training).
    """
    if delta is not None:
        params = jax.tree.map(lambda w, d: (w + d).astype(w.dtype), params, delta)
    h = forward(
        params, tokens, mask, cfg, prefix=prefix, prefix_mask=prefix_mask, lora=lora, remat=remat
    )
    return token_logprobs_and_ranks(
        functools.partial(lm_logits, params, cfg=cfg),
        h[:, :-1],
        tokens[:, 1:],
        mask[:, 1:],
        with_ranks=with_ranks,
        chunk_tokens=chunk_tokens,
    )


def init_cache(cfg: LlamaConfig, batch: int, max_len: int, ring: bool = False) -> KVCache:
    """An empty KV cache for `batch` rows and up to `max_len` positions (slots of a ring)."""
    kv, hd, n = cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
    # Distinct buffers, so a jitted step may donate (update in place) every one of them.
    k = tuple(jnp.zeros((batch, kv, hd, max_len), cfg.compute_dtype) for _ in range(n))
    v = tuple(jnp.zeros((batch, kv, max_len, hd), cfg.compute_dtype) for _ in range(n))
    sink = tuple(jnp.zeros((batch, kv, hd), cfg.compute_dtype) for _ in range(n)) if ring else ()
    return KVCache(k, v, jnp.zeros((), jnp.int32), sink)


def unstack_layers(params: dict) -> dict:
    """params with "layers" as a tuple of per-layer dicts (for `decode_step`, which unrolls its
    layer loop: a static slice of stacked weights inside the step is a copy of every weight per
    step, ~40% of a SmolLM2 decode step on CPU). Do it once, outside the step."""
    layers = params["layers"]
    if isinstance(layers, tuple):
        return params
    n = jax.tree.leaves(layers)[0].shape[0]
    return {**params, "layers": tuple(jax.tree.map(itemgetter(i), layers) for i in range(n))}


def _decode_attention(
    q: jax.Array, ck: jax.Array, cv: jax.Array, pos, span: int, sink: tuple | None = None
) -> jax.Array:
    """One query per row over the cached positions ≤ pos. q: [B, KV, G, hd] (G = H / KV query
    heads per kv head), ck: [B, KV, hd, S], cv: [B, KV, S, hd] → [B, KV, G, hd]. Only the first
    `span` (static, > pos) positions are read (FineZip passes the cache length: on XLA:CPU a
    shorter span materialises the slice of the just-updated cache, see `engine.Plan.span`;
    archives made before that used length buckets and still decode with them). Multiply-and-sum
    rather than batched matmuls: with G = 3 rows per (row, head) pair XLA:CPU's batched dot ran
    ~2x slower than these two fused loops, each one pass over the cache. sink (ring caches, see
    `decode_step`): (query [B, KV, G, hd], key [B, KV, hd]) whose score replaces slot 0's."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    f32 = jnp.float32
    ck, cv = ck[..., :span], cv[:, :, :span]
    s = jnp.sum(q[..., None].astype(f32) * ck[:, :, None], axis=-2) * scale  # [B, KV, G, S]
    if sink is not None:
        s0 = jnp.sum(sink[0].astype(f32) * sink[1][:, :, None].astype(f32), axis=-1) * scale
        s = jnp.where(jnp.arange(ck.shape[-1]) == 0, s0[..., None], s)
    s = jnp.where(jnp.arange(ck.shape[-1]) <= pos, s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1)
    return jnp.sum(p[..., None] * cv[:, :, None], axis=-2).astype(q.dtype)


def ring_slot(pos, n: int):
    """The cache slot of position `pos` in a ring cache of n slots: slot 0 holds position 0 (the
    sink, bos in FineZip) for good, positions ≥ 1 cycle through slots 1 … n − 1."""
    return jnp.where(pos < n, pos, 1 + (pos - 1) % max(1, n - 1))


def decode_step(
    params: dict,
    cache: KVCache,
    tokens: jax.Array,
    cfg: LlamaConfig,
    *,
    lora: Lora | None = None,
    span: int | None = None,
    ring: bool = False,
) -> tuple[jax.Array, KVCache]:
    """One incremental step: tokens [B] int32 at position `cache.pos` (the same for every row).

    Returns logits [B, V] float32 for the next token and the cache with this token appended.
    Equal (to float rounding) to `lm_logits(forward(...))` at the same position. `params` may
    hold stacked layers; pass `unstack_layers(params)` in a decode loop (see there). Donate the
    cache to update it in place. `span` (static): attention reads only the first `span` cache
    positions (must exceed `cache.pos`; default all).

    ring (static): the cache of n slots is a sliding window over positions that grow without
    bound (`ring_slot`): position 0 stays in slot 0 as an attention sink and every step at
    pos ≥ n reads it and the n − 1 latest positions, with RoPE at the true positions (attention
    sees only differences, at most n − 2) and slot 0 scored by the query rotated back to position
    min(pos, n − 1), i.e. as if the sink stood just before the window, where a fresh window would
    put it. Up to pos = n − 1 it is the plain step (to float rounding). Needs a cache from
    `init_cache(..., ring=True)` (it keeps the sink's keys apart).
    """
    b = tokens.shape[0]
    kv, g = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads
    pos = cache.pos
    cos, sin = rope_cos_sin(jnp.full((b, 1), pos, jnp.int32), cfg)
    slot = pos
    if ring:  # the slot to write, and the rotation that takes a query to position min(pos, n-1)
        n = cache.k[0].shape[-1]
        slot = ring_slot(pos, n)
        back = rope_cos_sin(jnp.full((b, 1), jnp.minimum(pos, n - 1) - pos, jnp.int32), cfg)
    layers = unstack_layers(params)["layers"]
    x = params["embed"][tokens][:, None].astype(cfg.compute_dtype)
    new_k, new_v, new_sink = [], [], []
    for i, lp in enumerate(layers):  # unrolled: per-layer cache arrays stay in place
        lora_l = (
            None if lora is None else (*jax.tree.map(itemgetter(i), (lora.a, lora.b)), lora.scale)
        )
        q, k, v = _qkv(x, lp, cos, sin, cfg, lora_l)  # [B, 1, H | KV, hd]
        sink = None
        if ring:  # the sink's key (this token's at position 0, then kept in `cache.sink`)
            k0 = jnp.where(pos == 0, k[:, 0].astype(cache.k[i].dtype), cache.sink[i])
            new_sink.append(k0)
            sink = (apply_rope(q, *back)[:, 0].reshape(b, kv, g, -1), k0)
        # Write first, then attend over the written cache: the update stays in place (a read of
        # the old buffer after an in-place write would force XLA to copy it).
        ck = jax.lax.dynamic_update_slice_in_dim(
            cache.k[i], jnp.transpose(k, (0, 2, 3, 1)).astype(cache.k[i].dtype), slot, axis=3
        )
        cv = jax.lax.dynamic_update_slice_in_dim(
            cache.v[i], jnp.transpose(v, (0, 2, 1, 3)).astype(cache.v[i].dtype), slot, axis=2
        )
        attn = _decode_attention(
            q[:, 0].reshape(b, kv, g, -1), ck, cv, pos, span or ck.shape[-1], sink
        )
        x = _finish(x, attn.reshape(b, 1, cfg.num_heads, -1), lp, cfg, lora_l)
        new_k.append(ck)
        new_v.append(cv)
    h = rms_norm(x[:, 0], params["final_norm"], cfg.rms_eps)
    return lm_logits(params, h, cfg), KVCache(tuple(new_k), tuple(new_v), pos + 1, tuple(new_sink))


def prefill(
    params: dict, cache: KVCache, tokens: jax.Array, cfg: LlamaConfig, *, lora: Lora | None = None
) -> tuple[jax.Array, KVCache]:
    """Fills cache positions [0, P) with tokens [B, P] int32 (causal, teacher-forced) and returns
    the logits [B, V] float32 after the last one and the cache at pos = P, ready for
    `decode_step`. Stale entries beyond P stay but are never attended (decode reads ≤ pos).
    Equal to P decode steps only up to float rounding: code with one or the other on both sides.
    """
    b, p = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    cos, sin = rope_cos_sin(positions, cfg)
    allowed = jnp.broadcast_to(jnp.tril(jnp.ones((p, p), bool)), (b, p, p))
    layers = unstack_layers(params)["layers"]
    x = params["embed"][tokens].astype(cfg.compute_dtype)
    new_k, new_v = [], []
    for i, lp in enumerate(layers):
        lora_l = (
            None if lora is None else (*jax.tree.map(itemgetter(i), (lora.a, lora.b)), lora.scale)
        )
        q, k, v = _qkv(x, lp, cos, sin, cfg, lora_l)  # [B, P, H | KV, hd]
        kt = jnp.transpose(k, (0, 2, 3, 1)).astype(cache.k[i].dtype)
        vt = jnp.transpose(v, (0, 2, 1, 3)).astype(cache.v[i].dtype)
        new_k.append(jax.lax.dynamic_update_slice_in_dim(cache.k[i], kt, 0, axis=3))
        new_v.append(jax.lax.dynamic_update_slice_in_dim(cache.v[i], vt, 0, axis=2))
        x = _finish(x, attention(q, k, v, allowed), lp, cfg, lora_l)
    h = rms_norm(x[:, -1], params["final_norm"], cfg.rms_eps)
    logits = lm_logits(params, h, cfg)
    return logits, KVCache(tuple(new_k), tuple(new_v), jnp.asarray(p, jnp.int32))


def init_lora(
    key: jax.Array, params: dict, cfg: LlamaConfig, rank: int, alpha: float, targets=("wq", "wv")
) -> Lora:
    """LoRA with a ~ N(0, 1/in) and b = 0, so the adapted model starts equal to the base."""
    a, b = {}, {}
    for i, name in enumerate(targets):
        if name not in LORA_TARGETS:
            raise ValueError(f"unknown LoRA target {name!r}; choose from {LORA_TARGETS}")
        n_layers, d_in, d_out = params["layers"][name].shape
        k = jax.random.fold_in(key, i)
        a[name] = jax.random.normal(k, (n_layers, d_in, rank), jnp.float32) / math.sqrt(d_in)
        b[name] = jnp.zeros((n_layers, rank, d_out), jnp.float32)
    return Lora(a, b, float(alpha) / rank)
