"""The method contract: two small types whose fields are all required.

A selection method is a value of one of two types (optax's shape: `GradientTransformation(init,
update)`, variants built by wrapping):

- `Streamed`: scores documents independently, batch after batch of a stream (zipfit,
  zipfit-fast, dsir, ppl, lamdas, embed-sim):
    `prepare(pool, target, config, run) -> State`: the per-target work, once (compressed target
    sizes, DSIR target counts, a trained LAMDAS prefix); `State.key` is a JSON-able dict that
    identifies the scoring (method, settings, target, model), bound into the shard manifest;
    `score_batch(state, batch) -> BatchScores`: float64 scores of one batch of pool documents
    (`jaxsel.data.sources.Batch`: ids, texts, records, keys) plus additive per-batch statistics
    that are stored with the batch's shard and summed for the metadata;
    `describe(state, stats) -> dict`: the `Scores.meta` from the summed statistics.
  Its Config has a `shard_size` field: pool documents per batch and per resumable shard.
- `WholePool`: needs the whole pool at once (GIP's greedy selection over the embedding matrix,
  random, hybrid): `score(pool, target, config, run) -> Scores`.

Both carry `engines`, the engines of the CPU stage that can run the method ("local": this
process, or this process's share of a JAX multi-process job; "ray": a Ray cluster).

Optional passes are wrappers that return these same types (`jaxsel.methods.passes`): a first
pass over the pool that fits the state (DSIR's pool counts) returns a `Streamed`; a step over
the whole score vector (zipfit's length debiasing, DSIR's Gumbel keys) returns a `WholePool`.

Capabilities of a Config field live in its metadata, next to its help text (`FIELD_ROLES`):
"input" (a path the method reads: never an output), "per_worker" (set to 1 on each Ray
actor, which is one CPU), "k" (filled by `select -k K` when the user left it unset).

This module imports nothing of jaxsel above `scores` and `data`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

LOCAL = frozenset({"local"})
LOCAL_AND_RAY = frozenset({"local", "ray"})
FIELD_ROLES = ("input", "per_worker", "k")


class BatchScores(NamedTuple):
    """What `score_batch` returns for one batch of b documents.

    values: float64 [b] scores (higher = more wanted; -inf = not ranked).
    stats: additive per-batch statistics (summed over batches for `describe`).
    """

    values: np.ndarray
    stats: dict[str, float] = {}


class Streamed(NamedTuple):
    """A method that scores a pool batch by batch (see the module docstring)."""

    name: str
    config_cls: type
    prepare: Callable[[Any, Any, Any, Any], Any]
    score_batch: Callable[[Any, Any], BatchScores]
    describe: Callable[[Any, dict], dict]
    engines: frozenset[str]


class WholePool(NamedTuple):
    """A method that scores the whole pool at once (see the module docstring)."""

    name: str
    config_cls: type
    score: Callable[[Any, Any, Any, Any], Any]
    engines: frozenset[str]


Method = Streamed | WholePool


def fields_with(config_cls: type, role: str) -> list[str]:
    """Names of the Config fields whose metadata marks them with `role` (`FIELD_ROLES`)."""
    if role not in FIELD_ROLES:
        raise ValueError(f"unknown field role {role!r}")
    return [f.name for f in dataclasses.fields(config_cls) if f.metadata.get(role)]
