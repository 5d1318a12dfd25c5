"""Writers of records, by the output's name or an explicit format: JSON Lines (plain, `.gz`,
`.zst`), Parquet, ArrayRecord (one JSON record per entry, as grain and TFDS read it) and a
Hugging Face dataset directory (`datasets.Dataset.save_to_disk`'s layout), one file or a
directory of shards, at a local path or a URL (`jaxsel.data.fs`). Everything is atomic
(`jaxsel.data.outputs`): a file is replaced whole, a directory appears whole (at a URL: its files
are published whole, `_jaxsel.meta.json` last). A record the format would change is refused
rather than written changed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxsel.data.outputs import (
    DIR_META,
    STDOUT,
    Output,
    atomic_dir,
    atomic_open,
    atomic_path,
    in_place,
    sidecar_of,
    write_text,
)
from jaxsel.errors import InputError

# format -> file extension; "hf" is a directory (`save_to_disk` layout)
OUT_FORMATS = {
    "jsonl": ".jsonl",
    "jsonl.gz": ".jsonl.gz",
    "jsonl.zst": ".jsonl.zst",
    "parquet": ".parquet",
    "array_record": ".array_record",
    "hf": None,
}


class OutSpec(NamedTuple):
    """Where and how records are written (`out_spec`).

    Attributes:
      path: a file, a directory (shards or "hf"), or "-" (stdout, JSON Lines).
      format: an `OUT_FORMATS` key.
      shards: number of files of a directory output.
      max_rows: rows per file of a directory output.
    """

    path: str
    format: str
    shards: int | None = None
    max_rows: int | None = None

    @property
    def directory(self) -> bool:
        return self.format == "hf" or self.shards is not None or self.max_rows is not None

    def outputs(self, what: str = "--out") -> list[Output]:
        """The locations written: the output and, for a file, its sidecar (`check_job`)."""
        found = [Output(what, self.path, self.directory)]
        side = None if self.directory else sidecar_of(self.path)
        return found + ([Output(f"{what} sidecar", side)] if side is not None else [])


def out_spec(
    path: str | os.PathLike,
    fmt: str | None = None,
    shards: int | None = None,
    max_rows: int | None = None,
    what: str = "--out",
) -> OutSpec:
    """The output of `path`: format `fmt`, else by its extension (an unknown one is an error,
    never silent JSON Lines); `shards` or `max_rows` make it a directory of files."""
    path = str(path)
    if fmt is not None and fmt not in OUT_FORMATS:
        raise InputError(f"--out-format {fmt!r}: not one of {', '.join(OUT_FORMATS)}")
    if shards is not None and max_rows is not None:
        raise InputError("give --out-shards or --max-rows-per-file, not both")
    for flag, n in (("--out-shards", shards), ("--max-rows-per-file", max_rows)):
        if n is not None and n <= 0:
            raise InputError(f"{flag} must be positive, got {n}")
    named = next((f for f, ext in OUT_FORMATS.items() if ext and path.endswith(ext)), None)
    if named is None and in_place(path):  # /dev/null, a FIFO: a stream, like stdout
        named = "jsonl"
    if path == STDOUT:
        if fmt not in (None, "jsonl") or shards is not None or max_rows is not None:
            raise InputError(f"{what} -: standard output takes one JSON Lines stream")
        return OutSpec(path, "jsonl")
    if shards is not None or max_rows is not None or fmt == "hf":
        if fmt is None:
            raise InputError(f"{what} {path}: a directory of shards; give --out-format")
        return OutSpec(path, fmt, shards, max_rows)
    if fmt is not None and named is not None and named != fmt:
        raise InputError(f"{what} {path}: the name says {named}, --out-format says {fmt}")
    if fmt is None and named is None:
        known = ", ".join(e for e in OUT_FORMATS.values() if e)
        raise InputError(
            f"{what} {path}: unknown output extension (known: {known}; or give --out-format)"
        )
    return OutSpec(path, fmt or named)


# ------------------------------------------------------------------------------ records


def json_line(r: dict[str, Any], path, n: int) -> str:
    """Record `n` as one strict JSON line (no NaN/Infinity) for the file `path` (messages)."""
    try:
        return json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as e:  # NaN/Infinity are not JSON
        raise InputError(f"{path}: record {n} cannot be written as JSON ({e})") from None
    except TypeError as e:
        raise InputError(f"{path}: record {n} has a value JSON cannot hold ({e})") from None


def _same_typed(a: Any, b: Any) -> bool:
    """Equal values of the same types, recursively (1 and 1.0 differ); a missing dict key
    matches None (Parquet has no "absent"); numpy scalars count as their Python values."""
    a, b = (x.item() if isinstance(x, np.generic) else x for x in (a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same_typed(a.get(k), b.get(k)) for k in a.keys() | b.keys())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_typed(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def _table(path, fmt: str, records: list[dict[str, Any]], schema=None):
    """An arrow table of the records (in `schema`, the first shard's, when given), refused
    where `fmt` would change a value (an int column promoted to float, a field it drops)."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pylist(records, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:  # e.g. an int past int64
        raise InputError(
            f"{path}: records do not fit one {fmt} schema ({e}); write .jsonl"
        ) from None
    for n, (a, b) in enumerate(zip(records, table.to_pylist(), strict=True)):
        if not _same_typed(a, b):
            diff = sorted(k for k in a.keys() | b.keys() if not _same_typed(a.get(k), b.get(k)))
            raise InputError(
                f"{path}: record {n} would change in {fmt} (fields {diff} of mixed types "
                "across records); write .jsonl"
            )
    return table


# -------------------------------------------------------------------------- one file each


def _compressed(f, fmt: str):
    if fmt == "jsonl.gz":  # mtime 0 and no name: the same records give the same bytes
        return gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0)
    if fmt == "jsonl.zst":
        import zstandard

        return zstandard.ZstdCompressor(write_checksum=True).stream_writer(f, closefd=False)
    return contextlib.nullcontext(f)


