"""Host I/O: corpora, readers/writers and the embedded default data."""

from jaxsel.data.corpus import (
    Corpus,
    read_corpus,
    read_jsonl,
    read_parquet,
    read_text_dir,
    write_jsonl,
    write_parquet,
    write_records,
)
from jaxsel.data.sources import Batch, Part, Source, open_source, parts_for_process

__all__ = [
    "Batch",
    "Corpus",
    "Part",
    "Source",
    "open_source",
    "parts_for_process",
    "read_corpus",
    "read_jsonl",
    "read_parquet",
    "read_text_dir",
    "write_jsonl",
    "write_parquet",
    "write_records",
]
