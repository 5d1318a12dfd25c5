"""`jaxsel decompress`: restore a file from its FineZip archive."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

from jaxsel.commands import common
from jaxsel.errors import InputError
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
    max_memory_mb: float | None = option(
        None,
        "refuse an archive whose decoding needs more than this many MiB beyond the model "
        "(KV caches, probability tables), before anything is decoded (None: what the format "
        "allows; for archives from untrusted sources)",
    )
    max_tokens: int | None = option(
        None,
        "refuse an archive that codes more than this many tokens (decoding time grows with "
        "them), before the model loads (None: what the format allows)",
    )
    progress: bool = option(False, "progress bar on stderr")

    def __post_init__(self):
        for name in ("max_memory_mb", "max_tokens"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise InputError(f"--{name.replace('_', '-')} must be > 0, got {v}")


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel import finezip

    finezip.request_deterministic_xla()  # before JAX starts a backend
    from jaxsel.models.loaders import load_lm

    archive = common.read_bytes(c.input)
    t0 = time.perf_counter()
    # the model loads only after the whole archive has been validated (`finezip.parse`)
    limits = finezip.Limits(
        None if c.max_memory_mb is None else int(c.max_memory_mb * 2**20), c.max_tokens
    )
    load = functools.partial(load_lm, c.model)
    data = finezip.decompress(archive, load, progress=c.progress, limits=limits)
    common.write_bytes(c.output, data)
    log.info(
        "decompress: %d -> %d bytes (%s) in %.1f s",
        len(archive),
        len(data),
        finezip.read_header(archive)[0].mode,
        time.perf_counter() - t0,
    )
    return 0
