"""Writers of records: JSON Lines and Parquet, atomically (`jaxsel.data.outputs`), refusing a
record the format would change rather than writing it changed."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxsel.data.outputs import STDOUT, atomic_open
from jaxsel.errors import InputError


def json_line(r: dict[str, Any], path, n: int) -> str:
    """Record `n` as one strict JSON line (no NaN/Infinity) for the file `path` (messages)."""
    try:
        return json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as e:  # NaN/Infinity are not JSON
        raise InputError(f"{path}: record {n} cannot be written as JSON ({e})") from None
    except TypeError as e:
        raise InputError(f"{path}: record {n} has a value JSON cannot hold ({e})") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes records atomically (`jaxsel.data.outputs`), one strict JSON object per line
    (no NaN/Infinity), UTF-8."""
    if str(path) == STDOUT:
        import sys

        for n, r in enumerate(records):
            sys.stdout.write(json_line(r, "<stdout>", n))
        return
    with atomic_open(path, "w") as f:
        for n, r in enumerate(records):
            f.write(json_line(r, path, n))


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


def write_parquet(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes records as one Parquet table, atomically. Records whose values Parquet would
    change (an integer id column promoted to float by a float in another row, ...) are refused
    rather than rewritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = list(records)
    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(
            f"{path}: records do not fit one Parquet schema ({e}); write .jsonl"
        ) from None
    for n, (a, b) in enumerate(zip(records, table.to_pylist(), strict=True)):
        if not _same_typed(a, b):
            diff = sorted(k for k in a.keys() | b.keys() if not _same_typed(a.get(k), b.get(k)))
            raise InputError(
                f"{path}: record {n} would change in Parquet (fields {diff} of mixed types "
                "across records); write .jsonl"
            )
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def write_records(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes Parquet for *.parquet, JSON Lines otherwise ("-" is stdout)."""
    if str(path).endswith(".parquet"):
        write_parquet(path, records)
    else:
        write_jsonl(path, records)
