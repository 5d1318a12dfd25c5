"""The match model of the `ac-match` coder: long repeats predicted from the text already coded,
mixed with the LM's distribution in integer arithmetic.

Predictor (token level, as the match models of lpaq/cmix). For every segment it keeps the
tokens coded so far; an index maps each `order`-gram to its most recent `candidates` end
positions (in the same segment, or with scope "all" in every segment: segments are coded in a
fixed order, row by row within a device step and batch by batch, one token at a time, so a
row sees the tokens the rows before it coded in the same step, identically on both sides).
While a match is active it predicts the token that followed its earlier occurrence; a correct
prediction extends it by one token, a wrong one drops it (a match into another segment that
had not yet coded the token it points at predicts nothing, and is kept if that token, once
coded, turns out right). With no active match, after each token
the index is looked up with the last `order` tokens and the candidate whose preceding context
agrees longest with the current one (compared backwards, at most `max_len` tokens; ties: the most
recently coded) becomes the match. Uncapped, this is exactly the longest earlier occurrence of the
current context: a continued match stays the longest (no other one can grow faster), and a lost
one is replaced by the longest among all occurrences of the last `order` tokens
(`tests/finezip/test_finezip_match.py` checks it against brute force).

Mixing. The LM's float32 probabilities p become integer frequencies q = floor(p * 2**24) + 1
(exact: a power-of-two scaling of an exact float64), so every token keeps a frequency >= 1. With
a match predicting m, an adaptive counter in the context (LM confidence in m, min(match length,
`buckets`)) holds h hits out of n predictions; the KT estimate c = (2h + 1) / (2n + 2) of the
match being right becomes the extra mass w = Q (2h + 1) // (2(n - h) + 1) on m (Q = sum q), so
that P(m) = c + (1 - c) q_m / Q up to the integer division. The counters are updated after every
coded token (halved past `limit` predictions, so they track the text). All of this is integer
arithmetic on values below 2**53 (Python ints, or integers held exactly in float64); the table
goes to constriction as float64, and constriction's deterministic rescaling to its 24-bit
precision (every token >= 1) is the same on both sides. So the compressor and decompressor code
each token under the identical table.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsel.errors import InputError
from jaxsel.flags import option

SCOPES = ("segment", "all")
LM_BITS = 24  # q = floor(p * 2**LM_BITS) + 1
LM_BINS = 4  # counter contexts by the LM's probability of the predicted token: >1/16, >1/256, ...
# candidates x max_len: the most tokens a lookup compares (Python steps per coded token; the
# defaults compare 8 x 1024)
MAX_COMPARE = 1 << 16


@dataclasses.dataclass(frozen=True)
class MatchConfig:
    """The match model's parameters (recorded in the archive header: `archive.MatchInfo`)."""

    scope: str = option(
        "all",
        "where repeats are found: all (every segment, as far as coded) or segment (only the "
        "segment being coded)",
        choices=SCOPES,
    )
    order: int = option(4, "tokens of context an index entry is keyed by (the shortest match)")
    candidates: int = option(8, "most recent occurrences kept per key (the longest is chosen)")
    max_len: int = option(1024, "most tokens a candidate's context is compared over (backwards)")
    buckets: int = option(32, "match lengths are counted up to this in the counter contexts")
    limit: int = option(1023, "a counter is halved once it has seen this many predictions")

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise InputError(f"match scope must be one of {SCOPES}, got {self.scope!r}")
        if not 1 <= self.order <= 64 or not 1 <= self.candidates <= 1024:
            raise InputError("match order must be in [1, 64] and candidates in [1, 1024]")
        if not self.order <= self.max_len <= 1 << 20 or not 1 <= self.buckets <= 4096:
            raise InputError("match max_len must be in [order, 2**20], buckets in [1, 4096]")
        if not 2 <= self.limit <= 1 << 20:
            raise InputError("match limit must be in [2, 2**20]")
        if self.candidates * self.max_len > MAX_COMPARE:
            raise InputError(f"match candidates x max_len must be at most {MAX_COMPARE}")


def lm_table(probs: np.ndarray) -> np.ndarray:
    """float32 probabilities [n, V] -> frequencies floor(p * 2**24) + 1, as float64 holding
    exact integers (a float32 is exact in float64, a power-of-two scaling and floor are exact)."""
    q = np.asarray(probs, np.float32).astype(np.float64)
    q *= 1 << LM_BITS
    np.floor(q, out=q)
    q += 1.0
    return q


