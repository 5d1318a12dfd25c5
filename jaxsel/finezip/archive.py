"""FineZip archive container: header, checksums, and the model-free fallback modes.

Layout (all integers little-endian)::

    b"FZIP" | version u8 | header_len u32 | header (UTF-8 JSON) | crc32(header) u32 | body

`body` = LoRA blob (`header["lora"]["len"]` bytes, absent without LoRA) followed by the coded
payload; `header["body_len"]` and `header["body_crc32"]` cover it (corruption and truncation are
caught before any decoding), `header["size"]` and `header["sha256"]` describe the original bytes
(the restored output is verified against them). JSON keeps the header self-describing for
`jaxsel compress --info` and costs ~300 bytes, which only matters for inputs so small that the
fallback modes win anyway.

Modes: "model" (LLM-coded text), "raw", "bz2", "lzma" (model-free fallbacks, chosen when the
input is not text the tokenizer round-trips, or whenever one of them is smaller).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import struct
import zlib

from jaxsel.compress import codecs
from jaxsel.errors import ArchiveError

MAGIC = b"FZIP"
VERSION = 2  # 2: per-layer KV cache in the coding step (other float rounding than 1)
FALLBACK_MODES = ("raw", "bz2", "lzma")
_PREFIX = struct.Struct("<4sBI")  # magic, version, header_len


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(header: dict, body: bytes) -> bytes:
    """Serialises `header` (completed with body_len/body_crc32) and `body` into an archive."""
    header = {**header, "body_len": len(body), "body_crc32": zlib.crc32(body)}
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + struct.pack("<I", zlib.crc32(raw)) + body


def read_header(archive: bytes) -> tuple[dict, int]:
    """Parses and checks the header; returns it and the offset of the body. Raises ArchiveError
    on a wrong magic/version, a truncated or corrupted header."""
    if len(archive) < _PREFIX.size:
        raise ArchiveError(f"not a FineZip archive: {len(archive)} bytes, too short")
    magic, version, n = _PREFIX.unpack_from(archive)
    if magic != MAGIC:
        raise ArchiveError(f"not a FineZip archive (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ArchiveError(f"archive format version {version}; this jaxsel reads {VERSION}")
    end = _PREFIX.size + n
    if len(archive) < end + 4:
        raise ArchiveError(f"truncated archive: header needs {end + 4} bytes, got {len(archive)}")
    raw = archive[_PREFIX.size : end]
    (crc,) = struct.unpack_from("<I", archive, end)
    if zlib.crc32(raw) != crc:
        raise ArchiveError("corrupted archive: header checksum mismatch")
    try:
        header = json.loads(raw)
    except ValueError as e:  # crc passed, so this is a writer bug or a forged file
        raise ArchiveError(f"corrupted archive: unreadable header ({e})") from None
    return header, end + 4


def unpack(archive: bytes) -> tuple[dict, bytes]:
    """Header and verified body; ArchiveError if the body is truncated, extended or corrupted."""
    header, start = read_header(archive)
    body = archive[start:]
    if len(body) != header["body_len"]:
        what = "truncated" if len(body) < header["body_len"] else "trailing data in"
        raise ArchiveError(
            f"{what} archive: body has {len(body)} bytes, header says {header['body_len']}"
        )
    if zlib.crc32(body) != header["body_crc32"]:
        raise ArchiveError("corrupted archive: body checksum mismatch")
    return header, body


def check_restored(header: dict, data: bytes, hint: str = "") -> bytes:
    """Verifies restored bytes against the original's length and sha256 from the header."""
    if len(data) != header["size"] or sha256(data) != header["sha256"]:
        raise ArchiveError("decoded data fails the archive's checksum of the original" + hint)
    return data


# ------------------------------------------------------------------------------ fallback modes


def fallback_candidates(data: bytes) -> dict[str, bytes]:
    """Model-free encodings of `data` per fallback mode (inverted by `fallback_decode`)."""
    return {"raw": data, **{m: codecs.get(m, 9).compress(data) for m in ("bz2", "lzma")}}


def fallback_decode(mode: str, body: bytes) -> bytes:
    try:
        if mode == "raw":
            return body
        if mode == "bz2":
            return bz2.decompress(body)
        if mode == "lzma":
            return lzma.decompress(body)
    except (OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise ArchiveError(f"corrupted {mode} payload: {e}") from None
    raise ArchiveError(f"unknown archive mode {mode!r}")


def describe(header: dict, archive_len: int) -> str:
    """Human-readable header for `jaxsel compress --info`."""
    size = header["size"]
    lines = [
        f"FineZip archive v{VERSION}: {archive_len} bytes for {size} original bytes"
        + (
            f" ({8 * archive_len / size:.3f} bits/byte, ratio {size / archive_len:.3f})"
            if size
            else ""
        )
    ]
    lines += [f"  {k}: {json.dumps(header[k])}" for k in sorted(header)]
    return "\n".join(lines)
