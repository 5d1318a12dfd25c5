"""`jaxsel select`: the best items of a pool by a method (top-K, threshold or byte budget)."""

from __future__ import annotations

import dataclasses
import logging
import time

from jaxsel.commands import scoring
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(scoring.Common):
    """Select from a pool by a method's scores: the top K (default 100), those above a
    threshold, or the best up to a byte budget. Default: ZIP-FIT on the embedded data."""

    top_k: int | None = option(
        None,
        "keep the K best items (None: 100, when no other rule is given)",
        aliases=("-k",),
        exclusive="rule",
    )
    threshold: float | None = option(None, "keep items scoring above this", exclusive="rule")
    budget_bytes: int | None = option(
        None, "keep the best items up to this many bytes", exclusive="rule"
    )
    out: str = option("-", "output of the selected records, best first ('-': stdout)")

    def __post_init__(self):
        if self.top_k is None and self.threshold is None and self.budget_bytes is None:
            object.__setattr__(self, "top_k", 100)


def parse(argv: list[str]) -> scoring.Job:
    return scoring.parse("select", Config, argv)


def run(job: scoring.Job) -> int:
    c = job.config
    if c.print_config:
        return scoring.print_options(job)
    from jaxsel import parallel, pipeline
    from jaxsel.scores import check_threshold

    # a threshold is checked before any input is read
    check = None if c.threshold is None else lambda: check_threshold(c.threshold)
    p = scoring.prepare(job, c.out, check)
    t0 = time.perf_counter()
    with p.run as run:
        rule = {"k": c.top_k, "threshold": c.threshold, "budget_bytes": c.budget_bytes}
        sel = pipeline.select(p.method, p.source, p.target, p.config, run, **rule)
    if parallel.is_writer():
        pipeline.write_selection(p.out, p.source, sel, scoring.sidecar("select", job, p))
    parallel.barrier("jaxsel: output written")  # (JAX's exit barrier would time out meanwhile)
    secs = time.perf_counter() - t0
    n, size = len(sel.keys), sel.pool_size
    log.info("%s: selected %d of %d items in %.2f s -> %s", p.method.name, n, size, secs, c.out)
    return 0
