"""FineZip benchmark: size and speed of LLM compression (SmolLM2-135M) against classic codecs.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/finezip.py --bytes 1000000 --batch-sizes 64,128,256  # GPU
    .venv/bin/python experiments/bench/finezip.py --bytes 16384          # CPU sample, minutes
    .venv/bin/python experiments/bench/finezip.py --bytes 262144 --coders "" --strides 0.5 \
        --estimate-bytes 262144 --batch-sizes 8                           # CPU estimate
    .venv/bin/python experiments/bench/finezip.py --bytes 65536 --corpora english --coders "" \
        --shared 2048,512 --batch-sizes 16             # match model on/off, C 2048 and 512

`--shared C1,C2` codes each corpus with `ac`, `ac-match` (scope all) and `ac-match/segment` from
ONE model pass per context (`shared_pass`: they differ only on the host), with exact archive
sizes (checked byte for byte against a real `compress` when that runs too), and decompresses
the `--verify-shared` archives at the first context. The match-model rows of the README
(`<!-- fz-match -->`) come from it.

For each corpus, the same first `--bytes` bytes (cut at a UTF-8 boundary) of
- english: real English prose, the licence texts under /usr/share/common-licenses followed by the
  Debian copyright files under /usr/share/doc (duplicates dropped, path order);
- manual: English prose with fewer verbatim repeats, the Vim user manual (usr_*.txt in book
  order) then its reference manual (`--corpora manual`, not in the default set);
- code: the CPython standard library's *.py sources (path order),
it reports compressed size, bits/byte and ratio of gzip -9, bzip2 -9, xz -9, zstd -19 and brotli
-q 11, and of
FineZip with each coder: `rank` (the paper: ranks + bzip2), `ac` (range coding under the full
distribution) and `ac+lora` (online memorisation: LoRA trained on the sample; the archive counts
the adapters, and the size without them is shown too), each round-tripped and checked byte for
byte, with compression and decompression throughput in KB/s (LoRA training time included in
ac+lora's compression time).

Before that, `--batch-sizes` sweeps the coding step (`engine.compiled_step`, ac, KV cache of
`--chunk-len`) and keeps the batch size with the most tokens/s on this machine.

`--estimate-bytes N` adds, on the first N bytes, what ac and rank give from one teacher-forced
pass (cross-entropy; bzip2 of the ranks): ~20x faster than coding on CPU, and on the 16 KB samples
within 0.3% of the real ac payload (1720 vs 1722 B english, 2049 vs 2054 B code) and 0.7% of the
real rank payload.

Hardware: any; JAX picks the GPU when there is one. On CPU a chunk of L tokens is L sequential
decode steps, ~400 tokens/s at batch 64 on the 2-core development VM (AMD EPYC, no GPU; Python
3.11, jax 0.10.2, float32). Results there, 1,000,000 bytes per corpus, chunk 512, batch 64 (load
average 1.7-2.9: tests ran beside parts of it), from

    finezip.py --bytes 1000000 --batch-sizes 64 --coders ac --verify ac
    finezip.py --bytes 1000000 --batch-sizes 64 --coders ac --verify '' --corpora manual
    finezip.py --bytes 1000000 --batch-sizes 64 --coders rank,ac+lora --verify ''

(`ac` round-tripped byte for byte on english and code; other rows compression only):

<!-- fz-tables -->
| english 1,000,000 B | bytes | bits/byte | vs xz -9 | compress KB/s | decompress KB/s |
|---|---|---|---|---|---|
| gzip -9 | 229,468 | 1.836 | 158% |  |  |
| bzip2 -9 | 168,204 | 1.346 | 116% |  |  |
| xz -9 | 144,816 | 1.159 | 100% |  |  |
| zstd -19 | 150,388 | 1.203 | 104% |  |  |
| finezip rank | 169,092 | 1.353 | 117% | 1.15 | not run |
| finezip ac | 122,465 | 0.980 | 85% | 1.44 | 1.57 |
| finezip ac+lora | 122,796 | 0.982 | 85% | 1.28 | not run |
|   without the 1,536 B adapters | 121,260 | 0.970 | 84% | | |

| manual 1,000,000 B | bytes | bits/byte | vs xz -9 | compress KB/s | decompress KB/s |
|---|---|---|---|---|---|
| gzip -9 | 309,844 | 2.479 | 122% |  |  |
| bzip2 -9 | 247,900 | 1.983 | 98% |  |  |
| xz -9 | 253,656 | 2.029 | 100% |  |  |
| zstd -19 | 258,254 | 2.066 | 102% |  |  |
| finezip ac | 151,697 | 1.214 | 60% | 1.31 | not run |

| code 1,000,000 B | bytes | bits/byte | vs xz -9 | compress KB/s | decompress KB/s |
|---|---|---|---|---|---|
| gzip -9 | 223,039 | 1.784 | 121% |  |  |
| bzip2 -9 | 182,111 | 1.457 | 99% |  |  |
| xz -9 | 184,308 | 1.474 | 100% |  |  |
| zstd -19 | 187,560 | 1.500 | 102% |  |  |
| finezip rank | 138,233 | 1.106 | 75% | 1.33 | not run |
| finezip ac | 95,950 | 0.768 | 52% | 1.49 | 1.63 |
| finezip ac+lora | 96,714 | 0.774 | 52% | 1.32 | not run |
|   without the 1,536 B adapters | 95,178 | 0.761 | 52% | | |
<!-- /fz-tables -->

On 16 KB samples (an earlier run with the slower first decode step) ac gave 1.118 / 1.281
bits/byte on english / code, 42% / 48% of xz -9: xz needs a large input to find repeats, and the
english corpus is licence boilerplate repeated across Debian copyright files, which xz finds
anywhere in the megabyte while FineZip sees 512 tokens. At chunk 128 the 16 KB samples give ac
1.274 / 1.485 bits/byte: the longer context pays.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sysconfig
import time
from pathlib import Path

import brotli
import jax
import jax.numpy as jnp
import numpy as np

from jaxsel import parallel
from jaxsel.compress import codecs
from jaxsel.finezip import (
    FineZipConfig,
    MemorizeConfig,
    coders,
    compress_detailed,
    decompress,
    engine,
    read_header,
    request_deterministic_xla,
)
from jaxsel.finezip import archive as arc
from jaxsel.finezip.api import pack_model_archive
from jaxsel.finezip.match import MatchConfig
from jaxsel.models import llama
from jaxsel.models.loaders import load_smollm2

BASELINES = {
    "gzip -9": ("gzip", 9),
    "bzip2 -9": ("bz2", 9),
    "xz -9": ("lzma", 9),
    "zstd -19": ("zstd", 19),
}


# ------------------------------------------------------------------------------------ data


def _concat(paths, n: int) -> bytes:
    """The first n bytes of the concatenated UTF-8 files (duplicates and non-UTF-8 skipped),
    cut at a character boundary."""
    out, seen, size = [], set(), 0
    for p in paths:
        try:
            raw = p.read_bytes()
            raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        h = hashlib.sha256(raw).digest()
        if h in seen or not raw.strip():
            continue
        seen.add(h)
        out.append(raw)
        size += len(raw)
        if size >= n:
            break
    data = b"".join(out)[:n]
    return data.decode("utf-8", errors="ignore").encode("utf-8")


def english(n: int) -> bytes:
    paths = sorted(Path("/usr/share/common-licenses").glob("*"))
    paths += sorted(Path("/usr/share/doc").glob("*/copyright"))
    return _concat([p for p in paths if p.is_file()], n)


def manual(n: int) -> bytes:
    """English prose that repeats itself less: the Vim user manual (usr_*.txt, book order), then
    the reference manual (the other help files, path order)."""
    docs = sorted(Path("/usr/share/vim").glob("vim*/doc"))
    if not docs:
        raise SystemExit("corpus 'manual' needs the Vim documentation (/usr/share/vim/vim*/doc)")
    user = sorted(docs[-1].glob("usr_[0-9]*.txt"))
    return _concat(user + sorted(set(docs[-1].glob("*.txt")) - set(user)), n)


def code(n: int) -> bytes:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return _concat(sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts), n)


CORPORA = {"english": english, "manual": manual, "code": code}


# ------------------------------------------------------------------------------- measures


def sweep_batch(model, context: int, sizes: list[int], steps: int = 4) -> dict[int, float]:
    """Tokens/s of the ac coding step (device step + probabilities to host) per batch size, at
    a cache 3/4 full (the average position of a window at stride context / 2)."""
    out = {}
    params = llama.unstack_layers(model.params)  # as engine.run passes them
    pos = 3 * context // 4
    for b in sizes:
        plan = engine.make_plan(b * context, context, context, b, 1, parallel.data_size())
        step = engine.compiled_step(model.cfg, coders.CODERS["ac"], plan.span(pos), False)
        cache = engine.new_cache(model.cfg, plan)._replace(pos=jnp.int32(pos))
        tok = jnp.zeros(plan.batch_size, jnp.int32)
        cache, probs = step(params, None, cache, tok, tok, tok)  # compile
        jax.device_get(probs)
        t0 = time.perf_counter()
        for _ in range(steps):
            cache = cache._replace(pos=jnp.int32(pos))
            cache, probs = step(params, None, cache, tok, tok, tok)
            jax.device_get(probs)
        out[plan.batch_size] = plan.batch_size * steps / (time.perf_counter() - t0)
        print(f"  batch {plan.batch_size:4d}: {out[plan.batch_size]:8.1f} tokens/s", flush=True)
    return out


def row(name: str, n: int, size: int, **extra) -> dict:
    return {
        "method": name,
        "bytes": size,
        "bits_per_byte": 8 * size / n,
        "ratio": n / size,
        **extra,
    }


def run_finezip(name: str, data: bytes, model, config: FineZipConfig, verify: bool) -> dict:
    """Compresses `data`; with `verify`, also decompresses and checks every byte."""
    t0 = time.perf_counter()
    res = compress_detailed(data, model, config)
    t_comp = time.perf_counter() - t0
    kb = len(data) / 1024
    header, start = read_header(res.archive)
    body = header.body_len
    payload = b""
    if header.model is not None:
        blob, esc, n = header.model.sections(body)
        payload = res.archive[start + blob + esc : start + blob + esc + n]
    extra = {
        "tokens": res.n_tokens,
        "compress_s": t_comp,
        "compress_KBps": kb / t_comp,
        "header_bytes": len(res.archive) - body,
        "payload_bytes": body - res.lora_bytes,
        "phases_s": res.seconds,
        "roundtrip": "not run",
        "payload_sha256": arc.sha256(payload),
    }
    if verify:
        t0 = time.perf_counter()
        back = decompress(res.archive, model)
        t_dec = time.perf_counter() - t0
        assert back == data, f"{name}: round trip failed"
        extra |= {"decompress_s": t_dec, "decompress_KBps": kb / t_dec, "roundtrip": "ok"}
    if res.lora_bytes:
        size_wo = len(res.archive) - res.lora_bytes
        extra |= {
            "lora_bytes": res.lora_bytes,
            "bytes_without_lora": size_wo,
            "bits_per_byte_without_lora": 8 * size_wo / len(data),
            "lora_loss_first_last": [res.lora_losses[0], res.lora_losses[-1]],
        }
    return row(name, len(data), len(res.archive), **extra)


# The host coders `shared_pass` runs side by side under one LM pass (all code under the
# probabilities of the `ac` device program): name -> (registered coder, match parameters).
SHARED = {
    "ac": ("ac", None),
    "ac-match": ("ac-match", MatchConfig("all")),
    "ac-match/segment": ("ac-match", MatchConfig("segment")),
}


class _Tee(coders.BatchCoder):
    """Feeds one batch's device outputs to several encoders of the same batch."""

    def __init__(self, parts: list):
        self.parts, self.tokens = parts, parts[0].tokens

    def inputs(self, t):
        return self.parts[0].inputs(t)

    def feed(self, t, out):
        for p in self.parts:
            p.feed(t, out)


