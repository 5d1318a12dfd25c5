"""Selection methods: one module each, one signature, chosen by name.

A method module defines a frozen `Config` dataclass and
`score(pool: Corpus, target: Corpus | None, config: Config) -> Scores`, and registers itself
with `@register(name, Config)`. For the CLI it may define `add_args(parser)` and
`config_from_args(args) -> Config`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from jaxsel.errors import InputError

# name -> module path; modules import lazily so `jaxsel select --method zipfit` never pays for
# loading a language model.
_MODULES = {
    "zipfit": "jaxsel.methods.zipfit",
    "zipfit-fast": "jaxsel.methods.zipfit",
    "dsir": "jaxsel.methods.dsir",
    "random": "jaxsel.methods.random",
    "gip": "jaxsel.methods.gip",
    "lamdas": "jaxsel.methods.lamdas",
    "ppl": "jaxsel.methods.ppl",
    "embed-sim": "jaxsel.methods.embed_sim",
    "hybrid": "jaxsel.methods.hybrid",
}


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    config_cls: type
    score: Callable[..., Any]
    module: Any


_REGISTRY: dict[str, Method] = {}


def register(name: str, config_cls: type):
    """Decorator registering `score(pool, target, config) -> Scores` under `name`."""

    def deco(fn):
        import sys

        _REGISTRY[name] = Method(name, config_cls, fn, sys.modules[fn.__module__])
        return fn

    return deco


def require_pool_and_target(pool, target, name: str) -> None:
    """The check every target-conditioned method starts with: both sets non-empty."""
    if target is None or not len(target):
        raise InputError(f"{name} needs a non-empty target set")
    if not len(pool):
        raise InputError(f"{name}: the pool is empty")


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Method:
    if name not in _MODULES:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(names())}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]
