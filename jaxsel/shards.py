"""Resumable scoring in shards: long jobs write one `.npy` per finished shard plus a manifest
and, after a crash, redo only the shards that are missing or do not verify.

Integrity and identity travel with every shard: shard i of a job is the file
`shard-<i:06d>-<tag>.npy` with `tag = sha256(job hash ‖ the file's bytes)[:32]`, where the job
hash covers the job's key, its size and its shard size. A shard is used only if its bytes hash to
its tag under *this* job's hash, so a damaged, empty or truncated shard, or one left by another
job (even with `manifest.json` deleted), is never read back: it is redone with a warning naming
the file, and replaced. Every file is written atomically (`jaxsel.data.outputs`).

`manifest.json` records the key for people and for a clear refusal: a directory whose manifest
holds another job's key is an error (use another workdir or delete it), as is a manifest that
is not readable JSON; a missing manifest is written anew (the shards verify on their own).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxsel.data.outputs import atomic_open, check_workdir, write_text
from jaxsel.errors import InputError

log = logging.getLogger(__name__)

FORMAT = 2  # manifest/shard layout version; other versions are another job's shards
MANIFEST = "manifest.json"


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


def _tag(job: str, data: bytes) -> str:
    return hashlib.sha256(job.encode() + b"\0" + data).hexdigest()[:32]


class ShardStore:
    """The verified shard files of one job in one directory.

    Args:
      workdir: the directory (created if missing).
      key: JSON-serialisable identity of the job.
      n: number of items; shard_size: items per shard (both part of the identity).
    """

    def __init__(self, workdir: str | os.PathLike, key: dict, n: int, shard_size: int):
        self.dir = Path(workdir)
        check_workdir(self.dir)
        full = {"format": FORMAT, "key": key, "n": n, "shard_size": shard_size}
        try:
            text = json.dumps(full, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InputError(f"shard key is not JSON-serialisable ({e})") from None
        self.job = hashlib.sha256(text.encode()).hexdigest()
        manifest = self.dir / MANIFEST
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_bytes())
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                raise InputError(
                    f"{manifest}: not a readable manifest ({e}); delete it (shards are verified "
                    "against the job on their own) or use another --workdir"
                ) from None
            if old != json.loads(text):
                raise InputError(
                    f"{self.dir}: holds shards of another job (its manifest differs); use "
                    "another --workdir or delete it"
                )
        elif manifest.exists() or manifest.is_symlink():
            raise InputError(f"{manifest}: not a regular file")
        else:
            write_text(manifest, text)

    def _files(self, i: int) -> list[Path]:
        pat = re.compile(rf"shard-{i:06d}-[0-9a-f]{{32}}\.npy")
        return sorted(p for p in self.dir.glob(f"shard-{i:06d}-*.npy") if pat.fullmatch(p.name))

    def load(self, i: int, rows: int) -> np.ndarray | None:
        """Shard i if a file verifies against this job and has `rows` rows, else None (each
        file that does not verify is logged and removed)."""
        found = None
        for p in self._files(i):
            try:
                data = p.read_bytes()
            except OSError as e:
                log.warning("%s: unreadable (%s); redoing shard %d", p, e.strerror, i)
                continue
            if found is None and p.name.endswith(f"-{_tag(self.job, data)}.npy"):
                try:
                    arr = np.load(io.BytesIO(data), allow_pickle=False)
                except ValueError as e:  # the tag matched, so this is a bug, not damage
                    raise InputError(f"{p}: verified but not loadable ({e})") from None
                if arr.ndim >= 1 and arr.shape[0] == rows:
                    found = arr
                    continue
            log.warning(
                "%s: damaged, truncated or from another job (does not verify); redoing shard %d",
                p,
                i,
            )
            p.unlink(missing_ok=True)
        return found

    def save(self, i: int, arr: np.ndarray) -> Path:
        """Commits shard i atomically under its verifying name."""
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        data = buf.getvalue()
        path = self.dir / f"shard-{i:06d}-{_tag(self.job, data)}.npy"
        with atomic_open(path, "wb") as f:
            f.write(data)
        return path


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
      workdir: where shards and the manifest go; None computes everything in memory.
      key: JSON-serialisable identity of the job; must match an existing manifest.
      shard_size: items per shard.
      progress: called with the number of items finished by each shard (resumed ones included).
    """
    if shard_size <= 0:
        raise InputError(f"shard size must be positive, got {shard_size}")
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    store = None if workdir is None else ShardStore(workdir, key, n, shard_size)
    parts = []
    for i, (s, e) in enumerate(bounds):
        arr = None if store is None else store.load(i, e - s)
        if arr is None:
            arr = np.asarray(fn(s, e))
            if arr.ndim < 1 or arr.shape[0] != e - s:
                raise ValueError(f"shard {i}: fn returned shape {arr.shape}, expected {e - s} rows")
            if store is not None:
                store.save(i, arr)
        parts.append(arr)
        if progress:
            progress(e - s)
    return np.concatenate(parts) if parts else np.zeros((0,))


class BatchShards:
    """Resumable shards of a streamed job (`jaxsel.pipeline`), one per pool batch, named by the
    batch (its first key) rather than by a position in a job of known size, so any process or
    engine resumes any other's shards.

    A shard is `shard-NAME-TAG.npy` (the batch's scores) beside `shard-NAME-TAG.json` (its
    additive statistics), committed json first, each atomically; TAG = sha256(job hash ‖ the
    batch's text fingerprint ‖ the statistics ‖ the .npy bytes)[:32], so a shard verifies only
    for this job (`ShardStore`'s manifest and job hash, with n = 0: streamed) and these very
    documents. Anything that does not verify is logged, removed and redone.
    """

    def __init__(self, workdir: str | os.PathLike, key: dict, batch_size: int):
        self.store = ShardStore(workdir, {"stream": key}, 0, batch_size)

    def _tag(self, fingerprint: str, stats_text: str, data: bytes) -> str:
        return _tag(f"{self.store.job}\0{fingerprint}\0{stats_text}", data)

    def empty(self) -> bool:
        """Whether no shard has been committed here yet."""
        return not any(self.store.dir.glob("shard-*.npy"))

    def load(self, name: str, fingerprint: str) -> tuple[np.ndarray, dict] | None:
        """The shard's (values, stats) if one verifies for these documents, else None."""
        pat = re.compile(rf"shard-{re.escape(name)}-([0-9a-f]{{32}})\.npy")
        found = None
        for p in sorted(self.store.dir.glob(f"shard-{name}-*.npy")):
            m = pat.fullmatch(p.name)
            if m is None:
                continue
            side = p.with_suffix(".json")
            try:
                data, stats_text = p.read_bytes(), side.read_text()
            except (OSError, UnicodeDecodeError):
                data, stats_text = b"", ""
            if found is None and m.group(1) == self._tag(fingerprint, stats_text, data):
                found = np.load(io.BytesIO(data), allow_pickle=False), json.loads(stats_text)
                continue
            log.warning("%s: damaged, from another job or other documents; redoing it", p)
            p.unlink(missing_ok=True)
            side.unlink(missing_ok=True)
        return found

    def save(self, name: str, values: np.ndarray, stats: dict, fingerprint: str) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(values), allow_pickle=False)
        data = buf.getvalue()
        stats_text = json.dumps(stats, sort_keys=True)
        stem = f"shard-{name}-{self._tag(fingerprint, stats_text, data)}"
        write_text(self.store.dir / f"{stem}.json", stats_text)
        with atomic_open(self.store.dir / f"{stem}.npy", "wb") as f:
            f.write(data)
