"""Host I/O: input formats, streams and in-memory corpora, writers, the embedded default data."""

from jaxsel.data.corpus import read_corpus, read_jsonl, read_parquet, read_text_dir
from jaxsel.data.formats import Part, iter_jsonl
from jaxsel.data.records import Corpus
from jaxsel.data.sources import Batch, Source, open_source, parts_for_process
from jaxsel.data.writers import json_line, write_jsonl, write_parquet, write_records

__all__ = [
    "Batch",
    "Corpus",
    "Part",
    "Source",
    "iter_jsonl",
    "json_line",
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
