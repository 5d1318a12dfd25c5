"""Streaming input: a pool is a list of *parts*, each read as a stream of fixed-size batches.

The parts of each input are planned, and read, by its format (`jaxsel.data.formats`). Rows are
named by keys `(part index, row within part)`; the lexicographic order of keys is pool order, the
order `read_corpus` reads, so ties in a selection break the same way whoever reads the pool. A
batch never spans two parts, so `(part, batch)` names the same rows on any process or engine.

Only one batch is held in memory (the duplicate-id check keeps a 64-bit id digest per document
in a temporary file, `IdDigests`). Every text passes `keep_text` (`jaxsel.data.records`) here,
whatever its format, so a stream and `read_corpus` accept and refuse the same input.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxsel.data import fs
from jaxsel.data.formats import FORMATS, Format, Part, format_of
from jaxsel.data.records import Corpus, OnBad, keep_text
from jaxsel.errors import InputError

# Byte range of an uncompressed JSONL part: the unit of work of a process or a Ray task, so a
# 1 GB file keeps 128 hosts busy; fixed (not derived from the process count), so the shard
# names of a job are the same on any number of processes and a job resumes across counts.
PART_BYTES = 8 << 20
READ_BATCH = 4096  # documents per batch for passes that only read (counting, output)
FILES_PER_PART = 256  # files of a text directory per part


class Batch(NamedTuple):
    """Consecutive documents of one part.

    Attributes:
      ids: id values as they are in the input (a position when there is no id field).
      texts: the document texts.
      records: the full input records (every field), for the output pass.
      keys: int64 [n, 2] (part index, row within part); their lexicographic order is pool order.
    """

    ids: list
    texts: list[str]
    records: list[dict[str, Any]]
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass(frozen=True)
class Source:
    """A pool as parts; see `open_source`. Picklable: workers rebuild nothing but the parts."""

    specs: tuple[str, ...]
    text_field: str = "text"
    id_field: str | None = "id"
    data_dir: str | None = None
    on_empty: OnBad = "error"
    part_bytes: int = PART_BYTES
    files_per_part: int = FILES_PER_PART
    kind: str | None = None  # read every spec as this format (a `FORMATS` key), not by its form

    @property
    def name(self) -> str:
        return (
            self.specs[0] if len(self.specs) == 1 else f"{self.specs[0]} (+{len(self.specs) - 1})"
        )

    @functools.cached_property
    def _parts(self) -> tuple[Part, ...]:
        parts: list[Part] = []
        for spec in self.specs:
            with fs.guarded(spec):
                planned = self._format(spec).plan(spec, self)
            for p in planned:
                parts.append(p._replace(index=len(parts)))
        if not parts:
            raise InputError(f"{self.name}: no documents")
        return tuple(parts)

    def parts(self) -> list[Part]:
        """Every part of the pool, in pool order (computed once; reads no document)."""
        return list(self._parts)

    def inputs(self) -> list[str | Path]:
        """The files and directories the pool is read from, in order, once each: globs
        expanded, a directory (of text files or shards), an `hf:` dataset's directory, a
        `tfds:` dataset's prepared directory; a URL stays a string."""
        found = (p for spec in self.specs for p in self._format(spec).inputs(spec, self))
        return list(dict.fromkeys(found))

    def fingerprint(self) -> str:
        """sha256 of the bytes the pool is read from (`fingerprint_files` of `inputs`)."""
        return fingerprint_files(self.inputs())

    def batches(
        self, batch_size: int, parts: Sequence[Part] | None = None, check_ids: bool = True
    ) -> Iterator[Batch]:
        """Batches of at most `batch_size` documents of `parts` (default: all), in pool order.

        Duplicate ids among the documents read raise after the last batch (a stream cannot know
        earlier; `check_ids=False` leaves that to a caller that sees more, e.g. every process's
        `IdDigests`); so does an empty pool when all parts are read.
        """
        if batch_size <= 0:
            raise InputError(f"batch size must be positive, got {batch_size}")
        whole = parts is None
        seen = IdDigests()
        for part in self._parts if whole else parts:
            ids, texts, recs, rows = [], [], [], []
            for row, (ident, text, rec) in enumerate(self._documents(part)):
                ids.append(ident)
                texts.append(text)
                recs.append(rec)
                rows.append(row)
                if len(texts) == batch_size:
                    yield seen.add(_batch(part, ids, texts, recs, rows), check_ids)
                    ids, texts, recs, rows = [], [], [], []
            if texts:
                yield seen.add(_batch(part, ids, texts, recs, rows), check_ids)
        if whole and not seen.count:
            raise InputError(f"{self.name}: no documents")
        if check_ids:
            seen.verify(self.locate)

    def to_corpus(self) -> Corpus:
        """The whole pool in memory."""
        ids, texts, recs = [], [], []
        for b in self.batches(READ_BATCH):
            ids += b.ids
            texts += b.texts
            recs += b.records
        return Corpus(tuple(ids), tuple(texts), tuple(recs), self.name, _checked=True)

    # -------------------------------------------------------------------------- per part

    def _format(self, spec: str) -> Format:
        return format_of(spec) if self.kind is None else FORMATS[self.kind]

    def _documents(self, part: Part) -> Iterator[tuple[Any, str, dict[str, Any]]]:
        """(id, text, record) of the part's documents that `keep_text` keeps."""
        with fs.guarded(part.path):
            for ident, text, rec, where in FORMATS[part.kind].read(part, self):
                if keep_text(text, where, self.on_empty):
                    yield ident, text, rec

    def locate(self, key: tuple[int, int]) -> tuple[Any, str]:
        """(id, location) of the document with this key: re-reads its part (error path only)."""
        part = self._parts[key[0]]
        row = 0
        for ident, text, _, where in FORMATS[part.kind].read(part, self):
            if text.strip():
                if row == key[1]:
                    return ident, str(where)
                row += 1
        raise AssertionError(f"no row {key} in {part}")


