"""Where the model pays: the cost -log2 p of every token of a text under FineZip's coding
schedule (`engine.Plan`: contiguous segments; in each, the first `context` tokens predicted from
the bos token on, then windows of `stride` tokens that see the `context - stride + 1` tokens
before them), and per window in bits per byte of the original.

Two sources. `text_costs` (any text, no archive): the LM's cost with one teacher-forced forward
per window (not the coder's decode steps: same model and contexts, other float rounding).
`archive_costs`: what each token actually cost in an archive, recorded while decoding it
(`api.decode_costs`: the tables the coder used, so the match model of `ac-match` and LoRA
adapters included; `coders.symbol_bits` of the table before constriction's 24-bit quantisation).
An ideal entropy coder spends exactly these bits; the range coder spends them plus a few bits per
stream (the quantisation and its 32-bit words), so the window costs add up to the archive's
payload within that overhead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.errors import InputError
from jaxsel.finezip import engine
from jaxsel.finezip.api import FineZipConfig, decode_costs, split_text
from jaxsel.finezip.archive import read_header
from jaxsel.models import llama
from jaxsel.models.loaders import LoadedLM


class TextCosts(NamedTuple):
    """Model cost of a text (see module docstring)."""

    ids: np.ndarray  # int32 [n]: the model-coded tokens
    bits: np.ndarray  # float64 [n]: -log2 p of each token in the coder's context
    window_bits: np.ndarray  # float64 [w]: sum of `bits` per coding window, in text order
    window_bytes: np.ndarray  # int64 [w]: UTF-8 bytes of each window's decoded tokens
    plan: engine.Plan


@functools.cache
def _bits_fn(cfg: llama.LlamaConfig):
    """tokens, mask [B, T] -> bits [B, T-1] (-log2 p of tokens[:, 1:]), jitted once per model."""

    def bits(params, tokens, mask):
        lp, _ = llama.token_logprobs(params, tokens, mask, cfg)
        return -lp / np.log(2.0)

    return jax.jit(bits)


def _windows(plan: engine.Plan) -> list[tuple[int, int, int]]:
    """(context start, first coded, end) token positions of every window, in text order (a ring,
    which has no windows, is reported in blocks of C tokens after the first C)."""
    c, s = plan.context, plan.context if plan.ring else plan.stride
    out = []
    for start, n in enumerate(plan.lengths().reshape(-1)):
        base = start * plan.seg_len
        if n <= 0:
            continue
        out.append((-1, base, base + min(c, n)))  # -1: predicted from bos
        for w in range(c, n, s):
            out.append((base + w - plan.prefill_len, base + w, base + min(w + s, n)))
    return out


def token_bits(lm: LoadedLM, ids: np.ndarray, plan: engine.Plan, batch: int = 16) -> np.ndarray:
    """-log2 p of each of `ids` [n] (float64 [n]) in the context `plan` codes it with: prefill
    windows, or a ring whose segments fit in C (it never wraps: one window from bos). Once a
    ring wraps, its kept keys and values depend on tokens no forward of C tokens sees."""
    if plan.ring and plan.seg_len > plan.context:
        raise InputError(
            f"no teacher-forced costs for a ring plan whose segments ({plan.seg_len} tokens) pass "
            f"its context ({plan.context}): decode its archive (`archive_costs`)"
        )
    ids = np.asarray(ids, np.int32)
    if ids.size != plan.n_tokens:
        raise InputError(f"{ids.size} tokens for a plan of {plan.n_tokens}")
    bos = lm.tokenizer.bos_id
    wins = _windows(plan)
    width = plan.context + 1
    rows = -(-len(wins) // batch) * batch
    tokens = np.full((rows, width), bos, np.int32)
    mask = np.zeros((rows, width), bool)
    for r, (ctx, first, end) in enumerate(wins):
        row = np.concatenate([[bos], ids[first:end]]) if ctx < 0 else ids[ctx:end]
        tokens[r, : row.size], mask[r, : row.size] = row, True
    fn = _bits_fn(lm.cfg)
    out = np.concatenate(
        [np.asarray(fn(lm.params, tokens[b : b + batch], mask[b : b + batch])) for b in
         range(0, rows, batch)]
    ).astype(np.float64)  # fmt: skip
    bits = np.empty(ids.size)
    for r, (ctx, first, end) in enumerate(wins):
        skip = 0 if ctx < 0 else first - ctx - 1  # predictions of the context tokens
        bits[first:end] = out[r, skip : skip + end - first]
    return bits


def text_costs(data: bytes, lm: LoadedLM, plan: engine.Plan | FineZipConfig) -> TextCosts:
    """`token_bits` of the text FineZip would model-code from `data` (`split_text`: bytes the
    tokenizer cannot take are left out), with an archive's plan or the plan a config makes."""
    text = split_text(bytes(data), lm.tokenizer).text
    ids = np.asarray(lm.tokenizer.encode(text), np.int32)
    if not ids.size:
        raise InputError("no text to model-code")
    if isinstance(plan, FineZipConfig):
        c = plan
        plan = engine.make_plan(
            ids.size, c.context, c.stride, c.batch_size, c.lanes, parallel.data_size(), c.sliding
        )
    return _per_window(lm, ids, token_bits(lm, ids, plan), plan)


def _per_window(lm: LoadedLM, ids: np.ndarray, bits: np.ndarray, plan: engine.Plan) -> TextCosts:
    wins = _windows(plan)
    window_bits = np.array([bits[f:e].sum() for _, f, e in wins])
    window_bytes = np.array(
        [len(lm.tokenizer.decode(ids[f:e]).encode("utf-8")) for _, f, e in wins]
    )
    return TextCosts(ids, bits, window_bits, window_bytes, plan)


def archive_costs(archive: bytes, load_model: Callable[[str], LoadedLM]) -> TextCosts:
    """What every token of a model-coded archive cost in its payload, per token and per window
    of the archive's own plan: the archive decoded with `api.decode_costs` (the coder's own
    tables: LM, match model, LoRA). `load_model(dtype)` must load the archive's model (called
    only for a model-coded archive). InputError for a fallback archive or a `rank` one (its
    bzip2 payload has no per-token cost)."""
    header = read_header(archive)[0]
    if header.model is None:
        raise InputError(f"archive mode is {header.mode!r}: no model-coded text")
    lm = load_model(header.model.dtype)
    d = decode_costs(archive, lm)
    return _per_window(lm, d.ids, d.bits, d.plan)
