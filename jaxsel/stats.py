"""Statistics shared by the methods and the evaluation: length bins and rank correlation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_buckets(lengths: Sequence[int], n_buckets: int = 4) -> np.ndarray:
    """Bucket index (0 = shortest) of each item by pool length quantiles."""
    lengths = np.asarray(lengths, dtype=np.float64)
    edges = np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)[1:-1])
    return np.searchsorted(edges, lengths, side="right")


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
