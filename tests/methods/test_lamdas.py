"""LAMDAS: both likelihood terms against a float64 numpy forward, the ratio's invariants
(masked prefix -> s = 1, token-initialised prefix = real context), batching/bucketing/sharding
invariance, prefix training (only the prefix moves, NLL falls on real SmolLM2), checkpoints
(resume, restore, fingerprint and settings mismatches, NaN), bad input and the CLI end to end.

The tiny models are random Llama configs written as HF directories (config.json +
model.safetensors + tokenizer.json), so they go through the same loader as users' models."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import tokenizers
from llama_ref import np_forward, random_params, tiny_tokenizer_json
from safetensors.numpy import save_file

from jaxsel import cli, parallel
from jaxsel.batching import pad_rows
from jaxsel.data import Corpus, read_jsonl, write_jsonl
from jaxsel.errors import AssetError, InputError
from jaxsel.kernels import lamdas as K
from jaxsel.lm.train import adapter_nll, init_train_state
from jaxsel.methods import lamdas as M
from jaxsel.models import loaders
from jaxsel.models.llama import LlamaConfig, PrefixKV
from jaxsel.models.tokenizer import Tokenizer

TINY = LlamaConfig(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    rope_theta=10000.0,
    rms_eps=1e-5,
    tie_embeddings=False,
    max_position=256,
)
REF = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "for i in range(10):\n    print(i)\n",
    "def square(x):\n    return x * x\n",
    "while n > 0:\n    n -= 1\n",
]
POOL = [
    "def mul(a, b): return a * b",
    "The quick brown fox jumps over the lazy dog.",
    "x = [i for i in range(3)]",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3,
    "ok",
    "import os\nprint(os.getcwd())\n",
    "GNU GENERAL PUBLIC LICENSE Version 3, 29 June 2007",
]
SMALL = M.Config(prefix_len=4, epochs=2, max_tokens=40, lr=1e-2, batch_size=2, score_batch_size=3)


def write_tiny_dir(path, seed):
    """Random params (tests/llama_ref.py) saved in the HF Llama layout."""
    p = random_params(TINY, seed=seed)
    t = loaders.hf_state_dict(p, TINY)
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text(tiny_tokenizer_json(TINY.vocab_size))
    conf = {
        "model_type": "llama",
        "vocab_size": TINY.vocab_size,
        "hidden_size": TINY.hidden_size,
        "intermediate_size": TINY.intermediate_size,
        "num_hidden_layers": TINY.num_layers,
        "num_attention_heads": TINY.num_heads,
        "num_key_value_heads": TINY.num_kv_heads,
        "head_dim": TINY.head_dim,
        "rope_theta": TINY.rope_theta,
        "rms_norm_eps": TINY.rms_eps,
        "tie_word_embeddings": False,
        "max_position_embeddings": TINY.max_position,
        "bos_token_id": 0,
    }
    (path / "config.json").write_text(json.dumps(conf))
    return path


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lamdas-models")
    return write_tiny_dir(root / "a", 0), write_tiny_dir(root / "b", 1)


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    lm = loaders.load_hf_dir(tiny_dirs[0])
    assert lm.cfg == TINY and lm.tokenizer.bos_id == 0
    return lm


@pytest.fixture(scope="module")
def one_device():
    return parallel.data_mesh(tuple(jax.devices()[:1]))


def _prefix(p_len=5, seed=3):
    rng = np.random.default_rng(seed)
    shape = (TINY.num_layers, p_len, TINY.num_kv_heads, TINY.head_dim)
    return PrefixKV(*(rng.standard_normal(shape).astype(np.float32) for _ in range(2)))


def _np_logprobs(params, seq, prefix=None):
    """float64 log p(seq[t+1] | seq[:t+1] (, prefix)) for one unpadded sequence."""
    lg = np_forward(params, np.array([seq[:-1]]), TINY, prefix=prefix)[0]
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    return lg[np.arange(len(seq) - 1), seq[1:]] - lse


paired = jax.jit(K.paired_logprobs, static_argnames="cfg")


# ---------------------------------------------------------------------------- the two terms


def test_terms_match_float64_reference(tiny, one_device):
    """Both terms of eq. (3), per token, vs the numpy forward with and without the prefix; the
    unconditioned one is the plain model's log-likelihood."""
    prefix = _prefix()
    texts = POOL[:4]
    seqs, cut = tiny.tokenizer.encode_docs(texts, 40)
    assert cut == [False, True, False, True]  # truncated to the first 40 tokens
    tokens, mask = pad_rows(seqs, 4, 41)
    cond, plain = paired(tiny.params, prefix, tokens, mask, cfg=TINY)
    for r, s in enumerate(seqs):
        n = len(s) - 1
        np.testing.assert_allclose(plain[r, :n], _np_logprobs(tiny.params, s), atol=1e-4)
        ref = _np_logprobs(tiny.params, s, (prefix.k, prefix.v))
        np.testing.assert_allclose(cond[r, :n], ref, atol=1e-4)
        assert not np.asarray(cond[r, n:]).any() and not np.asarray(plain[r, n:]).any()
    terms = M.likelihood_terms(
        tiny, prefix, texts, dataclasses.replace(SMALL, max_tokens=40), mesh=one_device
    )
    for r, s in enumerate(seqs):
        diff = _np_logprobs(tiny.params, s, (prefix.k, prefix.v)) - _np_logprobs(tiny.params, s)
        np.testing.assert_allclose(M.ratio_scores(terms)[r : r + 1], np.exp(diff.mean()), 1e-4)
        np.testing.assert_allclose(
            M.ratio_scores(terms, "sum")[r : r + 1], np.exp(diff.sum()), 1e-4
        )
    np.testing.assert_array_equal(terms.n_tokens, [len(s) - 1 for s in seqs])
    np.testing.assert_array_equal(terms.truncated, cut)


