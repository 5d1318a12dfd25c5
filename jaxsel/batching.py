"""Host-side batching of variable-length token sequences for jit-compiled models.

Items are sorted by length and cut into batches; each batch is padded to the smallest of a few
static bucket lengths (so jit compiles one shape per bucket, STYLE §8) and to a fixed number of
rows. With a `workdir` the sorted order is computed in resumable shards (`jaxsel.shards`).
Results come back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxsel.data.progress import credit_reused
from jaxsel.shards import fingerprint_texts, run_sharded

MIN_BUCKET = 16


def bucket_lengths(
    max_len: int, min_len: int = MIN_BUCKET, halves: bool = False
) -> tuple[int, ...]:
    """The static padded lengths: powers of two from `min_len` below max_len (with `halves`, each
    followed by 1.5x its length: at most 1/3 padding instead of 1/2, for twice the compiled
    shapes), then max_len."""
    out, n = [], min_len
    while n < max_len:
        out += [n, n * 3 // 2] if halves and n * 3 // 2 < max_len else [n]
        n *= 2
    return (*out, max_len)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= length (lengths above the largest bucket are a caller bug)."""
    b = np.asarray(buckets)
    i = int(np.searchsorted(b, length))
    if i == b.size:
        raise ValueError(f"length {length} exceeds the largest bucket {b[-1]}")
    return int(b[i])


def pad_rows(seqs: Sequence[Sequence[int]], rows: int, length: int, fill: int = 0):
    """Right-pads sequences into a [rows, length] int32 array and its bool mask (extra rows are
    all padding)."""
    out = np.full((rows, length), fill, np.int32)
    mask = np.zeros((rows, length), bool)
    for r, s in enumerate(seqs):
        out[r, : len(s)] = s
        mask[r, : len(s)] = True
    return out, mask


def map_by_length(
    lengths: Sequence[int],
    batch_size: int,
    compute: Callable[[np.ndarray], np.ndarray],
    *,
    workdir: str | os.PathLike | None = None,
    key: dict | None = None,
    shard_size: int = 1024,
    progress: bool = False,
    desc: str = "batches",
) -> np.ndarray:
    """Runs `compute(indices)` on length-sorted batches of items and returns rows in input order.

    Args:
      lengths: [N] item lengths; items are processed shortest first (ties in input order), so a
        batch holds items of similar length and its padding stays small.
      batch_size: items per `compute` call (the last batch of a shard may be smaller).
      compute: item indices [b] -> array [b, ...] (one row per item).
      workdir, key: resumable shards (see `jaxsel.shards.run_sharded`); key identifies the job.
      shard_size: items per shard, rounded up to a multiple of batch_size.
      progress: tqdm bar over items (those of shards read back advance it, not its rate).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    bar = tqdm(total=len(order), desc=desc, unit="item", disable=not progress)
    counted = 0  # items of the current shard already shown on the bar
    reused = 0  # items of shards read back: on the bar, not in its rate

    def run_shard(start: int, stop: int) -> np.ndarray:
        nonlocal counted
        parts = []
        for b0 in range(start, stop, batch_size):
            idx = order[b0 : min(b0 + batch_size, stop)]
            parts.append(np.asarray(compute(idx)))
            bar.update(len(idx))
            counted += len(idx)
        return np.concatenate(parts)

    def shard_done(n: int) -> None:  # resumed shards were not counted by `run_shard`
        nonlocal counted, reused
        if counted:
            bar.update(n - counted)
        else:
            reused += n
            credit_reused(bar, n)
            bar.set_postfix_str(f"{reused} read back")
        counted = 0

    size = -(-max(shard_size, 1) // batch_size) * batch_size
    try:
        rows = run_sharded(len(order), run_shard, workdir, key or {}, size, shard_done)
    finally:
        bar.close()
    out = np.empty_like(rows)
    out[order] = rows
    return out


def map_token_rows(
    tokenizer,
    texts: Sequence[str],
    max_tokens: int,
    rows: int,
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    key: dict,
    batch_size: int,
    buckets: Sequence[int] | None = None,
    workdir: str | os.PathLike | None = None,
    shard_size: int = 1024,
    progress: bool = False,
    desc: str = "batches",
) -> np.ndarray:
    """Per-text model scores over each text's first `max_tokens` tokens: the LM scoring loop
    shared by the methods.

    Texts are tokenised (`tokenizer.encode_docs`), grouped shortest first `batch_size` at a time
    (`map_by_length`, resumable with a workdir; `key` identifies the job, the texts' fingerprint
    is added), padded to [rows, bucket] int32 tokens and a bool mask, and scored by
    `fn(tokens, mask) -> [rows, c]`. Returns [N, c + 2] float64: fn's columns, the number of
    tokens scored (length − 1: the first token is context only), 1 if the text was truncated.
    `buckets`: the padded lengths (default `bucket_lengths(max_tokens + 1)`).
    """
    buckets = buckets or bucket_lengths(max_tokens + 1)
    seqs, cut = tokenizer.encode_docs(texts, max_tokens)
    cut = np.asarray(cut, np.float64)
    n_tok = np.array([max(len(s) - 1, 0) for s in seqs], np.int64)

    def compute(idx: np.ndarray) -> np.ndarray:
        length = bucket_for(max(2, max(len(seqs[i]) for i in idx)), buckets)
        tokens, mask = pad_rows([seqs[i] for i in idx], rows, length)
        out = np.asarray(fn(tokens, mask), np.float64).reshape(rows, -1)[: len(idx)]
        return np.concatenate([out, n_tok[idx, None], cut[idx, None]], axis=1)

    key = {**key, "batch_size": rows, "texts": fingerprint_texts(texts)}
    return map_by_length(
        n_tok,
        batch_size,
        compute,
        workdir=workdir,
        key=key,
        shard_size=shard_size,
        progress=progress,
        desc=desc,
    )
