"""Selection methods: one contract, one object per method, chosen by name.

A method is a `Method` (module `jaxsel.methods.<name>` builds it and `register`s it):

- `config_cls`: a frozen dataclass; every field carries `metadata={"help": ...}` (optionally
  "flag", "choices", "const", "metavar") and the CLI flags are generated from it
  (`add_config_args` / `config_from_args`): one place per option, no hand-written parser.
- Streamed methods (every one that scores documents independently: zipfit, zipfit-fast, dsir,
  ppl, lamdas) give
    `prepare(target, config, run) -> State`: the per-target work, once (compressed target
    sizes, DSIR target counts, a trained LAMDAS prefix); `State.key` is a JSON-able dict that
    identifies the scoring (method, settings, target, model), bound into the shard manifest;
    `score_batch(state, batch) -> BatchScores`: float64 scores of one batch of pool documents
    (`jaxsel.data.sources.Batch`: ids, texts, records, keys) plus additive per-batch statistics
    (token counts, ...) that are stored with the batch's shard and summed for the metadata;
    `describe(state, stats) -> dict`: the `Scores.meta` from the summed statistics.
  Their Config has a `shard_size` field: pool documents per batch and per resumable shard.
  Optional whole-pool steps, each on a stream of the pool (never the pool in memory):
    `pool_counts(state, batch) -> np.ndarray` and `fit_pool(state, counts, pool) -> State`:
    a first pass over the pool (DSIR's raw bucket counts). `pool_counts` gives additive
    integer statistics of one batch; the pipeline sums them over the pool, split as scoring
    is (each process its own parts, Ray blocks), so the sum is exact in any order, and
    `fit_pool` fixes the state from the sum and `pool`, a fingerprint of the pool's texts
    (with a workdir, each batch's counts are a resumable shard in `pool-counts/`);
    `rescore(state, values, pool) -> values`: an [N]-vector step after scoring (DSIR's Gumbel
    keys, zipfit's length debiasing), run when `rescores(config)` is true; only then is one
    float per document held in memory.
- Whole-pool methods (GIP: a greedy selection over the whole embedding matrix; random) give
  `whole_pool(pool, target, config, run) -> Scores` instead, where `pool` is a
  `jaxsel.data.sources.Source` (or an in-memory one); GIP reads its matrix memory-mapped.
- `k_field`: a Config field that `select -k K` fills when the user left it unset (GIP's greedy
  step count).

`Run` carries what is shared by the methods of one job: workdir, progress, device mesh, and a
cache of loaded models (so `jaxsel compare` loads one LM for ppl and lamdas), and closes the
resources methods open (compressor pools) when the job ends. No `**kwargs` anywhere: an unknown
option is an error.

`Method.score(pool, target, config)` scores an in-memory pool (a `Corpus`) on this contract;
`jaxsel.score` / `jaxsel.select` accept lists, paths, DataFrames and HF datasets too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxsel.errors import InputError
from jaxsel.shards import fingerprint_texts, shard_name

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


class BatchScores(NamedTuple):
    """What `score_batch` returns for one batch of b documents.

    values: float64 [b] scores (higher = more wanted; -inf = not ranked).
    stats: additive per-batch statistics (summed over batches for `describe`).
    """

    values: np.ndarray
    stats: dict[str, float] = {}


class Run:
    """One job's shared context: workdir, progress, mesh, loaded models, open resources, and
    the engine of the CPU stage (None: this process; a `jaxsel.ray_engine.RayEngine`: Ray).

    Use as a context manager; resources entered with `enter` close when it exits.
    """

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        progress: bool = False,
        mesh=None,
        models: dict | None = None,
        engine=None,
    ):
        self.workdir = None if workdir is None else str(workdir)
        self.progress = progress
        self.mesh = mesh
        self.models: dict = dict(models or {})
        self.engine = engine
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def enter(self, resource):
        """Enters a context manager for the rest of the run and returns its value."""
        return self._stack.enter_context(resource)

    def model(self, key: tuple, load: Callable[[], Any]) -> Any:
        """The model cached under `key`, loaded by `load()` on first use."""
        if key not in self.models:
            self.models[key] = load()
        return self.models[key]

    def lm(self, model: str | None, dtype: str):
        """The causal LM `model` (None = the embedded SmolLM2) in `dtype`, loaded once per run."""
        from jaxsel.models.loaders import load_lm

        return self.model(("lm", model, dtype), lambda: load_lm(model, dtype))

    def subdir(self, name: str) -> str | None:
        """A directory inside the workdir (None without one)."""
        return None if self.workdir is None else os.path.join(self.workdir, name)


@dataclasses.dataclass(frozen=True)
class Method:
    """One selection method (see the module docstring for the contract)."""

    name: str
    config_cls: type
    prepare: Callable[[Any, Any, Run], Any] | None = None
    score_batch: Callable[[Any, Any], BatchScores] | None = None
    describe: Callable[[Any, dict], dict] | None = None
    pool_counts: Callable[[Any, Any], np.ndarray] | None = None
    fit_pool: Callable[[Any, np.ndarray, str], Any] | None = None
    rescores: Callable[[Any], bool] | None = None
    rescore: Callable[[Any, np.ndarray, Any], np.ndarray] | None = None
    whole_pool: Callable[[Any, Any, Any, Run], Any] | None = None
    k_field: str | None = None

    def __post_init__(self):
        streamed = (self.prepare, self.score_batch, self.describe)
        if self.whole_pool is None and None in streamed:
            raise TypeError(f"{self.name}: a streamed method needs prepare, score_batch, describe")
        if self.whole_pool is not None and any(f is not None for f in streamed):
            raise TypeError(f"{self.name}: whole_pool excludes prepare/score_batch/describe")
        if (self.pool_counts is None) != (self.fit_pool is None):
            raise TypeError(f"{self.name}: pool_counts and fit_pool go together")
        if (self.rescore is None) != (self.rescores is None):
            raise TypeError(f"{self.name}: rescore and rescores go together")

    def config(self, **options) -> Any:
        """The method's Config from keyword options; an unknown option is an InputError."""
        known = [f.name for f in dataclasses.fields(self.config_cls)]
        bad = sorted(set(options) - set(known))
        if bad:
            raise InputError(
                f"{self.name} has no option {bad[0]!r}; options: {', '.join(known) or 'none'}"
            )
        return self.config_cls(**options)

    def score(
        self,
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
        """Scores of every document of `pool` (a Corpus, list of texts, path, ...), pool order.

        `lm`: an already loaded causal LM to use for the config's model (tests, notebooks).
        """
        from jaxsel import pipeline

        config = self.config_cls() if config is None else config
        if not isinstance(config, self.config_cls):
            raise InputError(
                f"{self.name} takes a {self.config_cls.__qualname__}, got {type(config).__name__}"
            )
        with contextlib.ExitStack() as stack:
            if run is None:
                run = stack.enter_context(Run(workdir, progress, mesh))
            if lm is not None:
                run.models[("lm", config.model, config.dtype)] = lm
            return pipeline.score(self, pipeline.as_source(pool), target, config, run)


class PartCounts(NamedTuple):
    """A method's first pass over one part of the pool (`Method.pool_counts`)."""

    part: int  # the part's index
    counts: np.ndarray  # int64 [...]: the summed `pool_counts` of its batches
    digest: bytes  # sha256 of its batches' text fingerprints, in order (32 bytes)
    docs: int


def batch_counts(method: Method, state, batch) -> np.ndarray:
    """`method.pool_counts` of one batch, checked to be integers: int64 [...]."""
    c = np.asarray(method.pool_counts(state, batch))
    if c.dtype.kind not in "iu":
        raise TypeError(f"{method.name}: pool_counts must be integers, got {c.dtype}")
    return c.astype(np.int64)


def part_counts(method: Method, state, batches, store=None) -> Iterator[PartCounts]:
    """PartCounts of every part in a stream of batches (a batch never spans two parts). With a
    `store` (`jaxsel.shards.BatchShards`) each batch's counts are a resumable shard: counted
    once, read back on a rerun."""
    part, counts, h, docs = -1, None, hashlib.sha256(), 0
    for b in batches:
        if int(b.keys[0, 0]) != part:
            if counts is not None:
                yield PartCounts(part, counts, h.digest(), docs)
            part, counts, h, docs = int(b.keys[0, 0]), None, hashlib.sha256(), 0
        fp = fingerprint_texts(b.texts)
        name = shard_name(part, int(b.keys[0, 1]))
        done = None if store is None else store.load(name, fp)
        if done is not None:
            c = done[0]
        else:
            c = batch_counts(method, state, b)
            if store is not None:
                store.save(name, c, {}, fp)
        counts = c if counts is None else counts + c
        h.update(fp.encode())
        docs += len(b)
    if counts is not None:
        yield PartCounts(part, counts, h.digest(), docs)


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds a method to the registry (modules call this once at import)."""
    _REGISTRY[method.name] = method
    return method


def require_pool_and_target(pool, target, name: str) -> None:
    """The check every target-conditioned method starts with: both sets non-empty."""
    if target is None or not len(target):
        raise InputError(f"{name} needs a non-empty target set")
    if pool is not None and not len(pool):
        raise InputError(f"{name}: the pool is empty")


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Method:
    if name not in _MODULES:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(names())}")
    if name not in _REGISTRY:
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


# ------------------------------------------------------------------ flags from Config fields


def _flag_type(cls: type, field: dataclasses.Field) -> type:
    """The scalar type of a Config field (`X | None` -> X); only bool/int/float/str fields."""
    hint = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))[field.name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in args if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
        hint = args[0]
    if hint not in (bool, int, float, str):
        raise TypeError(f"{cls.__qualname__}.{field.name}: unsupported type {hint}")
    return hint


def flag_name(field: dataclasses.Field) -> str:
    """The CLI flag of a Config field: metadata "flag", else --field-name."""
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def add_config_args(parser, config_cls: type) -> None:
    """Adds one flag per Config field: type, default and help from the dataclass."""
    for f in dataclasses.fields(config_cls):
        if "help" not in f.metadata:
            raise TypeError(f"{config_cls.__qualname__}.{f.name}: no help in its metadata")
        typ = _flag_type(config_cls, f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": default,
            "help": f"{f.metadata['help']} (default: {default})",
        }
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = typ
            for opt in ("choices", "const", "metavar"):
                if opt in f.metadata:
                    kw[opt] = f.metadata[opt]
            if "const" in kw:
                kw["nargs"] = "?"
        parser.add_argument(flag_name(f), **kw)


def config_from_args(args: argparse.Namespace, config_cls: type, **overrides) -> Any:
    """The Config from parsed flags (`add_config_args`); `overrides` replace fields."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
    return config_cls(**{**values, **overrides})
