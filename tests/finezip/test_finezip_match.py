"""FineZip's `ac-match` coder: the match predictor against a brute-force
longest earlier match, the mixed integer table against a plain Python-int transcription, round
trips with a tiny random Llama (hostile inputs, long repeats, both scopes), and the cost of a
doubled text; the LoRA scale as a static field (an archive made before that change decodes)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_finezip import ENGLISH, HOSTILE, tiny_lm

from jaxsel import finezip
from jaxsel.errors import ArchiveError, InputError
from jaxsel.finezip import archive as arc
from jaxsel.finezip import coders
from jaxsel.finezip.costs import archive_costs, token_bits
from jaxsel.finezip.match import LM_BITS, MatchConfig, MatchModel, lm_bin, lm_table, mixed_table
from jaxsel.finezip.memorize import MemorizeConfig
from jaxsel.models.loaders import load_smollm2

FAST = dict(context=32, stride=16, batch_size=8, fallback=False)


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(load_smollm2().tokenizer, 0)


# ------------------------------------------------------------------------------ predictor


def longest_earlier(h: list, i: int, order: int) -> tuple[int, set]:
    """Brute force: the longest L such that h[i-L:i] == h[j-L:j] for some j < i (L >= order,
    else 0), and the tokens h[j] following every such occurrence."""
    best, nxt = 0, set()
    for j in range(i):
        n = 0
        while n < j and h[i - 1 - n] == h[j - 1 - n]:
            n += 1
        if n > best:
            best, nxt = n, {h[j]}
        elif n == best:
            nxt.add(h[j])
    return (best, nxt) if best >= order else (0, set())


def sequences():
    rng = np.random.default_rng(0)
    yield rng.integers(0, 3, 300).tolist()  # many short repeats, many candidates
    yield rng.integers(0, 50, 300).tolist()  # few repeats
    block = rng.integers(0, 1000, 40).tolist()
    yield block + rng.integers(0, 1000, 30).tolist() + block[5:] + block  # long repeats
    yield [7] * 120  # one repeated token


@pytest.mark.parametrize("order", [1, 2, 4])
def test_match_is_the_longest_earlier_match(order):
    """Uncapped (every occurrence a candidate, compared to the start: caps of 256 that no
    count here reaches), the match at every position is the longest earlier occurrence of the
    current context, and it predicts a token that followed such an occurrence."""
    for h in sequences():
        assert max(h.count(t) for t in h) < 256  # occurrences of any key
        model = MatchModel(MatchConfig("segment", order, 256, 256), 1)
        for i, tok in enumerate(h):
            m, n = model.predict(0)
            best, nxt = longest_earlier(h, i, order)
            assert best < 256
            assert n == best, (i, n, best)
            assert (m in nxt) if best else m == -1
            model.update(0, tok)


def test_capped_match_is_a_real_match():
    """With the default caps (8 candidates, 1024 tokens compared) the match may be shorter than
    the longest, but its context really occurs before the predicted position."""
    for h in sequences():
        model = MatchModel(MatchConfig("segment", 2, 2, 8), 1)
        for i, tok in enumerate(h):
            m, n = model.predict(0)
            if m >= 0:
                p = model.ptr[0]
                assert p < i and h[p] == m and h[p - n : p] == h[i - n : i]
                assert n <= longest_earlier(h, i, 2)[0]
            model.update(0, tok)


def test_scope_all_sees_other_segments_in_coding_order():
    """Scope "all": segment 1 finds the text segment 0 coded, including the token segment 0
    coded in the same step (rows in order); scope "segment" does not."""
    text = [5, 6, 7, 8, 9, 10, 11]
    for scope, expect in (("all", 3), ("segment", 0)):
        model = MatchModel(MatchConfig(scope, 2), 2)
        seen = []
        for t, tok in enumerate(text):
            for seg in (0, 1):  # one step: row 0, then row 1
                m, _ = model.predict(seg)
                if seg == 1 and t >= 2:
                    seen.append(m == tok)
                model.update(seg, tok)
        assert sum(seen) == (len(text) - 2 if expect else 0)


# ---------------------------------------------------------------------------------- mixing


def test_mixed_table_vs_python_ints():
    """`lm_table` + `mixed_table` against a per-element transcription in Python ints and
    fractions: q = floor(p 2^24) + 1, w = floor(Q (2h+1) / (2(n-h)+1)) on the predicted token,
    every other frequency unchanged (>= 1)."""
    from fractions import Fraction

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (6, 300)).astype(np.float32)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    predicted = np.array([3, -1, 299, 0, 17, 17])
    hits = np.array([0, 5, 9, 1023, 0, 500])
    seen = np.array([0, 7, 9, 1023, 3, 1000])
    q = lm_table(probs)
    out = mixed_table(q, predicted, hits, seen)
    for r in range(6):
        ref = [int(Fraction(float(p)) * 2**LM_BITS) + 1 for p in probs[r]]  # floor of an exact
        assert q[r].tolist() == ref  # float64 holding exact integers
        total = sum(ref)
        if predicted[r] >= 0:
            h, n = int(hits[r]), int(seen[r])
            ref[predicted[r]] += total * (2 * h + 1) // (2 * (n - h) + 1)
        assert out[r].tolist() == ref and min(ref) >= 1
    assert out.dtype == np.float64 and out.max() < 2**53  # exact integers
    assert lm_bin(1, 2**24) == 3 and lm_bin(2**23, 2**24) == 0 and lm_bin(2**16, 2**24) == 2


def test_tables_are_identical_when_recomputed():
    """Two independent models fed the same tokens and LM rows (what the encoder and the decoder
    do) hand identical tables to the coder at every token."""
    rng = np.random.default_rng(2)
    toks = np.tile(rng.integers(0, 40, 25), 6)
    probs = rng.dirichlet(np.ones(40), len(toks)).astype(np.float32)
    a, b = (MatchModel(MatchConfig(), 1) for _ in range(2))
    matched = 0
    for t, tok in enumerate(toks):
        ta, tb = a.table(0, probs[t : t + 1]), b.table(0, probs[t : t + 1])
        assert ta.dtype == np.float64 and np.array_equal(ta, tb)
        matched += ta.max() > 2**LM_BITS + 1
        a.observe(0, tok)
        b.observe(0, tok)
    assert matched > 100  # the repeats were predicted


def test_match_config_and_header_are_validated():
    with pytest.raises(InputError, match="scope"):
        MatchConfig(scope="everything")
    with pytest.raises(InputError, match="max_len"):
        MatchConfig(order=8, max_len=4)
    with pytest.raises(ArchiveError, match="model.match.max_len"):
        arc.MatchInfo("all", 8, 8, 4, 32, 1023)
    with pytest.raises(ArchiveError, match="model.match.scope"):
        arc.MatchInfo("any", 4, 8, 1024, 32, 1023)
    assert arc.MatchInfo.of(MatchConfig()).config() == MatchConfig()


# ----------------------------------------------------------------------------- round trips


def roundtrip(data: bytes, model, **kw) -> finezip.Compressed:
    res = finezip.compress_detailed(data, model, finezip.FineZipConfig(**kw))
    assert finezip.decompress(res.archive, model) == data
    return res


@pytest.mark.parametrize("case", sorted(c for c in HOSTILE if not c.endswith("200kb")))
def test_hostile_inputs_roundtrip(tiny, case):
    res = roundtrip(HOSTILE[case], tiny, coder="ac-match", **FAST)
    if res.mode == "model":
        m = finezip.read_header(res.archive)[0].model
        assert m.coder == "ac-match" and m.match == arc.MatchInfo.of(MatchConfig())


@pytest.mark.parametrize("scope", ["all", "segment"])
def test_long_repeats_cost_almost_nothing(tiny, scope):
    """A 16 KB text of one paragraph (~70 tokens) repeated: every segment (~500 tokens) repeats
    itself 7 times, so both scopes
    code the repeats for a small fraction of what `ac` pays."""
    data = (ENGLISH * 60).encode()
    ac = roundtrip(data, tiny, coder="ac", **FAST)
    mt = roundtrip(data, tiny, coder="ac-match", match=MatchConfig(scope), **FAST)
    assert len(mt.archive) < 0.35 * len(ac.archive), (len(mt.archive), len(ac.archive))


def test_doubled_text_costs_the_text_plus_a_constant(tiny):
    """text + text (text: 8 KB of real licence prose, no long repeats of its own): with scope
    "all" the second copy's segments find the first copy's as they are coded, so the archive
    grows by a small amount, while `ac` pays for the copy in full."""
    lic = Path("/usr/share/common-licenses/GPL-3").read_bytes()[:8000]
    kw = dict(coder="ac-match", **FAST)
    one, two = roundtrip(lic, tiny, **kw), roundtrip(lic + lic, tiny, **kw)
    ac_one = roundtrip(lic, tiny, coder="ac", **FAST)
    extra = len(two.archive) - len(one.archive)
    assert extra < 0.08 * len(one.archive), (extra, len(one.archive))
    assert len(one.archive) < len(ac_one.archive) + 120  # no loss without repeats (header)


def test_header_match_record_is_optional_only_without_a_match_coder(tiny):
    res = roundtrip((ENGLISH * 2).encode(), tiny, coder="ac-match", **FAST)
    header = arc.header_json(res.archive)[0]
    assert header["model"]["match"]["scope"] == "all"
    del header["model"]["match"]
    with pytest.raises(ArchiveError, match="model.match"):
        arc.Header.from_dict(header)
    plain = roundtrip((ENGLISH * 2).encode(), tiny, coder="ac", **FAST).archive
    assert "match" not in arc.header_json(plain)[0]["model"]  # ac/rank: as before the field


def _old_archive(name: str) -> tuple[bytes, arc.ModelInfo]:
    """A model archive from tests/finezip/fixtures written by an earlier jaxsel (its
    make_v3_fixtures.py says how), and its model record. Decoding is bit-exact only in the
    environment it was made in, CPU included (these headers predate the CPU record;
    fixtures/finezip_v3.cpu has it): the test is skipped anywhere else."""
    data = Path(__file__).parent / "fixtures"
    made_on = (data / "finezip_v3.cpu").read_text().strip()
    here = finezip.api.environment()
    if here.cpu != made_on:
        pytest.skip(f"fixtures made on another CPU ({made_on}; here {here.cpu})")
    archive = (data / name).read_bytes()
    m = finezip.read_header(archive)[0].model
    here = dataclasses.replace(here, xla_flags=m.environment.xla_flags, cpu=None)
    if here != m.environment:  # $XLA_FLAGS aside: the CLI tests add GPU-only flags to it
        pytest.skip(f"archive made in another environment ({m.environment})")
    return archive, m


def test_archive_made_before_static_lora_scale_decodes(tiny):
    """An `ac` + LoRA archive written by the code that threaded the scale as an extra argument
    (main at 24d97be, 8 fake CPU devices: fixtures/finezip_lora_v3.fzip) decodes bit-exactly
    with the scale as a static field of `Lora`. Bit-exact only in the environment it was made
    in: elsewhere the test is skipped."""
    archive, m = _old_archive("finezip_lora_v3.fzip")
    assert m.lora is not None and m.match is None
    assert finezip.decompress(archive, tiny) == b"the cat sat on the mat; " * 40


def test_archive_made_with_attention_buckets_decodes(tiny):
    """An `ac-match` archive (C = 512, S = 256) written when decode steps read 2 attention-length
    buckets of 256 positions and the header did not record them (main at eda3b41, 8 fake CPU
    devices: fixtures/finezip_spans_v3.fzip) decodes bit-exactly: no `model.spans` means those
    buckets. New archives record `spans` = 1 (the whole cache). Skipped in another environment,
    as above."""
    archive, m = _old_archive("finezip_spans_v3.fzip")
    assert m.spans is None and (m.context, m.stride) == (512, 256)
    assert finezip.decompress(archive, tiny) == (ENGLISH * 90).encode()
    new = finezip.compress_detailed(
        (ENGLISH * 90).encode(),
        tiny,
        finezip.FineZipConfig(context=512, stride=256, batch_size=8, lanes=1, fallback=False),
    ).archive
    assert finezip.read_header(new)[0].model.spans == 1


def test_archive_without_spans_decodes_with_legacy_buckets(tiny, monkeypatch):
    """The fixture test above in any environment: an archive coded with the buckets older code
    used (`engine.legacy_spans`: 2 for C = 512) and its header's `spans` then removed, as those
    archives have it, decodes to the same bytes (the buckets change the attention's float sums:
    on the 2-core VM the same archive recorded with spans = 1 fails its checksum)."""
    make_plan = finezip.engine.make_plan
    monkeypatch.setattr(
        finezip.engine,
        "make_plan",
        lambda *a: (p := make_plan(*a))._replace(spans=finezip.engine.legacy_spans(p.context)),
    )
    data = (ENGLISH * 90).encode()
    cfg = finezip.FineZipConfig(context=512, stride=256, batch_size=8, lanes=1, fallback=False)
    archive = finezip.compress(data, tiny, cfg)
    monkeypatch.undo()
    header, body = arc.unpack(archive)
    m = header.model
    assert (m.context, m.spans) == (512, 2)

    legacy = arc.pack(header.size, header.sha256, "model", body, dataclasses.replace(m, spans=None))
    assert finezip.decompress(legacy, tiny) == data


def test_registered():
    assert coders.get("ac-match").uses_match and not coders.get("ac").uses_match


# ----------------------------------------------------------------------------- archive costs


def _payload_bits(archive: bytes) -> tuple[int, int]:
    """Bits of the range-coded words (the stream table excluded) and the number of streams."""
    streams = finezip.parse(archive).payload
    return 32 * sum(len(s) for s in streams), len(streams)


@pytest.mark.parametrize("coder,lora", [("ac", 0), ("ac-match", 0), ("ac-match", 12)])
def test_archive_costs_add_up_to_the_payload(tiny, coder, lora):
    """The per-token costs recorded while decoding (`archive_costs`) sum to the range coder's
    words within its overhead: up to 64 bits per stream (final words) plus constriction's
    24-bit quantisation of the table (well under 1% here). A text with long repeats, so the
    match model's mixed tables are what is measured for `ac-match`; with LoRA adapters trained
    on the text, the adapted model's."""
    data = (ENGLISH * 12).encode()
    mem = MemorizeConfig(steps=lora, rank=4, layers=0, lr=5e-2, batch_size=8)
    res = roundtrip(data, tiny, coder=coder, lora=mem, **FAST)
    assert (finezip.read_header(res.archive)[0].model.lora is not None) == (lora > 0)
    c = archive_costs(res.archive, lambda dtype: tiny)
    payload, streams = _payload_bits(res.archive)
    total = c.bits.sum()
    assert np.all(c.bits >= 0) and c.window_bits.sum() == pytest.approx(total)
    assert c.window_bytes.sum() == len(data)
    assert abs(payload - total) <= 64 * streams + 0.005 * total, (payload, total, streams)
    if coder == "ac-match":  # repeats are nearly free: far below the LM's own cost
        lm_bits = token_bits(tiny, c.ids, c.plan)
        assert total < 0.3 * lm_bits.sum(), (total, lm_bits.sum())


