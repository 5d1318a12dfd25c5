"""Where the model pays: the cost -log2 p of every token of a text under FineZip's chunking
(each chunk of `chunk_len` tokens predicted from a separator token and its own earlier tokens,
as `engine` codes it), and per chunk in bits per byte of the original.

An ideal entropy coder spends exactly these bits; the range coder (`ac`) spends them plus a few
bits per stream (its 24-bit frequency quantisation and 32-bit words), so the chunk costs add up
to the archive's payload within that overhead. Computed with one teacher-forced forward pass per
batch of chunks (not the coder's token-by-token decode steps: same model, other float rounding).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxsel.errors import InputError
from jaxsel.finezip import archive as arc
from jaxsel.finezip.api import decompress, split_text
from jaxsel.models import llama
from jaxsel.models.loaders import LoadedLM


class TextCosts(NamedTuple):
    """Model cost of a text (see module docstring)."""

    ids: np.ndarray  # int32 [n]: the model-coded tokens
    bits: np.ndarray  # float64 [n]: -log2 p of each token given its chunk's earlier tokens
    chunk_bits: np.ndarray  # float64 [c]: sum of `bits` per chunk
    chunk_bytes: np.ndarray  # int64 [c]: UTF-8 bytes of each chunk's decoded text
    chunk_len: int


@functools.cache
def _bits_fn(cfg: llama.LlamaConfig):
    """tokens, mask [B, 1 + L] -> bits [B, L] (-log2 p of tokens[:, 1:]), jitted once per model."""

    def bits(params, tokens, mask):
        lp, _ = llama.token_logprobs(params, tokens, mask, cfg)
        return -lp / np.log(2.0)

    return jax.jit(bits)


def token_bits(lm: LoadedLM, ids: np.ndarray, chunk_len: int, batch_size: int = 16) -> np.ndarray:
    """-log2 p of each of `ids` [n] (float64 [n]) with FineZip's chunking: chunk c is
    ids[c*L:(c+1)*L], predicted after the tokenizer's separator (bos) token."""
    ids = np.asarray(ids, np.int32)
    if chunk_len < 1 or chunk_len + 1 > lm.cfg.max_position:
        raise InputError(f"chunk_len {chunk_len} outside 1..{lm.cfg.max_position - 1}")
    if lm.tokenizer.bos_id is None:
        raise InputError("the tokenizer has no bos/separator token to start chunks with")
    if not ids.size:
        return np.zeros(0)
    n_chunks = -(-ids.size // chunk_len)
    batch_size = min(batch_size, n_chunks)  # a short text: one small batch, not padding
    rows = -(-n_chunks // batch_size) * batch_size  # whole batches: one shape, one compilation
    width = min(chunk_len, ids.size) + 1
    tokens = np.full((rows, width), lm.tokenizer.bos_id, np.int32)
    mask = np.zeros(tokens.shape, bool)
    mask[:n_chunks, 0] = True
    flat = np.zeros(n_chunks * (width - 1), np.int32)
    flat[: ids.size] = ids
    tokens[:n_chunks, 1:] = flat.reshape(n_chunks, width - 1)
    mask[:n_chunks, 1:] = (np.arange(flat.size) < ids.size).reshape(n_chunks, -1)
    fn = _bits_fn(lm.cfg)
    out = [
        np.asarray(fn(lm.params, tokens[b : b + batch_size], mask[b : b + batch_size]))
        for b in range(0, rows, batch_size)
    ]
    return np.concatenate(out).astype(np.float64)[:n_chunks].reshape(-1)[: ids.size]


def text_costs(data: bytes, lm: LoadedLM, chunk_len: int, batch_size: int = 16) -> TextCosts:
    """`token_bits` of the text FineZip would model-code from `data` (`split_text`: bytes the
    tokenizer cannot take are left out), summed per chunk."""
    text = split_text(bytes(data), lm.tokenizer).text
    ids = np.asarray(lm.tokenizer.encode(text), np.int32)
    if not ids.size:
        raise InputError("no text to model-code")
    bits = token_bits(lm, ids, chunk_len, batch_size)
    starts = np.arange(0, ids.size, chunk_len)
    chunk_bytes = np.array(
        [len(lm.tokenizer.decode(ids[s : s + chunk_len]).encode("utf-8")) for s in starts]
    )
    return TextCosts(ids, bits, np.add.reduceat(bits, starts), chunk_bytes, chunk_len)


def archive_costs(archive: bytes, load_model: Callable[[str], LoadedLM]) -> TextCosts:
    """`text_costs` of a model-coded archive's original, with the archive's chunk length.
    Decompresses it with `load_model(dtype)` (called only for a model-coded archive; it must
    load the archive's model). Archives with LoRA adapters are refused: the costs here would be
    the base model's, not what the archive paid."""
    header = arc.read_header(archive)[0]
    if header["mode"] != "model":
        raise InputError(f"archive mode is {header['mode']!r}: no model-coded chunks")
    if header["lora"]:
        raise InputError("per-chunk costs of an archive with LoRA adapters are not computed")
    lm = load_model(header["dtype"])
    return text_costs(decompress(archive, lm), lm, header["chunk_len"])
