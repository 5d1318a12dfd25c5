"""Timing helpers shared by the model benchmarks: median wall time of a call and the XLA matmul
peak that model FLOP utilisation is measured against."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def median_time(fn, reps: int, *args) -> float:
    """Median wall seconds of `fn(*args)` over `reps` calls, after one warm-up call."""
    fn(*args)  # warm-up (compile / allocator)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_flops(reps: int, dtype="float32") -> float:
    """FLOP/s of a [2048, 1024] x [1024, 1024] matmul under XLA, best of 3 * reps calls: the
    achievable peak (best, not median, so that other jobs on the machine do not lower it)."""
    a = jnp.ones((2048, 1024), dtype)
    b = jnp.ones((1024, 1024), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(3 * reps):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 * 1024 * 1024 / best
