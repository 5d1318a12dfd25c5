"""Optional passes, as wrappers that return the contract's own types.

- `with_pool_pass(method, count, fit) -> Streamed`: before scoring, a first pass over the whole
  pool fits the state (DSIR's raw bucket counts). `count(state, batch)` gives additive integer
  statistics of one batch; they are summed over the pool through the run's batch loop, split as
  scoring is (each process its own parts, Ray actors), so the sum is exact in any order; then
  `fit(state, total, pool)` fixes the state, `pool` being a fingerprint of the pool's texts.
  With a workdir each batch's counts are a resumable shard in `<workdir>/pool-counts`.
- `rescored(method, rescore) -> WholePool`: a step over the whole [N] score vector after
  scoring (`rescore(values, pool, config) -> values`: zipfit's length debiasing, DSIR's Gumbel
  keys); only then is one float per document held in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging

import numpy as np

from jaxsel.errors import InputError
from jaxsel.methods.contract import Streamed, WholePool
from jaxsel.methods.runtime import Run, score
from jaxsel.shards import fingerprint_texts

log = logging.getLogger(__name__)


def _counts(count, name: str, state, batch) -> tuple[np.ndarray, dict]:
    c = np.asarray(count(state, batch))
    if c.dtype.kind not in "iu":
        raise TypeError(f"{name}: pool counts must be integers, got {c.dtype}")
    return c.astype(np.int64), {}


def _counter(count, name: str, state):
    return functools.partial(_counts, count, name, state)


def _fitted(prepare, count, fit, name: str, pool, target, config, run: Run):
    """`prepare`, then the pool's counts summed over every part, then `fit`."""
    from jaxsel import parallel

    state = prepare(pool, target, config, run)
    per_part: dict[int, list] = {}  # part -> [summed counts, sha256 of fingerprints, docs]
    make = functools.partial(_counter, count, name, state)
    for batch, c, _ in run.map_batches(
        pool,
        make,
        batch_size=config.shard_size,
        key={"pool_counts": state.key},
        subdir="pool-counts",
        desc=f"{name} (counts)",
    ):
        part = per_part.setdefault(int(batch.keys[0, 0]), [0, hashlib.sha256(), 0])
        part[0] = part[0] + c
        part[1].update(fingerprint_texts(batch.texts).encode())
        part[2] += len(batch)
    log.info(
        "%s: pool counts of %d documents in %d part(s), %s",
        name,
        sum(p[2] for p in per_part.values()),
        len(per_part),
        run.engine.where,
    )
    mine = [p[0] for p in per_part.values()]
    mine = sum(mine[1:], mine[0]) if mine else np.zeros(0, np.int64)
    sums = parallel.allgather_rows(mine) if parallel.distributed() else [mine]
    sums = [a for a in sums if a.size]
    if not sums:
        raise InputError(f"{name}: the pool is empty")
    index = parallel.gathered(np.array(list(per_part), np.int64))
    digests = parallel.gathered(
        np.frombuffer(b"".join(p[1].digest() for p in per_part.values()), np.uint8).reshape(-1, 32)
    )
    h = hashlib.sha256()
    for i in np.argsort(index, kind="stable").tolist():
        h.update(int(index[i]).to_bytes(8, "little") + digests[i].tobytes())
    return fit(state, sum(sums[1:], sums[0]), h.hexdigest()[:32])


def with_pool_pass(method: Streamed, count, fit) -> Streamed:
    """`method` whose state is fitted to the whole pool before scoring (module docstring)."""
    prepare = functools.partial(_fitted, method.prepare, count, fit, method.name)
    return method._replace(prepare=prepare)


def _rescored(inner: Streamed, rescore, pool, target, config, run: Run):
    s = score(inner, pool, target, config, run)
    return dataclasses.replace(s, values=rescore(s.values, pool, config))


def rescored(method: Streamed, rescore) -> WholePool:
    """`method` followed by a step over the whole score vector (module docstring)."""
    fn = functools.partial(_rescored, method, rescore)
    return WholePool(method.name, method.config_cls, fn, method.engines)
