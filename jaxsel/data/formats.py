"""Input formats, one class each: `plan` cuts a spec into parts, `read` yields a part's documents.

A part is a unit of work that any process (or Ray task) can read on its own: a byte range of an
uncompressed JSONL file (split at line starts), a whole `.jsonl.gz` or `.jsonl.zst`, a Parquet
row group, a group of files of a text directory, a shard of a TFDS split, or an arrow file of a
Hugging Face dataset saved to disk. `read` yields (id, text, record, location) for every record
of a part, each record checked (`jaxsel.data.records`: `parse_jsonl_line`, `record_fields`,
`check_id`); keeping or refusing a text (`keep_text`) is the reader's, the same for every format.
`format_of` is the one place a spec's form picks its format.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from jaxsel.data.records import OnBad, check_id, parse_jsonl_line, record_fields
from jaxsel.errors import InputError

log = logging.getLogger(__name__)

Doc = tuple[Any, Any, dict[str, Any], object]  # (id, text, record, location)


class Part(NamedTuple):
    """One unit of work.

    Attributes:
      index: position of the part in the pool (the first key column).
      kind: the format that reads it (a `FORMATS` key): "jsonl" (byte range), "jsonl.gz",
        "jsonl.zst", "parquet" (row group), "text" (files of a directory), "tfds" (a shard of a
        split) or "hf" (an arrow file).
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


class Options(Protocol):
    """What a format reads with (a `jaxsel.data.sources.Source` has these)."""

    text_field: str
    id_field: str | None
    data_dir: str | None
    on_empty: OnBad
    part_bytes: int
    files_per_part: int


class Format:
    """One input format."""

    kind: str

    def plan(self, spec: str, opts: Options) -> list[Part]:
        """The parts of `spec`, in pool order (index 0: the source numbers them)."""
        raise NotImplementedError

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        """(id, text, record, location) of every record of `part`, in order."""
        raise NotImplementedError

    def inputs(self, spec: str, opts: Options) -> list[Path]:
        """The files or directories `spec` reads."""
        return [Path(spec)]


def _existing_file(spec: str | os.PathLike) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


# ---------------------------------------------------------------------------- JSON Lines


class Jsonl(Format):
    """JSON Lines, uncompressed: parts are byte ranges of about `part_bytes`, each starting at a
    line start. Only the lines at the cuts are read to plan, unless ids are line numbers (then
    one pass counts each range's lines)."""

    kind = "jsonl"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        path = _existing_file(spec)
        size = path.stat().st_size
        cuts = [0]
        with open(path, "rb") as f:
            for target in range(opts.part_bytes, size, opts.part_bytes):
                if target <= cuts[-1]:
                    continue
                f.seek(target - 1)
                f.readline()  # to the start of the first line beginning at or after `target`
                if f.tell() < size and f.tell() > cuts[-1]:
                    cuts.append(f.tell())
        cuts.append(size)
        firsts = [0] * (len(cuts) - 1)
        if opts.id_field is None:
            firsts[0] = 1
            with open(path, "rb") as f:
                for i in range(1, len(firsts)):
                    firsts[i] = firsts[i - 1] + _count_newlines(f, cuts[i] - cuts[i - 1])
        return [
            Part(0, self.kind, str(path), s, e, e - s, first)
            for s, e, first in zip(cuts[:-1], cuts[1:], firsts, strict=True)
            if e > s
        ]

    def records(self, part: Part) -> Iterator[tuple[_Line, dict[str, Any]]]:
        """(location, record) of every non-blank line of the part."""
        with open(part.path, "rb") as f:
            f.seek(part.start)
            pos = part.start
            for rel, raw in enumerate(f):
                if pos >= part.stop:
                    break
                pos += len(raw)
                yield from _parsed(part, rel, raw)

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        for where, rec in self.records(part):
            default_id = str(part.first + where.rel)
            ident, text = record_fields(rec, where, opts.text_field, opts.id_field, default_id)
            yield ident, text, rec, where


