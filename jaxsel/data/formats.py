"""Input formats, one class each: `plan` cuts a spec into parts, `read` yields a part's documents.

A part is a unit of work that any process (or Ray task) can read on its own: a byte range of an
uncompressed JSONL file (split at line starts), a whole `.jsonl.gz` or `.jsonl.zst`, a Parquet
row group, a group of files of a text directory, a shard of a TFDS split, or an arrow file of a
Hugging Face dataset saved to disk. `read` yields (id, text, record, location) for every record
of a part, each record checked (`jaxsel.data.records`: `parse_jsonl_line`, `record_fields`,
`check_id`); keeping or refusing a text (`keep_text`) is the reader's, the same for every format.
`format_of` is the one place a spec's form picks its format. A spec is a local path or a URL
(`jaxsel.data.fs`); parts are planned from the bytes alone, so a URL gives the parts of a local
copy. A directory (`Directory`) is Parquet or JSON Lines shards, or text files.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from jaxsel.data import fs
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

    def inputs(self, spec: str, opts: Options) -> list[str | Path]:
        """The files or directories `spec` reads (a URL stays a string)."""
        return [spec if fs.is_url(spec) else Path(spec)]


def _existing_file(spec: str | os.PathLike) -> str:
    """The file `spec` (a local path normalised, a URL as given); one line when it is absent."""
    spec = str(spec)
    with fs.guarded(spec):
        if not fs.is_file(spec):
            raise InputError(f"{spec if fs.is_url(spec) else Path(spec)}: no such file")
    return spec if fs.is_url(spec) else str(Path(spec))


# ---------------------------------------------------------------------------- JSON Lines


class Jsonl(Format):
    """JSON Lines, uncompressed: parts are byte ranges of about `part_bytes`, each starting at a
    line start. Only the lines at the cuts are read to plan, unless ids are line numbers (then
    one pass counts each range's lines)."""

    kind = "jsonl"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        path = _existing_file(spec)
        size = fs.size(path)
        cuts = [0]
        with fs.open_input(path) as f:
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
            with fs.open_input(path) as f:
                for i in range(1, len(firsts)):
                    firsts[i] = firsts[i - 1] + _count_newlines(f, cuts[i] - cuts[i - 1])
        return [
            Part(0, self.kind, path, s, e, e - s, first)
            for s, e, first in zip(cuts[:-1], cuts[1:], firsts, strict=True)
            if e > s
        ]

    def records(self, part: Part) -> Iterator[tuple[_Line, dict[str, Any]]]:
        """(location, record) of every non-blank line of the part."""
        with fs.open_input(part.path) as f:
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
        return [Part(0, self.kind, spec, nbytes=fs.size(path), first=1)]

    def records(self, part: Part) -> Iterator[tuple[_Line, dict[str, Any]]]:
        rel = -1
        try:
            with fs.open_input(part.path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
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
            with fs.open_input(part.path) as f:
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
    with fs.open_input(path) as f:
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
    suffix = os.path.splitext(str(path))[1]
    return {".gz": JsonlGz.kind, ".zst": JsonlZst.kind}.get(suffix, Jsonl.kind)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Streams a whole JSON Lines file (optionally .gz) as (line number, "file:line", record),
    blank lines skipped, any record (no field is required)."""
    path = _existing_file(path)
    kind = jsonl_kind(path)
    part = Part(0, kind, path, 0, fs.size(path), first=1)
    for where, rec in FORMATS[kind].records(part):
        yield 1 + where.rel, str(where), rec


# ------------------------------------------------------------- Parquet and arrow tables


class Parquet(Format):
    """A Parquet file (a local path or a URL); a part is a row group."""

    kind = "parquet"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        path = _existing_file(spec)
        with _parquet(path) as pf:
            meta = pf.metadata
        parts, row = [], 0
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            parts.append(Part(0, self.kind, path, g, g + 1, rg.total_byte_size, row))
            row += rg.num_rows
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        g = part.start
        with _parquet(part.path) as pf:
            _check_columns(part.path, pf.schema_arrow.names, opts)
            row = part.first
            try:
                for rb in pf.iter_batches(batch_size=4096, row_groups=[g]):
                    for rec in rb.to_pylist():
                        yield _row_doc(rec, row, f"{part.path}: row group {g}, row {row}", opts)
                        row += 1
            except (OSError, UnicodeDecodeError, ValueError) as e:  # damaged pages, bad UTF-8
                raise InputError(
                    f"{part.path}: row group {g}, near row {row} unreadable ({fs.one_line(e)})"
                ) from None


@contextlib.contextmanager
def _parquet(path: str):
    """A `pyarrow.parquet.ParquetFile` of a local path or a URL (read through the fsspec file,
    which stays open while the block reads); a damaged file is one line."""
    import pyarrow.parquet as pq

    with contextlib.ExitStack() as stack:
        source = stack.enter_context(fs.open_input(path)) if fs.is_url(path) else path
        try:
            pf = pq.ParquetFile(source)
            pf.schema_arrow  # noqa: B018 (a bad schema fails here, not in the reader's loop)
        except InputError:
            raise
        except Exception as e:  # pyarrow raises many types for a bad file
            raise InputError(f"{path}: unreadable Parquet ({fs.one_line(e)})") from None
        yield pf


class HfDisk(Format):
    """A Hugging Face dataset, "hf:PATH[:SPLIT]" (PATH a directory or a URL; "hf://datasets/
    ORG/NAME" is the Hub, through huggingface_hub's filesystem). Either saved with
    `Dataset.save_to_disk` (a part is one of its arrow files; SPLIT picks a split of a saved
    `DatasetDict`), or a Hub repository's layout: Parquet shards under `data/`, the split named
    by the file (`data/train-00000-of-00002.parquet`) or its folder (`data/train/*.parquet`);
    a part is then a row group. One split needs no SPLIT; several are a one-line error listing
    them."""

    kind = "hf"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        import pyarrow as pa

        layout, files = self._files(spec)
        if layout == "parquet":
            return [p for f in files for p in FORMATS["parquet"].plan(f, opts)]
        parts, first = [], 0
        for f in files:
            try:
                with _arrow_stream(f) as reader:
                    rows = sum(b.num_rows for b in reader)
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"{f}: unreadable arrow file ({fs.one_line(e)})") from None
            parts.append(Part(0, self.kind, f, nbytes=fs.size(f), first=first))
            first += rows
        return parts

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        row = part.first
        with _arrow_stream(part.path) as reader:
            _check_columns(part.path, reader.schema.names, opts)
            for rb in reader:
                for rec in rb.to_pylist():
                    yield _row_doc(rec, row, f"{part.path}: row {row}", opts)
                    row += 1

    def inputs(self, spec: str, opts: Options) -> list[str | Path]:
        root, _ = _hf_spec(spec)
        return [root if fs.is_url(root) else Path(root)]

    def _files(self, spec: str) -> tuple[str, list[str]]:
        """("arrow", the save_to_disk files) or ("parquet", the chosen split's shards)."""
        root, split = _hf_spec(spec)
        with fs.guarded(root):
            if fs.is_file(fs.join(root, "dataset_dict.json")):
                splits = json.loads(fs.cat(fs.join(root, "dataset_dict.json"))).get("splits", [])
                if split is None:
                    raise InputError(
                        f"{spec}: a DatasetDict; choose a split: "
                        + ", ".join(f"hf:{fs.join(root, s)}" for s in splits)
                    )
                if split not in splits:
                    raise InputError(f"{spec}: no split {split!r} (splits: {', '.join(splits)})")
                root, split = fs.join(root, split), None
            state = fs.join(root, "state.json")
            if fs.is_file(state):
                if split is not None:
                    raise InputError(f"{spec}: one saved Dataset, no splits (give hf:{root})")
                return "arrow", self._saved(spec, root, state)
            if fs.is_dir(fs.join(root, "data")):
                return "parquet", _hub_split(spec, root, split)
        raise InputError(
            f"{spec}: not a dataset saved with Dataset.save_to_disk (no {state}) nor a Hub "
            "repository layout (no data/*.parquet)"
        )

    @staticmethod
    def _saved(spec: str, root: str, state: str) -> list[str]:
        try:
            names = [f["filename"] for f in json.loads(fs.cat(state))["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{state}: unreadable ({fs.one_line(e)})") from None
        found = [fs.join(root, n) if fs.is_url(root) else str(Path(root) / n) for n in names]
        missing = [f for f in found if not fs.is_file(f)]
        if missing:
            raise InputError(f"{spec}: {missing[0]} listed in state.json is missing")
        return found


def _hf_spec(spec: str) -> tuple[str, str | None]:
    """(root, split or None) of "hf:ROOT[:SPLIT]" or of an "hf://..." Hub URL. A SPLIT is a
    last ":" part without "/" (so "hf:memory://x" has none)."""
    body = spec if spec.startswith("hf://") else spec[len("hf:") :]
    root, sep, split = body.rpartition(":")
    if sep and root and split and "/" not in split and not root.endswith(":"):
        return root, split
    return body, None


def _hub_split(spec: str, root: str, split: str | None) -> list[str]:
    """The Parquet shards of one split of a Hub layout (`data/SPLIT-*.parquet` or
    `data/SPLIT/*.parquet`), in name order."""
    data = fs.join(root, "data")
    splits: dict[str, list[str]] = {}
    for rel, _ in fs.files(data):
        if not rel.endswith(".parquet") or _hidden(rel):
            continue
        head, _, name = rel.rpartition("/")
        named = re.split(r"[-.]", name)[0]  # "train" of train-00000-of-00002.parquet
        splits.setdefault(head.split("/")[0] if head else named, []).append(rel)
    if not splits:
        raise InputError(f"{spec}: no Parquet files under {data}")
    if split is None and len(splits) == 1:
        split = next(iter(splits))
    if split is None or split not in splits:
        known = ", ".join(f"hf:{root}:{s}" for s in sorted(splits))
        what = "several splits; choose one" if split is None else f"no split {split!r}"
        raise InputError(f"{spec}: {what}: {known}")
    return [fs.join(data, rel) for rel in splits[split]]


@contextlib.contextmanager
def _arrow_stream(path: str):
    """An arrow IPC stream reader of a local file (memory-mapped) or a URL."""
    import pyarrow as pa

    with pa.memory_map(path) if not fs.is_url(path) else fs.open_input(path) as m:
        yield pa.ipc.open_stream(m)


def _check_columns(path: str, names: Sequence[str], opts: Options) -> None:
    for field in (opts.text_field, opts.id_field):
        if field is not None and field not in names:
            raise InputError(f"{path}: missing column {field!r} (columns: {sorted(names)})")


def _row_doc(rec: dict[str, Any], row: int, where: str, opts: Options) -> Doc:
    ident = str(row) if opts.id_field is None else check_id(rec[opts.id_field], where)
    return ident, rec[opts.text_field], rec, where


# ------------------------------------------------------------------------------ directories


class TextDir(Format):
    """Every file under a directory (sorted, recursive) is one document, its id the relative
    path; a part is `files_per_part` files. A non-UTF-8 file is an error, or skipped (logged)
    with `on_empty="skip"`."""

    kind = "text"

    def plan(self, spec: str, opts: Options, files=None) -> list[Part]:
        """`files`: the directory's (relative path, size) when the caller listed it already."""
        root = spec if fs.is_url(spec) else str(Path(spec))
        with fs.guarded(spec):
            if files is None and not fs.is_dir(spec):
                raise InputError(f"{root}: not a directory")
            files = fs.files(spec) if files is None else files
        return [
            Part(
                0,
                self.kind,
                root,
                nbytes=sum(n for _, n in files[s : s + opts.files_per_part]),
                files=tuple(rel for rel, _ in files[s : s + opts.files_per_part]),
            )
            for s in range(0, len(files), opts.files_per_part)
        ]

    def read(self, part: Part, opts: Options) -> Iterator[Doc]:
        for rel in part.files:
            p = fs.join(part.path, rel)
            try:
                text = fs.cat(p).decode("utf-8")
            except UnicodeDecodeError as e:
                if opts.on_empty == "error":
                    raise InputError(f"{p}: not valid UTF-8 (byte {e.start})") from None
                log.warning("%s: skipping non-UTF-8 file", p)
                continue
            yield rel, text, {"id": rel, "text": text}, p


def _hidden(rel: str) -> bool:
    """A name that dataset readers skip (pyarrow.dataset's rule): a path part starting with "."
    or "_" (`_SUCCESS`, `_jaxsel.meta.json`, a writer's `.part.tmp`)."""
    return any(q.startswith((".", "_")) for q in rel.split("/"))


def shard_kind(name: str) -> str | None:
    """The format of a data shard by its name (*.parquet, *.jsonl[.gz|.zst]), None otherwise."""
    if name.endswith(".parquet"):
        return "parquet"
    for ext in (".jsonl", ".jsonl.gz", ".jsonl.zst"):
        if name.endswith(ext):
            return ext[1:]
    return None


class Directory(Format):
    """A directory (a local path or a URL): when its files are all Parquet, or all JSON Lines
    (.jsonl, .jsonl.gz, .jsonl.zst), they are read as shards of one pool, in sorted order,
    each planned by its own format (so the parts are those of a glob of the same files);
    otherwise every file is a document (`TextDir`). Names starting with "." or "_" are
    skipped when telling shards apart; a directory mixing shards with other files is an
    error that suggests a glob."""

    kind = "dir"

    def plan(self, spec: str, opts: Options) -> list[Part]:
        with fs.guarded(spec):
            files = fs.files(spec)
        shards = self.shards(spec, [rel for rel, _ in files])
        if shards is None:
            return FORMATS["text"].plan(spec, opts, files)
        return [p for kind, f in shards for p in FORMATS[kind].plan(f, opts)]

    @staticmethod
    def shards(spec: str, names: list[str]) -> list[tuple[str, str]] | None:
        """(format, path) of each shard among the directory's files `names` (relative, sorted),
        or None for a text directory."""
        listed = [rel for rel in names if not _hidden(rel)]
        kinds = {rel: shard_kind(rel) for rel in listed}
        family = {rel: k and k.split(".")[0] for rel, k in kinds.items()}  # parquet | jsonl
        first = next((f for f in family.values() if f), None)
        if first is None:
            return None
        other = next((rel for rel, f in family.items() if f != first), None)
        if other is not None:
            pattern = "*.parquet" if first == "parquet" else "*.jsonl*"
            raise InputError(
                f"{spec}: {first} shards mixed with other files ({other}); name the shards "
                f"with a glob, e.g. {fs.join(spec, pattern)}"
            )
        return [(k, fs.join(spec, rel)) for rel, k in kinds.items()]


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
                    f"(a damaged shard? {fs.one_line(e)})"
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
    f.kind: f
    for f in (Jsonl(), JsonlGz(), JsonlZst(), Parquet(), TextDir(), Directory(), Tfds(), HfDisk())
}


def format_of(spec: str) -> Format:
    """The format that reads `spec`, by its form: "tfds:" and "hf:" specs (and "hf://" Hub URLs
    that are not a *.parquet or JSON Lines file), a directory (`Directory`: shards or text
    files), *.parquet, and JSON Lines (*.gz, *.zst compressed) for any other path. A spec is a
    local path or a URL (`jaxsel.data.fs`)."""
    if spec.startswith("tfds:"):
        return FORMATS["tfds"]
    if spec.startswith("hf:") and not (spec.startswith("hf://") and shard_kind(spec)):
        return FORMATS["hf"]
    with fs.guarded(spec):
        if fs.is_dir(spec):
            return FORMATS["dir"]
    if spec.endswith(".parquet"):
        return FORMATS["parquet"]
    return FORMATS[jsonl_kind(spec)]
