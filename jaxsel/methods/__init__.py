"""Selection methods: the contract (`jaxsel.methods.contract`), the registry, and the run.

A method is a value of one of two types, `Streamed` or `WholePool` (see `contract`); a module
`jaxsel.methods.<name>` builds it from its frozen Config dataclass and `register`s a builder
under its name. Every Config field carries `metadata={"help": ...}` (optionally "flag",
"choices", "const", "metavar", and the roles of `contract.FIELD_ROLES`); the CLI flags are
generated from it (`jaxsel.flags`). A method's value may depend on its Config: zipfit with
`debias="length"` is the streamed zipfit wrapped by a rescore pass (`passes.rescored`), a
`WholePool`.

    entry = methods.get("zipfit")            # name -> Entry(name, config_cls, build)
    config = entry.config(compressor="gzip") # an unknown option is an InputError
    method = entry.build(config)             # a Streamed or WholePool value
    scores = methods.score(method, pool, target, config)

`Run` (`jaxsel.methods.runtime`) carries what the methods of one job share: workdir, progress,
device mesh, engine, and a cache of loaded models (so `jaxsel compare` loads one LM for ppl and
lamdas), and closes the resources methods open (compressor pools) when the job ends. No
`**kwargs` anywhere: an unknown option is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxsel.errors import InputError
from jaxsel.methods.contract import (
    LOCAL,
    LOCAL_AND_RAY,
    BatchScores,
    Method,
    Streamed,
    WholePool,
    fields_with,
)
from jaxsel.methods.runtime import LocalEngine, Run, map_batches

__all__ = [
    "LOCAL",
    "LOCAL_AND_RAY",
    "BatchScores",
    "Entry",
    "LocalEngine",
    "Method",
    "Run",
    "Streamed",
    "WholePool",
    "fields_with",
    "get",
    "map_batches",
    "names",
    "register",
    "require_pool_and_target",
    "score",
]

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


class Entry(NamedTuple):
    """A registered method: its name, Config class, and `build(config) -> Method`."""

    name: str
    config_cls: type
    build: Callable[[Any], Method]

    def config(self, **options) -> Any:
        """The method's Config from keyword options; an unknown option is an InputError."""
        known = [f.name for f in dataclasses.fields(self.config_cls)]
        bad = sorted(set(options) - set(known))
        if bad:
            raise InputError(
                f"{self.name} has no option {bad[0]!r}; options: {', '.join(known) or 'none'}"
            )
        return self.config_cls(**options)

    def __call__(self, config=None, **options) -> tuple[Method, Any]:
        """(method value, config) from a Config or keyword options."""
        if config is None:
            config = self.config(**options)
        elif options:
            raise InputError(f"{self.name}: give a Config or options, not both")
        if not isinstance(config, self.config_cls):
            raise InputError(
                f"{self.name} takes a {self.config_cls.__qualname__}, got {type(config).__name__}"
            )
        return self.build(config), config

    @classmethod
    def of(cls, method: Method, build: Callable[[Any], Method] | None = None) -> Entry:
        """The entry of a method value; `build(config)` gives the value for a config when it
        depends on it (default: `method` itself)."""
        return cls(method.name, method.config_cls, build or (lambda config, m=method: m))

    def score(self, pool, target=None, config=None, **options):
        """`jaxsel.methods.score` with this method (`zipfit.score(pool, target, config)`)."""
        return score(self, pool, target, config, **options)


_REGISTRY: dict[str, Entry] = {}


def register(method: Method, build: Callable[[Any], Method] | None = None) -> Entry:
    """Adds a method to the registry (modules call this once at import) and returns its
    entry; `build(config)` gives the value for a config when it depends on it (default:
    `method` itself)."""
    entry = Entry.of(method, build)
    _REGISTRY[method.name] = entry
    return entry


def require_pool_and_target(pool, target, name: str) -> None:
    """The check every target-conditioned method starts with: both sets non-empty."""
    if target is None or not len(target):
        raise InputError(f"{name} needs a non-empty target set")
    if pool is not None and not len(pool):
        raise InputError(f"{name}: the pool is empty")


def names() -> list[str]:
    """The built-in methods and every method registered since (a method of your own)."""
    return sorted({*_MODULES, *_REGISTRY})


def get(name: str) -> Entry:
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise InputError(f"unknown method {name!r}; choose one of {', '.join(names())}")
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


def score(
    method: Method | Entry | str,
    pool,
    target=None,
    config=None,
    *,
    workdir: str | os.PathLike | None = None,
    progress: bool = False,
    mesh=None,
    lm=None,
    run: Run | None = None,
):
    """Scores of every document of `pool` (a Corpus or a Source), pool order: the in-memory
    entry point for notebooks and tests (`jaxsel.score` also takes lists, paths, DataFrames).

    `method`: a name, a registry `Entry`, or a method value (then `config` is its Config);
    `lm`: an already loaded causal LM to use for the config's model (tests, notebooks).
    """
    from jaxsel.data.adapters import as_corpus, as_source
    from jaxsel.methods.runtime import score as run_score

    if isinstance(method, str):
        method = get(method)
    # a method value is taken as it is, its config checked as an entry's (the one check)
    method, config = (method if isinstance(method, Entry) else Entry.of(method))(config)
    with contextlib.ExitStack() as stack:
        if run is None:
            run = stack.enter_context(Run(workdir, progress, mesh))
        if lm is not None:
            run.models[("lm", config.model, config.dtype)] = lm
        target = None if target is None else as_corpus(target)
        return run_score(method, as_source(pool), target, config, run)
