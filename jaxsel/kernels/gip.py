"""Greedy Information Projection (GIP) kernels. Pure JAX: no I/O, no jit, no mesh.

Notation of the paper (seed gip.txt): F: [d, m] pool embeddings with unit columns f_j,
G: [n, m] scores (G = QᵀF for queries Q: [d, n]), F_S the selected columns. GIP maximises the
Gaussian mutual information I(QᵀZ; F_SᵀZ), i.e. minimises log det(Qᵀ(I − P_S)Q) (Theorem 1);
the greedy algorithms work on the trace surrogate (4.2), whose maximisation form is (F.1):
Σ_i q_iᵀ F_S(F_SᵀF_S)⁻¹F_Sᵀ q_i.

Pool blocks. Every kernel sees one contiguous block of pool columns (F [d, m_loc],
G [n, m_loc]) and takes `axis_name`: None when the block is the whole pool, or the mesh axis the
pool is split over when run under `jax.shard_map` (jaxsel.methods.gip does that). Global index of
local column j = block number · m_loc + j. A greedy step exchanges O(n + d + k) numbers between
blocks (a max, a min and masked sums that pick one column); the O(md) work stays local.

Φ rows. Greedy steps need Φ[s, :] for the chosen s, Φ = FᵀF. `Gram` holds the block's columns of
Φ (O(m²) memory overall, a lookup per step); `Embeddings` holds F and computes f_sᵀF each step
(O(md) memory and work per step): the form that scales.

Padding and selected columns are `taken`: their gain is -inf, so they are never picked. Ties go
to the lowest global index (jnp.argmax returns the first maximum; blocks are ordered).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import cho_solve, solve_triangular

# On GPUs the default f32 matmul may use TF32 (10-bit mantissa): a greedy argmax over near-equal
# gains then depends on the hardware. Full precision everywhere; on CPU it changes nothing.
_HI = lax.Precision.HIGHEST


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HI)


# ------------------------------------------------------------------- collectives over blocks


def _psum(x, axis_name):
    return x if axis_name is None else lax.psum(x, axis_name)


def _pmax(x, axis_name):
    return x if axis_name is None else lax.pmax(x, axis_name)


def _pmin(x, axis_name):
    return x if axis_name is None else lax.pmin(x, axis_name)


def _offset(m_loc: int, axis_name):
    """Global index of this block's first column."""
    return 0 if axis_name is None else lax.axis_index(axis_name) * m_loc


def _varying(x: jax.Array, axis_name) -> jax.Array:
    """Marks a block-local array built from constants as varying across blocks (shard_map's
    types must match between a loop's carry in and out)."""
    return x if axis_name is None else lax.pcast(x, axis_name, to="varying")


def _take(x: jax.Array, s: jax.Array, offset, axis_name) -> jax.Array:
    """x[..., s] for a global column index s: the owning block contributes it, the others 0."""
    m_loc = x.shape[-1]
    j = s - offset
    col = lax.dynamic_index_in_dim(x, jnp.clip(j, 0, m_loc - 1), x.ndim - 1, keepdims=False)
    return _psum(jnp.where((j >= 0) & (j < m_loc), col, jnp.zeros_like(col)), axis_name)


def _argmax(values: jax.Array, offset, axis_name) -> tuple[jax.Array, jax.Array]:
    """(global index, value) of the largest entry of values [m_loc]; ties → lowest index.

    A max and then a min over the positions holding it: two plain reductions, ~10× faster on
    XLA:CPU than jnp.argmax (a variadic value-index reduction) and the same ties. Values are
    never NaN here (inputs are checked; taken entries are -inf)."""
    best = _pmax(jnp.max(values), axis_name)
    pos = jnp.arange(values.shape[0], dtype=jnp.int32) + offset
    idx = jnp.where(values == best, pos, jnp.iinfo(jnp.int32).max)
    return _pmin(jnp.min(idx), axis_name), best


def _mark(taken: jax.Array, s: jax.Array, offset) -> jax.Array:
    return taken | (jnp.arange(taken.shape[0]) + offset == s)


# ---------------------------------------------------------------------------- Φ row sources


class Gram(NamedTuple):
    """Precomputed Φ = FᵀF, this block's columns: phi [m, m_loc]. Φ is symmetric, so row s of
    the block is Φ[s, block]: a lookup."""

    phi: jax.Array


class Embeddings(NamedTuple):
    """Matrix-free Φ: this block's columns of F, f [d, m_loc]; Φ[s, block] = f_sᵀF_block."""

    f: jax.Array


def gram(f: jax.Array, axis_name=None) -> Gram:
    """The block's columns of Φ = FᵀF: [m, m_loc], computed blockwise (each block its own
    columns, against an all-gathered F of O(md)). Algorithm 1 line 2."""
    f_all = f if axis_name is None else lax.all_gather(f, axis_name, axis=1, tiled=True)
    return Gram(_dot(f_all.T, f))


