"""Scale: peak RSS and docs/s of `jaxsel select` on pools of 0.25M, 1M and 2M documents (JSONL
built from real text on this machine), zipfit (lz4) and dsir, each run in its own process.

Commands (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/scale.py build --dir /tmp/jaxsel-scale
    .venv/bin/python experiments/bench/scale.py run --dir /tmp/jaxsel-scale --cap 240 \
        [--sizes 250000 1000000 2000000] [--methods zipfit dsir] [--targets 164 4] \
        [--out out/bench-scale.json]

Pools (`build`, deterministic, seed 0, ~1 minute): documents cut at random offsets from the
sorted text files of the CPython standard library (/usr/lib/python3*), the C headers under
/usr/include, /usr/share/doc and the venv's site-packages (each file decoded as UTF-8, others
skipped); lengths log-normal around 600 characters, clipped to 200..8000 (mean ~0.8 KB, so the
1M pool is ~0.8 GB of JSONL). The smaller pools are prefixes of the 2M one. Records
{"id", "text", "domain"} (domain = the source tree).

Runs (`run`): `python -m jaxsel.cli select --method M --pool P --target T -k 1000 --workdir W
--out O` per (method, size, target), one process each, every one capped at --cap seconds of
wall time (killed past it: on a shared 2-core VM a full zipfit run of 2M documents against the
164 HumanEval targets takes over an hour). Targets: the first N HumanEval problems (164 = all,
the CLI default; a small N lets the whole job, both passes, finish within the cap). Reported:
whether the run finished, wall seconds, documents scored (rows of finished shards in W at the
end), docs/s = documents scored / wall seconds (startup, the DSIR counting pass and the output
pass included), peak RSS of the jaxsel process (VmHWM: exact, including a killed run up to its
kill) and of its process tree (sampled every 0.25 s). Baseline (--baseline DIR): the same
command, same pool, run by the pre-streaming code (commit 85c55d9, which reads the whole pool
into memory), right after the streamed run: its wall time and peak RSS, the ratio of wall
times, and whether both wrote the same bytes.

Expected: peak RSS of zipfit under 1 GB at 1M and flat from 0.25M to 2M; wall time within
noise of the baseline's (ratio ~1); the same output bytes. Measured (README, "Scale"): 192 / 199
/ 200 MB at 0.25M / 1M / 2M with the duplicate-id check on disk (before it: 63 / 120 / 196 MB,
~24 B per document), the same bytes as the pre-streaming code, which peaked at 649 MB / 2.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _proc import machine, tree_rss

ROOT = Path(__file__).resolve().parents[2]
TREES = {
    "python": ["/usr/lib/python3.11", "/usr/lib/python3"],
    "c": ["/usr/include"],
    "doc": ["/usr/share/doc"],
    "site-packages": [sys.prefix + "/lib/python3.11/site-packages"],
}
SUFFIXES = {".py", ".h", ".hpp", ".c", ".txt", ".md", ".rst", ".html", ""}
MAX_FILE = 1 << 20


# ---------------------------------------------------------------------------------- build


def _texts() -> tuple[list[str], list[str]]:
    """(texts, domains) of every readable UTF-8 file of the trees, sorted by path."""
    texts, domains = [], []
    for domain, roots in TREES.items():
        paths = []
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                paths += [os.path.join(dirpath, f) for f in sorted(filenames)]
        for p in sorted(set(paths)):
            if Path(p).suffix not in SUFFIXES or os.path.islink(p):
                continue
            try:
                if not 1000 <= os.path.getsize(p) <= MAX_FILE:
                    continue
                t = Path(p).read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if t.strip():
                texts.append(t)
                domains.append(domain)
    return texts, domains


def build(out_dir: Path, sizes: list[int], seed: int = 0) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    texts, domains = _texts()
    weights = np.array([len(t) for t in texts], np.float64)
    print(f"{len(texts)} source files, {weights.sum() / 1e6:.0f} M characters", flush=True)
    rng = np.random.default_rng(seed)
    n = max(sizes)
    files = {s: open(out_dir / f"pool-{s}.jsonl", "w", encoding="utf-8") for s in sizes}
    i = 0
    while i < n:
        block = 100_000
        src = rng.choice(len(texts), size=block, p=weights / weights.sum())
        lens = np.clip(np.exp(rng.normal(np.log(600), 0.7, size=block)), 200, 8000).astype(int)
        offs = rng.random(block)
        lines = []
        for f, ln, o in zip(src, lens, offs, strict=True):
            t = texts[f]
            start = int(o * max(1, len(t) - ln))
            doc = t[start : start + ln]
            if not doc.strip():
                continue
            lines.append(json.dumps({"id": f"d{i}", "text": doc, "domain": domains[f]}) + "\n")
            i += 1
            if i == n:
                break
        chunk = "".join(lines)
        first = i - len(lines)
        for s, fh in files.items():
            if first < s:
                fh.write("".join(lines[: s - first]) if i > s else chunk)
        print(f"{i} documents", flush=True)
    for fh in files.values():
        fh.close()
    for s in sizes:
        p = out_dir / f"pool-{s}.jsonl"
        print(f"{p}: {p.stat().st_size / 1e6:.0f} MB", flush=True)


def _target(out_dir: Path, n: int) -> Path:
    """The first n HumanEval problems as JSONL."""
    from jaxsel.data import write_jsonl
    from jaxsel.data.defaults import humaneval_target

    t = humaneval_target()
    path = out_dir / f"target-{n}.jsonl"
    write_jsonl(path, list(t.records[:n]))
    return path


# ------------------------------------------------------------------------------------ run


def _vmhwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _scored(workdir: Path) -> int:
    """Documents in the finished shards of a workdir (rows of the committed .npy files)."""
    rows = 0
    for p in workdir.glob("shard-*.npy"):
        try:
            rows += np.load(p, mmap_mode="r").shape[0]
        except (OSError, ValueError):
            continue
    return rows


def measure(argv: list[str], cap: float, workdir: Path | None = None, cwd: Path = ROOT) -> dict:
    """Runs argv (`python -m jaxsel.cli ...`, importing jaxsel from `cwd`) in its own process,
    at most `cap` seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_tree = hwm = 0
    finished = True
    while proc.poll() is None:
        try:
            hwm = max(hwm, _vmhwm(proc.pid))
            peak_tree = max(peak_tree, tree_rss(proc.pid))
        except OSError:
            pass
        if time.perf_counter() - t0 > cap:
            finished = False
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.25)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if finished and proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{err.decode()[-2000:]}")
    res = {
        "finished": finished,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(hwm / 2**20),
        "peak_tree_rss_mb": round(max(peak_tree, hwm) / 2**20),
        "stdout": out.decode()[-500:],
    }
    if workdir is not None:
        res["docs_scored"] = _scored(workdir)
        res["docs_per_s"] = round(res["docs_scored"] / wall, 1)
    return res