def test_ac_archive_costs_are_the_teacher_forced_lm_costs(tiny):
    """For `ac` the coded table is the LM's softmax: the recorded costs equal the teacher-forced
    `token_bits` in the same contexts up to float32 rounding (decode steps vs one forward)."""
    res = roundtrip((ENGLISH * 4).encode(), tiny, coder="ac", **FAST)
    c = archive_costs(res.archive, lambda dtype: tiny)
    np.testing.assert_allclose(c.bits, token_bits(tiny, c.ids, c.plan), rtol=1e-3, atol=1e-3)


def test_ring_archive_costs_add_up_and_have_no_teacher_forced_twin(tiny):
    """A ring archive's recorded costs sum to its payload (as above), reported in blocks of C
    tokens; `token_bits` refuses a ring plan that wraps instead of computing other contexts'
    costs, and gives one that never wraps its first window's costs."""
    data = (ENGLISH * 12).encode()
    kw = dict(coder="ac", context=32, sliding="ring", batch_size=8, lanes=1, fallback=False)
    res = roundtrip(data, tiny, **kw)
    c = archive_costs(res.archive, lambda dtype: tiny)
    payload, streams = _payload_bits(res.archive)
    total = c.bits.sum()
    assert c.plan.sliding == "ring" and c.window_bytes.sum() == len(data)
    assert len(c.window_bits) > c.plan.batch_size and c.window_bits.sum() == pytest.approx(total)
    assert abs(payload - total) <= 64 * streams + 0.005 * total, (payload, total, streams)
    with pytest.raises(InputError, match="no teacher-forced costs for a ring plan"):
        token_bits(tiny, c.ids, c.plan)
    # a ring that never wraps (segments within C) codes every token as the first window does
    short = c.plan._replace(n_tokens=c.plan.batch_size * c.plan.context)
    assert short.seg_len <= short.context
    ids = c.ids[: short.n_tokens]
    np.testing.assert_array_equal(
        token_bits(tiny, ids, short), token_bits(tiny, ids, short._replace(sliding="prefill"))
    )


def test_rank_archive_costs_are_refused(tiny):
    res = roundtrip(ENGLISH.encode(), tiny, coder="rank", **FAST)
    with pytest.raises(InputError, match="rank-coded archive"):
        archive_costs(res.archive, lambda dtype: tiny)
