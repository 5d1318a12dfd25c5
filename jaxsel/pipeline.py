"""The streaming score/select pipeline, written once for every method (`jaxsel.methods`).

Memory stays flat in the pool size: the pool is read batch by batch; a method prepares its
target state once and scores batch after batch; scores go to resumable shards (with a workdir,
`jaxsel.shards.BatchShards`); `select` keeps a bounded top-K (or the items above a threshold),
then a second pass over the pool picks the chosen records, which are written best first (a
top-K of at most `RECORDS_KEPT` keeps its records while scoring and needs no second pass). Ties
are broken by pool order everywhere (`Batch.keys`: lexicographic order = pool order).

Methods that need one float per document (a whole-pool `rescore`, GIP, random) hold that vector
(8 bytes per document), a `--budget-bytes` selection holds (score, key, size) per document
(32 bytes) and a threshold selection the same for the items above it; nothing holds texts or
records of the whole pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from jaxsel import parallel
from jaxsel.data.corpus import Corpus, json_line, read_corpus, write_records
from jaxsel.data.outputs import atomic_open
from jaxsel.data.sources import READ_BATCH, Batch, IdDigests, open_source
from jaxsel.errors import InputError
from jaxsel.methods import Method, Run, part_counts
from jaxsel.scores import Scores, _check_k, check_threshold, json_score
from jaxsel.shards import BatchShards, fingerprint_texts, shard_name

log = logging.getLogger(__name__)

RECORDS_KEPT = 16384  # a top-K up to this K keeps its records while scoring (no output pass)


# ----------------------------------------------------------------------------- sources


class CorpusSource:
    """A Source (`jaxsel.data.sources`) over an in-memory Corpus: one part, corpus order."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.name = corpus.name

    def to_corpus(self) -> Corpus:
        return self.corpus

    def parts(self) -> list[int]:
        return [0]

    def batches(self, batch_size: int, parts: Sequence[int] | None = None) -> Iterator[Batch]:
        c = self.corpus
        if parts is not None and list(parts) != [0]:
            return
        for s in range(0, len(c), batch_size):
            e = min(s + batch_size, len(c))
            keys = np.stack([np.zeros(e - s, np.int64), np.arange(s, e, dtype=np.int64)], axis=1)
            yield Batch(list(c.ids[s:e]), list(c.texts[s:e]), list(c.records[s:e]), keys)


def _records_corpus(records: list[dict], text_field: str, id_field: str | None, name: str):
    for n, r in enumerate(records):
        if text_field not in r:
            raise InputError(f"{name} item {n}: missing field {text_field!r} (fields: {sorted(r)})")
        if id_field is not None and id_field not in r:
            raise InputError(f"{name} item {n}: missing field {id_field!r}")
    return Corpus.from_records(records, text_field, id_field, name)


def as_corpus(data, text_field: str = "text", id_field: str | None = "id") -> Corpus:
    """A Corpus from a Corpus, a list of texts or records, a path, a pandas DataFrame, an HF
    `Dataset`, or a Source (read whole: for target sets, which stay in memory)."""
    if isinstance(data, Corpus):
        return data
    if isinstance(data, (str, os.PathLike)):
        return read_corpus(data, text_field, id_field)
    if hasattr(data, "to_corpus"):
        return data.to_corpus()
    module = type(data).__module__
    if module.startswith("pandas") and hasattr(data, "to_dict"):
        return _records_corpus(data.to_dict("records"), text_field, id_field, "DataFrame")
    if module.startswith("datasets") and hasattr(data, "column_names"):
        return _records_corpus([dict(r) for r in data], text_field, id_field, "Dataset")
    if isinstance(data, (list, tuple)):
        if all(isinstance(t, str) for t in data):
            return Corpus.from_texts(list(data))
        if all(isinstance(r, dict) for r in data):
            return _records_corpus(list(data), text_field, id_field, "records")
    raise InputError(
        f"cannot read a corpus from {type(data).__name__}: give texts, records, a Corpus, a "
        "path, a pandas DataFrame or an HF Dataset"
    )


def as_source(pool, text_field: str = "text", id_field: str | None = "id"):
    """A Source (`.parts()`, `.batches(batch_size)`) over any pool form `as_corpus` takes;
    paths and "tfds:"/"hf:" specs are streamed (`jaxsel.data.sources.open_source`)."""
    if hasattr(pool, "batches") and hasattr(pool, "parts"):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        return open_source(pool, text_field, id_field)
    return CorpusSource(as_corpus(pool, text_field, id_field))


def count(source) -> int:
    """Number of documents in a source (one reading pass)."""
    return sum(len(b.texts) for b in source.batches(READ_BATCH))


# ------------------------------------------------------------------------------- scoring


