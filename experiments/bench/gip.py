"""GIP selection at the paper's scale (Table 6): our JAX kernels against a numpy transcription of
Algorithm 1, in the same run, each variant in its own process (peak RSS = that process's VmHWM,
imports and the loaded embeddings included; not ru_maxrss, which Linux carries over from the
forking parent across exec).

Commands (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/gip.py [--sizes 7473,52000] [--d 384]
        [--budgets 0.1,0.2,0.5] [--numpy-budgets 0.1] [--gram-max-gb 4] [--embeddings E.npy]
    .venv/bin/python experiments/bench/gip.py --gpu      # m = 1,000,000, d = 384, k = 100,000

Workload: MP+SC (Algorithm 1 on the self-compression scores g = FᵀF·1, n = 1), k = 10/20/50% of
m. m = 7,473 and 52,000 are Table 6's GSM8K and Alpaca rows. Embeddings: `--embeddings` (an
[m, d] .npy) or synthetic, seeded, clustered Gaussian rows with a shared direction (mean pairwise
cosine ≈ 0.3, like sentence embeddings; uncorrelated rows would flatter nothing here: the cost
per step does not depend on the data).

Variants:
  jax-f64      gip.select, matrix-free, float64: the reference order (with the numpy variants)
  jax          gip.select, matrix-free (Φ[s, :] = f_sᵀF each step): O(md) memory
  jax-2dev     the same on 2 XLA host devices (the pool split over the `data` axis, one thread
               each)
  jax-gram     gip.select with Φ = FᵀF precomputed (O(m²)), only where Φ fits --gram-max-gb
  numpy        Algorithm 1 in numpy float32, Φ rows from F each step (same memory as jax)
  numpy-gram   Algorithm 1 in numpy float32 as the paper ran it: Φ precomputed blockwise, then
               W ← W − W[:, s]Φ[s, :]; only where Φ fits --gram-max-gb
"select" is the wall time of the whole call (host checks, transfer, compile and the k steps);
"warm" a second call with the same shapes (no compile). "agree" = length of the prefix of the
selection order equal to jax-f64's (jax's where f64 was not run). Float32 runs part from it after
a few hundred steps, once MP's residual scores have shrunk ~1e-3 below the initial ones that
float32 rounding is relative to (jaxsel.methods.gip, "Precision").

Hardware: the 2-core development VM (AMD EPYC, 23 GB, no GPU), shared with other jobs (the load
average is printed; CPU seconds are given next to wall seconds). Runtime there: about 20 minutes
with the defaults at load 4-7.
Measured there (idle, load 1.4): m = 52,000, k = 10%: jax 8.7 s wall / 16.5 CPU-s (warm 9.6 s),
0.51 GB peak; float64 20.3 s, 0.66 GB; numpy float32 matrix-free 9.8 s, 0.27 GB. Every step reads F
once (80 MB in float32): the loop runs at the VM's memory bandwidth (1.2-1.8 ms per step in a
bare jitted matvec loop, varying with the VM's neighbours), and so does numpy's threaded gemv.
Table 6 reports 214 s of Gram preprocessing + 25 s of selection and 10.8 GB on its CPU.
`--gpu` has not been run (no GPU was available); it needs a CUDA jaxlib
(`pip install -U "jax[cuda12]"`) and about 2 GB of accelerator memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _proc import machine

PAPER = {  # Table 6: m -> (preproc s, {budget: selection s}, preproc GB, selection GB)
    7473: (7.01, {0.1: 0.86, 0.2: 0.87, 0.5: 0.87}, 0.3, 0.04),
    52000: (214.11, {0.1: 25.12, 0.2: 49.67, 0.5: 123.62}, 10.8, 0.3),
}
GRAM_BLOCK = 4096  # rows of Φ per block in the numpy transcription


def synthetic(m: int, d: int, seed: int = 0, clusters: int = 64) -> np.ndarray:
    """[m, d] float32 rows: shared direction + one of `clusters` centres + noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(d).astype(np.float32)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    out = np.empty((m, d), np.float32)
    for s in range(0, m, 65536):
        n = min(65536, m - s)
        out[s : s + n] = base + centres[rng.integers(0, clusters, n)]
        out[s : s + n] += rng.standard_normal((n, d), dtype=np.float32)
    return out


