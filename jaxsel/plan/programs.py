"""The programs a jaxsel job runs, as jaxsel's own jitted functions (the ones the methods call)
with abstract inputs of the job's shapes, dtypes and shardings: never data, never weights.

Each builder returns a `Program`: the jitted function and its arguments, how many steps the job
takes, and the arithmetic of its arguments (bytes split over the `data` axis, bytes every device
holds), which decides before compiling whether a program can fit at all (an m x m Gram matrix
at m = 1e8 is refused by arithmetic, not by the compiler) and is checked against the compiled
program's own argument bytes afterwards (a pool or batch axis that was meant to be split but is
replicated shows as arguments per device far above the split share).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsel import parallel
from jaxsel.errors import InputError
from jaxsel.models.llama import LlamaConfig
from jaxsel.plan.chips import PlanError

INT32_MAX = 2**31 - 1

# Llama-family shapes by name (nothing is downloaded: the params are abstract).
# SmolLM2-135M: the embedded GGUF's config (`jaxsel.models.loaders.load_smollm2`); the 1B and
# 8B are Llama-3.2-1B and Llama-3.1-8B's published config.json shapes.
_LLAMA3 = dict(rope_theta=5e5, rms_eps=1e-5, max_position=131072)
_LLAMA3_ROPE = (
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 8192),
    ("rope_type", "llama3"),
)
MODELS = {
    "smollm2-135m": LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
        num_kv_heads=3, head_dim=64, rope_theta=1e5, rms_eps=1e-5, tie_embeddings=True,
        max_position=8192,
    ),
    "llama-1b": LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, tie_embeddings=True,
        rope_scaling=(("factor", 32.0), *_LLAMA3_ROPE), **_LLAMA3,
    ),
    "llama-8b": LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
        num_heads=32, num_kv_heads=8, head_dim=128, tie_embeddings=False,
        rope_scaling=(("factor", 8.0), *_LLAMA3_ROPE), **_LLAMA3,
    ),
}  # fmt: skip
METHODS = ("gip", "embed", "ppl", "lamdas", "train", "finezip", "all")


@dataclasses.dataclass(frozen=True)
class Job:
    """The shapes of a job to plan (the `jaxsel plan` flags)."""

    method: str
    pool_size: int
    dim: int = 384
    k: int = 1000
    model: str = "smollm2-135m"
    seq_len: int = 512
    batch_size: int | None = None  # None: the method's own default
    dtype: str = "float32"
    mode: str | None = None
    algorithm: str | None = None
    form: str = "matrix-free"
    queries: int = 1
    target_size: int = 164  # LAMDAS reference texts (HumanEval's 164 problems)
    context: int = 2048  # FineZip KV-cache positions

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(
                f"the planner covers the methods {', '.join(METHODS)}; not {self.method!r}"
            )
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name in ("pool_size", "dim", "k", "seq_len", "queries", "target_size", "context"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be a positive integer, got {self.batch_size}")

    @property
    def cfg(self) -> LlamaConfig:
        return dataclasses.replace(MODELS[self.model], dtype=self.dtype)


class Program(NamedTuple):
    name: str
    fn: Callable | None  # jaxsel's jitted function (None: refused before compiling)
    args: tuple  # abstract arguments, statics in place
    steps: int  # steps of the job (greedy steps, batches, optimizer steps, decode steps)
    steps_per_call: int  # steps inside one call of fn (GIP's greedy loop: k)
    split_bytes: float  # bytes of the arguments split over the data axis (all devices together)
    replicated_bytes: float  # bytes of the arguments every device holds
    devices: int  # devices of its mesh
    host: dict  # per-host quantities of the job (host RAM, input rates)
    refused: str | None = None  # why it cannot fit, by arithmetic alone
    rows: int = 0  # rows (texts, segments) per call, for host input rates
    row_tokens: int = 0  # tokens per row
    feedback: tuple[int, int] | None = None  # (donated argument, the output that replaces it)

    @property
    def expected_argument_bytes(self) -> float:
        """Per device: the split share plus the replicated part."""
        return self.split_bytes / self.devices + self.replicated_bytes


# -------------------------------------------------------------------------------- helpers


def nbytes(tree) -> float:
    return float(
        sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))
    )


def abstract(tree, sharding):
    """ShapeDtypeStructs of `tree`'s leaves with one sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def llama_params(cfg: LlamaConfig) -> dict:
    """Abstract params of `jaxsel.models.llama` (its documented layout), in the compute dtype as
    the loaders store them."""
    L, D, F, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    shapes = {
        "embed": (V, D),
        "layers": {
            "attn_norm": (L, D),
            "wq": (L, D, q),
            "wk": (L, D, kv),
            "wv": (L, D, kv),
            "wo": (L, q, D),
            "mlp_norm": (L, D),
            "w_gate": (L, D, F),
            "w_up": (L, D, F),
            "w_down": (L, F, D),
        },
        "final_norm": (D,),
    }
    if not cfg.tie_embeddings:
        shapes["lm_head"] = (D, V)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, cfg.compute_dtype),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _rows(job: Job, default: int, data: int) -> int:
    """Rows per call: the batch size (the method's default unless given) rounded up to a
    multiple of the data axis, as jaxsel rounds it."""
    return parallel.round_up(job.batch_size or default, data)


