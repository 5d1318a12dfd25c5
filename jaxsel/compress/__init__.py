"""Host layer for compression distances: codecs with exact byte definitions (`codecs`) and the
CPU compressor pool that computes compressed sizes of texts and pairs in bulk (`pool`)."""

from jaxsel.compress.codecs import NAMES, Codec, get
from jaxsel.compress.pool import CompressorPool

__all__ = ["NAMES", "Codec", "CompressorPool", "get"]
