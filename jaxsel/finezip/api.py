"""`compress` / `decompress`: FineZip end to end (text -> tokens -> chunks -> coded payload ->
archive, and back).

Any bytes compress: text is model-coded, with the few bytes the tokenizer cannot take (invalid
UTF-8, characters without a token) stored verbatim beside it (`split_text`); everything else
(binary, more than `MAX_ESCAPED` of such bytes, empty input) and anything a model-free coder
does smaller goes into a fallback mode ("raw", "bz2", "lzma"), chosen automatically and never
altering the data. The archive records the sha256 of the original and decompression verifies
it. See `engine` for how compression and decompression are kept bit-identical and what breaks
that.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import platform
import re
import time
import warnings
from typing import NamedTuple

import jax
import numpy as np

from jaxsel import parallel
from jaxsel.errors import ArchiveError, InputError
from jaxsel.finezip import archive as arc
from jaxsel.finezip import coders, engine
from jaxsel.finezip.match import MatchConfig
from jaxsel.finezip.memorize import MemorizeConfig, lora_from_blob, to_blob, train
from jaxsel.flags import option
from jaxsel.host import cpu_signature

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FineZipConfig:
    """How to compress (decompression reads everything it needs from the archive header)."""

    # 64 KB, C=512: -20% bits/byte on licences, -2.5% on code vs "ac"
    coder: str = option(
        "ac-match",
        "ac: range coding under the full distribution; ac-match: ac mixed with a match model of "
        "the text already coded (long repeats cost ~nothing); rank: ranks + bzip2 (the paper)",
        choices=tuple(coders.CODERS),
    )
    context: int = option(
        2048, "C, the most previous tokens a prediction sees (KV-cache length, tokens)"
    )
    stride: int | None = option(
        None,
        "S, tokens per prefill window after a segment's first C, each pre-filling the C - S + 1 "
        "tokens before it; None: C // 2 for prefill windows (a ring: 1); a stride selects "
        "prefill windows",
    )
    sliding: str | None = option(
        None,
        "how the context moves past a segment's first C tokens: ring (a sliding KV cache, every "
        "token sees the C - 1 before it, no prefills) or prefill (windows of --stride); None: "
        "ring, or prefill when a stride is given",
        choices=engine.SLIDINGS,
    )
    batch_size: int = option(
        16, "segments coded side by side per device batch (rounded to the data axis)"
    )
    lanes: int = option(2, "batches in flight at once (overlaps host coding with device steps)")
    fallback: bool = option(True, "also try raw/bz2/lzma and keep whichever archive is smallest")
    lora: MemorizeConfig = option(
        MemorizeConfig(), "online memorisation: LoRA trained on the input, stored in the archive"
    )
    match: MatchConfig = option(
        MatchConfig(), "the ac-match coder's match model (recorded in the header)"
    )

    def __post_init__(self):
        if self.coder not in coders.CODERS:
            raise InputError(f"coder must be one of {tuple(coders.CODERS)}, got {self.coder!r}")
        if self.sliding is None:
            object.__setattr__(self, "sliding", "ring" if self.stride is None else "prefill")
        if self.sliding not in engine.SLIDINGS:
            raise InputError(f"sliding must be one of {engine.SLIDINGS}, got {self.sliding!r}")
        if self.sliding == "ring" and self.stride not in (None, 1):
            raise InputError(f"stride {self.stride} with a ring: it moves one token per step")
        if self.stride is None:
            stride = 1 if self.sliding == "ring" else max(1, self.context // 2)
            object.__setattr__(self, "stride", stride)
        if min(self.context, self.stride, self.batch_size, self.lanes) < 1:
            raise InputError("context, stride, batch_size and lanes must be >= 1")
        if self.stride > self.context:
            raise InputError(f"stride {self.stride} exceeds context {self.context}")
        prefill = self.context - self.stride + 1
        if self.sliding == "prefill" and prefill > arc.PREFILL_RATIO * self.stride:
            raise InputError(
                f"stride {self.stride} pre-fills {prefill} tokens per window, more than "
                f"{arc.PREFILL_RATIO} per coded token (the archive's bound): use a larger "
                "stride or the ring"
            )


class Compressed(NamedTuple):
    """An archive and what went into it (for reports and benchmarks)."""

    archive: bytes
    mode: str  # the chosen mode
    sizes: dict  # mode -> archive size of each candidate (model: with LoRA blob and header)
    lora_bytes: int  # size of the stored adapters (0 without LoRA)
    n_tokens: int  # 0 when the input was not model-codable
    seconds: dict  # wall time per phase: tokenize, lora, code, fallback
    lora_losses: list  # training loss per LoRA step
    reason: str  # why the model mode was unavailable ("" if it was)


# A ring's RoPE positions grow with its segment; float32 holds integers exactly up to 2**24.
# Measured (experiments/rope_positions.py): positions shifted by up to 2**22 change SmolLM2's
# bits/token by <= 0.011%, by 2**24 +26%.
RING_EXACT_POSITIONS = 1 << 24


# GPU kernels chosen by timing (autotuning) may differ between the compressing and the
# decompressing process, and with them the float results: pin the choice. No effect on CPU.
DETERMINISTIC_XLA_FLAGS = ("--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0")


def request_deterministic_xla() -> None:
    """Adds `DETERMINISTIC_XLA_FLAGS` to $XLA_FLAGS (those not set already). Effective only
    before JAX initialises its backends: the CLI calls it first; library users set the flags
    themselves, on both sides (the header records $XLA_FLAGS and decompression warns when it
    differs)."""
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in DETERMINISTIC_XLA_FLAGS if f.split("=")[0] not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def environment() -> arc.Environment:
    """What a bit-exact replay depends on beyond the model (see `engine`), as recorded in the
    header."""
    from importlib.metadata import version

    dev = jax.devices()[0]
    return arc.Environment(
        platform=dev.platform,
        device_kind=dev.device_kind,
        devices=parallel.data_size(),
        machine=platform.machine(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        **{k: version(k) for k in ("jax", "jaxlib", "constriction")},
        cpu=cpu_signature()[: arc.MAX_STR],
    )


def _load(model):
    """A LoadedLM from `model`: itself, a zero-argument loader, or None (SmolLM2)."""
    if model is None:
        from jaxsel.models.loaders import load_smollm2

        return load_smollm2()
    return model() if callable(model) else model


# Model mode only while at most this share of the input is escaped (see `split_text`); beyond
# it the input is binary more than text and the model-free modes are the right tools.
MAX_ESCAPED = 0.05
_INVALID = re.compile("[\udc80-\udcff]")  # surrogateescape's stand-ins for invalid UTF-8 bytes


class Split(NamedTuple):
    """`data` as what the model codes and what it cannot (see `split_text`)."""

    text: str  # the model-coded characters, in order
    runs: list  # byte lengths, alternating text, escaped, text, ... (starting with text)
    escaped: bytes  # the other bytes, in order


def split_text(data: bytes, tokenizer) -> Split:
    """Separates the characters the tokenizer round-trips from the bytes it cannot: invalid
    UTF-8 and characters without a token (SmolLM2 has no token for six control bytes). The
    escaped bytes travel verbatim beside the coded text, so a stray Latin-1 byte or control
    byte in a text no longer sends the whole input to a model-free mode."""
    s = data.decode("utf-8", errors="surrogateescape")
    distinct = set(s)
    chars = sorted(c for c in distinct if not _INVALID.match(c))
    ok = {
        c
        for c, ids in zip(chars, tokenizer.encode_batch(chars), strict=True)
        if tokenizer.decode(ids) == c
    }
    if len(ok) == len(distinct):
        return Split(s, [len(data)], b"")
    text, runs, escaped = [], [], []
    for good, group in itertools.groupby(s, key=ok.__contains__):
        piece = "".join(group)
        if not runs and not good:
            runs.append(0)  # runs start with a (here empty) text run
        runs.append(len(piece.encode("utf-8", errors="surrogateescape")))
        (text if good else escaped).append(piece)
    raw = "".join(escaped).encode("utf-8", errors="surrogateescape")
    return Split("".join(text), runs, raw)


def join_text(text: bytes, runs, escaped: bytes) -> bytes:
    """Inverse of `split_text`: interleaves the text's and the escaped bytes by `runs`."""
    parts, pos = [], [0, 0]
    for i, n in enumerate(runs):
        src, j = (text, 0) if i % 2 == 0 else (escaped, 1)
        parts.append(src[pos[j] : pos[j] + n])
        pos[j] += n
    if pos != [len(text), len(escaped)]:
        raise ArchiveError("corrupted archive: escape table does not match the decoded text")
    return b"".join(parts)


