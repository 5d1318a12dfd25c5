"""The CPU stage on a Ray cluster: `--engine ray [--ray-address ADDR]`.

The host-pool methods (zipfit, zipfit-fast, dsir) score the pool's batches as Ray Data
`map_batches` over the same parts the local engine reads (`jaxsel.data.sources`): each Ray actor
prepares the method's target state once (compressed target sizes, DSIR counts) and then scores
whole batches of a part, named as the local engine names them (part, first row). The driver
stores each result as the same checksummed shard the local engine would write, and the local
pipeline then reads those shards back in pool order; the output is the local engine's, byte for
byte. Only batches without a finished shard are sent (a job with no shard yet sends whole
parts), so a rerun after a killed task or driver redoes the missing shards alone. A method's
first pass over the pool (DSIR's bucket counts, `Method.pool_counts`) runs there too, one part
per task; with a workdir the driver keeps each batch's counts as the local engine's shard
(`<workdir>/pool-counts`), so this pass resumes the same way, from either engine's shards.

Without an address a local Ray starts (as many CPUs as workers) and stops with the job; a
running Ray (`ray.init()` in a notebook) is used as it is. Paths of the pool must be readable by
every worker (shared storage on a real cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxsel.errors import InputError, JaxselError

log = logging.getLogger(__name__)

METHODS = ("zipfit", "zipfit-fast", "dsir")  # the host-pool (CPU compressor / hashing) methods


@dataclasses.dataclass(frozen=True)
class RayEngine:
    """Where and how wide the Ray stage runs.

    Attributes:
      address: a running cluster ("HOST:PORT" of its GCS, "ray://HOST:PORT" for Ray Client, or
        "auto"); None starts a local Ray for the job.
      workers: Ray actors scoring at once (default: the cluster's CPUs).
    """

    address: str | None = None
    workers: int | None = None

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be positive, got {self.workers}")
        if self.address is not None:
            _host_port(self.address)


class Scored(NamedTuple):
    """One batch scored by a Ray actor."""

    part: int
    first_row: int
    fingerprint: str
    values: np.ndarray
    stats: dict


def check(method_name: str) -> None:
    if method_name not in METHODS:
        raise InputError(
            f"--engine ray runs the host-pool methods ({', '.join(METHODS)}), not {method_name}"
        )


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address; None for "auto" (Ray finds it)."""
    if address == "auto":
        return None
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _reachable(address: str) -> None:
    """Refuses an address nobody listens on in one line (ray.init would retry for minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=5).close()
    except OSError as e:
        raise InputError(f"Ray address {address} unreachable ({e.strerror or e})") from None


@contextlib.contextmanager
def session(engine: RayEngine) -> Iterator[int]:
    """Connects to (or starts) Ray for the job and yields the number of workers to use; a Ray
    started here stops when the job ends, one that was running stays."""
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'jaxsel[ray]'") from None
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if engine.address is not None:
            _reachable(engine.address)
            kw["address"] = engine.address
        else:
            kw["num_cpus"] = engine.workers or os.cpu_count() or 1
        try:
            ray.init(**kw)
        except ConnectionError as e:
            raise JaxselError(f"Ray at {engine.address}: {e}") from None
        started = True
    try:
        yield engine.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
    finally:
        if started:
            ray.shutdown()


class _Scorer:
    """A Ray actor: the method's target state, prepared once, scores batches of parts."""

    def __init__(self, method_name, config, target, state, source, batch_size):
        from jaxsel import methods

        self.method = methods.get(method_name)
        if "workers" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, workers=1)  # an actor is one CPU
        self.run = methods.Run()
        self.state = state if state is not None else self.method.prepare(target, config, self.run)
        self.source = source
        self.parts = source.parts()
        self.batch_size = batch_size

    def __call__(self, jobs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from jaxsel.shards import fingerprint_texts

        out: dict[str, list] = {k: [] for k in ("part", "row", "fp", "values", "stats")}
        for part, batch in _wanted(self.source, self.parts, self.batch_size, jobs):
            res = self.method.score_batch(self.state, batch)
            out["part"].append(part)
            out["row"].append(int(batch.keys[0, 1]))
            out["fp"].append(fingerprint_texts(batch.texts))
            out["values"].append(np.asarray(res.values, np.float64).tobytes())
            out["stats"].append(json.dumps(res.stats))
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _wanted(source, parts: list, batch_size: int, jobs: dict[str, np.ndarray]) -> Iterator:
    """(part index, batch) of the batches that `jobs` names (a part and the JSON list of its
    batches' first rows, or null for all of them)."""
    for part, rows in zip(jobs["part"].tolist(), jobs["rows"].tolist(), strict=True):
        wanted = json.loads(rows)
        wanted = None if wanted is None else set(wanted)
        for batch in source.batches(batch_size, [parts[part]]):
            if wanted is None or int(batch.keys[0, 1]) in wanted:
                yield part, batch


def _items(jobs: dict[int, list[int] | None]) -> list[dict]:
    return [
        {"part": p, "rows": json.dumps(None if r is None else sorted(r))}
        for p, r in sorted(jobs.items())
    ]


class _Counter:
    """A Ray actor: a method's first pass (`Method.pool_counts`) over batches of parts."""

    def __init__(self, method_name, state, source, batch_size):
        from jaxsel import methods

        self.method = methods.get(method_name)
        self.state, self.source, self.batch_size = state, source, batch_size
        self.parts = source.parts()

    def __call__(self, jobs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from jaxsel.methods import batch_counts
        from jaxsel.shards import fingerprint_texts

        out: dict[str, list] = {k: [] for k in ("part", "row", "fp", "counts", "docs")}
        for part, batch in _wanted(self.source, self.parts, self.batch_size, jobs):
            buf = io.BytesIO()
            np.save(buf, batch_counts(self.method, self.state, batch), allow_pickle=False)
            out["part"].append(part)
            out["row"].append(int(batch.keys[0, 1]))
            out["fp"].append(fingerprint_texts(batch.texts))
            out["counts"].append(buf.getvalue())
            out["docs"].append(len(batch.texts))
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _map(engine: RayEngine, run, actor: type, args: tuple, items: list[dict]) -> Iterator[dict]:
    """`items` through Ray Data map_batches on a pool of `actor`s (one item per call): the
    output batches as they finish."""
    workers = run.enter(session(engine))
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items).map_batches(
        actor,
        fn_constructor_args=args,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def count_parts(engine: RayEngine, method, source, state, batch_size: int, run, store=None):
    """`methods.PartCounts` of every part of the pool, in part order, counted on Ray (one part
    per task). With a `store` (`jaxsel.shards.BatchShards`, the local engine's pool-counts
    shards) each batch's counts are read back from a verifying shard or counted on Ray and
    saved there, so a rerun counts only the missing batches."""
    from jaxsel.methods import PartCounts
    from jaxsel.shards import fingerprint_texts, shard_name

    check(method.name)
    batches: dict[int, dict[int, tuple[str, int]]] = {}  # part -> first row -> (fp, docs)
    sums: dict[int, np.ndarray] = {}

    def add(part: int, row: int, fp: str, docs: int, counts: np.ndarray) -> None:
        batches.setdefault(part, {})[row] = fp, docs
        sums[part] = counts if part not in sums else sums[part] + counts

    jobs: dict[int, list[int] | None] = {}
    if store is None or store.empty():  # nothing to resume: whole parts, without reading here
        jobs = {p: None for p in range(len(source.parts()))}
    else:
        for b in source.batches(batch_size):
            part, row, fp = int(b.keys[0, 0]), int(b.keys[0, 1]), fingerprint_texts(b.texts)
            done = store.load(shard_name(part, row), fp)
            if done is None:
                jobs.setdefault(part, []).append(row)
            else:
                add(part, row, fp, len(b.texts), done[0])
    counted = 0
    if jobs:
        args = (method.name, state, source, batch_size)
        for out in _map(engine, run, _Counter, args, _items(jobs)):
            for p, r, fp, c, n in zip(
                out["part"], out["row"], out["fp"], out["counts"], out["docs"], strict=True
            ):
                counts = np.load(io.BytesIO(c), allow_pickle=False)
                if store is not None:
                    store.save(shard_name(int(p), int(r)), counts, {}, str(fp))
                add(int(p), int(r), str(fp), int(n), counts)
                counted += 1
    log.info("%s: %d batches counted on Ray", method.name, counted)
    for part in sorted(batches):
        h = hashlib.sha256()
        for row in sorted(batches[part]):
            h.update(batches[part][row][0].encode())
        docs = sum(n for _, n in batches[part].values())
        yield PartCounts(part, sums[part], h.digest(), docs)


def score_batches(
    engine: RayEngine,
    method,
    source,
    target,
    config,
    state,
    jobs: dict[int, list[int] | None],
    batch_size: int,
    run,
) -> Iterator[Scored]:
    """Scores the batches `jobs` ({part index: [first rows], or None for every batch of the
    part}) on Ray, results as they finish.

    `state` is shipped to the actors when it depends on the pool (a method with `fit_pool`,
    fitted once by the caller); otherwise each actor prepares its own from `target`.
    """
    check(method.name)
    if not jobs:
        return
    items = _items(jobs)
    shipped = state if method.fit_pool is not None else None
    args = (method.name, config, target, shipped, source, batch_size)
    for out in _map(engine, run, _Scorer, args, items):
        for p, r, fp, v, st in zip(
            out["part"], out["row"], out["fp"], out["values"], out["stats"], strict=True
        ):
            yield Scored(int(p), int(r), str(fp), np.frombuffer(v, np.float64), json.loads(st))
