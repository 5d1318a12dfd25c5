"""Random selection baseline: i.i.d. uniform scores from a seeded generator, one per document in
pool order (a whole-pool method: it needs only the pool size)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsel.errors import InputError
from jaxsel.flags import option
from jaxsel.methods import LOCAL, Run, WholePool, register
from jaxsel.methods.runtime import count
from jaxsel.scores import Scores


@dataclasses.dataclass(frozen=True)
class Config:
    """random: i.i.d. uniform scores from a seeded generator (the baseline).

    Score: higher means nothing (no direction: the baseline). Uniform in [0, 1), one draw per
    document in pool order."""

    seed: int = option(0, "random seed")


def score_pool(pool, target, config: Config, run: Run) -> Scores:
    """Uniform [0, 1) scores; the same seed and pool size give the same selection."""
    n = count(pool)
    if not n:
        raise InputError("random: the pool is empty")
    values = np.random.default_rng(config.seed).random(n)
    return Scores(values, "random", {"seed": config.seed})


RANDOM = WholePool("random", Config, score_pool, LOCAL)
score = register(RANDOM).score