def _write_lines(path, records: Iterable[dict[str, Any]], fmt: str = "jsonl", label=None) -> None:
    with atomic_open(path, "wb") as f, _compressed(f, fmt) as out:
        for n, r in enumerate(records):
            out.write(json_line(r, label or path, n).encode("utf-8"))


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes records atomically, one strict JSON object per line (no NaN/Infinity), UTF-8;
    "-" is stdout."""
    if str(path) != STDOUT:
        return _write_lines(path, records)
    for n, r in enumerate(records):
        sys.stdout.write(json_line(r, "<stdout>", n))
    sys.stdout.flush()


def write_parquet(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes records as one Parquet table, atomically (refused where Parquet would change a
    value: `_table`)."""
    _write_file(path, "parquet", list(records))


def _write_parquet(path, table) -> None:
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def _write_array_record(path, records: Iterable[dict[str, Any]], label=None) -> None:
    try:
        from array_record.python.array_record_module import ArrayRecordWriter
    except ImportError:
        raise InputError(
            "writing ArrayRecord needs array_record: pip install 'jaxsel[tfds]'"
        ) from None
    with atomic_path(path) as tmp:
        writer = ArrayRecordWriter(str(tmp), "group_size:1")
        try:
            for n, r in enumerate(records):
                writer.write(json_line(r, label or path, n)[:-1].encode("utf-8"))
        finally:
            writer.close()


