"""`Corpus`: ids + texts + the full input records, read from and written to JSONL, text
directories and Parquet. Every error names the file (and line) it comes from.

Input policy (the same for every reader, and for `Corpus(...)` built directly):
- texts are non-empty strings of valid Unicode: a lone surrogate (JSON `"\\ud800"`) anywhere in a
  record is refused, since it cannot be written back as UTF-8;
- ids keep their input type: a string or a number (an integer or a finite float); booleans,
  null, arrays and objects are refused; ids are unique (numbers compare by value, so 1 and 1.0
  are the same id, "1" is another);
- JSON Lines are strict JSON (NaN/Infinity literals are refused), UTF-8 with an optional BOM on
  line 1 (as Python's `utf-8-sig`); a damaged .gz stream is an error naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jaxsel.data.outputs import STDOUT, atomic_open
from jaxsel.errors import InputError

log = logging.getLogger(__name__)

OnBad = Literal["error", "skip"]
Id = str | int | float

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """An ordered collection of documents.

    Attributes:
      ids: unique document ids (strings or numbers, as in the input), in input order.
      texts: the document texts (non-empty, valid Unicode).
      records: the full input record of each document (all fields, ids and texts included), so
        writers can round-trip every input field.
      name: where it came from (for messages).

    Built directly, a Corpus is validated (see the module docstring); the readers validate each
    item with its file and line first.
    """

    ids: tuple[Id, ...]
    texts: tuple[str, ...]
    records: tuple[dict[str, Any], ...]
    name: str = "corpus"
    _checked: dataclasses.InitVar[bool] = False

    def __post_init__(self, _checked: bool):
        if not (len(self.ids) == len(self.texts) == len(self.records)):
            raise InputError(f"{self.name}: ids, texts and records differ in length")
        if not _checked:
            where = [f"{self.name}: item {n}" for n in range(len(self.ids))]
            for n, r in enumerate(self.records):
                if not isinstance(r, dict):
                    raise InputError(f"{where[n]}: record is {type(r).__name__}, not a dict")
            _check_items(self.ids, self.texts, where)

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], ids: Sequence[str] | None = None, name: str = "corpus", **fields
    ) -> Corpus:
        """Builds a corpus from in-memory texts; extra `fields` are per-document sequences.
        Ids are stringified (default: "0", "1", ...)."""
        ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
        records = []
        for n, (i, t) in enumerate(zip(ids, texts, strict=True)):
            rec = {"id": i, "text": t}
            rec.update({k: v[n] for k, v in fields.items()})
            records.append(rec)
        return _validated(ids, list(texts), records, name, [f"item {n}" for n in range(len(ids))])

    @classmethod
    def from_records(
        cls,
        records: Sequence[dict[str, Any]],
        text_field: str = "text",
        id_field: str | None = "id",
        name: str = "corpus",
    ) -> Corpus:
        """Builds a corpus from records holding `text_field` and `id_field` (ids keep their
        type; None numbers them "0", "1", ...); every field is kept."""
        ids = [str(n) if id_field is None else r[id_field] for n, r in enumerate(records)]
        texts = [r[text_field] for r in records]
        where = [f"{name} item {n}" for n in range(len(records))]
        return _validated(ids, texts, list(records), name, where)

    def subset(self, indices: Iterable[int]) -> Corpus:
        idx = list(indices)
        return Corpus(
            tuple(self.ids[i] for i in idx),
            tuple(self.texts[i] for i in idx),
            tuple(self.records[i] for i in idx),
            self.name,
            _checked=len(set(idx)) == len(idx),  # a repeat is a duplicate id: check it
        )

    def field(self, name: str) -> list[Any]:
        """Values of one record field (None where missing)."""
        return [r.get(name) for r in self.records]

    def nbytes(self) -> list[int]:
        return [len(t.encode("utf-8")) for t in self.texts]


def check_id(value: Any, loc: str) -> Id:
    """An id as the input gave it: a string or a finite number, else InputError at `loc`."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InputError(f"{loc}: id contains a lone surrogate (not valid Unicode)")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InputError(
        f"{loc}: id {value!r} is {type(value).__name__}; ids must be strings or finite numbers"
    )


