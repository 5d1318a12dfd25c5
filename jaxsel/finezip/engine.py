"""FineZip's device side: segments, sliding windows, the jitted coding programs, the batch loop.

Sliding context. The token stream is cut into `n_batches x B` contiguous segments,
one per batch row (so the device stays full); within a segment every token is coded with up to
`context` (C) previous tokens. A segment starts with the tokenizer's bos fed at position 0, and
its first C tokens are coded by incremental decode steps into an empty KV cache of C positions
(window 0). After that the segment advances in windows of `stride` (S) tokens: each window
pre-fills the cache with the P = C - S + 1 tokens just before it (`prefill`, one causal forward)
— the logits after them code the window's first token — and decode steps code the other S - 1,
the last of them reading all C positions. So every token past the first C sees between
C - S + 1 and C previous tokens; the first C see all of theirs.

Ring (`Plan.ring`; `api.FineZipConfig`'s default): no prefills at all. Every token is coded by a
decode step into a cache of C slots used as a sliding window (`llama.decode_step(ring=True)`):
bos stays in slot 0 as the attention sink, positions 1, 2, … cycle through slots 1 … C - 1, so
every token past the first C sees bos and exactly the C - 1 tokens before it, at the cost of one
decode step per token (the prefill windows add a (C - S + 1)-token forward every S tokens). The
keys and values kept in the ring were computed when their tokens were coded, with the context
they had then.

How losslessness is guaranteed. Compression and decompression run the *same* jitted programs
(`compiled_step`, `compiled_prefill`: one executable per model config, coder, attention span
and LoRA scale, a static field of the `Lora` pytree) on arrays of the same shapes, dtypes and
shardings, in the same order: the compressor feeds the true tokens, the decompressor the tokens
it has already decoded, which are the same by induction. A prefill reads only tokens from
earlier windows of its segment — all decoded before it runs — so its inputs are the same on
both sides too; that it agrees with the decode steps only up to float rounding does not matter,
because both sides use the prefill at the same places (the schedule is a function of the plan
alone; a ring has no prefills, and the slot a step writes is a function of its position). Which
attention span a step reads (`Plan.span`) is also a function of the position and the plan (its
`spans` is in the header). Same programs + same inputs => bit-identical logits, so

* `ac`: both sides hand bit-identical float32 probability rows to constriction, whose
  float -> integer-frequency quantisation is deterministic, so the range decoder inverts the
  encoder exactly;
* `ac-match`: the same rows, then host-side integer arithmetic over tokens both sides already
  hold (`match`), in the same token order, so the same integer table goes to constriction;
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
from jaxsel.finezip.coders import BatchCoder, Coder
from jaxsel.models.llama import (
    KVCache,
    LlamaConfig,
    Lora,
    decode_step,
    init_cache,
    prefill,
    token_logprobs,
    unstack_layers,
)

SLIDINGS = ("prefill", "ring")  # how a segment's window moves past its first C tokens


class Plan(NamedTuple):
    """Static shapes and the window schedule of a coding run; recorded in the archive header, so
    the decompressor rebuilds the identical batches and schedule from it alone."""

    n_tokens: int
    context: int  # C: KV-cache positions, the most tokens a prediction sees (bos included)
    stride: int  # S: tokens per window after the first (1 <= S <= C)
    batch_size: int  # B: segments per device batch (a multiple of the `data` axis size)
    n_batches: int  # batches coded side by side (host coding overlaps device steps)
    spans: int = 1  # attention-length buckets of a decode step (1: all C positions; see `span`)
    sliding: str = "prefill"  # "prefill" windows of `stride`, or a "ring" cache (stride 1)

    @property
    def seg_len(self) -> int:
        return -(-self.n_tokens // (self.batch_size * self.n_batches))

    @property
    def ring(self) -> bool:
        return self.sliding == "ring"

    @property
    def prefill_len(self) -> int:
        return self.context - self.stride + 1

    def lengths(self) -> np.ndarray:
        """[n_batches, B] tokens per segment: every segment is full except the last non-empty
        one (and empty padding rows after it)."""
        n_seg = self.batch_size * self.n_batches
        ends = np.minimum((np.arange(n_seg) + 1) * self.seg_len, self.n_tokens)
        starts = np.minimum(np.arange(n_seg) * self.seg_len, self.n_tokens)
        return (ends - starts).reshape(self.n_batches, self.batch_size)

    def to_batches(self, tokens: np.ndarray, pad: int) -> np.ndarray:
        """[n_tokens] -> [n_batches, B, seg_len] int32, segments in text order, padded."""
        flat = np.full(self.n_batches * self.batch_size * self.seg_len, pad, np.int32)
        flat[: self.n_tokens] = tokens
        return flat.reshape(self.n_batches, self.batch_size, self.seg_len)

    def from_batches(self, batches: np.ndarray) -> np.ndarray:
        """Inverse of `to_batches`: the first n_tokens of the row-major layout."""
        return np.asarray(batches).reshape(-1)[: self.n_tokens]

    def window(self, t: int) -> int:
        """What codes segment position t: -1 = a decode step, else the position the prefill of
        `prefill_len` tokens ends at (a window start past the first window; never in a ring)."""
        c, s = self.context, self.stride
        return t if not self.ring and t >= c and (t - c) % s == 0 else -1

    def span(self, pos: int) -> int:
        """The attention span (static) of a decode step writing cache position `pos`: the
        smallest of `spans` equal length buckets that covers pos. New archives use one bucket
        (the whole cache): XLA:CPU materialises a slice of the just-updated cache, ~1.1 GB of
        fresh pages per SmolLM2 step at B = 16, C = 2048, span 1536 (724 ms vs 144 ms a step,
        measured on the 2-core VM), so reading fewer positions cost 5x instead of saving."""
        if self.ring:
            return self.context
        for k in range(1, self.spans + 1):
            span = -(-self.context * k // self.spans)
            if pos < span:
                return span
        raise AssertionError("position beyond the cache")


def legacy_spans(context: int) -> int:
    """The buckets of an archive written before the header recorded them (format 3 up to
    commit eda3b41): one per 256 positions, at most 4."""
    return max(1, min(4, context // 256))


def make_plan(
    n_tokens: int,
    context: int,
    stride: int,
    batch_size: int,
    lanes: int,
    multiple: int,
    sliding: str = "prefill",
) -> Plan:
    """Segments of at least `context` tokens where the input allows (so the context is used),
    at most `batch_size` rows (a multiple of `multiple`, the `data` axis size) in each of at most
    `lanes` batches; the context shrinks to the segment and the stride to the context (a ring
    records stride 1: its window moves one token per step)."""
    long_segments = max(1, n_tokens // context)
    n_batches = max(1, min(lanes, long_segments))
    rows = parallel.round_up(max(1, min(batch_size, long_segments // n_batches)), multiple)
    seg_len = -(-n_tokens // (rows * n_batches))
    context = max(1, min(context, seg_len))
    stride = 1 if sliding == "ring" else max(1, min(stride, context))
    return Plan(n_tokens, context, stride, rows, n_batches, sliding=sliding)


def training_chunks(tokens: np.ndarray, chunk_len: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """[n] -> chunks [n_chunks, L] int32 (padded with `pad`) and their lengths (LoRA training)."""
    n_chunks = -(-len(tokens) // chunk_len)
    flat = np.full(n_chunks * chunk_len, pad, np.int32)
    flat[: len(tokens)] = tokens
    lens = np.minimum(chunk_len, len(tokens) - chunk_len * np.arange(n_chunks))
    return flat.reshape(n_chunks, chunk_len), lens


# --------------------------------------------------------------------------------- kernel


def coding_step(
    params: dict,
    lora: Lora | None,
    cache: KVCache,
    tokens: jax.Array,
    targets: jax.Array,
    ranks: jax.Array,
    *,
    cfg: LlamaConfig,
    coder: Coder,
    span: int,
    ring: bool,
):
    """One decoding step of a batch of segments, shared verbatim by compressor and decompressor.

    tokens: [B] the tokens at position cache.pos (bos at 0); targets: [B] the true next tokens
    (compressor; anything for the decompressor); ranks: [B] the coded ranks (decompressor;
    anything for the compressor); lora: the adapter (its scale static) or None; span: attention
    length bucket; ring: the cache is a sliding window (`decode_step`).

    Returns the updated cache and `coder.outputs` of the logits (for `ac` probabilities [B, V]
    float32, softmax on device, so no host-side float math enters the model; for `rank`,
    (rank_of(targets), token_at_rank(ranks))). Both directions get all outputs from one program:
    the logits cannot differ between compression and decompression because they come from the
    same executable on the same inputs.
    """
    logits, cache = decode_step(params, cache, tokens, cfg, lora=lora, span=span, ring=ring)
    return cache, coder.outputs(logits, targets, ranks)


def prefill_step(
    params: dict,
    lora: Lora | None,
    cache: KVCache,
    tokens: jax.Array,
    targets: jax.Array,
    ranks: jax.Array,
    *,
    cfg: LlamaConfig,
    coder: Coder,
):
    """A window start: `prefill` with tokens [B, P] (known on both sides), then the coder's
    outputs for the token after them, as `coding_step`."""
    logits, cache = prefill(params, cache, tokens, cfg, lora=lora)
    return cache, coder.outputs(logits, targets, ranks)


@functools.cache
def compiled_step(cfg: LlamaConfig, coder: Coder, span: int, ring: bool, mesh=None) -> Callable:
    """The jit boundary: `coding_step` with the cache and every per-row array sharded over the
    `data` axis of `mesh` (default `parallel.data_mesh()`), the cache donated (updated in
    place). Cached, so compressor and decompressor in one process share one executable and the
    loop never re-traces (jit keys a LoRA scale, static in the `Lora` treedef, by itself)."""
    step = functools.partial(coding_step, cfg=cfg, coder=coder, span=span, ring=ring)
    out = (_cache_shardings(cfg, ring, mesh), coder.out_sharding(mesh))
    return jax.jit(step, out_shardings=out, donate_argnums=(2,))


@functools.cache
def compiled_prefill(cfg: LlamaConfig, coder: Coder) -> Callable:
    """`prefill_step` at the jit boundary (as `compiled_step`)."""
    step = functools.partial(prefill_step, cfg=cfg, coder=coder)
    return jax.jit(
        step, out_shardings=(_cache_shardings(cfg), coder.out_sharding()), donate_argnums=(2,)
    )


def _cache_shardings(cfg: LlamaConfig, ring: bool = False, mesh=None) -> KVCache:
    per_layer = (parallel.sharding("batch", None, None, None, mesh=mesh),) * cfg.num_layers
    sink = (parallel.sharding("batch", None, None, mesh=mesh),) * cfg.num_layers if ring else ()
    return KVCache(per_layer, per_layer, parallel.replicated(mesh), sink)


def new_cache(cfg: LlamaConfig, plan: Plan) -> KVCache:
    """An empty, sharded cache; every layer's k and v get their own buffer (all donated)."""
    shapes = jax.eval_shape(lambda: init_cache(cfg, plan.batch_size, plan.context, plan.ring))
    return jax.tree.map(
        lambda s, d: jnp.zeros(s.shape, s.dtype, device=d), shapes, _cache_shardings(cfg, plan.ring)
    )


