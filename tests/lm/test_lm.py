"""The LM runtime: `train_adapter` changes only the (trainable part of the) adapter, for a prefix,
a LoRA and a LoRA-FA restricted to the last layer; `score_texts` with a LoRA equals a float64
numpy forward; length-grouped epochs cover every text once; resume equals an uninterrupted run."""

import functools

import jax
import numpy as np
import optax
import pytest
import tokenizers
from llama_ref import np_forward, random_params, tiny_tokenizer_json
from test_llama import TINY

from jaxsel import parallel
from jaxsel.batching import bucket_lengths, pad_rows
from jaxsel.errors import InputError
from jaxsel.kernels import lamdas as K
from jaxsel.lm import AdapterStore, TrainConfig, score_texts, train_adapter
from jaxsel.lm.train import epoch_batches, init_train_state, row_groups, token_buckets, train_step
from jaxsel.models import llama
from jaxsel.models.loaders import LoadedLM
from jaxsel.models.tokenizer import Tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "the cat sat on the mat",
    "import os\nprint(os.getcwd())\n" * 3,
    "x = [i * i for i in range(10)]",
    "hello",
    "for k, v in d.items():\n    print(k, v)\n",
]


@pytest.fixture(scope="module")
def lm():
    tok = Tokenizer(tokenizers.Tokenizer.from_str(tiny_tokenizer_json(TINY.vocab_size)), 0, 0)
    return LoadedLM(TINY, random_params(TINY, seed=5), tok, "tiny-lm")


def _host(tree):
    return jax.tree.map(np.array, tree)


def _changed(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) > 0


def _lora(lm, **kw):
    lora = llama.init_lora(jax.random.key(2), lm.params, TINY, 4, 8.0, ("wq", "w_down"))
    b = {k: np.full(v.shape, 0.01, np.float32) for k, v in lora.b.items()}
    return llama.Lora(lora.a, b, lora.scale, **kw)


CFG = TrainConfig(lr=1e-2, epochs=2, batch_size=2, max_tokens=30)  # one bucket: one compile


def test_train_adapter_changes_only_the_adapter(lm):
    before = _host(lm.params)
    prefix0 = K.random_prefix(jax.random.key(0), TINY, 3)
    prefix, losses = train_adapter(lm, prefix0, TEXTS, CFG)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert all(_changed(x, y) for x, y in zip(prefix, prefix0, strict=True))

    full0 = _lora(lm)
    full, _ = train_adapter(lm, full0, TEXTS, CFG)
    assert full.scale == full0.scale and full.train_a and full.train_layers == 0
    for k in full0.a:
        assert _changed(full.a[k], full0.a[k]) and _changed(full.b[k], full0.b[k])

    # LoRA-FA on the last layer: `a` and the first layer's `b` bit-for-bit unchanged.
    fa0 = _lora(lm, train_a=False, train_layers=1)
    fa, _ = train_adapter(lm, fa0, TEXTS, CFG)
    for k in fa0.a:
        np.testing.assert_array_equal(fa.a[k], fa0.a[k])
        np.testing.assert_array_equal(fa.b[k][0], fa0.b[k][0])
        assert _changed(fa.b[k][1], fa0.b[k][1])
    # The frozen model is never touched.
    jax.tree.map(np.testing.assert_array_equal, _host(lm.params), before)


@pytest.mark.parametrize("batch_size, micro_tokens, groups", [(3, 512, 1), (16, 1, 2)])
def test_score_texts_with_lora_equals_numpy(lm, batch_size, micro_tokens, groups):
    # (16, 1): 16 rows over 8 devices reduced in 2 interleaved row groups, one after the other
    data = parallel.data_size(parallel.data_mesh())
    assert row_groups(parallel.round_up(batch_size, data), 16, data, micro_tokens) == groups
    lora, _ = train_adapter(lm, _lora(lm), TEXTS, TrainConfig(lr=1e-2, epochs=1, max_tokens=30))
    res = score_texts(
        lm, lora, TEXTS, max_tokens=12, batch_size=batch_size, micro_tokens=micro_tokens
    )
    for r, text in enumerate(TEXTS):
        ids = [0, *lm.tokenizer.encode(text)[:12]]
        lg = np_forward(lm.params, np.array([ids]), TINY, lora=(lora.a, lora.b, lora.scale))[0]
        lg = lg[:-1]
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        ref = float(np.sum(lg[np.arange(len(ids) - 1), ids[1:]] - lse))
        np.testing.assert_allclose(res.values.total[r], ref, rtol=1e-4, atol=1e-4)
        assert res.n_tokens[r] == len(ids) - 1
        assert res.truncated[r] == (len(lm.tokenizer.encode(text)) > 12)
    assert res.values.total.shape == (len(TEXTS),) and res.truncated.any()


