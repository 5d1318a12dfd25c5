"""`jaxsel decompress`: restore a file from its FineZip archive."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

from jaxsel.commands import common
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Restore INPUT (an archive) into OUTPUT ('-' = stdin/stdout) and verify the original's
    checksum; the model must be the one that compressed it (everything else is read from the
    archive)."""

    input: str = option(help="archive ('-': stdin)", positional=True, input=True)
    output: str = option(help="restored file ('-': stdout)", positional=True, output=True)
    model: str | None = common.model()
    progress: bool = option(False, "progress bar on stderr")


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel import finezip

    finezip.request_deterministic_xla()  # before JAX starts a backend
    from jaxsel.models.loaders import load_lm

    archive = common.read_bytes(c.input)
    t0 = time.perf_counter()
    # the model loads only after the whole archive has been validated (`finezip.parse`)
    data = finezip.decompress(archive, functools.partial(load_lm, c.model), progress=c.progress)
    common.write_bytes(c.output, data)
    log.info(
        "decompress: %d -> %d bytes (%s) in %.1f s",
        len(archive),
        len(data),
        finezip.read_header(archive)[0].mode,
        time.perf_counter() - t0,
    )
    return 0
