"""`Scores`, the one output of every selection method, and the selection rules written once.

Ordering rule everywhere: higher score first; ties broken by pool order (lower index first).
Methods that select greedily (GIP) also give `order`, the sequence in which items were picked;
top-K then takes that sequence's prefix.
"""

from __future__ import annotations

import dataclasses
import numbers
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsel.errors import InputError


@dataclasses.dataclass(frozen=True)
class Scores:
    """One float per pool item, plus what produced it.

    Attributes:
      values: float64 [N], higher = more wanted. -inf marks items a method did not rank.
      method: the registry name of the method.
      meta: method metadata (config, timings, per-step gains, ...); JSON-serialisable.
      order: optional int [k] greedy selection order (best first) for methods whose choice of
        item i depends on earlier choices.
    """

    values: np.ndarray
    method: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    order: np.ndarray | None = None

    def to_pandas(self):
        """A DataFrame with one row per pool item, in pool order: "score" (and "rank", 1 =
        best, ties by pool order)."""
        import pandas as pd

        rank = np.empty(len(self.values), np.int64)
        rank[self.ranking()] = np.arange(1, len(self.values) + 1)
        return pd.DataFrame({"score": self.values, "rank": rank})

    def __post_init__(self):
        v = np.asarray(self.values, dtype=np.float64)
        if v.ndim != 1:
            raise InputError(f"{self.method}: scores must be 1-D, got shape {v.shape}")
        if np.isnan(v).any():
            raise InputError(f"{self.method}: {int(np.isnan(v).sum())} NaN scores")
        object.__setattr__(self, "values", v)
        if self.order is not None:
            o = np.asarray(self.order, dtype=np.int64)
            if o.ndim != 1 or (o.size and (o.min() < 0 or o.max() >= v.size)):
                raise InputError(f"{self.method}: order out of range")
            if np.unique(o).size != o.size:
                raise InputError(f"{self.method}: order repeats an item")
            object.__setattr__(self, "order", o)

    def __len__(self) -> int:
        return self.values.size

    def ranking(self) -> np.ndarray:
        """All item indices, best first (greedy order first when given, then by score)."""
        by_score = np.lexsort((np.arange(self.values.size), -self.values))
        if self.order is None:
            return by_score
        rest = by_score[~np.isin(by_score, self.order)]
        return np.concatenate([self.order, rest])


def json_score(value: float) -> float | None:
    """A score as JSON can hold it: -inf (not ranked) is null, +inf (an overflowed ratio) the
    largest finite float; NaN never reaches here (`Scores` refuses it)."""
    v = float(value)
    if v == -np.inf:
        return None
    return min(v, sys.float_info.max)


def score_from_json(value: Any, loc: str) -> float:
    """The inverse of `json_score` for a score read at `loc` ("file:line"): a number, or null
    for -inf; anything else is an InputError."""
    if value is None:
        return -np.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or np.isnan(value):
        raise InputError(f"{loc}: score {value!r} is not a number (or null)")
    return float(value)


def _check_k(k: int, n: int | None = None) -> None:
    """k must be a positive integer, at most `n` (the pool's size) when given."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise InputError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    if n is not None and k > n:
        raise InputError(f"k={k} is larger than the pool ({n} items)")


def select_top_k(scores: Scores, k: int) -> np.ndarray:
    """Indices of the K best items, best first, ties by pool order."""
    _check_k(k, len(scores))
    if scores.order is not None and k > scores.order.size:
        raise InputError(
            f"{scores.method} ranked only {scores.order.size} items greedily; k={k} needs a rerun "
            "with a larger k"
        )
    return scores.ranking()[:k]


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_threshold(threshold: float) -> None:
    """A selection threshold must be a finite number (not a string, a bool, nan or inf)."""
    if not (_real(threshold) and np.isfinite(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold!r}")


def check_budget(budget: float) -> None:
    """A size budget must be a positive finite number (nan would select everything)."""
    if not (_real(budget) and 0 < budget < np.inf):
        raise InputError(f"budget must be a positive finite number, got {budget!r}")


def check_rule(k: int | None, threshold: float | None, budget_bytes: float | None) -> None:
    """Exactly one selection rule, valid: top-K, score > threshold, or a byte budget."""
    if sum(x is not None for x in (k, threshold, budget_bytes)) != 1:
        raise InputError("give exactly one of k, threshold, budget_bytes")
    if k is not None:
        _check_k(k)
    if threshold is not None:
        check_threshold(threshold)
    if budget_bytes is not None:
        check_budget(budget_bytes)


def select_threshold(scores: Scores, threshold: float) -> np.ndarray:
    """Indices of items with score > threshold, best first (may be empty). The threshold must be
    finite (nan would select nothing, inf nothing or everything, silently)."""
    check_threshold(threshold)
    r = scores.ranking()
    return r[scores.values[r] > threshold]


def select_budget(scores: Scores, sizes: Sequence[int], budget: int) -> np.ndarray:
    """Best-first prefix of the ranking whose total size (tokens or bytes) stays <= budget.

    Items are taken in rank order; an item that would overflow the budget stops the selection
    (a prefix, so the result is a top-K for some K and stays rank-consistent).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.shape != scores.values.shape:
        raise InputError(f"sizes has {sizes.size} entries for {len(scores)} scores")
    check_budget(budget)
    r = scores.ranking()
    csum = np.cumsum(sizes[r])
    return r[: int(np.searchsorted(csum, budget, side="right"))]
