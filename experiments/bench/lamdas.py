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
wall seconds, CPU seconds of the process, peak RSS (VmHWM) and model FLOP utilisation against the
f32 matmul peak measured in the same run (best of 5 square matmuls of --peak-n, per wall second
and per CPU second: on a shared machine `mfu_cpu` is the figure that survives the neighbours).
FLOPs are counted on the real, unpadded tokens only (padding is waste and shows as lower MFU),
per token 2 x (layer matmul weights + vocabulary head) + causal attention
(2 x 2 x L x H x hd x (position + P)); prefix training counts 2 x forward (forward + activation
gradients: the model weights are frozen, so no weight-gradient matmuls; remat recompute is not
counted), scoring 2 x forward (conditioned + plain pass). Every bucket is compiled first (one
text per bucket), then each phase is timed once.

    .venv/bin/python experiments/bench/lamdas.py --mfu [--refs 16] [--ref-tokens 128]
        [--epochs 2] [--cands 16] [--cand-tokens 256] [--out out/bench-lamdas-mfu.json]

`--compare DIR` runs `--mfu` (same flags) in a subprocess with PYTHONPATH=DIR (before: e.g. an
export of an older commit, `git archive <commit> | tar -x -C DIR`, plus the built
jaxsel/compress/*.so) and then with this tree (after), alternating for --rounds rounds, and
reports after/before ratios of the medians. The full-size held-out run is
`--refs 60 --ref-tokens 512 --epochs 10 --cands 700 --cand-tokens 512` (hours on a busy 2-core
CPU; README numbers use fewer epochs and candidates, same shapes).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from _proc import machine

from jaxsel import parallel
from jaxsel.data.defaults import default_pool
from jaxsel.kernels import lamdas as K
from jaxsel.lm.train import init_train_state
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


def matmul_peak(n: int) -> dict[str, float]:
    """Best of 5 f32 [n, n] @ [n, n] matmuls: FLOP per wall second and per CPU second of this
    process (the CPU-time peak is the one that survives other jobs on the machine)."""
    a = jax.random.normal(jax.random.key(0), (n, n), np.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    wall, cpu = np.inf, np.inf
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(a))
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return {"wall": 2 * n**3 / wall, "cpu": 2 * n**3 / cpu}


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (VmHWM), GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _buckets(max_tokens: int) -> tuple[int, ...]:
    """The runtime's padded lengths, in this version of jaxsel or the one before it (powers of
    two from 32), so that `--mfu` compiles every bucket before it times anything."""
    try:
        from jaxsel.lm.train import token_buckets
    except ImportError:
        from jaxsel.batching import bucket_lengths

        return bucket_lengths(max_tokens + 1, 32)
    return token_buckets(max_tokens)


def one_per_bucket(texts, lengths, buckets) -> list[str]:
    """One text (the longest) of every bucket that these texts (lengths = tokens incl. bos) use."""
    pick = {}
    for text, n in zip(texts, lengths, strict=True):
        b = next(x for x in buckets if x >= n)
        if b not in pick or n > pick[b][1]:
            pick[b] = (text, n)
    return [pick[b][0] for b in sorted(pick)]


def _phase(fn, flops: float, peak: dict, tokens: int) -> tuple[object, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "real_tokens": tokens,
        "gflops": round(flops / 1e9, 1),
        "mfu_wall": round(flops / wall / peak["wall"], 3),
        "mfu_cpu": round(flops / cpu / peak["cpu"], 3),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }


def mfu(args) -> dict:
    """LAMDAS end to end (see the module docstring); returns the report."""
    from jaxsel.data.defaults import humaneval_target

    report = {"device": str(jax.devices()[0]), "machine": machine(), "uptime_start": uptime()}
    t0 = time.perf_counter()
    lm = load_smollm2(args.dtype)
    report["load"] = {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gb": peak_rss_gb()}
    peak = matmul_peak(args.peak_n)
    refs = list(humaneval_target().texts[: args.refs])
    cands = list(default_pool().texts[: args.cands])
    cfg = lamdas.Config(
        prefix_len=30,
        epochs=args.epochs,
        max_tokens=args.cand_tokens,
        train_max_tokens=args.ref_tokens,
        score_batch_size=8,
    )
    ref_seqs = lm.tokenizer.encode_docs(refs, args.ref_tokens)[0]
    cand_seqs = lm.tokenizer.encode_docs(cands, args.cand_tokens)[0]
    ref_len = [len(s) - 1 for s in ref_seqs]
    cand_len = [len(s) - 1 for s in cand_seqs]
    # Compile every bucket first (one text per bucket: a padded batch of the full shape).
    warm = dataclasses.replace(cfg, epochs=1)
    t0 = time.perf_counter()
    for text in one_per_bucket(refs, [n + 1 for n in ref_len], _buckets(args.ref_tokens)):
        lamdas.train_prefix(lm, [text], warm)
    prefix = lamdas.init_prefix(lm, ref_seqs, cfg)
    for text in one_per_bucket(cands, [n + 1 for n in cand_len], _buckets(args.cand_tokens)):
        lamdas.likelihood_terms(lm, prefix, [text], cfg)
    report["compile_s"] = round(time.perf_counter() - t0, 1)
    train_flops = 2 * args.epochs * forward_flops(lm.cfg, ref_len, 30)
    (prefix, losses), report["train"] = _phase(
        lambda: lamdas.train_prefix(lm, refs, cfg), train_flops, peak, sum(ref_len) * args.epochs
    )
    score_flops = 2 * forward_flops(lm.cfg, cand_len, 30)
    terms, report["score"] = _phase(
        lambda: lamdas.likelihood_terms(lm, prefix, cands, cfg),
        score_flops,
        peak,
        int(sum(cand_len)),
    )
    report.update(
        settings={k: v for k, v in vars(args).items() if k not in ("compare", "out")},
        matmul_peak_gflops={k: round(v / 1e9, 1) for k, v in peak.items()},
        ref_tokens_median=float(np.median(ref_len)),
        cand_tokens_median=float(np.median(cand_len)),
        train_nll=[round(x, 5) for x in losses],
        score_checksum=float(np.round(terms[:, 0].sum(), 3)),
        peak_rss_gb=peak_rss_gb(),
        uptime_end=uptime(),
    )
    return report


def compare(args) -> dict:
    """`--mfu` in a subprocess per version, before (PYTHONPATH=--compare) then after (this
    tree), alternating for --rounds rounds; ratios after / before of the medians."""
    here = Path(__file__).resolve()
    root = here.parents[2]
    keys = ("refs", "ref_tokens", "epochs", "cands", "cand_tokens", "peak_n", "dtype")
    flags = [
        "--mfu",
        *(x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))),
    ]
    runs = {"before": [], "after": []}
    for _ in range(args.rounds):
        for name, path in (("before", args.compare), ("after", str(root))):
            env = {**os.environ, "PYTHONPATH": path}
            cmd = [sys.executable, str(here), *flags, "--json"]  # stderr: the run's logs
            out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(name, json.dumps(runs[name][-1]), flush=True)

    def med(name, *keys):
        vals = []
        for r in runs[name]:
            for k in keys:
                r = r[k]
            vals.append(r)
        return float(np.median(vals))

    table = {}
    for phase in ("train", "score"):
        for k in ("wall_s", "cpu_s", "mfu_wall", "mfu_cpu"):
            b, a = med("before", phase, k), med("after", phase, k)
            table[f"{phase} {k}"] = {"before": b, "after": a, "after/before": round(a / b, 3)}
    b, a = med("before", "peak_rss_gb"), med("after", "peak_rss_gb")
    table["peak_rss_gb"] = {"before": b, "after": a, "after/before": round(a / b, 3)}
    return {"before_path": args.compare, "table": table, "runs": runs}


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
    ap.add_argument("--compare", help="--mfu before (this PYTHONPATH) and after (this tree)")
    ap.add_argument("--rounds", type=int, default=1, help="--compare: alternating rounds")
    ap.add_argument("--json", action="store_true", help="--mfu: one JSON line on stdout only")
    args = ap.parse_args()
    if args.compare or args.mfu:
        report = compare(args) if args.compare else mfu(args)
        if args.json:
            print(json.dumps(report))
            return
        print(json.dumps(report, indent=1))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        return
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
    state = jax.device_put(init_train_state(host_prefix, tx), rep)
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
