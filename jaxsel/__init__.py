"""jaxsel: targeted training-data selection and LLM lossless compression in JAX.

Layers (data flows one way): host I/O (`jaxsel.data`, `jaxsel.compress`) -> device kernels
(`jaxsel.kernels`, `jaxsel.models`) -> per-method scores (`jaxsel.methods`) -> selection
(`jaxsel.scores`) -> host I/O. `jaxsel.parallel` is the only module that knows about devices.
`jaxsel.score` / `jaxsel.select` run any method by name on lists, files, DataFrames or datasets.
"""

from jaxsel.data.records import Corpus
from jaxsel.errors import ArchiveError, AssetError, InputError, JaxselError
from jaxsel.scores import Scores, select_budget, select_threshold, select_top_k
from jaxsel.version import __version__

__all__ = [
    "ArchiveError",
    "AssetError",
    "Corpus",
    "InputError",
    "JaxselError",
    "Scores",
    "score",
    "select",
    "select_budget",
    "select_threshold",
    "select_top_k",
    "forget_models",
    "__version__",
]


def __getattr__(name: str):
    # `score`/`select` load the pipeline (and JAX) on first use, so that importing a host-pool
    # method (a Ray worker, a compressor process) does not pay for JAX.
    if name in ("score", "select", "forget_models"):
        from jaxsel import api

        return getattr(api, name)
    raise AttributeError(f"module 'jaxsel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "score", "select", "forget_models"})
