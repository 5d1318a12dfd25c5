"""A whole corpus in memory, read through the same formats as a stream (`jaxsel.data.sources`):
the same records, ids, order and errors."""

from __future__ import annotations

import os

from jaxsel.data.formats import iter_jsonl, jsonl_kind  # noqa: F401 (jaxsel.cli's)
from jaxsel.data.records import Corpus, OnBad, check_id  # noqa: F401 (jaxsel.evaluate's)
from jaxsel.data.sources import Source, open_source
from jaxsel.data.writers import json_line, write_records  # noqa: F401 (jaxsel.pipeline's)


def read_corpus(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
    data_dir: str | os.PathLike | None = None,
) -> Corpus:
    """Reads a corpus by its form (`open_source`): a directory (of shards or text files),
    *.parquet, JSON Lines (*.jsonl[.gz|.zst], *.json), `tfds:NAME[/CONFIG]:SPLIT` (prepared in
    `data_dir`) or `hf:PATH[:SPLIT]` (a saved `datasets.Dataset` or a Hub layout); paths may be
    URLs.

    Args:
      text_field: the field holding the text.
      id_field: the field holding the id (kept as given: a string or a number); None numbers
        documents by line (JSON Lines) or row, as strings.
      on_empty: "error" (default) or "skip" (logged) for empty/whitespace-only texts (and
        non-UTF-8 files of a directory).
    """
    return open_source(path, text_field, id_field, data_dir, on_empty).to_corpus()


def read_jsonl(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
) -> Corpus:
    """Reads a file as JSON Lines (optionally .gz), whatever its name; see `read_corpus`."""
    return _read_as(jsonl_kind(path), path, text_field, id_field, on_empty)


def read_parquet(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
) -> Corpus:
    """Reads a Parquet file; all columns are kept in the records. See `read_corpus`."""
    return _read_as("parquet", path, text_field, id_field, on_empty)


def read_text_dir(path: str | os.PathLike, on_bad: OnBad = "error") -> Corpus:
    """Reads every file under a directory (sorted, recursive) as one document; id = relative path.

    Non-UTF-8 or empty files raise unless `on_bad="skip"` (each skip is logged).
    """
    return _read_as("text", path, on_empty=on_bad)


def _read_as(kind: str, path, text_field="text", id_field="id", on_empty="error") -> Corpus:
    return Source((str(path),), text_field, id_field, on_empty=on_empty, kind=kind).to_corpus()