def phi_row(src: Gram | Embeddings, s: jax.Array, offset, axis_name) -> jax.Array:
    """Φ[s, block]: [m_loc]."""
    if isinstance(src, Gram):
        return lax.dynamic_index_in_dim(src.phi, s, 0, keepdims=False)
    return _dot(_take(src.f, s, offset, axis_name), src.f)


def phi_diag(src: Gram | Embeddings, offset) -> jax.Array:
    """Φ_jj = ‖f_j‖² for the block's columns: [m_loc] (1 for normalised columns)."""
    if isinstance(src, Gram):
        m_loc = src.phi.shape[1]
        return src.phi[jnp.arange(m_loc) + offset, jnp.arange(m_loc)]
    return jnp.sum(src.f * src.f, axis=0)


def _block_dtype(src: Gram | Embeddings):
    return (src.phi if isinstance(src, Gram) else src.f).dtype


# ---------------------------------------------------------------- scores and queries (§3, §5)


def self_compression_scores(f: jax.Array, axis_name=None) -> jax.Array:
    """MP+SC scores g = FᵀF·1 = Fᵀ(F·1), the Gram row sums (§5.1): [1, m_loc]. O(md); Φ is never
    formed. Zero (padding) columns add nothing to F·1."""
    total = _psum(jnp.sum(f, axis=1), axis_name)  # F·1: [d]
    return _dot(total, f)[None, :]


def tikhonov_queries(f: jax.Array, g: jax.Array, eps: float, axis_name=None) -> jax.Array:
    """Q_ε = argmin ‖FᵀQ − Gᵀ‖² + ε‖Q‖² (3.1) = F(FᵀF + εI_m)⁻¹Gᵀ = (FFᵀ + εI_d)⁻¹FGᵀ.

    f: [d, m_loc], g: [n, m_loc] → [d, n]. The push-through identity keeps every matrix d×d or
    d×n: no m×m matrix is formed (DESIGN §3).
    """
    ffT = _psum(_dot(f, f.T), axis_name)
    fgT = _psum(_dot(f, g.T), axis_name)
    chol = jnp.linalg.cholesky(ffT + eps * jnp.eye(f.shape[0], dtype=f.dtype))
    return cho_solve((chol, True), fgT)


# ---------------------------------------------------------- Algorithm 1: matching pursuit (MP)


class MPState(NamedTuple):
    w: jax.Array  # [n, m_loc] residual scores W_ij = r_iᵀf_j (W⁰ = G)
    taken: jax.Array  # [m_loc] bool: selected, or padding that may never be selected
    order: jax.Array  # [k] int32 global indices, in selection order
    gains: jax.Array  # [k] Σ_i W_is² when s was picked: the drop of Σ_i ‖r_i‖² (4.5)
    t: jax.Array  # int32 [], steps taken


def mp_init(g: jax.Array, valid: jax.Array, k: int) -> MPState:
    """g: [n, m_loc] scores; valid: [m_loc] bool (False = padding)."""
    zero = jnp.zeros((), jnp.int32)
    return MPState(g, ~valid, jnp.zeros(k, jnp.int32), jnp.zeros(k, g.dtype), zero)


def mp_step(state: MPState, src: Gram | Embeddings, axis_name=None) -> MPState:
    """One iteration of Algorithm 1."""
    offset = _offset(state.w.shape[1], axis_name)
    score = jnp.where(state.taken, -jnp.inf, jnp.sum(state.w * state.w, axis=0))
    s, gain = _argmax(score, offset, axis_name)  # line 4
    w_s = _take(state.w, s, offset, axis_name)  # [n]
    # Line 7 / (4.6): W ← W − W[:, s] Φ[s, :]. Taken columns are updated too; they are masked.
    w = state.w - w_s[:, None] * phi_row(src, s, offset, axis_name)[None, :]
    return MPState(
        w,
        _mark(state.taken, s, offset),
        state.order.at[state.t].set(s),
        state.gains.at[state.t].set(gain),
        state.t + 1,
    )


def matching_pursuit(
    g: jax.Array, valid: jax.Array, src: Gram | Embeddings, k: int, axis_name=None
) -> tuple[jax.Array, jax.Array]:
    """Greedy MP (Algorithm 1), k steps in one loop. Returns (order [k] int32, gains [k])."""
    state = lax.fori_loop(0, k, lambda _, st: mp_step(st, src, axis_name), mp_init(g, valid, k))
    return state.order, state.gains


# ------------------------------------- Algorithm 2: greedy LR, and greedy log-det (diversity)


