"""`Corpus`: ids + texts + the full input records, read from and written to JSONL, text
directories and Parquet. Every error names the file (and line) it comes from."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from jaxsel.errors import InputError

log = logging.getLogger(__name__)

OnBad = Literal["error", "skip"]


@dataclasses.dataclass(frozen=True)
class Corpus:
    """An ordered collection of documents.

    Attributes:
      ids: unique document ids, in input order.
      texts: the document texts (non-empty, valid Unicode).
      records: the full input record of each document (all fields, ids and texts included), so
        writers can round-trip every input field.
      name: where it came from (for messages).
    """

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    records: tuple[dict[str, Any], ...]
    name: str = "corpus"

    def __post_init__(self):
        if not (len(self.ids) == len(self.texts) == len(self.records)):
            raise InputError(f"{self.name}: ids, texts and records differ in length")

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], ids: Sequence[str] | None = None, name: str = "corpus", **fields
    ) -> Corpus:
        """Builds a corpus from in-memory texts; extra `fields` are per-document sequences."""
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
        """Builds a corpus from records holding `text_field` (and `id_field`; None numbers
        them from 0); every field is kept."""
        ids = [str(n) if id_field is None else str(r[id_field]) for n, r in enumerate(records)]
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
        )

    def field(self, name: str) -> list[Any]:
        """Values of one record field (None where missing)."""
        return [r.get(name) for r in self.records]

    def nbytes(self) -> list[int]:
        return [len(t.encode("utf-8")) for t in self.texts]


def check_text(text: Any, where: object, on_empty: OnBad = "error") -> bool:
    """Per-document check shared by every reader: True keeps the document, False skips an
    empty one (logged, only with `on_empty="skip"`); anything else raises naming `where` (any
    object whose `str` names the place, so streams build line numbers only for messages)."""
    if text is None:
        raise InputError(f"{where}: no text (the text field is null)")
    if not isinstance(text, str):
        raise InputError(f"{where}: text is {type(text).__name__}, not a string")
    if not text.strip():
        if on_empty == "error":
            raise InputError(f"{where}: empty text (pass on_empty='skip' / --skip-empty)")
        log.warning("%s: skipping empty text", where)
        return False
    return True


def duplicate_id_message(ident: Any, where: str, first: str) -> str:
    return f"{where}: duplicate id {ident!r} (first seen at {first})"


def parse_jsonl_line(raw: bytes, where: object, text_field: str) -> dict[str, Any] | None:
    """One JSON Lines line -> its record (None for a blank line); errors name `where`."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not valid UTF-8 (byte {e.start})") from None
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if text_field not in rec:
        raise InputError(f"{where}: missing field {text_field!r} (fields: {sorted(rec)})")
    return rec


def record_id(rec: dict[str, Any], id_field: str | None, default: Any, where: object) -> Any:
    """The id of a record: its `id_field` value, or `default` (a position) when None."""
    if id_field is None:
        return default
    if id_field not in rec:
        raise InputError(f"{where}: missing field {id_field!r} (use --id-field to change it)")
    return rec[id_field]


def _validated(ids, texts, records, name, where, on_empty: OnBad = "error") -> Corpus:
    """Checks empty texts and duplicate ids; `where[i]` locates item i for messages."""
    keep = [i for i, t in enumerate(texts) if check_text(t, where[i], on_empty)]
    seen: dict[str, int] = {}
    for i in keep:
        if ids[i] in seen:
            raise InputError(duplicate_id_message(ids[i], where[i], where[seen[ids[i]]]))
        seen[ids[i]] = i
    return Corpus(
        tuple(ids[i] for i in keep),
        tuple(texts[i] for i in keep),
        tuple(records[i] for i in keep),
        name,
    )


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_jsonl(
    path: str | os.PathLike,
    text_field: str = "text",
    id_field: str | None = "id",
    on_empty: OnBad = "error",
) -> Corpus:
    """Reads JSON Lines (optionally .gz). Blank lines are ignored.

    Args:
      text_field: the field holding the text.
      id_field: the field holding the id (stringified); None numbers documents by line.
      on_empty: "error" (default) or "skip" (logged) for empty/whitespace-only texts.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    ids, texts, records, where = [], [], [], []
    with _open_bytes(path) as f:
        try:
            lines = list(f)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: unreadable ({e})") from None
    for lineno, raw in enumerate(lines, 1):
        loc = f"{path}:{lineno}"
        rec = parse_jsonl_line(raw, loc, text_field)
        if rec is None:
            continue
        ids.append(str(record_id(rec, id_field, lineno, loc)))
        texts.append(rec[text_field])
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
    ids = [str(i) if id_field is None else str(r[id_field]) for i, r in enumerate(rows)]
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


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Writes records atomically (temp file + rename), one JSON object per line, UTF-8."""
    path = Path(path)
    if str(path) == "-":
        import sys

        for r in records:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_parquet(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        table = pa.Table.from_pylist(list(records))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(
            f"{path}: records do not fit one Parquet schema ({e}); write .jsonl"
        ) from None
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_records(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes Parquet for *.parquet, JSON Lines otherwise ("-" is stdout)."""
    if str(path).endswith(".parquet"):
        write_parquet(path, records)
    else:
        write_jsonl(path, records)
