"""hybrid: rank fusion of registered methods (`--of dsir,zipfit,embed-sim`, the default).

Each member is run once on the same pool and target, with its own options
(`--of 'zipfit(compressor=gzip),embed-sim(reduce=max)'`; none given: the method's defaults).
Compression and n-gram scores rank short documents first (Spearman(score, length) = -0.92 for
ZIP-FIT and -0.93 for DSIR on the embedded default with the HumanEval target), and a member
whose ranking is mostly length puts short off-target documents at the head of the fusion. So with
`debias="auto"` (default) a member whose |Spearman(score, pool byte length)| is at least 0.5
has its scores standardised within quantile bins of length first (`zipfit.length_debiased`, the
rule of `zipfit --debias length`): within a length bin only target similarity is left. Members
whose scores do not follow length (embed-sim: |rho| <= 0.15 on six targets of the embedded
default; LAMDAS: <= 0.05 on two) are fused as they are, since binning them only adds noise
(embed-sim's precision@R on HumanEval drops from 0.80 to 0.76 when debiased).
`debias="length"` standardises every member, `"none"` none; `Scores.meta["length_debiased"]`
names the members that were.
The member scores (or their rankings, `Scores.ranking()`: best first, ties by pool order,
greedy order first for GIP) are then fused:

- "zscore" (default): s(i) = sum_m w_m z_m(i) / sum_m w_m, z_m the member's scores standardised
  over its finite scores (population std; a constant member contributes 0). An item a member
  left unranked (score -inf) gets -inf. This is CombSUM over z-normalised scores (Fox & Shaw
  1994; the normalisation of Montague & Aslam 2001, "Relevance score normalization for
  metasearch"): unlike rank fusion it keeps how far a member's head stands out from its bulk,
  so a member that separates the target domain sharply is not averaged down by one whose
  scores are flat. Measured on the embedded default (experiments/selection_quality.py; README:
  six targets): the default members and fusion give a mean precision@R of 0.88, against 0.85
  for the best single method of each target and 0.82 for zipfit + embed-sim.
- "rrf", reciprocal-rank fusion (Cormack, Clarke & Buettcher 2009):
  s(i) = sum_m w_m / (k + r_m(i)), r_m(i) the 1-based rank of item i under member m. k = 60 is
  the paper's value (it found 60 near-best across TREC runs and insensitive nearby): it damps the
  weight of the very top ranks so that one member's confident head cannot outvote the others.

Weights w_m default to 1. A whole-pool method (it needs every member's full ranking). With a
workdir, member m works in `<workdir>/<m>`, so its resumable shards (e.g. from an earlier
`jaxsel score --method m --workdir <workdir>/<m>`) are reused and an interrupted hybrid job
redoes only what is missing; members share the run's loaded models. A member that fails raises
one line naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsel import methods
from jaxsel.errors import InputError, JaxselError
from jaxsel.flags import option, scalar_type
from jaxsel.methods import LOCAL, Method, Run, WholePool, register, require_pool_and_target
from jaxsel.methods.runtime import score as run_score
from jaxsel.methods.zipfit import length_debiased, pool_lengths
from jaxsel.scores import Scores
from jaxsel.stats import spearman

FUSIONS = ("zscore", "rrf")
DEBIAS = ("auto", "length", "none")
CONFOUNDED_RHO = 0.5  # debias="auto": |Spearman(score, length)| at which a member is debiased


@dataclasses.dataclass(frozen=True)
class Config:
    """hybrid: rank fusion of member methods, each with its own options.

    Score: higher = more like the target (by the members' agreement). --fusion zscore: the
    weighted mean of the members' z-scores, unbounded, about 0 on average (−inf where a member
    left an item unranked); rrf: Σ_m w_m / (rrf_k + rank_m), in (0, Σ_m w_m / (rrf_k + 1)]."""

    of: str = option(
        "dsir,zipfit,embed-sim",
        "comma-separated member methods, each run once, with options in parentheses: "
        "'zipfit(compressor=gzip,level=6),embed-sim(reduce=max)' (default: each its defaults)",
    )
    weights: str | None = option(
        None, "comma-separated non-negative weight per member (None: all 1)"
    )
    fusion: str = option(
        "zscore", "zscore: weighted mean z-score; rrf: reciprocal-rank fusion", choices=FUSIONS
    )
    rrf_k: float = option(60.0, "k of reciprocal-rank fusion")
    debias: str = option(
        "auto",
        "auto: standardise within pool length bins each member whose |Spearman(score, length)| "
        ">= 0.5 before fusing; length: every member; none",
        choices=DEBIAS,
    )

    @property
    def members(self) -> tuple[str, ...]:
        """The member specs of `of`: "name" or "name(option=value,...)"."""
        specs, depth, cur = [], 0, ""
        for ch in self.of + ",":
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                specs.append(cur.strip())
                cur = ""
            else:
                cur += ch
        return tuple(s for s in specs if s)

    def member_methods(self) -> list[tuple[str, Method, Any]]:
        """(spec, method value, its Config) of every member, configured by its options."""
        return [(spec, *_member(spec)) for spec in self.members]

    @property
    def weight_values(self) -> tuple[float, ...]:
        if self.weights is None:
            return (1.0,) * len(self.members)
        try:
            return tuple(float(w) for w in self.weights.split(","))
        except ValueError:
            raise InputError(f"hybrid: --weights must be numbers, got {self.weights!r}") from None

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise InputError(f"hybrid: fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.rrf_k >= 0:
            raise InputError(f"hybrid: rrf_k must be >= 0, got {self.rrf_k}")
        if self.debias not in DEBIAS:
            raise InputError(f"hybrid: debias must be one of {DEBIAS}, got {self.debias!r}")

    def check(self) -> None:
        """Members and weights, checked before any member runs (not at construction, so a
        Config can be built from any flag values and refused with one line when used)."""
        of = self.members
        if not of:
            raise InputError("hybrid: --of needs at least one member method")
        if len(set(of)) != len(of):
            raise InputError(f"hybrid: a member is listed twice in {self.of}")
        if any(_name(m) == "hybrid" for m in of):
            raise InputError("hybrid: a hybrid cannot be its own member")
        unknown = [_name(m) for m in of if _name(m) not in methods.names()]
        if unknown:
            raise InputError(
                f"hybrid: unknown member {unknown[0]!r}; choose from {', '.join(methods.names())}"
            )
        self.member_methods()  # every member's options parse and validate
        w = np.asarray(self.weight_values, np.float64)
        if w.shape != (len(of),):
            raise InputError(f"hybrid: {w.size} weights for {len(of)} members ({self.of})")
        if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
            raise InputError(f"hybrid: weights must be finite, >= 0, not all 0: {self.weights}")


def _name(spec: str) -> str:
    return spec.split("(", 1)[0].strip()


def _member(spec: str) -> tuple[Method, Any]:
    """A member spec "name(option=value,...)" as (method value, Config); option values are
    read as the Config field's type (bool: true/false)."""
    entry = methods.get(_name(spec))
    body = spec[len(_name(spec)) :].strip()
    if body and not (body.startswith("(") and body.endswith(")")):
        raise InputError(f"hybrid: member {spec!r}: expected name(option=value,...)")
    fields = {f.name: f for f in dataclasses.fields(entry.config_cls)}
    options = {}
    for item in filter(None, (x.strip() for x in body[1:-1].split(","))):
        key, eq, text = (s.strip() for s in item.partition("="))
        key = key.replace("-", "_")
        if not eq or key not in fields:
            raise InputError(
                f"hybrid: member {spec!r}: {item!r} is not option=value of {entry.name} "
                f"(options: {', '.join(fields)})"
            )
        typ = scalar_type(entry.config_cls, fields[key])
        try:
            if typ is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                options[key] = text.lower() == "true"
            else:
                options[key] = None if text.lower() == "none" else typ(text)
        except ValueError:
            raise InputError(
                f"hybrid: member {spec!r}: {key}={text!r} is not a {typ.__name__}"
            ) from None
    return entry(**options)


