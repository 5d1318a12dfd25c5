"""Online memorisation (FineZip §3.1): LoRA adapters fine-tuned on the text being compressed.

The adapters travel inside the archive, so their size counts against the ratio. To halve that
size we train only `b` (LoRA-FA, Zhang et al. 2023): `a` is a frozen random projection that both
sides regenerate from a seed with integer-exact arithmetic (Rademacher signs from PCG64 raw bits,
scaled by 1/sqrt(in)), and only `b` of the last `layers` layers is stored, as float16. Both the
compressor and the decompressor code with the *dequantised* adapters (`lora_from_blob`), never
the float32 ones training produced, so quantisation costs a little ratio but never losslessness.

Training is a teacher-forced forward (fine here: the adapters are fixed before coding starts) on
random minibatches of the chunks, mean token NLL, optax Adam; the coding itself stays the
incremental `engine.coding_step`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsel import parallel
from jaxsel.errors import ArchiveError, InputError
from jaxsel.models import llama
from jaxsel.models.llama import LlamaConfig, Lora


@dataclasses.dataclass(frozen=True)
class MemorizeConfig:
    """LoRA online memorisation; `steps=0` disables it."""

    steps: int = 0
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("wq", "wv")
    layers: int = 0  # adapt only the last `layers` layers (0 = all)
    lr: float = 1e-3
    batch_size: int = 4  # chunks per optimizer step (rounded up to the `data` axis size)
    seed: int = 0

    def meta(self, n_layers: int) -> dict:
        """The fields the decompressor needs (recorded in the archive header)."""
        return {
            "targets": list(self.targets),
            "rank": self.rank,
            "alpha": self.alpha,
            "layers": self.layers or n_layers,
            "seed": self.seed,
        }


class TrainState(NamedTuple):
    step: jax.Array  # int32 []
    b: dict  # name -> [layers, r, out] float32, the trained factors
    opt_state: optax.OptState


def frozen_a(params: dict, targets, rank: int, seed: int) -> dict:
    """name -> a [L, in, r] float32 with entries +-1/sqrt(in), bit-identical on every machine:
    the signs are PCG64 raw output bits (a fixed algorithm, unlike float samplers)."""
    a = {}
    for i, name in enumerate(sorted(targets)):
        if name not in llama.LORA_TARGETS:
            raise InputError(f"unknown LoRA target {name!r}; choose from {llama.LORA_TARGETS}")
        n_layers, d_in, _ = params["layers"][name].shape
        n = n_layers * d_in * rank
        words = np.random.PCG64([seed, i]).random_raw(-(-n // 64))
        bits = np.unpackbits(words.astype("<u8").view(np.uint8))[:n]  # any host byte order
        scale = np.float32(1.0) / np.sqrt(np.float32(d_in))
        a[name] = (
            np.where(bits == 1, scale, -scale).astype(np.float32).reshape(n_layers, d_in, rank)
        )
    return a


def full_b(b: dict, n_layers: int) -> dict:
    """Trained last-`layers` factors -> [L, r, out], zero (the plain model) below them."""
    return {
        k: jnp.concatenate([jnp.zeros((n_layers - v.shape[0], *v.shape[1:]), v.dtype), v])
        for k, v in b.items()
    }


def chunk_nll(
    b: dict, a: dict, params: dict, tokens, mask, cfg: LlamaConfig, scale: float
) -> jax.Array:
    """Mean token NLL of a minibatch of chunks under the adapted model (gradient w.r.t. `b`).

    tokens = [bos, y_1..y_L]: [B, L+1] int32, mask: [B, L+1] bool (the chunk's real tokens)."""
    lora = Lora(a, full_b(b, cfg.num_layers), scale)
    lp, _ = llama.token_logprobs(params, tokens, mask, cfg, lora=lora)
    return -jnp.sum(lp) / jnp.maximum(jnp.sum(mask[:, 1:]), 1)


def train_step(
    state: TrainState,
    a,
    params,
    tokens,
    mask,
    *,
    cfg: LlamaConfig,
    scale: float,
    opt: optax.GradientTransformation,
) -> tuple[TrainState, jax.Array]:
    loss, grads = jax.value_and_grad(chunk_nll)(state.b, a, params, tokens, mask, cfg, scale)
    updates, opt_state = opt.update(grads, state.opt_state, state.b)
    return TrainState(state.step + 1, optax.apply_updates(state.b, updates), opt_state), loss


@functools.cache
def _compiled_train_step(cfg: LlamaConfig, scale: float, lr: float):
    opt = optax.adam(lr)
    step = functools.partial(train_step, cfg=cfg, scale=scale, opt=opt)
    return opt, jax.jit(step, donate_argnums=(0,))


def train(
    params: dict,
    cfg: LlamaConfig,
    chunks: np.ndarray,
    lengths: np.ndarray,
    bos: int,
    config: MemorizeConfig,
) -> tuple[dict, list[float]]:
    """Fine-tunes `b` on the chunks. chunks: [n, L] int32 (padded), lengths: [n].

    Returns the trained float32 factors (name -> [layers, r, out]) and the loss per step.
    Minibatches are drawn without replacement, epoch by epoch, from a seeded host RNG.
    """
    n_layers = cfg.num_layers
    layers = config.layers or n_layers
    if not 0 < layers <= n_layers or config.rank < 1:
        raise InputError(f"LoRA needs 1 <= layers <= {n_layers} and rank >= 1")
    a = jax.device_put(
        frozen_a(params, config.targets, config.rank, config.seed), parallel.replicated()
    )
    params = jax.device_put(params, parallel.replicated())
    b = {k: jnp.zeros((layers, config.rank, params["layers"][k].shape[2]), jnp.float32) for k in a}
    scale = config.alpha / config.rank
    opt, step = _compiled_train_step(cfg, scale, config.lr)
    state = TrainState(jnp.zeros((), jnp.int32), b, opt.init(b))
    rows = parallel.round_up(min(config.batch_size, len(chunks)), parallel.data_size())
    tokens = np.concatenate([np.full((len(chunks), 1), bos, np.int32), chunks], axis=1)
    mask = np.arange(tokens.shape[1])[None] <= lengths[:, None]
    sh = parallel.sharding("batch", "seq")
    rng = np.random.default_rng(config.seed)
    order, losses = np.zeros(0, np.int64), []
    for _ in range(config.steps):
        if len(order) < rows:
            order = np.concatenate([order, rng.permutation(len(chunks))])
        idx, order = order[:rows], order[rows:]
        state, loss = step(
            state, a, params, jax.device_put(tokens[idx], sh), jax.device_put(mask[idx], sh)
        )
        losses.append(float(loss))
    return jax.device_get(state.b), losses


# ---------------------------------------------------------------------------- archive blob


def to_blob(b: dict) -> bytes:
    """Trained factors -> little-endian float16 bytes, targets in sorted order."""
    return b"".join(np.asarray(b[k], "<f2").tobytes() for k in sorted(b))


def lora_from_blob(blob: bytes, meta: dict, params: dict) -> tuple[tuple[dict, dict], float]:
    """The adapters both sides code with: (a, full b) float32 and the scale alpha / r."""
    rank, layers = meta["rank"], meta["layers"]
    a = frozen_a(params, meta["targets"], rank, meta["seed"])
    b, off = {}, 0
    for k in sorted(a):
        n_layers, _, d_out = params["layers"][k].shape
        count = layers * rank * d_out
        if layers > n_layers or off + 2 * count > len(blob):
            raise ArchiveError("corrupted archive: LoRA blob does not match its header")
        part = np.frombuffer(blob, "<f2", count=count, offset=off)
        b[k] = part.astype(np.float32).reshape(layers, rank, d_out)
        off += 2 * count
    if off != len(blob):
        raise ArchiveError("corrupted archive: LoRA blob has trailing bytes")
    n_layers = params["layers"][next(iter(a))].shape[0]
    return (a, full_b(b, n_layers)), meta["alpha"] / rank