def sliding_shape(ctx: int, spec: str) -> tuple[dict, str]:
    """One `--strides` entry at context ctx: FineZipConfig fields and the row tag ("ring": a
    ring cache, else a stride as a fraction of C)."""
    if spec == "ring":
        return {"context": ctx, "sliding": "ring"}, f" C={ctx} ring"
    stride = max(1, round(ctx * float(spec)))
    return {"context": ctx, "stride": stride}, f" C={ctx} S={stride}"


def shared_pass(data: bytes, model, config: FineZipConfig) -> tuple[list[dict], dict]:
    """`SHARED`'s coders on `data` from ONE pass of the model (match on/off and both scopes
    differ only on the host, so one LM pass serves them all): each coder's exact payload in the
    archive `compress` would write (same programs, same inputs, the header built as `compress`
    builds it; `main` checks this against a real archive byte for byte when both ran). Returns
    the rows and name -> archive. Compress KB/s = the pass, all host coders included. Text that
    needs escapes is not supported here."""
    tok = model.tokenizer
    ids = np.asarray(tok.encode(data.decode("utf-8")), np.int32)
    c = config
    plan = engine.make_plan(
        len(ids), c.context, c.stride, c.batch_size, c.lanes, parallel.data_size(), c.sliding
    )
    batches, lengths = plan.to_batches(ids, tok.bos_id), plan.lengths()
    parts = {
        name: coders.get(coder).encoders(batches, lengths, match)
        for name, (coder, match) in SHARED.items()
    }
    tees = [_Tee([parts[n][b] for n in SHARED]) for b in range(plan.n_batches)]
    t0 = time.perf_counter()
    engine.run(model.params, None, model.cfg, coders.get("ac"), plan, tok.bos_id, tees)
    sec = time.perf_counter() - t0
    rows, archives, digest = [], {}, arc.sha256(data)
    for name, (coder, match) in SHARED.items():
        payload = coders.get(coder).pack(parts[name], plan)
        archive = pack_model_archive(len(data), digest, model, plan, coder, payload, match)
        extra = {
            "tokens": plan.n_tokens,
            "context": plan.context,
            "stride": plan.stride,
            "sliding": plan.sliding,
            "rows": plan.batch_size,
            "batches": plan.n_batches,
            "payload_bytes": len(payload),
            "compress_s": sec,
            "compress_KBps": len(data) / 1024 / sec,
            "shared_pass": list(SHARED),
            "payload_sha256": arc.sha256(payload),
        }
        slide = "ring" if plan.ring else f"S={plan.stride}"
        tag = f"finezip {name} C={plan.context} {slide}"
        rows.append(row(tag, len(data), len(archive), **extra))
        archives[tag] = archive
    return rows, archives