def _state(method: Method, source, target: Corpus | None, config, run: Run):
    state = method.prepare(target, config, run)
    if method.fit_pool is not None:
        state = _fit_pool(method, source, state, config, run)
    return state


def _counted(batches, bar) -> Iterator:
    for b in batches:
        yield b
        bar.update(len(b))


def _fit_pool(method: Method, source, state, config, run: Run):
    """A method's first pass: `pool_counts` summed over the pool, then `fit_pool`. Each process
    counts only its own parts (`parallel.local_parts`), or Ray counts them one part per task
    (`run.engine`); the integer sums meet exactly in any order, and the pool's fingerprint
    hashes the parts' digests in pool order, so every engine fits the same state. With a
    workdir every engine keeps each batch's counts as a shard in `<workdir>/pool-counts`."""
    parts = parallel.local_parts(source)
    store = None  # with a workdir, each batch's counts are a resumable shard
    if run.workdir is not None:
        key = {"pool_counts": state.key}
        store = BatchShards(run.subdir("pool-counts"), key, config.shard_size)
    if run.engine is not None:
        from jaxsel import ray_engine

        counted = list(
            ray_engine.count_parts(run.engine, method, source, state, config.shard_size, run, store)
        )
        where = "on Ray"
    else:
        if parts is None:
            batches = source.batches(config.shard_size)
        else:  # duplicate ids: checked across the processes by the scoring pass
            batches = source.batches(config.shard_size, parts, check_ids=False)
        with tqdm(unit="doc", desc=f"{method.name} (pool counts)", disable=not run.progress) as bar:
            counted = list(part_counts(method, state, _counted(batches, bar), store))
        where = "here"
    log.info(
        "%s: pool counts of %d documents in %d part(s), %s",
        method.name,
        sum(c.docs for c in counted),
        len(counted),
        where,
    )
    mine = (
        sum((c.counts for c in counted[1:]), counted[0].counts)
        if counted
        else np.zeros(0, np.int64)
    )
    sums = parallel.allgather_rows(mine) if parallel.distributed() else [mine]
    sums = [a for a in sums if a.size]
    if not sums:
        raise InputError(f"{method.name}: the pool is empty")
    index = parallel.gathered(np.array([c.part for c in counted], np.int64))
    digests = parallel.gathered(
        np.frombuffer(b"".join(c.digest for c in counted), np.uint8).reshape(-1, 32)
    )
    h = hashlib.sha256()
    for i in np.argsort(index, kind="stable").tolist():
        h.update(int(index[i]).to_bytes(8, "little") + digests[i].tobytes())
    return method.fit_pool(state, sum(sums[1:], sums[0]), h.hexdigest()[:32])


def _scored(method: Method, source, target, state, config, run: Run, stats: dict):
    """(batch, scores) for every batch of the pool this process reads
    (`parallel.local_parts`), finished shards read back; the batches' statistics are added
    into `stats`. With a Ray engine (`run.engine`) the missing shards are scored on Ray first."""
    store = None
    if run.workdir is not None:
        store = BatchShards(run.workdir, state.key, config.shard_size)
    parts = parallel.local_parts(source)
    if run.engine is not None:
        if store is None:  # Ray's results travel through shards: a temporary workdir
            tmp = run.enter(tempfile.TemporaryDirectory(prefix="jaxsel-ray-"))
            store = BatchShards(tmp, state.key, config.shard_size)
        _fill_on_ray(method, source, target, state, config, run, store, parts)
    if parts is None:
        ids, batches = None, source.batches(config.shard_size)
    else:  # several processes: duplicate ids are looked for across all of them, after the loop
        ids, batches = IdDigests(), source.batches(config.shard_size, parts, check_ids=False)
    with tqdm(unit="doc", desc=method.name, disable=not run.progress) as bar:
        for batch in batches:
            if ids is not None:
                ids.add(batch)
            fp = fingerprint_texts(batch.texts)
            name = shard_name(int(batch.keys[0, 0]), int(batch.keys[0, 1]))
            done = None if store is None else store.load(name, fp)
            if done is None:
                res = method.score_batch(state, batch)
                values = np.asarray(res.values, np.float64)
                if values.shape != (len(batch.texts),):
                    raise ValueError(
                        f"{method.name}: {values.shape} scores for {len(batch.texts)} documents"
                    )
                if np.isnan(values).any():
                    raise InputError(f"{method.name}: {int(np.isnan(values).sum())} NaN scores")
                if store is not None:
                    store.save(name, values, res.stats, fp)
                done = values, res.stats
            for name, v in done[1].items():
                stats[name] = stats.get(name, 0) + v
            bar.update(len(batch.texts))
            yield batch, done[0]
    if ids is not None:
        ids.verify(source.locate, parallel.gathered)


