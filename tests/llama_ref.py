"""Shared helpers for the causal-LM tests: a float64 numpy transcription of the Llama forward and
tiny random models written as HF directories / GGUF files (the reference the JAX code is
checked against)."""

from __future__ import annotations

import json
import math

import numpy as np

from jaxsel.models.llama import LlamaConfig


def random_params(cfg: LlamaConfig, seed: int = 0, qkv_bias: bool = False) -> dict:
    """Random numpy params in our layout (float32), scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    d, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    qd, kd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim

    def w(*shape):
        return (rng.standard_normal(shape) / math.sqrt(shape[-2])).astype(np.float32)

    layers = {
        "attn_norm": 1 + 0.1 * rng.standard_normal((n_layers, d)).astype(np.float32),
        "wq": w(n_layers, d, qd),
        "wk": w(n_layers, d, kd),
        "wv": w(n_layers, d, kd),
        "wo": w(n_layers, qd, d),
        "mlp_norm": 1 + 0.1 * rng.standard_normal((n_layers, d)).astype(np.float32),
        "w_gate": w(n_layers, d, f),
        "w_up": w(n_layers, d, f),
        "w_down": w(n_layers, f, d),
    }
    if qkv_bias:
        for k, n in (("bq", qd), ("bk", kd), ("bv", kd)):
            layers[k] = (0.1 * rng.standard_normal((n_layers, n))).astype(np.float32)
    p = {
        "embed": rng.standard_normal((cfg.vocab_size, d)).astype(np.float32),
        "layers": layers,
        "final_norm": 1 + 0.1 * rng.standard_normal(d).astype(np.float32),
    }
    if not cfg.tie_embeddings:
        p["lm_head"] = w(d, cfg.vocab_size)
    return p


def np_forward(p, tokens, cfg: LlamaConfig, prefix=None, lora=None, ring=None):
    """float64 logits [B, T, V] of an unpadded batch, written from the Llama paper/HF code
    without sharing anything with jaxsel (prefix: (k, v) [L, P, KV, hd]; lora: (a, b, scale)).
    ring = n: a sliding window with a sink, what a ring KV cache of n slots computes: position t
    attends to position 0 and to the n - 1 positions up to t, and scores position 0 with its query
    rotated at position min(t, n - 1) instead of t."""
    from jaxsel.models.llama import rope_inv_freq

    assert ring is None or prefix is None
    p = _f64(p)
    b, t = tokens.shape
    hd, nh, nkv = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
    inv = rope_inv_freq(cfg).astype(np.float64)
    ang = np.arange(t)[:, None] * inv[None]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x, cos=cos, sin=sin):  # [B, T, N, hd], pairs (i, i + hd/2)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        c, s = cos[None, :, None], sin[None, :, None]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    pos = np.arange(t)
    allowed = pos[None, :] <= pos[:, None]
    if ring is not None:
        allowed &= (pos[None, :] == 0) | (pos[None, :] > pos[:, None] - ring + 1)
        sink_ang = np.minimum(pos, ring - 1)[:, None] * inv[None]
        sink_cs = np.cos(sink_ang), np.sin(sink_ang)

    def norm(x, w):
        return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_eps)

    def mm(x, name, i):
        y = x @ p["layers"][name][i]
        if lora is not None and name in lora[0]:
            y = y + lora[2] * (x @ np.float64(lora[0][name][i]) @ np.float64(lora[1][name][i]))
        return y

    x = p["embed"][tokens]
    for i in range(cfg.num_layers):
        lp = {k: v[i] for k, v in p["layers"].items()}
        h = norm(x, lp["attn_norm"])
        q, k, v = mm(h, "wq", i), mm(h, "wk", i), mm(h, "wv", i)
        if "bq" in lp:
            q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
        q_raw = q.reshape(b, t, nh, hd)
        q = rope(q_raw)
        k = rope(k.reshape(b, t, nkv, hd))
        v = v.reshape(b, t, nkv, hd)
        mask = allowed
        if prefix is not None:
            pk, pv = (np.broadcast_to(np.float64(a[i]), (b, *a.shape[1:])) for a in prefix)
            k, v = np.concatenate([pk, k], 1), np.concatenate([pv, v], 1)
            mask = np.concatenate([np.ones((t, pk.shape[1]), bool), allowed], 1)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
        s = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
        if ring is not None:
            q0 = rope(q_raw, *sink_cs)
            s[..., 0] = np.einsum("bthd,bhd->bht", q0, k[:, 0]) / math.sqrt(hd)
        s = np.where(mask, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("bhts,bshd->bthd", a, v).reshape(b, t, nh * hd)
        x = x + mm(o, "wo", i)
        h = norm(x, lp["mlp_norm"])
        g = mm(h, "w_gate", i)
        x = x + mm(g / (1 + np.exp(-g)) * mm(h, "w_up", i), "w_down", i)
    x = norm(x, p["final_norm"])
    head = p["embed"].T if cfg.tie_embeddings else p["lm_head"]
    return x @ head


def _f64(tree):
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def tiny_tokenizer_json(vocab_size: int) -> str:
    """A byte-level BPE tokenizer.json with no merges over `vocab_size` >= 257 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def save_hf_dir(hf_model, path, vocab_size: int) -> None:
    """An HF model saved as safetensors plus a tiny tokenizer.json (what load_hf_dir reads)."""
    hf_model.save_pretrained(path, safe_serialization=True)
    (path / "tokenizer.json").write_text(tiny_tokenizer_json(vocab_size))
    conf = json.loads((path / "config.json").read_text())
    assert conf["vocab_size"] == vocab_size
