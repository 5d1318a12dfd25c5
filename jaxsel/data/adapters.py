"""Any pool form as a stream or an in-memory Corpus: the adapters behind `jaxsel.score`,
`jaxsel.select` and `jaxsel.methods.score` (lists of texts or records, a Corpus, a path or a
"tfds:"/"hf:" spec, a pandas DataFrame, an HF Dataset, or a Source)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxsel.data import Batch, Corpus, open_source, read_corpus
from jaxsel.errors import InputError


class CorpusSource:
    """A Source (`jaxsel.data.sources`) over an in-memory Corpus: one part, corpus order."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.name = corpus.name

    def to_corpus(self) -> Corpus:
        return self.corpus

    def fingerprint(self) -> str:
        return fingerprint(self.corpus)

    def parts(self) -> list[int]:
        return [0]

    def batches(self, batch_size: int, parts: Sequence[int] | None = None) -> Iterator[Batch]:
        c = self.corpus
        if parts is not None and list(parts) != [0]:
            return
        for s in range(0, len(c), batch_size):
            e = min(s + batch_size, len(c))
            keys = np.stack([np.zeros(e - s, np.int64), np.arange(s, e, dtype=np.int64)], axis=1)
            yield Batch(list(c.ids[s:e]), list(c.texts[s:e]), list(c.records[s:e]), keys)


def _records_corpus(records: list[dict], text_field, id_field, name: str, on_empty="error"):
    """Records as a Corpus; when no record has the id field, rows are numbered ("0", "1", ...)."""
    if id_field is not None and not any(id_field in r for r in records):
        id_field = None
    for n, r in enumerate(records):
        if text_field not in r:
            raise InputError(f"{name} item {n}: missing field {text_field!r} (fields: {sorted(r)})")
        if id_field is not None and id_field not in r:
            raise InputError(f"{name} item {n}: missing field {id_field!r}")
    return Corpus.from_records(records, text_field, id_field, name, on_empty)


def as_corpus(
    data,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: str = "error",
    data_dir: str | os.PathLike | None = None,
) -> Corpus:
    """A Corpus from a Corpus, a list of texts or records, a path, a pandas DataFrame, an HF
    `Dataset`, or a Source (read whole: for target sets, which stay in memory). In-memory
    records without an id field are numbered; `on_empty="skip"` drops empty texts (logged)."""
    if isinstance(data, Corpus):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_corpus(data, text_field, id_field, on_empty, data_dir)
    if hasattr(data, "to_corpus"):
        return data.to_corpus()
    module = type(data).__module__
    if module.startswith("pandas") and hasattr(data, "columns"):  # a DataFrame, not a Series
        records = data.to_dict("records")
        return _records_corpus(records, text_field, id_field, "DataFrame", on_empty)
    if module.startswith("datasets") and isinstance(getattr(data, "column_names", None), list):
        records = [dict(r) for r in data]
        return _records_corpus(records, text_field, id_field, "Dataset", on_empty)
    if module.startswith("datasets") and isinstance(getattr(data, "column_names", None), dict):
        raise InputError(f"a DatasetDict holds splits {sorted(data)}: give one, e.g. data['train']")
    if isinstance(data, (list, tuple)):
        if all(isinstance(t, str) for t in data):
            return Corpus.from_texts(list(data))
        if all(isinstance(r, dict) for r in data):
            return _records_corpus(list(data), text_field, id_field, "records", on_empty)
    raise InputError(
        f"cannot read a corpus from {type(data).__name__}: give texts, records, a Corpus, a "
        "path, a pandas DataFrame or an HF Dataset"
    )


def as_source(
    pool,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: str = "error",
    data_dir: str | os.PathLike | None = None,
):
    """A Source (`.parts()`, `.batches(batch_size)`) over any pool form `as_corpus` takes;
    paths and "tfds:"/"hf:" specs are streamed (`jaxsel.data.sources.open_source`)."""
    if hasattr(pool, "batches") and hasattr(pool, "parts"):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        return open_source(pool, text_field, id_field, data_dir, on_empty)
    return CorpusSource(as_corpus(pool, text_field, id_field, on_empty))


def inputs_of(*data, data_dir: str | os.PathLike | None = None) -> list[str | Path]:
    """The files and directories these inputs read (`Source.inputs`: globs expanded, `hf:` and
    other directories, a `tfds:` dataset's directory; URLs as strings), for
    `jaxsel.data.outputs.check_job`; in-memory data reads none."""
    found: list[str | Path] = []
    for d in data:
        if isinstance(d, (str, os.PathLike)):
            d = open_source(d, data_dir=data_dir)
        if hasattr(d, "inputs"):
            found += d.inputs()
    return found


def fingerprint(data, data_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a pool or target: of the bytes of its input files (`Source.fingerprint`), or
    of its texts (length-prefixed UTF-8) when it lives in memory."""
    if isinstance(data, (str, os.PathLike)):
        data = open_source(data, data_dir=data_dir)
    if hasattr(data, "fingerprint"):
        return data.fingerprint()
    digest = hashlib.sha256()
    for text in as_corpus(data).texts:
        b = text.encode("utf-8")
        digest.update(len(b).to_bytes(8, "little") + b)
    return digest.hexdigest()