def ranks(scores: Scores) -> np.ndarray:
    """[N] int64: the 1-based rank of each item under `scores.ranking()`."""
    r = np.empty(len(scores), np.int64)
    r[scores.ranking()] = np.arange(1, len(scores) + 1)
    return r


def reciprocal_rank_fusion(
    members: Sequence[Scores], weights: Sequence[float], k: float = 60.0
) -> np.ndarray:
    """[N] float64: sum_m w_m / (k + r_m(i))."""
    return sum(w / (k + ranks(s).astype(np.float64)) for s, w in zip(members, weights, strict=True))


def zscore_fusion(members: Sequence[Scores], weights: Sequence[float]) -> np.ndarray:
    """[N] float64: weighted mean of the members' z-scores (see the module docstring)."""
    total = np.zeros(len(members[0]))
    for s, w in zip(members, weights, strict=True):
        v = s.values
        fin = np.isfinite(v)
        z = np.full(v.shape, -np.inf)
        if fin.any():
            mu, sd = v[fin].mean(), v[fin].std()
            z[fin] = (v[fin] - mu) / sd if sd > 0 else 0.0
        total = total + (w * z if w > 0 else 0.0)  # a zero weight ignores the member entirely
    return total / float(np.sum(weights))


def debiased(scores: Scores, lengths: Sequence[int]) -> Scores:
    """The member's finite scores standardised within pool length bins (`length_debiased`, bins
    over the finite items); +-inf and a greedy order are kept."""
    v = scores.values.copy()
    fin = np.isfinite(v)
    if fin.any():
        v[fin] = length_debiased(v[fin], np.asarray(lengths)[fin])
    return Scores(v, scores.method, scores.meta, scores.order)


