"""jaxsel: targeted training-data selection and LLM lossless compression in JAX.

Layers (data flows one way): host I/O (`jaxsel.data`, `jaxsel.compress`) -> device kernels
(`jaxsel.kernels`, `jaxsel.models`) -> per-method scores (`jaxsel.methods`) -> selection
(`jaxsel.scores`) -> host I/O. `jaxsel.parallel` is the only module that knows about devices.
"""

from jaxsel.data.corpus import Corpus
from jaxsel.errors import ArchiveError, AssetError, InputError, JaxselError
from jaxsel.scores import Scores, select_budget, select_threshold, select_top_k

__all__ = [
    "ArchiveError",
    "AssetError",
    "Corpus",
    "InputError",
    "JaxselError",
    "Scores",
    "select_budget",
    "select_threshold",
    "select_top_k",
]
__version__ = "0.1.0"
