"""LAMDAS scoring throughput vs the plain model forward, measured in the same run.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/lamdas.py [--lens 128,512] [--batch 8] [--reps 3]
        [--out out/bench-lamdas.json]

Hardware: any JAX backend; the same script runs on a GPU/TPU unchanged (default device, `data`
mesh over all local devices). README numbers: the 2-core CPU development machine, with `uptime`
load printed beside them (other jobs share those cores: compare ratios, not absolutes).
Runtime: ~5-10 min on that CPU.

What it measures (SmolLM2-135M, P = 30 prefix, batches of real pool text filled to exactly T
tokens, median of --reps timed calls after a warm-up, calls interleaved so load drifts hit all
alike):
- `forward`: the plain model's per-token log-likelihood of B candidates (one pass: forward +
  chunked vocabulary log-softmax) — what a perplexity filter costs;
- `forward 2B`: the same on 2B rows (the work of both LAMDAS passes);
- `lamdas`: the scoring kernel on B candidates (both terms in one call: 2B rows, prefix masked
  on half of them), reported as candidates/s and candidate tokens/s;
- ratios lamdas / (2 x forward) and lamdas / forward 2B (target: <= ~1, i.e. scoring runs at
  forward speed x 2 passes, no slower), in wall time and in CPU time of this process (on a
  shared machine the CPU-time ratio is the one to trust: wall time also counts the neighbours);
- end to end `likelihood_terms` on `--docs` pool documents at max_tokens 256 (tokenising, length
  buckets, padding; every bucket compiled in a warm-up run);
- a prefix-training step (B = 4, T = 128): reference tokens/s.

`--mfu` instead runs LAMDAS end to end (`train_prefix` + `likelihood_terms`, the public API, so
the same script measures any version of jaxsel put first on PYTHONPATH: before/after) and reports
model FLOP utilisation against the f32 matmul peak measured in the same run (best of 5 square
matmuls of --peak-n): FLOPs are counted on the real, unpadded tokens only (padding is waste and
shows as lower MFU), per token 2 x (layer matmul weights + vocabulary head) + causal attention
(2 x 2 x L x H x hd x (position + P)); prefix training counts 2 x forward (forward + activation
gradients: the model weights are frozen, so no weight-gradient matmuls), scoring 2 x forward
(conditioned + plain pass). Each phase runs once to compile its buckets, then is timed.

    .venv/bin/python experiments/bench/lamdas.py --mfu [--refs 16] [--ref-tokens 128]
        [--epochs 2] [--cands 16] [--cand-tokens 256] [--out out/bench-lamdas-mfu.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.data.defaults import default_pool
from jaxsel.kernels import lamdas as K
from jaxsel.methods import lamdas
from jaxsel.models import llama
from jaxsel.models.loaders import load_smollm2


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def filled_batch(lm, texts, rows: int, length: int) -> np.ndarray:
    """[rows, length + 1] token ids of real text (the pool's documents, each after a bos, as
    one stream cut into rows): length predicted tokens per row."""
    stream = np.concatenate(
        [[lm.tokenizer.bos_id, *ids] for ids in lm.tokenizer.encode_batch(list(texts[: 4 * rows]))]
    )
    need = rows * (length + 1)
    return np.resize(stream, need).reshape(rows, length + 1).astype(np.int32)


def timed(fns: dict, reps: int) -> dict[str, dict[str, float]]:
    """Median wall seconds and CPU seconds (this process, all threads) per call of each function,
    calls interleaved. On a shared machine CPU seconds measure the work itself; wall time also
    measures the neighbours."""
    for f in fns.values():
        jax.block_until_ready(f())
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(f())
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: {"wall": float(np.median(wall[k])), "cpu": float(np.median(cpu[k]))} for k in fns}


def forward_flops(cfg, lengths, prefix_len: int) -> float:
    """Model FLOPs of one forward pass over texts of these real token counts (see --mfu)."""
    d, layers = cfg.hidden_size, cfg.num_layers
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * cfg.intermediate_size
    dense = 2 * (layers * per_layer + d * cfg.vocab_size)
    total = 0.0
    for n in lengths:
        ctx = np.arange(1, n + 1) + prefix_len  # keys each query attends to
        total += n * dense + float(4 * layers * q * ctx.sum())
    return total


def matmul_peak(n: int) -> float:
    """Best of 5 f32 [n, n] @ [n, n] matmuls, FLOP/s."""
    a = jax.random.normal(jax.random.key(0), (n, n), np.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def mfu(args) -> None:
    from jaxsel.data.defaults import humaneval_target

    report = {"device": str(jax.devices()[0]), "settings": vars(args), "uptime_start": uptime()}
    lm = load_smollm2(args.dtype)
    peak = matmul_peak(args.peak_n)
    refs = humaneval_target().texts[: args.refs]
    cands = default_pool().texts[: args.cands]
    cfg = lamdas.Config(
        prefix_len=30,
        epochs=args.epochs,
        max_tokens=args.cand_tokens,
        train_max_tokens=args.ref_tokens,
        score_batch_size=8,
    )
    ref_len = [len(s) - 1 for s in lm.tokenizer.encode_docs(refs, args.ref_tokens)[0]]
    lamdas.train_prefix(lm, refs, dataclasses.replace(cfg, epochs=1))  # compile every bucket
    t0 = time.perf_counter()
    prefix, _ = lamdas.train_prefix(lm, refs, cfg)
    train_s = time.perf_counter() - t0
    train_flops = 2 * args.epochs * forward_flops(lm.cfg, ref_len, 30)
    lamdas.likelihood_terms(lm, prefix, cands, cfg)  # compile every bucket
    t0 = time.perf_counter()
    terms = lamdas.likelihood_terms(lm, prefix, cands, cfg)
    score_s = time.perf_counter() - t0
    cand_len = terms[:, 3].astype(int)
    score_flops = 2 * forward_flops(lm.cfg, cand_len, 30)
    report.update(
        matmul_peak_gflops=peak / 1e9,
        train={
            "seconds": train_s,
            "real_tokens": int(sum(ref_len)) * args.epochs,
            "gflops": train_flops / 1e9,
            "mfu": train_flops / train_s / peak,
        },
        score={
            "seconds": score_s,
            "real_tokens": int(cand_len.sum()),
            "gflops": score_flops / 1e9,
            "mfu": score_flops / score_s / peak,
        },
        uptime_end=uptime(),
    )
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lens", default="128,512")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default="out/bench-lamdas.json")
    ap.add_argument("--mfu", action="store_true", help="end-to-end MFU run (see the docstring)")
    ap.add_argument("--refs", type=int, default=16)
    ap.add_argument("--ref-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cands", type=int, default=16)
    ap.add_argument("--cand-tokens", type=int, default=256)
    ap.add_argument("--peak-n", type=int, default=1024)
    args = ap.parse_args()
    if args.mfu:
        return mfu(args)
    report = {
        "device": str(jax.devices()[0]),
        "n_devices": jax.device_count(),
        "settings": vars(args),
        "uptime_start": uptime(),
    }
    lm = load_smollm2(args.dtype)
    mesh = parallel.data_mesh()
    rep = parallel.replicated(mesh)
    params = jax.device_put(lm.params, rep)
    prefix = jax.device_put(K.random_prefix(jax.random.key(0), lm.cfg, 30, 0.5), rep)
    pool = default_pool()
    b = parallel.round_up(args.batch, parallel.data_size(mesh))
    rows_sh = parallel.sharding("batch", "seq", mesh=mesh)
    forward = jax.jit(
        lambda p, x, m: llama.token_logprobs(p, x, m, lm.cfg)[0].sum(-1),
        in_shardings=(rep, rows_sh, rows_sh),
    )
    score = lamdas._terms_fn(lm.cfg, mesh)
    kernel = []
    for t in (int(x) for x in args.lens.split(",")):
        seq = filled_batch(lm, pool.texts, 2 * b, t)  # T predicted tokens after a bos
        mask = np.ones_like(seq, bool)
        sec = timed(
            {
                "forward": functools.partial(forward, params, seq[:b], mask[:b]),
                "forward 2B": functools.partial(forward, params, seq, mask),
                "lamdas": functools.partial(score, params, prefix, seq[:b], mask[:b]),
            },
            args.reps,
        )
        wall = {k: v["wall"] for k, v in sec.items()}
        cpu = {k: v["cpu"] for k, v in sec.items()}
        row = {
            "T": t,
            "B": b,
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "forward_tokens_per_s": b * t / wall["forward"],
            "lamdas_candidates_per_s": b / wall["lamdas"],
            "lamdas_tokens_per_s": b * t / wall["lamdas"],
            "lamdas_over_2x_forward": {
                k: v["lamdas"] / (2 * v["forward"]) for k, v in (("wall", wall), ("cpu", cpu))
            },
            "lamdas_over_forward_2B": {
                k: v["lamdas"] / v["forward 2B"] for k, v in (("wall", wall), ("cpu", cpu))
            },
        }
        kernel.append(row)
        print(json.dumps(row), flush=True)
    report["kernel"] = kernel

    texts = pool.texts[: args.docs]
    cfg = lamdas.Config(max_tokens=256, score_batch_size=args.batch)
    host_prefix = jax.device_get(prefix)
    lamdas.likelihood_terms(lm, host_prefix, texts, cfg)  # compiles every bucket used
    t0 = time.perf_counter()
    terms = lamdas.likelihood_terms(lm, host_prefix, texts, cfg)
    dt = time.perf_counter() - t0
    report["end_to_end"] = {
        "docs": len(texts),
        "tokens": int(terms[:, 3].sum()),
        "seconds": dt,
        "candidates_per_s": len(texts) / dt,
        "tokens_per_s": float(terms[:, 3].sum()) / dt,
    }
    print(json.dumps(report["end_to_end"]), flush=True)

    tx, step = lamdas._train_step_fn(lm.cfg, mesh, 1e-3, 0.1)
    tb = parallel.round_up(4, parallel.data_size(mesh))
    seq = filled_batch(lm, pool.texts, tb, 128)
    batch = (seq, np.ones_like(seq, bool))
    state = jax.device_put(K.init_train_state(host_prefix, tx), rep)
    state, loss = step(state, params, *batch)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(args.reps):
        state, loss = step(state, params, *batch)
    jax.block_until_ready(loss)
    dt = (time.perf_counter() - t0) / args.reps
    report["train_step"] = {"B": tb, "T": 128, "seconds": dt, "tokens_per_s": tb * 128 / dt}
    print(json.dumps(report["train_step"]), flush=True)
    report["uptime_end"] = uptime()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(report["uptime_start"], "|", report["uptime_end"])


if __name__ == "__main__":
    main()
