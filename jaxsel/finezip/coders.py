"""FineZip's coders, as registered types: what each one computes on device from the logits and
how it turns those outputs into a payload and back on the host.

* `rank` (`RankCoder`): the paper's payload. The rank of each true token (computed on device),
  in text order, LEB128 varints, then bzip2.
* `ac` (`AcCoder`): range coding of each true token under the model's full next-token
  distribution with `constriction` (a queue coder, so symbols decode in the order they were
  encoded, which is the order the autoregressive decoder produces distributions in). One
  `RangeEncoder` per device batch; each step encodes that batch's symbols with one [B, V]
  probability array (`Categorical(perfect=False)` model family). constriction turns each float
  row into integer frequencies (24-bit precision, every symbol at least the smallest nonzero
  frequency) deterministically, so an identical float array on both sides gives identical models.

A coder is one `Coder` subclass registered with `@register`: `outputs` (inside the jitted step),
`encoders` / `decoders` (one host `BatchCoder` per device batch), `pack` and `parse` (the payload).
`CODERS` maps names to instances; nothing else in FineZip branches on a coder's name.
"""

from __future__ import annotations

import bz2
import lzma
import math
from typing import ClassVar

import constriction
import jax
import jax.numpy as jnp
import numpy as np

from jaxsel import parallel
from jaxsel.errors import ArchiveError, InputError
from jaxsel.finezip.match import MatchConfig, MatchModel
from jaxsel.models.logprobs import token_logprobs_and_ranks

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

# The range coder's words (constriction's default queue coder: Word = u32, State = u64) and its
# `Categorical` precision (every row becomes integer frequencies summing to 2**PRECISION).
#
# How far a true stream is read. Encoder and decoder narrow the same 64-bit range r by the same
# factors; whenever r falls below 2**32 both shift it by a word: the encoder emits (or holds
# back) one word, the decoder reads one. The encoder's seal adds at least one word, so a stream
# of W words was written with at most W - 1 shifts, and the decoder, which reads 2 words to
# start, never reads more than W + 1 of them. Since r < 2**64 at the start and r >= 2**32 after
# every symbol, symbols that narrow it by N bits in all need more than (N - 32) / 32 shifts:
# N < 32 W for every true stream. Decoding symbols that narrow it by N >= 32 W bits has read
# past the end: the stream is truncated or forged. constriction does not report its reads (it
# pads with zero words), so `RangeDecoder` sums `symbol_bits_floor` and compares.
WORD_BITS = 32
PRECISION = 24


class RangeEncoder:
    """Range coder of one device batch: `step(symbols [n], probs [n, V])` per decoding step."""

    def __init__(self):
        self._enc = constriction.stream.queue.RangeEncoder()

    def step(self, symbols: np.ndarray, probs: np.ndarray) -> None:
        if len(symbols):
            self._enc.encode(np.asarray(symbols, np.int32), _FAMILY, probs)

    def words(self) -> np.ndarray:
        return self._enc.get_compressed()