def lm_bin(q_m: int, total: int) -> int:
    """The LM-confidence context of a predicted token with frequency q_m out of total."""
    return min(LM_BINS - 1, ((total // q_m).bit_length() - 1) // 4)


def mixed_table(q: np.ndarray, predicted: np.ndarray, hits: np.ndarray, seen: np.ndarray):
    """The coded frequency table: q [n, V] (`lm_table`) plus, in each row with a prediction
    (predicted[r] >= 0), w = Q (2h + 1) // (2(n - h) + 1) on the predicted token (h = hits[r],
    n = seen[r], Q = the row's total). Integer arithmetic throughout: Q is a sum of integers
    below 2**53 (exact in float64 in any order), w is computed with Python ints, and every entry
    stays below 2**53. Returns a new float64 [n, V] of exact integers."""
    out = np.array(q, np.float64, copy=True)
    for r in np.flatnonzero(np.asarray(predicted) >= 0):
        total, h, n = int(out[r].sum()), int(hits[r]), int(seen[r])
        out[r, predicted[r]] += total * (2 * h + 1) // (2 * (n - h) + 1)
    return out


class MatchModel:
    """Predictor and counters for all segments of a coding run (see the module docstring).

    Token by token, in the coding order (row by row within a device step, batch by batch):
    `table(seg, probs)` gives the table the next token of segment `seg` is coded with, then
    `observe(seg, token)` feeds the coded token, identically on both sides."""

    def __init__(self, config: MatchConfig, n_segments: int):
        self.config = config
        self.hist: list[list[int]] = [[] for _ in range(n_segments)]
        self.src = [-1] * n_segments  # segment the active match points into (-1: none)
        self.ptr = [0] * n_segments  # position there of the predicted token
        self.len = [0] * n_segments
        self.index: list[dict] = [{} for _ in range(n_segments if config.scope == "segment" else 1)]
        self.hits = np.zeros((LM_BINS, config.buckets + 1), np.int64)
        self.seen = np.zeros((LM_BINS, config.buckets + 1), np.int64)
        self._pending: tuple | None = None

    # ----------------------------------------------------------------------------- predictor

    def predict(self, seg: int) -> tuple[int, int]:
        """(predicted next token, match length) of segment `seg`; (-1, 0) without a match or
        while the match's source (another segment) has not coded the token it points at."""
        s = self.src[seg]
        if s < 0 or self.ptr[seg] >= len(self.hist[s]):
            return -1, 0
        return self.hist[s][self.ptr[seg]], self.len[seg]

    def update(self, seg: int, token: int) -> None:
        """Appends the coded `token` to segment `seg` and moves its match on."""
        s, p = self.src[seg], self.ptr[seg]
        if s >= 0 and p < len(self.hist[s]) and self.hist[s][p] == token:
            self.ptr[seg] += 1
            self.len[seg] += 1
        else:
            self.src[seg], self.len[seg] = -1, 0
        h = self.hist[seg]
        h.append(int(token))
        c = self.config
        if len(h) < c.order:
            return
        index = self.index[seg if c.scope == "segment" else 0]
        key = tuple(h[-c.order :])
        occ = index.get(key)
        if occ is None:
            occ = index[key] = []
        elif self.src[seg] < 0:
            best = (0, -1, 0)
            for s, p in reversed(occ):  # most recent first: ties keep it
                n = self._agree(seg, s, p)
                if n > best[0]:
                    best = (n, s, p)
            self.len[seg], self.src[seg], self.ptr[seg] = best
        occ.append((seg, len(h)))
        if len(occ) > c.candidates:
            del occ[0]

    def _agree(self, seg: int, s: int, p: int) -> int:
        """How many tokens before position p of segment s equal the last ones of `seg`."""
        x, y, cap = self.hist[seg], self.hist[s], self.config.max_len
        i, j, n = len(x) - 1, p - 1, 0
        while n < cap and j >= 0 and x[i] == y[j]:
            i, j, n = i - 1, j - 1, n + 1
        return n

    # ------------------------------------------------------------------------------- mixing

    def table(self, seg: int, probs: np.ndarray) -> np.ndarray:
        """The table (float64 [1, V], exact integers: `mixed_table`) the next token of segment
        `seg` is coded with; probs: the LM's float32 [1, V]."""
        q = lm_table(probs)
        m, n = self.predict(seg)
        self._pending = None
        if m < 0:
            return q
        b, k = lm_bin(int(q[0, m]), int(q[0].sum())), min(n, self.config.buckets)
        self._pending = (b, k, m)
        return mixed_table(q, [m], self.hits[b, k : k + 1], self.seen[b, k : k + 1])

    def observe(self, seg: int, token: int) -> None:
        """After coding `token` with the last `table` of `seg`: its counter, then the history."""
        if self._pending is not None:
            b, k, m = self._pending
            self.seen[b, k] += 1
            self.hits[b, k] += int(token) == m
            if self.seen[b, k] > self.config.limit:
                self.seen[b, k] >>= 1
                self.hits[b, k] >>= 1
            self._pending = None
        self.update(seg, int(token))
