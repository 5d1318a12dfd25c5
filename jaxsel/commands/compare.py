"""`jaxsel compare`: several methods on one pool and target, side by side."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

from jaxsel.commands import common
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Run several methods on one pool/target and report precision@K of a domain, by length
    bucket, and the length bias (Spearman of score vs bytes)."""

    data: common.Data = common.data()
    methods: tuple[str, ...] = option(
        ("zipfit", "dsir", "random"), "method names (each with its default options)"
    )
    domain: str = option("python", "domain counted as relevant")
    field: str = option("domain", "record field holding the domain")
    k: tuple[int, ...] = option((100,), "precision@K cut-offs (items)", flag="-k")
    out: str | None = option(None, "also write the report as JSON here", output=True)
    plot: str | None = option(
        None, "also plot precision@K vs K, one curve per method", metavar="PNG", output=True
    )
    progress: bool = option(True, "which method runs (i of n) and its progress bar, on stderr")


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel import methods
    from jaxsel.data import outputs
    from jaxsel.evaluate import compare_row, domains_of, precision_curve
    from jaxsel.scores import _check_k

    for k in c.k:
        _check_k(k)  # before the methods run
    pool, target = c.data.load_pool(), c.data.load_target()
    domains = domains_of(pool, c.field)
    rows, curves = [], {}
    # one Run: methods share loaded models (one LM for ppl, lamdas)
    with methods.Run(progress=c.progress) as run:
        for i, name in enumerate(c.methods, 1):
            if c.progress:
                log.info("compare: method %d of %d: %s", i, len(c.methods), name)
            t0 = time.perf_counter()
            scores = methods.score(name, pool, target, run=run)
            secs = time.perf_counter() - t0
            if c.progress:
                log.info("compare: %s done in %.1f s", name, secs)
            rows.append(compare_row(scores, domains, pool.nbytes(), c.domain, c.k, secs))
            ranked = [domains[i] for i in scores.ranking()]
            curves[scores.method] = precision_curve(ranked, c.domain)
    base = domains.count(c.domain) / len(domains)
    print(f"pool {len(pool)} items, target {len(target)}, base rate of {c.domain!r}: {base:.3f}")
    head = ["method", "seconds", *[f"P@{k}" for k in c.k], "spearman_score_vs_bytes"]
    print("| " + " | ".join(head) + " | bucket P (short->long) |")
    print("|" + "---|" * (len(head) + 1))
    for r in rows:
        cells = [f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head]
        buckets = " / ".join(f"{b['precision']:.2f}" for b in r["by_length_bucket"])
        print("| " + " | ".join(cells) + f" | {buckets} |")
    if c.out:
        outputs.write_text(c.out, json.dumps({"base_rate": base, "rows": rows}, indent=2))
    if c.plot:
        from jaxsel import plots

        fig = plots.precision_curves(curves, base, c.domain)
        log.info("compare: plot -> %s", plots.save(fig, c.plot))
    return 0