def _check_rows(rows: int, length: int, what: str) -> None:
    if rows * length > INT32_MAX:
        raise PlanError(
            f"{what}: a batch of {rows} x {length} tokens overflows int32 indexing "
            f"({rows * length:,} > {INT32_MAX:,}); lower --batch-size"
        )


def _gb(x: float) -> str:
    return f"{x / 1e9:,.3g} GB"


def _refuse_replicated(replicated: float, capacity: float, what: str) -> str | None:
    if replicated > capacity:
        return f"{what}: {_gb(replicated)} on every device > {_gb(capacity)} HBM"
    return None


def _lm_host(mesh, rows: int, real: int, length: int, docs: int) -> dict:
    """What one host of the mesh handles: its share of the documents and of every call's rows;
    `real` of the `rows` rows of a call carry a text (jaxsel rounds a batch of `real` texts up
    to a multiple of the data axis with empty rows)."""
    hosts = len({d.process_index for d in mesh.devices.flat})
    return {
        "docs_per_host": -(-docs // hosts),
        "rows_per_step": rows,
        "padding_rows_per_step": rows - real,
        "tokens_per_host_per_step": real * length // hosts,
    }


# ------------------------------------------------------------------------------------ GIP


def gip(job: Job, mesh, capacity: float, label: str = "") -> Program:
    """`jaxsel.methods.gip._compiled`: the whole greedy selection (k steps) in one call, F's pool
    axis split over `data` (padded to a multiple of it, pad columns never selected)."""
    from jaxsel.methods import gip as G

    m, d = job.pool_size, job.dim
    data = parallel.data_size(mesh)
    has_scores = job.mode == "ma"
    mode, algorithm = G._check_settings(
        job.k, m, 1e-6, job.mode, job.algorithm, job.form, has_scores
    )
    m_pad = parallel.round_up(m, data)
    if m_pad > INT32_MAX:
        raise PlanError(
            f"gip: a pool of {m:,} items overflows GIP's int32 pool indices (max {INT32_MAX:,})"
        )
    if m < data:
        raise PlanError(
            f"gip: a pool of {m} items does not divide over {data} devices (each device needs "
            "at least one pool column); plan a smaller topology"
        )
    pool = parallel.sharding("embed", "pool", mesh=mesh)
    args = [
        jax.ShapeDtypeStruct((d, m_pad), jnp.float32, sharding=pool),
        jax.ShapeDtypeStruct((m_pad,), jnp.bool_, sharding=parallel.sharding("pool", mesh=mesh)),
    ]
    if has_scores:
        args.append(jax.ShapeDtypeStruct((job.queries, m_pad), jnp.float32, sharding=pool))
    split = nbytes(args)
    what = "diversity" if mode == "diversity" else f"{algorithm}/{mode}"
    name = f"gip {what} {job.form}{label}"
    refused = None
    if split / data > capacity:
        refused = f"{name}: F's share is {_gb(split / data)} per device > {_gb(capacity)} HBM"
    if job.form == "gram":
        phi = 4.0 * m_pad * m_pad
        if phi / data > capacity:
            refused = (
                f"{name}: Φ = FᵀF needs {m:,}² x 4 B = {phi:.3g} bytes ({_gb(phi / data)} per "
                f"device) > {_gb(capacity)} HBM; the matrix-free form computes Φ rows from F"
            )
    # Every process of a jaxsel job holds the whole [m, d] float32 matrix memory-mapped
    # (`gip._embed_pool` gathers it into each) and reads the columns of its own chips.
    mesh_hosts = len({dev.process_index for dev in mesh.devices.flat})
    host = {
        "embeddings_file_bytes": 4.0 * m * d,
        "embeddings_read_per_host": 4.0 * m * d / mesh_hosts,
    }
    fn = None if refused else G._compiled(mesh, mode, algorithm, job.form, job.k, 1e-6)
    return Program(name, fn, tuple(args), job.k, job.k, split, 0.0, data, host, refused)


# ---------------------------------------------------------------------------- LM scoring


def _scoring(job, mesh, capacity, name, reducer, adapter, default_batch) -> Program:
    """`jaxsel.lm.score.reducer_fn`: one scoring call of `rows` texts padded to the largest
    token bucket of --seq-len (texts of the full length: the slowest case), params and adapter
    replicated, rows split over `data`, rows reduced in `train.row_groups` groups."""
    from jaxsel.lm import score, train

    cfg = job.cfg
    train.check_context(cfg, job.seq_len, name)
    data = parallel.data_size(mesh)
    rows = _rows(job, default_batch, data)
    length = train.token_buckets(job.seq_len)[-1]
    _check_rows(rows, length, name)
    groups = train.row_groups(rows, length, data, train.MICRO_TOKENS)
    rep = parallel.replicated(mesh)
    table = parallel.sharding("batch", "seq", mesh=mesh)
    params = abstract(llama_params(cfg), rep)
    adapter = None if adapter is None else abstract(adapter, rep)
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=table)
    mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_, sharding=table)
    replicated = nbytes(params) + nbytes(adapter)
    refused = _refuse_replicated(replicated, capacity, f"{name}: params replicated")
    fn = None if refused else score.reducer_fn(reducer, cfg, mesh)
    batch = job.batch_size or default_batch
    steps = -(-job.pool_size // batch)
    return Program(
        name,
        fn,
        (params, adapter, tokens, mask, groups),
        steps,
        1,
        nbytes((tokens, mask)),
        replicated,
        data,
        _lm_host(mesh, rows, batch, length, job.pool_size),
        refused,
        rows,
        length,
    )


def _prefix(cfg: LlamaConfig, prefix_len: int):
    """A LAMDAS prefix's shapes (`kernels.lamdas.random_prefix`)."""
    from jaxsel.kernels import lamdas

    return jax.eval_shape(lambda: lamdas.random_prefix(jax.random.key(0), cfg, prefix_len))


def ppl(job, mesh, capacity) -> Program:
    from jaxsel.lm import score
    from jaxsel.methods import ppl as P

    default = P.Config().batch_size
    return _scoring(job, mesh, capacity, "ppl score", score.sum_logprob, None, default)


def lamdas_score(job, mesh, capacity) -> Program:
    """LAMDAS scoring: both terms of the ratio in one call over a doubled batch."""
    from jaxsel.kernels import lamdas as K
    from jaxsel.methods import lamdas as L

    config = L.Config()
    prefix = _prefix(job.cfg, config.prefix_len)
    return _scoring(
        job, mesh, capacity, "lamdas score", K.paired_sums, prefix, config.score_batch_size
    )


# ------------------------------------------------------------------------------- training


def _training(job, mesh, capacity, name, adapter, tconfig, steps) -> Program:
    """`jaxsel.lm.train.step_fn`: one optimizer step on a batch of `rows` sequences padded to the
    largest token bucket of the training length; state and params replicated, the batch split
    over `data` (gradients all-reduced over it)."""
    from jaxsel.lm import train

    cfg = job.cfg
    train.check_context(cfg, tconfig.max_tokens, name)
    data = parallel.data_size(mesh)
    rows = parallel.round_up(tconfig.batch_size, data)
    length = train.token_buckets(tconfig.max_tokens)[-1]
    _check_rows(rows, length, name)
    groups = train.row_groups(rows, length, data, tconfig.micro_tokens)
    rep = parallel.replicated(mesh)
    table = parallel.sharding("batch", "seq", mesh=mesh)
    tx = train.make_optimizer(tconfig.optimizer_key())
    state = jax.eval_shape(functools.partial(train.init_train_state, tx=tx), adapter)
    state, params = abstract(state, rep), abstract(llama_params(cfg), rep)
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=table)
    mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_, sharding=table)
    replicated = nbytes(params) + nbytes(state)
    refused = _refuse_replicated(replicated, capacity, f"{name}: params + adapter + Adam state")
    fn = None if refused else train.step_fn(cfg, mesh, tconfig.optimizer_key())[1]
    return Program(
        name,
        fn,
        (state, params, tokens, mask, groups),
        steps,
        1,
        nbytes((tokens, mask)),
        replicated,
        data,
        _lm_host(mesh, rows, tconfig.batch_size, length, steps * tconfig.batch_size),
        refused,
        rows,
        length,
        feedback=(0, 0),
    )


