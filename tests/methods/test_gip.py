"""GIP kernels and method against plain numpy float64 transcriptions and brute force.

Instances use fixed seeds and are checked to be well separated (the gap between the best and the
second-best candidate at every step), so a mismatch is a bug, not a near-tie.
"""

import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsel import parallel
from jaxsel.cli import main
from jaxsel.errors import InputError
from jaxsel.kernels import gip as K
from jaxsel.methods import gip

EPS = 1e-6
MIN_GAP = 1e-7  # relative gap between best and runner-up that every reference step must have


# ------------------------------------------------------------------------ numpy references


def np_mp(f, g, k):
    """Algorithm 1, line by line, float64. f: [d, m], g: [n, m]. Returns (order, gains, gaps)."""
    phi = f.T @ f
    w = g.astype(np.float64).copy()
    order, gains, gaps = [], [], []
    for _ in range(k):
        score = (w**2).sum(axis=0)
        score[order] = -np.inf
        s = int(np.argmax(score))
        top2 = np.sort(score)[-2:]
        gaps.append((top2[1] - top2[0]) / max(abs(top2[1]), 1e-300))
        order.append(s)
        gains.append(score[s])
        rest = np.setdiff1d(np.arange(f.shape[1]), order)
        w[:, rest] -= np.outer(w[:, s], phi[s, rest])
    return np.array(order), np.array(gains), np.array(gaps)


def np_greedy(objective, m, k):
    """Brute-force greedy: each step evaluates objective(S ∪ {j}) for every j ∉ S."""
    order, gains, gaps, value = [], [], [], 0.0
    for _ in range(k):
        vals = np.full(m, -np.inf)
        for j in range(m):
            if j not in order:
                vals[j] = objective(order + [j])
        s = int(np.argmax(vals))
        top2 = np.sort(vals)[-2:]
        gaps.append((top2[1] - top2[0]) / max(abs(top2[1]), 1e-300))
        gains.append(vals[s] - value)
        order.append(s)
        value = vals[s]
    return np.array(order), np.array(gains), np.array(gaps)


def np_captured(phi, g, eps):
    """(F.1) in terms of Φ and G = QᵀF: Σ_i x_iᵀ(Φ_SS + εI)⁻¹x_i with x_i = G[i, S]."""

    def objective(s):
        x = g[:, s]
        return float(np.trace(x @ np.linalg.solve(phi[np.ix_(s, s)] + eps * np.eye(len(s)), x.T)))

    return objective


def np_logdet_gram(phi, eps):
    def objective(s):
        return float(np.linalg.slogdet(phi[np.ix_(s, s)] + eps * np.eye(len(s)))[1])

    return objective


def unit_columns(rng, d, m):
    f = rng.standard_normal((d, m))
    return f / np.linalg.norm(f, axis=0)


def run_kernel(fn, *arrays, k):
    """A kernel on one block, jitted here (the method layer does this in the library)."""
    return jax.jit(functools.partial(fn, k=k))(*arrays)


# --------------------------------------------------------------------- matching pursuit (MP)

MP_CASES = [(20, 8, 1, 5), (50, 16, 3, 12), (64, 64, 2, 30), (97, 10, 4, 40), (33, 5, 1, 33)]


@pytest.mark.parametrize("m, d, n, k", MP_CASES)
def test_mp_both_forms_equal_numpy_algorithm_1(m, d, n, k):
    rng = np.random.default_rng(m * 1000 + d)
    f, g = unit_columns(rng, d, m), rng.standard_normal((n, m))
    ref, ref_gains, gaps = np_mp(f, g, k)
    assert gaps.min() > MIN_GAP
    with jax.enable_x64(True):
        valid = jnp.ones(m, bool)
        for src in (K.Embeddings(jnp.asarray(f)), K.gram(jnp.asarray(f))):
            order, gains = run_kernel(K.matching_pursuit, jnp.asarray(g), valid, src, k=k)
            np.testing.assert_array_equal(order, ref)
            np.testing.assert_allclose(gains, ref_gains, rtol=1e-5)


