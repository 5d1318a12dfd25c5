"""Random selection baseline: i.i.d. uniform scores from a seeded generator, one per document in
pool order (a whole-pool method: it needs only the pool size)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsel.methods import Method, Run, register
from jaxsel.scores import Scores


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = dataclasses.field(default=0, metadata={"help": "random seed"})


def whole_pool(pool, target, config: Config, run: Run) -> Scores:
    """Uniform [0, 1) scores; the same seed and pool size give the same selection."""
    from jaxsel.pipeline import count

    values = np.random.default_rng(config.seed).random(count(pool))
    return Scores(values, "random", {"seed": config.seed})


RANDOM = register(Method("random", Config, whole_pool=whole_pool))
score = RANDOM.score
