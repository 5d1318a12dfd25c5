"""The verified store of a resumable job, and the one loop that resumes from it.

`VerifiedStore` is one directory: a manifest (the job's record: what it computes, JSON) and units
(a shard of scores, a batch's scores and statistics, an adapter's checkpoint at an epoch)
committed under a tag. The job hash is sha256 of the canonical record; a unit's tag is
sha256(job hash ‖ what names the unit ‖ its bytes)[:32], so a unit verifies only for this job
and this content. Every file is written atomically (`jaxsel.data.outputs`); a unit is committed
when its verifying name (or commit file) is written, last. A unit that does not verify is never
read back: it is logged, removed and redone (a resumed job verifies what it reuses).

A manifest holding another job's record is an error (use another directory or delete it), as
is one that is not readable JSON; a missing one is written anew (units verify on their own).

The directory may be a URL (a `str`, `jaxsel.data.fs`: memory://, s3://, gs://, ...): the same
names and bytes, each file written whole by one put of its complete bytes (`fs.write_whole`:
no partial object is ever visible under its name; a temporary name and a move where the
filesystem has a cheap one), the verifying name last, and every reused file read back and
checked exactly as on disk. A local path (or a file:// URL) keeps the local code: temporary
files and `os.replace`. Several processes or Ray tasks sharing one remote store are not
tested (a memory:// filesystem is one per process).

`resumed` is the package's only loop of the form "for each unit without a verified result:
compute, commit": `run_sharded` (shards of a job of known size, `jaxsel.batching`) and the
streamed batch loop (`jaxsel.methods.runtime.map_batches`) are both uses of it.

- `ShardStore`: shard i of a job of n items is `shard-<i:06d>-<tag>.npy`, tag over the file's
  bytes; the record covers the job's key, n and the shard size.
- `BatchShards`: one shard per pool batch, named by the batch (its first key) rather than by a
  position, so any process or engine resumes any other's: `shard-NAME-TAG.npy` (the scores)
  beside `shard-NAME-TAG.json` (additive statistics), json first; the tag covers the batch's
  text fingerprint, the statistics and the .npy bytes.
- `jaxsel.downstream.CurveStore`: one fine-tuning curve per (selection's training tokens,
  seed): `curve-<tokens digest>-s<seed>-<tag>.json`, tag over the curve's bytes.
- `jaxsel.lm.store.AdapterStore`: adapter checkpoints, one orbax directory per epoch whose
  commit file holds the tag of every file in it.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from jaxsel.data import fs
from jaxsel.data.outputs import atomic_open, check_workdir
from jaxsel.errors import InputError

log = logging.getLogger(__name__)

FORMAT = 2  # shard layout version; other versions are another job's shards
MANIFEST = "manifest.json"

U = TypeVar("U")
T = TypeVar("T")


def fingerprint_texts(texts: Sequence[str]) -> str:
    """A stable hash of an ordered list of texts."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def shard_name(part: int, first_row: int) -> str:
    """The name of a pool batch's shard (`BatchShards`): its first key."""
    return f"{part:06d}-{first_row:09d}"