def test_masked_prefix_gives_ratio_one(tiny):
    seqs, _ = tiny.tokenizer.encode_docs(POOL[:3], 32)
    tokens, mask = pad_rows(seqs, 3, 33)
    see = np.array([False, True, False])
    cond, plain = paired(tiny.params, _prefix(), tokens, mask, cfg=TINY, conditioned=see)
    cond, plain = np.asarray(cond), np.asarray(plain)
    np.testing.assert_array_equal(cond[~see], plain[~see])  # s == 1 exactly
    assert np.abs(cond[see] - plain[see]).max() > 1e-2


def test_token_init_prefix_is_the_real_context(tiny):
    """With the prefix made from tokens x, log p(y | C) = the plain model's log p(y | x)."""
    tok = tiny.tokenizer
    x = [tok.bos_id, *tok.encode("def f(x):\n    return")]
    y = [tok.bos_id, *tok.encode("print(1)\n")]
    prefix = jax.jit(K.prefix_from_tokens, static_argnames="cfg")(tiny.params, np.array(x), TINY)
    cond, _ = paired(tiny.params, prefix, *pad_rows([y], 1, len(y)), cfg=TINY)
    ref = _np_logprobs(tiny.params, x + y)[len(x) :]
    np.testing.assert_allclose(cond[0], ref, atol=1e-4)


# --------------------------------------------------------- batching, buckets and sharding


def test_bucketed_batches_equal_one_at_a_time(tiny, one_device):
    prefix = _prefix()
    cfg = dataclasses.replace(SMALL, max_tokens=40)
    batched = M.likelihood_terms(tiny, prefix, POOL, cfg, mesh=one_device)
    single = [
        M.likelihood_terms(
            tiny, prefix, [t], dataclasses.replace(cfg, score_batch_size=1), mesh=one_device
        )
        for t in POOL
    ]
    single = jax.tree.map(lambda *rows: np.concatenate(rows), *single)
    np.testing.assert_allclose(np.column_stack(batched), np.column_stack(single), 1e-5, 1e-5)


def test_sharded_equals_unsharded(tiny, one_device):
    assert parallel.data_size() == 8
    prefix = _prefix()
    sharded = M.likelihood_terms(tiny, prefix, POOL, SMALL)
    unsharded = M.likelihood_terms(tiny, prefix, POOL, SMALL, mesh=one_device)
    np.testing.assert_allclose(
        np.column_stack(sharded), np.column_stack(unsharded), rtol=1e-5, atol=1e-5
    )


def test_resumable_scoring(tiny, tmp_path):
    prefix = _prefix()
    cfg = dataclasses.replace(SMALL, shard_size=3)
    full = M.likelihood_terms(tiny, prefix, POOL, cfg, workdir=tmp_path)
    shards = sorted(tmp_path.glob("shard-*.npy"))
    assert len(shards) == 3
    shards[-1].unlink()
    np.testing.assert_array_equal(
        np.column_stack(M.likelihood_terms(tiny, prefix, POOL, cfg, workdir=tmp_path)),
        np.column_stack(full),
    )
    with pytest.raises(InputError, match="another job"):
        M.likelihood_terms(tiny, _prefix(seed=4), POOL, cfg, workdir=tmp_path)


# --------------------------------------------------------------------------------- training


