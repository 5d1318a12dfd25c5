"""Running a method: the job's context (`Run`), the one resumable batch loop (`map_batches`) with
the engine it runs on handed in, and `score`, which runs a method of either type on a pool.

`map_batches` is the streamed use of the one loop of the form "for each unit without a verified
shard: compute, commit" (`jaxsel.shards.resumed`): scoring, DSIR's pool counts and GIP's
embeddings all go through it. An engine decides which parts of the pool this process reads and
may compute batches elsewhere first:

- `LocalEngine`: this process computes every batch it reads; in a JAX multi-process job each
  process reads its own parts (`parallel.local_parts`) and duplicate ids are looked for across
  all of them after the pass.
- `jaxsel.ray_engine.RayEngine`: computes the batches without a finished shard on Ray actors
  and stores them as the same shards; the loop then reads them back here in pool order, so the
  output is the local engine's, byte for byte.

A batch function is made by a picklable `make()` (called once here, or once per Ray actor) and
maps a `Batch` to `(array, stats)`; with a workdir (or on an engine that needs one) every
batch's result is a checksummed shard bound to the job's key (`jaxsel.shards.BatchShards`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from jaxsel.errors import InputError
from jaxsel.methods.contract import Streamed, WholePool, fields_with
from jaxsel.scores import Scores

log = logging.getLogger(__name__)

BatchFn = Callable[[Any], tuple[np.ndarray, dict]]


class Engine(Protocol):
    """Where the batches of `map_batches` are computed.

    Attributes:
      name: the engine's name in a method's `engines`.
      where: where it computes, for logs ("here", "on Ray").
      needs_store: results travel through shards (a temporary workdir when the job has none).
    """

    name: str
    where: str
    needs_store: bool

    def parts(self, source) -> list | None:
        """The parts of `source` this process reads (None: all of them)."""

    def fill(
        self, source, make: Callable[[], BatchFn], store, batch_size: int, desc: str, progress
    ):
        """Computes and stores the batches of `source` without a finished shard in `store`
        (`progress`: with a bar of its own)."""


class LocalEngine:
    """This process; in a JAX multi-process job, this process's share of the parts."""

    name = "local"
    where = "here"
    needs_store = False

    def parts(self, source) -> list | None:
        from jaxsel import parallel

        return parallel.local_parts(source)

    def fill(self, source, make, store, batch_size: int, desc: str, progress=False) -> None:
        return None


def map_batches(
    source,
    make: Callable[[], BatchFn],
    engine: Engine,
    *,
    batch_size: int,
    workdir: str | os.PathLike | None = None,
    key: dict | None = None,
    desc: str = "",
    progress: bool = False,
) -> Iterator[tuple[Any, np.ndarray, dict]]:
    """(batch, array, stats) for every batch of the parts of `source` this process reads, in
    pool order: read back from a verified shard, or computed by `make()(batch)` and committed.

    With `workdir`, results are shards bound to `key` there (a workdir of another job is
    refused); an engine that `needs_store` gets a temporary one when there is none. `progress`:
    a bar whose total (bytes or rows of this process's parts) is known before reading, and a
    resumed pass logs how many batches are already done (`jaxsel.data.progress`).
    """
    from jaxsel import parallel
    from jaxsel.data.progress import PoolProgress, resuming_line
    from jaxsel.data.sources import IdDigests
    from jaxsel.shards import BatchShards, fingerprint_texts, resumed, shard_name

    with contextlib.ExitStack() as stack:
        if workdir is None and engine.needs_store:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="jaxsel-"))
        store = None if workdir is None else BatchShards(workdir, key or {}, batch_size)
        parts = engine.parts(source)
        mine = source.parts() if parts is None else parts
        if store is not None and not store.empty():
            line = resuming_line(desc, _stored_batches(store), source, mine, batch_size)
            log.info("%s (read back from %s)", line, workdir)
        if store is not None:
            engine.fill(source, make, store, batch_size, desc, progress)
        if parts is None:
            ids, batches = None, source.batches(batch_size)
        else:  # several processes: duplicate ids are looked for across all of them, after
            ids, batches = IdDigests(), source.batches(batch_size, parts, check_ids=False)
        fn, reused, computed = None, 0, 0

        def units():  # (batch, shard name, text fingerprint)
            for batch in batches:
                if ids is not None:
                    ids.add(batch)
                name = shard_name(int(batch.keys[0, 0]), int(batch.keys[0, 1]))
                yield batch, name, fingerprint_texts(batch.texts)

        def compute(unit):
            nonlocal fn
            fn = make() if fn is None else fn
            return fn(unit[0])

        load = None if store is None else lambda u: store.load(u[1], u[2])
        save = None if store is None else lambda u, d: store.save(u[1], d[0], d[1], u[2])
        # A total known before reading (this process's parts); read-back batches advance the
        # bar but not its rate, so the ETA is that of the work left.
        bar = stack.enter_context(
            contextlib.closing(PoolProgress.of(source, mine, desc, disable=not progress))
        )
        for (batch, _, _), done, fresh in resumed(units(), compute, load, save):
            computed += fresh
            reused += not fresh
            bar.advance(batch, computed=fresh)
            yield batch, done[0], done[1]
        bar.end()
        if reused:
            log.info(
                "%s: %d of %d batches read back from the workdir", desc, reused, reused + computed
            )
        if ids is not None:
            ids.verify(source.locate, parallel.gathered)


