"""FineZip archive hardening: bounded fallback decoding, the typed header validated in one
place, bounds on the work a header can ask for, and cheap decisions before any model is loaded
or run, and forged payloads stopped where they run out. No test here loads SmolLM2: a model that
must not be needed is a loader that fails the test if called; payloads are decoded with the tiny
random Llama."""

import bz2
import dataclasses
import json
import lzma
import re
import time
import tracemalloc
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsel import cli, finezip
from jaxsel.errors import ArchiveError
from jaxsel.finezip import archive as arc
from jaxsel.finezip import coders
from jaxsel.finezip.match import MatchConfig
from jaxsel.models.loaders import LoadedLM

DATA = Path(__file__).parent / "fixtures"
# bz2 -9 of 2 GiB of zero bytes (1,522 bytes), made once by:
#   c = bz2.BZ2Compressor(9); b"".join(c.compress(bytes(1 << 24)) for _ in range(128)) + c.flush()
BOMB = DATA / "zeros_2gib.bz2"


def no_model(*_):
    raise AssertionError("the model was loaded before the archive was fully validated")


def forge(header: dict, body: bytes, version: int = arc.VERSION) -> bytes:
    """An archive with any JSON header and a correct header checksum (what a forger can do)."""
    return arc.frame(header, body, version)


def env() -> arc.Environment:
    return arc.Environment("cpu", "cpu", 1, "x86_64", "", "0.10", "0.10", "0.5")


def model_archive(coder="ac", n_tokens=40, **kw) -> tuple[bytes, dict]:
    """A well-formed model archive of a 100-byte original (payload never decoded here)."""
    data = b"y" * 100
    if coder != "rank":
        payload = coders.pack_streams([np.arange(7, dtype=np.uint32)])
    else:
        payload = coders.encode_ranks(np.arange(n_tokens) % 50)
    fields = dict(
        coder=coder,
        model="f" * 64,
        tokenizer="tok",
        dtype="float32",
        vocab_size=49152,
        n_tokens=n_tokens,
        context=n_tokens,
        stride=n_tokens,
        batch_size=1,
        n_batches=1,
        pad=0,
        lora=None,
        escape=None,
        environment=env(),
        match=arc.MatchInfo.of(MatchConfig()) if coders.get(coder).uses_match else None,
    )
    info = arc.ModelInfo(**{**fields, **kw})
    a = arc.pack(len(data), arc.sha256(data), "model", payload, info)
    return a, arc.header_json(a)[0]


def refused(archive: bytes, match: str | None = None) -> str:
    """The one-line ArchiveError of `decompress`, reached without loading a model."""
    with pytest.raises(ArchiveError, match=match) as e:
        finezip.decompress(archive, no_model)
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------------- decompression bombs