def _hf_feature(t) -> dict:
    """The `datasets` feature of an arrow type (as `Features.from_arrow_schema` writes it)."""
    import pyarrow as pa

    if pa.types.is_struct(t):
        return {t.field(i).name: _hf_feature(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "List"}
    dtype = {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(t), str(t))
    return {"dtype": dtype, "_type": "Value"}


def _hf_features(schema) -> dict:
    return {f.name: _hf_feature(f.type) for f in schema}


def _write_arrow_stream(path, table) -> None:
    """An arrow IPC stream with `datasets`' schema metadata, as `save_to_disk` writes a shard."""
    import pyarrow as pa

    meta = {"huggingface": json.dumps({"info": {"features": _hf_features(table.schema)}})}
    table = table.replace_schema_metadata(meta)
    with atomic_open(path, "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table, max_chunksize=1000)  # `datasets`' writer batch size


def _write_hf_meta(root: Path, files: list[str], schema) -> None:
    """`state.json` and `dataset_info.json` as `Dataset.save_to_disk` writes them."""
    digest = hashlib.sha256()
    for name in files:
        digest.update((root / name).read_bytes())
    state = {
        "_data_files": [{"filename": f} for f in files],
        "_fingerprint": digest.hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    write_text(root / "state.json", json.dumps(state, indent=2, sort_keys=True))
    info = {"features": _hf_features(schema), "homepage": "", "license": ""}
    info = {"citation": "", "description": "", **info}
    write_text(root / "dataset_info.json", json.dumps(info, indent=2))


def _write_file(path, fmt: str, rows: Iterable[dict[str, Any]], schema=None, label=None):
    """One file of records in `fmt`; returns the arrow schema (Parquet, "hf"), which the next
    shard of a directory output keeps. Messages name `label` (default: `path`)."""
    if fmt in ("parquet", "hf"):
        table = _table(label or path, fmt, list(rows), schema)
        (_write_arrow_stream if fmt == "hf" else _write_parquet)(path, table)
        return table.schema
    if fmt == "array_record":
        _write_array_record(path, rows, label)
    else:
        _write_lines(path, rows, fmt, label)
    return schema


# ----------------------------------------------------------------------------- any output


def write_output(
    spec: OutSpec, records: Iterable[dict[str, Any]], count: int | None = None, meta=None
) -> None:
    """Writes records as `spec` says, with `meta` (JSON-able) as the output's sidecar
    (`<out>.meta.json`, or `_jaxsel.meta.json` inside a directory output; none for stdout or a
    device). `count`, the number of records, saves `--out-shards` a spill pass."""
    meta_text = None if meta is None else json.dumps(meta, indent=1) + "\n"
    if not spec.directory:
        if spec.path == STDOUT:
            return write_jsonl(STDOUT, records)
        _write_file(spec.path, spec.format, records)
        side = sidecar_of(spec.path)
        if meta_text is not None and side is not None:
            write_text(side, meta_text)
        return
    with atomic_dir(spec.path) as root, tempfile.TemporaryFile() as spill:
        if spec.shards is not None and count is None:  # the cuts need the count: spill first
            count = 0
            for count, r in enumerate(records, 1):
                spill.write(json_line(r, spec.path, count - 1).encode("utf-8"))
            spill.seek(0)
            records = (json.loads(line) for line in spill)
        names, schema = [], None
        for i, rows in enumerate(_chunks(iter(records), spec, count)):
            names.append(f".part-{i}")
            label = f"{spec.path} (file {i + 1})"
            schema = _write_file(root / names[-1], spec.format, rows, schema, label)
        stem, ext = (
            ("data", ".arrow") if spec.format == "hf" else ("part", OUT_FORMATS[spec.format])
        )
        final = [f"{stem}-{i:05d}-of-{len(names):05d}{ext}" for i in range(len(names))]
        for name, new in zip(names, final, strict=True):
            os.replace(root / name, root / new)
        if spec.format == "hf":
            _write_hf_meta(root, final, schema)
        if meta_text is not None:
            write_text(root / DIR_META, meta_text)


def _chunks(records: Iterator[dict], spec: OutSpec, count: int | None) -> Iterator[list[dict]]:
    """The rows of each file of a directory output: `max_rows` each, or `shards` contiguous
    runs of about equal rows (no more files than rows, as `save_to_disk` cuts), or all in one;
    always at least one file."""
    if spec.max_rows is not None:
        rows = list(itertools.islice(records, spec.max_rows))
        yield rows
        while rows := list(itertools.islice(records, spec.max_rows)):
            yield rows
    elif spec.shards is not None:
        n = min(spec.shards, max(count, 1))
        for i in range(n):  # the first count % n files get one row more
            yield list(itertools.islice(records, count // n + (i < count % n)))
    else:
        yield list(records)


def write_records(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes records in the format of `path`'s name (`out_spec`; "-" is stdout)."""
    write_output(out_spec(path), records)