def test_train_step_changes_only_the_prefix(tiny, one_device):
    tx, step = M._train_step_fn(TINY, one_device, 1e-2, 0.1)
    seqs, _ = tiny.tokenizer.encode_docs(REF[:2], 32)
    before = jax.tree.map(np.array, tiny.params)
    state = init_train_state(PrefixKV(*map(np.copy, _prefix())), tx)
    prefix0 = jax.tree.map(np.array, state.prefix)
    state, loss = step(state, tiny.params, *pad_rows(seqs, 2, 33))
    assert np.isfinite(float(loss)) and int(state.step) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, tiny.params), before)
    assert all(
        np.abs(np.asarray(a) - b).max() > 0 for a, b in zip(state.prefix, prefix0, strict=True)
    )


def test_score_trains_and_second_call_does_not_recompile(tiny, tmp_path):
    pool, ref = Corpus.from_texts(POOL), Corpus.from_texts(REF)
    first = M.score(pool, ref, SMALL, lm=tiny, progress=False)
    jitted = (
        M._terms_fn(TINY, parallel.data_mesh()),
        M._train_step_fn(TINY, parallel.data_mesh(), SMALL.lr, SMALL.weight_decay)[1],
    )
    sizes = [f._cache_size() for f in jitted]
    again = M.score(pool, ref, SMALL, lm=tiny, progress=False)
    assert [f._cache_size() for f in jitted] == sizes
    np.testing.assert_array_equal(first.values, again.values)
    assert len(first.meta["train_nll"]) == SMALL.epochs and first.meta["truncated"] == 3
    assert (first.values > 0).all() and np.isfinite(first.values).all()
    # With a workdir, the prefix is checkpointed inside it too (a crashed job resumes both).
    resumable = M.score(pool, ref, SMALL, lm=tiny, progress=False, workdir=tmp_path)
    assert (tmp_path / "prefix" / M.META_FILE).exists() and (tmp_path / "manifest.json").exists()
    np.testing.assert_array_equal(resumable.values, first.values)


def test_checkpoint_resume_restore_and_mismatches(tiny, tiny_dirs, one_device, tmp_path):
    cfg = dataclasses.replace(SMALL, epochs=3)
    ref_prefix, ref_losses = M.train_prefix(tiny, REF, cfg, mesh=one_device)
    d = tmp_path / "prefix"
    M.train_prefix(
        tiny, REF, dataclasses.replace(cfg, epochs=2, prefix_dir=str(d)), mesh=one_device
    )
    prefix, losses = M.train_prefix(
        tiny, REF, dataclasses.replace(cfg, prefix_dir=str(d)), mesh=one_device
    )  # fmt: skip (resumes at epoch 2)
    jax.tree.map(np.testing.assert_array_equal, prefix, ref_prefix)
    assert losses == ref_losses
    loaded = M.load_prefix(d, tiny)
    jax.tree.map(np.testing.assert_array_equal, loaded, ref_prefix)
    np.testing.assert_array_equal(
        np.column_stack(M.likelihood_terms(tiny, loaded, POOL, SMALL)),
        np.column_stack(M.likelihood_terms(tiny, prefix, POOL, SMALL)),
    )
    # Fewer epochs than stored: exactly that epoch's prefix, nothing retrained.
    two, _ = M.train_prefix(tiny, REF, dataclasses.replace(cfg, epochs=2, prefix_dir=str(d)))
    jax.tree.map(np.testing.assert_array_equal, two, M.load_prefix(d, tiny, epoch=2))
    other = loaders.load_hf_dir(tiny_dirs[1])
    with pytest.raises(AssetError, match="another model"):
        M.load_prefix(d, other)
    with pytest.raises(AssetError, match="another model"):
        M.train_prefix(other, REF, dataclasses.replace(cfg, prefix_dir=str(d)))
    with pytest.raises(InputError, match="differs in: lr"):
        M.train_prefix(tiny, REF, dataclasses.replace(cfg, lr=0.5, prefix_dir=str(d)))
    with pytest.raises(InputError, match="differs in: reference"):
        M.train_prefix(tiny, REF[:3], dataclasses.replace(cfg, prefix_dir=str(d)))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    cfg = dataclasses.replace(SMALL, epochs=1, prefix_dir=str(tmp_path))
    good, _ = M.train_prefix(tiny, REF, cfg)
    broken = tiny._replace(params={**tiny.params, "final_norm": tiny.params["final_norm"] * np.nan})
    with pytest.raises(
        InputError, match=r"diverged \(non-finite loss at epoch 2.*epoch 1\) is kept"
    ):
        M.train_prefix(broken, REF, dataclasses.replace(cfg, epochs=3))
    jax.tree.map(np.testing.assert_array_equal, M.load_prefix(tmp_path, tiny), good)


