"""FineZip: byte-for-byte round trips, archive integrity, the rank rule against numpy, LoRA, and
the CLI end to end (real SmolLM2 in subprocesses on one device; a tiny random Llama in-process on
the 8 fake devices)."""

import bz2
import dataclasses
import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsel import cli, finezip, host
from jaxsel.errors import ArchiveError, InputError
from jaxsel.finezip import api, coders, engine
from jaxsel.finezip import archive as arc
from jaxsel.finezip.memorize import MemorizeConfig, frozen_a
from jaxsel.models import llama
from jaxsel.models.loaders import LoadedLM

ENGLISH = (
    "The licenses for most software and other practical works are designed to take away your "
    "freedom to share and change the works. By contrast, the GNU General Public License is "
    "intended to guarantee your freedom to share and change all versions of a program--to make "
    "sure it remains free software for all its users. "
)
CASES = {
    "one_byte": b"x",
    "unicode": "Ünïcödé — 日本語のテキスト, émojis 🎉🚀, Ελληνικά, русский, עברית\n".encode() * 3,
    "code": b"def f(x):\n    return {k: v for k, v in x.items() if v}\n\n\tprint(f({'a': 1}))\n",
    "crlf_trailing_ws": b"line one   \r\nline two\t\r\n\r\n  indented  \r\n   ",
    "english_3kb": (ENGLISH * 10)[:3000].encode(),
}
FAST = dict(context=32, stride=16, batch_size=8)


def tiny_lm(tokenizer, seed: int) -> LoadedLM:
    cfg = llama.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        rope_theta=1e4,
        rms_eps=1e-5,
        tie_embeddings=True,
        max_position=4096,
    )
    k = iter(jax.random.split(jax.random.key(seed), 16))
    n_l, d, f, qd, kvd = 2, 32, 64, 32, 16

    def w(*shape):
        return jax.random.normal(next(k), shape) * 0.3

    params = {
        "embed": w(cfg.vocab_size, d),
        "layers": {
            "attn_norm": jnp.ones((n_l, d)),
            "wq": w(n_l, d, qd),
            "wk": w(n_l, d, kvd),
            "wv": w(n_l, d, kvd),
            "wo": w(n_l, qd, d),
            "mlp_norm": jnp.ones((n_l, d)),
            "w_gate": w(n_l, d, f),
            "w_up": w(n_l, d, f),
            "w_down": w(n_l, f, d),
        },
        "final_norm": jnp.ones(d),
    }
    return LoadedLM(cfg, params, tokenizer, f"tiny-random-{seed}")


@pytest.fixture(scope="module")
def tiny(smollm2):
    return tiny_lm(smollm2.tokenizer, 0)