def tree_digest(root: Path) -> bytes:
    """sha256 over every file below `root`: relative names and bytes, length-prefixed."""
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        for part in (p.relative_to(root).as_posix().encode(), p.read_bytes()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.digest()


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


class VerifiedStore:
    """One job's verified directory (see the module docstring).

    Args:
      workdir: the directory (created if missing): a path, or a URL string.
      record: JSON-serialisable record of the job; None adopts the record of an existing
        manifest (reading a finished job whatever it was).
      manifest: the manifest's file name.
      where: how errors name the directory ("--workdir", "prefix directory").
      mismatch: `mismatch(old_record)` gives the error to raise for the manifest of another job
        (default: "holds shards of another job").
    """

    # how to get past a manifest that cannot be read
    fix_manifest = (
        "delete it (shards are verified against the job on their own) or use another --workdir"
    )

    def __init__(
        self,
        workdir: str | os.PathLike,
        record: dict | None,
        *,
        manifest: str = MANIFEST,
        where: str = "--workdir",
        mismatch: Callable[[object], Exception] | None = None,
    ):
        local = fs.local_of(workdir) if isinstance(workdir, str) else None
        self.remote = isinstance(workdir, str) and fs.is_url(workdir) and local is None
        self.dir: Path | str = workdir.rstrip("/") if self.remote else Path(local or workdir)
        check_workdir(self.dir, where)
        path = self.at(manifest)
        text = None if record is None else self._canonical(record)
        old = self._read(path)
        if record is None:
            if old is None:
                raise InputError(f"{self.dir}: nothing stored here ({manifest} missing)")
            record, text = old, self._canonical(old)
        if old is None:
            self.commit(path, text.encode())
        elif old != json.loads(text):
            raise (mismatch or self._another_job)(old)
        self.record = record
        self.job = hashlib.sha256(text.encode()).hexdigest()

    @staticmethod
    def _canonical(record) -> str:
        try:
            return json.dumps(record, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InputError(f"shard key is not JSON-serialisable ({e})") from None

    def at(self, name: str) -> Path | str:
        """The file `name` (a "/"-separated relative path) in the store."""
        return fs.join(self.dir, name) if self.remote else self.dir / name

    def names(self, pattern: str) -> list[str]:
        """The names of the files directly here that match the glob `pattern`, sorted."""
        if self.remote:
            return [n for n in fs.listdir(self.dir) if fnmatch.fnmatchcase(n, pattern)]
        return sorted(p.name for p in self.dir.glob(pattern))

    def read(self, path: Path | str) -> bytes:
        """The bytes of a file of the store (OSError, or InputError at a URL, when unreadable)."""
        return fs.cat(path) if self.remote else path.read_bytes()

    def _read(self, path: Path | str):
        if self.remote:
            found = fs.info(path)
            if found is None:
                return None
            if found.get("type") != "file":
                raise InputError(f"{path}: not a regular file")
        elif not path.is_file():
            if path.exists() or path.is_symlink():
                raise InputError(f"{path}: not a regular file")
            return None
        try:
            return json.loads(self.read(path))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise InputError(
                f"{path}: not a readable manifest ({e}); {self.fix_manifest}"
            ) from None

    def _another_job(self, old) -> Exception:
        return InputError(
            f"{self.dir}: holds shards of another job (its manifest differs); use another "
            "--workdir or delete it"
        )

    def tag(self, *parts: bytes) -> str:
        """The tag of a unit of this job: sha256(job hash ‖ parts, each after a NUL)[:32]."""
        return hashlib.sha256(b"\0".join([self.job.encode(), *parts])).hexdigest()[:32]

    def candidates(self, stem: str, ext: str = ".npy") -> Iterator[tuple[Path | str, str]]:
        """(path, tag) of every file `<stem>-<tag><ext>` here, in name order."""
        pat = re.compile(rf"{re.escape(stem)}-([0-9a-f]{{32}}){re.escape(ext)}")
        for name in self.names(f"{glob.escape(stem)}-*{glob.escape(ext)}"):
            m = pat.fullmatch(name)
            if m is not None:
                yield self.at(name), m.group(1)

    def discard(self, *paths: Path | str, why: str) -> None:
        """Logs a unit that does not verify and removes its files."""
        log.warning("%s: %s", paths[0], why)
        for p in paths:
            if self.remote:
                fs.remove(p)
            else:
                p.unlink(missing_ok=True)

    def commit(self, path: Path | str, data: bytes) -> Path | str:
        """Writes one file of a unit atomically (at a URL: one put of the complete bytes)."""
        if self.remote:
            fs.write_whole(path, data)
            return path
        with atomic_open(path, "wb") as f:
            f.write(data)
        return path


class ShardStore(VerifiedStore):
    """The shards of a job of `n` items, `shard_size` items each (both part of the record)."""

    def __init__(self, workdir: str | os.PathLike, key: dict, n: int, shard_size: int):
        super().__init__(workdir, {"format": FORMAT, "key": key, "n": n, "shard_size": shard_size})

    def load(self, i: int, rows: int) -> np.ndarray | None:
        """Shard i if a file verifies against this job and has `rows` rows, else None (each
        file that does not verify is logged and removed)."""
        found = None
        for p, tag in self.candidates(f"shard-{i:06d}"):
            try:
                data = self.read(p)
            except (OSError, InputError) as e:
                why = getattr(e, "strerror", None) or e
                log.warning("%s: unreadable (%s); redoing shard %d", p, why, i)
                continue
            if found is None and tag == self.tag(data):
                try:
                    arr = np.load(io.BytesIO(data), allow_pickle=False)
                except ValueError as e:  # the tag matched, so this is a bug, not damage
                    raise InputError(f"{p}: verified but not loadable ({e})") from None
                if arr.ndim >= 1 and arr.shape[0] == rows:
                    found = arr
                    continue
            why = f"damaged, truncated or from another job (does not verify); redoing shard {i}"
            self.discard(p, why=why)
        return found

    def save(self, i: int, arr: np.ndarray) -> Path | str:
        """Commits shard i atomically under its verifying name."""
        data = _npy_bytes(arr)
        return self.commit(self.at(f"shard-{i:06d}-{self.tag(data)}.npy"), data)


class BatchShards(VerifiedStore):
    """One shard per pool batch of a streamed job (`jaxsel.methods.runtime.map_batches`)."""

    def __init__(self, workdir: str | os.PathLike, key: dict, batch_size: int):
        # the record of a `ShardStore` with n = 0 (streamed): shards written before still verify
        record = {"format": FORMAT, "key": {"stream": key}, "n": 0, "shard_size": batch_size}
        super().__init__(workdir, record)

    def empty(self) -> bool:
        """Whether no shard has been committed here yet."""
        return not self.names("shard-*.npy")

    def load(self, name: str, fingerprint: str) -> tuple[np.ndarray, dict] | None:
        """The shard's (values, stats) if one verifies for these documents, else None."""
        found = None
        for p, tag in self.candidates(f"shard-{name}"):
            side = type(p)(f"{str(p)[: -len('.npy')]}.json")
            try:
                data, stats_text = self.read(p), self.read(side).decode()
            except (OSError, InputError, UnicodeDecodeError):
                data, stats_text = b"", ""
            if found is None and tag == self.tag(fingerprint.encode(), stats_text.encode(), data):
                found = np.load(io.BytesIO(data), allow_pickle=False), json.loads(stats_text)
                continue
            self.discard(p, side, why="damaged, from another job or other documents; redoing it")
        return found

    def save(self, name: str, values: np.ndarray, stats: dict, fingerprint: str) -> None:
        """Commits the batch's shard: its statistics, then its values under the verifying name."""
        data = _npy_bytes(values)
        stats_text = json.dumps(stats, sort_keys=True)
        stem = f"shard-{name}-{self.tag(fingerprint.encode(), stats_text.encode(), data)}"
        self.commit(self.at(f"{stem}.json"), stats_text.encode())
        self.commit(self.at(f"{stem}.npy"), data)


def resumed(
    units: Iterable[U],
    compute: Callable[[U], T],
    load: Callable[[U], T | None] | None = None,
    save: Callable[[U, T], object] | None = None,
) -> Iterator[tuple[U, T, bool]]:
    """The one resume loop: (unit, result, computed) for each unit in order, the result read
    back by `load(unit)` when it verifies, else `compute(unit)`, committed by `save(unit,
    result)` before it is yielded. Without `load` (no store) everything is computed."""
    for unit in units:
        done = None if load is None else load(unit)
        computed = done is None
        if computed:
            done = compute(unit)
            if save is not None:
                save(unit, done)
        yield unit, done, computed


def run_sharded(
    n: int,
    fn: Callable[[int, int], np.ndarray],
    workdir: str | os.PathLike | None,
    key: dict,
    shard_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Computes `fn(start, stop)` for consecutive shards of `range(n)` and concatenates them.

    Args:
      n: number of items.
      fn: computes the values of items [start, stop) as an array whose first axis is stop-start.
      workdir: where shards and the manifest go (`ShardStore`); None computes everything in
        memory.
      key: JSON-serialisable identity of the job; must match an existing manifest.
      shard_size: items per shard.
      progress: called with the number of items finished by each shard (resumed ones included).
    """
    if shard_size <= 0:
        raise InputError(f"shard size must be positive, got {shard_size}")
    store = None if workdir is None else ShardStore(workdir, key, n, shard_size)

    def compute(unit: tuple[int, int, int]) -> np.ndarray:
        i, s, e = unit
        arr = np.asarray(fn(s, e))
        if arr.ndim < 1 or arr.shape[0] != e - s:
            raise ValueError(f"shard {i}: fn returned shape {arr.shape}, expected {e - s} rows")
        return arr

    units = [(i, s, min(s + shard_size, n)) for i, s in enumerate(range(0, n, shard_size))]
    parts = []
    for (_, s, e), arr, _ in resumed(
        units,
        compute,
        None if store is None else lambda u: store.load(u[0], u[2] - u[1]),
        None if store is None else lambda u, arr: store.save(u[0], arr),
    ):
        parts.append(arr)
        if progress:
            progress(e - s)
    return np.concatenate(parts) if parts else np.zeros((0,))