def test_random_init_and_bad_input(tiny, tiny_dirs):
    p, _ = M.train_prefix(tiny, REF, dataclasses.replace(SMALL, init="random", epochs=0))
    assert p.k.shape == (2, 4, 2, 8) and 0.5 < float(np.std(p.k)) < 1.5
    with pytest.raises(InputError, match="reference .* empty"):
        M.train_prefix(tiny, [], SMALL)
    with pytest.raises(InputError, match="reference"):
        M.score(Corpus.from_texts(POOL), None, SMALL, lm=tiny)
    raw = tokenizers.Tokenizer.from_str(tiny_tokenizer_json(TINY.vocab_size))
    no_bos = tiny._replace(tokenizer=Tokenizer(raw, None, None))
    with pytest.raises(InputError, match="no reference text has a token to predict"):
        M.train_prefix(no_bos, ["a", "b"], SMALL)  # one token each, no bos: nothing to predict
    with pytest.raises(InputError, match="exceeds the model's context"):
        M.train_prefix(tiny, REF, dataclasses.replace(SMALL, max_tokens=1000))
    for bad in ({"ratio": "max"}, {"init": "zeros"}, {"prefix_len": 0}, {"lr": float("nan")}):
        with pytest.raises(InputError):
            M.Config(**bad)
    with pytest.raises(InputError, match="no LAMDAS prefix"):
        M.load_prefix(tiny_dirs[0], tiny)


# --------------------------------------------------------------------------- real SmolLM2


def test_training_lowers_reference_nll_on_smollm2(smollm2, one_device):
    from jaxsel.data.defaults import humaneval_target

    ref = humaneval_target().texts[:4]
    cfg = M.Config(prefix_len=8, epochs=2, max_tokens=48, lr=1e-2, batch_size=4)
    seqs, _ = smollm2.tokenizer.encode_docs(ref, cfg.max_tokens)
    batch = pad_rows(seqs, 4, cfg.max_tokens + 1)
    nll = jax.jit(adapter_nll, static_argnames="cfg")
    before = float(nll(M.init_prefix(smollm2, seqs, cfg), smollm2.params, *batch, cfg=smollm2.cfg))
    prefix, losses = M.train_prefix(smollm2, ref, cfg, mesh=one_device)
    after = float(nll(prefix, smollm2.params, *batch, cfg=smollm2.cfg))
    assert losses[0] == pytest.approx(before, rel=1e-4)  # epoch 1 = the loss before its update
    assert losses[1] < losses[0] and after < before - 0.1, (before, losses, after)


# ---------------------------------------------------------------------------------- the CLI


def test_cli_end_to_end(tiny_dirs, tmp_path, capsys):
    write_jsonl(tmp_path / "pool.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(POOL)])
    write_jsonl(tmp_path / "ref.jsonl", [{"id": f"r{i}", "text": t} for i, t in enumerate(REF)])
    common = [
        "select",
        "--method",
        "lamdas",
        "--pool",
        str(tmp_path / "pool.jsonl"),
        "--target",
        str(tmp_path / "ref.jsonl"),
        "--model",
        str(tiny_dirs[0]),
        "--epochs",
        "1",
        "--max-tokens",
        "32",
        "--prefix-len",
        "4",
        "--no-progress",
        "--prefix",
        str(tmp_path / "prefix"),
    ]
    assert cli.main([*common, "--threshold", "1.0", "--out", str(tmp_path / "t.jsonl")]) == 0
    sel = read_jsonl(tmp_path / "t.jsonl")
    scores = [r["score"] for r in sel.records]
    assert all(s > 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    saved = sorted(p.name for p in (tmp_path / "prefix" / "ckpt").iterdir())
    scored = [*common, "--out", str(tmp_path / "s.jsonl")]
    scored[0] = "score"
    assert cli.main(scored) == 0  # reuses the trained prefix
    assert sorted(p.name for p in (tmp_path / "prefix" / "ckpt").iterdir()) == saved
    every = {r["id"]: r["score"] for r in read_jsonl(tmp_path / "s.jsonl", text_field="id").records}
    above = sorted((i for i in every if every[i] > 1.0), key=lambda i: -every[i])
    assert list(sel.ids) == above and scores == pytest.approx([every[i] for i in above])
    other = [str(tiny_dirs[1]) if a == str(tiny_dirs[0]) else a for a in common]
    assert cli.main([*other, "-k", "3", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "another model" in capsys.readouterr().err
