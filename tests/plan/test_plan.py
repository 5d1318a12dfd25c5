"""`jaxsel plan`: jaxsel's own programs compiled for a TPU topology on the CPU (the libtpu wheel,
no TPU), their per-device arguments checked against the arithmetic of the shapes."""

import math

import jax.numpy as jnp
import pytest

from jaxsel import cli, plan
from jaxsel.plan import chips, programs

TOPOLOGY = "v5e:2x2"  # 4 chips, one host


@pytest.fixture(scope="module")
def topo():
    if not chips.libtpu_available():
        pytest.skip(f"libtpu is not installed, nothing to compile with: {chips.LIBTPU_MISSING}")
    try:
        return chips.load_topology(TOPOLOGY)
    except chips.PlanError as e:
        pytest.skip(f"libtpu cannot load {TOPOLOGY} here: {e}")


def test_gip_splits_the_pool(topo):
    """GIP MP+SC matrix-free: each chip holds its 1/4 of F (and of the valid mask), the greedy
    loop's k steps are counted (XLA counts the loop body once), one all-reduce round per step.
    F's share (157 MB) is larger than a v5e's on-chip memory, so every step reads it from HBM."""
    d, m, k = 384, 4 * 102_400, 64
    job = plan.Job("gip", m, dim=d, k=k)
    (p,) = programs.build(job, chips.slice_mesh(topo), topo.chip.hbm_bytes)
    row = plan.compile_program(p, topo, "slice")
    share = d * m // 4 * 4 + m // 4  # F's float32 columns + the bool mask of this chip
    assert p.expected_argument_bytes == share
    assert row.argument_bytes == pytest.approx(share, rel=1e-3)
    assert row.fits and row.split_ok and row.steps == k and k in row.loop_trips
    # per step one f_sᵀF product over this chip's columns (2 d m / 4 flops), F read once (the
    # scores g = FᵀF·1 before the loop add ~2 steps over k)
    assert row.flops == pytest.approx(2 * d * m / 4, rel=0.1)
    assert row.bytes_accessed == pytest.approx(4 * d * m / 4, rel=0.1)
    assert row.roofline_seconds == pytest.approx(row.step_seconds * k)
    assert row.collectives_per_step.get("all-reduce", 0) >= 1
    once = row.xla_once  # the loop-once counting agrees with XLA's own cost analysis
    assert once["flops_here"] == pytest.approx(once["flops"], rel=0.05)
    assert once["bytes_accessed_here"] == pytest.approx(once["bytes_accessed"], rel=0.1)


def test_lm_scoring_replicates_params_splits_rows(topo):
    """ppl scoring with SmolLM2-135M: every chip holds the whole float32 params (TPU tiles pad
    a few %) and a quarter of the token rows: 64 more rows add a quarter of their bytes per chip
    (replicated rows would add all of them); all 30 layers are counted, ~2 x params flops per
    token."""
    cfg = programs.MODELS["smollm2-135m"]
    params = programs.nbytes(programs.llama_params(cfg))
    assert params == pytest.approx(134.5e6 * 4, rel=0.01)
    rows = {}
    for batch in (64, 128):
        job = plan.Job("ppl", 10_000, seq_len=512, batch_size=batch)
        (p,) = programs.build(job, chips.slice_mesh(topo), topo.chip.hbm_bytes)
        assert p.replicated_bytes == params and (p.rows, p.row_tokens) == (batch, 513)
        rows[batch] = plan.compile_program(p, topo, "slice")
    share = 64 * 513 * (4 + 1) / 4  # int32 tokens + bool mask of 64 rows, a quarter per chip
    added = rows[128].argument_bytes - rows[64].argument_bytes
    assert share <= added <= 1.5 * share  # (tiles pad 513 columns to 640)
    row = rows[64]
    assert params <= row.argument_bytes - share <= 1.03 * params
    assert row.fits and row.split_ok and row.steps == math.ceil(10_000 / 64)
    assert cfg.num_layers in row.loop_trips
    tokens_per_chip = 64 // 4 * 512
    assert row.flops == pytest.approx(2 * params / 4 * tokens_per_chip, rel=0.3)


def test_gram_form_refused_by_arithmetic(topo):
    """Φ = FᵀF at m = 1e8 (4e16 bytes) is refused before anything is compiled."""
    job = plan.Job("gip", 10**8, form="gram")
    (p,) = programs.build(job, chips.slice_mesh(topo), topo.chip.hbm_bytes)
    assert p.fn is None and "Φ" in p.refused and "4e+16 bytes" in p.refused
    assert not plan.compile_program(p, topo, "slice").fits


def test_unknown_topology_is_one_line(capsys):
    code = cli.main(["plan", "--topology", "v9z:2x2", "--method", "gip", "--pool-size", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: unknown topology 'v9z:2x2'") and "v5p:4x4x4" in err[0]


def test_libtpu_missing_names_the_extra(monkeypatch):
    monkeypatch.setattr(chips, "libtpu_available", lambda: False)
    with pytest.raises(chips.PlanError, match=r"pip install 'jaxsel\[tpu\]'"):
        chips.load_topology(TOPOLOGY)


def test_abstract_params_match_the_layout():
    """The planner's shape-only params are `llama.forward`'s tree (eval_shape runs it)."""
    import jax

    from jaxsel.models import llama

    cfg = programs.MODELS["llama-8b"]
    params = programs.llama_params(cfg)
    tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    mask = jax.ShapeDtypeStruct((1, 8), jnp.bool_)
    h = jax.eval_shape(lambda p, t, m: llama.forward(p, t, m, cfg), params, tokens, mask)
    assert h.shape == (1, 8, 4096)
    assert programs.nbytes(params) == pytest.approx(8.03e9 * 4, rel=0.01)
