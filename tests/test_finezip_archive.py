"""FineZip archive hardening: bounded fallback decoding, the typed header validated in one
place, bounds on the work a header can ask for, and cheap decisions before any model is loaded
or run. No test here loads SmolLM2: a model that must not be needed is a loader that fails the
test if called."""

import bz2
import json
import lzma
import time
import tracemalloc
import zlib
from pathlib import Path

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

DATA = Path(__file__).parent / "data"
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
        "fuzz_archive", Path(__file__).parent / "fuzz" / "fuzz_archive.py"
    )
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    corpus = sorted((Path(__file__).parent / "fuzz" / "corpus_archive").iterdir())
    assert len(corpus) >= 20 and any(p.name.startswith("crash-") for p in corpus)
    for p in corpus:
        harness.test_one_input(p.read_bytes())