def symbol_bits(table: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """What coding each row's symbol costs, float64 [n]: -log2 (table[r, s] / sum of row r) for
    tables [n, V] (probabilities or frequencies) and symbols [n]. The cost under the table the
    coder was given, before constriction quantises it to 24-bit frequencies: that is what the
    model (and match model) predicted, and constriction does not expose its quantised rows. The
    rounding and the coder's final words are the few bytes by which a payload differs from the
    sum (tests/finezip/test_finezip_match.py)."""
    t = np.asarray(table, np.float64)
    rows = np.arange(t.shape[0])
    return np.log2(t.sum(axis=1)) - np.log2(t[rows, np.asarray(symbols, np.int64)])


class RangeDecoder:
    """Mirror of `RangeEncoder`: `step(probs [n, V]) -> symbols [n]` with the same arrays.

    constriction reads zero words past the end of its data instead of failing, so a forged or
    truncated stream would decode garbage for as long as the header asks. A stream of W words
    that a `RangeEncoder` wrote is decoded by narrowing the interval by fewer than 32 W bits in
    all (see `WORD_BITS`), and `symbol_bits_floor` bounds every symbol's narrowing from below:
    `step` raises ArchiveError in the step where the decoded symbols have provably read past
    the stream. `tokens` (the stream's symbols) and `where` only word the error."""

    def __init__(self, words: np.ndarray, tokens: int = 0, where: str = "the coded payload"):
        self._dec = constriction.stream.queue.RangeDecoder(np.asarray(words, np.uint32))
        self._budget = WORD_BITS * len(words)
        self._spent, self._done = 0.0, 0
        self._tokens, self._where = tokens, where

    def step(self, probs: np.ndarray) -> np.ndarray:
        if not len(probs):
            return np.zeros(0, np.int32)
        try:
            symbols = self._dec.decode(_FAMILY, probs)
        except Exception as e:  # constriction raises plain errors on exhausted/invalid data
            raise ArchiveError(
                f"range decoder failed ({e}); the payload is corrupted or "
                "the model computed different probabilities"
            ) from None
        self._spent += float(symbol_bits_floor(probs, symbols).sum())
        self._done += len(symbols)
        if self._spent > self._budget + 1:  # 1 bit: float64 rounding of the sum, never reached
            raise ArchiveError(
                f"damaged or forged archive: {self._where} ended at token {self._done} of "
                f"{self._tokens} (its {self._budget} bits are spent: the tokens decoded so far "
                f"need {self._spent:.0f}; a true stream is never read past its end)"
            )
        return symbols


def symbol_bits_floor(table: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """A lower bound (float64 [n]) on the bits by which coding each row's symbol narrows the
    range coder's interval, for the tables [n, V] (float32 or float64, what constriction was
    given) and symbols [n].

    constriction (`Categorical(perfect=False)`, "fast" quantisation) gives symbol i < V - 1
    the frequency q_i = trunc(R_i s) - trunc(L_i s) + 1, with L_i, R_i the running sums of the
    row before and after p_i in the row's own float type and s = (2**24 - V) / (sequential sum
    of the row); the last symbol takes what is left. The products' rounding (< 1 each, the
    values are below 2**24) and R_i - L_i - p_i (half an ulp of R_i, < 1 after scaling) keep
    q_i < p_i s + 4, and every other symbol's frequency of at least 1 keeps q_i <= 2**24 - V + 1;
    `+ 8` is a margin on top. The coder then narrows its range from r to
    floor(r / 2**24) q_i <= r q_i / 2**24. The running sum here is the same sequential one
    (`np.cumsum`), so s is constriction's up to one rounding."""
    t = np.asarray(table)
    v = t.shape[1]
    norm = np.cumsum(t, axis=1)[:, -1].astype(np.float64)
    scale = (float(1 << PRECISION) - v) / norm
    p = t[np.arange(t.shape[0]), np.asarray(symbols, np.int64)].astype(np.float64)
    q = np.minimum(p * scale + 8, float((1 << PRECISION) - v + 1))
    return PRECISION - np.log2(q)


def stream_floor_bits(vocab: int) -> float:
    """The fewest bits any symbol of a `vocab`-symbol row costs the range coder:
    -log2(1 - (V - 1) / 2**24) (every other symbol keeps a frequency of at least 1); 0.0042
    bits for SmolLM2's 49,152 tokens."""
    return -math.log1p(-(vocab - 1) / (1 << PRECISION)) / math.log(2)


def max_stream_tokens(words: int, vocab: int) -> int:
    """The most symbols a true stream of `words` words can hold (see `WORD_BITS`): fewer than
    32 W / `stream_floor_bits(vocab)` (a relative 1e-9 more, for float rounding); none in an
    empty stream."""
    if words == 0:
        return 0
    return math.floor(WORD_BITS * words / stream_floor_bits(vocab) * (1 + 1e-9))


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


# ------------------------------------------------------------------------------ rank rule


def order_keys(logits: jax.Array) -> jax.Array:
    """uint32 keys whose ascending order is the logits' descending order.

    The float32 bits are mapped to an order-preserving unsigned integer (flip all bits of
    negatives, set the sign bit of non-negatives) after -0.0 -> +0.0, so equal floats get equal
    keys; then complemented for "descending". Logits are never NaN.
    """
    x = jnp.where(logits == 0, jnp.zeros_like(logits), logits)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    up = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))
    return ~up