def _tokenize(text: str, tokenizer) -> tuple[np.ndarray | None, str]:
    ids = tokenizer.encode(text)
    if tokenizer.decode(ids) != text:
        return None, "the tokenizer does not round-trip this text"
    if tokenizer.bos_id is None:
        return None, "the tokenizer has no bos/separator token to start chunks with"
    return np.asarray(ids, np.int32), ""


class _Skip(NamedTuple):
    """Why the model mode cannot beat the best fallback (`_model_cannot_win`), or None."""

    reason: str


def _min_model_archive(n_tokens: int, extra: int) -> int:
    """A lower bound on any model archive of `n_tokens` tokens: `arc.MIN_OVERHEAD`, `extra`
    body bytes (adapters, escapes) and the payload floor of `arc.TOKENS_PER_BYTE` tokens per
    byte, so skipping on it never costs ratio. (No bound on the deflated header is usable
    before the model is known: with the prefix, a model header costs ~130 bytes and a fallback
    one ~90, so even tiny texts may be smaller model-coded and the model is loaded for every
    text.)"""
    return arc.MIN_OVERHEAD + extra + -(-n_tokens // arc.TOKENS_PER_BYTE)


def compress_detailed(
    data: bytes, model=None, config: FineZipConfig = FineZipConfig(), *, progress: bool = False
) -> Compressed:
    """`compress`, returning the archive together with per-mode sizes and timings.

    The model-free candidates are made first (seconds); with `config.fallback` the model does
    not code the text when its tokens alone need a larger archive than the best of them (the
    payload floor of `arc.TOKENS_PER_BYTE`), nor when coding a sample (the first chunk,
    teacher-forced) predicts that the model archive would be more than `FAR` times the best of
    them (e.g. one repeated character)."""
    data = bytes(data)
    seconds, archives = {}, {}
    digest = arc.sha256(data)
    t0 = time.perf_counter()
    for mode, body in arc.fallback_candidates(data).items():
        archives[mode] = arc.pack(len(data), digest, mode, body)
    seconds["fallback"] = time.perf_counter() - t0
    best = min(len(a) for a in archives.values())
    ids, reason, lora_bytes, losses, split = None, "empty input", 0, [], None
    invalid = len(_INVALID.findall(data.decode("utf-8", errors="surrogateescape")))
    if data and invalid > MAX_ESCAPED * len(data):
        reason = f"not text: {invalid} of {len(data)} bytes are not valid UTF-8"
    elif data:
        model = _load(model)
        t0 = time.perf_counter()
        split = split_text(data, model.tokenizer)
        if len(split.escaped) > MAX_ESCAPED * len(data):
            reason = f"not text: {len(split.escaped)} of {len(data)} bytes cannot be tokenised"
        elif split.text:
            ids, reason = _tokenize(split.text, model.tokenizer)
        else:
            reason = "no text to code"
        seconds["tokenize"] = time.perf_counter() - t0
        if ids is not None and config.fallback:
            skip = _model_cannot_win(ids, split, model, config, best)
            seconds["estimate"] = time.perf_counter() - t0 - seconds["tokenize"]
            if skip is not None:
                ids, reason = None, skip.reason
    if ids is not None:
        archives["model"], lora_bytes, losses = _model_archive(
            ids, split, model, config, len(data), digest, seconds, progress
        )
    sizes = {m: len(a) for m, a in archives.items()}
    candidates = sizes if config.fallback or "model" not in sizes else {"model": sizes["model"]}
    mode = min(candidates, key=lambda m: (candidates[m], m != "model"))
    return Compressed(
        archives[mode],
        mode,
        sizes,
        lora_bytes,
        0 if ids is None else len(ids),
        seconds,
        losses,
        reason,
    )


# The model runs only when a sample predicts its archive within this factor of the best fallback.
FAR = 2.0


def _model_cannot_win(ids, split: Split, model, config, best: int):
    """`_Skip` when the model archive cannot (exact bound) or will not by far (a sample of the
    first chunk, teacher-forced, extrapolated to all tokens) beat `best` bytes; else None."""
    extra = len(coders.varint_encode(split.runs)) + len(split.escaped) if split.escaped else 0
    floor = _min_model_archive(len(ids), extra)
    if floor >= best:
        return _Skip(f"a model archive needs at least {floor} bytes, model-free {best}")
    n = min(len(ids), config.context, 512)
    if len(ids) < 4 * n:  # coding the sample would cost a large share of coding everything
        return None
    bits = engine.sample_bits(model.params, model.cfg, ids[:n], model.tokenizer.bos_id)
    estimate = floor + bits * len(ids) / n / 8
    if estimate > FAR * best:
        return _Skip(
            f"a {n}-token sample predicts a model archive of ~{estimate:.0f} bytes, "
            f"model-free {best}"
        )
    return None


def _model_archive(
    ids, split: Split, model, config: FineZipConfig, size: int, digest: str, seconds, progress
):
    cfg, params, tok = model.cfg, model.params, model.tokenizer
    if config.context > cfg.max_position:
        raise InputError(f"context {config.context} exceeds the model's {cfg.max_position}")
    plan = engine.make_plan(
        len(ids),
        config.context,
        config.stride,
        config.batch_size,
        config.lanes,
        parallel.data_size(),
        config.sliding,
    )
    rows = plan.batch_size * plan.n_batches
    if rows > arc.MAX_ROWS or rows * cfg.vocab_size > arc.MAX_TABLE:
        raise InputError(
            f"{rows} rows of {cfg.vocab_size} probabilities per step: the archive allows "
            f"{arc.MAX_ROWS} rows and {arc.MAX_TABLE} probabilities (lower batch_size or lanes)"
        )
    if plan.ring and plan.seg_len > RING_EXACT_POSITIONS:
        warnings.warn(
            f"ring segments of {plan.seg_len} tokens: RoPE positions past 2**24 are not exact in "
            "float32 and cost ~26% bits (still lossless); use prefill windows or more rows",
            RuntimeWarning,
            stacklevel=3,
        )
    lora, blob, losses, lora_info = None, b"", [], None
    if config.lora.steps > 0:
        t0 = time.perf_counter()
        chunks, lengths = engine.training_chunks(ids, min(512, plan.context), tok.bos_id)
        b, losses = train(params, cfg, chunks, lengths, tok.bos_id, config.lora)
        blob = to_blob(b)
        meta = config.lora.meta(cfg.num_layers)
        lora_info = arc.LoraInfo(
            **{**meta, "targets": tuple(meta["targets"])}, steps=config.lora.steps, len=len(blob)
        )
        lora = lora_from_blob(blob, lora_info.meta(), params)  # code with what is stored
        seconds["lora"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coder = coders.CODERS[config.coder]
    match = config.match if coder.uses_match else None
    parts = coder.encoders(plan.to_batches(ids, tok.bos_id), plan.lengths(), match)
    engine.run(params, lora, cfg, coder, plan, tok.bos_id, parts, progress=progress)
    payload = coder.pack(parts, plan)
    seconds["code"] = time.perf_counter() - t0
    escape, escape_info = b"", None
    if split.escaped:
        table = coders.varint_encode(split.runs)
        escape = table + split.escaped
        escape_info = arc.EscapeInfo(len(split.runs), len(table), len(escape))
    archive = pack_model_archive(
        size,
        digest,
        model,
        plan,
        config.coder,
        payload,
        match,
        lora_info=lora_info,
        blob=blob,
        escape=escape,
        escape_info=escape_info,
    )
    return archive, len(blob), losses


def pack_model_archive(
    size: int,
    digest: str,
    model,
    plan: engine.Plan,
    coder: str,
    payload: bytes,
    match: MatchConfig | None = None,
    lora_info: arc.LoraInfo | None = None,
    blob: bytes = b"",
    escape: bytes = b"",
    escape_info: arc.EscapeInfo | None = None,
) -> bytes:
    """The archive of a model-coded text: the header (`arc.ModelInfo`) built from the model, the
    plan and what the body holds, then the body (LoRA blob, escape table and bytes, the coder's
    payload, zero padding up to the header's token bound)."""
    cfg = model.cfg
    pad = max(0, -(-plan.n_tokens // arc.TOKENS_PER_BYTE) - len(payload))
    info = arc.ModelInfo(
        coder=coder,
        model=model.fingerprint,
        tokenizer=model.tokenizer.id,
        dtype=cfg.dtype,
        vocab_size=cfg.vocab_size,
        n_tokens=plan.n_tokens,
        context=plan.context,
        stride=plan.stride,
        batch_size=plan.batch_size,
        n_batches=plan.n_batches,
        pad=pad,
        lora=lora_info,
        escape=escape_info,
        environment=environment(),
        match=None if match is None else arc.MatchInfo.of(match),
        spans=plan.spans,
        sliding=None if plan.sliding == "prefill" else plan.sliding,
    )
    body = blob + escape + payload + bytes(pad)
    return arc.pack(size, digest, "model", body, info)


def compress(
    data: bytes, model=None, config: FineZipConfig = FineZipConfig(), *, progress: bool = False
) -> bytes:
    """Losslessly compresses any bytes.

    Args:
      data: the bytes (text is model-coded, anything else falls back to raw/bz2/lzma).
      model: a `jaxsel.models.loaders.LoadedLM`, or a zero-argument function returning one
        (called only when the data is text), default the embedded SmolLM2-135M.
      config: coder, chunk/batch shapes, LoRA memorisation.
    Returns the archive; `decompress(archive, model)` gives `data` back byte for byte.
    """
    return compress_detailed(data, model, config, progress=progress).archive


class Parsed(NamedTuple):
    """A model archive taken apart and checked as far as possible without the model."""

    header: arc.Header
    blob: bytes  # LoRA factors (float16), b"" without LoRA
    runs: list  # escape run lengths (`split_text`), [] without escapes
    escaped: bytes
    payload: object  # the original bytes (fallback modes), or `Coder.parse` of the payload


def parse(archive: bytes) -> Parsed:
    """Validates everything an archive holds that can be checked without the model: the header
    (`arc.Header.from_bytes`: schema, consistency, body length and crc32), the body's sections,
    the escape table, and the coded payload's structure. ArchiveError otherwise. `decompress`
    calls it before it loads or calls the model."""
    header, body = arc.unpack(bytes(archive))
    if header.model is None:
        return Parsed(header, b"", [], b"", arc.fallback_body(header, body))
    m = header.model
    n_blob, n_esc, n_payload = m.sections(len(body))
    blob, esc = body[:n_blob], body[n_blob : n_blob + n_esc]
    payload = body[n_blob + n_esc : n_blob + n_esc + n_payload]
    if any(body[len(body) - m.pad :]):
        raise ArchiveError("corrupted archive: padding is not zero")
    runs, escaped = [], b""
    if m.escape:
        runs = coders.varint_decode(esc[: m.escape.table], m.escape.runs).tolist()
        escaped = esc[m.escape.table :]
        if (
            sum(runs[1::2]) != len(escaped)
            or sum(runs) != header.size
            or sum(runs[::2]) < m.n_tokens
        ):
            raise ArchiveError("corrupted archive: escape table does not match its bytes")
    parsed = coders.CODERS[m.coder].parse(payload, _plan(m), m.vocab_size)
    return Parsed(header, blob, runs, escaped, parsed)


def _plan(m: arc.ModelInfo) -> engine.Plan:
    spans = engine.legacy_spans(m.context) if m.spans is None else m.spans
    sliding = m.sliding or "prefill"
    return engine.Plan(m.n_tokens, m.context, m.stride, m.batch_size, m.n_batches, spans, sliding)


class Limits(NamedTuple):
    """What a caller allows one archive to cost (None: what the format allows). For archives
    from untrusted sources: the format bounds work and memory by the body's length, but a true
    1 KB archive of very predictable text may still code 64k tokens in 16 rows of 2,048 KV
    positions (1.5 GB for SmolLM2 in float32), and nothing but decoding tells it from a forgery.

    max_memory: bytes of decoder state beyond the model (`engine.decoder_bytes`: KV caches,
      probability tables), checked once the model is loaded, before anything is decoded;
    max_tokens: model-coded tokens (decoding time grows with them), checked before the model
      loads."""

    max_memory: int | None = None
    max_tokens: int | None = None


NO_LIMITS = Limits()


def decompress(
    archive: bytes, model=None, *, progress: bool = False, limits: Limits = NO_LIMITS
) -> bytes:
    """Restores the original bytes; raises ArchiveError on a corrupted/truncated archive, a
    different model, output that fails the original's checksum, or an archive beyond `limits`.

    model: a LoadedLM, a function dtype -> LoadedLM (called only for a model archive, after
    `parse` has validated everything that can be checked without it), or None (SmolLM2)."""
    parsed = parse(archive)
    if parsed.header.model is None:
        return arc.check_restored(parsed.header, parsed.payload)
    return _decode_model(parsed, model, False, progress, limits).data


class Decoded(NamedTuple):
    """A model archive decoded with what every token cost (`decode_costs`)."""

    data: bytes  # the original, checksum verified
    ids: np.ndarray  # int32 [n]: the model-coded tokens
    bits: np.ndarray  # float64 [n]: what each cost in the payload (`coders.symbol_bits`)
    plan: engine.Plan


def decode_costs(archive: bytes, model=None, *, progress: bool = False) -> Decoded:
    """`decompress` of a model archive that also records, per token, -log2 of the probability
    the table it was decoded with gave it (the table the compressor coded it with: the same
    programs on the same inputs, see `engine`). InputError for a fallback archive or a coder
    without per-token probabilities (`rank`)."""
    parsed = parse(archive)
    if parsed.header.model is None:
        raise InputError(f"archive mode is {parsed.header.mode!r}: no model-coded text")
    return _decode_model(parsed, model, True, progress)


def _decode_model(
    parsed: Parsed, model, record: bool, progress: bool, limits: Limits = NO_LIMITS
) -> Decoded:
    header = parsed.header
    m = header.model
    if limits.max_tokens is not None and m.n_tokens > limits.max_tokens:
        raise ArchiveError(
            f"archive codes {m.n_tokens} tokens, more than the limit of {limits.max_tokens}"
        )
    if m.batch_size % parallel.data_size():  # before the model loads
        raise ArchiveError(
            f"archive batch of {m.batch_size} rows cannot be split over "
            f"{parallel.data_size()} devices (made on {m.environment.devices})"
        )
    if model is None:
        from jaxsel.models.loaders import load_smollm2

        model = load_smollm2
    if callable(model):
        model = model(m.dtype)
    _check_model(m, model)
    hint = _check_environment(m)
    cfg, params, tok = model.cfg, model.params, model.tokenizer
    plan, coder = _plan(m), coders.CODERS[m.coder]
    need = None if limits.max_memory is None else engine.decoder_bytes(cfg, plan)
    if need is not None and need > limits.max_memory:
        raise ArchiveError(
            f"archive needs {need / 2**20:.1f} MiB to decode beyond the model "
            f"({plan.n_batches} x {plan.batch_size} rows x {plan.context} KV positions), more "
            f"than the limit of {limits.max_memory / 2**20:.1f} MiB"
        )
    lora = lora_from_blob(parsed.blob, m.lora.meta(), params) if m.lora else None
    out = np.full((plan.n_batches, plan.batch_size, plan.seg_len), tok.bos_id, np.int32)
    match = m.match.config() if m.match else None
    parts = coder.decoders(parsed.payload, out, plan.lengths(), match, record)
    engine.run(params, lora, cfg, coder, plan, tok.bos_id, parts, progress=progress)
    ids = plan.from_batches(out)
    out = tok.decode(ids.tolist()).encode("utf-8")
    if m.escape:
        out = join_text(out, parsed.runs, parsed.escaped)
    bits = plan.from_batches(np.stack([p.bits for p in parts])) if record else np.zeros(0)
    return Decoded(arc.check_restored(header, out, hint), ids, bits, plan)


def _check_model(m: arc.ModelInfo, model) -> None:
    if model.fingerprint != m.model:
        raise ArchiveError(
            f"archive was made with model {m.model[:16]}..., not the "
            f"loaded {model.fingerprint[:16]}... (load the same weights)"
        )
    if model.tokenizer.id != m.tokenizer or model.cfg.vocab_size != m.vocab_size:
        raise ArchiveError("archive was made with another tokenizer")
    if m.context > model.cfg.max_position:
        raise ArchiveError(
            f"archive context {m.context} exceeds the model's {model.cfg.max_position}"
        )
    if model.cfg.dtype != m.dtype:
        raise ArchiveError(
            f"archive was coded in {m.dtype}; load the model with "
            f"dtype={m.dtype!r}, not {model.cfg.dtype!r}"
        )


def _check_environment(m: arc.ModelInfo) -> str:
    """Warns about every recorded fact that differs here (an older archive may lack some);
    returns a hint for the checksum error."""
    here, there = environment().to_dict(), m.environment.to_dict()
    diff = {k: (there[k], v) for k, v in here.items() if k in there and there[k] != v}
    if not diff:
        return ""
    what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
    warnings.warn(
        f"FineZip archive made in another environment ({what}): decoding is only "
        "bit-exact in the same one; the checksum will tell",
        RuntimeWarning,
        stacklevel=3,
    )
    return f" (archive made in another environment: {what})"