def test_bz2_bomb_refused_without_allocating():
    """Header size 3, body = bz2 of 2 GiB of zeros: refused after 4 bytes of output; Python's
    allocations stay under 8 MiB (they were the whole 2 GiB before)."""
    bomb = BOMB.read_bytes()
    assert len(bomb) < 2000
    archive = arc.pack(3, arc.sha256(b"abc"), "bz2", bomb)
    tracemalloc.start()
    try:
        refused(archive, "more than the declared 3 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_xz_bomb_and_rank_bomb_refused():
    big = lzma.compress(bytes(64 << 20), preset=0)
    tracemalloc.start()
    try:
        refused(arc.pack(10, arc.sha256(bytes(10)), "lzma", big), "more than the declared 10")
        # the rank payload of a model archive is bounded by 5 bytes per declared token
        a, h = model_archive("rank", n_tokens=40)
        h["model"]["pad"] = 0
        body = BOMB.read_bytes()
        h["body_len"], h["body_crc32"] = len(body), zlib.crc32(body)
        refused(forge(h, body), "more bytes than its ranks can need|more than the declared 200")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("codec", ["bz2", "lzma"])
def test_fallback_streams_must_be_exact(codec):
    data = b"hello hello hello " * 50
    comp = bz2.compress(data, 9) if codec == "bz2" else lzma.compress(data)
    digest = arc.sha256(data)
    assert finezip.decompress(arc.pack(len(data), digest, codec, comp), no_model) == data
    refused(arc.pack(len(data), digest, codec, comp[:-5]), "truncated|corrupted")
    refused(arc.pack(len(data), digest, codec, comp + comp), "trailing bytes")
    refused(arc.pack(len(data) + 1, digest, codec, comp), f"{len(data)} bytes from")
    refused(arc.pack(len(data) - 1, digest, codec, comp), "more than the declared")


# ---------------------------------------------------------------------------- one header schema


def _mutations():
    """(name, function of the valid header dict): malformed and inconsistent headers."""

    def set_(path, value):
        def f(h):
            d = h
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = value
            return h

        return f

    def drop(path):
        def f(h):
            d = h
            for k in path[:-1]:
                d = d[k]
            del d[path[-1]]
            return h

        return f

    lora = {"targets": ["wq"], "rank": 4, "alpha": 8.0, "layers": 1, "seed": 0, "steps": 1}
    return {
        "list": lambda h: [h],
        "number": lambda h: 3,
        "string": lambda h: "model",
        "null": lambda h: None,
        "missing_mode": drop(["mode"]),
        "missing_size": drop(["size"]),
        "missing_dtype": drop(["model", "dtype"]),
        "unknown_field": set_(["extra"], 1),
        "string_body_len": set_(["body_len"], "12"),
        "bool_size": set_(["size"], True),
        "context_0": set_(["model", "context"], 0),
        "stride_0": set_(["model", "stride"], 0),
        "stride_beyond_context": set_(["model", "stride"], 41),
        "sliding_unknown": set_(["model", "sliding"], "prefill"),
        "ring_with_stride": lambda h: set_(["model", "stride"], 2)(
            set_(["model", "sliding"], "ring")(h)
        ),
        "n_batches_0": set_(["model", "n_batches"], 0),
        "segments_beyond_tokens": set_(["model", "n_batches"], 41),
        "batch_size_0": set_(["model", "batch_size"], 0),
        "n_tokens_negative": set_(["model", "n_tokens"], -5),
        "n_tokens_float": set_(["model", "n_tokens"], 40.5),
        "n_tokens_huge": set_(["model", "n_tokens"], 10**12),
        "n_tokens_1e12_float": set_(["model", "n_tokens"], 1e12),
        "context_1e9": set_(["model", "context"], 10**9),
        "batch_size_huge": set_(["model", "batch_size"], 4096),
        "lora_len_0": set_(["model", "lora"], {**lora, "len": 0}),
        "lora_len_odd": set_(["model", "lora"], {**lora, "len": 3}),
        "lora_target_unknown": set_(["model", "lora"], {**lora, "targets": ["wz"], "len": 2}),
        "lora_not_object": set_(["model", "lora"], [1, 2]),
        "lora_longer_than_body": set_(["model", "lora"], {**lora, "len": 10**6}),
        "escape_inconsistent": set_(["model", "escape"], {"runs": 9, "table": 2, "len": 5}),
        "coder_unknown": set_(["model", "coder"], "zip"),
        "dtype_unknown": set_(["model", "dtype"], "float64"),
        "vocab_0": set_(["model", "vocab_size"], 0),
        "mode_unknown": set_(["mode"], "gzip"),
        "mode_raw_with_model": set_(["mode"], "raw"),
        "model_missing_in_model_mode": set_(["model"], None),
        "sha_not_hex": set_(["sha256"], "z" * 64),
        "crc_negative": set_(["body_crc32"], -1),
        "size_smaller_than_tokens": set_(["size"], 10),
        "devices_0": set_(["model", "environment", "devices"], 0),
        "pad_negative": set_(["model", "pad"], -1),
        "deep_nesting": set_(["model", "environment"], json.loads("[" * 50 + "]" * 50)),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_forged_header_refused_in_one_line(case, tmp_path, capsys):
    a, h = model_archive()
    body = a[-h["body_len"] :]
    forged = forge(MUTATIONS[case](json.loads(json.dumps(h))), body)
    msg = refused(forged)
    assert msg.startswith(("corrupted archive", "trailing data", "truncated archive"))
    # `compress --info` goes through the same validation
    path = tmp_path / "a.fz"
    path.write_bytes(forged)
    assert cli.main(["compress", "--info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {msg}"


def test_valid_headers_pass_and_describe(tmp_path, capsys):
    for coder in coders.CODERS:
        a, _ = model_archive(coder)
        parsed = finezip.parse(a)
        assert parsed.header.model.coder == coder
        assert arc.Header.from_dict(parsed.header.to_dict()) == parsed.header
    path = tmp_path / "a.fz"
    path.write_bytes(model_archive()[0])
    assert cli.main(["compress", "--info", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'coder: "ac"' in out and "devices: 1" in out


def test_payload_padding_bounds_tokens_by_body():
    """A payload that is shorter than n_tokens / TOKENS_PER_BYTE bytes needs zero padding to be
    valid."""
    a, h = model_archive(n_tokens=100)
    payload = a[-h["body_len"] :]
    h = json.loads(json.dumps(h))
    n = arc.TOKENS_PER_BYTE * len(payload) + 1
    h["size"] = h["model"]["n_tokens"] = n
    h["model"]["batch_size"] = 8  # rows split over the tests' 8 devices
    h["model"]["context"] = h["model"]["stride"] = -(-n // 8)
    msg = refused(forge(h, payload), f"exceeds {arc.TOKENS_PER_BYTE} per payload byte")
    assert f"({len(payload)} bytes: {n - 1})" in msg
    h["model"]["pad"] = 1
    padded = payload + b"\0"
    h["body_len"], h["body_crc32"] = len(padded), zlib.crc32(padded)
    with pytest.raises(AssertionError, match="the model was loaded"):  # valid: model wanted
        finezip.decompress(forge(h, padded), no_model)
    padded = payload + b"\1"
    h["body_crc32"] = zlib.crc32(padded)
    refused(forge(h, padded), "padding is not zero")


# ---------------------------------------------------------------- work a header can ask for


def busy_archive() -> tuple[dict, bytes]:
    """The header dict and body of a valid ~900-byte `ac-match` archive that asks for all the
    work its body allows: 50,000 tokens (64 per body byte, padded) in 16 ring segments,
    context 2,048."""
    payload = coders.pack_streams([np.arange(7, dtype=np.uint32)])
    n = 50_000
    pad = -(-n // arc.TOKENS_PER_BYTE) - len(payload)
    info = arc.ModelInfo(
        coder="ac-match",
        model="f" * 64,
        tokenizer="tok",
        dtype="float32",
        vocab_size=49152,
        n_tokens=n,
        context=2048,
        stride=1,
        batch_size=16,
        n_batches=1,
        pad=pad,
        lora=None,
        escape=None,
        environment=env(),
        match=arc.MatchInfo.of(MatchConfig()),
        spans=1,
        sliding="ring",
    )
    a = arc.pack(n, arc.sha256(b""), "model", payload + bytes(pad), info)
    return arc.header_json(a)[0], a[-(len(payload) + pad) :]


LORA = {"targets": ["wq", "wv"], "alpha": 8.0, "seed": 0, "steps": 1}
# forged class -> (header changes by dotted path, format version, the error's field and bound)
FORGED = {
    "tokens_1024_per_byte": (
        {"size": 800_768, "model.n_tokens": 800_768},
        arc.VERSION,
        "n_tokens 800768 exceeds 64 per payload byte (782 bytes: 50048)",
    ),
    "tokens_1024_per_byte_v3": (
        {"size": 800_768, "model.n_tokens": 800_768},
        3,
        "n_tokens 800768 exceeds 64",
    ),
    "rows_and_devices_2e20": (
        {"model.batch_size": 1 << 20, "model.environment.devices": 1 << 20},
        arc.VERSION,
        "batch_size 1048576 x 1 batches = 1048576 rows exceed 4096",
    ),
    "devices_2e20": (
        {"model.environment.devices": 1 << 20},
        arc.VERSION,
        "batch_size 16 x 1 segments do not fit 50000 tokens on 1048576 devices",
    ),
    "rows_8192": (
        {"model.batch_size": 8192},
        arc.VERSION,
        "batch_size 8192 x 1 batches = 8192 rows exceed 4096",
    ),
    "lanes_1024": (
        {"model.n_batches": 1024},
        arc.VERSION,
        "batch_size 16 x 1024 batches = 16384 rows exceed 4096",
    ),
    "vocab_2e24": (
        {"model.vocab_size": 1 << 24, "model.batch_size": 32},
        arc.VERSION,
        "vocab_size 16777216 x 32 rows = 536870912 probabilities per step exceed 268435456",
    ),
    "context_2e20": (
        {"model.context": 1 << 20},
        arc.VERSION,
        "context 1048576 exceeds the segment length 3125",
    ),
    "prefill_stride_1": (
        {"model.sliding": None},
        arc.VERSION,
        "stride 1 pre-fills 2048 tokens per window, more than 16 per coded token",
    ),
    "lora_rank_4096": (
        {"model.lora": {**LORA, "rank": 4096, "layers": 4096, "len": 2}},
        arc.VERSION,
        "lora.rank 4096 x 4096 layers x 2 targets needs 67108864 bytes, more than the blob's 2",
    ),
    "match_compare_2e30": (
        {"model.match.candidates": 1024, "model.match.max_len": 1 << 20},
        arc.VERSION,
        "match.candidates 1024 x max_len 1048576 = 1073741824 exceeds 65536",
    ),
}


def test_busy_archive_is_valid_up_to_the_model():
    header, body = busy_archive()
    a = forge(header, body)
    assert len(a) < 1000 and finezip.parse(a).header.model.n_tokens == 50_000
    with pytest.raises(AssertionError, match="the model was loaded"):
        finezip.decompress(a, no_model)


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_work_refused_before_the_model(case):
    """A header that asks for more work or memory than any archive of its body length can
    need (rows, devices, lanes, tokens, context, prefill, LoRA shape, match lookups) is refused
    in header validation: one line naming the field, its value and the bound, in milliseconds,
    without allocating, before any model is loaded (format 3 too)."""
    changes, version, expect = FORGED[case]
    header, body = busy_archive()
    for path, value in changes.items():
        *parents, key = path.split(".")
        d = header
        for k in parents:
            d = d[k]
        d[key] = value
    forged = forge(header, body, version)
    assert len(forged) <= (1024 if version == 4 else 1536)  # format 3: plain JSON, ~700 bytes
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        msg = refused(forged)
        seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert msg.startswith("corrupted archive: header field model.") and expect in msg, msg
    assert seconds < 2 and peak < 4 << 20, (seconds, peak)


# -------------------------------------------------------------- property tests (hypothesis)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


def _near_valid():
    """Header dicts with valid field names and any JSON values, valid values often kept."""
    _, h = model_archive()

    def field(key, value):
        if type(value) is dict:
            return st.fixed_dictionaries({k: field(k, v) for k, v in value.items()}) | JSON
        return st.just(value) | JSON

    return st.fixed_dictionaries({k: field(k, v) for k, v in h.items()})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.dictionaries(st.text(max_size=12), JSON), _near_valid()))
def test_any_dict_is_refused_cleanly_or_round_trips(d):
    try:
        header = arc.Header.from_dict(d)
    except ArchiveError as e:
        assert "\n" not in str(e)
        return
    assert header.to_dict() == d
    assert arc.Header.from_dict(json.loads(json.dumps(header.to_dict()))) == header


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=40))
def test_any_bytes_are_refused_cleanly_or_round_trip(prefix, body):
    for archive in (
        prefix,
        b"FZIP\x03" + prefix,
        b"FZIP\x04" + prefix,
        *(forge({"x": 1}, b"", v) + body for v in arc.READABLE),
    ):
        try:
            header, got = arc.Header.from_bytes(archive)
        except ArchiveError as e:
            assert "\n" not in str(e)
            continue
        assert arc.Header.from_bytes(header.to_bytes(got)) == (header, got)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_any_bit_flip_of_a_valid_archive_is_caught(pos, flip):
    a, _ = model_archive("rank")
    pos %= len(a)
    b = bytearray(a)
    b[pos] ^= flip or 1
    with pytest.raises(ArchiveError):
        finezip.decompress(bytes(b), no_model)


# ---------------------------------------------------------- cheap decisions before the model


class CharTokenizer:
    """One token per character: what the compressor needs of a tokenizer before it codes."""

    id, vocab_size, bos_id = "chars", 1 << 21, 0

    def encode(self, text):
        return [ord(c) for c in text]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_repeated_character_compresses_in_seconds_without_coding():
    """200 KB of one character: its tokens alone need a payload larger than the bz2 archive
    (`TOKENS_PER_BYTE`), so the text is not coded (it took > 400 s before); the model's
    weights are never touched (a model with only a tokenizer)."""
    data = b"a" * 200_000
    model = LoadedLM(None, None, CharTokenizer(), "chars")
    t0 = time.perf_counter()
    res = finezip.compress_detailed(data, model)
    assert time.perf_counter() - t0 < 5
    assert res.mode == "bz2" and "needs at least" in res.reason and len(res.archive) < 150
    assert "code" not in res.seconds and "estimate" in res.seconds
    assert finezip.decompress(res.archive, no_model) == data


def test_min_model_archive_is_a_lower_bound():
    """The bound the skip uses is below every real model archive of the same input."""
    a, h = model_archive()
    assert finezip.api._min_model_archive(h["model"]["n_tokens"], 0) <= len(a)


def test_decompress_checks_body_before_loading_the_model(tmp_path, capsys, monkeypatch):
    a, _ = model_archive()
    bad = bytearray(a)
    bad[-3] ^= 0x10
    refused(bytes(bad), "body checksum")
    refused(a + b"\0", "trailing data")
    refused(a[:-1], "truncated")
    from jaxsel.models import loaders

    monkeypatch.setattr(loaders, "load_lm", no_model)
    src, out = tmp_path / "a.fz", tmp_path / "out"
    src.write_bytes(bytes(bad))
    t0 = time.perf_counter()
    assert cli.main(["decompress", str(src), str(out)]) == 2
    assert time.perf_counter() - t0 < 5
    assert capsys.readouterr().err.strip() == "error: corrupted archive: body checksum mismatch"


def _bomb_prefix(limit: int) -> tuple[int, bool]:
    """Bytes the fixture decodes to, up to `limit`, in bounded pieces (never held); and eof."""
    dec, total, pending = bz2.BZ2Decompressor(), 0, BOMB.read_bytes()
    while not dec.eof and total < limit:
        piece = dec.decompress(pending, max_length=1 << 26)
        assert not any(piece[:4096])
        total += len(piece)
        pending = b""
    return total, dec.eof


def test_bomb_fixture_expands_far():
    assert _bomb_prefix(1 << 26) == (1 << 26, False)  # 64 MiB of zeros and not done


@pytest.mark.slow
def test_bomb_fixture_is_2gib():
    assert _bomb_prefix(1 << 40) == (2 << 30, True)


def test_fuzz_corpus_replays_cleanly():
    """Every input `make fuzz` kept (seeds, what it found, the crashes it once found, now fixed)
    is answered by the harness without an unexpected exception."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fuzz_archive", Path(__file__).parents[1] / "fuzz" / "fuzz_archive.py"
    )
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    corpus = sorted((Path(__file__).parents[1] / "fuzz" / "corpus_archive").iterdir())
    assert len(corpus) >= 20 and any(p.name.startswith("crash-") for p in corpus)
    for p in corpus:
        harness.test_one_input(p.read_bytes())


# ------------------------------------------------------- work a forged payload can cause


def _peaked_rows(rng, n: int, vocab: int, spread: float, dtype) -> np.ndarray:
    logits = rng.normal(size=(n, vocab)) * spread
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("vocab", [2, 3, 300, 49152])
def test_true_streams_are_decoded_within_their_words(vocab):
    """The over-read rule against constriction itself: every stream a `RangeEncoder` writes,
    under flat to nearly certain tables (float32 and float64), symbols drawn from the table or
    always its likeliest (the cheapest stream), decodes without the error, its summed
    `symbol_bits_floor` below 32 bits per word but close to it on some stream (> 0.95: the
    bound is tight) and its symbol count within `max_stream_tokens`; the floor stays within
    what quantisation allows of the pre-quantisation cost; and half of a stream is refused in
    the step that reads past it."""
    rng, tightest = np.random.default_rng(vocab), 0.0
    for trial in range(24):
        n = int(rng.integers(1, 300 if vocab < 1000 else 40))
        dtype = (np.float32, np.float64)[trial % 2]
        p = _peaked_rows(rng, n, vocab, [0.1, 1, 5, 40][trial % 4], dtype)
        if trial % 3 == 0:
            sym = p.argmax(axis=1).astype(np.int32)
        else:
            cum = np.cumsum(p.astype(np.float64), axis=1)
            u = rng.random(n) * cum[:, -1]
            sym = np.minimum((cum < u[:, None]).sum(axis=1), vocab - 1).astype(np.int32)
        enc = coders.RangeEncoder()
        for i in range(n):
            enc.step(sym[i : i + 1], p[i : i + 1])
        words = enc.words()
        dec = coders.RangeDecoder(words, n)
        assert np.array_equal(np.concatenate([dec.step(p[i : i + 1]) for i in range(n)]), sym)
        floor = coders.symbol_bits_floor(p, sym)
        assert floor.sum() < 32 * len(words) and n <= coders.max_stream_tokens(len(words), vocab)
        tightest = max(tightest, floor.sum() / (32 * len(words)))
        assert np.all(floor >= coders.stream_floor_bits(vocab) - 1e-9)
        # tight: the quantised probability is at most p + 8 / 2**24 (p relative to the row's
        # float32 sum, within V / 2**24 of the exact one), so floor >= cost - that
        cost = coders.symbol_bits(p, sym)
        slack = np.log2(1 + 8 / (2.0**-cost * (1 << 24))) + np.log2(1 + vocab * 2.0**-24)
        assert np.all(floor >= cost - slack - 1e-9)
    assert tightest > 0.95
    # half a stream: refused in the step that reads past it (or by constriction, when the
    # zero words it reads instead lie outside the interval)
    p = _peaked_rows(rng, 200, vocab, 1.0, np.float32)
    sym = np.arange(200, dtype=np.int32) % vocab
    enc = coders.RangeEncoder()
    enc.step(sym, p)
    words = enc.words()
    dec, steps = coders.RangeDecoder(words[: len(words) // 2], 200, "stream x"), 0
    with pytest.raises(ArchiveError, match="stream x ended|range decoder failed") as e:
        for steps in range(1, 201):
            dec.step(p[steps - 1 : steps])
    assert steps < 200
    if "stream x" in str(e.value):
        assert f"damaged or forged archive: stream x ended at token {steps} of 200" in str(e.value)


def test_stream_floor_bounds_tokens_before_the_model():
    """The coder's floor, on the payload alone: a range-coded token costs at least
    -log2(1 - (V - 1) / 2**24) bits (0.0042 for 49,152 symbols), so a 1-word payload padded up
    to 64 tokens per byte is refused in header validation, and a batch whose stream is too short
    for its tokens in parse, both before any model is loaded."""
    assert coders.stream_floor_bits(49152) == pytest.approx(-np.log2(1 - 49151 / 2**24), rel=1e-12)
    assert coders.max_stream_tokens(1, 49152) == 7560 and coders.max_stream_tokens(0, 5) == 0
    header, body = busy_archive()  # 50,000 tokens, 7 words + padding: valid
    payload = coders.pack_streams([np.arange(1, dtype=np.uint32)])
    pad = len(body) - len(payload)
    header["model"]["pad"] = pad
    body = payload + bytes(pad)
    header["body_len"], header["body_crc32"] = len(body), zlib.crc32(body)
    msg = refused(forge(header, body), "header field model.n_tokens 50000 exceeds what a 5-byte")
    assert "ac-match payload can code with 49152 symbols (at most 7560)" in msg
    header, body = busy_archive()
    payload = coders.pack_streams([np.arange(6, dtype=np.uint32), np.arange(1, dtype=np.uint32)])
    pad = len(body) - len(payload)
    header["model"].update(pad=pad, batch_size=8, n_batches=2)
    body = payload + bytes(pad)
    header["body_len"], header["body_crc32"] = len(body), zlib.crc32(body)
    refused(forge(header, body), "codes 25000 tokens in batch 1, more than its 1 words can hold")


@pytest.mark.parametrize("mode", ["bz2", "lzma"])
def test_fallback_size_bounded_by_body(mode):
    """A fallback's declared size beyond what its body can decode to (the format's expansion
    limit) is refused in header validation; the 2 GiB bz2 bomb and xz of zeros stay within."""
    bound = arc.FALLBACK_EXPANSION[mode]
    compress = (lambda b: bz2.compress(b, 9)) if mode == "bz2" else lzma.compress
    assert mode == "lzma" or bound(len(BOMB.read_bytes())) >= 2 << 30
    zeros = 16 << 20
    assert bound(len(compress(bytes(zeros)))) >= zeros
    body = compress(b"hello " * 20)
    size = bound(len(body)) + 1
    forged = arc.pack(10, arc.sha256(b""), mode, body)
    h = arc.header_json(forged)[0]
    h["size"] = size
    forged = forge(h, body)
    assert len(forged) <= 1024
    t0 = time.perf_counter()
    refused(forged, f"header field size {size} exceeds what {len(body)} bytes of {mode}")
    assert time.perf_counter() - t0 < 2


@pytest.fixture(scope="module")
def real_archives(tiny_lm):
    """Model archives of 400 bytes of a licence with the tiny model, one per coder (< 1 KB),
    made on the tests' 8 devices: 2 batches of 8 rows, context 32."""
    data = Path("/usr/share/common-licenses/GPL-3").read_bytes()[:400]
    out = {}
    for coder in coders.CODERS:
        config = finezip.FineZipConfig(coder, context=32, batch_size=8, fallback=False)
        out[coder] = finezip.compress(data, tiny_lm, config)
        assert finezip.decompress(out[coder], tiny_lm) == data
    return data, out


def _forge_payload(archive: bytes, kind: str) -> bytes:
    """`archive` with its coded payload forged (`kind`), every checksum and header bound valid:
    half of each word stream; random words; or the stream kept and n_tokens raised to the
    header bound with padding, at most 1,024 bytes in all."""
    parsed = finezip.parse(archive)
    h, m = parsed.header, parsed.header.model
    streams = parsed.payload if m.coder != "rank" else None
    if kind == "truncated":
        if streams is None:
            body = arc.unpack(archive)[1]
            return arc.pack(h.size, h.sha256, "model", body[: len(body) // 2], m)
        payload = coders.pack_streams([w[: len(w) // 2] for w in streams])
        return arc.pack(h.size, h.sha256, "model", payload, m)
    if kind == "random":
        rng = np.random.default_rng(0)
        if streams is None:
            payload = rng.bytes(h.body_len)
        else:
            words = [rng.integers(0, 1 << 32, len(w), np.uint32) for w in streams]
            payload = coders.pack_streams(words)
        return arc.pack(h.size, h.sha256, "model", payload, m)
    payload = arc.unpack(archive)[1]
    body_len = 1024 - (len(archive) - h.body_len) - 24  # the larger header: a few bytes more
    n = arc.TOKENS_PER_BYTE * body_len
    info = dataclasses.replace(m, n_tokens=n, pad=body_len - len(payload))
    return arc.pack(n, h.sha256, "model", payload + bytes(body_len - len(payload)), info)


@pytest.mark.parametrize("kind", ["tokens_at_the_bound", "truncated", "random"])
@pytest.mark.parametrize("coder", tuple(coders.CODERS))
def test_forged_payload_stops_within_its_bits(real_archives, tiny_lm, coder, kind):
    """Forged archives of at most 1 KB, every checksum and header bound valid, are refused in
    under 2 s with the model loaded: a range-coded payload that is read past its end (n_tokens
    raised to 64 per body byte, half the words) stops in that step with one line naming the
    token (not after the ~53,000 tokens declared); random words decode no further than their
    bits allow (then fail the original's checksum); a rank payload is checked whole before the
    model runs."""
    data, archives = real_archives
    forged = _forge_payload(archives[coder], kind)
    assert len(forged) <= 1024
    t0 = time.perf_counter()
    with pytest.raises(ArchiveError) as e:
        finezip.decompress(forged, tiny_lm)
    seconds, msg = time.perf_counter() - t0, str(e.value)
    assert seconds < 2 and "\n" not in msg, (seconds, msg)
    if coder == "rank":
        assert re.search("corrupted|truncated|varints|more bytes", msg), msg
    elif kind == "random":
        assert re.search("damaged or forged|checksum of the original", msg), msg
    else:
        assert re.fullmatch(
            r"damaged or forged archive: the coded payload of batch \d ended at token \d+ of "
            r"\d+ \(its \d+ bits are spent: the tokens decoded so far need \d+; a true stream "
            r"is never read past its end\)",
            msg,
        ), msg
        done, total = map(int, re.search(r"token (\d+) of (\d+)", msg).groups())
        assert done <= 240 and total >= (150 if kind == "truncated" else 20_000)  # 200 real


def test_decode_limits_refuse_before_decoding(
    real_archives, tiny_lm, tmp_path, capsys, monkeypatch
):
    """`Limits` (`--max-memory-mb`, `--max-tokens`): the decoder state an archive needs is what
    its caches and tables really allocate (the arrays built and summed), an archive over a limit
    is refused in one line before anything is decoded (over `max_tokens`: before the model
    loads), one at the limit decodes; the forged 16-row plan of 64 tokens per byte is refused
    by a memory limit its true 1-row archive passes."""
    from jaxsel.finezip import api, engine

    data, archives = real_archives
    a = archives["ac"]
    m = finezip.parse(a).header.model
    plan = api._plan(m)
    built = [engine.new_cache(tiny_lm.cfg, plan) for _ in range(plan.n_batches)]
    cache = sum(x.nbytes for x in jax.tree.leaves(built))
    need = engine.decoder_bytes(tiny_lm.cfg, plan)
    assert need == cache + plan.n_batches * 2 * plan.batch_size * tiny_lm.cfg.vocab_size * 4
    assert finezip.decompress(a, tiny_lm, limits=finezip.Limits(need, m.n_tokens)) == data
    t0 = time.perf_counter()
    with pytest.raises(ArchiveError, match=r"needs [\d.]+ MiB to decode beyond the model") as e:
        finezip.decompress(a, tiny_lm, limits=finezip.Limits(max_memory=need - 1))
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value)
    with pytest.raises(ArchiveError, match=f"codes {m.n_tokens} tokens, more than the limit"):
        finezip.decompress(a, no_model, limits=finezip.Limits(max_tokens=m.n_tokens - 1))
    # a plan of 16 rows x the whole context, n_tokens at the format's bound: its KV cache is
    # what a forger buys with 64 tokens per byte; a limit the true archive passes refuses it
    forged = _forge_payload(a, "tokens_at_the_bound")
    fm = finezip.parse(forged).header.model
    wide = dataclasses.replace(fm, batch_size=16, context=tiny_lm.cfg.max_position)
    h = finezip.parse(forged).header
    wide_archive = arc.pack(h.size, h.sha256, "model", arc.unpack(forged)[1], wide)
    wide_need = engine.decoder_bytes(tiny_lm.cfg, api._plan(wide))
    assert wide_need > 2 * need
    with pytest.raises(ArchiveError, match="needs"):
        finezip.decompress(wide_archive, tiny_lm, limits=finezip.Limits(max_memory=need))
    # the CLI: one line, exit 2, the model never loaded for --max-tokens
    from jaxsel.models import loaders

    monkeypatch.setattr(loaders, "load_lm", no_model)
    src = tmp_path / "a.fz"
    src.write_bytes(wide_archive)
    argv = ["decompress", str(src), str(tmp_path / "out"), "--max-tokens", "100"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: archive codes {wide.n_tokens} tokens, more than the limit of 100\n"
    assert cli.main(["decompress", str(src), str(tmp_path / "o2"), "--max-memory-mb", "0"]) == 2
    assert "--max-memory-mb must be > 0" in capsys.readouterr().err