def check_text(value: Any, loc: str) -> str:
    """A text as given, if it is a string of valid Unicode, else InputError at `loc` (emptiness
    is the caller's policy)."""
    if not isinstance(value, str):
        raise InputError(f"{loc}: text is {type(value).__name__}, not a string")
    if _SURROGATE.search(value):
        raise InputError(f"{loc}: text contains a lone surrogate (not valid Unicode)")
    return value


def keep_text(value: Any, loc: str, on_empty: OnBad = "error") -> bool:
    """`check_text` plus the empty-text policy every reader shares: False skips (and logs) an
    empty text with `on_empty="skip"`; `loc` may be any object whose `str` names the place (a
    stream formats line numbers only for a message)."""
    if check_text(value, loc).strip():
        return True
    if on_empty == "error":
        raise InputError(f"{loc}: empty text (pass on_empty='skip' / --skip-empty)")
    log.warning("%s: skipping empty text", loc)
    return False


def _check_items(ids: Sequence[Any], texts: Sequence[Any], where: Sequence[str]) -> None:
    seen: dict[Id, int] = {}
    for n, (i, t) in enumerate(zip(ids, texts, strict=True)):
        check_id(i, where[n])
        if not check_text(t, where[n]).strip():
            raise InputError(f"{where[n]}: empty text")
        if i in seen:
            raise InputError(f"{where[n]}: duplicate id {i!r} (first seen at {where[seen[i]]})")
        seen[i] = n


def _validated(ids, texts, records, name, where, on_empty: OnBad = "error") -> Corpus:
    """Checks ids, texts (empty ones skipped or refused) and duplicates; `where[i]` locates
    item i for messages."""
    keep = [i for i, t in enumerate(texts) if keep_text(t, where[i], on_empty)]
    _check_items([ids[i] for i in keep], [texts[i] for i in keep], [where[i] for i in keep])
    return Corpus(
        tuple(ids[i] for i in keep),
        tuple(texts[i] for i in keep),
        tuple(records[i] for i in keep),
        name,
        _checked=True,
    )


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:20]} is out of range")
    return v


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_strings(v)