def length_confounded(scores: Scores, lengths: Sequence[int]) -> bool:
    """Whether a member's finite scores follow pool length: |Spearman| >= CONFOUNDED_RHO."""
    fin = np.isfinite(scores.values)
    if fin.sum() < 3:
        return False
    rho = spearman(scores.values[fin], np.asarray(lengths)[fin])
    return bool(abs(rho) >= CONFOUNDED_RHO)  # nan (a constant member) is not confounded


def to_debias(
    members: Sequence[Scores], config: Config, lengths: Sequence[int] | None
) -> list[bool]:
    """Per member: whether `fuse` standardises it within length bins first."""
    if config.debias == "none":
        return [False] * len(members)
    if lengths is None:
        raise ValueError(f"fuse: debias={config.debias!r} needs the pool's lengths")
    if config.debias == "length":
        return [True] * len(members)
    return [length_confounded(s, lengths) for s in members]


def fuse(
    members: Sequence[Scores], config: Config, lengths: Sequence[int] | None = None
) -> np.ndarray:
    """[N] float64, the fused scores; `lengths` (pool byte lengths) are needed unless
    debias="none"."""
    return _fuse(members, config, lengths)[0]


def _fuse(members, config, lengths) -> tuple[np.ndarray, list[bool]]:
    """(fused scores, which members were debiased)."""
    flags = to_debias(members, config, lengths)
    members = [debiased(s, lengths) if f else s for s, f in zip(members, flags, strict=True)]
    weights = config.weight_values
    if config.fusion == "rrf":
        return reciprocal_rank_fusion(members, weights, config.rrf_k), flags
    return zscore_fusion(members, weights), flags


def score_pool(pool, target, config: Config, run: Run) -> Scores:
    """Runs every member once on (pool, target) and fuses their rankings."""
    config.check()
    require_pool_and_target(None, target, "hybrid")
    members = []
    for spec, method, member_config in config.member_methods():
        sub = Run(run.subdir(spec), run.progress, run.mesh, models=run.models)
        try:
            with sub:
                members.append(run_score(method, pool, target, member_config, sub))
        except JaxselError as e:
            raise type(e)(f"hybrid: member {spec!r} failed: {e}") from e
    lengths = None
    if config.debias != "none":
        lengths = pool_lengths(pool)
    values, flags = _fuse(members, config, lengths)
    meta = {
        "config": dataclasses.asdict(config),
        "members": {spec: s.meta for spec, s in zip(config.members, members, strict=True)},
        "length_debiased": [s.method for s, f in zip(members, flags, strict=True) if f],
    }
    return Scores(values, "hybrid", meta)


HYBRID = WholePool("hybrid", Config, score_pool, LOCAL)
score = register(HYBRID).score
