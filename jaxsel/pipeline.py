"""The streaming score/select pipeline, written once for every method (`jaxsel.methods`).

Memory stays flat in the pool size: the pool is read batch by batch; a streamed method prepares
its target state once and scores batch after batch through the one batch loop
(`jaxsel.methods.runtime.map_batches`, on the run's engine); scores go to resumable shards
(with a workdir, `jaxsel.shards.BatchShards`); `select` keeps a bounded top-K (or the items
above a threshold), then a second pass over the pool picks the chosen records, which are
written best first (a top-K of at most `RECORDS_KEPT` keeps its records while scoring and needs
no second pass). Ties are broken by pool order everywhere (`Batch.keys`: lexicographic order =
pool order).

Whole-pool methods (a rescore pass, GIP, random, hybrid) hold one float per document (8 bytes),
a `--budget-bytes` selection holds (score, key, size) per document (32 bytes) and a threshold
selection the same for the items above it; nothing holds texts or records of the whole pool.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxsel import parallel
from jaxsel.data.adapters import as_corpus, fingerprint
from jaxsel.data.sources import READ_BATCH
from jaxsel.data.writers import OutSpec, json_line, out_spec, write_output
from jaxsel.errors import InputError
from jaxsel.methods import Entry, Method, Run, Streamed, fields_with, runtime
from jaxsel.scores import Scores, _check_k, check_rule, json_score

log = logging.getLogger(__name__)

RECORDS_KEPT = 16384  # a top-K up to this K keeps its records while scoring (no output pass)


# ------------------------------------------------------------------------------- scoring


def _value(method: Method | Entry, config) -> Method:
    """The method value for `config` (a registry entry builds it)."""
    return method.build(config) if isinstance(method, Entry) else method


def score(method: Method | Entry, source, target, config, run: Run) -> Scores:
    """Scores of every pool document, pool order (the in-memory result of the stream)."""
    target = None if target is None else as_corpus(target)
    return runtime.score(_value(method, config), source, target, config, run)


def _with_scores(method: Method, source, target, config, run: Run):
    """(batch, scores) over this process's parts of the pool: streamed, or slices of the whole
    vector."""
    target = None if target is None else as_corpus(target)
    method = _value(method, config)
    if isinstance(method, Streamed):
        runtime.check_engine(method, run)
        state = method.prepare(source, target, config, run)
        for batch, values, _ in runtime.scored_batches(method, source, target, state, config, run):
            yield batch, values
        return
    scores = runtime.score(method, source, target, config, run)
    mine = parallel.local_parts(source)
    if mine is None:
        batches, start = source.batches(READ_BATCH), 0
    else:  # this process's parts follow those of the processes before it (contiguous runs)
        rows = sum(len(b) for b in source.batches(READ_BATCH, mine, check_ids=False))
        before = parallel.gathered(np.array([rows], np.int64))[: parallel.processes().index]
        batches, start = source.batches(READ_BATCH, mine, check_ids=False), int(before.sum())
    for batch in batches:
        yield batch, scores.values[start : start + len(batch.texts)]
        start += len(batch.texts)


def score_rows(method: Method, source, target, config, run: Run) -> Iterator[tuple[Any, float]]:
    """(id, score) of every pool document, pool order, streamed. On several processes the
    scores (24 bytes per document) are gathered and process 0 yields every row; the others
    yield none."""
    if not parallel.distributed():
        empty = True
        for batch, values in _with_scores(method, source, target, config, run):
            empty = False
            yield from zip(batch.ids, values.tolist(), strict=True)
        if empty:
            raise InputError(f"{method.name}: the pool is empty")
        return
    keys, values = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    for batch, v in _with_scores(method, source, target, config, run):
        keys.append(batch.keys)
        values.append(v)
    _, values = parallel.in_pool_order(np.concatenate(keys), np.concatenate(values))
    if not values.size:
        raise InputError(f"{method.name}: the pool is empty")
    if not parallel.is_writer():
        return
    start = 0
    for batch in source.batches(READ_BATCH):
        yield from zip(batch.ids, values[start : start + len(batch.ids)].tolist(), strict=True)
        start += len(batch.ids)


# ----------------------------------------------------------------------------- selection


def _best_first(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Order of (score desc, key asc): the selection order with ties by pool order."""
    return np.lexsort((keys[:, 1], keys[:, 0], -scores))


