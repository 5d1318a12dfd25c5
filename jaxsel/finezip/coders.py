"""Host-side entropy coders for FineZip's two payloads (no JAX here).

* `rank`: the paper's payload. Ranks (ints computed on device) in text order, LEB128 varints,
  then bzip2 (`encode_ranks` / `decode_ranks`).
* `ac`: range coding of each true token under the model's full next-token distribution with
  `constriction` (a queue coder, so symbols decode in the order they were encoded, which is the
  order the autoregressive decoder produces distributions in). One `RangeEncoder` per device
  batch; each step encodes that batch's B symbols with one [B, V] probability array
  (`Categorical(perfect=False)` model family). constriction turns each float row into integer
  frequencies (24-bit precision, every symbol at least the smallest nonzero frequency)
  deterministically, so an identical float array on both sides gives identical models.
"""

from __future__ import annotations

import bz2
import lzma

import constriction
import numpy as np

from jaxsel.errors import ArchiveError

NAMES = ("ac", "rank")
# xz's decoder allocates its dictionary as the stream header says: bound it (preset 9 needs 65 MiB).
_LZMA_MEMLIMIT = 128 << 20


def bounded_decompress(codec: str, data: bytes, limit: int, exact: bool = True) -> bytes:
    """One complete bz2 or xz stream that decodes to exactly `limit` bytes (at most, unless
    `exact`), decoded incrementally so that at most `limit + 1` bytes are ever produced (a
    decompression bomb is refused, not allocated). ArchiveError when it is corrupted, truncated,
    followed by other bytes, or longer (shorter) than `limit`."""
    if codec == "bz2":
        dec = bz2.BZ2Decompressor()
    else:
        dec = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
    out, pending, idle = bytearray(), bytes(data), 0
    try:
        while not dec.eof and idle < 2:
            piece = dec.decompress(pending, max_length=limit + 1 - len(out))
            pending = b""
            out += piece
            if len(out) > limit:
                raise ArchiveError(
                    f"corrupted {codec} payload: decodes to more than the declared {limit} bytes"
                )
            idle = 0 if piece else idle + 1
    except (OSError, lzma.LZMAError, EOFError, ValueError) as e:
        raise ArchiveError(f"corrupted {codec} payload: {e}") from None
    if not dec.eof:
        raise ArchiveError(f"truncated {codec} payload")
    if dec.unused_data or (exact and len(out) != limit):
        what = "trailing bytes after" if dec.unused_data else f"{len(out)} bytes from"
        raise ArchiveError(f"corrupted {codec} payload: {what} the stream (expected {limit})")
    return bytes(out)


# ------------------------------------------------------------------------------- varints


def varint_encode(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (7 bits per byte, high bit = more bytes follow)."""
    x = np.asarray(values, np.uint64).ravel()
    nbytes = np.ones(x.shape, np.int64)
    for k in range(1, 10):
        nbytes += x >= np.uint64(1 << (7 * k))
    out = np.empty(int(nbytes.sum()), np.uint8)
    starts = np.cumsum(nbytes) - nbytes
    for k in range(int(nbytes.max(initial=0))):
        sel = nbytes > k
        byte = (x[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte |= np.where(nbytes[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[starts[sel] + k] = byte
    return out.tobytes()


def varint_decode(buf: bytes, count: int) -> np.ndarray:
    """Inverse of `varint_encode`; exactly `count` values must fill `buf` (ArchiveError if not)."""
    b = np.frombuffer(buf, np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) != count or (len(b) and (not len(ends) or ends[-1] != len(b) - 1)):
        raise ArchiveError(f"corrupted payload: expected {count} varints in {len(b)} bytes")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lens = ends - starts + 1
    if lens.max(initial=0) > 10:
        raise ArchiveError("corrupted payload: varint longer than 10 bytes")
    out = np.zeros(count, np.uint64)
    for k in range(int(lens.max(initial=0))):
        sel = lens > k
        out[sel] |= (b[starts[sel] + k].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
    return out


# ----------------------------------------------------------------------------------- rank


def encode_ranks(ranks: np.ndarray) -> bytes:
    """The paper's payload: ranks (text order) as varints, then bzip2 -9."""
    return bz2.compress(varint_encode(ranks), 9)


def decode_ranks(payload: bytes, count: int, vocab: int) -> np.ndarray:
    """Inverse of `encode_ranks`; the varints take at most 5 bytes per rank < 2**32, so a bzip2
    bomb stops there. ArchiveError unless exactly `count` ranks in [0, vocab) come out."""
    ranks = varint_decode(bounded_decompress("bz2", payload, 5 * count, exact=False), count)
    if np.any(ranks >= vocab):
        raise ArchiveError("corrupted rank payload: rank outside the vocabulary")
    return ranks.astype(np.int32)


# ----------------------------------------------------------------------------- range coding

_FAMILY = constriction.stream.model.Categorical(perfect=False)


class RangeEncoder:
    """Range coder of one device batch: `step(symbols [n], probs [n, V])` per decoding step."""

    def __init__(self):
        self._enc = constriction.stream.queue.RangeEncoder()

    def step(self, symbols: np.ndarray, probs: np.ndarray) -> None:
        if len(symbols):
            self._enc.encode(np.asarray(symbols, np.int32), _FAMILY, probs)

    def words(self) -> np.ndarray:
        return self._enc.get_compressed()


class RangeDecoder:
    """Mirror of `RangeEncoder`: `step(probs [n, V]) -> symbols [n]` with the same arrays."""

    def __init__(self, words: np.ndarray):
        self._dec = constriction.stream.queue.RangeDecoder(np.asarray(words, np.uint32))

    def step(self, probs: np.ndarray) -> np.ndarray:
        if not len(probs):
            return np.zeros(0, np.int32)
        try:
            return self._dec.decode(_FAMILY, probs)
        except Exception as e:  # constriction raises plain errors on exhausted/invalid data
            raise ArchiveError(
                f"range decoder failed ({e}); the payload is corrupted or "
                "the model computed different probabilities"
            ) from None


def pack_streams(streams: list[np.ndarray]) -> bytes:
    """Per-batch uint32 word streams -> varint word counts, then all words little-endian."""
    lens = np.array([len(s) for s in streams], np.uint64)
    words = (
        np.concatenate([np.asarray(s, "<u4") for s in streams]) if streams else np.zeros(0, "<u4")
    )
    return varint_encode(lens) + words.tobytes()


def unpack_streams(payload: bytes, n_streams: int) -> list[np.ndarray]:
    b = np.frombuffer(payload, np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) < n_streams:
        raise ArchiveError("corrupted range-coded payload: stream table truncated")
    head = int(ends[n_streams - 1]) + 1 if n_streams else 0
    lens = varint_decode(payload[:head], n_streams)
    if np.any(lens > len(payload) // 4) or head + 4 * sum(lens.tolist()) != len(payload):
        raise ArchiveError("corrupted range-coded payload: stream lengths do not add up")
    words = np.frombuffer(payload, "<u4", offset=head).astype(np.uint32)
    return np.split(words, np.cumsum(lens.astype(np.int64))[:-1]) if n_streams else []


def parse_payload(coder: str, payload: bytes, n_batches: int, n_tokens: int, vocab: int):
    """The coded payload's structure, checked without the model: `ac` -> one word stream per
    batch; `rank` -> the ranks [n_tokens] int32 (each < vocab)."""
    if coder == "ac":
        return unpack_streams(payload, n_batches)
    return decode_ranks(payload, n_tokens, vocab)