class JsonlGz(Jsonl):
    """JSON Lines, gzip-compressed: the whole file is one part (a stream cannot be entered in
    the middle); a damaged stream is one error naming the file and the last line read."""

    kind = "jsonl.gz"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        path = _existing_file(spec)
        return [Part(0, self.kind, spec, nbytes=path.stat().st_size, first=1)]

    def records(self, part: Part) -> Iterator[tuple[_Line, dict[str, Any]]]:
        rel = -1
        try:
            with gzip.open(part.path, "rb") as f:
                for rel, raw in enumerate(f):
                    yield from _parsed(part, rel, raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise InputError(f"{part.path}: unreadable after line {rel + 1} ({e})") from None


class JsonlZst(JsonlGz):
    """JSON Lines, zstd-compressed: like `.jsonl.gz`, the whole file is one part; a truncated
    or damaged stream is one error naming the file and the last line read."""

    kind = "jsonl.zst"

    def records(self, part: Part) -> Iterator[tuple[_Line, dict[str, Any]]]:
        import zstandard

        rel, pending = -1, b""
        try:
            with open(part.path, "rb") as f:
                for block in _zstd_blocks(f):
                    *lines, pending = (pending + block).split(b"\n")
                    for line in lines:
                        rel += 1
                        yield from _parsed(part, rel, line + b"\n")
            if pending:
                yield from _parsed(part, rel + 1, pending)
        except (OSError, zstandard.ZstdError) as e:
            raise InputError(f"{part.path}: unreadable after line {rel + 1} ({e})") from None


def _zstd_blocks(f) -> Iterator[bytes]:
    """The decompressed bytes of the zstd frames in `f`, one after another; a frame cut short
    raises (zstandard's stream reader would end quietly)."""
    import zstandard

    d, ended = zstandard.ZstdDecompressor().decompressobj(), True
    while data := f.read(1 << 20):
        while data:
            ended = False
            yield d.decompress(data)
            data = b""
            if d.eof:  # a frame ended: the rest of the data starts the next one
                data, ended = d.unused_data, True
                d = zstandard.ZstdDecompressor().decompressobj()
    if not ended:
        raise zstandard.ZstdError("the stream ends inside a frame (truncated)")


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


def _count_newlines(f, nbytes: int) -> int:
    n = 0
    while nbytes > 0:
        block = f.read(min(nbytes, 1 << 24))
        if not block:
            break
        n += block.count(b"\n")
        nbytes -= len(block)
    return n


def _parsed(part: Part, rel: int, raw: bytes) -> Iterator[tuple[_Line, dict[str, Any]]]:
    where = _Line(part, rel)
    rec = parse_jsonl_line(raw, where, first=part.start == 0 and rel == 0)
    if rec is not None:
        yield where, rec


def jsonl_kind(path: str | os.PathLike) -> str:
    """The JSON Lines format of a file: "jsonl.gz" for *.gz, "jsonl.zst" for *.zst, "jsonl"
    otherwise."""
    return {".gz": JsonlGz.kind, ".zst": JsonlZst.kind}.get(Path(path).suffix, Jsonl.kind)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Streams a whole JSON Lines file (optionally .gz) as (line number, "file:line", record),
    blank lines skipped, any record (no field is required)."""
    path = _existing_file(path)
    kind = jsonl_kind(path)
    part = Part(0, kind, str(path), 0, path.stat().st_size, first=1)
    for where, rec in FORMATS[kind].records(part):
        yield 1 + where.rel, str(where), rec


# ------------------------------------------------------------- Parquet and arrow tables


class Parquet(Format):
    """A Parquet file; a part is a row group."""

    kind = "parquet"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        import pyarrow.parquet as pq

        path = _existing_file(spec)
        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as e:  # pyarrow raises many types for a bad file
            raise InputError(f"{path}: unreadable Parquet ({_one_line(e)})") from None
        parts, row = [], 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            parts.append(Part(0, self.kind, str(path), g, g + 1, rg.total_byte_size, row))
            row += rg.num_rows
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        import pyarrow.parquet as pq

        g = part.start
        try:
            pf = pq.ParquetFile(part.path)
            names = pf.schema_arrow.names
        except Exception as e:  # pyarrow raises many types for a bad file
            raise InputError(f"{part.path}: unreadable Parquet ({_one_line(e)})") from None
        _check_columns(part.path, names, opts)
        row = part.first
        try:
            for rb in pf.iter_batches(batch_size=4096, row_groups=[g]):
                for rec in rb.to_pylist():
                    yield _row_doc(rec, row, f"{part.path}: row group {g}, row {row}", opts)
                    row += 1
        except (OSError, UnicodeDecodeError, ValueError) as e:  # damaged pages, bad UTF-8
            raise InputError(
                f"{part.path}: row group {g}, near row {row} unreadable ({_one_line(e)})"
            ) from None


def _one_line(e: Exception) -> str:
    """A library's message on one line (pyarrow's and array_record's span lines)."""
    return " ".join(str(e).split())[:300]


class HfDisk(Format):
    """A Hugging Face `datasets.Dataset` saved with `save_to_disk` ("hf:PATH"); a part is one of
    its arrow files."""

    kind = "hf"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        import pyarrow as pa

        parts, first = [], 0
        for f in self._files(spec):
            try:
                with pa.memory_map(str(f)) as m:
                    rows = sum(b.num_rows for b in pa.ipc.open_stream(m))
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"{f}: unreadable arrow file ({_one_line(e)})") from None
            parts.append(Part(0, self.kind, str(f), nbytes=f.stat().st_size, first=first))
            first += rows
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        import pyarrow as pa

        row = part.first
        with pa.memory_map(part.path) as m:
            reader = pa.ipc.open_stream(m)
            _check_columns(part.path, reader.schema.names, opts)
            for rb in reader:
                for rec in rb.to_pylist():
                    yield _row_doc(rec, row, f"{part.path}: row {row}", opts)
                    row += 1

    def inputs(self, spec: str, opts: Options) -> list[Path]:
        return [Path(spec[len("hf:") :])]

    def _files(self, spec: str) -> list[Path]:
        root = Path(spec[len("hf:") :])
        if (root / "dataset_dict.json").is_file():
            splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
            raise InputError(
                f"{spec}: a DatasetDict; choose a split: "
                + ", ".join(f"hf:{root / s}" for s in splits)
            )
        state = root / "state.json"
        if not state.is_file():
            raise InputError(f"{spec}: not a dataset saved with Dataset.save_to_disk (no {state})")
        try:
            files = [root / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{state}: unreadable ({_one_line(e)})") from None
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise InputError(f"{spec}: {missing[0]} listed in state.json is missing")
        return files


def _check_columns(path: str, names: Sequence[str], opts: Options) -> None:
    for field in (opts.text_field, opts.id_field):
        if field is not None and field not in names:
            raise InputError(f"{path}: missing column {field!r} (columns: {sorted(names)})")


def _row_doc(rec: dict[str, Any], row: int, where: str, opts: Options) -> Doc:
    ident = str(row) if opts.id_field is None else check_id(rec[opts.id_field], where)
    return ident, rec[opts.text_field], rec, where


# ------------------------------------------------------------------------ text directory


class TextDir(Format):
    """Every file under a directory (sorted, recursive) is one document, its id the relative
    path; a part is `files_per_part` files. A non-UTF-8 file is an error, or skipped (logged)
    with `on_empty="skip"`."""

    kind = "text"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        root = Path(spec)
        if not root.is_dir():
            raise InputError(f"{root}: not a directory")
        files = sorted(q for q in root.glob("**/*") if q.is_file())
        parts = []
        for s in range(0, len(files), opts.files_per_part):
            group = files[s : s + opts.files_per_part]
            parts.append(
                Part(
                    0,
                    self.kind,
                    str(root),
                    nbytes=sum(q.stat().st_size for q in group),
                    files=tuple(q.relative_to(root).as_posix() for q in group),
                )
            )
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        root = Path(part.path)
        for rel in part.files:
            p = root / rel
            try:
                text = p.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                if opts.on_empty == "error":
                    raise InputError(f"{p}: not valid UTF-8 (byte {e.start})") from None
                log.warning("%s: skipping non-UTF-8 file", p)
                continue
            yield rel, text, {"id": rel, "text": text}, str(p)


# ----------------------------------------------------------------------------------- TFDS


class Tfds(Format):
    """A TFDS split prepared as array_record ("tfds:NAME[/CONFIG]:SPLIT" in `data_dir`), read
    with TFDS's data source (no tensorflow); a part is one of the split's shards."""

    kind = "tfds"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        name, split = _parse_tfds(spec)
        builder = _tfds_builder(name, opts.data_dir)
        if split not in builder.info.splits:
            raise InputError(
                f"{spec}: no split {split!r} (splits: {', '.join(builder.info.splits)})"
            )
        fmt = builder.info.file_format
        if fmt is None or fmt.value != "array_record":
            raise InputError(
                f"{spec}: prepared as {fmt.value if fmt else 'an unknown format'} in "
                f"{builder.data_dir}; streaming reads array_record (re-prepare with "
                "`--file_format array_record`)"
            )
        parts, first = [], 0
        for fi in builder.info.splits[split].file_instructions:
            size = os.path.getsize(fi.filename)
            parts.append(Part(0, self.kind, spec, first, first + fi.take, size, first))
            first += fi.take
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        name, split = _parse_tfds(part.path)
        data = _tfds_builder(name, opts.data_dir).as_data_source(split=split)
        for s in range(part.start, part.stop, 1024):
            chunk = range(s, min(s + 1024, part.stop))
            try:
                raws = data.__getitems__(list(chunk))
            except Exception as e:  # array_record: RuntimeError "Corrupted Riegeli/records file"
                raise InputError(
                    f"{part.path}: records {s}..{chunk[-1]} unreadable "
                    f"(a damaged shard? {_one_line(e)})"
                ) from None
            for i, raw in zip(chunk, raws, strict=True):
                where = f"{part.path}: record {i}"
                rec = {k: _plain(v, f"{where}, field {k!r}") for k, v in raw.items()}
                ident, text = record_fields(rec, where, opts.text_field, opts.id_field, str(i))
                yield ident, text, rec, where

    def inputs(self, spec: str, opts: Options) -> list[Path]:
        """The prepared dataset's directory (`data_dir/NAME[/CONFIG]/VERSION`)."""
        return [Path(_tfds_builder(_parse_tfds(spec)[0], opts.data_dir).data_dir)]


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


# ------------------------------------------------------------------------------- registry

FORMATS: dict[str, Format] = {
    f.kind: f for f in (Jsonl(), JsonlGz(), JsonlZst(), Parquet(), TextDir(), Tfds(), HfDisk())
}


def format_of(spec: str) -> Format:
    """The format that reads `spec`, by its form: "tfds:" and "hf:" specs, a directory of text
    files, *.parquet, and JSON Lines (*.gz, *.zst compressed) for any other path."""
    if spec.startswith("tfds:"):
        return FORMATS["tfds"]
    if spec.startswith("hf:"):
        return FORMATS["hf"]
    if Path(spec).is_dir():
        return FORMATS["text"]
    if Path(spec).suffix == ".parquet":
        return FORMATS["parquet"]
    return FORMATS[jsonl_kind(spec)]