class TopK:
    """The K best (score, key) pairs seen so far, best first; memory O(K + batch).

    With `records`, the records of the K best are kept too (so a small top-K needs no second
    pass over the pool).
    """

    def __init__(self, k: int, records: bool = False):
        self.k = k
        self.scores = np.zeros(0)
        self.keys = np.zeros((0, 2), np.int64)
        self.records: list | None = [] if records else None

    def add(self, scores: np.ndarray, keys: np.ndarray, records: list | None = None) -> None:
        if len(self.scores) == self.k:  # only items not below the K-th can enter
            can = np.flatnonzero(scores >= self.scores[-1])
            scores, keys = scores[can], keys[can]
            if self.records is not None:
                records = [records[i] for i in can.tolist()]
        if not len(scores):
            return
        s = np.concatenate([self.scores, scores])
        k = np.concatenate([self.keys, keys])
        best = _best_first(s, k)[: self.k]
        self.scores, self.keys = s[best], k[best]
        if self.records is not None:
            both = self.records + records
            self.records = [both[i] for i in best.tolist()]


class Selected(NamedTuple):
    """A selection: keys (int64 [s, 2]) and scores (float64 [s]), best first, and the records
    when they were kept on the way (small top-K), else None (a second pass picks them)."""

    keys: np.ndarray
    scores: np.ndarray
    pool_size: int
    records: list | None = None


def select(
    method: Method,
    source,
    target,
    config,
    run: Run,
    *,
    k: int | None = None,
    threshold: float | None = None,
    budget_bytes: int | None = None,
) -> Selected:
    """The selection of one rule (top-K, score > threshold, or the best-first prefix within a
    byte budget) over the pool, best first, ties by pool order; one scoring pass. On several
    processes each keeps its own candidates (its top-K, its items above the threshold), which
    are gathered and merged by the same rule: every process returns the same selection."""
    check_rule(k, threshold, budget_bytes)
    k_fields = fields_with(method.config_cls, "k")  # a greedy method's step count
    unset = [f for f in k_fields if getattr(config, f) is None]
    if k is not None and unset:
        config = dataclasses.replace(config, **{f: k for f in unset})
    # several processes keep only keys: process 0 reads the winners' records afterwards
    keep_records = k is not None and k <= RECORDS_KEPT and not parallel.distributed()
    top = TopK(k, records=keep_records) if k is not None else None
    kept_s, kept_k, kept_b = [np.zeros(0)], [np.zeros((0, 2), np.int64)], [np.zeros(0, np.int64)]
    n = 0
    for batch, values in _with_scores(method, source, target, config, run):
        n += len(values)
        if top is not None:
            top.add(values, batch.keys, batch.records)
        elif threshold is not None:
            above = values > threshold
            kept_s.append(values[above])
            kept_k.append(batch.keys[above])
        else:
            kept_s.append(values)
            kept_k.append(batch.keys)
            kept_b.append(np.array([len(t.encode("utf-8")) for t in batch.texts], np.int64))
    if parallel.distributed():
        n = int(parallel.gathered(np.array([n], np.int64)).sum())
        if top is not None:
            mine, top = top, TopK(k)
            top.add(parallel.gathered(mine.scores), parallel.gathered(mine.keys))
        else:
            kept_s = [parallel.gathered(np.concatenate(kept_s))]
            kept_k = [parallel.gathered(np.concatenate(kept_k))]
            kept_b = [parallel.gathered(np.concatenate(kept_b))]
    if n == 0:
        raise InputError(f"{method.name}: the pool is empty")
    if top is not None:
        _check_k(k, n)
        if k_fields and np.isneginf(top.scores).any():
            raise InputError(
                f"{method.name} ranked only {int(np.isfinite(top.scores).sum())} items "
                f"greedily; k={k} needs a rerun with a larger k"
            )
        return Selected(top.keys, top.scores, n, top.records)
    s = np.concatenate(kept_s)
    keys = np.concatenate(kept_k).reshape(-1, 2)
    order = _best_first(s, keys)
    if budget_bytes is not None:
        csum = np.cumsum(np.concatenate(kept_b)[order])
        order = order[: int(np.searchsorted(csum, budget_bytes, side="right"))]
    return Selected(keys[order], s[order], n)


