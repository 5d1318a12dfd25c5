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

import numpy as np
from tqdm.auto import tqdm

from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.methods import register, require_pool_and_target
from jaxsel.scores import Scores
from jaxsel.shards import fingerprint_texts, run_sharded

TOKEN = re.compile(r"\w+|[^\w\s]+")
RESAMPLE = ("topk", "gumbel")


@dataclasses.dataclass(frozen=True)
class Config:
    """DSIR.

    Attributes:
      buckets: hash buckets of the n-gram features.
      ngrams: longest n-gram (2 = unigrams and bigrams).
      smoothing: ε added to both bucket probabilities before the log.
      resample: "topk" (importance weights) or "gumbel" (Gumbel top-K sampling keys).
      seed: seed of the Gumbel noise.
      shard_size: pool items per resumable shard (with a workdir).
    """

    buckets: int = 10_000
    ngrams: int = 2
    smoothing: float = 1e-8
    resample: str = "topk"
    seed: int = 0
    shard_size: int = 8192

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


class Hasher:
    """n-gram -> bucket, with the sha256 of each distinct n-gram computed once."""

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
            for g in grams:
                if g not in cache:
                    cache[g] = self.bucket(g)
            ids = list(map(cache.__getitem__, grams))
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


@register("dsir", Config)
def score(
    pool: Corpus,
    target: Corpus | None,
    config: Config = Config(),
    *,
    workdir=None,
    progress: bool = False,
) -> Scores:
    """DSIR log importance weights (or Gumbel sampling keys) of every pool item."""
    require_pool_and_target(pool, target, "dsir")
    hasher = Hasher(config.buckets, config.ngrams)
    ratio = log_ratio(hasher.counts(target.texts), hasher.counts(pool.texts), config.smoothing)
    key = {
        "method": "dsir",
        "buckets": config.buckets,
        "ngrams": config.ngrams,
        "smoothing": config.smoothing,
        "pool": fingerprint_texts(pool.texts),
        "target": fingerprint_texts(target.texts),
    }
    with tqdm(total=len(pool), unit="doc", desc="dsir", disable=not progress) as bar:
        values = run_sharded(
            len(pool),
            lambda s, e: log_weights(hasher, pool.texts[s:e], ratio),
            workdir,
            key,
            config.shard_size,
            bar.update,
        )
    meta = {"buckets": config.buckets, "ngrams": config.ngrams, "resample": config.resample}
    if config.resample == "gumbel":
        values = values + np.random.default_rng(config.seed).gumbel(size=values.size)
        meta["seed"] = config.seed
    return Scores(values, "dsir", meta)


def add_args(p, name: str) -> None:
    p.add_argument("--buckets", type=int, default=10_000, help="hash buckets (default 10000)")
    p.add_argument("--ngrams", type=int, default=2, help="longest n-gram (default 2)")
    p.add_argument(
        "--smoothing",
        type=float,
        default=1e-8,
        help="ε in log(p + ε) (default 1e-8, as the reference)",
    )
    p.add_argument(
        "--resample",
        default="topk",
        choices=RESAMPLE,
        help="topk: rank by importance weight; gumbel: Gumbel top-K sampling",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the Gumbel noise")


def config_from_args(args, name: str) -> Config:
    return Config(args.buckets, args.ngrams, args.smoothing, args.resample, args.seed)