def test_length_grouped_epochs_cover_every_text_once():
    lengths = np.array([5, 40, 7, 33, 12, 9, 50, 3, 22, 18, 41])
    cfg = TrainConfig(batch_size=2, group=2, seed=3)
    batches = epoch_batches(lengths, cfg, 0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert [len(b) for b in batches].count(1) == 1
    again = epoch_batches(lengths, cfg, 0)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    assert not all(
        np.array_equal(x, y) for x, y in zip(batches, epoch_batches(lengths, cfg, 1), strict=False)
    )
    # inside each window of group * batch_size texts, batches hold neighbours in length order
    flat = epoch_batches(lengths, TrainConfig(batch_size=11, group=1, seed=3), 0)[0]
    assert np.all(np.diff(lengths[flat]) >= 0)


def test_resume_equals_uninterrupted_and_steps(lm, tmp_path):
    lora0 = _lora(lm)
    ref, ref_losses = train_adapter(lm, lora0, TEXTS, CFG)
    ident = {"what": "test"}
    store = AdapterStore(tmp_path, lm.fingerprint, ident)
    train_adapter(
        lm, lora0, TEXTS, TrainConfig(lr=1e-2, epochs=1, batch_size=2, max_tokens=30), store
    )
    store.close()
    store = AdapterStore(tmp_path, lm.fingerprint, ident)
    got, losses = train_adapter(lm, lora0, TEXTS, CFG, store)
    store.close()
    jax.tree.map(np.testing.assert_array_equal, got, ref)
    assert losses == ref_losses
    with pytest.raises(InputError, match="differs in: what"):
        AdapterStore(tmp_path, lm.fingerprint, {"what": "other"})
    # steps: exactly that many optimizer steps, across epochs
    seen = []
    train_adapter(
        lm,
        lora0,
        TEXTS,
        TrainConfig(lr=1e-2, steps=5, batch_size=2, max_tokens=30),
        on_step=lambda step, loss, state: seen.append(step),
    )
    assert seen == [1, 2, 3, 4, 5]


def test_buckets_and_row_groups():
    assert token_buckets(512) == (32, 48, 64, 96, 128, 192, 256, 384, 512, 513)
    assert token_buckets(40) == (32, 41)
    assert bucket_lengths(513, 32) == (32, 64, 128, 256, 512, 513)  # without halves: unchanged
    # the fewest groups (dividing rows per device) of at most micro_tokens padded tokens
    assert [row_groups(4, t, 1, 1024) for t in (128, 256, 384, 513)] == [1, 1, 2, 4]
    assert row_groups(16, 128, 8, 1024) == 2 and row_groups(8, 513, 8, 1024) == 1
    assert row_groups(12, 64, 2, 100) == 6  # never fits: one row per device


@pytest.mark.parametrize("devices", [1, 8])
def test_row_groups_and_remat_leave_the_step_unchanged(lm, devices):
    """A step whose rows are split into groups (summed gradients in a scan, remat layers) moves
    the adapter as a plain whole-batch gradient does; plain SGD with lr 1 exposes the gradient."""
    mesh = parallel.data_mesh(tuple(jax.devices()[:devices]))
    seqs = [[0, *lm.tokenizer.encode(t)[:30]] for t in TEXTS * 3][:16]
    tokens, mask = pad_rows(seqs, 16, 31)
    prefix = K.random_prefix(jax.random.key(1), TINY, 3, 0.5)

    def plain_nll(adapter):
        lp, _ = llama.token_logprobs(lm.params, tokens, mask, TINY, prefix=adapter)
        return -lp.sum() / mask[:, 1:].sum()

    loss0, grad = jax.value_and_grad(plain_nll)(prefix)
    tx = optax.sgd(1.0)
    rows = parallel.sharding("batch", "seq", mesh=mesh)
    tokens, mask = jax.device_put((tokens, mask), rows)
    for groups in (1, 2, 16 // devices):
        step = jax.jit(functools.partial(train_step, cfg=TINY, tx=tx), static_argnums=4)
        state, loss = step(init_train_state(prefix, tx), lm.params, tokens, mask, groups)
        np.testing.assert_allclose(float(loss), float(loss0), rtol=1e-5)
        for new, old, g in zip(state.adapter, prefix, grad, strict=True):
            np.testing.assert_allclose(np.asarray(old) - np.asarray(new), g, rtol=1e-4, atol=1e-6)


def test_adapter_store_is_a_verified_store_and_refuses_an_old_format(tmp_path, caplog):
    """An epoch commits under the verified store's tag (recomputed here by hand from the record
    and the checkpoint's files); a byte changed in it fails verification and the epoch is
    dropped; a directory of the previous format (its own sha256) is refused in one line."""
    import hashlib
    import json
    import logging

    from jaxsel.errors import AssetError
    from jaxsel.lm.store import FORMAT, AdapterRecord

    ident = {"lr": 0.01, "texts": "abc"}
    store = AdapterStore(tmp_path / "a", "model-fp", ident, "lora.json", "LoRA")
    assert store.meta == AdapterRecord(FORMAT, "model-fp", ident) and store.identity == ident
    store.save(1, {"x": np.arange(4.0)}, [0.5])
    store.close()
    record = json.dumps({"format": FORMAT, "model": "model-fp", "train": ident}, sort_keys=True)
    files = hashlib.sha256()
    root = tmp_path / "a" / "ckpt" / "1"
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        for part in (p.relative_to(root).as_posix().encode(), p.read_bytes()):
            files.update(len(part).to_bytes(8, "little") + part)
    job = hashlib.sha256(record.encode()).hexdigest().encode()
    want = hashlib.sha256(job + b"\0ckpt-1\0" + files.digest()).hexdigest()[:32]
    assert (tmp_path / "a" / "ckpt-1.sha256").read_text() == want
    assert json.loads((tmp_path / "a" / "lora.json").read_text()) == json.loads(record)
    reader = AdapterStore(tmp_path / "a", "model-fp", None, "lora.json", "LoRA")
    assert reader.verified(3) == 1 and reader.identity == ident
    big = max(root.rglob("*"), key=lambda q: q.stat().st_size if q.is_file() else -1)
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 1
    big.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert reader.verified(3) is None
    assert "retraining epoch 1" in caplog.text and not (tmp_path / "a" / "ckpt-1.sha256").exists()
    reader.close()
    with pytest.raises(AssetError, match="another model"):
        AdapterStore(tmp_path / "a", "other-fp", None, "lora.json", "LoRA")
    # a directory written before (format 2): never retrained over, never misread
    old = tmp_path / "old"
    old.mkdir()
    (old / "lora.json").write_text(json.dumps({"format": 2, "model": "model-fp", "train": ident}))
    for identity in (ident, None):
        with pytest.raises(InputError, match=r"lora\.json: a LoRA directory of format 2") as e:
            AdapterStore(old, "model-fp", identity, "lora.json", "LoRA")
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in old.iterdir()) == ["lora.json"]


def test_schedule_is_the_optimizers_learning_rate():
    """`make_schedule` against closed forms, and against the step AdamW takes: with the same
    gradient g every step, Adam's bias-corrected moments are g and g², so step i moves a leaf
    by exactly -lr_i * g / (|g| + eps)."""
    from jaxsel.lm.train import make_optimizer, make_schedule

    cos = TrainConfig(lr=2e-3, steps=10, schedule="cosine", warmup_steps=2).optimizer_key()
    lr = make_schedule(cos)
    assert float(lr(0)) == 0.0 and float(lr(1)) == pytest.approx(1e-3)
    assert float(lr(2)) == pytest.approx(2e-3) and float(lr(10)) == pytest.approx(0.0, abs=1e-12)
    assert float(lr(6)) == pytest.approx(1e-3)  # half-way through the decay: (1 + cos(pi/2)) / 2
    const = TrainConfig(lr=1e-3).optimizer_key()
    assert [float(make_schedule(const)(i)) for i in (0, 7)] == pytest.approx([1e-3, 1e-3])
    for key in (cos, const):
        tx, g = make_optimizer(key), {"w": np.array([0.5, -2.0], np.float32)}
        state = tx.init({"w": np.zeros(2, np.float32)})
        for i in range(5):
            upd, state = tx.update(g, state, {"w": np.zeros(2, np.float32)})
            want = -float(make_schedule(key)(i)) * g["w"] / (np.abs(g["w"]) + 1e-8)
            # composed tolerance: optax's bias correction 1 - 0.999**t is float32 (1.3e-5 off)
            np.testing.assert_allclose(upd["w"], want, rtol=1e-4, atol=1e-12)


def test_lora_training_equals_torch_peft():
    """`jaxsel downstream`'s LoRA step (the jitted `step_fn`, AdamW, cosine schedule) against an
    independent trainer: transformers' Llama with peft's LoRA on q/k/v/o from the same start,
    torch's AdamW at `make_schedule`'s learning rate, the same batches: the same losses and
    the same trained LoRA matrices, to float32 rounding (what experiments/bench/lora.py times)."""
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxsel.lm.train import make_schedule, step_fn
    from jaxsel.models.loaders import hf_state_dict

    params = random_params(TINY, seed=3)
    conf = transformers.LlamaConfig(
        vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size,
        intermediate_size=TINY.intermediate_size, num_hidden_layers=TINY.num_layers,
        num_attention_heads=TINY.num_heads, num_key_value_heads=TINY.num_kv_heads,
        head_dim=TINY.head_dim, rms_norm_eps=TINY.rms_eps, max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": TINY.rope_theta},
        tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(conf)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in hf_state_dict(params, TINY).items()})
    names = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj"}
    lora = llama.init_lora(jax.random.key(0), params, TINY, 4, 8.0, tuple(names))
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=[*names.values()])
    model = peft.get_peft_model(model, config).train()
    with torch.no_grad():
        for n, hf in names.items():
            for i in range(TINY.num_layers):
                proj = getattr(model.base_model.model.model.layers[i].self_attn, hf)
                proj.lora_A["default"].weight.copy_(torch.from_numpy(np.array(lora.a[n][i]).T))
                proj.lora_B["default"].weight.copy_(torch.from_numpy(np.array(lora.b[n][i]).T))
    key = TrainConfig(lr=1e-2, steps=6, schedule="cosine", warmup_steps=2).optimizer_key()
    lr = make_schedule(key)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=0.0, weight_decay=0.0
    )
    mesh = parallel.data_mesh(tuple(jax.devices()[:1]))
    tx, step = step_fn(TINY, mesh, key)
    state = init_train_state(_host(lora), tx)
    rng = np.random.default_rng(0)
    for i in range(6):
        tokens = rng.integers(1, TINY.vocab_size, (4, 33)).astype(np.int32)
        state, loss = step(state, params, tokens, np.ones_like(tokens, bool), 2)
        for g in opt.param_groups:
            g["lr"] = float(lr(i))
        x = torch.from_numpy(tokens).long()
        ref = model(input_ids=x, labels=x).loss
        ref.backward()
        opt.step()
        opt.zero_grad()
        assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-5)
    for n, hf in names.items():
        for i in range(TINY.num_layers):
            proj = getattr(model.base_model.model.model.layers[i].self_attn, hf)
            want_b = proj.lora_B["default"].weight.detach().numpy().T
            want_a = proj.lora_A["default"].weight.detach().numpy().T
            np.testing.assert_allclose(state.adapter.b[n][i], want_b, rtol=1e-3, atol=1e-5)
            np.testing.assert_allclose(state.adapter.a[n][i], want_a, rtol=1e-3, atol=1e-5)
            assert _changed(state.adapter.b[n][i], lora.b[n][i])
