"""Forged FineZip archives of at most 1 KB against a real one of the same size: how long the
decompressor works on each before refusing it, and its peak memory (SmolLM2-135M, float32).

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/finezip_forged.py --bytes 6000   # ~8 min on the 2-core VM
    .venv/bin/python experiments/bench/finezip_forged.py                # 3,000 bytes: ~5 min
    .venv/bin/python experiments/bench/finezip_forged.py --bytes 6000 --max-memory-mb 200 \
        --only real,rows_16_random       # what `decompress --max-memory-mb 200` refuses
    .venv/bin/python experiments/bench/finezip_forged.py --bytes 6000 --only one_word \
        --compile-cache /tmp/xla        # the decode step compiled by an earlier run, as the CLI

The real archive is `compress` of the first `--bytes` bytes of the GPL-3 text with the default
config (ac-match, ring, context 2048); the forged ones are made from it with every
checksum and header bound valid (as `tests/finezip/test_finezip_archive.py` makes them with the tiny
model):
- tokens_at_the_bound: the real payload, n_tokens raised to 64 per body byte with zero padding,
  1,024 bytes in all (the 887-byte archive that once decoded for minutes);
- one_word: only the first 32-bit word of the payload (the earliest a forged payload can run
  out: what refusing it costs is loading the model, compiling the decode step and a few steps);
- truncated: the first half of the payload's words;
- random: random words in place of the payload's;
- rows_16_random: 16 rows over 64 tokens per body byte, a random payload (the forger's choice of
  the most tokens per step);
- fallback_size: a bz2 archive declaring more bytes than its body can decode to.
Each archive is decompressed in its own process (one device), timed from after the model is
loaded; the process's peak resident memory is reported twice: `resource.getrusage` ru_maxrss
of the whole process, and /proc's VmHWM reset after the model is loaded (`clear_refs`), i.e.
the peak while decoding, beside the resident memory the loaded model held.

Measured on the 2-core AMD EPYC VM, CPU only, 2026-12-06: see docs/finezip.md (forged
payloads), with the load average printed beside.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) << 10
    return out["VmRSS"], out["VmHWM"]


def child(path: str, limits: list) -> None:
    """Decompresses one archive after loading the model; prints one JSON line."""
    from jaxsel import finezip
    from jaxsel.errors import ArchiveError
    from jaxsel.models.loaders import load_smollm2

    t_load = time.perf_counter()
    model = load_smollm2()
    load_seconds = time.perf_counter() - t_load
    loaded, _ = _rss()
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    archive = Path(path).read_bytes()
    t0 = time.perf_counter()
    try:
        finezip.decompress(archive, model, limits=finezip.Limits(*limits))
        outcome = "decoded"
    except ArchiveError as e:
        outcome = str(e)
    seconds = time.perf_counter() - t0
    _, peak = _rss()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    r = dict(seconds=seconds, loaded=loaded, peak=peak, maxrss=maxrss, outcome=outcome)
    r["load_seconds"] = load_seconds
    print(json.dumps(r))


def make_archives(n_bytes: int, out: Path) -> dict[str, Path]:
    import numpy as np

    from jaxsel import finezip
    from jaxsel.finezip import archive as arc
    from jaxsel.finezip import coders
    from jaxsel.models.loaders import load_smollm2

    data = Path("/usr/share/common-licenses/GPL-3").read_bytes()[:n_bytes]  # ASCII
    real = finezip.compress(data, load_smollm2())
    parsed = finezip.parse(real)
    h, m = parsed.header, parsed.header.model
    assert h.mode == "model", h.mode
    rng = np.random.default_rng(0)
    archives = {"real": real}
    payload = arc.unpack(real)[1]
    body_len = 1024 - (len(real) - h.body_len) - 24
    n = arc.TOKENS_PER_BYTE * body_len
    info = dataclasses.replace(m, n_tokens=n, pad=body_len - len(payload))
    archives["tokens_at_the_bound"] = arc.pack(
        n, h.sha256, "model", payload + bytes(body_len - len(payload)), info
    )
    one = coders.pack_streams([w[:1] for w in parsed.payload])
    pad = max(0, -(-m.n_tokens // arc.TOKENS_PER_BYTE) - len(one))  # the writer's padding
    one_info = dataclasses.replace(m, pad=pad)
    archives["one_word"] = arc.pack(h.size, h.sha256, "model", one + bytes(pad), one_info)
    half = coders.pack_streams([w[: len(w) // 2] for w in parsed.payload])
    archives["truncated"] = arc.pack(h.size, h.sha256, "model", half, m)
    noise = [rng.integers(0, 1 << 32, len(w), np.uint32) for w in parsed.payload]
    archives["random"] = arc.pack(h.size, h.sha256, "model", coders.pack_streams(noise), m)
    words = coders.pack_streams([rng.integers(0, 1 << 32, (body_len - 2) // 4, np.uint32)])
    n = arc.TOKENS_PER_BYTE * len(words)
    rows = dataclasses.replace(m, n_tokens=n, batch_size=16, n_batches=1, context=2048, pad=0)
    archives["rows_16_random"] = arc.pack(n, h.sha256, "model", words, rows)
    bomb = Path(__file__).parents[2] / "tests" / "finezip" / "fixtures" / "zeros_2gib.bz2"
    frame = arc.pack(1, h.sha256, "bz2", bomb.read_bytes()[:900])
    header, start = arc.header_json(frame)
    header["size"] = arc.FALLBACK_EXPANSION["bz2"](len(frame) - start) + 1
    archives["fallback_size"] = arc.frame(header, frame[start:])
    paths = {}
    for name, a in archives.items():
        assert len(a) <= 1024 or name == "real", (name, len(a))
        paths[name] = out / f"{name}.fz"
        paths[name].write_bytes(a)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=3000, help="text bytes of the real archive")
    ap.add_argument("--only", help="comma-separated archive names (default: all)")
    ap.add_argument("--max-memory-mb", type=float, help="decompress with this memory limit")
    ap.add_argument("--max-tokens", type=int, help="decompress with this token limit")
    ap.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="keep compiled programs in DIR as the `jaxsel` command does (`jaxsel.host`): the "
        "real archive's compression fills it, so every decompression below finds its steps "
        "compiled (default: no cache, as the Python API)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compile_cache and not args.child:
        from jaxsel import host

        os.environ["JAXSEL_COMPILE_CACHE"] = args.compile_cache
        print(f"compile cache: {host.use_compile_cache()}", flush=True)
    mem = None if args.max_memory_mb is None else int(args.max_memory_mb * 2**20)
    if args.child:
        return child(args.child, [mem, args.max_tokens])
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_archives(args.bytes, Path(tmp))
        print(f"load average before: {os.getloadavg()}", flush=True)
        for name, path in paths.items():
            if args.only and name not in args.only.split(","):
                continue
            limits = []
            if mem is not None:
                limits += ["--max-memory-mb", str(args.max_memory_mb)]
            if args.max_tokens is not None:
                limits += ["--max-tokens", str(args.max_tokens)]
            run = subprocess.run(
                [sys.executable, __file__, "--child", str(path), *limits],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(run.stdout.strip().splitlines()[-1])
            mb = 1 << 20
            print(
                f"{name:20s} {path.stat().st_size:5d} B  {r['seconds']:7.2f} s  (model load "
                f"{r['load_seconds']:.1f} s)  model "
                f"{r['loaded'] / mb:6.0f} MB  decoding peak {r['peak'] / mb:6.0f} MB "
                f"(+{(r['peak'] - r['loaded']) / mb:4.0f})  ru_maxrss {r['maxrss'] / mb:6.0f} MB"
                f"  load {os.getloadavg()[0]:.1f}  {r['outcome'][:150]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