def estimate(data: bytes, model, chunk_len: int, batch: int) -> list[dict]:
    """What ac and rank achieve on `data` with independent chunks of `chunk_len` tokens (the
    pre-sliding-context coder), from one teacher-forced pass (`llama.token_logprobs`): ac's
    payload is the cross-entropy
    sum_t -log2 p(y_t) to within the range coder's quantisation (< 0.5%, checked against the real
    coder on the smaller sample), rank's is bzip2 of the ranks' varints (teacher-forced logits
    can flip a near tie, so a rank may differ by one from the coder's). Headers not counted."""
    tok = model.tokenizer
    ids = np.asarray(tok.encode(data.decode("utf-8")), np.int32)
    chunks, lens = engine.training_chunks(ids, chunk_len, tok.bos_id)
    fn = jax.jit(lambda p, t, m: llama.token_logprobs(p, t, m, model.cfg, with_ranks=True))
    bits, ranks = 0.0, []
    t0 = time.perf_counter()
    for i in range(0, len(chunks), batch):
        c, n = chunks[i : i + batch], lens[i : i + batch]
        toks = np.concatenate([np.full((len(c), 1), tok.bos_id, np.int32), c], axis=1)
        mask = np.arange(toks.shape[1])[None] <= n[:, None]
        lp, rk = jax.device_get(fn(model.params, toks, mask))
        bits -= float(np.sum(lp)) / np.log(2)
        ranks += [r[:k] for r, k in zip(rk, n, strict=True) if k]
    sec = time.perf_counter() - t0
    rank_bytes = len(coders.encode_ranks(np.concatenate(ranks)))
    extra = {"tokens": len(ids), "teacher_forced_s": sec, "estimate": True}
    return [
        row("finezip ac (cross-entropy)", len(data), int(np.ceil(bits / 8)), **extra),
        row("finezip rank (teacher-forced)", len(data), rank_bytes, **extra),
    ]


