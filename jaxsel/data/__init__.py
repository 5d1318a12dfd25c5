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

__all__ = [
    "Corpus",
    "read_corpus",
    "read_jsonl",
    "read_parquet",
    "read_text_dir",
    "write_jsonl",
    "write_parquet",
    "write_records",
]
