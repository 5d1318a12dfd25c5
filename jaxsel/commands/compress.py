"""`jaxsel compress`: FineZip, lossless LLM compression of any file."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

from jaxsel.commands import common
from jaxsel.finezip import FineZipConfig
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Compress INPUT into the archive OUTPUT ('-' = stdin/stdout): text is coded with a causal
    LM, anything else (or anything smaller that way) with raw/bz2/lzma. `jaxsel info OUTPUT`
    prints the archive's header."""

    input: str = option(help="file to compress ('-': stdin)", positional=True, input=True)
    output: str = option(help="archive to write ('-': stdout)", positional=True, output=True)
    model: str | None = common.model()
    dtype: str = common.dtype()
    progress: bool = option(False, "progress bar on stderr")
    finezip: FineZipConfig = option(FineZipConfig(), "how to compress", prefix="")


def run(c: Config) -> int:
    from jaxsel import finezip

    finezip.request_deterministic_xla()  # before JAX starts a backend
    common.check_files(c)
    from jaxsel.models.loaders import load_lm

    data = common.read_bytes(c.input)
    model = functools.partial(load_lm, c.model, c.dtype)
    t0 = time.perf_counter()
    res = finezip.compress_detailed(data, model, c.finezip, progress=c.progress)
    common.write_bytes(c.output, res.archive)
    log.info(
        "compress: %d -> %d bytes (%s%s, %.3f bits/byte) in %.1f s",
        len(data),
        len(res.archive),
        res.mode,
        f", {res.reason}" if res.reason and data else "",
        8 * len(res.archive) / max(len(data), 1),
        time.perf_counter() - t0,
    )
    return 0
