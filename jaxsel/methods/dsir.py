"""DSIR baseline (Xie et al. 2023, "Data Selection for Language Models via Importance
Resampling"), with the hashed n-gram features of its reference package (`data-selection`).

Features: the lower-cased text is split by nltk's WordPunct rule (`\\w+|[^\\w\\s]+`); every
unigram and every n-gram up to `ngrams` (joined by spaces) is hashed into `buckets` buckets by
sha256 of its UTF-8 bytes, modulo `buckets` (deterministic; not Python's salted `hash()`).
Bag-of-n-grams models p_target and p_raw are the normalised bucket counts over the target set
and over the pool ("raw"), smoothed as `log(p + smoothing)` like the reference. The importance
weight of a pool item with bucket counts c is

    log w(x) = Σ_b c_b (log(p_target[b] + ε) − log(p_raw[b] + ε)).

Selection: "topk" ranks by log w (deterministic); "gumbel" adds seeded Gumbel noise to log w, so
that top-K of the result is a sample of K items without replacement with probability ∝ w
(the reference's resampling).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.methods import (
    LOCAL_AND_RAY,
    BatchScores,
    Run,
    Streamed,
    register,
    require_pool_and_target,
)
from jaxsel.methods.passes import rescored, with_pool_pass
from jaxsel.shards import fingerprint_texts

TOKEN = re.compile(r"\w+|[^\w\s]+")
RESAMPLE = ("topk", "gumbel")


@dataclasses.dataclass(frozen=True)
class Config:
    """DSIR: importance weights of hashed n-grams, log p_target / p_raw (Xie et al. 2023).

    Score: higher = more like the target. The log importance weight Σ_b c_b (log p_target[b] −
    log p_raw[b]) in nats: unbounded both ways, 0 = as likely under both models, and its size
    grows with a document's length; --resample gumbel adds seeded Gumbel noise to it."""

    buckets: int = option(10_000, "hash buckets of the n-gram features")
    ngrams: int = option(2, "longest n-gram (2 = unigrams and bigrams)")
    smoothing: float = option(1e-8, "ε in log(p + ε), added to both bucket probabilities")
    resample: str = option(
        "topk",
        "topk: rank by importance weight; gumbel: Gumbel top-K sampling keys",
        choices=RESAMPLE,
    )
    seed: int = option(0, "seed of the Gumbel noise")
    shard_size: int = option(8192, "pool items per batch and per resumable shard (with --workdir)")

    def __post_init__(self):
        if self.buckets < 1:
            raise InputError(f"buckets must be positive, got {self.buckets}")
        if self.ngrams < 1:
            raise InputError(f"ngrams must be positive, got {self.ngrams}")
        if not self.smoothing > 0:
            raise InputError(f"smoothing must be positive, got {self.smoothing}")
        if self.resample not in RESAMPLE:
            raise InputError(
                f"resample must be one of {', '.join(RESAMPLE)}, got {self.resample!r}"
            )


CACHE_GRAMS = 1 << 20  # n-grams whose bucket is cached (~130 MB)


