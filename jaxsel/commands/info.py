"""`jaxsel info`: the header of a FineZip archive, and the cost of each coding window."""

from __future__ import annotations

import dataclasses
import functools
import logging

from jaxsel.commands import common
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Print the header of the FineZip archive ARCHIVE (validated as decompression does);
    --plot also plots the bits/byte of every coding window (decompresses: needs the model).
    `jaxsel compress --info ARCHIVE` is the same command."""

    archive: str = option(help="archive ('-': stdin)", positional=True, input=True)
    plot: str | None = option(
        None, "PNG of the bits/byte of every coding window", metavar="PNG", output=True
    )
    model: str | None = common.model()


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel import finezip

    finezip.request_deterministic_xla()  # --plot decodes: as the compressor computed
    data = common.read_bytes(c.archive)
    print(finezip.describe(finezip.parse(data).header, len(data)))
    if c.plot:
        _plot_window_costs(data, c.model, c.plot)
    return 0


def _plot_window_costs(archive: bytes, model: str | None, path: str) -> None:
    from jaxsel import finezip, plots
    from jaxsel.finezip.costs import archive_costs
    from jaxsel.models.loaders import load_lm

    c = archive_costs(archive, functools.partial(load_lm, model))
    header = finezip.read_header(archive)[0]
    payload = header.model.sections(header.body_len)[2]  # without LoRA blob, escapes, padding
    bpb = [8 * n / header.size for n in (payload, len(archive))]
    slide = "ring" if c.plan.ring else f"stride {c.plan.stride}"
    what = f"context {c.plan.context}, {slide}, {c.plan.seg_len}-token segments"
    fig = plots.window_costs(c.window_bits / c.window_bytes, *bpb, what=what)
    log.info("info: costs of %d windows -> %s", len(c.window_bits), plots.save(fig, path))