def open_source(
    spec: str | os.PathLike | Sequence[str | os.PathLike],
    text_field: str = "text",
    id_field: str | None = "id",
    data_dir: str | os.PathLike | None = None,
    on_empty: OnBad = "error",
    part_bytes: int = PART_BYTES,
    files_per_part: int = FILES_PER_PART,
) -> Source:
    """A pool to stream.

    Args:
      spec: a path or a URL (`jaxsel.data.fs`: `file://`, `memory://`, `s3://`, `gs://`, ...)
        of a `.jsonl[.gz|.zst]` or `.parquet` file, a directory (of text files, or of Parquet
        or JSON Lines shards), or a glob pattern of such; `"tfds:NAME[/CONFIG]:SPLIT"` (an
        array_record TFDS dataset prepared in `data_dir`); `"hf:PATH[:SPLIT]"` (a
        `datasets.Dataset` saved with `save_to_disk`, or a Hub repository layout with Parquet
        shards under `data/`; `"hf://datasets/ORG/NAME"` on the Hub); or a list of these
        (read in that order).
      text_field, id_field: record fields holding the text and the id (None: ids are positions,
        as in `read_corpus`).
      data_dir: TFDS data directory (default: TFDS's own, `$TFDS_DATA_DIR` or
        ~/tensorflow_datasets).
      on_empty: "error" or "skip" (logged) for empty texts (and non-UTF-8 files of a directory).
      part_bytes: size of the byte ranges an uncompressed JSONL file is split into.
      files_per_part: files of a text directory per part.
    """
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not specs:
        raise InputError("no input given")
    if part_bytes <= 0 or files_per_part <= 0:
        raise InputError("part_bytes and files_per_part must be positive")
    expanded: list[str] = []
    for s in map(str, specs):
        if _is_glob(s):
            with fs.guarded(s):
                matches = fs.glob(s) if fs.is_url(s) else sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError(f"{s}: no file matches")
            expanded += matches
        else:
            expanded.append(s)
    return Source(
        tuple(expanded),
        text_field,
        id_field,
        None if data_dir is None else str(data_dir),
        on_empty,
        part_bytes,
        files_per_part,
    )


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> str:
    """sha256 over the bytes of these files and of every file below these directories, files
    in sorted path order (local paths first, then URLs)."""
    files: set[Path] = set()
    urls: set[str] = set()
    for p in paths:
        if fs.is_url(p):
            with fs.guarded(p):
                urls |= {fs.join(p, rel) for rel, _ in fs.files(p)} if fs.is_dir(p) else {p}
            continue
        p = Path(p)
        files |= {q for q in p.rglob("*") if q.is_file()} if p.is_dir() else {p}
    digest = hashlib.sha256()
    for f in [*sorted(files), *sorted(urls)]:
        with fs.guarded(str(f)), fs.open_input(str(f)) as data:
            while block := data.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def parts_for_process(parts: Sequence[Part], process_index: int, process_count: int) -> list[Part]:
    """The parts process `process_index` of `process_count` reads: contiguous runs of parts of
    about equal bytes, each part to exactly one process, the same on every process. With fewer
    parts than processes each part has a process of its own and the others read nothing (they
    still take part in the job's gathers, with no rows)."""
    if not 0 <= process_index < process_count:
        raise InputError(f"process index {process_index} is not in [0, {process_count})")
    n = len(parts)
    if n <= process_count:
        return list(parts[process_index : process_index + 1])
    cum = np.cumsum([max(p.nbytes, 1) for p in parts])
    # Cut before the first part whose cumulative size reaches q/P of the total, keeping at least
    # one part on each side of every cut.
    cuts = [0]
    for q in range(1, process_count):
        c = int(np.searchsorted(cum, cum[-1] * q / process_count, side="left")) + 1
        cuts.append(min(max(c, cuts[-1] + 1), n - (process_count - q)))
    cuts.append(n)
    return list(parts[cuts[process_index] : cuts[process_index + 1]])


