"""One text-scoring loop for every LM-based part of jaxsel: per-text reductions of token
log-probabilities under a frozen model and an optional adapter.

A *reducer* is a pure function `(params, adapter, tokens, mask, *, cfg) -> R` whose return
annotation R is a NamedTuple of per-row sums, each [B] (tokens = [bos, y_1..y_n] right-padded,
mask marks the real positions); it is jitted once per (reducer, model, mesh) with rows sharded
over `data`, and `score_texts` returns an R of [N] float64 columns. Texts are tokenised,
truncated to their first `max_tokens` tokens, grouped shortest first into batches padded to a
few bucket lengths (`jaxsel.batching.map_token_rows`), and with a workdir scored in resumable
shards keyed by the model, the adapter's hash, the reducer and the texts. A call's rows are
reduced in groups of at most `micro_tokens` padded tokens and the vocabulary projection runs in
chunks (`models.logprobs`): no [B, T, V] array, and no [B, H, T, T] attention for a whole call,
exists at once.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.batching import map_token_rows
from jaxsel.lm.adapters import Adapter, adapter_hash, logprob_kwargs
from jaxsel.lm.train import (
    MICRO_TOKENS,
    check_context,
    interleave_groups,
    row_groups,
    token_buckets,
)
from jaxsel.models import llama
from jaxsel.models.logprobs import LOGIT_CHUNK, sequence_loglik


class TokenScores(NamedTuple):
    """Per-text results of `score_texts`.

    values: the reducer's NamedTuple of [N] float64 columns (e.g. `Total.total`, the sum of
      token log-probs).
    n_tokens: [N] int64, tokens scored (the first token of a text is predicted from the
      separator, so a text of n tokens after truncation scores n).
    truncated: [N] bool, the text had more than `max_tokens` tokens.
    """

    values: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


class Total(NamedTuple):
    """`sum_logprob`'s result per row."""

    total: jax.Array  # [B] sum of log p(y_t | y_<t) over the row's real tokens


def sum_logprob(params: dict, adapter: Adapter | None, tokens, mask, *, cfg) -> Total:
    """The sum of log p(y_t | y_<t) over each row's real tokens, under the adapted model."""
    kw = logprob_kwargs(adapter)
    lp, _ = llama.token_logprobs(params, tokens, mask, cfg, chunk_tokens=LOGIT_CHUNK, **kw)
    return Total(sequence_loglik(lp, mask[:, 1:])[0])


def _grouped(params, adapter, tokens, mask, groups: int, *, reducer: Callable, cfg):
    """`reducer` over `groups` interleaved row groups in turn (a `lax.map`), so a call holds
    one group's activations (the attention scores grow with rows x length^2); per row the same
    computation as the whole batch."""
    if groups == 1:
        return reducer(params, adapter, tokens, mask, cfg=cfg)
    out = jax.lax.map(
        lambda xs: reducer(params, adapter, *xs, cfg=cfg), interleave_groups((tokens, mask), groups)
    )
    return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(tokens.shape[0]), out)


@functools.cache
def reducer_fn(reducer: Callable, cfg: llama.LlamaConfig, mesh):
    """`reducer` jitted once per model and mesh: params and adapter replicated, rows sharded,
    the number of row groups static."""
    rep, rows = parallel.replicated(mesh), parallel.sharding("batch", "seq", mesh=mesh)
    return jax.jit(
        functools.partial(_grouped, reducer=reducer, cfg=cfg),
        in_shardings=(rep, rep, rows, rows),
        out_shardings=parallel.sharding("batch", mesh=mesh),
        static_argnums=4,
    )


def score_texts(
    lm,
    adapter: Adapter | None,
    texts: Sequence[str],
    reducer: Callable = sum_logprob,
    *,
    max_tokens: int = 512,
    batch_size: int = 8,
    name: str = "score",
    workdir: str | os.PathLike | None = None,
    shard_size: int = 512,
    micro_tokens: int = MICRO_TOKENS,
    progress: bool = False,
    mesh=None,
) -> TokenScores:
    """Reduces every text's token log-probs under `lm` (a `LoadedLM`) with `adapter` (or none).

    Args:
      reducer: see the module docstring (default `sum_logprob`).
      max_tokens: texts are truncated to their first max_tokens tokens.
      batch_size: texts per device call (rows rounded up to a multiple of the `data` axis).
      name: prefixes error messages and the progress bar.
      workdir, shard_size: resumable shards (`jaxsel.shards`).
      micro_tokens: a call's rows are reduced in row groups of at most this many padded tokens
        (`train.row_groups`), one after another, bounding activation memory.
    """
    check_context(lm.cfg, max_tokens, name)
    mesh = mesh or parallel.data_mesh()
    fn = reducer_fn(reducer, lm.cfg, mesh)
    params = jax.device_put(lm.params, parallel.replicated(mesh))
    dev_adapter = jax.device_put(adapter, parallel.replicated(mesh))
    data = parallel.data_size(mesh)
    rows = parallel.round_up(batch_size, data)

    columns = typing.get_type_hints(reducer)["return"]  # the reducer's NamedTuple

    def reduce(tokens, mask):
        groups = row_groups(rows, tokens.shape[1], data, micro_tokens)
        return np.stack([np.asarray(x) for x in fn(params, dev_adapter, tokens, mask, groups)], -1)

    out = map_token_rows(
        lm.tokenizer,
        texts,
        max_tokens,
        rows,
        reduce,
        key={
            "what": f"{reducer.__module__}.{reducer.__qualname__}",
            "model": lm.fingerprint,
            "dtype": lm.cfg.dtype,
            "adapter": adapter_hash(adapter),
            "max_tokens": max_tokens,
            "micro_tokens": micro_tokens,
        },
        batch_size=batch_size,
        buckets=token_buckets(max_tokens),
        workdir=workdir,
        shard_size=shard_size,
        progress=progress,
        desc=name,
    )
    values = columns(*(out[:, i] for i in range(len(columns._fields))))
    return TokenScores(values, out[:, -2].astype(np.int64), out[:, -1].astype(bool))