def parse_jsonl_line(raw: bytes, loc: str, first: bool = False) -> dict[str, Any] | None:
    """One JSON Lines line -> its record (None for a blank line). The per-record validation every
    JSONL reader shares: UTF-8 (a BOM allowed on the first line), strict JSON (no NaN/Infinity),
    a JSON object, no lone surrogate in any key or string. Errors are one line at `loc`."""
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{loc}: not valid UTF-8 (byte {e.start})") from None
    if not line.strip():
        return None
    try:
        rec = json.loads(line, parse_constant=_no_constants, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise InputError(f"{loc}: malformed JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # NaN / Infinity / 1e999
        raise InputError(f"{loc}: malformed JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{loc}: malformed JSON (nested too deeply)") from None
    if not isinstance(rec, dict):
        raise InputError(f"{loc}: expected a JSON object, got {type(rec).__name__}")
    if "\\u" in line and any(_SURROGATE.search(x) for x in _walk_strings(rec)):
        raise InputError(f"{loc}: a lone surrogate escape (not valid Unicode) in the record")
    return rec


def record_fields(
    rec: dict[str, Any], loc: str, text_field: str, id_field: str | None, default_id: Id
) -> tuple[Id, Any]:
    """(id, text) of one record: the fields must be present, the id valid (`check_id`); the text
    is checked by `_validated`. With `id_field` None the id is `default_id`."""
    if text_field not in rec:
        raise InputError(f"{loc}: missing field {text_field!r} (fields: {sorted(rec)})")
    if id_field is None:
        return default_id, rec[text_field]
    if id_field not in rec:
        raise InputError(f"{loc}: missing field {id_field!r} (use --id-field to change it)")
    return check_id(rec[id_field], loc), rec[text_field]


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Streams a JSON Lines file (optionally .gz) as (line number, "file:line", record), blank
    lines skipped, each record checked by `parse_jsonl_line`; a damaged gzip stream is one
    error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
                raise InputError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
            if not raw:
                return
            lineno += 1
            loc = f"{path}:{lineno}"
            rec = parse_jsonl_line(raw, loc, first=lineno == 1)
            if rec is not None:
                yield lineno, loc, rec


def read_jsonl(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
) -> Corpus:
    """Reads JSON Lines (optionally .gz). Blank lines are ignored.

    Args:
      text_field: the field holding the text.
      id_field: the field holding the id (kept as given: a string or a number); None numbers
        documents by line (as strings).
      on_empty: "error" (default) or "skip" (logged) for empty/whitespace-only texts.
    """
    ids, texts, records, where = [], [], [], []
    for lineno, loc, rec in iter_jsonl(path):
        ident, text = record_fields(rec, loc, text_field, id_field, str(lineno))
        ids.append(ident)
        texts.append(text)
        records.append(rec)
        where.append(loc)
    corpus = _validated(ids, texts, records, str(path), where, on_empty)
    if not len(corpus):
        raise InputError(f"{path}: no documents")
    return corpus


def read_text_dir(
    path: str | os.PathLike, pattern: str = "**/*", on_bad: OnBad = "error"
) -> Corpus:
    """Reads every file under a directory (sorted, recursive) as one document; id = relative path.

    Non-UTF-8 or empty files raise unless `on_bad="skip"` (each skip is logged).
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    ids, texts, records, where = [], [], [], []
    for p in sorted(q for q in root.glob(pattern) if q.is_file()):
        rel = p.relative_to(root).as_posix()
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            if on_bad == "error":
                raise InputError(f"{p}: not valid UTF-8 (byte {e.start})") from None
            log.warning("%s: skipping non-UTF-8 file", p)
            continue
        ids.append(rel)
        texts.append(text)
        records.append({"id": rel, "text": text})
        where.append(str(p))
    corpus = _validated(ids, texts, records, str(root), where, on_bad)
    if not len(corpus):
        raise InputError(f"{root}: no documents")
    return corpus


def read_parquet(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
) -> Corpus:
    """Reads a Parquet file; all columns are kept in the records."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises many types for a bad file
        raise InputError(f"{path}: unreadable Parquet ({e})") from None
    if rows and text_field not in rows[0]:
        raise InputError(f"{path}: missing column {text_field!r} (columns: {sorted(rows[0])})")
    if rows and id_field is not None and id_field not in rows[0]:
        raise InputError(f"{path}: missing column {id_field!r} (use --id-field to change it)")
    where = [f"{path}: row {i}" for i in range(len(rows))]
    ids = [
        str(i) if id_field is None else check_id(r[id_field], where[i]) for i, r in enumerate(rows)
    ]
    texts = [r[text_field] for r in rows]
    corpus = _validated(ids, texts, rows, str(path), where, on_empty)
    if not len(corpus):
        raise InputError(f"{path}: no documents")
    return corpus


def read_corpus(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
    data_dir: str | os.PathLike | None = None,
) -> Corpus:
    """Reads a corpus by its form: directory, *.parquet, JSON Lines (*.jsonl[.gz], *.json), or
    `tfds:NAME[/CONFIG]:SPLIT` (prepared in `data_dir`) / `hf:PATH` (a saved `datasets.Dataset`),
    which are read through their streaming readers (`jaxsel.data.sources`)."""
    if str(path).startswith(("tfds:", "hf:")):
        from jaxsel.data.sources import open_source

        return open_source(path, text_field, id_field, data_dir, on_empty).to_corpus()
    p = Path(path)
    if p.is_dir():
        return read_text_dir(p, on_bad=on_empty)
    if p.suffix == ".parquet":
        return read_parquet(p, text_field, id_field, on_empty)
    return read_jsonl(p, text_field, id_field, on_empty)


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
