"""FineZip archive container: the typed header, checksums, and the model-free fallback modes.

Layout (all integers little-endian)::

    b"FZIP" | version u8 | header_len u32 | header | crc32(header) u32 | body

The header is the canonical JSON of a `Header` (sorted keys, no spaces), stored raw-deflated with
a preset dictionary (`HEADER_DICT`) in format 4 and as plain UTF-8 in format 3, which is still
read. `Header.from_bytes` is the one place an archive is parsed: the prefix, the header checksum,
the JSON, then every field's type and range and the fields' consistency with each other and with
the body (length, checksum). A header that passes is safe to act on: nothing downstream re-checks
a field, and the work and memory it asks of the decoder are bounded by the body's length
(`TOKENS_PER_BYTE`, the coder's floor on the payload, `FALLBACK_EXPANSION`) and a few constants
(`MAX_ROWS`, `MAX_TABLE`, `PREFILL_RATIO`, `match.MAX_COMPARE`), all checked before any model is
loaded; a range-coded payload that runs out stops the decoder in that step (`coders`).

`body` = LoRA blob (`model.lora.len` bytes) + escape table and escaped bytes (`model.escape.len`)
+ the coded payload + `model.pad` zero bytes; `size` and `sha256` describe the original bytes
(the restored output is verified against them). The JSON keeps the header self-describing for
`jaxsel compress --info`; deflated against a typical header it costs ~100 bytes (800 as plain
JSON), which matters for small inputs.

Modes: "model" (LLM-coded text), "raw", "bz2", "lzma" (model-free fallbacks, chosen when the
input is not text the tokenizer round-trips, or whenever one of them is smaller). Fallback bodies
decode incrementally with an output bound (the declared size), so a decompression bomb is refused
after at most `size + 1` bytes of output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import struct
import typing
import zlib
from typing import ClassVar

from jaxsel.compress import codecs
from jaxsel.errors import ArchiveError
from jaxsel.finezip import coders, match
from jaxsel.models.llama import LORA_TARGETS

MAGIC = b"FZIP"
# 4: the header JSON raw-deflated with `HEADER_DICT` (a 4 KB text's archive: 1,320 -> ~600
# bytes). 3: plain JSON; typed header (nested model/lora/escape/match/environment records, vocab
# size, padding), sliding context (segments, context, stride), attention length buckets, the
# `ac-match` coder (its `model.match` record is optional: absent = no match model). 2: per-layer
# KV cache in the coding step (other float rounding than 1).
VERSION = 4
READABLE = (3, 4)
READERS = {  # older versions and the release that reads them
    1: "jaxsel 0.1.0 up to commit 8d13574 (2026-11-22)",
    2: "jaxsel 0.1.0 from commit 64b961e to 85c55d9 (2026-11-23 .. 2026-11-30)",
}
# Format 4's preset dictionary: the field names and common values of a header, so that deflate
# codes them as short back-references (the hashes of SmolLM2-135M and its tokenizer, the
# deterministic XLA flags). Part of the format: changing it needs a new version.
HEADER_DICT = (
    b'{"alpha":16.0,"layers":30,"len":0,"rank":8,"seed":0,"steps":0,"targets":["wq","wv"]}'
    b'{"len":0,"runs":0,"table":0}"mode":"bz2","model":null,"mode":"lzma","mode":"raw",'
    b'"coder":"ac","coder":"rank","dtype":"bfloat16","platform":"gpu","device_kind":"NVIDIA '
    b'H100 80GB HBM3","sliding":"ring","machine":"aarch64","cpu":"x86_64 AuthenticAMD 25/1 isa:'
    b'","xla_flags":"--xla_force_host_platform_device_count=8 --xla_gpu_deterministic_ops=true'
    b' --xla_gpu_autotune_level=0"}{"body_crc32":0,"body_len":0,"mode":"model","model":'
    b'{"batch_size":16,"coder":"ac-match","context":2048,"dtype":"float32","environment":'
    b'{"constriction":"0.5.0","cpu":"x86_64 GenuineIntel 6/143 isa:","device_kind":"cpu",'
    b'"devices":1,"jax":"0.10.2","jaxlib":"0.10.2","machine":"x86_64","platform":"cpu",'
    b'"xla_flags":"--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0"},"escape":null,'
    b'"lora":null,"match":{"buckets":32,"candidates":8,"limit":1023,"max_len":1024,"order":4,'
    b'"scope":"all"},"model":"c33f03f07da35c4924d657dbcfa3c6ae09bd5c399c6637c4566f7b6fb30b2c82",'
    b'"n_batches":1,"n_tokens":1,"pad":0,"sliding":"ring","spans":1,"stride":1,'
    b'"tokenizer":"61ddb02419b882f725f5a9577b19bf19","vocab_size":49152},"sha256":"","size":'
)
FALLBACK_MODES = ("raw", "bz2", "lzma")
MODES = ("model", *FALLBACK_MODES)
DTYPES = ("float32", "bfloat16")
# Every model payload codes at most this many tokens per body byte (payload + padding): the
# writer pads the body with zero bytes when a coder beats it, so the decoding work an archive can
# ask for is bounded by its own length. The coders alone bound less: constriction's 24-bit
# quantisation leaves each of a vocabulary's V tokens at least 2**-24 of the probability, so a
# range-coded token costs at least -log2(1 - (V - 1) / 2**24) bits (`coders.stream_floor_bits`:
# 0.0042 bits for V = 49,152, ~1,890 tokens per payload byte; measured: 0.0045 bits for a certain
# token), checked too, on the payload alone and per batch stream (`coders.max_stream_tokens`),
# and while decoding a stream stops where it is read past its end (`coders.RangeDecoder`).
# Ranks (one varint byte at least) under bzip2 go further: 2 GiB of zero bytes take 1,522
# bytes; their payload is decoded whole before the model loads. 64 tokens
# per byte (0.125 bits per token) pads only a text coded below that on average, by at most
# n_tokens / 64 bytes (SmolLM2 on English: ~2.5 bits per token; 90 copies of one paragraph with
# `ac-match` under a random model: 0.34).
TOKENS_PER_BYTE = 64
# Segments in flight (n_batches x batch_size; the default plan has at most 32) and the float32
# probabilities they send to the host per step (rows x vocab_size: 1 GiB): besides the model,
# what one decoding step allocates. The KV cache (rows x context positions, context <= the
# segment length) is then bounded by the tokens. The writer refuses plans beyond either.
MAX_ROWS = 4096
MAX_TABLE = 1 << 28
# Prefill windows: the most tokens pre-filled per coded token, (C - S + 1) / S (strides of C/2:
# about 1; a ring: none).
PREFILL_RATIO = 16
# The most bytes a fallback body of n bytes can decode to, from the formats' own limits (a
# declared size beyond it is refused before anything is decoded). bzip2: a block decodes to at
# most 900,000 / 5 x 259 bytes (900 kB of run-length pairs, 4 bytes + a count byte standing for
# up to 259) and takes at least 173 bits (magic, crc, origPtr, symbol map, 2 Huffman tables of
# 3 symbols, one selector, one code); 1,522 bytes of it give 2 GiB of zeros
# (`tests/finezip/fixtures`), the bound 3.4 GB. xz: an LZMA2 chunk decodes to at most 2 MiB and
# takes at least 6 bytes.
FALLBACK_EXPANSION = {
    "raw": lambda n: n,
    "bz2": lambda n: 8 * n // 173 * (900_000 // 5 * 259),
    "lzma": lambda n: n // 6 * (2 << 20),
}
MAX_HEADER = 1 << 16  # header JSON bytes
MAX_INT = 2**53  # integers JSON round-trips exactly
MAX_STR = 4096
_PREFIX = struct.Struct("<4sBI")  # magic, version, header_len
# The fewest bytes an archive spends besides its body: the prefix, a header of at least one
# byte (deflated), its crc32.
MIN_OVERHEAD = _PREFIX.size + 1 + 4


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------- header


def _f(lo=None, hi=None, choices=None, pattern=None, **default):
    """A record field's range (ints, floats), choices (strings, tuples of strings) or pattern
    (and `default=...` for an optional field)."""
    md = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern}
    return dataclasses.field(metadata=md, **default)


def _fail(where: str, what: str):
    raise ArchiveError(f"corrupted archive: header field {where} {what}")


def _check(where: str, value, tp, md) -> None:
    """Type and range of one field value (JSON types: bool is not an int, int is a float)."""
    args = typing.get_args(tp)
    if type(None) in args:  # X | None
        if value is None:
            return
        tp = next(a for a in args if a is not type(None))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            _fail(where, f"must be a {tp.__name__} record, got {type(value).__name__}")
        return
    if typing.get_origin(tp) is tuple:
        if type(value) is not tuple or not value or any(type(v) is not str for v in value):
            _fail(where, "must be a non-empty list of strings")
        if len(set(value)) != len(value) or (md["choices"] and set(value) - set(md["choices"])):
            _fail(
                where, f"must be distinct names from {md['choices']}, got {str(list(value))[:80]!r}"
            )
        return
    if tp is str:
        if type(value) is not str or len(value) > MAX_STR:
            _fail(where, f"must be a string (at most {MAX_STR} characters)")
        if md["choices"] is not None and value not in md["choices"]:
            _fail(where, f"must be one of {md['choices']}, got {value[:40]!r}")
        if md["pattern"] is not None and not re.fullmatch(md["pattern"], value):
            _fail(where, f"must match {md['pattern']}, got {value[:80]!r}")
        return
    if tp is bool:
        if type(value) is not bool:
            _fail(where, f"must be true or false, got {str(value)[:40]!r}")
        return
    if tp is int and type(value) is not int:
        _fail(where, f"must be an integer, got {type(value).__name__} {str(value)[:40]!r}")
    if tp is float and (type(value) not in (int, float) or not math.isfinite(value)):
        _fail(where, f"must be a finite number, got {str(value)[:40]!r}")
    lo, hi = md["lo"], md["hi"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(where, f"must be in [{lo}, {hi}], got {value if abs(value) < 1e30 else 'more'}")


class _Record:
    """Base of the header's frozen dataclasses: every field is type- and range-checked when a
    record is built (by the writer or by `from_dict`), then `_consistent` checks the fields
    against each other. Any failure is one ArchiveError line naming the field."""

    _where: ClassVar[str] = ""
    _optional: ClassVar[tuple[str, ...]] = ()  # `X | None` fields left out of the JSON when None

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check(f"{self._where}{f.name}", getattr(self, f.name), hints[f.name], f.metadata)
        self._consistent()

    def _consistent(self) -> None:
        pass

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in self._optional:
                continue
            out[f.name] = (
                v.to_dict() if isinstance(v, _Record) else list(v) if type(v) is tuple else v
            )
        return out

    @classmethod
    def from_dict(cls, d, where: str = "header"):
        if type(d) is not dict:
            raise ArchiveError(
                f"corrupted archive: {where} must be a JSON object, got {type(d).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d and n not in cls._optional]
        extra = sorted(set(d) - set(names))
        if missing or extra:
            what = ", ".join(
                [f"missing field {cls._where}{n}" for n in missing]
                + [f"unknown field {cls._where}{n[:40]!r}" for n in extra]
            )
            raise ArchiveError(f"corrupted archive: {where}: {what}")
        hints = typing.get_type_hints(cls)
        kw = {}
        for name in names:
            value, tp = d.get(name), hints[name]
            sub = [a for a in (tp, *typing.get_args(tp)) if isinstance(a, type)]
            rec = [a for a in sub if issubclass(a, _Record)]
            if rec and value is not None:
                value = rec[0].from_dict(value, f"{cls._where}{name}")
            elif typing.get_origin(tp) is tuple and type(value) is list:
                value = tuple(value)
            kw[name] = value
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class Environment(_Record):
    """What a bit-exact replay depends on beyond the model (see `engine`); recorded, compared
    with a warning, never refused."""

    _where: ClassVar[str] = "model.environment."
    _optional: ClassVar[tuple[str, ...]] = ("cpu",)
    platform: str = _f()
    device_kind: str = _f()
    devices: int = _f(1, 1 << 20)
    machine: str = _f()
    xla_flags: str = _f()
    jax: str = _f()
    jaxlib: str = _f()
    constriction: str = _f()
    # the host CPU as XLA:CPU compiles for it (`jaxsel.host.cpu_signature`); absent in archives
    # written before it was recorded
    cpu: str | None = _f(default=None)


@dataclasses.dataclass(frozen=True)
class LoraInfo(_Record):
    """Online memorisation: how to rebuild the adapters from the stored blob (`memorize`)."""

    _where: ClassVar[str] = "model.lora."
    targets: tuple[str, ...] = _f(choices=LORA_TARGETS)
    rank: int = _f(1, 1 << 12)
    alpha: float = _f(-1e6, 1e6)
    layers: int = _f(1, 1 << 12)
    seed: int = _f(0, MAX_INT)
    steps: int = _f(0, MAX_INT)
    len: int = _f(2, MAX_INT)  # blob bytes: float16 factors

    def _consistent(self):
        if self.len % 2:
            _fail(f"{self._where}len", f"must be even (float16 factors), got {self.len}")
        # b is [layers, rank, out] float16 per target, out >= 1: the blob bounds rank and layers
        least = 2 * self.rank * self.layers * len(self.targets)
        if least > self.len:
            _fail(
                f"{self._where}rank",
                f"{self.rank} x {self.layers} layers x {len(self.targets)} targets needs "
                f"{least} bytes, more than the blob's {self.len}",
            )

    def meta(self) -> dict:
        """The dict `memorize.lora_from_blob` reads."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EscapeInfo(_Record):
    """Bytes the tokenizer cannot take: `runs` varint run lengths (`table` bytes), then the
    escaped bytes; `len` covers both."""

    _where: ClassVar[str] = "model.escape."
    runs: int = _f(2, MAX_INT)
    table: int = _f(2, MAX_INT)
    len: int = _f(3, MAX_INT)

    def _consistent(self):
        if not self.runs <= self.table <= 10 * self.runs or self.len <= self.table:
            _fail(self._where[:-1], f"is inconsistent ({self.runs} runs in {self.table} bytes)")


