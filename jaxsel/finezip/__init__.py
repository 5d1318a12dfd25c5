"""FineZip: lossless compression of text with a causal LM (Mittu et al. 2024, arXiv 2409.17141).

`compress(data) -> archive` and `decompress(archive) -> data` for any bytes. Text is tokenised
(bytes it cannot tokenise, e.g. stray invalid UTF-8, travel verbatim beside it: `split_text`),
cut into contiguous segments, one per batch row, and each token is coded under the model's
prediction from up to `context` previous tokens of its segment (a ring KV cache by default, or
sliding windows with a jitted prefill): either its rank (the paper; varints + bzip2) or range
coding under the full distribution (`constriction`), optionally mixed with a match model of the
text already coded (`ac-match`: long repeats cost ~nothing). Optional LoRA memorisation of the
input travels inside the archive. Modules: `archive` (typed header, checksums, fallback modes),
`coders` (the registered coders), `engine` (segments, windows and the jitted programs: the
losslessness argument lives there), `match` (the match model), `memorize` (LoRA), `api`.
"""

from jaxsel.finezip.api import (
    Compressed,
    FineZipConfig,
    Limits,
    compress,
    compress_detailed,
    decompress,
    join_text,
    parse,
    request_deterministic_xla,
    split_text,
)
from jaxsel.finezip.archive import Header, describe, read_header
from jaxsel.finezip.match import MatchConfig
from jaxsel.finezip.memorize import MemorizeConfig

__all__ = [
    "Compressed",
    "FineZipConfig",
    "Header",
    "Limits",
    "MatchConfig",
    "MemorizeConfig",
    "compress",
    "compress_detailed",
    "decompress",
    "describe",
    "join_text",
    "parse",
    "read_header",
    "request_deterministic_xla",
    "split_text",
]
