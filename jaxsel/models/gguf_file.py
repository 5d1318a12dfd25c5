"""A lean reader of GGUF files (llama.cpp's model format, versions 2 and 3, little-endian).

`gguf.GGUFReader` builds one numpy memmap slice per string of the metadata: SmolLM2's 49,152
tokens and 48,900 merges took 3.8 of its 5.9-s load. Here the metadata is parsed with `struct`
over the file's bytes (tens of milliseconds) and each tensor is one memmap view; dequantisation
stays `gguf.quants`'. Every count and length is checked against the bytes left before anything is
sized by it, so a truncated or forged file is one `AssetError` naming it, never a huge allocation.
Tested field for field and tensor for tensor against `gguf.GGUFReader` on the SmolLM2 file.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxsel.errors import AssetError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # ggml's GGML_MAX_DIMS
# GGUFValueType -> struct format of one scalar (8 = string, 9 = array are read apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class Tensor(NamedTuple):
    """One tensor's entry: `shape` innermost first (as GGUF lists it), `data` its bytes as the
    memmap view `gguf.quants.dequantize` takes (float32/float16 elements, or a uint8 array of
    quantised blocks per row)."""

    name: str
    type: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int
    data: np.ndarray


class GGUF(NamedTuple):
    fields: dict[str, Any]  # key -> int/float/bool/str, or a list of them
    tensors: dict[str, Tensor]


class _Cursor:
    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, what: str):
        """The error, on one line: names from the file (keys, tensors) are escaped and cut."""
        what = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in what)
        what = what if len(what) <= 300 else what[:300] + "..."
        return AssetError(f"{self.path}: not a readable GGUF file, truncated or corrupt ({what})")

    def take(self, n: int, what: str) -> int:
        """Advances past n bytes; the start offset."""
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(
                f"{what} at byte {self.pos} needs {n} bytes, {len(self.buf) - self.pos} left"
            )
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, fmt: str, what: str):
        s = struct.calcsize("<" + fmt)
        return struct.unpack_from("<" + fmt, self.buf, self.take(s, what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("Q", what)
        start = self.take(n, what)
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} at byte {start} is not UTF-8") from e

    def value(self, vtype: int, what: str):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            raise self.fail(f"{what} has value type {vtype}")
        itype, n = self.scalar("I", what), self.scalar("Q", what)
        if itype in _SCALARS:
            fmt = _SCALARS[itype]
            start = self.take(n * struct.calcsize(fmt), what)
            return np.frombuffer(self.buf, np.dtype("<" + fmt), n, start).tolist()
        if itype == _STRING:
            if n * 8 > len(self.buf) - self.pos:  # every string has its 8-byte length at least
                raise self.fail(f"{what} declares {n} strings, more than the bytes left")
            return [self.string(what) for _ in range(n)]
        raise self.fail(f"{what} has array item type {itype}")  # (gguf writes no nested arrays)


def read(path) -> GGUF:
    """Parses `path`'s metadata and tensor table; tensor data stay in the (read-only) memmap."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:  # ValueError: mmap of an empty file
        raise AssetError(f"{path}: not a readable GGUF file ({e})") from e
    return parse(buf, path)


def parse(buf, path) -> GGUF:
    """`read` of a buffer already in memory (bytes, mmap); `path` names it in errors."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    c = _Cursor(buf, Path(path))
    if bytes(buf[:4]) != MAGIC:
        raise c.fail("no GGUF magic")
    c.take(4, "magic")
    version = c.scalar("I", "version")
    if version not in VERSIONS:
        hint = " (a big-endian file?)" if version >= 1 << 16 else ""
        raise AssetError(f"{path}: GGUF version {version} is not supported{hint} ({VERSIONS})")
    n_tensors, n_kv = c.scalar("Q", "tensor count"), c.scalar("Q", "metadata count")
    if n_kv * 12 > len(buf) or n_tensors * 24 > len(buf):  # the smallest entry of each
        raise c.fail(f"{n_kv} metadata entries and {n_tensors} tensors in {len(buf)} bytes")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string("metadata key")
        if key in fields:
            raise c.fail(f"metadata key {key} is listed twice")
        vtype = c.scalar("I", f"type of {key}")
        if key == "general.alignment" and vtype != 4:
            raise c.fail(f"general.alignment has value type {vtype}, not uint32")
        fields[key] = c.value(vtype, key)
    infos = []
    for _ in range(n_tensors):
        name = c.string("tensor name")
        n_dims = c.scalar("I", name)
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.fail(f"tensor {name} has {n_dims} dimensions")
        shape = tuple(c.scalar("Q", name) for _ in range(n_dims))
        raw_type, offset = c.scalar("I", name), c.scalar("Q", name)
        try:
            qtype = GGMLQuantizationType(raw_type)
        except ValueError:
            raise c.fail(f"tensor {name} has type {raw_type}") from None
        infos.append((name, shape, qtype, offset))
    align = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if align <= 0 or align & (align - 1):
        raise c.fail(f"general.alignment {align!r}")
    data_start = -(-c.pos // align) * align
    tensors: dict[str, Tensor] = {}
    for name, shape, qtype, offset in infos:
        if name in tensors:
            raise c.fail(f"tensor {name} is listed twice")
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_elems = int(np.prod(shape, dtype=object))
        if n_elems % block or n_elems > len(buf) * block:
            raise c.fail(f"tensor {name} of shape {list(shape)} in {qtype.name}")
        n_bytes = n_elems // block * type_size
        start = data_start + offset
        if start + n_bytes > len(buf):
            raise c.fail(f"tensor {name} ends at byte {start + n_bytes}, file has {len(buf)}")
        np_shape = tuple(reversed(shape))
        if qtype == GGMLQuantizationType.F32:
            dtype = np.dtype("<f4")
        elif qtype == GGMLQuantizationType.F16:
            dtype = np.dtype("<f2")
        else:
            dtype = np.dtype(np.uint8)
            try:
                np_shape = quant_shape_to_byte_shape(np_shape, qtype)
            except ValueError as e:
                raise c.fail(f"tensor {name}: {e}") from e
        try:  # (a zero-sized tensor may still declare an impossible dimension)
            data = np.frombuffer(buf, dtype, n_bytes // dtype.itemsize, start).reshape(np_shape)
        except ValueError as e:
            raise c.fail(f"tensor {name} of shape {list(shape)}: {e}") from e
        tensors[name] = Tensor(name, qtype, shape, start, n_bytes, data)
    return GGUF(fields, tensors)
