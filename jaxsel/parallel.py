"""Devices, meshes and shardings: the only module that knows how many devices there are.

Code elsewhere names *logical* axes ("pool", "batch", ...); `RULES` maps them to mesh axes
(MaxText's logical_axis_rules, big_vision's sharding_rules). The default mesh has one `data` axis
over every device; on several hosts call `initialize()` first.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA = "data"

# logical axis -> mesh axis (None = replicated).
RULES: dict[str, str | None] = {
    "pool": DATA,  # items of a selection pool (columns of F in GIP, candidates in LAMDAS)
    "batch": DATA,  # examples of a device batch
    "embed": None,
    "seq": None,
    "vocab": None,
    "query": None,
}


def initialize() -> None:
    """Multi-host start-up (no-op on one process): `jax.distributed.initialize()` reads the
    cluster from the environment (TPU pods, SLURM, ...)."""
    if jax.process_count() == 1 and _env_multi_host():
        jax.distributed.initialize()


def _env_multi_host() -> bool:
    import os

    return any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS"))


@functools.cache
def data_mesh() -> Mesh:
    """A 1-D mesh named `data` over all devices, with Auto axis types so that contractions over
    a sharded axis insert their all-reduce instead of raising (DESIGN §5)."""
    return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(AxisType.Auto,))


def spec(*logical: str | None) -> PartitionSpec:
    """PartitionSpec for an array whose dims carry these logical axis names."""
    return PartitionSpec(*(RULES.get(a) if a is not None else None for a in logical))


def sharding(*logical: str | None, mesh: Mesh | None = None) -> NamedSharding:
    return NamedSharding(mesh or data_mesh(), spec(*logical))


def replicated(mesh: Mesh | None = None) -> NamedSharding:
    return NamedSharding(mesh or data_mesh(), PartitionSpec())


def data_size(mesh: Mesh | None = None) -> int:
    """Number of shards along `data`: pool/batch sizes are padded to a multiple of it."""
    return (mesh or data_mesh()).shape[DATA]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_axis(x: np.ndarray, size: int, axis: int = 0, value=0) -> np.ndarray:
    """Pads `x` along `axis` to `size` with `value` (host-side, before device_put)."""
    pad = size - x.shape[axis]
    if pad < 0:
        raise ValueError(f"cannot pad axis of {x.shape[axis]} down to {size}")
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return np.pad(x, widths, constant_values=value)


def put(x, *logical: str | None, mesh: Mesh | None = None) -> jax.Array:
    """device_put with the sharding of the given logical axes."""
    return jax.device_put(x, sharding(*logical, mesh=mesh))