def lamdas_train(job, mesh, capacity) -> Program:
    """Prefix tuning (LAMDAS eq. 1): its default epochs and batch over --target-size reference
    texts."""
    from jaxsel.methods import lamdas as L

    config = L.Config(max_tokens=job.seq_len)  # (--batch-size is the scoring batch)
    tconfig = L._train_config(config)
    adapter = _prefix(job.cfg, config.prefix_len)
    steps = config.epochs * -(-job.target_size // tconfig.batch_size)
    return _training(job, mesh, capacity, "lamdas prefix train", adapter, tconfig, steps)


def downstream_train(job, mesh, capacity, full: bool) -> Program:
    """Downstream fine-tuning (`jaxsel downstream`): a LoRA (its default rank and targets) or
    full fine-tuning (`--full`), one pass over --pool-size sequences of --seq-len tokens."""
    from jaxsel.downstream import DownstreamConfig
    from jaxsel.lm import adapters
    from jaxsel.models import llama

    batch = {"batch_size": job.batch_size} if job.batch_size else {}
    tokens = job.pool_size * job.seq_len
    dc = DownstreamConfig(tokens=tokens, seq_len=job.seq_len, full=full, **batch)
    params = llama_params(job.cfg)
    if full:
        adapter = jax.eval_shape(adapters.init_full, params)
    else:
        adapter = jax.eval_shape(
            lambda: llama.init_lora(
                jax.random.key(dc.seed), params, job.cfg, dc.rank, dc.alpha, dc.targets
            )
        )
    name = "train full" if full else f"train lora r{dc.rank}"
    return _training(job, mesh, capacity, name, adapter, dc.train_config(), dc.steps)


# -------------------------------------------------------------------------------- embed


def embed(job, mesh, capacity) -> Program:
    """`jaxsel.models.embed._embed_fn`: MiniLM (all-MiniLM-L6-v2's shape) over one batch of
    texts at the largest token bucket (256 tokens), params replicated, rows split."""
    from jaxsel.batching import bucket_lengths
    from jaxsel.models import bert
    from jaxsel.models import embed as E

    cfg = bert.BertConfig(30522, 384, 1536, 6, 12, 512, 2, 1e-12, "gelu", job.dtype)
    data = parallel.data_size(mesh)
    rows = _rows(job, 32, data)
    length = bucket_lengths(bert.DEFAULT_MAX_TOKENS)[-1]
    _check_rows(rows, length, "embed")
    rep = parallel.replicated(mesh)
    table = parallel.sharding("batch", "seq", mesh=mesh)
    params = abstract(_bert_params(cfg), rep)
    tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32, sharding=table)
    mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_, sharding=table)
    replicated = nbytes(params)
    refused = _refuse_replicated(replicated, capacity, "embed: params replicated")
    return Program(
        "embed minilm",
        None if refused else E._embed_fn(cfg, mesh),
        (params, tokens, mask),
        -(-job.pool_size // (job.batch_size or 32)),
        1,
        nbytes((tokens, mask)),
        replicated,
        data,
        _lm_host(mesh, rows, job.batch_size or 32, length, job.pool_size),
        refused,
        rows,
        length,
    )


def _bert_params(cfg) -> dict:
    """Abstract params of `jaxsel.models.bert` (the layout `bert.params_from_hf` builds)."""
    d, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    shapes = {
        "embed": {
            "word": (cfg.vocab_size, d),
            "position": (cfg.max_position, d),
            "token_type": (cfg.type_vocab_size, d),
            "norm_scale": (d,),
            "norm_bias": (d,),
        },
        "layers": {
            "wqkv": (n, d, 3 * d),
            "bqkv": (n, 3 * d),
            "wo": (n, d, d),
            "bo": (n, d),
            "attn_norm_scale": (n, d),
            "attn_norm_bias": (n, d),
            "w_in": (n, d, f),
            "b_in": (n, f),
            "w_out": (n, f, d),
            "b_out": (n, d),
            "mlp_norm_scale": (n, d),
            "mlp_norm_bias": (n, d),
        },
    }
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


# ------------------------------------------------------------------------------ FineZip


def finezip(job, mesh, capacity) -> Program:
    """`jaxsel.finezip.engine.compiled_step`: one ring decode step of B segments (FineZip's
    default coder, batch and sliding), the KV cache of --context slots split over `data` with
    the rows, params replicated; --pool-size documents of --seq-len tokens to code."""
    from jaxsel.finezip import coders, engine
    from jaxsel.finezip.api import FineZipConfig
    from jaxsel.models import llama

    cfg = job.cfg
    fz = FineZipConfig(
        context=job.context, **({"batch_size": job.batch_size} if job.batch_size else {})
    )
    if fz.context > cfg.max_position:
        raise PlanError(f"finezip: context {fz.context} exceeds the model's {cfg.max_position}")
    data = parallel.data_size(mesh)
    rows = parallel.round_up(fz.batch_size, data)
    _check_rows(rows, fz.context, "finezip")
    coder = coders.get(fz.coder)
    rep = parallel.replicated(mesh)
    params = abstract(jax.eval_shape(llama.unstack_layers, llama_params(cfg)), rep)
    cache = jax.eval_shape(lambda: llama.init_cache(cfg, rows, fz.context, ring=True))
    cache = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        cache,
        engine._cache_shardings(cfg, True, mesh),
    )
    row = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=parallel.sharding("batch", mesh=mesh))
    replicated = nbytes(params)
    name = f"finezip decode {fz.coder} C={fz.context}"
    refused = _refuse_replicated(replicated, capacity, f"{name}: params replicated")
    n_tokens = job.pool_size * job.seq_len
    if n_tokens > INT32_MAX * rows:
        raise PlanError(f"finezip: {n_tokens:,} tokens overflow int32 positions per segment")
    fn = None if refused else engine.compiled_step(cfg, coder, fz.context, True, mesh)
    split = nbytes(cache) - nbytes(cache.pos) + 3 * nbytes(row)
    return Program(
        name,
        fn,
        (params, None, cache, row, row, row),
        -(-n_tokens // rows),
        1,
        split,
        replicated + nbytes(cache.pos),
        data,
        _lm_host(mesh, rows, rows, 1, job.pool_size),
        refused,
        rows,
        1,
        feedback=(2, 0),
    )


def build(job: Job, mesh, capacity: float) -> list[Program]:
    """The programs `job.method` runs (`all`: every method's)."""
    build = {
        "gip": lambda: [gip(job, mesh, capacity)],
        "embed": lambda: [embed(job, mesh, capacity)],
        "ppl": lambda: [ppl(job, mesh, capacity)],
        "lamdas": lambda: [
            lamdas_train(job, mesh, capacity),
            lamdas_score(job, mesh, capacity),
        ],
        "train": lambda: [
            lamdas_train(job, mesh, capacity),
            downstream_train(job, mesh, capacity, full=False),
            downstream_train(job, mesh, capacity, full=True),
        ],
        "finezip": lambda: [finezip(job, mesh, capacity)],
    }
    if job.method == "all":
        return [p for name in METHODS[:-1] for p in build[name]() if not _repeat(name, p)]
    return build[job.method]()


def _repeat(method: str, p: Program) -> bool:
    """`all` plans LAMDAS's prefix training once (under lamdas, not again under train)."""
    return method == "train" and p.name.startswith("lamdas")


__all__ = ["METHODS", "MODELS", "Job", "Program", "build"]