@dataclasses.dataclass(frozen=True)
class MatchInfo(_Record):
    """The match model of `ac-match` (`match.MatchConfig`, same fields and ranges)."""

    _where: ClassVar[str] = "model.match."
    scope: str = _f(choices=match.SCOPES)
    order: int = _f(1, 64)
    candidates: int = _f(1, 1024)
    max_len: int = _f(1, 1 << 20)
    buckets: int = _f(1, 4096)
    limit: int = _f(2, 1 << 20)

    def _consistent(self):
        if self.max_len < self.order:
            _fail(f"{self._where}max_len", f"{self.max_len} is below the order {self.order}")
        compare = self.candidates * self.max_len
        if compare > match.MAX_COMPARE:
            _fail(
                f"{self._where}candidates",
                f"{self.candidates} x max_len {self.max_len} = {compare} exceeds "
                f"{match.MAX_COMPARE} tokens compared per lookup",
            )

    @classmethod
    def of(cls, config: match.MatchConfig) -> MatchInfo:
        return cls(**dataclasses.asdict(config))

    def config(self) -> match.MatchConfig:
        return match.MatchConfig(**self.to_dict())


@dataclasses.dataclass(frozen=True)
class ModelInfo(_Record):
    """How the text was model-coded; the decompressor rebuilds the identical plan from it."""

    _where: ClassVar[str] = "model."
    _optional: ClassVar[tuple[str, ...]] = ("match", "spans", "sliding")
    coder: str = _f(choices=tuple(coders.CODERS))
    model: str = _f(pattern=r"[\x21-\x7e]{1,256}")  # the LoadedLM fingerprint
    tokenizer: str = _f(pattern=r"[\x21-\x7e]{1,256}")
    dtype: str = _f(choices=DTYPES)
    vocab_size: int = _f(2, 1 << 24)
    n_tokens: int = _f(1, MAX_INT)
    context: int = _f(1, 1 << 20)
    stride: int = _f(1, 1 << 20)
    batch_size: int = _f(1, 1 << 20)
    n_batches: int = _f(1, 1 << 10)
    pad: int = _f(0, MAX_INT)
    lora: LoraInfo | None = _f()
    escape: EscapeInfo | None = _f()
    environment: Environment = _f()
    match: MatchInfo | None = _f(default=None)
    # attention-length buckets of the decode steps (`engine.Plan.spans`); absent in archives
    # written before it was recorded, which used `engine.legacy_spans(context)`
    spans: int | None = _f(1, 4, default=None)
    # "ring" (`engine.Plan.sliding`); absent = prefill windows (every archive before rings)
    sliding: str | None = _f(choices=("ring",), default=None)

    def _consistent(self):
        if (self.match is not None) != coders.CODERS[self.coder].uses_match:
            _fail("model.match", f"must be present exactly with a match coder, not {self.coder!r}")
        # as `engine.make_plan` makes them: rows a multiple of the devices, no more segments
        # than tokens (up to that rounding), context within a segment, stride within the context
        devices, n_seg = self.environment.devices, self.batch_size * self.n_batches
        if self.batch_size % devices or n_seg > self.n_tokens + self.n_batches * (devices - 1):
            _fail(
                "model.batch_size",
                f"{self.batch_size} x {self.n_batches} segments do not fit {self.n_tokens} "
                f"tokens on {devices} devices",
            )
        if n_seg > MAX_ROWS:
            _fail(
                "model.batch_size",
                f"{self.batch_size} x {self.n_batches} batches = {n_seg} rows exceed {MAX_ROWS}",
            )
        if n_seg * self.vocab_size > MAX_TABLE:
            _fail(
                "model.vocab_size",
                f"{self.vocab_size} x {n_seg} rows = {n_seg * self.vocab_size} probabilities "
                f"per step exceed {MAX_TABLE}",
            )
        seg_len = -(-self.n_tokens // n_seg)
        if self.context > seg_len:
            _fail("model.context", f"{self.context} exceeds the segment length {seg_len}")
        if self.stride > self.context:
            _fail("model.stride", f"{self.stride} exceeds the context {self.context}")
        prefill = self.context - self.stride + 1
        if self.sliding != "ring" and prefill > PREFILL_RATIO * self.stride:
            _fail(
                "model.stride",
                f"{self.stride} pre-fills {prefill} tokens per window, more than "
                f"{PREFILL_RATIO} per coded token (context {self.context})",
            )
        if self.spans is not None and self.spans > self.context:
            _fail("model.spans", f"{self.spans} exceeds the context {self.context}")
        if self.sliding == "ring" and (self.stride != 1 or self.spans != 1):
            _fail(
                "model.sliding", f"ring needs stride 1 and spans 1, not {self.stride}, {self.spans}"
            )

    def sections(self, body_len: int) -> tuple[int, int, int]:
        """Byte lengths of (LoRA blob, escape section, payload) in a body of `body_len`."""
        blob = self.lora.len if self.lora else 0
        esc = self.escape.len if self.escape else 0
        return blob, esc, body_len - blob - esc - self.pad


@dataclasses.dataclass(frozen=True)
class Header(_Record):
    """The archive header. `to_bytes(body)` and `from_bytes(archive)` are the only (de)serialisers;
    `from_bytes` returns a header that is consistent with the body it returns."""

    size: int = _f(0, MAX_INT)
    sha256: str = _f(pattern=r"[0-9a-f]{64}")
    mode: str = _f(choices=MODES)
    body_len: int = _f(0, MAX_INT)
    body_crc32: int = _f(0, 2**32 - 1)
    model: ModelInfo | None = _f()

    def _consistent(self):
        if (self.mode == "model") != (self.model is not None):
            _fail("model", f"must be present exactly in mode 'model' (mode {self.mode!r})")
        if self.mode == "raw" and self.body_len != self.size:
            _fail("body_len", f"{self.body_len} differs from size {self.size} in mode 'raw'")
        if self.model is None:
            most = FALLBACK_EXPANSION[self.mode](self.body_len)
            if self.size > most:
                _fail(
                    "size",
                    f"{self.size} exceeds what {self.body_len} bytes of {self.mode} can decode "
                    f"to (at most {most})",
                )
            return
        m = self.model
        blob, esc, payload = m.sections(self.body_len)
        if payload < 0:
            _fail(
                "body_len", f"{self.body_len} is shorter than its sections ({blob}+{esc}+{m.pad})"
            )
        escaped = m.escape.len - m.escape.table if m.escape else 0
        if m.n_tokens + escaped > self.size:  # every token decodes to at least one byte
            _fail("model.n_tokens", f"{m.n_tokens} (+{escaped} escaped) exceed size {self.size}")
        if m.n_tokens > TOKENS_PER_BYTE * (payload + m.pad):
            _fail(
                "model.n_tokens",
                f"{m.n_tokens} exceeds {TOKENS_PER_BYTE} per payload byte "
                f"({payload + m.pad} bytes: {TOKENS_PER_BYTE * (payload + m.pad)})",
            )
        # the coder's own floor, on the payload alone (padding codes nothing): a range-coded
        # token costs at least `stream_floor_bits`, per stream (`coders.check_stream_tokens`)
        most = coders.CODERS[m.coder].max_tokens(payload, m.vocab_size)
        if m.n_tokens > most:
            _fail(
                "model.n_tokens",
                f"{m.n_tokens} exceeds what a {payload}-byte {m.coder} payload can code with "
                f"{m.vocab_size} symbols (at most {most})",
            )

    def to_bytes(self, body: bytes) -> bytes:
        """The archive: prefix, this header, its crc32, `body` (must match body_len/crc)."""
        if len(body) != self.body_len or zlib.crc32(body) != self.body_crc32:
            raise ArchiveError("archive writer: body does not match body_len/body_crc32")
        return frame(self.to_dict(), body)

    @classmethod
    def parse(cls, archive: bytes) -> tuple[Header, int]:
        """The header alone (body not checked) and the body's offset."""
        d, start = header_json(archive)
        return cls.from_dict(d), start

    @classmethod
    def from_bytes(cls, archive: bytes) -> tuple[Header, bytes]:
        """Header and verified body; ArchiveError if anything is malformed, inconsistent,
        truncated, extended or corrupted."""
        header, start = cls.parse(archive)
        body = bytes(archive[start:])
        if len(body) != header.body_len:
            what = "truncated" if len(body) < header.body_len else "trailing data in"
            raise ArchiveError(
                f"{what} archive: body has {len(body)} bytes, header says {header.body_len}"
            )
        if zlib.crc32(body) != header.body_crc32:
            raise ArchiveError("corrupted archive: body checksum mismatch")
        return header, body


def frame(header: dict, body: bytes, version: int = VERSION) -> bytes:
    """An archive of any JSON `header` (not validated) and `body`, in format `version` (3 or
    4): the writer behind `Header.to_bytes`, and what a forger can make."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if version == 4:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=HEADER_DICT)
        raw = deflate.compress(raw) + deflate.flush()
    crc = struct.pack("<I", zlib.crc32(raw))
    return _PREFIX.pack(MAGIC, version, len(raw)) + raw + crc + body


def header_json(archive: bytes) -> tuple[object, int]:
    """The header as parsed JSON, not validated (`Header.parse` does that), and the body's
    offset. ArchiveError for another format, a truncated or corrupted prefix, or a header
    that is not (deflated) JSON of at most `MAX_HEADER` bytes."""
    if len(archive) < _PREFIX.size:
        raise ArchiveError(f"not a FineZip archive: {len(archive)} bytes, too short")
    magic, version, n = _PREFIX.unpack_from(archive)
    if magic != MAGIC:
        raise ArchiveError(f"not a FineZip archive (magic {magic!r}, expected {MAGIC!r})")
    if version not in READABLE:
        reader = READERS.get(version, "no jaxsel release (unknown version)")
        raise ArchiveError(
            f"archive format version {version}; this jaxsel reads {READABLE} "
            f"(version {version} is read by {reader})"
        )
    if n > MAX_HEADER:
        raise ArchiveError(f"corrupted archive: header of {n} bytes (limit {MAX_HEADER})")
    end = _PREFIX.size + n
    if len(archive) < end + 4:
        raise ArchiveError(f"truncated archive: header needs {end + 4} bytes, got {len(archive)}")
    raw = bytes(archive[_PREFIX.size : end])
    (crc,) = struct.unpack_from("<I", archive, end)
    if zlib.crc32(raw) != crc:
        raise ArchiveError("corrupted archive: header checksum mismatch")
    try:  # crc passed: a writer bug or a forged file
        if version == 4:
            inflate = zlib.decompressobj(-15, zdict=HEADER_DICT)
            raw = inflate.decompress(raw, MAX_HEADER)
            if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
                raise ValueError(f"not one deflate stream of at most {MAX_HEADER} bytes")
        return json.loads(raw), end + 4
    except (ValueError, RecursionError, zlib.error) as e:
        raise ArchiveError(f"corrupted archive: unreadable header ({str(e)[:80]})") from None


def pack(size: int, digest: str, mode: str, body: bytes, model: ModelInfo | None = None) -> bytes:
    """An archive of `body` (body length and checksum filled in)."""
    header = Header(size, digest, mode, len(body), zlib.crc32(body), model)
    return header.to_bytes(body)


def read_header(archive: bytes) -> tuple[Header, int]:
    """The validated header and the offset of the body (the body is not read)."""
    return Header.parse(archive)


def unpack(archive: bytes) -> tuple[Header, bytes]:
    """The validated header and its verified body (`Header.from_bytes`)."""
    return Header.from_bytes(archive)


def check_restored(header: Header, data: bytes, hint: str = "") -> bytes:
    """Verifies restored bytes against the original's length and sha256 from the header."""
    if len(data) != header.size or sha256(data) != header.sha256:
        raise ArchiveError("decoded data fails the archive's checksum of the original" + hint)
    return data


# ------------------------------------------------------------------------------ fallback modes


def fallback_candidates(data: bytes) -> dict[str, bytes]:
    """Model-free encodings of `data` per fallback mode (inverted by `fallback_decode`)."""
    return {"raw": data, **{m: codecs.get(m, 9).compress(data) for m in ("bz2", "lzma")}}


def fallback_body(header: Header, body: bytes) -> bytes:
    """The original bytes of a fallback archive, decoded with the declared size as the output
    bound (`coders.bounded_decompress`): a bomb stops at size + 1 bytes."""
    if header.mode == "raw":
        return body
    return coders.bounded_decompress(header.mode, body, header.size)


def describe(header: Header, archive_len: int) -> str:
    """Human-readable header for `jaxsel compress --info`."""
    size = header.size
    lines = [
        f"FineZip archive: {archive_len} bytes for {size} original bytes"
        + (
            f" ({8 * archive_len / size:.3f} bits/byte, ratio {size / archive_len:.3f})"
            if size
            else ""
        )
    ]

    def walk(d: dict, indent: str):
        for k in sorted(d):
            if type(d[k]) is dict:
                lines.append(f"{indent}{k}:")
                walk(d[k], indent + "  ")
            else:
                lines.append(f"{indent}{k}: {json.dumps(d[k])}")

    walk(header.to_dict(), "  ")
    return "\n".join(lines)