@pytest.mark.parametrize("m, d, n, k", MP_CASES[:3])
def test_mp_float32_api_sharded_equals_numpy(m, d, n, k):
    rng = np.random.default_rng(7 + m)
    f, g = unit_columns(rng, d, m), rng.standard_normal((n, m))
    ref, ref_gains, gaps = np_mp(f, g, k)
    assert gaps.min() > 1e-4  # float32 needs a wider margin
    for form in gip.FORMS:
        sel = gip.select(f.T, k, scores=g, form=form)  # 8 devices, m padded to a multiple of 8
        np.testing.assert_array_equal(sel.order, ref)
        np.testing.assert_allclose(sel.gains, ref_gains, rtol=1e-4)


def test_self_compression_mode_is_mp_on_gram_row_sums():
    rng = np.random.default_rng(3)
    f = unit_columns(rng, 12, 45)
    g = (f.T @ f).sum(axis=1)[None, :]
    ref, _, gaps = np_mp(f, g, 10)
    assert gaps.min() > 1e-4
    with jax.enable_x64(True):
        np.testing.assert_allclose(K.self_compression_scores(jnp.asarray(f)), g, rtol=1e-5)
    sel = gip.select(f.T, 10, dtype="float64")  # switches x64 on for the call itself
    assert sel.mode == "sc" and sel.algorithm == "mp"
    np.testing.assert_array_equal(sel.order, ref)


# ------------------------------------------------------------------- greedy LR and diversity

LR_CASES = [(15, 20, 1, 6), (40, 12, 3, 12), (60, 30, 2, 25), (25, 25, 4, 25)]


@pytest.mark.parametrize("m, d, n, k", LR_CASES)
def test_greedy_lr_equals_brute_force_greedy(m, d, n, k):
    rng = np.random.default_rng(100 + m)
    f, g = unit_columns(rng, d, m), rng.standard_normal((n, m))
    phi = f.T @ f
    np.fill_diagonal(phi, 1.0)  # unit columns, as the kernel assumes by default
    ref, ref_gains, gaps = np_greedy(np_captured(phi, g, EPS), m, k)
    assert gaps.min() > MIN_GAP
    with jax.enable_x64(True):
        valid = jnp.ones(m, bool)
        for src in (K.Embeddings(jnp.asarray(f)), K.gram(jnp.asarray(f))):
            order, gains = run_kernel(
                functools.partial(K.greedy_lr, eps=EPS), jnp.asarray(g), valid, src, k=k
            )
            np.testing.assert_array_equal(order, ref)
            np.testing.assert_allclose(gains, ref_gains, rtol=1e-5, atol=1e-12)


def test_greedy_lr_on_queries_equals_brute_force_on_trace_surrogate():
    """With G = QᵀF, greedy LR maximises the drop of (4.2) computed from Q itself."""
    rng = np.random.default_rng(5)
    d, m, n, k = 10, 30, 2, 8
    f, q = unit_columns(rng, d, m), rng.standard_normal((d, n))

    def neg_trace(s):
        fs = f[:, s]
        p = fs @ np.linalg.solve(fs.T @ fs + EPS * np.eye(len(s)), fs.T)
        return -float(np.trace(q.T @ (np.eye(d) - p) @ q))

    ref, _, gaps = np_greedy(neg_trace, m, k)
    assert gaps.min() > MIN_GAP
    with jax.enable_x64(True):
        sel = gip.select(f.T, k, scores=q.T @ f, algorithm="lr", eps=EPS, dtype="float64")
    np.testing.assert_array_equal(sel.order, ref)