# ------------------------------------------------------------------- numpy transcription


def numpy_mp(e: np.ndarray, k: int, gram: bool) -> tuple[np.ndarray, float]:
    """Algorithm 1, float32, MP+SC. Returns (order, preprocessing seconds)."""
    # Rows of F as one contiguous [m, d] array: Φ[s, :] = F_rows @ f_s is then a plain gemv.
    rows = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    m = rows.shape[0]
    t0 = time.perf_counter()
    w = rows @ rows.sum(axis=0)  # g = FᵀF·1
    phi = None
    if gram:  # line 2, blockwise as Appendix A.1 describes
        phi = np.empty((m, m), np.float32)
        for s in range(0, m, GRAM_BLOCK):
            phi[s : s + GRAM_BLOCK] = rows[s : s + GRAM_BLOCK] @ rows.T
    pre = time.perf_counter() - t0
    taken = np.zeros(m, bool)
    order = np.empty(k, np.int64)
    for t in range(k):
        score = np.where(taken, -np.inf, w * w)  # n = 1: Σ_i W_ij² = w_j²
        s = int(np.argmax(score))
        row = phi[s] if gram else rows @ rows[s]
        w -= w[s] * row  # line 7 (selected columns are masked by `taken`)
        taken[s] = True
        order[t] = s
    return order, pre


# ------------------------------------------------------------------------------ one variant


