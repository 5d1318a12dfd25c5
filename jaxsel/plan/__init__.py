"""`jaxsel plan`: will a job fit a TPU slice, and how long will it take? Answered on a CPU-only
machine (DESIGN §4, "Pods without a pod: deviceless AOT").

With the `libtpu` wheel JAX compiles for a TPU topology without a TPU. The planner builds the
programs a job runs — jaxsel's own jitted functions (`programs`), never re-implementations —
with abstract inputs of the job's shapes, dtypes and shardings, compiles them for the slice, and
reads off each compiled program:

- HBM per device: arguments + outputs + temporaries (less outputs aliased to donated
  arguments), from `memory_analysis()`, beside the chip's capacity;
- flops and HBM bytes per step, counted from the compiled HLO as XLA's `cost_analysis()`
  counts them but with every loop body counted by its trip count (`hlo`: XLA counts a loop
  body once) and only the bytes that live in HBM (not on-chip memory);
- a roofline time: per call max(flops / peak, bytes / HBM bandwidth) with the chip's published
  numbers (`chips.CHIPS`), times the calls of the job;
- collectives per step (what crosses the interconnect) and each host's share of the job.

A program that cannot fit by arithmetic alone (a Gram matrix of 4e16 bytes) is refused with
the reason before anything is compiled. The arguments the compiler sees per device are checked
against the arithmetic of the shapes (the split share plus the replicated part), so a pool or
batch axis that is silently replicated shows up.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import time
from importlib import metadata

from jaxsel.plan import hlo, programs
from jaxsel.plan.chips import (
    CHIPS,
    KNOWN_TOPOLOGIES,
    LIBTPU_MISSING,
    PlanError,
    Topology,
    host_mesh,
    libtpu_available,
    load_topology,
    slice_mesh,
)
from jaxsel.plan.programs import METHODS, MODELS, Job, Program

MESHES = ("slice", "host")

__all__ = [
    "CHIPS",
    "KNOWN_TOPOLOGIES",
    "LIBTPU_MISSING",
    "MESHES",
    "METHODS",
    "MODELS",
    "Job",
    "PlanError",
    "Report",
    "Row",
    "compile_program",
    "libtpu_available",
    "run",
]


@dataclasses.dataclass
class Row:
    """One compiled (or refused) program; per device unless named otherwise."""

    program: str
    mesh: str  # "slice": every chip of the topology; "host": one host's chips
    devices: int
    hbm_bytes_per_device: float | None
    hbm_capacity: float
    fits: bool
    reason: str | None
    argument_bytes: float | None
    expected_argument_bytes: float  # split share + replicated part, from the shapes
    split_ok: bool | None  # arguments per device match the split share (not replicated)
    output_bytes: float | None
    temp_bytes: float | None
    alias_bytes: float | None
    flops: float | None  # per step
    bytes_accessed: float | None  # per step, HBM (device memory) only: the roofline's bytes
    steps: int
    step_seconds: float | None
    roofline_seconds: float | None
    bound: str | None  # "compute" or "memory"
    compile_seconds: float
    collectives_per_step: dict
    collective_bytes_per_step: float | None
    loop_trips: list
    host: dict
    bytes_all_memories: float | None = None  # per step, HBM + on-chip (XLA's convention)
    xla_once: dict = dataclasses.field(default_factory=dict)  # XLA's own counts, loops once


@dataclasses.dataclass
class Report:
    topology: str
    chip: str
    devices: int
    hosts: int
    devices_per_host: int
    peak_flops: float
    hbm_bandwidth: float
    hbm_capacity: float
    job: dict
    programs: list[Row]
    compile_seconds: float
    versions: dict
    machine: str
    date: str

    @property
    def fits(self) -> bool:
        return all(r.fits for r in self.programs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"fits": self.fits}

    def table(self) -> str:
        return format_table(self)


def compile_program(p: Program, topo: Topology, mesh_name: str) -> Row:
    """Compiles `p` for the topology's chips and reads off memory, costs and collectives (or
    records why it was refused)."""
    import jax

    chip = topo.chip
    row = Row(
        p.name, mesh_name, p.devices, None, chip.hbm_bytes, False, p.refused, None,
        p.expected_argument_bytes, None, None, None, None, None, None, p.steps, None, None, None,
        0.0, {}, None, [], dict(p.host),
    )  # fmt: skip
    if p.refused:
        return row
    t0 = time.perf_counter()
    try:
        lowered = p.fn.lower(*p.args)
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:  # the compiler's refusal (e.g. out of HBM)
        row.compile_seconds = time.perf_counter() - t0
        row.reason = f"{p.name}: XLA: {str(e).strip().splitlines()[0]}"
        return row
    row.compile_seconds = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    row.argument_bytes = float(ma.argument_size_in_bytes)
    row.output_bytes = float(ma.output_size_in_bytes)
    row.temp_bytes = float(ma.temp_size_in_bytes)
    row.alias_bytes = float(ma.alias_size_in_bytes)
    row.hbm_bytes_per_device = row.argument_bytes + row.output_bytes - row.alias_bytes
    row.hbm_bytes_per_device += row.temp_bytes
    row.fits = row.hbm_bytes_per_device <= chip.hbm_bytes
    if not row.fits:
        row.reason = (
            f"{p.name}: {row.hbm_bytes_per_device / 1e9:.3g} GB per device > "
            f"{chip.hbm_bytes / 1e9:.3g} GB HBM"
        )
    # Replicated by mistake: the per-device arguments hold most of what should be split.
    unsplit = p.split_bytes * (1 - 1 / p.devices)
    row.split_ok = not (
        unsplit > 1e6 and row.argument_bytes - p.expected_argument_bytes > unsplit / 2
    )
    costs, xla = hlo.costs(compiled, lambda options: lowered.compile(compiler_options=options))
    per_call = p.steps_per_call
    calls = math.ceil(p.steps / per_call)
    call_seconds = max(costs.flops / chip.peak_flops, costs.hbm_bytes / chip.hbm_bandwidth)
    row.flops = costs.flops / per_call
    row.bytes_accessed = costs.hbm_bytes / per_call
    row.bytes_all_memories = costs.bytes_accessed / per_call
    row.step_seconds = call_seconds / per_call
    row.roofline_seconds = call_seconds * calls
    row.bound = (
        "compute"
        if costs.flops / chip.peak_flops >= costs.hbm_bytes / chip.hbm_bandwidth
        else "memory"
    )
    row.collectives_per_step = {k: v / per_call for k, v in sorted(costs.collectives.items())}
    row.collective_bytes_per_step = costs.collective_bytes / per_call
    row.loop_trips = list(costs.loop_trips)
    row.xla_once = {
        "flops": float(xla.get("flops", 0.0)),
        "bytes_accessed": float(xla.get("bytes accessed", 0.0)),
        "flops_here": costs.flops_once,
        "bytes_accessed_here": costs.bytes_once,
    }
    if "tokens_per_host_per_step" in row.host and call_seconds > 0:
        row.host["tokens_per_host_per_s"] = row.host["tokens_per_host_per_step"] / call_seconds
    return row


def _versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "libtpu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run(topology: str, job: Job, mesh: str = "slice") -> Report:
    """Compiles the programs of `job` for `topology` ("v5p:4x4x4", ...) on `mesh` ("slice": all
    its chips, what `api`/`select(mesh=...)` can run; "host": one host's chips, the mesh each
    process of a multi-host `jaxsel` CLI job builds). On a multi-host slice a GIP plan also
    compiles the host-mesh program.

    Raises:
      PlanError: unknown topology, libtpu missing, shapes that overflow int32 or do not divide
        over the mesh.
      InputError: settings the method itself refuses.
    """
    if mesh not in MESHES:
        raise PlanError(f"unknown mesh {mesh!r}; choose one of {', '.join(MESHES)}")
    topo = load_topology(topology)
    the_mesh = slice_mesh(topo) if mesh == "slice" else host_mesh(topo)
    built = [(mesh, p) for p in programs.build(job, the_mesh, topo.chip.hbm_bytes)]
    if job.method in ("gip", "all") and mesh == "slice" and topo.hosts > 1:
        # what each process of a multi-host CLI job runs: GIP over its own host's chips
        p = programs.gip(job, host_mesh(topo), topo.chip.hbm_bytes, label=" (one host)")
        built.insert(1, ("host", p))
    t0 = time.perf_counter()
    rows = [compile_program(p, topo, name) for name, p in built]
    return Report(
        topology=topo.name,
        chip=topo.chip.name,
        devices=len(topo.devices),
        hosts=topo.hosts,
        devices_per_host=topo.devices_per_host,
        peak_flops=topo.chip.peak_flops,
        hbm_bandwidth=topo.chip.hbm_bandwidth,
        hbm_capacity=topo.chip.hbm_bytes,
        job=dataclasses.asdict(job) | {"mesh": mesh},
        programs=rows,
        compile_seconds=time.perf_counter() - t0,
        versions=_versions(),
        machine=f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
        date=datetime.date.today().isoformat(),
    )


# ------------------------------------------------------------------------------ formatting


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for div, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms")):
        if s >= div:
            return f"{s / div:.3g} {unit}"
    return f"{s * 1e6:.3g} µs"


def format_table(r: Report) -> str:
    head = (
        f"{r.topology}: {r.devices} x {r.chip} ({_si(r.hbm_capacity, 'B')} HBM, "
        f"{_si(r.peak_flops, 'FLOP/s')} bf16, {_si(r.hbm_bandwidth, 'B/s')}), {r.hosts} host(s) "
        f"x {r.devices_per_host} chips"
    )
    cols = ("program", "mesh", "dev", "HBM/dev", "args/dev", "flops/step", "HBM B/step",
            "steps", "roofline", "compile", "fits")  # fmt: skip
    lines = [cols]
    for p in r.programs:
        lines.append((
            p.program, p.mesh, str(p.devices), _si(p.hbm_bytes_per_device, "B"),
            _si(p.argument_bytes, "B"), _si(p.flops), _si(p.bytes_accessed, "B"),
            f"{p.steps:,}", _seconds(p.roofline_seconds),
            f"{p.compile_seconds:.1f} s" if p.argument_bytes is not None else "-",
            "yes" if p.fits else "NO",
        ))  # fmt: skip
    widths = [max(len(x[i]) for x in lines) for i in range(len(cols))]
    out = [head, ""]
    for line in lines:
        out.append(
            "  ".join(
                x.ljust(w) if i < 2 else x.rjust(w)
                for i, (x, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    out.append("")
    for p in r.programs:
        if p.reason:
            out.append(f"{p.program} [{p.mesh}]: does not fit: {p.reason.split(': ', 1)[-1]}")
            continue
        coll = ", ".join(f"{k} {v:.3g}" for k, v in p.collectives_per_step.items()) or "none"
        host = ", ".join(f"{k} {_si(v)}" for k, v in p.host.items())
        warn = "" if p.split_ok else " REPLICATED? arguments exceed the split share"
        pad, rows = p.host.get("padding_rows_per_step", 0), p.host.get("rows_per_step", 0)
        if pad:
            warn += f"; {pad} of {rows} rows per call are padding: --batch-size {rows} fills them"
        out.append(
            f"{p.program} [{p.mesh}]: {p.bound}-bound, {_seconds(p.step_seconds)}/step; "
            f"collectives/step: {coll} ({_si(p.collective_bytes_per_step, 'B')}); "
            f"per host: {host}{warn}"
        )
    out.append(f"compiled in {r.compile_seconds:.1f} s on {r.machine}, {r.date}")
    return "\n".join(out)