def test_diversity_equals_brute_force_greedy_logdet():
    rng = np.random.default_rng(11)
    d, m, k = 9, 40, 9
    f = rng.standard_normal((d, m)) * rng.uniform(0.5, 2.0, m)  # distinct norms
    ref, ref_gains, gaps = np_greedy(np_logdet_gram(f.T @ f, EPS), m, k)
    assert gaps.min() > MIN_GAP
    with jax.enable_x64(True):
        for src in (K.Embeddings(jnp.asarray(f)), K.gram(jnp.asarray(f))):
            fn = functools.partial(K.greedy_diversity, eps=EPS, unit_columns=False)
            order, gains = run_kernel(fn, jnp.ones(m, bool), src, k=k)
            np.testing.assert_array_equal(order, ref)
            np.testing.assert_allclose(gains, ref_gains, rtol=1e-5, atol=1e-12)


def test_diversity_api_unit_columns_first_step_is_a_true_tie():
    rng = np.random.default_rng(12)
    f = unit_columns(rng, 8, 30)
    phi = f.T @ f
    np.fill_diagonal(phi, 1.0)
    ref, _, gaps = np_greedy(np_logdet_gram(phi, EPS), 30, 8)
    assert ref[0] == 0 and gaps[1:].min() > 1e-4
    sel = gip.select(f.T, 8, mode="diversity")
    assert sel.algorithm == "diversity"
    np.testing.assert_array_equal(sel.order, ref)


def test_theorem_5_orthogonal_data_selects_top_k_abs_scores():
    rng = np.random.default_rng(2)
    d, m, k = 16, 12, 4
    f = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :m]  # orthonormal columns
    q = rng.standard_normal((d, 1))
    g = (q.T @ f)[0]
    top = np.argsort(-np.abs(g), kind="stable")[:k]
    # The exhaustive optimum of Theorem 1's objective is the top-k |score| set ...
    subsets = np.array(list(itertools.combinations(range(m), k)))
    with jax.enable_x64(True):
        objective = jax.vmap(K.logdet_objective, in_axes=(0, None, None))
        values = jax.jit(objective)(f.T[subsets].transpose(0, 2, 1), q, EPS)
        best = subsets[int(np.argmin(values))]
        for algorithm in gip.ALGORITHMS:  # ... and both greedy algorithms pick it, in order.
            sel = gip.select(f.T, k, scores=g, algorithm=algorithm, dtype="float64")
            np.testing.assert_array_equal(sel.order, top)
    assert set(best) == set(top)


# ------------------------------------------------------------------------------ objectives


def test_objectives_equal_direct_numpy_evaluation():
    rng = np.random.default_rng(4)
    d, k, n, eps = 12, 5, 3, 1e-3
    f_s, q = unit_columns(rng, d, k), rng.standard_normal((d, n))
    p = f_s @ np.linalg.inv(f_s.T @ f_s + eps * np.eye(k)) @ f_s.T
    m_ref = q.T @ (np.eye(d) - p) @ q
    gram = f_s.T @ f_s + eps * np.eye(k)
    want = {
        "logdet": np.linalg.slogdet(m_ref)[1],
        "trace": np.trace(m_ref),
        "captured": np.trace(q.T @ p @ q),
        "diversity": np.linalg.slogdet(gram)[1],
    }
    for dtype, tol in (("float64", 1e-5), ("float32", 1e-4)):
        with jax.enable_x64(dtype == "float64"):
            got = jax.jit(
                lambda fs, qq: {
                    "logdet": K.logdet_objective(fs, qq, eps),
                    "trace": K.trace_objective(fs, qq, eps),
                    "captured": K.captured_energy(fs, qq, eps),
                    "diversity": K.diversity_objective(fs, eps),
                }
            )(jnp.asarray(f_s, dtype), jnp.asarray(q, dtype))
            for name, value in want.items():
                np.testing.assert_allclose(float(got[name]), value, rtol=tol, err_msg=name)