def roundtrip(data: bytes, model, **kw) -> finezip.Compressed:
    res = finezip.compress_detailed(data, model, finezip.FineZipConfig(**kw))
    assert finezip.decompress(res.archive, model) == data
    return res


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("coder", tuple(coders.CODERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_model_roundtrip(tiny, case, coder):
    res = roundtrip(CASES[case], tiny, coder=coder, fallback=False, **FAST)
    assert res.mode == "model" and res.n_tokens > 0
    m = finezip.read_header(res.archive)[0].model
    assert m.coder == coder and m.n_tokens == res.n_tokens


@pytest.mark.parametrize("size", [50_000, pytest.param(100_000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("coder", tuple(coders.CODERS))
def test_english_roundtrip(tiny, coder, size):
    """Real English (the system's licence texts), many batches of full chunks: 50 KB in the
    default run, 100 KB in the slow one."""
    paths = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file())
    data = b"\n".join(p.read_bytes() for p in paths)[:size]
    assert len(data) == size
    res = roundtrip(data, tiny, coder=coder, fallback=False, context=64, stride=24, batch_size=32)
    m = finezip.read_header(res.archive)[0].model
    assert res.mode == "model" and (m.context, m.stride, m.n_batches) == (64, 24, 2)
    seg = -(-res.n_tokens // (m.batch_size * m.n_batches))
    assert (seg - 64) // 24 >= 3  # every row codes 3 or more windows after its first


@pytest.mark.parametrize("data", [b"", os.urandom(3000), b"\xff\xfe text \x80", "é".encode()[:1]])
def test_non_text_falls_back(tiny, data):
    res = roundtrip(data, tiny)
    assert res.mode in arc.FALLBACK_MODES and "model" not in res.sizes


HOSTILE = {
    "empty": b"",
    "one_byte": b"x",
    "random": os.urandom(2000),
    "invalid_utf8": "naïve café ".encode() * 20 + b"\xc3\x28\xa0\xa1\xe2\x82\xf0\x90\x28",
    "crlf": b"line one\r\nline two\r\n\r\n" * 30,
    "control_bytes": b"ordinary text with one control byte SmolLM2 has no token for: \x04\n" * 30,
    "repeated_char_20kb": b"a" * 20_000,
    "repeated_char_200kb": b"a" * 200_000,
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.slow) if c.endswith("200kb") else c
        for c in sorted(HOSTILE)
    ],
)
def test_hostile_inputs_roundtrip(tiny, case):
    """Hostile inputs, with the default configuration (auto mode) and, where there
    is text, forced through the model with the default ring cache (context 16, 8 rows, 64 for
    200 KB: the ring wraps on every case longer than 128 tokens) and with prefill windows
    (context 64, stride 24, 64 rows). 200 KB through the model takes minutes on 8 fake CPU
    devices (slow; 20 KB by default)."""
    data = HOSTILE[case]
    assert finezip.decompress(finezip.compress(data, tiny), tiny) == data
    ring, prefill = (
        dict(context=16, batch_size=8 if len(data) <= 20_000 else 64, lanes=1),
        dict(context=64, stride=24, batch_size=64),
    )
    for shape in (ring, prefill):
        config = finezip.FineZipConfig(fallback=False, **shape)
        res = finezip.compress_detailed(data, tiny, config)
        assert finezip.decompress(res.archive, tiny) == data
        assert (res.mode == "model") == (case not in ("empty", "random"))
        if res.mode == "model":
            sliding = finezip.read_header(res.archive)[0].model.sliding
            assert sliding == ("ring" if shape is ring else None)


def test_split_text_hand_case(smollm2):
    """SmolLM2 has no token for 0x04; 0xff is not UTF-8: both escaped, in order."""
    split = finezip.split_text(b"ab\xffc\x04", smollm2.tokenizer)
    assert split == ("abc", [2, 1, 1, 1], b"\xff\x04")
    assert finezip.join_text(b"abc", split.runs, split.escaped) == b"ab\xffc\x04"
    lead = finezip.split_text("\x80é".encode("latin-1") + "é".encode(), smollm2.tokenizer)
    assert lead == ("é", [0, 2, 2], b"\x80\xe9")  # starts escaped: an empty text run first
    with pytest.raises(ArchiveError, match="escape table"):
        finezip.join_text(b"abcd", split.runs, split.escaped)


@pytest.mark.parametrize("coder", tuple(coders.CODERS))
def test_text_with_stray_bytes_stays_model_coded(tiny, coder):
    text = CASES["english_3kb"]
    data = b"\x80" + text[:1000] + b"\xff\xfe" + text[1000:2000] + b"\x04\x1d" + text[2000:]
    res = roundtrip(data, tiny, coder=coder, fallback=False, **FAST)
    m = finezip.read_header(res.archive)[0].model
    assert res.mode == "model" and m.escape.runs == 7  # 0, then esc/text x3
    plain = finezip.compress_detailed(
        text, tiny, finezip.FineZipConfig(coder, fallback=False, **FAST)
    )
    assert plain.n_tokens == res.n_tokens  # the model codes exactly the text around the bytes


def test_auto_mode_keeps_the_smallest(tiny):
    res = roundtrip(CASES["english_3kb"], tiny, **FAST)  # a random model loses to bz2
    assert len(res.archive) == min(res.sizes.values()) and res.mode != "model"


def test_sample_estimate_skips_a_hopeless_model(tiny):
    """A random model on repeated English: coding its first chunk (teacher-forced) predicts an
    archive far larger than bz2's, so the coding loop never runs."""
    data = (ENGLISH * 60)[:20_000].encode()
    res = finezip.compress_detailed(data, tiny, finezip.FineZipConfig(context=64))
    assert res.mode in ("bz2", "lzma") and "sample predicts" in res.reason, res.reason
    assert "code" not in res.seconds and "model" not in res.sizes
    assert finezip.decompress(res.archive, tiny) == data


@pytest.mark.parametrize("coder", tuple(coders.CODERS))
def test_ring_roundtrip(tiny, coder):
    """A ring cache (no prefills, the default) round trips through many wraps of its 16 slots;
    the header says so (stride 1), prefill archives do not carry the field, a stride selects
    prefill windows and a stride with a ring is refused."""
    data = CASES["english_3kb"] + CASES["code"] + CASES["unicode"]
    kw = dict(coder=coder, fallback=False, context=16, batch_size=8, lanes=1)
    res = roundtrip(data, tiny, sliding="ring", **kw)
    m = finezip.read_header(res.archive)[0].model
    assert (m.sliding, m.stride, m.context, m.spans) == ("ring", 1, 16, 1)
    assert -(-res.n_tokens // (m.batch_size * m.n_batches)) > 4 * 16  # many wraps per segment
    assert roundtrip(data, tiny, **kw).archive == res.archive  # the default
    prefill = roundtrip(data, tiny, sliding="prefill", **kw)
    assert "sliding" not in arc.header_json(prefill.archive)[0]["model"]
    assert prefill.archive != res.archive
    assert finezip.FineZipConfig(stride=1024).sliding == "prefill"
    default = finezip.FineZipConfig()
    assert (default.sliding, default.stride) == ("ring", 1)
    with pytest.raises(InputError, match="stride 4 with a ring"):
        finezip.FineZipConfig(sliding="ring", stride=4)
    with pytest.raises(InputError, match="sliding must be one of"):
        finezip.FineZipConfig(sliding="window")


def test_ring_warns_past_exact_positions(tiny, monkeypatch):
    """A ring segment longer than float32's exact integers (2**24 positions; lowered here) warns
    that RoPE loses precision, and still round trips; prefill windows (positions < C) do not."""
    monkeypatch.setattr(api, "RING_EXACT_POSITIONS", 64)
    data = CASES["english_3kb"]
    kw = dict(coder="ac", fallback=False, context=16, batch_size=2, lanes=1)
    with pytest.warns(RuntimeWarning, match="RoPE positions past 2"):
        roundtrip(data, tiny, sliding="ring", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        roundtrip(data, tiny, sliding="prefill", **kw)


def test_lanes_and_batches(tiny):
    data = CASES["english_3kb"]
    one = roundtrip(data, tiny, context=16, stride=8, batch_size=8, lanes=1, fallback=False)
    three = roundtrip(data, tiny, context=16, stride=8, batch_size=8, lanes=3, fallback=False)
    n_batches = [finezip.read_header(r.archive)[0].model.n_batches for r in (one, three)]
    assert n_batches == [1, 3]


def test_attention_spans():
    """New plans read the whole cache; archives without `model.spans` get the buckets they were
    written with (one per 256 positions, at most 4)."""
    assert {engine.Plan(0, 1024, 512, 8, 1).span(p) for p in range(1024)} == {1024}
    legacy = engine.Plan(0, 1024, 512, 8, 1, engine.legacy_spans(1024))
    spans = [legacy.span(p) for p in range(1024)]
    assert sorted(set(spans)) == [256, 512, 768, 1024]
    assert all(p < s <= p + 256 for p, s in enumerate(spans))
    assert engine.legacy_spans(300) == 1 and engine.legacy_spans(4096) == 4


def test_programs_compile_once(tiny):
    """Compressing and decompressing, twice, compile the prefill once and the step once (one
    attention span below 256 positions), for a new shape (context 24); the second round trip
    compiles nothing."""
    rank = coders.CODERS["rank"]
    fns = [
        engine.compiled_prefill(tiny.cfg, rank),
        engine.compiled_step(tiny.cfg, rank, 24, False),
    ]
    before = [f._cache_size() for f in fns]
    data = CASES["english_3kb"][:1200]
    kw = dict(coder="rank", fallback=False, context=24, stride=8, batch_size=8, lanes=1)
    roundtrip(data, tiny, **kw)
    after = [f._cache_size() for f in fns]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1] * 2
    roundtrip(data, tiny, **kw)
    assert [f._cache_size() for f in fns] == after


@pytest.mark.parametrize("sliding", ["prefill", "ring"])
def test_lora_memorises_and_roundtrips(tiny, sliding):
    """LoRA trained on a repetitive text lowers its loss (the adapters learn), the archive holds
    exactly the float16 `b` factors, and it decodes with the stored adapters (prefill windows
    and a ring that wraps)."""
    mem = MemorizeConfig(steps=12, rank=4, layers=0, lr=5e-2, batch_size=8)
    data = b"the cat sat on the mat; " * 40
    shape = FAST if sliding == "prefill" else dict(context=16, batch_size=8)
    res = roundtrip(data, tiny, fallback=False, lora=mem, **shape)
    m = finezip.read_header(res.archive)[0].model
    assert m.sliding == (None if shape is FAST else "ring")
    lora = m.lora
    out_dims = tiny.params["layers"]["wq"].shape[2] + tiny.params["layers"]["wv"].shape[2]
    assert res.lora_bytes == lora.len == 2 * 2 * 4 * out_dims  # float16 b only
    assert len(res.lora_losses) == 12 and lora.steps == 12
    assert res.lora_losses[-1] < 0.8 * res.lora_losses[0]


def test_frozen_a_is_reproducible(tiny):
    a1 = frozen_a(tiny.params, ("wv", "wq"), 4, 7)
    a2 = frozen_a(tiny.params, ("wq", "wv"), 4, 7)
    assert all(np.array_equal(a1[k], a2[k]) for k in a1)
    assert not np.array_equal(a1["wq"], frozen_a(tiny.params, ("wq",), 4, 8)["wq"])
    assert set(np.unique(np.abs(a1["wq"]))) == {np.float32(1) / np.sqrt(np.float32(32))}


# ------------------------------------------------------------------------------- integrity


@pytest.fixture(scope="module")
def model_archive(tiny):
    return roundtrip(CASES["code"], tiny, fallback=False, **FAST).archive


def test_corruption_detected(tiny, model_archive):
    a = bytearray(model_archive)
    a[-5] ^= 0x40
    with pytest.raises(ArchiveError, match="body checksum"):
        finezip.decompress(bytes(a), tiny)
    with pytest.raises(ArchiveError, match="header checksum"):
        b = bytearray(model_archive)
        b[20] ^= 1
        finezip.decompress(bytes(b), tiny)
    for cut in (0, 3, 12, 60, len(model_archive) - 1):
        with pytest.raises(ArchiveError, match="truncated|too short|not a FineZip"):
            finezip.decompress(model_archive[:cut], tiny)
    with pytest.raises(ArchiveError, match="trailing"):
        finezip.decompress(model_archive + b"\0", tiny)
    with pytest.raises(ArchiveError, match="not a FineZip"):
        finezip.decompress(b"PK\x03\x04" + model_archive[4:], tiny)


def test_wrong_model_refused(smollm2, model_archive):
    with pytest.raises(ArchiveError, match="made with model"):
        finezip.decompress(model_archive, tiny_lm(smollm2.tokenizer, 1))


@pytest.mark.parametrize("version", [1, 2, 7])
def test_older_format_version_refused(tiny, model_archive, version):
    """Version 1 and 2 archives were coded by steps with other float rounding: refused by
    version, before any decoding, naming the release that reads them."""
    old = model_archive[:4] + bytes([version]) + model_archive[5:]
    reader = {1: "jaxsel 0.1.0 up to", 2: "jaxsel 0.1.0 from", 7: "no jaxsel release"}[version]
    with pytest.raises(
        ArchiveError, match=rf"version {version}; this jaxsel reads \(3, 4\) .*{reader}"
    ):
        finezip.decompress(old, tiny)


def test_small_archive_has_a_compact_header(tiny):
    """4 KB of a licence: the deflated header (format 4) is ~150 bytes where the plain JSON of
    format 3 took ~760, and the archive round trips; the same archive framed as format 3 (the
    plain JSON header) still decodes."""
    data = Path("/usr/share/common-licenses/GPL-3").read_bytes()[:4096]
    res = roundtrip(data, tiny, fallback=False)
    header, start = arc.header_json(res.archive)
    assert res.archive[4] == arc.VERSION == 4 and start < 200, start
    old = arc.frame(header, res.archive[start:], 3)
    assert arc.header_json(old)[1] > 600
    assert finezip.read_header(old)[0] == finezip.read_header(res.archive)[0]
    assert finezip.decompress(old, tiny) == data


def test_payload_forgery_caught_by_original_checksum(tiny, model_archive):
    """A payload that passes the body checksum but decodes to other text (here: a re-packed,
    altered range-coded stream) still fails the original's sha256."""
    parsed = finezip.parse(model_archive)
    h, words = parsed.header, parsed.payload
    words[0] = words[0].copy()
    words[0][len(words[0]) // 2] ^= 0x01000000
    forged = arc.pack(h.size, h.sha256, "model", coders.pack_streams(words), h.model)
    with pytest.raises(ArchiveError, match="checksum of the original|range decoder"):
        finezip.decompress(forged, tiny)


def test_other_environment_warns(tiny, model_archive):
    """The header records the environment, the CPU included (architecture, vendor, model and a
    digest of its instruction-set extensions); decoding elsewhere warns naming what differs.
    Archives written before the CPU was recorded lack it and are not warned about it."""
    h, body = arc.unpack(model_archive)
    cpu = h.model.environment.cpu
    assert cpu == host.cpu_signature() and cpu.split()[0] == platform.machine()
    if Path("/proc/cpuinfo").exists():  # Linux: vendor, family/model, a digest of the extensions
        assert re.fullmatch(r"\S+ \S+ [\d/]+ isa:[0-9a-f]{12}", cpu), cpu

    def moved(**env):
        env = dataclasses.replace(h.model.environment, **env)
        model = dataclasses.replace(h.model, environment=env)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            restored = finezip.decompress(arc.pack(h.size, h.sha256, "model", body, model), tiny)
        assert restored == CASES["code"]
        return " ".join(str(x.message) for x in w if "another environment" in str(x.message))

    assert "jaxlib '0.0.1'" in moved(jaxlib="0.0.1")
    assert "cpu 'x86_64 AuthenticAMD 25/1 isa:0'" in moved(cpu="x86_64 AuthenticAMD 25/1 isa:0")
    assert moved(cpu=None) == ""


# ------------------------------------------------------------------------------ rank rule


def rank_reference(logits: np.ndarray, t: int) -> int:
    lt = logits[t]
    return int(np.sum(logits > lt) + np.sum((logits == lt) & (np.arange(len(logits)) < t)))


@pytest.mark.parametrize("kind", ["normal", "ties", "signed_zeros"])
def test_rank_kernels_vs_numpy(kind):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 5000)).astype(np.float32)
    if kind == "ties":
        logits = np.round(logits * 2) / 2
    if kind == "signed_zeros":
        logits[:, ::3], logits[:, 1::3] = 0.0, -0.0
    targets = rng.integers(0, 5000, 8).astype(np.int32)
    targets[0] = 0
    ranks = np.asarray(jax.jit(coders.rank_of)(logits, targets))
    assert ranks.tolist() == [rank_reference(r, t) for r, t in zip(logits, targets, strict=True)]
    assert np.array_equal(jax.jit(coders.token_at_rank)(logits, ranks), targets)
    want = rng.integers(0, 5000, 8).astype(np.int32)
    want[1] = 4999
    got = np.asarray(jax.jit(coders.token_at_rank)(logits, want))
    assert [rank_reference(r, t) for r, t in zip(logits, got, strict=True)] == want.tolist()


def test_rank_payload_vs_numpy_on_tiny_model(tiny):
    """The stored ranks are the rank rule applied to the model's logits. The numpy reference
    uses teacher-forced logits, which differ from the incremental ones by float rounding
    (measured <= 2e-5 here), so each stored rank must lie in the range of ranks the reference
    allows within eps = 1e-4 of the true logit, and be exactly the reference rank where that
    range is a single value.

    The reference rebuilds each token's context from the sliding-window rule stated in `engine`
    (bos + the segment so far within the first C tokens; afterwards the window's C - S + 1
    pre-filled tokens and the window's tokens before it), independently of the schedule code."""
    data = CASES["english_3kb"]
    c, s = 16, 6
    config = finezip.FineZipConfig("rank", c, s, batch_size=8, lanes=1, fallback=False)
    res = finezip.compress_detailed(data, tiny, config)
    m = finezip.read_header(res.archive)[0].model
    ranks = np.concatenate(finezip.parse(res.archive).payload, axis=None)
    ids = np.asarray(tiny.tokenizer.encode(data.decode()), np.int32)
    seg = -(-len(ids) // m.batch_size)
    assert (m.context, m.stride, m.n_batches) == (c, s, 1) and seg > 4 * c
    bos, ctxs, targets = tiny.tokenizer.bos_id, [], []
    for r0 in range(0, len(ids), seg):
        row = ids[r0 : r0 + seg]
        for t in range(len(row)):
            if t < c:
                ctx = np.concatenate([[bos], row[:t]])
            else:
                t0 = c + (t - c) // s * s  # the window's first token
                ctx = row[t0 - (c - s + 1) : t]
            assert 1 <= len(ctx) <= c and (t < c or len(ctx) >= c - s + 1)
            ctxs.append(np.pad(ctx, (0, c - len(ctx)), constant_values=-1))
            targets.append(row[t])
    x = np.stack(ctxs)
    last = (x >= 0).sum(1) - 1

    def fwd(p, x, last):  # the head at each row's last position only: [N, V], not [N, C, V]
        hidden = llama.forward(p, x, x >= 0, tiny.cfg)[jnp.arange(x.shape[0]), last]
        return llama.lm_logits(p, hidden, tiny.cfg)

    logits = np.asarray(jax.jit(fwd)(tiny.params, np.maximum(x, 0), last), np.float64)
    got = ranks[: len(ids)]
    eps, exact, width = 1e-4, 0, []
    for i, t in enumerate(targets):
        lt = logits[i, t]
        lo, hi = np.sum(logits[i] > lt + eps), np.sum(logits[i] >= lt - eps) - 1
        assert lo <= got[i] <= hi
        if lo == hi:
            assert got[i] == rank_reference(logits[i], t)
            exact += 1
        width.append(hi - lo)
    assert np.mean(width) < 3 and exact > 0.1 * len(ids)  # the check is not vacuous


# ------------------------------------------------------------------------- host-side pieces


def test_varints_and_streams():
    vals = np.array([0, 1, 127, 128, 300, 2**14, 2**21 + 5, 2**32 - 1, 2**40], np.uint64)
    buf = coders.varint_encode(vals)
    assert np.array_equal(coders.varint_decode(buf, len(vals)), vals)
    assert coders.varint_encode(np.zeros(0)) == b""
    with pytest.raises(ArchiveError):
        coders.varint_decode(buf[:-1], len(vals))
    streams = [np.array([1, 2**32 - 1], np.uint32), np.zeros(0, np.uint32), np.arange(300)]
    back = coders.unpack_streams(coders.pack_streams(streams), 3)
    assert all(np.array_equal(a, b) for a, b in zip(streams, back, strict=True))
    ranks = np.array([0, 5, 49151, 3], np.int32)
    assert np.array_equal(coders.decode_ranks(coders.encode_ranks(ranks), 4, 49152), ranks)
    with pytest.raises(ArchiveError, match="outside the vocabulary"):
        coders.decode_ranks(coders.encode_ranks(ranks), 4, 49151)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 200, 257, 5000])
def test_plan_and_segments(n):
    plan = engine.make_plan(n, 32, 12, 4, 2, 8)
    assert plan.batch_size % 8 == 0 and plan.lengths().sum() == n
    assert plan.context <= plan.seg_len and 1 <= plan.stride <= plan.context
    assert n < 32 * 8 * 2 or plan.n_batches == 2  # lanes used once the segments are long
    ids = np.arange(n, dtype=np.int32) + 1
    batches = plan.to_batches(ids, 0)
    assert np.array_equal(plan.from_batches(batches), ids)
    # the schedule: window starts every stride past the first context; spans cover positions
    starts = [t for t in range(plan.seg_len) if plan.window(t) >= 0]
    assert starts == list(range(plan.context, plan.seg_len, plan.stride))
    assert all(p < plan.span(p) <= plan.context for p in range(plan.context))
    ring = engine.make_plan(n, 32, 12, 4, 2, 8, sliding="ring")
    assert ring._replace(sliding="prefill", stride=plan.stride) == plan and ring.stride == 1
    assert ring.ring and not plan.ring
    assert all(ring.window(t) < 0 and ring.span(t) == ring.context for t in range(3 * n))
    lens = plan.lengths()
    assert all(
        np.all(batches[b, r, lens[b, r] :] == 0)
        for b in range(plan.n_batches)
        for r in range(plan.batch_size)
    )


# ------------------------------------------------------------------------------------- CLI


def run_cli(*args, stdin=None):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user
    return subprocess.run(
        [sys.executable, "-m", "jaxsel.cli", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=600,
    )


def test_cli_end_to_end_smollm2(tmp_path):
    """Real SmolLM2 with the default coder (ac-match), compression and decompression in separate
    processes (bit-identity across processes, not within one), through stdin and stdout."""
    text = (ENGLISH + "naïve café — 東京\r\n").encode()
    arch = tmp_path / "a.fz"
    r = run_cli("compress", "-", str(arch), "--context", "64", "--no-fallback", stdin=text)
    assert r.returncode == 0, r.stderr.decode()
    info = run_cli("compress", "--info", str(arch))
    assert info.returncode == 0 and 'mode: "model"' in info.stdout.decode()
    assert 'coder: "ac-match"' in info.stdout.decode() and 'scope: "all"' in info.stdout.decode()
    r = run_cli("decompress", str(arch), "-")
    assert r.returncode == 0 and r.stdout == text, r.stderr.decode()
    body = finezip.read_header(arch.read_bytes())[0].body_len
    assert body < 0.5 * len(bz2.compress(text, 9))  # the payload: SmolLM2 beats bzip2 already


def test_cli_fallback_and_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the CLI appends flags
    src, arch, out = tmp_path / "bin", tmp_path / "bin.fz", tmp_path / "bin.out"
    src.write_bytes(os.urandom(500))
    assert cli.main(["compress", str(src), str(arch)]) == 0
    assert cli.main(["decompress", str(arch), str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()
    capsys.readouterr()
    arch.write_bytes(arch.read_bytes()[:-10])
    assert cli.main(["decompress", str(arch), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: truncated archive") and "\n" not in err
    assert cli.main(["decompress", str(tmp_path / "missing"), str(out)]) == 2


def test_per_layer_weights_share_the_models_memory(tiny):
    """The weights a coding run hands its steps equal `unstack_layers` of the model's leaf for
    leaf (same structure, dtypes, values: the same floats come out), and on one CPU device they
    alias the model's own buffers instead of copying every layer weight."""
    ours, ref = engine._per_layer(tiny.params), llama.unstack_layers(tiny.params)
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    cpu = jax.devices("cpu")[0]
    stacked = jax.device_put(tiny.params["layers"]["wq"], cpu)
    view = engine._per_layer({"layers": {"wq": stacked}})["layers"][1]["wq"]
    put = jax.device_put(view, cpu)
    assert put.unsafe_buffer_pointer() == stacked.unsafe_buffer_pointer() + view.nbytes  # layer 1