def rank_of(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Rank of each target under its row's logits (FineZip's payload): the project's rank rule
    (`models.logprobs`), rank(t) = #{j : l_j > l_t} + #{j < t : l_j == l_t}, i.e. t's position
    when tokens are sorted by logit descending, ties by index. logits: [B, V] float32,
    targets: [B] int32 -> [B] int32."""
    ones = jnp.ones((logits.shape[0], 1), bool)
    _, ranks = token_logprobs_and_ranks(lambda x: x, logits[:, None], targets[:, None], ones)
    return ranks[:, 0]


def token_at_rank(logits: jax.Array, ranks: jax.Array) -> jax.Array:
    """Inverse of `rank_of` for each row: the token whose rank is `ranks`.

    logits: [B, V], ranks: [B] int32 in [0, V) -> [B] int32. `order_keys` orders tokens exactly
    as `rank_of`'s float comparisons do (-0.0 == +0.0, no NaNs). A radix select instead of a sort
    (a [B, V] sort costs ~25x a model step on XLA:CPU): 32 rounds, one per key bit from the top,
    each keeping the half of the candidates that holds the wanted rank (counting, exact integer
    logic); the survivors share one key and the tie goes to the (rank)-th lowest index.
    """
    keys = order_keys(logits)

    def round_(i, carry):
        cand, r = carry
        bit = ((keys >> (31 - i).astype(jnp.uint32)) & 1) == 1
        zeros = cand & ~bit
        n0 = jnp.sum(zeros, axis=1).astype(jnp.int32)
        low = r < n0
        return jnp.where(low[:, None], zeros, cand & bit), jnp.where(low, r, r - n0)

    cand = jnp.ones(keys.shape, bool)
    cand, r = jax.lax.fori_loop(0, 32, round_, (cand, ranks.astype(jnp.int32)))
    # the r-th (0-based) surviving index: the first position where the running count reaches r+1
    hit = jnp.cumsum(cand, axis=1, dtype=jnp.int32) == (r + 1)[:, None]
    return jnp.argmax(hit & cand, axis=1).astype(jnp.int32)


# --------------------------------------------------------------------------------- coders


class BatchCoder:
    """The host side of one device batch, for one direction.

    `tokens` [B, T] int32: the batch's segments, true tokens when compressing, filled in as they
    are decoded when decompressing (pad elsewhere; both sides hold the same values wherever the
    device reads them). `inputs(t)` gives the (targets, ranks) rows of step t; `feed(t, out)`
    consumes the step's host outputs (and, decoding, writes `tokens[:, t]`).
    """

    tokens: np.ndarray

    def inputs(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def feed(self, t: int, out) -> None:
        raise NotImplementedError


class Coder:
    """A registered coder (see the module docstring). Instances are hashable singletons, so a
    coder is a static argument of the jitted step."""

    name: ClassVar[str]
    uses_match: ClassVar[bool] = False  # whether the coder takes a `MatchConfig`

    def outputs(self, logits: jax.Array, targets: jax.Array, ranks: jax.Array):
        """Inside the jitted step: what leaves the device for logits [B, V] (float32)."""
        raise NotImplementedError

    def out_sharding(self, mesh=None):
        """The sharding of `outputs` on `mesh` (default `parallel.data_mesh()`)."""
        raise NotImplementedError

    def encoders(
        self, batches: np.ndarray, lengths: np.ndarray, match: MatchConfig | None
    ) -> list[BatchCoder]:
        """One encoder per batch: batches [n_batches, B, T], lengths [n_batches, B]; `match`
        the match model's parameters (coders with `uses_match`, else None)."""
        raise NotImplementedError

    def decoders(
        self,
        parts: list,
        batches: np.ndarray,
        lengths: np.ndarray,
        match: MatchConfig | None,
        record: bool = False,
    ) -> list[BatchCoder]:
        """As `encoders`; parts: `parse`'s result (one per batch); batches is filled in. With
        `record`, each decoder also fills `bits` [B, T] (float64) with what every decoded token
        cost (`symbol_bits` of the table it was decoded with); InputError for a coder whose
        payload has no per-token probabilities."""
        raise NotImplementedError

    def pack(self, encoders: list, plan) -> bytes:
        """The payload of the finished encoders (one per batch of `plan`, an `engine.Plan`)."""
        raise NotImplementedError

    def parse(self, payload: bytes, plan, vocab: int) -> list:
        """The payload's structure, checked without the model: one part per batch of `plan`."""
        raise NotImplementedError

    def max_tokens(self, payload_len: int, vocab: int) -> int:
        """The most tokens a payload of `payload_len` bytes can code under a `vocab`-symbol
        model, whatever the model predicts (header validation); unbounded by default."""
        return 2**63


