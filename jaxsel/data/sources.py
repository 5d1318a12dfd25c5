"""Streaming input: a pool is a list of *parts*, each read as a stream of fixed-size batches.

A part is a unit of work that any process (or Ray task) can read on its own: a byte range of an
uncompressed JSONL file (split at line starts), a whole `.jsonl.gz`, a Parquet row group, a group
of files of a text directory, a shard of a TFDS split, or an arrow file of a Hugging Face dataset
saved to disk. Rows are named by keys `(part index, row within part)`; the lexicographic order of
keys is pool order, the order `read_corpus` reads, so ties in a selection break the same way
whoever reads the pool. A batch never spans two parts, so `(part, batch)` names the same rows on
any process or engine.

Only one batch is held in memory (the duplicate-id check keeps a 64-bit id digest per document
in a temporary file, `IdDigests`). Every record passes the checks of `jaxsel.data.corpus`
(`parse_jsonl_line`, `record_fields`, `check_id`, `keep_text`), so a stream and `read_corpus`
accept and refuse the same input.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import gzip
import hashlib
import json
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxsel.data.corpus import (
    Corpus,
    OnBad,
    check_id,
    keep_text,
    parse_jsonl_line,
    record_fields,
)
from jaxsel.errors import InputError

log = logging.getLogger(__name__)

PART_BYTES = 64 << 20  # byte range of an uncompressed JSONL part
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


class Part(NamedTuple):
    """One unit of work.

    Attributes:
      index: position of the part in the pool (the first key column).
      kind: "jsonl" (byte range), "jsonl.gz", "parquet" (row group), "text" (files of a
        directory), "tfds" (a shard of a split) or "hf" (an arrow file).
      path: the file (the directory for "text", the spec for "tfds").
      start, stop: byte range ("jsonl"), row group [start, start+1) ("parquet"), record
        range of the split ("tfds"); unused (0, 0) otherwise.
      nbytes: size on disk, to balance processes.
      first: number of the first line ("jsonl", 0 = not counted) or of the first row of the part
        within its file/split ("parquet", "tfds", "hf"); ids of records without an id field.
      files: relative paths of the part's files ("text").
    """

    index: int
    kind: str
    path: str
    start: int = 0
    stop: int = 0
    nbytes: int = 0
    first: int = 0
    files: tuple[str, ...] = ()


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

    @property
    def name(self) -> str:
        return (
            self.specs[0] if len(self.specs) == 1 else f"{self.specs[0]} (+{len(self.specs) - 1})"
        )

    @functools.cached_property
    def _parts(self) -> tuple[Part, ...]:
        parts: list[Part] = []
        for spec in self.specs:
            for p in _plan(spec, self):
                parts.append(p._replace(index=len(parts)))
        if not parts:
            raise InputError(f"{self.name}: no documents")
        return tuple(parts)

    def parts(self) -> list[Part]:
        """Every part of the pool, in pool order (computed once; reads no document)."""
        return list(self._parts)

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
        for b in self.batches(4096):
            ids += b.ids
            texts += b.texts
            recs += b.records
        return Corpus(tuple(ids), tuple(texts), tuple(recs), self.name, _checked=True)

    # -------------------------------------------------------------------------- per part

    def _documents(self, part: Part) -> Iterator[tuple[Any, str, dict[str, Any]]]:
        """(id, text, record) of the part's documents that `keep_text` keeps."""
        for ident, text, rec, where in _READERS[part.kind](self, part):
            if keep_text(text, where, self.on_empty):
                yield ident, text, rec

    def locate(self, key: tuple[int, int]) -> tuple[Any, str]:
        """(id, location) of the document with this key: re-reads its part (error path only)."""
        part = self._parts[key[0]]
        row = 0
        for ident, text, _, where in _READERS[part.kind](self, part):
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
      spec: a path (`.jsonl`, `.jsonl.gz`, `.parquet`, a directory of text files, or a glob
        pattern of such), `"tfds:NAME[/CONFIG]:SPLIT"` (an array_record TFDS dataset prepared in
        `data_dir`), `"hf:PATH"` (a `datasets.Dataset` saved with `save_to_disk`), or a list of
        these (read in that order).
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
            matches = sorted(glob.glob(s, recursive=True))
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