def _stored_batches(store) -> set[tuple[int, int]]:
    """(part, first row) of the batch shards in a store (`shards.shard_name`), on disk or at a
    URL, verified or not: what a resumed pass will try to read back."""
    found = (_SHARD.fullmatch(n) for n in store.names("shard-*.npy"))
    return {(int(m.group(1)), int(m.group(2))) for m in found if m}


_SHARD = re.compile(r"shard-(\d+)-(\d+)-[0-9a-f]+\.npy")


class Run:
    """One job's shared context: workdir, progress, mesh, loaded models, open resources, and
    the engine of the CPU stage (default: `LocalEngine`).

    Use as a context manager; resources entered with `enter` (and an engine that is a context
    manager, e.g. a Ray session) close when it exits.
    """

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        progress: bool = False,
        mesh=None,
        models: dict | None = None,
        engine: Engine | None = None,
    ):
        self.workdir = None if workdir is None else str(workdir)
        self.progress = progress
        self.mesh = mesh
        self.models: dict = {} if models is None else models  # shared with the caller's
        self._stack = contextlib.ExitStack()
        engine = LocalEngine() if engine is None else engine
        self.engine = self.enter(engine) if hasattr(engine, "__enter__") else engine

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def enter(self, resource):
        """Enters a context manager for the rest of the run and returns its value."""
        return self._stack.enter_context(resource)

    def model(self, key: tuple, load: Callable[[], Any]) -> Any:
        """The model cached under `key`, loaded by `load()` on first use."""
        if key not in self.models:
            self.models[key] = load()
        return self.models[key]

    def lm(self, model: str | None, dtype: str):
        """The causal LM `model` (None = the embedded SmolLM2) in `dtype`, loaded once per run."""
        from jaxsel.models.loaders import load_lm

        return self.model(("lm", model, dtype), lambda: load_lm(model, dtype))

    def subdir(self, name: str) -> str | None:
        """A directory inside the workdir (None without one)."""
        return None if self.workdir is None else os.path.join(self.workdir, name)

    def map_batches(
        self, source, make, *, batch_size: int, key: dict, subdir: str | None = None, desc=""
    ) -> Iterator[tuple[Any, np.ndarray, dict]]:
        """`map_batches` on this run's engine, with shards in the workdir (or `subdir` of it)."""
        workdir = self.workdir if subdir is None else self.subdir(subdir)
        return map_batches(
            source,
            make,
            self.engine,
            batch_size=batch_size,
            workdir=workdir,
            key=key,
            desc=desc,
            progress=self.progress,
        )


# ------------------------------------------------------------------------------- scoring


def check_engine(method, run: Run) -> None:
    if run.engine.name not in method.engines:
        raise InputError(
            f"{method.name} runs on the {' and '.join(sorted(method.engines))} engine(s), "
            f"not --engine {run.engine.name}"
        )


def _checked_scores(method: Streamed, state, batch) -> tuple[np.ndarray, dict]:
    res = method.score_batch(state, batch)
    values = np.asarray(res.values, np.float64)
    if values.shape != (len(batch.texts),):
        raise ValueError(f"{method.name}: {values.shape} scores for {len(batch.texts)} documents")
    if np.isnan(values).any():
        raise InputError(f"{method.name}: {int(np.isnan(values).sum())} NaN scores")
    return values, res.stats


def _scorer(method: Streamed, state, source, target, config) -> BatchFn:
    """The batch function of a streamed method; without a `state` (one that could not travel
    to a Ray actor) it is prepared here, with every per-worker field set to 1."""
    if state is None:
        one = {name: 1 for name in fields_with(method.config_cls, "per_worker")}
        state = method.prepare(source, target, dataclasses.replace(config, **one), Run())
    return functools.partial(_checked_scores, method, state)


def _travels(state) -> bool:
    """Whether the state can be shipped to another process (else it is prepared there)."""
    try:
        pickle.dumps(state)
    except Exception:  # a thread or process pool, a lock, a device buffer, ...
        return False
    return True


def scored_batches(method: Streamed, source, target, state, config, run: Run):
    """(batch, float64 scores, stats) of every batch this process reads, in pool order."""
    shipped = state if not run.engine.needs_store or _travels(state) else None
    make = functools.partial(_scorer, method, shipped, source, target, config)
    return run.map_batches(
        source, make, batch_size=config.shard_size, key=state.key, desc=method.name
    )


def score(method, source, target, config, run: Run) -> Scores:
    """Scores of every pool document, pool order, for a method of either type."""
    from jaxsel import parallel

    check_engine(method, run)
    if isinstance(method, WholePool):
        return method.score(source, target, config, run)
    state = method.prepare(source, target, config, run)
    stats: dict = {}
    keys, values = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    for batch, v, st in scored_batches(method, source, target, state, config, run):
        keys.append(batch.keys)
        values.append(v)
        for name, x in st.items():
            stats[name] = stats.get(name, 0) + x
    # several processes: every process gets the whole vector, in pool order
    _, vector = parallel.in_pool_order(np.concatenate(keys), np.concatenate(values))
    if not vector.size:
        raise InputError(f"{method.name}: the pool is empty")
    return Scores(vector, method.name, method.describe(state, parallel.summed(stats)))


def count(source) -> int:
    """Number of documents in a source (one reading pass)."""
    from jaxsel.data.sources import READ_BATCH

    return sum(len(b.texts) for b in source.batches(READ_BATCH))
