"""`jaxsel eval`: domain mix and precision@K of selections or score files."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from jaxsel.commands import common
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Domain mix and precision@K of a selection or of scores (one report per file)."""

    selection: tuple[str, ...] = option(
        help="output of `jaxsel select` (records, best first) or `jaxsel score` ({id, score} "
        "per pool item); several: one report each",
        positional=True,
        input=True,
    )
    data: common.Pool = common.data(common.Pool)
    domain: str = option("python", "domain counted as relevant")
    field: str = option("domain", "record field holding the domain")
    k: int | None = option(None, "precision@K cut-off (None: the selection's size)", flag="-k")
    plot: str | None = option(
        None, "also plot precision@K vs K and the domain mix", metavar="PNG", output=True
    )


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel.data.corpus import iter_jsonl
    from jaxsel.evaluate import selection_report
    from jaxsel.scores import _check_k

    if c.k is not None:
        _check_k(c.k)  # before any input is read (0 is not "no -k")
    pool = c.data.load_pool()
    files = {path: [(loc, rec) for _, loc, rec in iter_jsonl(path)] for path in c.selection}
    reports = {
        path: selection_report(pool, rows, c.domain, c.field, c.k, path)
        for path, rows in files.items()
    }
    print(json.dumps(reports[c.selection[0]] if len(files) == 1 else reports, indent=2))
    if c.plot:
        _plot(c, pool, files, reports)
    return 0


def _plot(c: Config, pool, files: dict, reports: dict) -> None:
    from jaxsel import plots
    from jaxsel.evaluate import domain_mix, domains_of, precision_curve, selection_ranking

    domains = domains_of(pool, c.field)
    stems = [Path(path).stem for path in files]
    names = dict(zip(files, stems if len(set(stems)) == len(files) else files, strict=True))
    curves, mixes = {}, {}
    for path, rows in files.items():
        ranked = [domains[i] for i in selection_ranking(pool, rows, path)[0]]
        curves[names[path]] = precision_curve(ranked, c.domain)
        mixes[names[path]] = domain_mix(ranked[: reports[path]["k"]])
    base = reports[c.selection[0]]["base_rate"]
    fig = plots.selection_figure(curves, mixes, base, c.domain)
    log.info("eval: plot -> %s", plots.save(fig, c.plot))