class CholState(NamedTuple):
    """Incremental Cholesky of F_SᵀF_S + εI = VVᵀ (Chen et al. 2018; (F.2)-(F.4)).

    For every candidate j, [c_j; d_j] is the row V would get if j were added next:
    c_j = V⁻¹F_Sᵀf_j, d_j² = ‖f_j‖² + ε − ‖c_j‖² (the part of f_j off span(F_S), regularised).
    a_ij = G_ij − c_jᵀz_i with z_i = V⁻¹F_Sᵀq_i, so that adding j raises (F.1) by
    Σ_i a_ij² / d_j² — the exact greedy increment that (F.6) writes loosely.

    Step t appends e_j = (Φ_sj − c_sᵀc_j)/d_s to every c_j (F.3). Its factor is held in one of
    two layouts, after the Φ source:
    - `Gram`: the c_j themselves, [k, m_loc] (Chen et al.'s layout; O(km) memory and work).
    - `Embeddings`: unit directions u_t = (f_s − Σ_τ u_τ c_s,τ)/d_s in R^d, [d, k], for which
      c_j,τ = u_τᵀf_j and so e_j = u_tᵀf_j: the same numbers as one O(md) product per step, as
      cheap as MP, and O(dk) memory. (With ε > 0 the u_τ are the R^d part of an orthonormal
      basis of the columns [f_j; √ε·1_j]; the other part lives on selected items only and never
      meets a candidate, so it is not kept.)
    """

    factor: jax.Array  # Gram: [k, m_loc] Cholesky rows c; Embeddings: [d, k] directions u
    d2: jax.Array  # [m_loc] d_j²
    a: jax.Array  # [n, m_loc] numerators (n = 0 for pure diversity)
    taken: jax.Array  # [m_loc] bool
    order: jax.Array  # [k] int32
    gains: jax.Array  # [k] objective increase of each step
    t: jax.Array  # int32 []


def cholesky_init(
    g: jax.Array,
    valid: jax.Array,
    src: Gram | Embeddings,
    k: int,
    eps: float,
    unit_columns: bool = True,
    axis_name=None,
) -> CholState:
    """`unit_columns`: take Φ_jj = 1 exactly (the paper's normalised F) rather than the rounded
    ‖f_j‖², so that the all-equal first step of diversity greedy is a true tie (→ index 0)."""
    m_loc = valid.shape[0]
    dtype = _block_dtype(src)
    if unit_columns:
        d2 = _varying(jnp.full(m_loc, 1.0 + eps, dtype), axis_name)
    else:
        d2 = phi_diag(src, _offset(m_loc, axis_name)) + eps
    if isinstance(src, Gram):
        factor = _varying(jnp.zeros((k, m_loc), dtype), axis_name)
    else:
        factor = jnp.zeros((src.f.shape[0], k), dtype)  # the same on every block
    g = g.astype(dtype)
    return CholState(
        factor,
        d2,
        _varying(g, axis_name) if g.shape[0] == 0 else g,
        ~valid,
        jnp.zeros(k, jnp.int32),
        jnp.zeros(k, dtype),
        jnp.zeros((), jnp.int32),
    )


def _cholesky_gain(state: CholState, eps: float, diversity: bool) -> jax.Array:
    # d_j² ≥ ε in exact arithmetic; rounding can push it below for f_j in span(F_S).
    d2 = jnp.maximum(state.d2, eps)
    if diversity:
        return jnp.log(d2)  # Δ log det(F_SᵀF_S + εI)
    return jnp.sum(state.a * state.a, axis=0) / d2  # Δ (F.1)


def cholesky_step(
    state: CholState, src: Gram | Embeddings, eps: float, diversity: bool, axis_name=None
) -> CholState:
    """One greedy step on (F.1) (greedy LR) or on log det(F_SᵀF_S + εI) (`diversity`)."""
    offset = _offset(state.taken.shape[0], axis_name)
    gain = jnp.where(state.taken, -jnp.inf, _cholesky_gain(state, eps, diversity))
    s, best = _argmax(gain, offset, axis_name)
    d_s = jnp.sqrt(jnp.maximum(_take(state.d2, s, offset, axis_name), eps))
    # (F.3): e_j = (Φ_sj − c_sᵀc_j) / d_s. At j = s it misses the +ε of the diagonal; s is
    # taken from now on, so its own entries are never read again. Factor columns/rows ≥ t are
    # still zero and add nothing.
    if isinstance(src, Gram):
        c_s = _take(state.factor, s, offset, axis_name)  # [k]
        e = (phi_row(src, s, offset, axis_name) - _dot(c_s, state.factor)) / d_s
        factor = lax.dynamic_update_index_in_dim(state.factor, e, state.t, 0)
    else:
        f_s = _take(src.f, s, offset, axis_name)
        u = (f_s - _dot(state.factor, _dot(f_s, state.factor))) / d_s
        e = _dot(u, src.f)
        factor = lax.dynamic_update_index_in_dim(state.factor, u, state.t, 1)
    z = _take(state.a, s, offset, axis_name) / d_s  # new entry of z_i = V⁻¹F_Sᵀq_i: [n]
    return CholState(
        factor,
        state.d2 - e * e,
        state.a - z[:, None] * e[None, :],
        _mark(state.taken, s, offset),
        state.order.at[state.t].set(s),
        state.gains.at[state.t].set(best),
        state.t + 1,
    )