def test_greedy_lr_gains_sum_to_captured_energy():
    rng = np.random.default_rng(8)
    d, m, k = 10, 30, 7
    f, q = unit_columns(rng, d, m), rng.standard_normal((d, 2))
    with jax.enable_x64(True):
        sel = gip.select(f.T, k, scores=q.T @ f, algorithm="lr", eps=EPS, dtype="float64")
        captured = K.captured_energy(jnp.asarray(f[:, sel.order]), jnp.asarray(q), EPS)
    np.testing.assert_allclose(sel.gains.sum(), float(captured), rtol=1e-5)


def test_tikhonov_queries_matrix_free_equal_the_m_by_m_formula():
    rng = np.random.default_rng(6)
    d, m, n, eps = 7, 24, 2, 1e-2
    f, g = unit_columns(rng, d, m), rng.standard_normal((n, m))
    want = f @ np.linalg.solve(f.T @ f + eps * np.eye(m), g.T)  # (3.1) as the paper writes it
    mesh = parallel.data_mesh()
    sharded = jax.jit(
        jax.shard_map(
            functools.partial(K.tikhonov_queries, eps=eps, axis_name=parallel.DATA),
            mesh=mesh,
            in_specs=(parallel.spec("embed", "pool"), parallel.spec("query", "pool")),
            out_specs=jax.P(),
        )
    )
    with jax.enable_x64(True):
        np.testing.assert_allclose(K.tikhonov_queries(f, g, eps), want, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(sharded(f, g), want, rtol=1e-5, atol=1e-12)


# -------------------------------------------------------------------- sharding and compiles


def one_device_mesh():
    return parallel.data_mesh(tuple(jax.devices()[:1]))


@pytest.mark.parametrize(
    "mode, algorithm", [("sc", "mp"), ("ma", "mp"), ("ma", "lr"), ("sc", "lr"), ("diversity", None)]
)
@pytest.mark.parametrize("form", gip.FORMS)
def test_sharded_equals_unsharded(mode, algorithm, form):
    assert jax.device_count() == 8
    rng = np.random.default_rng(9)
    m, d, k = 101, 24, 17  # 101 is padded to 104 on 8 devices
    e = rng.standard_normal((m, d))
    g = rng.standard_normal((3, m)) if mode == "ma" else None
    kw = dict(scores=g, mode=mode, algorithm=algorithm, form=form)
    many = gip.select(e, k, **kw)
    one = gip.select(e, k, mesh=one_device_mesh(), **kw)
    np.testing.assert_array_equal(many.order, one.order)
    np.testing.assert_allclose(many.gains, one.gains, rtol=1e-5, atol=1e-6)
    assert np.all(many.order < m) and np.unique(many.order).size == k


def test_second_call_with_same_shapes_does_not_recompile():
    rng = np.random.default_rng(10)
    gip.select(rng.standard_normal((50, 8)), 6)
    fn = gip._compiled(parallel.data_mesh(), "sc", "mp", "matrix-free", 6, 1e-6)
    size = fn._cache_size()
    gip.select(rng.standard_normal((50, 8)), 6)
    assert fn._cache_size() == size


# ------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "change, msg",
    [
        (lambda e, g: (e.__setitem__(3, 0.0), e)[1], r"embeddings row 3 is zero"),
        (lambda e, g: (e.__setitem__((5, 2), np.nan), e)[1], r"embeddings row 5 is not finite"),
        (lambda e, g: (e.__setitem__((7, 0), np.inf), e)[1], r"embeddings row 7 is not finite"),
        (lambda e, g: e[:, 0], r"must be a non-empty \[m, d\] array, got shape \(20,\)"),
    ],
)
def test_bad_embeddings(change, msg):
    e = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(InputError, match=msg):
        gip.select(change(e, None), 3)


