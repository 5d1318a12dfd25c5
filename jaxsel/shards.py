"""Resumable scoring in shards: long jobs write one `.npy` per finished shard plus a manifest
and, after a crash, redo only the shards that are missing.

The manifest records a key (method, config, pool fingerprint) so that stale shards from another
job are never mixed in: a directory with a different key is an error, not a silent restart.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxsel.errors import InputError


def fingerprint_texts(texts: Sequence[str]) -> str:
    """A stable hash of an ordered list of texts."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


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
    if workdir is None:
        parts = []
        for s, e in bounds:
            parts.append(np.asarray(fn(s, e)))
            if progress:
                progress(e - s)
        return np.concatenate(parts) if parts else np.zeros((0,))
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    manifest = wd / "manifest.json"
    full_key = {"key": key, "n": n, "shard_size": shard_size}
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old != full_key:
            raise InputError(
                f"{wd}: holds shards of another job (its manifest differs); use another "
                "--workdir or delete it"
            )
    else:
        tmp = wd / "manifest.json.tmp"
        tmp.write_text(json.dumps(full_key, sort_keys=True))
        os.replace(tmp, manifest)
    parts = []
    for i, (s, e) in enumerate(bounds):
        path = wd / f"shard-{i:06d}.npy"
        if path.exists():
            arr = np.load(path)
            if arr.shape[0] != e - s:
                raise InputError(f"{path}: has {arr.shape[0]} rows, expected {e - s}")
        else:
            arr = np.asarray(fn(s, e))
            _atomic_save(path, arr)
        parts.append(arr)
        if progress:
            progress(e - s)
    return np.concatenate(parts) if parts else np.zeros((0,))


class ShardStore:
    """Resumable shards of a streamed job, one per pool batch, named by the batch (`name`, e.g.
    its first key): `shard-NAME.npy` (the batch's scores) and `shard-NAME.json` (rows, the
    batch's text fingerprint, additive statistics, and the sha256 of the .npy), written in that
    order, each atomically. Names that do not depend on who scores a batch let any process or
    engine resume any other's shards.

    A shard counts as finished only when its .json exists and the .npy matches its checksum;
    anything else is recomputed. The manifest binds the directory to one job (`key`), and each
    shard to the documents it scored: a shard whose batch fingerprint differs from the batch
    read now means the pool changed, an error rather than a silent mix.
    """

    def __init__(self, workdir: str | os.PathLike, key: dict):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        full_key = {"key": key, "stream": 1}
        if manifest.exists():
            if json.loads(manifest.read_text()) != full_key:
                raise InputError(
                    f"{self.dir}: holds shards of another job (its manifest differs); use another "
                    "--workdir or delete it"
                )
        else:
            tmp = self.dir / "manifest.json.tmp"
            tmp.write_text(json.dumps(full_key, sort_keys=True))
            os.replace(tmp, manifest)

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"shard-{name}.npy", self.dir / f"shard-{name}.json"

    def load(self, name: str, fingerprint: str) -> tuple[np.ndarray, dict] | None:
        """The shard's (values, stats) if it is finished and verifies, else None."""
        npy, meta = self._paths(name)
        if not meta.exists():
            return None
        info = json.loads(meta.read_text())
        if info["batch"] != fingerprint:
            raise InputError(
                f"{meta}: was computed from other documents than this pool's batch (the pool "
                "changed?); use another --workdir or delete it"
            )
        try:
            data = npy.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            return None
        values = np.load(npy)
        if values.shape != (info["rows"],):
            return None
        return values, info["stats"]

    def save(self, name: str, values: np.ndarray, stats: dict, fingerprint: str) -> None:
        npy, meta = self._paths(name)
        _atomic_save(npy, values)
        info = {
            "rows": int(values.shape[0]),
            "batch": fingerprint,
            "stats": stats,
            "sha256": hashlib.sha256(npy.read_bytes()).hexdigest(),
        }
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps(info, sort_keys=True))
        os.replace(tmp, meta)
