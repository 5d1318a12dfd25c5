"""Random selection baseline: i.i.d. uniform scores from a seeded generator."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsel.data import Corpus
from jaxsel.methods import register
from jaxsel.scores import Scores


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0


def add_args(p, name):
    p.add_argument("--seed", type=int, default=0, help="random seed")


def config_from_args(args, name) -> Config:
    return Config(seed=args.seed)


@register("random", Config)
def score(pool: Corpus, target: Corpus | None, config: Config, **_) -> Scores:
    """Uniform [0, 1) scores; the same seed and pool size give the same selection."""
    values = np.random.default_rng(config.seed).random(len(pool))
    return Scores(values, "random", {"seed": config.seed})