def test_bad_scores_and_settings():
    rng = np.random.default_rng(0)
    e, g = rng.standard_normal((20, 4)), rng.standard_normal((2, 20))
    cases = [
        (dict(scores=g[:, :19]), r"scores have shape \(2, 19\); expected \[n, 20\]"),
        (dict(scores=g.T), r"shape \(20, 2\).*transposed"),
        (dict(scores=np.where(np.arange(20) == 4, np.nan, g)), r"scores\[0, 4\] is not finite"),
        (dict(k=21), r"k=21 is larger than the pool \(20 items\)"),
        (dict(k=0), r"k must be positive, got 0"),
        (dict(k=-2), r"k must be positive, got -2"),
        (dict(k=2.5), r"k must be an integer"),
        (dict(eps=0.0), r"eps must be a positive number, got 0.0"),
        (dict(eps=-1e-3), r"eps must be a positive number"),
        (dict(mode="ma"), r"needs a score matrix"),
        (dict(scores=g, mode="sc"), r"does not use scores"),
        (dict(mode="diversity", algorithm="mp"), r"takes no --algorithm"),
        (dict(algorithm="omp"), r"unknown gip algorithm 'omp'"),
        (dict(form="dense"), r"unknown gip form"),
        (dict(dtype="float16"), r"unknown dtype 'float16'"),
    ]
    for kw, msg in cases:
        kw = {"k": 3, **kw}
        with pytest.raises(InputError, match=msg):
            gip.select(e, kw.pop("k"), **kw)


# -------------------------------------------------------------------------------------- CLI


@pytest.fixture
def tiny_pool(tmp_path):
    rng = np.random.default_rng(1)
    n = 12
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(n))
    )
    np.save(tmp_path / "E.npy", rng.standard_normal((n, 6)).astype(np.float32))
    np.save(tmp_path / "G.npy", rng.standard_normal((2, n)))
    return tmp_path


def _select(tmp, *extra):
    out = tmp / "sel.jsonl"
    rc = main(
        [
            "select",
            "--method",
            "gip",
            "--pool",
            str(tmp / "pool.jsonl"),
            "--target",
            str(tmp / "pool.jsonl"),
            "--embeddings",
            str(tmp / "E.npy"),
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
    )
    return rc, [json.loads(line) for line in out.read_text().splitlines()] if rc == 0 else None


@pytest.mark.parametrize(
    "extra, api",
    [
        ([], {}),
        (["--algorithm", "lr", "--form", "gram"], {"algorithm": "lr", "form": "gram"}),
        (["--mode", "diversity"], {"mode": "diversity"}),
        (["--scores", "G.npy"], {"scores": "G.npy"}),
    ],
)
def test_cli_select_end_to_end(tiny_pool, extra, api):
    extra = [str(tiny_pool / x) if x.endswith(".npy") else x for x in extra]
    rc, recs = _select(tiny_pool, "-k", "4", *extra)
    assert rc == 0
    if "scores" in api:
        api["scores"] = np.load(tiny_pool / api["scores"])
    want = gip.select(np.load(tiny_pool / "E.npy"), 4, **api).order
    assert [r["id"] for r in recs] == [f"d{i}" for i in want]
    assert [r["score"] for r in recs] == [4.0, 3.0, 2.0, 1.0]
    assert all(r["text"].startswith("doc ") for r in recs)


def test_cli_errors(tiny_pool, capsys):
    np.save(tiny_pool / "E.npy", np.ones((11, 6)))
    assert _select(tiny_pool, "-k", "3")[0] == 2
    assert "embeddings of shape (11, 6) for a pool of 12 items" in capsys.readouterr().err
    np.save(tiny_pool / "E.npy", np.ones((12, 6)) * (np.arange(12) != 9)[:, None])
    assert _select(tiny_pool, "-k", "3")[0] == 2
    assert "embeddings row 9 is zero" in capsys.readouterr().err
    np.save(tiny_pool / "E.npy", np.ones((12, 6)))
    assert _select(tiny_pool, "-k", "13")[0] == 2
    assert "k=13 is larger than the pool (12 items)" in capsys.readouterr().err