def decoder_bytes(cfg: LlamaConfig, plan: Plan) -> int:
    """Bytes a run of `plan` allocates beyond the model: every batch's KV cache (`new_cache`:
    rows x context positions x layers, keys and values, a ring's kept first keys) and one
    step's probability tables of every batch (rows x vocab float32, on the device and on the
    host). What `decompress(max_memory=)` holds an archive to before anything is decoded."""
    shapes = jax.eval_shape(lambda: init_cache(cfg, plan.batch_size, plan.context, plan.ring))
    cache = sum(s.size * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(shapes))
    tables = 2 * plan.batch_size * cfg.vocab_size * 4
    return plan.n_batches * (cache + tables)


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


def _per_layer(params: dict) -> dict:
    """`unstack_layers` of host views of the weights (same values, so the same programs give
    the same floats). On CPU `device_put` aliases such views: the per-layer weights share the
    model's memory, where slicing the device arrays copied every layer weight (+440 MB resident
    for SmolLM2 in float32, measured); on an accelerator it costs one round trip to the host at
    the start of a run."""
    return unstack_layers(jax.tree.map(np.asarray, params))


def run(
    params: dict,
    lora: Lora | None,
    cfg: LlamaConfig,
    coder: Coder,
    plan: Plan,
    bos: int,
    parts: list[BatchCoder],
    *,
    progress: bool = False,
) -> None:
    """Codes every batch through its segments with the window schedule of `plan`.

    The batches are in flight at once, round robin: while the device runs one batch's step, the
    host codes another's (JAX dispatch is asynchronous). That changes the schedule only, never
    what a batch computes.
    """
    prefill_fn = compiled_prefill(cfg, coder)
    rows, table = parallel.sharding("batch"), parallel.sharding("batch", "seq")
    params = jax.device_put(_per_layer(params), parallel.replicated())
    if lora is not None:
        lora = jax.device_put(lora, parallel.replicated())
    lengths = plan.lengths()
    steps = lengths.max(axis=1)
    caches = [new_cache(cfg, plan) for _ in parts]
    bos_row = np.full(plan.batch_size, bos, np.int32)
    p_len, pos = plan.prefill_len, 0
    bar = tqdm(total=plan.n_tokens, unit="tok", disable=not progress, smoothing=0.1)
    for t in range(int(steps.max(initial=0))):
        live = [i for i in range(len(parts)) if t < steps[i]]
        start = plan.window(t)
        if start < 0:
            fn = compiled_step(cfg, coder, plan.span(pos), plan.ring)
        outs = {}
        for i in live:
            tgt, rk = (jax.device_put(a, rows) for a in parts[i].inputs(t))
            tokens = parts[i].tokens
            if start >= 0:
                x = jax.device_put(tokens[:, t - p_len : t], table)
                caches[i], outs[i] = prefill_fn(params, lora, caches[i], x, tgt, rk)
            else:
                x = jax.device_put(bos_row if t == 0 else tokens[:, t - 1], rows)
                caches[i], outs[i] = fn(params, lora, caches[i], x, tgt, rk)
        pos = p_len if start >= 0 else pos + 1
        for i in live:
            parts[i].feed(t, jax.device_get(outs[i]))
            bar.update(int(np.sum(lengths[i] > t)))
    bar.close()