def _select_argv(d: Path, method: str, size: int, target: Path, tag: str, workdir: bool):
    out = d / f"{tag}-{method}-{size}-{target.stem}"
    argv = [sys.executable, "-m", "jaxsel.cli", "select", "--method", method, "--pool",
            str(d / f"pool-{size}.jsonl"), "--target", str(target), "-k", "1000", "--no-progress",
            "--out", str(out) + ".jsonl"]  # fmt: skip
    return argv + (["--workdir", str(out)] if workdir else []), out


def run(args) -> dict:
    d = Path(args.dir)
    results = {"machine": machine(), "cap_s": args.cap, "runs": []}
    for n_target in args.targets:
        target = _target(d, n_target)
        for method in args.methods:
            for size in args.sizes:
                argv, wd = _select_argv(d, method, size, target, "stream", True)
                subprocess.run(["rm", "-rf", str(wd)], check=True)
                r = measure(argv, args.cap, wd, cwd=Path(args.code))
                r = {"method": method, "docs": size, "targets": n_target, "code": "stream", **r}
                if args.baseline and size in args.baseline_sizes:
                    argv, out = _select_argv(d, method, size, target, "base", False)
                    b = measure(argv, args.cap, cwd=Path(args.baseline))
                    same = (
                        r["finished"]
                        and b["finished"]
                        and Path(str(out) + ".jsonl").read_bytes()
                        == Path(str(wd) + ".jsonl").read_bytes()
                    )
                    r["baseline"] = {
                        "finished": b["finished"],
                        "wall_s": b["wall_s"],
                        "peak_rss_mb": b["peak_rss_mb"],
                        "same_output_bytes": same,
                    }
                    if r["finished"] and b["finished"]:
                        r["speed_vs_baseline"] = round(b["wall_s"] / r["wall_s"], 2)
                    Path(str(out) + ".jsonl").unlink(missing_ok=True)
                del r["stdout"]
                r["load_after"] = round(os.getloadavg()[0], 1)
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
                subprocess.run(["rm", "-rf", str(wd), str(wd) + ".jsonl"], check=True)
                if args.out:
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--dir", default="/tmp/jaxsel-scale")
    b.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000, 2_000_000])
    r = sub.add_parser("run")
    r.add_argument("--dir", default="/tmp/jaxsel-scale")
    r.add_argument("--sizes", type=int, nargs="+", default=[250_000, 1_000_000, 2_000_000])
    r.add_argument("--methods", nargs="+", default=["zipfit", "dsir"])
    r.add_argument("--targets", type=int, nargs="+", default=[164])
    r.add_argument("--cap", type=float, default=240.0, help="wall seconds per run")
    r.add_argument("--out", help="write the results as JSON here")
    r.add_argument(
        "--code", default=str(ROOT), help="source tree of the code to measure (default: this one)"
    )
    r.add_argument(
        "--baseline",
        help="source tree of the pre-streaming code, run on the same pools for comparison "
        "(e.g. `git archive 85c55d9 | tar -x -C DIR` plus its built _lz4pair extension)",
    )
    r.add_argument("--baseline-sizes", type=int, nargs="+", default=[250_000, 1_000_000])
    args = p.parse_args()
    if args.cmd == "build":
        build(Path(args.dir), sorted(args.sizes))
    else:
        run(args)


if __name__ == "__main__":
    main()
