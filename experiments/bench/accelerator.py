"""Measured against planned, the day an accelerator is attached: jaxsel's hot programs timed on
the devices of this machine, each beside its roofline time for the same shapes.

Commands (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/accelerator.py --smoke      # tiny shapes on the CPU
    .venv/bin/python experiments/bench/accelerator.py --out out/accelerator.json   # a GPU/TPU

Programs (`jaxsel.plan.programs`: jaxsel's own jitted functions, the ones the methods run, built
for one `data` mesh over every local device; inputs are random arrays of the planned shapes and
shardings, model weights random at the model's shape, nothing downloaded):
  gip m=1e6, gip m=1e7   GIP MP+SC matrix-free, d = 384, k = 1000 (one call runs all k steps)
  ppl score              SmolLM2-135M scoring, --batch-size texts x 512 tokens per call
  lamdas score           LAMDAS scoring (both terms over a doubled batch): samples/s
  lamdas prefix train    prefix-tuning step (P = 30)
  train lora r8          downstream LoRA step, 256-token rows: downstream tokens/s
  finezip decode         FineZip ring decode step (C = 2048): KB/s at --bytes-per-token
Each is compiled once, run once to warm up, then timed as the median of --reps calls (outputs
waited for; a donated state or KV cache is fed back as the program does). A program whose
compiled memory exceeds the device's is skipped with the reason.

Roofline (`jaxsel.plan`): the same compiled program's flops and HBM bytes, loop bodies counted
by their trip counts (`jaxsel.plan.hlo`), against the device's peak: TPU chips from
`jaxsel.plan.chips.CHIPS`, NVIDIA GPUs from `GPUS` below (datasheet dense bf16 tensor-core peak
and HBM bandwidth), the CPU (--smoke) from a measured matmul and a measured copy. On an
accelerator the ratio measured / roofline is >= 1; near 1 the program runs at the hardware's
limit, far above it the gap is overhead the roofline does not see (dispatch, small kernels,
collectives' latency). On the CPU the tiny shapes stay in cache, so the counted "HBM" bytes
overstate the memory traffic and ratios < 1 appear: --smoke checks the script, not the CPU.
`flops_util` = the program's counted flops per second / peak (MFU with the compiler's own flop
count, attention and rematerialisation included).

On a TPU slice the programs and their costs are the ones `jaxsel plan --mesh host` compiles for
the slice's host (same chips, same shapes), so the ratio compares the plan with the machine.

Hardware: not run on an accelerator yet (none was attached to the development VM). `--smoke`
ran on the 2-core development VM (CPU, jax 0.10.2) in 54-100 s of wall time at load 10-17
(24 CPU-s); its numbers only show that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import machine  # noqa: E402
from _timing import matmul_flops  # noqa: E402

from jaxsel import parallel  # noqa: E402
from jaxsel.models.llama import LlamaConfig  # noqa: E402
from jaxsel.plan import chips, hlo, programs  # noqa: E402

# NVIDIA datasheets (H100 SXM5, H200 SXM, A100 SXM4 80 GB): dense bf16 tensor-core FLOP/s, HBM
# bytes/s.
GPUS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12), "A100": (312e12, 2.039e12)}
# --smoke: a 2-layer Llama-family model of the real structure, small enough for a CPU.
TINY = LlamaConfig(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_eps=1e-5, tie_embeddings=True,
    max_position=2048,
)  # fmt: skip


def peaks(device) -> tuple[float, float, str]:
    """(FLOP/s, HBM bytes/s, source) of `device`."""
    kind = device.device_kind
    for chip in chips.CHIPS.values():
        if kind == chip.device_kind:
            return chip.peak_flops, chip.hbm_bandwidth, f"jaxsel.plan.chips {chip.name}"
    for name, (flops, bw) in GPUS.items():
        if name in kind:
            return flops, bw, f"datasheet {name}"
    x = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MB: read once, written once
    f = jax.jit(lambda a: a + 1)
    f(x).block_until_ready()
    t = min(_timed(lambda: f(x).block_until_ready()) for _ in range(5))
    return matmul_flops(3), 2 * x.nbytes / t, "measured here (matmul, copy)"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def materialize(tree, key, vocab: int):
    """Random arrays of `tree`'s ShapeDtypeStructs, on their shardings: floats |N(0, 0.02²)|
    (positive, so an Adam second moment stays valid), integer arrays token ids below `vocab`
    (integer scalars 0), bools True."""
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for i, s in enumerate(leaves):
        k = jax.random.fold_in(key, i)
        if jnp.issubdtype(s.dtype, jnp.floating):
            x = 0.02 * jnp.abs(jax.random.normal(k, s.shape, jnp.float32))
        elif jnp.issubdtype(s.dtype, jnp.integer):
            x = jax.random.randint(k, s.shape, 0, vocab) if s.shape else jnp.zeros((), s.dtype)
        else:
            x = jnp.ones(s.shape, bool)
        out.append(jax.device_put(x.astype(s.dtype), s.sharding))
    return jax.tree.unflatten(treedef, out)


def gip_inputs(p: programs.Program, m: int, key):
    """F with unit columns (padding columns zero and marked invalid), the valid mask."""
    f_s, valid_s = p.args[:2]
    d, m_pad = f_s.shape
    f = jax.random.normal(key, (d, m_pad), jnp.float32)
    f = jnp.where(jnp.arange(m_pad) < m, f / jnp.linalg.norm(f, axis=0), 0.0)
    return (
        jax.device_put(f, f_s.sharding),
        jax.device_put(jnp.arange(m_pad) < m, valid_s.sharding),
    )


def measure(p: programs.Program, args, reps: int) -> float:
    """Median seconds of one call of p.fn (warm), feeding a donated argument back."""
    args = list(args)

    def call():
        out = p.fn(*args)
        jax.block_until_ready(out)
        if p.feedback:
            args[p.feedback[0]] = out[p.feedback[1]]

    call()
    return float(np.median([_timed(call) for _ in range(reps)]))


def run_program(p, mesh_devices, peak_flops, bw, reps, key, vocab, gip_m=None) -> dict:
    row = {"program": p.name, "steps_per_call": p.steps_per_call, "devices": p.devices}
    if p.refused:
        return row | {"skipped": p.refused}
    lowered = p.fn.lower(*p.args)
    compiled = lowered.compile()
    ma = compiled.memory_analysis()
    need = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
    limit = (mesh_devices[0].memory_stats() or {}).get("bytes_limit")
    if limit and need > limit:
        return row | {"skipped": f"needs {need / 1e9:.3g} GB per device > {limit / 1e9:.3g} GB"}
    costs, _ = hlo.costs(compiled, lambda options: lowered.compile(compiler_options=options))
    roofline = max(costs.flops / peak_flops, costs.hbm_bytes / bw)
    if gip_m is not None:
        args = gip_inputs(p, gip_m, key)
    else:
        statics = {i: a for i, a in enumerate(p.args) if isinstance(a, int)}
        arrays = [None if i in statics else a for i, a in enumerate(p.args)]
        args = materialize(arrays, key, vocab)
        args = [statics.get(i, a) for i, a in enumerate(args)]
    seconds = measure(p, args, reps)
    row |= {
        "measured_s": seconds,
        "roofline_s": roofline,
        "measured_over_roofline": seconds / roofline if roofline else None,
        "flops": costs.flops,
        "hbm_bytes": costs.hbm_bytes,
        "flops_util": costs.flops / seconds / peak_flops,
        "rows": p.rows,
        "row_tokens": p.row_tokens,
    }
    if p.row_tokens:
        real = p.rows - p.host.get("padding_rows_per_step", 0)  # rows that carry a text
        row["tokens_per_s"] = real * p.row_tokens / seconds
        row["samples_per_s"] = real / seconds
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (runs on a CPU)")
    ap.add_argument("--reps", type=int, default=5, help="timed calls per program (median)")
    ap.add_argument("--batch-size", type=int, default=64, help="texts per scoring call")
    ap.add_argument("--bytes-per-token", type=float, default=4.0, help="FineZip KB/s scale")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)

    mesh = parallel.data_mesh()
    devices = list(mesh.devices.flat)
    peak_flops, bw, source = peaks(devices[0])
    key = jax.random.key(0)
    if args.smoke:
        programs.MODELS["tiny"] = TINY  # (the planner's model table, extended for this run)
        model, gip_sizes, d, k, seq, batch, reps = "tiny", (4096,), 32, 8, 64, 8, 2
    else:
        model, gip_sizes, d, k, seq, batch = "smollm2-135m", (10**6, 10**7), 384, 1000, 512, None
        reps = args.reps
    batch = args.batch_size if batch is None else batch
    capacity = float("inf")
    rows = []
    for m in gip_sizes:
        job = programs.Job("gip", m, dim=d, k=k)
        (p,) = programs.build(job, mesh, capacity)
        rows.append(run_program(p, devices, peak_flops, bw, reps, key, 0, gip_m=m))
    lm = dict(model=model, seq_len=seq, batch_size=batch)
    vocab = programs.MODELS[model].vocab_size
    built = programs.build(programs.Job("ppl", 10**6, **lm), mesh, capacity)
    built += programs.build(programs.Job("lamdas", 10**6, **lm), mesh, capacity)
    tl = programs.downstream_train(
        programs.Job("train", 10**6, model=model, seq_len=min(seq, 256)), mesh, capacity, False
    )
    built.append(tl)
    fz = dict(model=model, seq_len=seq, context=256 if args.smoke else 2048)
    built += programs.build(programs.Job("finezip", 10**4, **fz), mesh, capacity)
    for p in built:
        row = run_program(p, devices, peak_flops, bw, reps, key, vocab)
        if p.name.startswith("finezip") and "measured_s" in row:
            row["kb_per_s"] = p.rows * args.bytes_per_token / row["measured_s"] / 1e3
        rows.append(row)

    report = {
        "device": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
        "peak_flops": peak_flops,
        "hbm_bandwidth": bw,
        "peak_source": source,
        "smoke": args.smoke,
        "machine": machine(),
        "load": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "versions": {"jax": jax.__version__},
        "rows": rows,
    }
    print(f"{report['device']}: peak {peak_flops:.3g} FLOP/s, {bw:.3g} B/s ({source})")
    print(f"{'program':34} {'measured':>10} {'roofline':>10} {'ratio':>7} {'util':>6}  rate")
    for r in rows:
        if "skipped" in r:
            print(f"{r['program']:34} skipped: {r['skipped']}")
            continue
        rate = (
            f"{r['kb_per_s']:.3g} KB/s"
            if "kb_per_s" in r
            else f"{r['tokens_per_s']:.3g} tok/s, {r['samples_per_s']:.3g} samples/s"
            if "tokens_per_s" in r
            else f"{r['steps_per_call'] / r['measured_s']:.3g} steps/s"
        )
        print(
            f"{r['program']:34} {r['measured_s']:10.4g} {r['roofline_s']:10.3g} "
            f"{r['measured_over_roofline']:7.3g} {r['flops_util']:6.2%}  {rate}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