def estimate_sliding(data: bytes, model, context: int, stride: int, batch: int) -> dict:
    """ac's payload under the sliding-window schedule of `engine` (segments as `make_plan` cuts
    them for `batch` rows, one batch), from teacher-forced forwards: each window is one causal
    forward of its C + 1 tokens (window 0: bos + the segment's first C; window w: the P = C - S + 1
    tokens before it + its S), counting the log-probabilities of the tokens the window codes.
    Equal to the coder's cross-entropy up to float rounding (the coder's decode steps and the
    forward differ by ~1e-5 in the logits); header and range-coder overhead not counted."""
    tok = model.tokenizer
    ids = np.asarray(tok.encode(data.decode("utf-8")), np.int32)
    plan = engine.make_plan(len(ids), context, stride, batch, 1, parallel.data_size())
    c, s, p = plan.context, plan.stride, plan.prefill_len
    rows, counted = [], []
    for seg, n in zip(plan.to_batches(ids, tok.bos_id)[0], plan.lengths()[0], strict=True):
        seg = seg[:n]
        if n:
            rows.append(np.concatenate([[tok.bos_id], seg[:c]]))
            counted.append((0, min(c, n)))
        for t0 in range(c, n, s):
            rows.append(seg[t0 - p : t0 + s])
            counted.append((p - 1, p - 1 + min(s, n - t0)))
    toks = np.zeros((len(rows), c + 1), np.int32)
    mask = np.zeros(toks.shape, bool)
    for i, r in enumerate(rows):
        toks[i, : len(r)], mask[i, : len(r)] = r, True
    fn = jax.jit(lambda q, t, m: llama.token_logprobs(q, t, m, model.cfg))
    bits, t_0 = 0.0, time.perf_counter()
    for i in range(0, len(rows), batch):
        lp, _ = jax.device_get(fn(model.params, toks[i : i + batch], mask[i : i + batch]))
        for j, (a, b) in enumerate(counted[i : i + batch]):
            bits -= float(np.sum(lp[j, a:b], dtype=np.float64)) / np.log(2)
    extra = {
        "tokens": len(ids),
        "rows": plan.batch_size,
        "context": c,
        "stride": s,
        "teacher_forced_s": time.perf_counter() - t_0,
        "estimate": True,
    }
    return row(
        f"finezip ac C={c} S={s} (cross-entropy)", len(data), int(np.ceil(bits / 8)), **extra
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes", type=int, default=1_000_000, help="sample size per corpus")
    ap.add_argument("--corpora", default="english,code")
    ap.add_argument("--coders", default="rank,ac,ac+lora")
    ap.add_argument(
        "--verify",
        default="rank,ac,ac+lora",
        help="coders whose archives are also decompressed and compared byte for byte "
        "(decompression throughput is measured on these)",
    )
    ap.add_argument(
        "--contexts", default="2048", help="contexts C to measure ac at (the first: all coders)"
    )
    ap.add_argument(
        "--strides",
        default="ring",
        help="'ring' (a ring KV cache, no prefills: the library's default), or strides of prefill "
        "windows as fractions of C (1.0 = a fresh window every C tokens, ~ chunking)",
    )
    ap.add_argument("--lanes", type=int, default=2, help="batches in flight")
    ap.add_argument(
        "--batch-sizes",
        default="8,16,32,64",
        help="batch sizes to sweep; the fastest is used (one value: no sweep)",
    )
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--lora-steps", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=2)
    ap.add_argument("--lora-layers", type=int, default=2, help="last N layers (0 = all)")
    ap.add_argument("--lora-targets", default="wv")
    ap.add_argument("--lora-lr", type=float, default=5e-3)
    ap.add_argument("--lora-batch", type=int, default=4)
    ap.add_argument(
        "--estimate-bytes",
        type=int,
        default=0,
        help="also estimate ac/rank sizes on this many bytes from one teacher-forced "
        "pass (fast on CPU; 0 = off)",
    )
    ap.add_argument(
        "--shared",
        default="",
        help="contexts at which to code ac, ac-match and ac-match/segment from ONE model pass "
        "(match on/off, both scopes; exact sizes; '' = off)",
    )
    ap.add_argument(
        "--verify-shared",
        default="ac-match",
        help="shared-pass coders whose archives (at the first --shared context) are "
        "decompressed and compared byte for byte",
    )
    ap.add_argument("--out", default="out/bench-finezip.json")
    args = ap.parse_args()
    if Path(args.out).is_dir():  # else found at the first save, after an hour-long row
        ap.error(f"--out {args.out} is a directory; give the JSON file to write")
    request_deterministic_xla()  # as the CLI does (GPU: no timing-dependent kernel choice)

    model = load_smollm2(args.dtype)
    dev = jax.devices()[0]
    info = {
        "device": f"{dev.platform} ({dev.device_kind}) x{jax.device_count()}",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_before": os.getloadavg(),
        "jax": jax.__version__,
        "bytes": args.bytes,
        "contexts": args.contexts,
        "strides": args.strides,
        "dtype": args.dtype,
    }
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    if len(sizes) > 1:
        print("batch sweep (ac coding step):", flush=True)
        sweep = sweep_batch(model, int(args.contexts.split(",")[0]), sizes)
        batch = max(sweep, key=sweep.get)
        info["batch_sweep_tokens_per_s"] = sweep
    else:
        batch = sizes[0]
    info["batch_size"] = batch
    speed = sorted({int(c) for c in (args.contexts + "," + args.shared).split(",") if c})
    if len(speed) > 1:  # the coding step alone, at the same batch, per context: same run
        print(f"coding step per context at batch {batch}:", flush=True)
        info["step_tokens_per_s"] = {c: max(sweep_batch(model, c, [batch]).values()) for c in speed}
    lora = MemorizeConfig(
        steps=args.lora_steps,
        rank=args.lora_rank,
        layers=args.lora_layers,
        targets=tuple(args.lora_targets.split(",")),
        lr=args.lora_lr,
        batch_size=args.lora_batch,
    )
    wanted = {f"finezip {c}" for c in args.coders.split(",") if c}
    verify = {f"finezip {c}" for c in args.verify.split(",") if c}
    variants, contexts = {}, [int(c) for c in args.contexts.split(",")]
    for i, ctx in enumerate(contexts):
        for spec in args.strides.split(","):
            shape, tag = sliding_shape(ctx, spec)
            shape |= dict(batch_size=batch, lanes=args.lanes)
            for coder, extra in (
                ("ac", {}),
                ("ac-match", {}),
                ("rank", {}),
                ("ac+lora", {"lora": lora}),
            ):
                if f"finezip {coder}" in wanted and (
                    coder.startswith("ac-") or coder == "ac" or i == 0
                ):
                    config = FineZipConfig(coder.split("+")[0], fallback=False, **shape, **extra)
                    variants[f"finezip {coder}{tag}"] = (config, f"finezip {coder}" in verify)
    results = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every row: a long CPU run keeps what it measured if stopped
        out.write_text(json.dumps({"info": info, "results": results}, indent=2))

    for corpus in args.corpora.split(","):
        data = CORPORA[corpus](args.bytes)
        print(f"\n{corpus}: {len(data)} bytes", flush=True)
        rows = [row(k, len(data), codecs.get(*v).size(data)) for k, v in BASELINES.items()]
        rows.append(row("brotli -q 11", len(data), len(brotli.compress(data, quality=11))))
        results[corpus] = {"bytes": len(data), "rows": rows}
        for name, (config, check) in variants.items():
            rows.append(run_finezip(name, data, model, config, check))
            print(f"  {name}: {json.dumps(rows[-1])}", flush=True)
            save()
        for i, ctx in enumerate(int(c) for c in args.shared.split(",") if c):
            for spec in args.strides.split(","):
                shape = sliding_shape(ctx, spec)[0]
                config = FineZipConfig("ac", batch_size=batch, lanes=args.lanes, **shape)
                shared, archives = shared_pass(data, model, config)
                for r in shared:
                    real = next((x for x in rows if x["method"] == r["method"]), None)
                    if real is not None:  # the same coder and plan ran for real: same archive
                        assert real["payload_sha256"] == r["payload_sha256"], r["method"]
                        assert real["bytes"] == r["bytes"], r["method"]
                        r["same_as_real_archive"] = True
                    if i == 0 and r["method"].split(" ")[1] in args.verify_shared.split(","):
                        t0 = time.perf_counter()
                        back = decompress(archives[r["method"]], model)
                        t_dec = time.perf_counter() - t0
                        assert back == data, f"{r['method']}: round trip failed"
                        r |= {
                            "decompress_s": t_dec,
                            "decompress_KBps": len(data) / 1024 / t_dec,
                            "roundtrip": "ok",
                        }
                    rows.append(r)
                    print(f"  {r['method']} (shared pass): {json.dumps(r)}", flush=True)
                    save()
        if args.estimate_bytes:
            big = CORPORA[corpus](args.estimate_bytes)
            print(f"{corpus}: teacher-forced estimate on {len(big)} bytes", flush=True)
            est = [row(k, len(big), codecs.get(*v).size(big)) for k, v in BASELINES.items()]
            est.append(row("brotli -q 11", len(big), len(brotli.compress(big, quality=11))))
            est += estimate(big, model, 512, batch)
            for ctx in contexts:
                for spec in args.strides.split(","):
                    if spec == "ring":  # no teacher-forced equivalent (`costs.token_bits`)
                        continue
                    stride = sliding_shape(ctx, spec)[0]["stride"]
                    est.append(estimate_sliding(big, model, ctx, stride, batch))
                    print(f"  {json.dumps(est[-1])}", flush=True)
            results[f"{corpus} (estimate)"] = {"bytes": len(big), "rows": est}
    info["load_after"] = os.getloadavg()
    save()
    print(f"\n{info}")
    for corpus, r in results.items():
        xz = next(x["bytes"] for x in r["rows"] if x["method"] == "xz -9")
        print(
            f"\n{corpus} ({r['bytes']} bytes)\n| method | bytes | bits/byte | ratio | vs xz -9 |"
            " compress KB/s | decompress KB/s |\n|---|---|---|---|---|---|---|"
        )
        for x in r["rows"]:
            speed = (
                f"{x['compress_KBps']:.2f} | "
                + (f"{x['decompress_KBps']:.2f}" if "decompress_KBps" in x else "not run")
                if "compress_KBps" in x
                else " | "
            )
            print(
                f"| {x['method']} | {x['bytes']} | {x['bits_per_byte']:.3f} | {x['ratio']:.2f} "
                f"| {x['bytes'] / xz:.0%} | {speed} |"
            )
            if "lora_bytes" in x:
                print(
                    f"| ... without the {x['lora_bytes']} B adapters | "
                    f"{x['bytes_without_lora']} | {x['bits_per_byte_without_lora']:.3f} | | | |"
                )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