class Hasher:
    """n-gram -> bucket, with the sha256 of each cached n-gram computed once. The cache is
    bounded, so memory does not grow with a streamed pool's vocabulary: once full it keeps the
    n-grams seen first (under Zipf's law mostly the frequent ones) and hashes the others again."""

    def __init__(self, buckets: int, ngrams: int):
        self.buckets, self.ngrams = buckets, ngrams
        self._cache: dict[str, int] = {}

    def bucket(self, gram: str) -> int:
        return int(hashlib.sha256(gram.encode("utf-8")).hexdigest(), 16) % self.buckets

    def ids(self, text: str) -> np.ndarray:
        """Bucket ids of every n-gram of the text (with repeats): int64 [#n-grams]."""
        words = TOKEN.findall(text.lower())
        grams = list(words)
        for n in range(2, self.ngrams + 1):
            grams += map(" ".join, zip(*(words[i:] for i in range(n)), strict=False))
        cache = self._cache
        ids = list(map(cache.get, grams))  # the common case: every n-gram seen before
        if None in ids:
            if len(cache) < CACHE_GRAMS:
                for g in grams:
                    if g not in cache:
                        cache[g] = self.bucket(g)
            ids = [cache[g] if g in cache else self.bucket(g) for g in grams]
        return np.array(ids, np.int64)

    def counts(self, texts: Iterable[str]) -> np.ndarray:
        """Total bucket counts over the texts: int64 [buckets]."""
        total = np.zeros(self.buckets, np.int64)
        for t in texts:
            total += np.bincount(self.ids(t), minlength=self.buckets)
        return total


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray, smoothing: float) -> np.ndarray:
    """log(p_target + ε) − log(p_raw + ε) per bucket: [buckets] float64."""
    pt = target_counts / max(1, target_counts.sum())
    pr = raw_counts / max(1, raw_counts.sum())
    return np.log(pt + smoothing) - np.log(pr + smoothing)


def log_weights(hasher: Hasher, texts: Sequence[str], ratio: np.ndarray) -> np.ndarray:
    """log w of each text: Σ over its n-grams of the bucket log ratio. [len(texts)] float64."""
    return np.array([ratio[hasher.ids(t)].sum() for t in texts], np.float64)


class State(NamedTuple):
    key: dict  # scoring identity (shard manifest); the pool's fingerprint is added by fit_pool
    hasher: Hasher
    target_counts: np.ndarray  # int64 [buckets]
    ratio: np.ndarray | None  # float64 [buckets] log p_target - log p_raw, after fit_pool
    config: Config


def prepare(pool, target: Corpus | None, config: Config, run: Run) -> State:
    """Target bucket counts, once."""
    require_pool_and_target(None, target, "dsir")
    hasher = Hasher(config.buckets, config.ngrams)
    key = {
        "method": "dsir",
        "buckets": config.buckets,
        "ngrams": config.ngrams,
        "smoothing": config.smoothing,
        "target": fingerprint_texts(target.texts),
    }
    return State(key, hasher, hasher.counts(target.texts), None, config)


def pool_counts(state: State, batch) -> np.ndarray:
    """Bucket counts of one batch of the pool: int64 [buckets] (summed into p_raw's counts)."""
    return state.hasher.counts(batch.texts)


def fit_pool(state: State, raw: np.ndarray, pool: str) -> State:
    """p_raw from the bucket counts of the whole pool (`raw`, int64 [buckets]) fixes the log
    ratio; `pool` (the pool's fingerprint) joins the scoring key."""
    ratio = log_ratio(state.target_counts, raw, state.config.smoothing)
    return state._replace(key={**state.key, "pool": pool}, ratio=ratio)


def score_batch(state: State, batch) -> BatchScores:
    """DSIR log importance weights of the batch's documents."""
    return BatchScores(log_weights(state.hasher, batch.texts, state.ratio))


def describe(state: State, stats: dict) -> dict:
    c = state.config
    meta = {"buckets": c.buckets, "ngrams": c.ngrams, "resample": c.resample}
    if c.resample == "gumbel":
        meta["seed"] = c.seed
    return meta


def rescore(values: np.ndarray, pool, config: Config) -> np.ndarray:
    """Gumbel top-K keys: log w + seeded Gumbel noise, one draw per document in pool order."""
    return values + np.random.default_rng(config.seed).gumbel(size=values.size)


# p_raw needs the whole pool first: a pool pass fits the state before scoring.
DSIR = with_pool_pass(
    Streamed("dsir", Config, prepare, score_batch, describe, LOCAL_AND_RAY), pool_counts, fit_pool
)
_GUMBEL = rescored(DSIR, rescore)
score = register(DSIR, lambda config: _GUMBEL if config.resample == "gumbel" else DSIR).score
