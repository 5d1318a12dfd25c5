"""`jaxsel score`: one score per pool item by a method."""

from __future__ import annotations

import dataclasses
import logging
import time

from jaxsel import flags
from jaxsel.commands import scoring
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(scoring.Common):
    """Score every pool item by a method and write one {id, score} per item, in pool order."""

    out: str | None = option(
        None,
        "output (required): one {id, score} per pool item, pool order (score null: not ranked "
        "by the method)",
    )


def parse(argv: list[str]) -> scoring.Job:
    job = scoring.parse("score", Config, argv)
    if job.config.out is None and not job.config.print_config:
        flags.Parser(prog="jaxsel score").error("the following arguments are required: --out")
    return job


def run(job: scoring.Job) -> int:
    c = job.config
    if c.print_config:
        return scoring.print_options(job)
    p = scoring.prepare(job, c.out)
    from jaxsel import parallel, pipeline
    from jaxsel.data.writers import write_output
    from jaxsel.scores import json_score

    t0 = time.perf_counter()
    with p.run as run:
        rows = pipeline.score_rows(p.method, p.source, p.target, p.config, run)
        if parallel.is_writer():
            meta = scoring.sidecar("score", job, p)
            write_output(p.out, ({"id": i, "score": json_score(s)} for i, s in rows), meta=meta)
        else:
            for _ in rows:  # takes part in the gathering; process 0 writes
                pass
    parallel.barrier("jaxsel: output written")  # (JAX's exit barrier would time out meanwhile)
    log.info("%s: scored the pool in %.2f s", p.method.name, time.perf_counter() - t0)
    return 0
