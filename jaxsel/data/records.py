"""Records and the in-memory `Corpus`: the checks every reader applies to every record, and
that a `Corpus` built directly passes too. Every error names the item's place (file and line).

Input policy (the same for every format, and for `Corpus(...)` built directly):
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
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

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

    Built directly, a Corpus is validated (see the module docstring); the formats
    (`jaxsel.data.formats`) validate each item with its file and line first.
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
        on_empty: OnBad = "error",
    ) -> Corpus:
        """Builds a corpus from records holding `text_field` and `id_field` (ids keep their
        type; None numbers them "0", "1", ...); every field is kept. Records with an empty
        text are an error, or skipped (logged) with `on_empty="skip"`."""
        ids = [str(n) if id_field is None else r[id_field] for n, r in enumerate(records)]
        texts = [r[text_field] for r in records]
        where = [f"{name} item {n}" for n in range(len(records))]
        return _validated(ids, texts, list(records), name, where, on_empty)

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
    """Checks texts, ids and duplicates; `where[i]` locates item i for messages."""
    keep = [
        i for i, (t, w) in enumerate(zip(texts, where, strict=True)) if keep_text(t, w, on_empty)
    ]
    if len(keep) < len(texts):
        ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
        records, where = [records[i] for i in keep], [where[i] for i in keep]
    _check_items(ids, texts, where)
    return Corpus(tuple(ids), tuple(texts), tuple(records), name, _checked=True)


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
    is checked by `keep_text`. With `id_field` None the id is `default_id`."""
    if text_field not in rec:
        raise InputError(f"{loc}: missing field {text_field!r} (fields: {sorted(rec)})")
    if id_field is None:
        return default_id, rec[text_field]
    if id_field not in rec:
        raise InputError(f"{loc}: missing field {id_field!r} (use --id-field to change it)")
    return check_id(rec[id_field], loc), rec[text_field]
