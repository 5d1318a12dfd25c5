"""`jaxsel plan`: compile a job's programs for a TPU slice on this machine."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

from jaxsel import plan
from jaxsel.commands import common
from jaxsel.flags import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Compile the programs a job runs for a TPU topology on this machine (the libtpu wheel, no
    TPU) with the job's shapes and shardings, and print per program: HBM per device beside the
    chip's, flops and HBM bytes per step, steps, a roofline time, compile time and whether it
    fits. Exit status 1 when a program does not fit."""

    topology: str = option(help=f"TPU slice ({', '.join(plan.KNOWN_TOPOLOGIES)})")
    method: str = option(help=f"one of {', '.join(plan.METHODS)}")
    pool_size: int = option(help="pool items (texts; GIP: embeddings)")
    dim: int = option(384, "GIP embedding dimension d")
    k: int = option(1000, "GIP greedy steps (items selected)", flag="-k")
    mode: str | None = option(None, "GIP mode: sc, ma, diversity (None: sc)")
    algorithm: str | None = option(None, "GIP algorithm: mp, lr (None: mp)")
    form: str = option("matrix-free", "GIP form: matrix-free, gram")
    queries: int = option(1, "GIP mode ma: score rows n")
    model: str = option("smollm2-135m", f"one of {', '.join(plan.MODELS)}")
    seq_len: int = option(512, "tokens per text (LM programs)")
    batch_size: int | None = option(
        None,
        "texts per call (None: the method's own; LAMDAS: its scoring batch); jaxsel rounds a "
        "call up to a multiple of the devices with empty rows",
    )
    dtype: str = common.dtype()
    target_size: int = option(164, "LAMDAS reference texts")
    context: int = option(2048, "FineZip KV-cache positions C")
    mesh: str = option(
        "slice",
        "slice: every chip of the topology; host: one host's chips (what each process of a "
        "CLI job uses)",
        choices=plan.MESHES,
    )
    json: str | None = option(None, "write the plan as JSON here", metavar="OUT", output=True)


def run(c: Config) -> int:
    common.check_files(c)
    # Without a TPU here JAX's default backend falls back to the CPU and says so at INFO.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    shapes = {f.name for f in dataclasses.fields(plan.Job)}
    job = plan.Job(**{k: v for k, v in dataclasses.asdict(c).items() if k in shapes})
    report = plan.run(c.topology, job, c.mesh)
    print(report.table())
    if c.json:
        from jaxsel.data.outputs import write_text

        write_text(c.json, json.dumps(report.to_json(), indent=1) + "\n")
    for row in report.programs:
        if not row.fits:
            print(f"does not fit: {row.reason}", file=sys.stderr)
    return 0 if report.fits else 1
