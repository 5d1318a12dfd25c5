"""LoRA fine-tuning step: jaxsel (`jaxsel downstream`'s jitted train step) vs torch + peft on the
same model, rank, targets, batch, sequence length, optimizer and data, in one run.

Command (from the repository root, after `make test` has built .venv, plus `pip install peft`):

    JAX_PLATFORMS=cpu .venv/bin/python experiments/bench/lora.py [--rounds 3] [--steps 3]
        [--threads 2] [--dtype float32] [--out out/bench-lora.json]

Hardware: CPU (JAX_PLATFORMS=cpu; torch on the CPU). The numbers in docs/models.md were taken on
the 2-core development VM (AMD EPYC) with `uptime` printed before and after and the load of
every round beside it: other jobs share those cores, so read the load. Runtime: about
(1 + rounds * steps) * 2 steps of 10-30 s each, plus ~1 minute of loading and compiling.

Setting (the `jaxsel downstream` defaults): SmolLM2-135M (the embedded model; torch gets the same
dequantised weights through `hf_state_dict`), LoRA r = 8, alpha = 16 on q/k/v/o of every layer,
8 rows x 256 predicted tokens (rows of 257 packed tokens of CPython standard-library sources, cut
by `downstream.pack_tokens`), AdamW (weight decay 0) with the downstream cosine schedule at peak
lr 2e-3, float32 by default (`--dtype bfloat16` runs both in bfloat16).

- jaxsel: `train.step_fn` (what `train_tokens` calls), on this process's devices with the row
  groups `train_tokens` would use; the step is jit-compiled and warmed up before timing.
- torch: transformers' `LlamaForCausalLM` wrapped by `peft.get_peft_model(LoraConfig(r=8,
  lora_alpha=16, lora_dropout=0, target_modules=[q,k,v,o]_proj))`, `torch.optim.AdamW` with the
  same learning rate each step, `torch.set_num_threads(--threads)`; XLA uses its default (every
  core, 2 here).

Both start from the same LoRA matrices (jaxsel's init, copied into peft's lora_A / lora_B) and see
the same batches in the same order, so their losses agree step by step up to float rounding: the
run prints the first step's loss of each and the largest difference over all steps (the check
that the two compute the same training). Timing: one warm-up step each, then `--rounds` rounds,
each `--steps` jaxsel steps followed by `--steps` torch steps (interleaved, so machine load hits
both alike); tokens/s = 8 x 256 predicted tokens / median step wall time (the best step too),
and tokens per CPU-second of this process (user + system time over the step: the work, which
load moves far less than the wall time).

Expected on the 2-core CPU (docs/models.md, 2026-12-06, load 4-7): the same losses to ~1e-5;
jaxsel ~9.5 CPU-s per step (~210 tokens per CPU-second); torch + peft ~15 CPU-s on one thread
(~140), 34-50 CPU-s on two threads of the loaded cores (they wait on each other); wall time
tokens/s move with the load (jaxsel 129-169 median, torch + peft 39 on 2 threads, 81 on 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sysconfig
import time
from pathlib import Path

import jax
import numpy as np
from models import hf_model

from jaxsel import parallel
from jaxsel.batching import bucket_for, pad_rows
from jaxsel.downstream import DownstreamConfig, pack_tokens
from jaxsel.lm import train
from jaxsel.models import llama
from jaxsel.models.loaders import load_smollm2

STDLIB_FILES = ("argparse.py", "textwrap.py", "json/decoder.py", "functools.py", "heapq.py")
HF_NAMES = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stdlib_texts() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [(stdlib / name).read_text(encoding="utf-8") for name in STDLIB_FILES]


def peft_model(lm, lora: llama.Lora, dtype: str, torch, transformers, peft):
    """peft LoRA on transformers' Llama with our weights, its LoRA matrices set to `lora`'s
    (peft: lora_A [r, in], lora_B [out, r]; ours: a [L, in, r], b [L, r, out])."""
    model = hf_model(lm, torch, transformers, "cpu")
    config = peft.LoraConfig(
        r=next(iter(lora.a.values())).shape[-1],
        lora_alpha=lora.scale * next(iter(lora.a.values())).shape[-1],
        lora_dropout=0.0,
        target_modules=[HF_NAMES[n] for n in lora.a],
    )
    model = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, a in lora.a.items():
            a, b = np.asarray(a), np.asarray(lora.b[name])
            for i in range(a.shape[0]):
                mod = model.base_model.model.model.layers[i].self_attn
                proj = getattr(mod, HF_NAMES[name])
                proj.lora_A["default"].weight.copy_(torch.from_numpy(a[i].T.copy()))
                proj.lora_B["default"].weight.copy_(torch.from_numpy(b[i].T.copy()))
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model.train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and library")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    import peft
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    load_before = uptime()
    n_steps = 1 + args.rounds * args.steps
    dc = DownstreamConfig()
    dc = DownstreamConfig(tokens=n_steps * dc.batch_size * dc.seq_len)
    tc = dc.train_config()
    lm = load_smollm2(args.dtype)
    rows, _ = pack_tokens(lm.tokenizer, stdlib_texts(), dc.tokens, dc.seq_len, "stdlib")
    batches = [rows[s : s + dc.batch_size] for s in range(0, len(rows), dc.batch_size)]
    lora = llama.init_lora(
        jax.random.key(dc.seed), lm.params, lm.cfg, dc.rank, dc.alpha, dc.targets
    )

    # jaxsel: exactly what `train_tokens` runs per batch.
    mesh = parallel.data_mesh()
    tx, step = train.step_fn(lm.cfg, mesh, tc.optimizer_key())
    rep = parallel.replicated(mesh)
    data = parallel.data_size(mesh)
    n_rows = parallel.round_up(dc.batch_size, data)
    buckets = train.token_buckets(tc.max_tokens)
    state = jax.device_put(train.init_train_state(jax.tree.map(np.array, lora), tx), rep)
    params = jax.device_put(lm.params, rep)

    def jax_step(i: int) -> float:
        nonlocal state
        batch = batches[i]
        tokens, mask = pad_rows(batch, n_rows, bucket_for(max(map(len, batch)), buckets))
        groups = train.row_groups(n_rows, tokens.shape[1], data, tc.micro_tokens)
        state, loss = step(state, params, tokens, mask, groups)
        return float(loss)

    # torch + peft, the same LoRA start, optimizer and learning rate per step.
    model = peft_model(lm, lora, args.dtype, torch, transformers, peft)
    schedule = train.make_schedule(tc.optimizer_key())
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=float(schedule(0)),
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
    )

    def torch_step(i: int) -> float:
        for g in opt.param_groups:
            g["lr"] = float(schedule(i))
        x = torch.as_tensor(batches[i], dtype=torch.long)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses: dict[str, list[float]] = {"jaxsel": [], "torch+peft": []}
    times: dict[str, list[float]] = {"jaxsel": [], "torch+peft": []}
    cpu: dict[str, list[float]] = {"jaxsel": [], "torch+peft": []}
    fns = {"jaxsel": jax_step, "torch+peft": torch_step}
    warm = {}
    for name, fn in fns.items():  # warm-up: step 0 (compiles the jaxsel step)
        t0 = time.perf_counter()
        losses[name].append(fn(0))
        warm[name] = time.perf_counter() - t0
        print(f"{name}: warm-up step {warm[name]:.1f} s, loss {losses[name][0]:.6f}", flush=True)
    rounds = []
    for r in range(args.rounds):
        for name, fn in fns.items():
            for k in range(args.steps):
                i = 1 + r * args.steps + k
                t0, c0 = time.perf_counter(), sum(os.times()[:2])
                losses[name].append(fn(i))
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(sum(os.times()[:2]) - c0)
        load = os.getloadavg()
        rounds.append({"load": load, **{n: times[n][-args.steps :] for n in fns}})
        print(
            f"round {r + 1}: "
            + ", ".join(f"{n} {np.median(times[n][-args.steps :]):.2f} s/step" for n in fns)
            + f"  (load {load[0]:.2f})",
            flush=True,
        )
    tokens_per_step = dc.batch_size * dc.seq_len
    tps = {n: tokens_per_step / float(np.median(t)) for n, t in times.items()}
    best = {n: tokens_per_step / float(np.min(t)) for n, t in times.items()}
    per_cpu_s = {n: tokens_per_step / float(np.median(t)) for n, t in cpu.items()}
    diff = np.abs(np.subtract(losses["jaxsel"], losses["torch+peft"]))
    result = {
        "device": str(jax.devices()[0]),
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "setting": {
            "rank": dc.rank,
            "alpha": dc.alpha,
            "targets": list(dc.targets),
            "batch": dc.batch_size,
            "seq_len": dc.seq_len,
            "row_groups": train.row_groups(n_rows, dc.seq_len + 1, data, tc.micro_tokens),
        },
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "warmup_s": warm,
        "rounds": rounds,
        "tokens_per_s_median": tps,
        "tokens_per_s_best": best,
        "cpu_s_per_step": cpu,
        "tokens_per_cpu_s_median": per_cpu_s,
        "ratio_jaxsel_over_torch": tps["jaxsel"] / tps["torch+peft"],
        "losses": losses,
        "first_loss_diff": float(diff[0]),
        "max_loss_diff": float(diff.max()),
    }
    print(f"load: {result['uptime_before']}  ->  {result['uptime_after']}")
    print(
        f"{args.dtype}, batch {dc.batch_size} x {dc.seq_len}, LoRA r={dc.rank} on "
        f"{','.join(dc.targets)}; torch {torch.__version__} ({result['torch_threads']} threads), "
        f"peft {peft.__version__}, jax {jax.__version__} on {result['device']}"
    )
    print(
        f"first-step loss jaxsel {losses['jaxsel'][0]:.6f}, torch+peft "
        f"{losses['torch+peft'][0]:.6f}; max |diff| over {len(diff)} steps {diff.max():.2e}"
    )
    print("| impl | tokens/s (median step) | tokens/s (best step) | tokens per CPU-second |")
    print("|---|---|---|---|")
    for n in fns:
        print(f"| {n} | {tps[n]:.0f} | {best[n]:.0f} | {per_cpu_s[n]:.0f} |")
    print(f"ratio jaxsel / torch+peft (median): {result['ratio_jaxsel_over_torch']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