def _picked(source, sel: Selected) -> Iterator[tuple[int, dict]]:
    """(rank, record with its score) of the selected documents, in pool order (a reading
    pass over the parts that hold them)."""
    rank = {(int(a), int(b)): r for r, (a, b) in enumerate(sel.keys.tolist())}
    left = len(rank)
    parts = source.parts()
    holding = [parts[p] for p in sorted({p for p, _ in rank})]
    for batch in source.batches(READ_BATCH, holding):
        if not left:
            return
        for key, rec in zip(batch.keys.tolist(), batch.records, strict=True):
            r = rank.get((key[0], key[1]))
            if r is not None:
                left -= 1
                yield r, {**rec, "score": json_score(sel.scores[r])}


def selected_records(source, sel: Selected) -> list[dict]:
    """The selected records (every input field + "score"), best first, in memory."""
    if sel.records is not None:
        return [{**r, "score": json_score(s)} for r, s in zip(sel.records, sel.scores, strict=True)]
    out: list[Any] = [None] * len(sel.keys)
    for r, rec in _picked(source, sel):
        out[r] = rec
    return out


def write_selection(
    out: str | os.PathLike | OutSpec, source, sel: Selected, meta: dict | None = None
) -> None:
    """Writes the selected records best first in `out`'s format (`jaxsel.data.writers`: by its
    name, "-" = stdout), with `meta` as its sidecar. Records not kept while scoring are spilled
    to a temporary file in pool order and read back in rank order, so memory does not grow
    with the selection (Parquet and "hf" hold one file's rows); the output appears whole or not
    at all. On several processes only process 0 writes."""
    if not parallel.is_writer():
        return
    spec = out if isinstance(out, OutSpec) else out_spec(out)
    if sel.records is not None:
        write_output(spec, selected_records(source, sel), len(sel.keys), meta)
        return
    offsets = np.zeros(len(sel.keys) + 1, np.int64)
    with tempfile.TemporaryFile() as spill:
        for r, rec in _picked(source, sel):
            line = json_line(rec, spec.path, r).encode("utf-8")
            offsets[r] = spill.tell()
            offsets[-1] = max(offsets[-1], spill.tell() + len(line))
            spill.write(line)
        ends = np.append(np.sort(offsets[:-1]), offsets[-1])
        size = dict(zip(ends[:-1].tolist(), np.diff(ends).tolist(), strict=True))

        def ranked():
            for off in offsets[:-1].tolist():
                spill.seek(off)
                yield json.loads(spill.read(size[off]))

        write_output(spec, ranked(), len(sel.keys), meta)


def provenance(
    command: str, method: Method, config, source, target, engine: str = "local", argv=None
) -> dict:
    """How an output was made (its sidecar's "provenance"): jaxsel's version, the command and
    its command line, the UTC time, the method with its full resolved config and seed, the
    sha256 of the pool and of the target (`jaxsel.data.adapters.fingerprint`: input files'
    bytes, or in-memory texts), the engine and the number of processes."""
    from jaxsel.version import __version__

    cfg = dataclasses.asdict(config)
    return {
        "jaxsel_version": __version__,
        "command": command,
        "argv": None if argv is None else list(argv),
        "cwd": os.getcwd(),  # relative paths among the options are relative to this
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "method": method.name,
        "config": cfg,
        "seed": cfg.get("seed"),
        "pool_sha256": fingerprint(source),
        "target_sha256": None if target is None else fingerprint(target),
        "engine": engine,
        "processes": parallel.processes().count,
    }