def parts_for_process(parts: Sequence[Part], process_index: int, process_count: int) -> list[Part]:
    """The parts process `process_index` of `process_count` reads: contiguous runs of parts of
    about equal bytes, each part to exactly one process, the same on every process."""
    if not 0 <= process_index < process_count:
        raise InputError(f"process index {process_index} is not in [0, {process_count})")
    n = len(parts)
    if n < process_count:
        raise InputError(
            f"the input has {n} part(s) for {process_count} processes and cannot be split "
            "further (a .jsonl.gz or an arrow file is one part); give more files"
        )
    cum = np.cumsum([max(p.nbytes, 1) for p in parts])
    # Cut before the first part whose cumulative size reaches q/P of the total, keeping at least
    # one part on each side of every cut.
    cuts = [0]
    for q in range(1, process_count):
        c = int(np.searchsorted(cum, cum[-1] * q / process_count, side="left")) + 1
        cuts.append(min(max(c, cuts[-1] + 1), n - (process_count - q)))
    cuts.append(n)
    return list(parts[cuts[process_index] : cuts[process_index + 1]])


# ------------------------------------------------------------------------------ planning


def _is_glob(s: str) -> bool:
    return (
        not s.startswith(("tfds:", "hf:")) and any(c in s for c in "*?[") and not Path(s).exists()
    )


def _plan(spec: str, src: Source) -> list[Part]:
    if spec.startswith("tfds:"):
        return _plan_tfds(spec, src)
    if spec.startswith("hf:"):
        return _plan_hf(spec)
    path = Path(spec)
    if path.is_dir():
        return _plan_text_dir(path, src.files_per_part)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return _plan_parquet(path)
    if path.suffix == ".gz":
        return [Part(0, "jsonl.gz", spec, nbytes=path.stat().st_size, first=1)]
    return _plan_jsonl(path, src.part_bytes, count_lines=src.id_field is None)


