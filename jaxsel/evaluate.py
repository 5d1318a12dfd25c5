"""Evaluation of a selection on a pool with a `domain` field: domain mix, precision@K, and
precision by length bucket (compression scores are length-biased, so report both)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxsel.errors import InputError


def domain_mix(domains: Sequence[str]) -> dict[str, float]:
    """Fraction of each domain in a selection, largest first."""
    if not domains:
        return {}
    c = Counter(domains)
    return {d: n / len(domains) for d, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))}


def precision_at_k(ranked_domains: Sequence[str], domain: str, k: int) -> float:
    """Fraction of the first k ranked items whose domain is `domain`."""
    if k <= 0 or k > len(ranked_domains):
        raise InputError(f"k={k} outside 1..{len(ranked_domains)}")
    return sum(d == domain for d in ranked_domains[:k]) / k


def precision_curve(ranked_domains: Sequence[str], domain: str) -> np.ndarray:
    """Precision@K of `domain` for every K = 1..len(ranked_domains) (entry K-1), float64."""
    if not len(ranked_domains):
        raise InputError("precision curve of an empty ranking")
    hits = np.cumsum(np.asarray(ranked_domains, dtype=object) == domain, dtype=np.float64)
    return hits / np.arange(1, hits.size + 1)


def length_buckets(lengths: Sequence[int], n_buckets: int = 4) -> np.ndarray:
    """Bucket index (0 = shortest) of each item by pool length quantiles."""
    lengths = np.asarray(lengths, dtype=np.float64)
    edges = np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)[1:-1])
    return np.searchsorted(edges, lengths, side="right")


def precision_by_bucket(
    ranking: np.ndarray,
    domains: Sequence[str],
    lengths: Sequence[int],
    domain: str,
    k: int,
    n_buckets: int = 4,
) -> list[dict]:
    """Per length bucket: precision@k' of the ranking restricted to that bucket, where
    k' = round(k * bucket share of the target domain) (at least 1). Answers "does the method
    find the domain among documents of similar length", free of the length prior."""
    doms = np.asarray(domains)
    buckets = length_buckets(lengths, n_buckets)
    lengths = np.asarray(lengths)
    total = max(1, int((doms == domain).sum()))
    out = []
    for b in range(n_buckets):
        in_b = buckets[ranking] == b
        r = ranking[in_b]
        share = int((doms[buckets == b] == domain).sum())
        kb = max(1, round(k * share / total))
        kb = min(kb, r.size)
        out.append(
            {
                "bucket": b,
                "bytes": f"{int(lengths[buckets == b].min())}-{int(lengths[buckets == b].max())}",
                "k": kb,
                "precision": float((doms[r[:kb]] == domain).mean()) if kb else float("nan"),
                "selected_of_top_k": int(np.isin(ranking[:k], r).sum()),
            }
        )
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    ra, rb = _avg_ranks(np.asarray(a, float)), _avg_ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den else float("nan")


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]
