"""Online memorisation (FineZip §3.1): LoRA adapters fine-tuned on the text being compressed.

The adapters travel inside the archive, so their size counts against the ratio. To halve that
size we train only `b` (LoRA-FA, Zhang et al. 2023): `a` is a frozen random projection that both
sides regenerate from a seed with integer-exact arithmetic (Rademacher signs from PCG64 raw bits,
scaled by 1/sqrt(in)), and only `b` of the last `layers` layers is stored, as float16. Both the
compressor and the decompressor code with the *dequantised* adapters (`lora_from_blob`), never
the float32 ones training produced, so quantisation costs a little ratio but never losslessness.

Training is the LM runtime's adapter training (`jaxsel.lm.train`: a teacher-forced forward, fine
here as the adapters are fixed before coding starts) on shuffled minibatches of the chunks, mean
token NLL, Adam; the coding itself stays the incremental `engine.coding_step`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxsel.errors import ArchiveError, InputError
from jaxsel.flags import option
from jaxsel.lm.train import TrainConfig, train_tokens
from jaxsel.models import llama
from jaxsel.models.llama import LlamaConfig, Lora


@dataclasses.dataclass(frozen=True)
class MemorizeConfig:
    """LoRA online memorisation; `steps=0` disables it."""

    steps: int = option(0, "optimizer steps (0: no LoRA)")
    rank: int = option(8, "LoRA rank")
    alpha: float = option(16.0, "LoRA alpha (scale alpha / rank)")
    targets: tuple[str, ...] = option(
        ("wq", "wv"), "projections adapted (wq, wk, wv, wo, w_gate, w_up, w_down)"
    )
    layers: int = option(0, "adapt only the last N layers (0: all)")
    lr: float = option(1e-3, "Adam learning rate")
    batch_size: int = option(
        4, "chunks per optimizer step (rounded up to the data axis)", aliases=("--batch",)
    )
    seed: int = option(0, "seed of the frozen random projection a (stored in the header)")

    def meta(self, n_layers: int) -> dict:
        """The fields the decompressor needs (recorded in the archive header)."""
        return {
            "targets": list(self.targets),
            "rank": self.rank,
            "alpha": self.alpha,
            "layers": self.layers or n_layers,
            "seed": self.seed,
        }


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


def train(
    params: dict,
    cfg: LlamaConfig,
    chunks: np.ndarray,
    lengths: np.ndarray,
    bos: int,
    config: MemorizeConfig,
) -> tuple[dict, list[float]]:
    """Fine-tunes `b` on the chunks with the LM runtime's training loop (`jaxsel.lm`): a LoRA-FA
    adapter (`a` frozen, `b` trained in the last `layers` layers only), Adam, `steps` steps of
    `batch_size` chunks drawn epoch by epoch from a seeded shuffle. chunks: [n, L] int32
    (padded), lengths: [n].

    Returns the trained float32 factors (name -> [layers, r, out]) and the loss per step.
    """
    n_layers = cfg.num_layers
    layers = config.layers or n_layers
    if not 0 < layers <= n_layers or config.rank < 1:
        raise InputError(f"LoRA needs 1 <= layers <= {n_layers} and rank >= 1")
    a = frozen_a(params, config.targets, config.rank, config.seed)
    b = {k: np.zeros((n_layers, config.rank, params["layers"][k].shape[2]), np.float32) for k in a}
    lora = Lora(a, b, config.alpha / config.rank, train_a=False, train_layers=layers)
    seqs = [
        np.concatenate([[bos], c[:n]]).astype(np.int32)
        for c, n in zip(chunks, lengths, strict=True)
    ]
    train_config = TrainConfig(
        lr=config.lr,
        steps=config.steps,
        batch_size=min(config.batch_size, len(chunks)),
        seed=config.seed,
        max_tokens=chunks.shape[1],
    )
    losses: list[float] = []
    lora, _ = train_tokens(
        params,
        cfg,
        lora,
        seqs,
        train_config,
        name="finezip: LoRA",
        on_step=lambda step, loss, state: losses.append(loss),
    )
    return {k: np.asarray(v[n_layers - layers :]) for k, v in lora.b.items()}, losses


# ---------------------------------------------------------------------------- archive blob


def to_blob(b: dict) -> bytes:
    """Trained factors -> little-endian float16 bytes, targets in sorted order."""
    return b"".join(np.asarray(b[k], "<f2").tobytes() for k in sorted(b))


def lora_from_blob(blob: bytes, meta: dict, params: dict) -> Lora:
    """The adapter both sides code with: a, full b (float32) and the static scale alpha / r.
    The blob's length is checked against the model's shapes before `a` is made, so a forged
    rank allocates nothing."""
    rank, layers, targets = meta["rank"], meta["layers"], sorted(meta["targets"])
    n_layers = params["layers"][targets[0]].shape[0]
    d_out = {k: params["layers"][k].shape[2] for k in targets}
    if layers > n_layers or 2 * layers * rank * sum(d_out.values()) != len(blob):
        raise ArchiveError("corrupted archive: LoRA blob does not match its header")
    a = frozen_a(params, targets, rank, meta["seed"])
    b, off = {}, 0
    for k in targets:
        count = layers * rank * d_out[k]
        part = np.frombuffer(blob, "<f2", count=count, offset=off)
        b[k] = part.astype(np.float32).reshape(layers, rank, d_out[k])
        off += 2 * count
    return Lora(a, full_b(b, n_layers), meta["alpha"] / rank)