def _plan_jsonl(path: Path, part_bytes: int, count_lines: bool) -> list[Part]:
    """Byte ranges of about `part_bytes`, each starting at a line start. Only the lines at the
    cuts are read, unless ids are line numbers (then one pass counts each range's lines)."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for target in range(part_bytes, size, part_bytes):
            if target <= cuts[-1]:
                continue
            f.seek(target - 1)
            f.readline()  # to the start of the first line beginning at or after `target`
            if f.tell() < size and f.tell() > cuts[-1]:
                cuts.append(f.tell())
    cuts.append(size)
    firsts = [0] * (len(cuts) - 1)
    if count_lines:
        firsts[0] = 1
        with open(path, "rb") as f:
            for i in range(1, len(firsts)):
                firsts[i] = firsts[i - 1] + _count_newlines(f, cuts[i] - cuts[i - 1])
    return [
        Part(0, "jsonl", str(path), s, e, e - s, first)
        for s, e, first in zip(cuts[:-1], cuts[1:], firsts, strict=True)
        if e > s
    ]


def _count_newlines(f, nbytes: int) -> int:
    n = 0
    while nbytes > 0:
        block = f.read(min(nbytes, 1 << 24))
        if not block:
            break
        n += block.count(b"\n")
        nbytes -= len(block)
    return n


def _plan_parquet(path: Path) -> list[Part]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises many types for a bad file
        raise InputError(f"{path}: unreadable Parquet ({e})") from None
    parts, row = [], 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        parts.append(Part(0, "parquet", str(path), g, g + 1, rg.total_byte_size, row))
        row += rg.num_rows
    return parts


def _plan_text_dir(root: Path, files_per_part: int) -> list[Part]:
    files = sorted(q for q in root.glob("**/*") if q.is_file())  # as read_text_dir
    parts = []
    for s in range(0, len(files), files_per_part):
        group = files[s : s + files_per_part]
        parts.append(
            Part(
                0,
                "text",
                str(root),
                nbytes=sum(q.stat().st_size for q in group),
                files=tuple(q.relative_to(root).as_posix() for q in group),
            )
        )
    return parts


def _parse_tfds(spec: str) -> tuple[str, str]:
    body = spec[len("tfds:") :]
    name, sep, split = body.rpartition(":")
    if not sep or not name or not split:
        raise InputError(f"{spec}: expected tfds:NAME[/CONFIG]:SPLIT")
    return name, split


@functools.cache
def _tfds_builder(name: str, data_dir: str | None):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise InputError(
            "reading TFDS datasets needs tensorflow-datasets: pip install 'jaxsel[tfds]'"
        ) from None
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception:  # DatasetNotFoundError, or a registered dataset whose files are absent
        prepared = False
    if not prepared:
        raise InputError(
            f"tfds:{name}: not prepared in {where} (prepare it there first, e.g. "
            f"`tfds build {name} --data_dir {where} --file_format array_record`)"
        )
    return builder


def _plan_tfds(spec: str, src: Source) -> list[Part]:
    name, split = _parse_tfds(spec)
    builder = _tfds_builder(name, src.data_dir)
    if split not in builder.info.splits:
        raise InputError(f"{spec}: no split {split!r} (splits: {', '.join(builder.info.splits)})")
    fmt = builder.info.file_format
    if fmt is None or fmt.value != "array_record":
        raise InputError(
            f"{spec}: prepared as {fmt.value if fmt else 'an unknown format'} in "
            f"{builder.data_dir}; streaming reads array_record (re-prepare with "
            "`--file_format array_record`)"
        )
    parts, first = [], 0
    for fi in builder.info.splits[split].file_instructions:
        parts.append(
            Part(0, "tfds", spec, first, first + fi.take, os.path.getsize(fi.filename), first)
        )
        first += fi.take
    return parts


def _hf_files(root: Path, spec: str) -> list[Path]:
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        raise InputError(
            f"{spec}: a DatasetDict; choose a split: " + ", ".join(f"hf:{root / s}" for s in splits)
        )
    state = root / "state.json"
    if not state.is_file():
        raise InputError(f"{spec}: not a dataset saved with Dataset.save_to_disk (no {state})")
    try:
        files = [root / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{state}: unreadable ({e})") from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{spec}: {missing[0]} listed in state.json is missing")
    return files


def _plan_hf(spec: str) -> list[Part]:
    import pyarrow as pa

    parts, first = [], 0
    for f in _hf_files(Path(spec[len("hf:") :]), spec):
        try:
            with pa.memory_map(str(f)) as m:
                rows = sum(b.num_rows for b in pa.ipc.open_stream(m))
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{f}: unreadable arrow file ({e})") from None
        parts.append(Part(0, "hf", str(f), nbytes=f.stat().st_size, first=first))
        first += rows
    return parts


# ------------------------------------------------------------------------------- reading


class _Line:
    """`path:line` of a line in a byte range; counting the lines before the range is paid only
    when the location is printed (an error)."""

    __slots__ = ("part", "rel")

    def __init__(self, part: Part, rel: int):
        self.part, self.rel = part, rel

    def __str__(self) -> str:
        first = self.part.first or _first_line(self.part.path, self.part.start)
        return f"{self.part.path}:{first + self.rel}"


@functools.lru_cache(maxsize=64)
def _first_line(path: str, start: int) -> int:
    with open(path, "rb") as f:
        return 1 + _count_newlines(f, start)


def _read_jsonl(src: Source, part: Part):
    with open(part.path, "rb") as f:
        f.seek(part.start)
        pos = part.start
        for rel, raw in enumerate(f):
            if pos >= part.stop:
                break
            pos += len(raw)
            yield from _jsonl_record(src, part, rel, raw)


def _read_jsonl_gz(src: Source, part: Part):
    rel = -1
    try:
        with gzip.open(part.path, "rb") as f:
            for rel, raw in enumerate(f):
                yield from _jsonl_record(src, part, rel, raw)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{part.path}: unreadable after line {rel + 1} ({e})") from None


def _jsonl_record(src: Source, part: Part, rel: int, raw: bytes):
    where = _Line(part, rel)
    rec = parse_jsonl_line(raw, where, first=part.start == 0 and rel == 0)
    if rec is not None:
        ident, text = record_fields(rec, where, src.text_field, src.id_field, str(part.first + rel))
        yield ident, text, rec, where


def _read_parquet(src: Source, part: Part):
    import pyarrow.parquet as pq

    g = part.start
    try:
        pf = pq.ParquetFile(part.path)
        names = pf.schema_arrow.names
    except Exception as e:  # pyarrow raises many types for a bad file
        raise InputError(f"{part.path}: unreadable Parquet ({e})") from None
    for field in (src.text_field, src.id_field):
        if field is not None and field not in names:
            raise InputError(f"{part.path}: missing column {field!r} (columns: {sorted(names)})")
    row = part.first
    try:
        for rb in pf.iter_batches(batch_size=4096, row_groups=[g]):
            for rec in rb.to_pylist():
                where = f"{part.path}: row group {g}, row {row}"
                ident = str(row) if src.id_field is None else check_id(rec[src.id_field], where)
                yield ident, rec[src.text_field], rec, where
                row += 1
    except OSError as e:
        raise InputError(f"{part.path}: row group {g} unreadable ({e})") from None


def _read_text(src: Source, part: Part):
    root = Path(part.path)
    for rel in part.files:
        p = root / rel
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            if src.on_empty == "error":
                raise InputError(f"{p}: not valid UTF-8 (byte {e.start})") from None
            log.warning("%s: skipping non-UTF-8 file", p)
            continue
        yield rel, text, {"id": rel, "text": text}, str(p)


def _plain(value: Any, where: str) -> Any:
    """A TFDS value as JSON-able Python: bytes (Text features) decoded, numpy unwrapped."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{where}: not valid UTF-8 (byte {e.start})") from None
    if isinstance(value, np.ndarray):
        return [_plain(v, where) for v in value] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v, where) for k, v in value.items()}
    return value