def _fill_on_ray(method: Method, source, target, state, config, run: Run, store, parts) -> None:
    """Scores every batch without a finished shard on Ray and stores it (`jaxsel.ray_engine`)."""
    from jaxsel import ray_engine

    jobs: dict[int, list[int] | None] = {}
    if store.empty():  # nothing to resume: every batch of every part, without reading here
        jobs = {p: None for p in range(len(source.parts()))}
    else:
        for batch in source.batches(config.shard_size, parts):
            part, row = int(batch.keys[0, 0]), int(batch.keys[0, 1])
            if store.load(shard_name(part, row), fingerprint_texts(batch.texts)) is None:
                jobs.setdefault(part, []).append(row)
    done = 0
    with tqdm(unit="batch", desc=f"{method.name} (ray)", disable=not run.progress) as bar:
        for r in ray_engine.score_batches(
            run.engine, method, source, target, config, state, jobs, config.shard_size, run
        ):
            if r.values.shape[0] and np.isnan(r.values).any():
                raise InputError(f"{method.name}: {int(np.isnan(r.values).sum())} NaN scores")
            store.save(shard_name(r.part, r.first_row), r.values, r.stats, r.fingerprint)
            done += 1
            bar.update(1)
    log.info("%s: %d batches scored on Ray", method.name, done)


def _vector_scores(method: Method, config) -> bool:
    """Whether the method's scores come as one whole [N] vector (not batch by batch)."""
    return method.whole_pool is not None or (
        method.rescores is not None and method.rescores(config)
    )


def score(method: Method, source, target, config, run: Run) -> Scores:
    """Scores of every pool document, pool order (the in-memory result of the stream)."""
    target = None if target is None else as_corpus(target)
    if method.whole_pool is not None:
        return method.whole_pool(source, target, config, run)
    state = _state(method, source, target, config, run)
    stats: dict = {}
    keys, values = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    for batch, v in _scored(method, source, target, state, config, run, stats):
        keys.append(batch.keys)
        values.append(v)
    # several processes: every process gets the whole vector, in pool order
    _, values = parallel.in_pool_order(np.concatenate(keys), np.concatenate(values))
    if not values.size:
        raise InputError(f"{method.name}: the pool is empty")
    if method.rescores is not None and method.rescores(config):
        values = method.rescore(state, values, source)
    return Scores(values, method.name, method.describe(state, parallel.summed(stats)))


def _with_scores(method: Method, source, target, config, run: Run):
    """(batch, scores) over this process's parts of the pool: streamed, or slices of the whole
    vector."""
    if not _vector_scores(method, config):
        target = None if target is None else as_corpus(target)
        state = _state(method, source, target, config, run)
        yield from _scored(method, source, target, state, config, run, {})
        return
    scores = score(method, source, target, config, run)
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


def _check_rule(k, threshold, budget_bytes) -> None:
    if sum(x is not None for x in (k, threshold, budget_bytes)) != 1:
        raise InputError("give exactly one of k, threshold, budget_bytes")
    if k is not None:
        _check_k(k, k)
    if threshold is not None:
        check_threshold(threshold)
    if budget_bytes is not None and budget_bytes <= 0:
        raise InputError(f"budget must be positive, got {budget_bytes}")


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
    _check_rule(k, threshold, budget_bytes)
    if k is not None and method.k_field is not None and getattr(config, method.k_field) is None:
        config = dataclasses.replace(config, **{method.k_field: k})
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
        if method.k_field is not None and np.isneginf(top.scores).any():
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


def write_selection(path: str | os.PathLike, source, sel: Selected) -> None:
    """Writes the selected records best first: Parquet for *.parquet, JSON Lines otherwise
    ("-" = stdout). JSON Lines are spilled to a temporary file in pool order and copied out in
    rank order, so memory does not grow with the selection; the output appears whole or not
    at all. On several processes only process 0 writes."""
    if not parallel.is_writer():
        return
    if str(path).endswith(".parquet") or sel.records is not None:
        write_records(path, selected_records(source, sel))
        return
    offsets = np.zeros(len(sel.keys) + 1, np.int64)
    with tempfile.TemporaryFile() as spill:
        for r, rec in _picked(source, sel):
            line = json_line(rec, path, r).encode("utf-8")
            offsets[r] = spill.tell()
            offsets[-1] = max(offsets[-1], spill.tell() + len(line))
            spill.write(line)
        ends = np.append(np.sort(offsets[:-1]), offsets[-1])
        size = dict(zip(ends[:-1].tolist(), np.diff(ends).tolist(), strict=True))

        def lines():
            for off in offsets[:-1].tolist():
                spill.seek(off)
                yield spill.read(size[off])

        if str(path) == "-":
            for line in lines():
                sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            return
        with atomic_open(path, "wb") as f:
            for line in lines():
                f.write(line)