def _is_glob(s: str) -> bool:
    if s.startswith("tfds:") or (s.startswith("hf:") and not s.startswith("hf://")):
        return False
    if not any(c in s for c in "*?["):
        return False
    return fs.is_url(s) or not Path(s).exists()


_ID_ROW = np.dtype([("d", np.uint64), ("k", np.int64, (2,))])


def _batch(part: Part, ids, texts, recs, rows) -> Batch:
    keys = np.empty((len(rows), 2), np.int64)
    keys[:, 0] = part.index
    keys[:, 1] = rows
    return Batch(ids, texts, recs, keys)


def _id_bytes(ident: Any) -> bytes:
    """Bytes equal exactly when ids are equal in Python (as `read_corpus` compares them): a
    string differs from a number, 1 == 1.0."""
    if isinstance(ident, str):
        return b"s" + ident.encode("utf-8", "surrogatepass")
    if isinstance(ident, float) and ident.is_integer():
        ident = int(ident)
    return b"n" + repr(ident).encode()


ID_RUN = 1 << 18  # digests sorted in memory at once by `IdDigests` (24 bytes each)


class IdDigests:
    """64-bit digests of the ids read, checked for duplicates at the end of a stream in memory
    flat in the number of documents: every `run_size` documents, the run's (digest, key) rows
    are sorted by digest and appended to a temporary file; the check walks the digest space in
    ranges of about `run_size` rows of all runs (of every process, with a `gather`), so only
    rows whose digest repeats are kept, and a digest collision is confirmed against the ids."""

    def __init__(self, run_size: int | None = None):
        run_size = ID_RUN if run_size is None else run_size
        if run_size <= 0:
            raise ValueError(f"run_size must be positive, got {run_size}")
        self.run_size = run_size
        self.digests: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.pending = 0
        self.runs: list[tuple[int, int]] = []  # (first row in the file, rows) of each run
        self.file = None
        self.count = 0

    def add(self, batch: Batch, digest: bool = True) -> Batch:
        if digest:
            d = [hashlib.blake2b(_id_bytes(i), digest_size=8).digest() for i in batch.ids]
            self.digests.append(np.frombuffer(b"".join(d), np.uint64))
            self.keys.append(batch.keys)
            self.pending += len(batch)
            if self.pending >= self.run_size:
                self._spill()
        self.count += len(batch)
        return batch

    def _spill(self) -> None:
        """Sorts the rows held and appends them to the temporary file as one run."""
        if not self.pending:
            return
        d, k = np.concatenate(self.digests), np.concatenate(self.keys)
        order = np.argsort(d)
        rows = np.empty(len(d), _ID_ROW)
        rows["d"] = d[order]
        rows["k"] = k[order]
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="jaxsel-ids-")
        self.runs.append((sum(n for _, n in self.runs), len(rows)))
        self.file.seek(0, os.SEEK_END)
        self.file.write(rows.tobytes())
        self.file.flush()
        self.digests, self.keys, self.pending = [], [], 0

    def repeated(self, gather=None) -> tuple[np.ndarray, np.ndarray]:
        """(digests uint64 [m], keys int64 [m, 2]) of the rows whose digest occurs more than
        once among the rows added (`gather(rows) -> every process's rows`, the same calls on
        every process: among all processes' rows). Closes the temporary file."""
        try:
            self._spill()
            total = sum(n for _, n in self.runs)
            if gather is not None:
                total = int(gather(np.array([total], np.int64)).sum())
            ranges = max(1, -(-total // self.run_size))
            bounds = np.array([(i << 64) // ranges for i in range(ranges)], np.uint64)
            cuts = [  # each run's first row in each range (reads one run at a time)
                (first, np.append(np.searchsorted(self._rows(first, n)["d"], bounds), n))
                for first, n in self.runs
            ]
            found = [np.zeros(0, _ID_ROW)]
            for r in range(ranges):
                parts = [self._rows(f + c[r], c[r + 1] - c[r]) for f, c in cuts]
                rows = np.concatenate(parts) if parts else np.zeros(0, _ID_ROW)
                if gather is not None:
                    rows = gather(rows)
                d = np.sort(rows["d"])
                twice = np.unique(d[1:][d[1:] == d[:-1]])
                if len(twice):
                    found.append(rows[np.isin(rows["d"], twice)])
            found = np.concatenate(found)
            return found["d"].copy(), found["k"].copy()
        finally:
            if self.file is not None:
                self.file.close()
                self.file = None
            self.runs = []

    def _rows(self, first: int, n: int) -> np.ndarray:
        """Rows first..first+n of the temporary file (read, not mapped: a mapping's pages
        would count in the resident set)."""
        size = _ID_ROW.itemsize
        return np.frombuffer(os.pread(self.file.fileno(), n * size, first * size), _ID_ROW)

    def verify(self, locate, gather=None) -> None:
        """Raises for the earliest document (pool order) whose id an earlier one has (among
        every process's documents, with a `gather`; see `repeated`)."""
        self.check(*self.repeated(gather), locate)

    @staticmethod
    def check(digests: np.ndarray, keys: np.ndarray, locate) -> None:
        """Raises for the earliest document (pool order) whose id an earlier one has;
        `locate(key) -> (id, where)` re-reads a document."""
        order = np.lexsort((keys[:, 1], keys[:, 0], digests))  # by digest, then pool order
        ds = digests[order]
        best = None
        for j in np.flatnonzero(ds[1:] == ds[:-1]) + 1:
            later = tuple(keys[order[j]].tolist())
            if best is not None and later >= best[0]:
                continue
            ident, where = locate(later)
            for g in order[np.flatnonzero(ds == ds[j])]:  # same digest, in pool order
                k = tuple(keys[g].tolist())
                if k >= later:
                    break
                other, first = locate(k)
                if other == ident:
                    best = (later, f"{where}: duplicate id {ident!r} (first seen at {first})")
                    break
        if best is not None:
            raise InputError(best[1])