def _read_tfds(src: Source, part: Part):
    name, split = _parse_tfds(part.path)
    data = _tfds_builder(name, src.data_dir).as_data_source(split=split)
    for s in range(part.start, part.stop, 1024):
        chunk = range(s, min(s + 1024, part.stop))
        for i, raw in zip(chunk, data.__getitems__(list(chunk)), strict=True):
            where = f"{part.path}: record {i}"
            rec = {k: _plain(v, f"{where}, field {k!r}") for k, v in raw.items()}
            ident, text = record_fields(rec, where, src.text_field, src.id_field, str(i))
            yield ident, text, rec, where


def _read_hf(src: Source, part: Part):
    import pyarrow as pa

    row = part.first
    with pa.memory_map(part.path) as m:
        reader = pa.ipc.open_stream(m)
        names = reader.schema.names
        for field in (src.text_field, src.id_field):
            if field is not None and field not in names:
                raise InputError(
                    f"{part.path}: missing column {field!r} (columns: {sorted(names)})"
                )
        for rb in reader:
            for rec in rb.to_pylist():
                where = f"{part.path}: row {row}"
                ident = str(row) if src.id_field is None else check_id(rec[src.id_field], where)
                yield ident, rec[src.text_field], rec, where
                row += 1


_ID_ROW = np.dtype([("d", np.uint64), ("k", np.int64, (2,))])

_READERS = {
    "jsonl": _read_jsonl,
    "jsonl.gz": _read_jsonl_gz,
    "parquet": _read_parquet,
    "text": _read_text,
    "tfds": _read_tfds,
    "hf": _read_hf,
}


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
