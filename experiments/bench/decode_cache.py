"""FineZip's decode step at a full KV cache: how it scales with the batch, and what the cache's
number format would cost in the attention over it.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/decode_cache.py [--context 2048] [--batches 16,32,64]
        [--reps 5] [--parts decode,attention,plans]
        [--plans 512:256,2048:1024,2048:ring] [--plan-batch 16]
        [--out out/bench-decode-cache.json]

Hardware: any (the README numbers: the 2-core AMD EPYC VM, CPU only). Runtime: ~5 minutes there.

What it measures:
- `llama.decode_step` of SmolLM2-135M (float32, the embedded weights) at position C - 8 of a
  C-slot cache with `span = C` (what FineZip runs), median of --reps calls per batch size:
  ms per step and per token, and the KV-cache bytes one step reads (per row: layers x 2 x
  kv heads x head dim x C x 4 B). Time per token that stays flat as the batch grows means the
  step is bound by reading the cache, not the weights.
- The attention alone over 30 layers' caches (random values, batch = the first --batches
  entry, G = 3 queries per kv head as in SmolLM2), as ratios to the float32 multiply-and-sum
  of `llama._decode_attention` measured in the same run: the cache stored as bfloat16 bits in
  uint16 and widened with a shift + bitcast inside the fused loop, as jnp.bfloat16 with
  `astype`, as bfloat16 through einsums with float32 accumulation, and float32 einsums. A
  narrower cache halves the bytes read; it only pays if XLA vectorises the widening.
- Steady-state device time per coded token of whole FineZip plans (`--plans` C:S or C:ring, at
  --plan-batch rows), with FineZip's own jitted programs (`engine.compiled_step` with the `ac`
  coder, probabilities fetched to the host as the loop does, and `engine.compiled_prefill`): a
  prefill plan codes S tokens per window with one prefill of C - S + 1 tokens and S - 1 decode
  steps over all C positions, a ring one decode step per token, so ms/token = (prefill + (S - 1)
  x step) / (S x B), resp. step / B; as ratios to the first plan (the speed goal reads C = 2048
  against C = 512). Host-side coding (range coder, match model) is not included: it
  overlaps the device steps in `engine.run`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from _timing import median_time

from jaxsel import parallel
from jaxsel.finezip import coders, engine
from jaxsel.models import llama
from jaxsel.models.loaders import load_smollm2

F32 = jnp.float32


def step_times(lm, context: int, batches: list[int], reps: int) -> list[dict]:
    cfg, params = lm.cfg, llama.unstack_layers(lm.params)
    # the cache donated and fed back, as FineZip's loop does (updated in place, never copied)
    step = jax.jit(functools.partial(llama.decode_step, cfg=cfg, span=context), donate_argnums=1)
    per_row = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * context * 4
    rows = []
    for b in batches:
        state = [llama.init_cache(cfg, b, context)]
        tokens = jnp.ones((b,), jnp.int32)

        def one(state=state, tokens=tokens):
            logits, state[0] = step(params, state[0]._replace(pos=jnp.int32(context - 8)), tokens)
            logits.block_until_ready()

        sec = median_time(one, reps)
        del state[0]
        rows.append(
            {"batch": b, "ms_per_step": 1e3 * sec, "ms_per_token": 1e3 * sec / b,
             "cache_gb_per_step": b * per_row / 1e9, "cache_gb_per_s": b * per_row / sec / 1e9}
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _widen_u16(x):
    return jax.lax.bitcast_convert_type(x.astype(jnp.uint32) << 16, F32)


def _attend(q, ck, cv, pos, variant: str):
    """One layer: q [B, KV, G, hd], ck [B, KV, hd, S], cv [B, KV, S, hd] -> [B, KV, G, hd]."""
    if variant in ("einsum f32", "einsum bf16"):
        dt = F32 if variant == "einsum f32" else jnp.bfloat16
        s = jnp.einsum("bkgd,bkds->bkgs", q.astype(dt), ck, preferred_element_type=F32)
        s = jnp.where(jnp.arange(ck.shape[-1]) <= pos, s / math.sqrt(q.shape[-1]), -jnp.inf)
        p = jax.nn.softmax(s, axis=-1).astype(dt)
        return jnp.einsum("bkgs,bksd->bkgd", p, cv, preferred_element_type=F32)
    if variant == "uint16 bits":
        ck, cv = _widen_u16(ck), _widen_u16(cv)
    elif variant == "bfloat16":
        ck, cv = ck.astype(F32), cv.astype(F32)
    return llama._decode_attention(q, ck, cv, pos, ck.shape[-1])


def attention_times(batch: int, context: int, reps: int, layers: int = 30) -> dict:
    kv, g, hd = 3, 3, 64
    key = jax.random.PRNGKey(0)
    q = jax.random.normal(key, (batch, kv, g, hd))
    stores = {
        "multiply-sum f32": F32,
        "einsum f32": F32,
        "uint16 bits": jnp.uint16,
        "bfloat16": jnp.bfloat16,
        "einsum bf16": jnp.bfloat16,
    }
    out = {}
    for variant, dtype in stores.items():

        def make(shape, dtype=dtype):
            x = jax.random.normal(key, shape)
            if dtype == jnp.uint16:
                return jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)
            return x.astype(dtype)

        cks = [make((batch, kv, hd, context)) for _ in range(layers)]
        cvs = [make((batch, kv, context, hd)) for _ in range(layers)]

        @jax.jit
        def run(q, cks, cvs, variant=variant):
            out = q
            for ck, cv in zip(cks, cvs, strict=True):
                out = _attend(out, ck, cv, context - 1, variant).astype(F32) + q
            return out

        sec = median_time(lambda cks=cks, cvs=cvs: run(q, cks, cvs).block_until_ready(), reps)
        out[variant] = {"ms": 1e3 * sec}
    base = out["multiply-sum f32"]["ms"]
    for v in out.values():
        v["vs_multiply_sum_f32"] = v["ms"] / base
    print(json.dumps(out), flush=True)
    return out


def plan_times(lm, specs: list[str], batch: int, reps: int) -> list[dict]:
    cfg, params = lm.cfg, llama.unstack_layers(lm.params)
    coder = coders.get("ac")
    rows = []
    for spec in specs:
        c, _, s = spec.partition(":")
        context, sliding = int(c), "ring" if s == "ring" else "prefill"
        plan = engine.make_plan(
            batch * 4 * context, context, 1 if sliding == "ring" else int(s), batch, 1,
            parallel.data_size(), sliding,
        )  # fmt: skip
        step = engine.compiled_step(cfg, coder, plan.span(context - 1), plan.ring)
        tok = jnp.zeros(plan.batch_size, jnp.int32)
        state = [engine.new_cache(cfg, plan)]

        def one_step(state=state, step=step, tok=tok, pos=context - 1):
            state[0], probs = step(
                params, None, state[0]._replace(pos=jnp.int32(pos)), tok, tok, tok
            )
            jax.device_get(probs)

        row = {"plan": spec, "batch": plan.batch_size, "step_ms": 1e3 * median_time(one_step, reps)}
        per_window = row["step_ms"]
        if not plan.ring:
            prefill = engine.compiled_prefill(cfg, coder)
            x = jnp.zeros((plan.batch_size, plan.prefill_len), jnp.int32)

            def one_prefill(state=state, prefill=prefill, x=x, tok=tok):
                state[0], probs = prefill(
                    params, None, state[0]._replace(pos=jnp.int32(0)), x, tok, tok
                )
                jax.device_get(probs)

            row["prefill_ms"] = 1e3 * median_time(one_prefill, max(1, reps // 2))
            per_window = row["prefill_ms"] + (plan.stride - 1) * row["step_ms"]
        row["ms_per_token"] = per_window / (plan.stride * plan.batch_size)
        row["tokens_per_s"] = 1e3 / row["ms_per_token"]
        row["vs_first"] = rows[0]["ms_per_token"] / row["ms_per_token"] if rows else 1.0
        del state[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--batches", default="16,32,64")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--parts", default="decode,attention,plans")
    ap.add_argument("--plans", default="512:256,2048:1024,2048:ring")
    ap.add_argument("--plan-batch", type=int, default=16)
    ap.add_argument("--out", default="out/bench-decode-cache.json")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    parts = set(args.parts.split(","))
    report = {"devices": [str(d) for d in jax.devices()], "context": args.context}
    lm = load_smollm2()
    if "decode" in parts:
        report["decode_step"] = step_times(lm, args.context, batches, args.reps)
    if "attention" in parts:
        report["attention_batch"] = batches[0]
        report["attention"] = attention_times(batches[0], args.context, args.reps)
    if "plans" in parts:
        report["plans"] = plan_times(lm, args.plans.split(","), args.plan_batch, args.reps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