CODERS: dict[str, Coder] = {}


def register(cls: type[Coder]) -> type[Coder]:
    CODERS[cls.name] = cls()
    return cls


def get(name: str) -> Coder:
    if name not in CODERS:
        raise ArchiveError(f"unknown coder {name!r}; this jaxsel has {tuple(CODERS)}")
    return CODERS[name]


class _AcEncode(BatchCoder):
    def __init__(self, tokens, lens):
        self.tokens, self.lens, self.coder = tokens, lens, RangeEncoder()
        self.zeros = np.zeros(len(lens), np.int32)

    def inputs(self, t):
        return self.zeros, self.zeros

    def feed(self, t, probs):
        valid = self.lens > t
        self.coder.step(self.tokens[valid, t], probs[valid])


def _stream_decoders(parts: list, lengths: np.ndarray) -> list[RangeDecoder]:
    """One `RangeDecoder` per batch's word stream, told its token count and name for errors."""
    n = len(parts)
    return [
        RangeDecoder(p, int(lens.sum()), "the coded payload" + (f" of batch {b}" if n > 1 else ""))
        for b, (p, lens) in enumerate(zip(parts, lengths, strict=True))
    ]


def check_stream_tokens(streams: list[np.ndarray], plan, vocab: int) -> None:
    """ArchiveError unless every batch's stream has the words its tokens need at the least
    (`max_stream_tokens`): checked on the payload, before any model is loaded."""
    for b, (words, lens) in enumerate(zip(streams, plan.lengths(), strict=True)):
        n, most = int(lens.sum()), max_stream_tokens(len(words), vocab)
        if n > most:
            raise ArchiveError(
                f"corrupted archive: header field model.n_tokens codes {n} tokens in batch {b}, "
                f"more than its {len(words)} words can hold (at most {most}: a range-coded "
                f"token costs at least {stream_floor_bits(vocab):.3g} bits with {vocab} symbols)"
            )


class _AcDecode(BatchCoder):
    def __init__(self, coder, tokens, lens, record):
        self.tokens, self.lens, self.coder = tokens, lens, coder
        self.zeros = np.zeros(len(lens), np.int32)
        self.bits = np.zeros(tokens.shape) if record else None

    def inputs(self, t):
        return self.zeros, self.zeros

    def feed(self, t, probs):
        valid = self.lens > t
        self.tokens[valid, t] = self.coder.step(probs[valid])
        if self.bits is not None:
            self.bits[valid, t] = symbol_bits(probs[valid], self.tokens[valid, t])


