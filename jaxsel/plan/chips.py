"""TPU chips and topologies for deviceless compilation: the published peak numbers of each chip,
and a topology's compile-only devices and meshes (the `libtpu` wheel, no TPU attached).

Peak numbers per chip, from Google Cloud's TPU system-architecture pages
(cloud.google.com/tpu/docs/v5e, /v5p, /v6e, "chip specifications"): bf16 peak compute, HBM
capacity and HBM bandwidth. Decimal units as published (16 GB = 16e9 bytes), so a plan that
fits here fits the chip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
from typing import NamedTuple

import numpy as np

from jaxsel.errors import JaxselError


class Chip(NamedTuple):
    name: str
    device_kind: str  # jax Device.device_kind of its compile-only devices
    peak_flops: float  # bf16 FLOP/s per chip
    hbm_bandwidth: float  # bytes/s per chip
    hbm_bytes: float  # HBM capacity per chip


CHIPS = {
    "v5e": Chip("v5e", "TPU v5 lite", 197e12, 819e9, 16e9),
    "v5p": Chip("v5p", "TPU v5", 459e12, 2765e9, 95e9),
    "v6e": Chip("v6e", "TPU v6 lite", 918e12, 1640e9, 32e9),
}
# Compiled for on the 2-core development VM with jax 0.10.2 + libtpu 0.0.52 (DESIGN §4). Other
# slice shapes of these chips may work; v4 names fail in make_mesh, 16x16 did not finish in 120 s.
KNOWN_TOPOLOGIES = ("v5e:2x2", "v5e:4x4", "v5e:8x8", "v5p:2x2x2", "v5p:4x4x4", "v6e:4x4")
_NAME = re.compile(r"^(v5e|v5p|v6e):\d+(x\d+)+$")
LIBTPU_MISSING = (
    "deviceless TPU compilation needs the libtpu wheel: pip install 'jaxsel[tpu]' "
    "(no TPU is used, only its compiler)"
)


class PlanError(JaxselError):
    """The plan cannot be made as asked (topology, libtpu, shapes)."""


class Topology(NamedTuple):
    name: str
    chip: Chip
    devices: tuple  # compile-only devices, in make_mesh's order
    hosts: int

    @property
    def devices_per_host(self) -> int:
        return len(self.devices) // self.hosts


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


@contextlib.contextmanager
def quiet_stderr():
    """Drops what native code writes to fd 2 meanwhile (Python exceptions are unaffected):
    libtpu's start-up warns that it finds no TPU VM metadata (accelerator type, worker
    hostnames), true and irrelevant for compiling; XLA logs a stack trace when jaxlib cannot
    read back a program's HLO (`hlo.optimized_text` then reads XLA's own dump)."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_topology(name: str) -> Topology:
    """The compile-only devices of a TPU slice such as "v5p:4x4x4".

    Raises:
      PlanError: libtpu is missing, or the name is not a topology libtpu and jaxsel's chip
        table know (one line, listing the ones known to work).
    """
    known = ", ".join(KNOWN_TOPOLOGIES)
    if not _NAME.match(name):
        raise PlanError(f"unknown topology {name!r}; topologies that compile here: {known}")
    if not libtpu_available():
        raise PlanError(LIBTPU_MISSING)
    # No TPU is used, only the compiler: concurrent planners (and tests) need not exclude each
    # other through libtpu's one-process-per-host lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax
    from jax.experimental import topologies

    try:
        with quiet_stderr():
            desc = topologies.get_topology_desc(topology_name=name, platform="tpu")
            mesh = topologies.make_mesh(desc, (len(desc.devices),), ("data",))
    except (RuntimeError, ValueError, NotImplementedError, jax.errors.JaxRuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PlanError(
            f"topology {name!r} does not load ({first}); topologies that compile here: {known}"
        ) from None
    chip = CHIPS[name.split(":")[0]]
    devices = tuple(np.asarray(mesh.devices).flat)
    kinds = {d.device_kind for d in devices}
    if kinds != {chip.device_kind}:
        raise PlanError(f"topology {name!r} has devices {sorted(kinds)}, not {chip.device_kind}")
    hosts = len({d.process_index for d in devices})
    return Topology(name, chip, devices, hosts)


def slice_mesh(topo: Topology):
    """One `data` axis over every chip of the slice (jaxsel's mesh type, `parallel.data_mesh`)."""
    from jaxsel import parallel

    return parallel.data_mesh(topo.devices)


def host_mesh(topo: Topology):
    """One `data` axis over the chips of one host: the mesh each process of a multi-host
    `jaxsel` job builds (`parallel.data_mesh()` is this process's local devices)."""
    from jaxsel import parallel

    first = topo.devices[0].process_index
    return parallel.data_mesh(tuple(d for d in topo.devices if d.process_index == first))