def _hwm_gb() -> float:
    """Peak resident set of this process since exec (VmHWM), GB."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb * 1024 / 1e9


def _cpu() -> float:
    """CPU seconds of this process (all threads): on a machine shared with other jobs, the
    load-independent companion of the wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(args) -> None:
    rss0 = _hwm_gb()
    if args.variant.startswith("jax"):
        import jax

        from jaxsel.methods import gip
    base = _hwm_gb()
    t0 = time.perf_counter()
    if args.emb:
        e = np.load(args.emb)
    else:
        e = synthetic(args.m, args.d, args.seed)
    load = time.perf_counter() - t0
    res = {"variant": args.variant, "m": e.shape[0], "k": args.k, "load_s": load}
    t0, c0 = time.perf_counter(), _cpu()
    if args.variant.startswith("jax"):
        form = "gram" if args.variant == "jax-gram" else "matrix-free"
        dtype = "float64" if args.variant == "jax-f64" else "float32"
        order = gip.select(e, args.k, form=form, dtype=dtype).order
        res["select_s"], res["select_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
        t0, c0 = time.perf_counter(), _cpu()
        gip.select(e, args.k, form=form, dtype=dtype)
        res["warm_s"], res["warm_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
        res["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            res["device_peak_gb"] = stats["peak_bytes_in_use"] / 1e9
    else:
        order, pre = numpy_mp(e, args.k, args.variant == "numpy-gram")
        res["select_s"], res["select_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
        res["preproc_s"] = pre
    res["peak_rss_gb"] = _hwm_gb()
    res["runtime_rss_gb"] = base  # after imports, before the embeddings
    res["python_rss_gb"] = rss0
    if args.order_out:
        np.save(args.order_out, order)
    print(json.dumps(res))


def run_child(
    variant: str, k: int, emb: str | None, m: int, d: int, order_out: str, seed: int
) -> dict:
    flags = {"--child": variant, "--k": k, "--order-out": order_out, "--m": m, "--d": d}
    cmd = [sys.executable, __file__, "--seed", str(seed)]
    cmd += [str(x) for kv in flags.items() for x in kv]
    if emb:
        cmd += ["--emb", emb]
    env = dict(os.environ)
    if variant == "jax-2dev":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        return {"variant": variant, "k": k, "error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def agree(a: np.ndarray, b: np.ndarray) -> int:
    diff = np.flatnonzero(a != b)
    return int(diff[0]) if diff.size else int(a.size)


def fmt(v, unit=""):
    return "—" if v is None else f"{v:.2f}{unit}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="7473,52000", help="pool sizes m")
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--budgets", default="0.1,0.2,0.5", help="k as fractions of m (jax)")
    p.add_argument(
        "--numpy-budgets",
        default="0.1",
        help="budgets for the float64 and numpy variants at m >= 20000 (slow); all below",
    )
    p.add_argument(
        "--gram-max-gb",
        type=float,
        default=4.0,
        help="run the precomputed-Φ variants only where Φ (4m² bytes) fits this",
    )
    p.add_argument("--embeddings", help="[m, d] .npy instead of synthetic rows (one size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gpu",
        action="store_true",
        help="one jax matrix-free run at --m (default 1,000,000) and --k (default 100,000)",
    )
    p.add_argument("--out", help="JSON file for the raw results")
    # child mode
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help="--gpu: greedy steps (default 100,000)")
    p.add_argument("--m", type=int, help="--gpu: pool size (default 1,000,000)")
    p.add_argument("--emb", help=argparse.SUPPRESS)
    p.add_argument("--order-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.variant = args.child
        return child(args)

    print(f"# GIP bench: {machine()}\n")
    tmp = Path(tempfile.mkdtemp(prefix="gip-bench-"))
    if args.gpu:
        m, k = args.m or 1_000_000, args.k or 100_000
        r = run_child("jax", k, None, m, args.d, str(tmp / "gpu.npy"), args.seed)
        print(json.dumps(r, indent=2))
        if "cpu" in r.get("devices", "cpu"):
            print("note: no accelerator was found; this ran on the CPU")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.embeddings:
        sizes = [np.load(args.embeddings, mmap_mode="r").shape[0]]
    budgets = [float(b) for b in args.budgets.split(",")]
    np_budgets = [float(b) for b in args.numpy_budgets.split(",") if b]
    rows = []
    for m in sizes:
        emb = args.embeddings
        if emb is None:
            emb = str(tmp / f"E{m}.npy")
            np.save(emb, synthetic(m, args.d, args.seed))
        gram_fits = 4 * m * m / 1e9 <= args.gram_max_gb
        for b in budgets:
            k = int(round(b * m))
            slow = m < 20000 or b in np_budgets  # the float64 and numpy variants
            variants = ["jax-f64"] * slow + ["jax", "jax-2dev"] + ["jax-gram"] * gram_fits
            variants += (["numpy"] + ["numpy-gram"] * gram_fits) * slow
            ref = None
            for v in variants:
                path = str(tmp / f"{v}-{m}-{k}.npy")
                r = run_child(v, k, emb, m, args.d, path, args.seed)
                r["budget"] = b
                if "error" not in r:
                    order = np.load(path)
                    ref = order if ref is None else ref
                    r["agree"] = agree(order, ref)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
        if not gram_fits:
            print(
                f"(m = {m}: Φ needs {4 * m * m / 1e9:.1f} GB > --gram-max-gb "
                f"{args.gram_max_gb}: precomputed variants skipped)"
            )
    print(
        "\n| m | k | variant | preproc s | select s (CPU s) | warm s (CPU s) | peak RSS GB "
        "| agree |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r.get('m', '?')} | {r['k']} | {r['variant']} | error: {r['error']} |")
            continue
        print(
            f"| {r['m']} | {r['k']} ({r['budget']:.0%}) | {r['variant']} | "
            f"{fmt(r.get('preproc_s'))} | {fmt(r['select_s'])} ({fmt(r['select_cpu_s'])}) | "
            f"{fmt(r.get('warm_s'))} ({fmt(r.get('warm_cpu_s'))}) | "
            f"{r['peak_rss_gb']:.2f} | {r['agree']}/{r['k']} |"
        )
    print("\nPaper, Table 6 (one AMD CPU): m | budget | preproc s | select s | RAM preproc/select")
    for m, (pre, sel, ram_pre, ram_sel) in PAPER.items():
        for b, s in sel.items():
            print(f"  {m} | {b:.0%} | {pre} | {s} | {ram_pre} GB / {ram_sel} GB")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