def _cholesky_greedy(g, valid, src, k, eps, diversity, unit_columns, axis_name):
    def body(_, st):
        return cholesky_step(st, src, eps, diversity, axis_name)

    init = cholesky_init(g, valid, src, k, eps, unit_columns, axis_name)
    state = lax.fori_loop(0, k, body, init)
    return state.order, state.gains


def greedy_lr(
    g: jax.Array,
    valid: jax.Array,
    src: Gram | Embeddings,
    k: int,
    eps: float,
    unit_columns: bool = True,
    axis_name=None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy LR (Algorithm 2): exact greedy on (F.1) with F_SᵀF_S regularised by εI.

    g: [n, m_loc] scores (G = QᵀF), valid: [m_loc]. Returns (order [k] int32, gains [k]), gains
    being the increase of Σ_i q_iᵀF_S(F_SᵀF_S + εI)⁻¹F_Sᵀq_i. `unit_columns`: see
    `cholesky_init`. Per step O(md + dk) work with `Embeddings`, O(mk) with `Gram`.
    """
    return _cholesky_greedy(g, valid, src, k, eps, False, unit_columns, axis_name)


def greedy_diversity(
    valid: jax.Array,
    src: Gram | Embeddings,
    k: int,
    eps: float,
    unit_columns: bool = True,
    axis_name=None,
) -> tuple[jax.Array, jax.Array]:
    """No scores (§3.1, Q = ∅): greedy maximisation of log det(F_SᵀF_S + εI), the fast greedy
    MAP of Chen et al. (2018) with L = Φ. Returns (order [k] int32, gains [k] = Δ log det)."""
    g = jnp.zeros((0, valid.shape[0]), _block_dtype(src))
    return _cholesky_greedy(g, valid, src, k, eps, True, unit_columns, axis_name)


# ------------------------------------------------------------------------------- objectives


def projection_residual(f_s: jax.Array, q: jax.Array, eps: float) -> jax.Array:
    """M = Qᵀ(I − F_S(F_SᵀF_S + εI)⁻¹F_Sᵀ)Q: [n, n] for f_s [d, k], q [d, n].

    Computed as RᵀR + ε XᵀX with X = (F_SᵀF_S + εI)⁻¹F_SᵀQ (Cholesky) and R = Q − F_S X: the
    Tikhonov residual, a sum of two Gram matrices, so M stays positive semi-definite in floating
    point instead of losing it to the cancellation in QᵀQ − QᵀP_SQ.
    """
    a = _dot(f_s.T, f_s) + eps * jnp.eye(f_s.shape[1], dtype=f_s.dtype)
    x = cho_solve((jnp.linalg.cholesky(a), True), _dot(f_s.T, q))
    r = q - _dot(f_s, x)
    return _dot(r.T, r) + eps * _dot(x.T, x)


def logdet_objective(f_s: jax.Array, q: jax.Array, eps: float) -> jax.Array:
    """log det(Qᵀ(I − P_S)Q), Theorem 1 (3.4): minimised by the MI-optimal selection."""
    chol = jnp.linalg.cholesky(projection_residual(f_s, q, eps))
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


def trace_objective(f_s: jax.Array, q: jax.Array, eps: float) -> jax.Array:
    """Tr(Qᵀ(I − P_S)Q), the surrogate (4.2): minimised. ‖Q‖_F² minus it is (F.1)."""
    return jnp.trace(projection_residual(f_s, q, eps))


def diversity_objective(f_s: jax.Array, eps: float) -> jax.Array:
    """log det(F_SᵀF_S + εI), twice the entropy h(F_SᵀZ) up to a constant (§3.1)."""
    a = _dot(f_s.T, f_s) + eps * jnp.eye(f_s.shape[1], dtype=f_s.dtype)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(a))))


def captured_energy(f_s: jax.Array, q: jax.Array, eps: float) -> jax.Array:
    """(F.1): Σ_i q_iᵀF_S(F_SᵀF_S + εI)⁻¹F_Sᵀq_i = ‖V⁻¹F_SᵀQ‖_F², maximised by greedy LR."""
    a = _dot(f_s.T, f_s) + eps * jnp.eye(f_s.shape[1], dtype=f_s.dtype)
    z = solve_triangular(jnp.linalg.cholesky(a), _dot(f_s.T, q), lower=True)
    return jnp.sum(z * z)
