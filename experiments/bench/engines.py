"""Engines: `jaxsel select` on one pool by the local engine, by Ray (1 and 2 workers) and by 2 JAX
processes: wall time, docs/s, peak RSS of the whole process tree, and whether every engine wrote
the local engine's bytes.

Commands (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/scale.py build --dir /tmp/jaxsel-scale   # the pools
    .venv/bin/python experiments/bench/engines.py --dir /tmp/jaxsel-scale --sizes 250000 \
        [--methods zipfit dsir] [--targets 4] [--cap 900] [--out out/bench-engines.json]

Pools and targets are scale.py's (real text of this machine, 0.25M/1M/2M documents; the first
N HumanEval problems). Each configuration runs `select -k 1000 --workdir W` in fresh processes:
- local: one process (`--workers 1` for zipfit's compressor pool, so every engine gets the
  same CPU budget per worker);
- ray-1, ray-2: `--engine ray --ray-workers 1|2` (a local Ray started by the job: its start-up,
  ~8 s here, is included);
- jax-2: two processes joined by `--coordinator 127.0.0.1:PORT --num-processes 2` (each
  `--workers 1`), the pool split by bytes.
docs/s = documents / wall seconds (start-up, DSIR's counting pass and the output pass included);
peak RSS = the largest sampled RSS sum of the process tree (Ray's raylet, GCS and workers, or
both JAX processes). `same_bytes`: the output equals the local engine's.

Expected: the same bytes everywhere; 2 Ray workers or 2 JAX processes about twice one worker
on an idle 2-core machine (less on a loaded one, and Ray's start-up weighs on small pools).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _proc import machine, tree_rss
from scale import _scored, _target

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(argvs: list[list[str]], cap: float) -> dict:
    """Runs the argvs at once (one job), at most `cap` seconds; wall time and peak tree RSS."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(a, cwd=ROOT, env=env, stderr=subprocess.PIPE) for a in argvs]
    peak, finished = 0, True
    while any(p.poll() is None for p in procs):
        peak = max(peak, sum(tree_rss(p.pid) for p in procs if p.poll() is None))
        if time.perf_counter() - t0 > cap:
            finished = False
            for p in procs:
                p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.25)
    errs = [p.communicate()[1].decode()[-1500:] for p in procs]
    wall = time.perf_counter() - t0
    if finished and any(p.returncode for p in procs):
        raise RuntimeError(f"{argvs[0]} failed:\n{errs}")
    return {"finished": finished, "wall_s": round(wall, 1), "peak_tree_rss_mb": round(peak / 2**20)}


def _argvs(engine: str, base: list[str]) -> list[list[str]]:
    cli = [sys.executable, "-m", "jaxsel.cli", *base]
    if engine == "local":
        return [cli]
    if engine.startswith("ray-"):
        return [[*cli, "--engine", "ray", "--ray-workers", engine.split("-")[1]]]
    port = str(_free_port())
    return [
        [*cli, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
        for i in range(2)
    ]


def run(args) -> dict:
    d, work = Path(args.dir), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "cap_s": args.cap, "runs": []}
    for n_target in args.targets:
        target = _target(work, n_target)
        for method in args.methods:
            for size in args.sizes:
                ref = None
                for engine in args.engines:
                    wd = work / f"{engine}-{method}-{size}"
                    out = Path(f"{wd}.jsonl")
                    subprocess.run(["rm", "-rf", str(wd), str(out)], check=True)
                    base = ["select", "--method", method, "--pool", str(d / f"pool-{size}.jsonl"),
                            "--target", str(target), "-k", "1000", "--no-progress",
                            "--workdir", str(wd), "--out", str(out)]  # fmt: skip
                    if method == "zipfit":
                        base += ["--workers", "1"]
                    load = os.getloadavg()[0]
                    r = measure(_argvs(engine, base), args.cap)
                    docs = _scored(wd)
                    r = {"method": method, "docs": size, "targets": n_target, "engine": engine,
                         **r, "docs_scored": docs, "docs_per_s": round(docs / r["wall_s"], 1),
                         "load_before": round(load, 1)}  # fmt: skip
                    if r["finished"]:
                        if ref is None and engine == "local":
                            ref = out.read_bytes()
                        r["same_bytes"] = None if ref is None else out.read_bytes() == ref
                    results["runs"].append(r)
                    print(json.dumps(r), flush=True)
                    subprocess.run(["rm", "-rf", str(wd)], check=True)
                    if args.out:
                        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/jaxsel-scale", help="scale.py's pools")
    p.add_argument("--work", default="/tmp/jaxsel-engines", help="workdirs and outputs")
    p.add_argument("--sizes", type=int, nargs="+", default=[250_000])
    p.add_argument("--methods", nargs="+", default=["zipfit", "dsir"])
    p.add_argument("--targets", type=int, nargs="+", default=[4])
    p.add_argument("--engines", nargs="+", default=["local", "ray-1", "ray-2", "jax-2"])
    p.add_argument("--cap", type=float, default=900.0, help="wall seconds per run")
    p.add_argument("--out", help="write the results as JSON here")
    run(p.parse_args())


if __name__ == "__main__":
    main()