@register
class AcCoder(Coder):
    """Range coding under the full distribution (softmax on device: no host float math)."""

    name = "ac"

    def outputs(self, logits, targets, ranks):
        return jax.nn.softmax(logits, axis=-1)

    def out_sharding(self, mesh=None):
        return parallel.sharding("batch", "vocab", mesh=mesh)

    def encoders(self, batches, lengths, match):
        return [_AcEncode(t, n) for t, n in zip(batches, lengths, strict=True)]

    def decoders(self, parts, batches, lengths, match, record=False):
        coders_ = _stream_decoders(parts, lengths)
        return [
            _AcDecode(c, t, n, record) for c, t, n in zip(coders_, batches, lengths, strict=True)
        ]

    def pack(self, encoders, plan):
        return pack_streams([e.coder.words() for e in encoders])

    def parse(self, payload, plan, vocab):
        streams = unpack_streams(payload, plan.n_batches)
        check_stream_tokens(streams, plan, vocab)
        return streams

    def max_tokens(self, payload_len, vocab):
        return max_stream_tokens(payload_len // 4, vocab)  # at most len / 4 words in all


class _RankEncode(BatchCoder):
    def __init__(self, tokens, lens):
        self.tokens, self.lens = tokens, lens
        self.ranks = np.zeros_like(tokens)
        self.zeros = np.zeros(len(lens), np.int32)

    def inputs(self, t):
        return self.tokens[:, t], self.zeros

    def feed(self, t, out):
        self.ranks[:, t] = out[0]


class _RankDecode(BatchCoder):
    def __init__(self, ranks, tokens, lens):
        self.tokens, self.lens, self.ranks = tokens, lens, ranks
        self.zeros = np.zeros(len(lens), np.int32)

    def inputs(self, t):
        return self.zeros, self.ranks[:, t]

    def feed(self, t, out):
        valid = self.lens > t
        self.tokens[valid, t] = out[1][valid]


@register
class RankCoder(Coder):
    """The paper: rank of the true token and token at a rank, both from the same logits."""

    name = "rank"

    def outputs(self, logits, targets, ranks):
        return rank_of(logits, targets), token_at_rank(logits, ranks)

    def out_sharding(self, mesh=None):
        rows = parallel.sharding("batch", mesh=mesh)
        return (rows, rows)

    def encoders(self, batches, lengths, match):
        return [_RankEncode(t, n) for t, n in zip(batches, lengths, strict=True)]

    def decoders(self, parts, batches, lengths, match, record=False):
        if record:
            raise InputError(
                "per-token costs of a rank-coded archive are not computed: its payload is "
                "bzip2 of ranks, not a code under per-token probabilities"
            )
        return [_RankDecode(p, t, n) for p, t, n in zip(parts, batches, lengths, strict=True)]

    def pack(self, encoders, plan):
        return encode_ranks(plan.from_batches(np.stack([e.ranks for e in encoders])))

    def parse(self, payload, plan, vocab):
        return list(plan.to_batches(decode_ranks(payload, plan.n_tokens, vocab), 0))


class _MatchPart(BatchCoder):
    """One batch of `ac-match`, either direction: rows are segments first..first+B-1 of the
    shared `MatchModel`; `coder` a RangeEncoder or RangeDecoder; with `record`, `bits` holds
    each token's cost under its mixed table."""

    def __init__(self, model: MatchModel, first: int, tokens, lens, coder, record: bool):
        self.model, self.tokens, self.lens, self.coder = model, tokens, lens, coder
        self.segs = first + np.arange(len(lens))
        self.zeros = np.zeros(len(lens), np.int32)
        self.bits = np.zeros(tokens.shape) if record else None

    def inputs(self, t):
        return self.zeros, self.zeros

    def feed(self, t, probs):
        encoding = isinstance(self.coder, RangeEncoder)
        for r in np.flatnonzero(self.lens > t):  # one at a time: a row sees the rows before it
            seg = int(self.segs[r])
            table = self.model.table(seg, probs[r : r + 1])
            if encoding:
                self.coder.step(self.tokens[r : r + 1, t], table)
            else:
                self.tokens[r, t] = self.coder.step(table)[0]
            if self.bits is not None:
                self.bits[r, t] = symbol_bits(table, self.tokens[r : r + 1, t])[0]
            self.model.observe(seg, int(self.tokens[r, t]))


@register
class AcMatchCoder(AcCoder):
    """`ac` with the LM's distribution mixed with a match model (`match`): the device part is
    `ac`'s (softmax), the host mixes in integers. One `MatchModel` spans all batches."""

    name = "ac-match"
    uses_match = True

    def _parts(self, batches, lengths, match, coders_, record):
        model = MatchModel(match, lengths.size)
        rows = lengths.shape[1]
        return [
            _MatchPart(model, b * rows, t, n, c, record)
            for b, (t, n, c) in enumerate(zip(batches, lengths, coders_, strict=True))
        ]

    def encoders(self, batches, lengths, match):
        return self._parts(batches, lengths, match, [RangeEncoder() for _ in lengths], False)

    def decoders(self, parts, batches, lengths, match, record=False):
        return self._parts(batches, lengths, match, _stream_decoders(parts, lengths), record)
