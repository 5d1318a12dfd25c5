"""Token log-probs and ranks against numpy (float64 log-softmax, stable-sort ranks), chunking,
ties, padding, gradients, and the model-level wrapper on a tiny random Llama."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from llama_ref import np_forward, random_params
from test_llama import TINY, logits_of

from jaxsel.models import llama
from jaxsel.models.logprobs import sequence_loglik, token_logprobs_and_ranks


def _np_ref(logits, targets):
    """float64 log-softmax at the target and its position in a stable descending sort."""
    lg = np.asarray(logits, np.float64)
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    lp = np.take_along_axis(lg, targets[..., None], -1)[..., 0] - lse
    order = np.argsort(-np.asarray(logits), axis=-1, kind="stable")
    ranks = np.argmax(order == targets[..., None], axis=-1)
    return lp, ranks


@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 10_000])
def test_matches_numpy_with_ties_and_padding(chunk_tokens):
    rng = np.random.default_rng(0)
    b, t, d, v = 3, 11, 8, 50
    hidden = rng.standard_normal((b, t, d)).astype(np.float32)
    head = rng.standard_normal((d, v)).astype(np.float32)
    # Round the logits to a coarse grid so that many tie with the true token's.
    fn = lambda h: jnp.round(h @ head)  # noqa: E731
    targets = rng.integers(0, v, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[1, 6:] = False
    mask[2] = False
    lp, rk = jax.jit(functools.partial(token_logprobs_and_ranks, fn, chunk_tokens=chunk_tokens))(
        hidden, targets, mask
    )
    logits = np.round(hidden @ head)
    ref_lp, ref_rk = _np_ref(logits, targets)
    assert (np.sum(logits == np.take_along_axis(logits, targets[..., None], -1), -1) > 1).any()
    np.testing.assert_allclose(lp, np.where(mask, ref_lp, 0), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(rk, np.where(mask, ref_rk, 0))
    assert rk.dtype == jnp.int32 and lp.dtype == jnp.float32
    s, m = sequence_loglik(lp, mask)
    np.testing.assert_allclose(s, (ref_lp * mask).sum(-1), atol=1e-4)
    np.testing.assert_allclose(m[:2], (ref_lp * mask).sum(-1)[:2] / mask.sum(-1)[:2], atol=1e-5)
    assert float(m[2]) == 0.0


def test_gradient_equals_plain_log_softmax():
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((2, 9, 4)).astype(np.float32)
    head = rng.standard_normal((4, 30)).astype(np.float32)
    targets = rng.integers(0, 30, (2, 9))
    mask = np.ones((2, 9), bool)

    def ours(w):
        lp, _ = token_logprobs_and_ranks(lambda h: h @ w, hidden, targets, mask, with_ranks=False,
                                         chunk_tokens=4)  # fmt: skip
        return lp.sum()

    def plain(w):
        lsm = jax.nn.log_softmax(hidden @ w, axis=-1)
        return jnp.take_along_axis(lsm, targets[..., None], -1).sum()

    np.testing.assert_allclose(jax.grad(ours)(head), jax.grad(plain)(head), atol=1e-5)


def test_model_token_logprobs_match_numpy_forward():
    cfg = TINY
    p = random_params(cfg, seed=5)
    toks = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 15)).astype(np.int32)
    mask = np.ones_like(toks, bool)
    mask[0, 9:] = False
    fn = jax.jit(functools.partial(llama.token_logprobs, with_ranks=True, chunk_tokens=8),
                 static_argnames="cfg")  # fmt: skip
    lp, rk = fn(p, toks, mask, cfg=cfg)
    ref_lp, _ = _np_ref(np_forward(p, toks, cfg)[:, :-1], toks[:, 1:])
    # Ranks from our own float32 logits: float64 ones could reorder near-ties.
    _, ref_rk = _np_ref(np.asarray(logits_of(p, toks, mask, cfg))[:, :-1], toks[:, 1:])
    m = mask[:, 1:]
    np.testing.assert_allclose(np.where(m, lp, 0), np.where(m, ref_lp, 0), atol=1e-4)
    np.testing.assert_array_equal(np.where(m, rk, 0), np.where(m, ref_rk, 0))
