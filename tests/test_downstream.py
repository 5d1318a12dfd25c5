"""Downstream evaluation: fine-tuning SmolLM2 on the held-out target's own domain lowers its CE
more than random pool text (a small real case); token packing, overlap (leak) reports, bad input
and `jaxsel downstream` end to end on a tiny model."""

import json
import logging

import numpy as np
import pytest
from test_lamdas import write_tiny_dir

from jaxsel import cli, downstream
from jaxsel.data import Corpus, write_jsonl
from jaxsel.downstream import DownstreamConfig
from jaxsel.errors import InputError
from jaxsel.models import loaders

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nprint(os.listdir('.'))\n",
    "class A:\n    def f(self):\n        return 1\n",
    "x = [i for i in range(5) if i % 2]\n",
    "with open('f') as fh:\n    data = fh.read()\n",
]
PROSE = [
    "the cat sat on the mat and looked out of the window",
    "it was a bright cold day in april and the clocks were striking",
    "all happy families are alike; each unhappy family is unhappy in its own way",
    "call me ishmael. some years ago, never mind how long precisely",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-ds")
    write_tiny_dir(d, seed=1)
    return d, loaders.load_hf_dir(d)


def test_pack_tokens_equal_budget_rows(tiny):
    _, lm = tiny
    rows, used = downstream.pack_tokens(lm.tokenizer, CODE * 3, 96, 16, "code")
    assert rows.shape == (6, 17) and rows.dtype == np.int32
    stream = []
    for ids in lm.tokenizer.encode_batch(CODE * 3):
        stream += [lm.tokenizer.bos_id, *ids]
    np.testing.assert_array_equal(
        np.concatenate([rows[:, :-1].ravel(), rows[-1:, -1]]), stream[:97]
    )
    assert 1 <= used <= len(CODE * 3)
    # doc_tokens=3: every text contributes its separator and first 3 tokens
    rows, used = downstream.pack_tokens(lm.tokenizer, CODE * 3, 32, 16, "code", doc_tokens=3)
    stream = []
    for ids in lm.tokenizer.encode_batch(CODE * 3):
        stream += [lm.tokenizer.bos_id, *ids[:3]]
    np.testing.assert_array_equal(
        np.concatenate([rows[:, :-1].ravel(), rows[-1:, -1]]), stream[:33]
    )
    assert used == 9  # 9 texts x 4 tokens = 36 >= 33
    # separator=False: the texts' tokens back to back
    rows, used = downstream.pack_tokens(lm.tokenizer, CODE * 3, 96, 16, "code", separator=False)
    stream = [t for ids in lm.tokenizer.encode_batch(CODE * 3) for t in ids]
    np.testing.assert_array_equal(
        np.concatenate([rows[:, :-1].ravel(), rows[-1:, -1]]), stream[:97]
    )
    assert lm.tokenizer.bos_id not in stream
    with pytest.raises(InputError, match=r"selection 'tiny' holds \d+ tokens \(1 texts\)"):
        downstream.pack_tokens(lm.tokenizer, ["ab"], 96, 16, "tiny")


def test_overlap_is_reported_and_warned(tiny, caplog):
    _, lm = tiny
    cfg = DownstreamConfig(tokens=64, seq_len=16, batch_size=2, eval_every=32, eval_max_tokens=16)
    held = [CODE[0], PROSE[0]]
    with caplog.at_level(logging.WARNING):
        rep = downstream.evaluate_selections(
            lm, {"code": CODE * 4, "prose": PROSE * 4}, held, cfg, target=[CODE[0], "zz"]
        )
    assert rep["overlap"] == {"code": 1, "prose": 1, "(target)": 1}
    assert caplog.text.count("exact-duplicate leak") == 3
    c = rep["curves"]["code"]
    assert c["tokens"] == [0, 32, 64] and c["ce"][0] == rep["untrained_ce"]
    assert len(c["train_loss"]) == cfg.steps == 2 and np.isfinite(c["ce"]).all()
    assert len(c["final_nll"]) == len(held) and min(c["final_tokens"]) > 0
    np.testing.assert_allclose(sum(c["final_nll"]) / sum(c["final_tokens"]), c["ce"][-1])
    table = downstream.markdown_table(rep)
    assert table.splitlines()[0] == "| selection | CE@0 | CE@32 | CE@64 | delta vs untrained |"
    assert f"{c['ce'][-1] - c['ce'][0]:+.4f}" in table.splitlines()[2]


def test_seeds_curve_is_the_mean_of_single_seed_curves(tiny):
    """`seeds=2` fine-tunes with seeds 0 and 1: its curve is the mean of the two single-seed
    runs (ce, per-text NLL, train loss) and ce_seeds holds each of them; the table gives the
    seed range and a paired-bootstrap column against a baseline."""
    _, lm = tiny
    held = [CODE[0], PROSE[0], "def g(y):\n    return y\n"]
    sel = {"code": CODE * 4, "prose": PROSE * 4}
    kw = dict(tokens=64, seq_len=16, batch_size=2, eval_every=32, eval_max_tokens=16)
    two = downstream.evaluate_selections(lm, sel, held, DownstreamConfig(seeds=2, **kw))
    one = [
        downstream.evaluate_selections(lm, sel, held, DownstreamConfig(seed=s, **kw))
        for s in (0, 1)
    ]
    assert one[0]["curves"]["code"]["ce"] != one[1]["curves"]["code"]["ce"]
    for name in sel:
        c, refs = two["curves"][name], [o["curves"][name] for o in one]
        np.testing.assert_allclose(c["ce_seeds"], [r["ce"] for r in refs], rtol=1e-6)
        np.testing.assert_allclose(c["ce"], np.mean([r["ce"] for r in refs], 0), rtol=1e-6)
        for key in ("final_nll", "train_loss"):
            np.testing.assert_allclose(c[key], np.mean([r[key] for r in refs], 0), rtol=1e-6)
        np.testing.assert_allclose(sum(c["final_nll"]) / sum(c["final_tokens"]), c["ce"][-1])
    lines = downstream.markdown_table(two, "prose").splitlines()
    assert lines[0].endswith(
        "| delta vs untrained | seed CE min–max | vs prose (95% bootstrap) "
        "| vs prose, per seed | tokens to prose's final CE |"
    )
    # each seed's run against the baseline's with the same seed (the single-seed runs)
    code, prose = (two["curves"][n]["ce_seeds"] for n in ("code", "prose"))
    per_seed = [a[-1] - b[-1] for a, b in zip(code, prose, strict=True)]
    single = [o["curves"]["code"]["ce"][-1] - o["curves"]["prose"]["ce"][-1] for o in one]
    np.testing.assert_allclose(per_seed, single, atol=1e-5)
    assert f"| {per_seed[0]:+.4f}, {per_seed[1]:+.4f} |" in lines[2]
    lo, hi = downstream.paired_bootstrap(two["curves"]["code"], two["curves"]["prose"])
    diff = two["curves"]["code"]["ce"][-1] - two["curves"]["prose"]["ce"][-1]
    assert f"| {diff:+.4f} [{lo:+.4f}, {hi:+.4f}] |" in lines[2] and lo <= diff <= hi
    ends = sorted(s[-1] for s in two["curves"]["code"]["ce_seeds"])
    assert f"| {ends[0]:.4f}–{ends[1]:.4f} |" in lines[2]
    with pytest.raises(InputError, match="baseline 'nope' is not among"):
        downstream.markdown_table(two, "nope")
    with pytest.raises(InputError, match="seeds must be a positive integer"):
        DownstreamConfig(seeds=0)


def test_tokens_to_reach_closed_forms():
    """First crossing of a level, linear between evaluations: the paper's "x % fewer tokens to
    reach random's final CE" read off a curve, against hand-computed crossings."""
    t, ce = [0, 100, 200, 300], [2.0, 1.8, 1.5, 1.4]
    assert downstream.tokens_to_reach(t, ce, 1.5) == 200.0
    assert downstream.tokens_to_reach(t, ce, 1.6) == pytest.approx(100 + 100 * 0.2 / 0.3)
    assert downstream.tokens_to_reach(t, ce, 2.5) == 0.0
    assert downstream.tokens_to_reach(t, ce, 1.3) is None
    # a curve that dips, rises and dips again crosses at its first dip
    assert downstream.tokens_to_reach([0, 10, 20, 30], [2.0, 1.0, 3.0, 0.5], 1.5) == 5.0
    curve = {"tokens": t, "ce": ce, "ce_seeds": [ce, [2.0, 1.9, 1.7, 1.6]]}
    assert downstream._reach_cell(curve, 1.5, 300) == "200 (33% fewer) seeds 200–never"
    curve["ce_seeds"] = [ce, [2.0, 1.5, 1.5, 1.5]]
    assert downstream._reach_cell(curve, 1.5, 300) == "200 (33% fewer) seeds 100–200"


def test_paired_bootstrap_closed_forms():
    """A selection whose every held-out text costs c nats/token more than the baseline's differs
    by exactly c in every resample; swapping the two mirrors the interval; the interval of a
    noisy difference holds the point difference; curves over different texts are refused."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, 40)
    base = {"final_nll": (tokens * rng.uniform(1, 3, 40)).tolist(), "final_tokens": tokens}
    shifted = {"final_nll": (np.asarray(base["final_nll"]) + 0.25 * tokens).tolist()}
    shifted["final_tokens"] = tokens
    np.testing.assert_allclose(downstream.paired_bootstrap(shifted, base), (0.25, 0.25))
    noisy = {"final_nll": (tokens * rng.uniform(1, 3, 40)).tolist(), "final_tokens": tokens}
    lo, hi = downstream.paired_bootstrap(noisy, base, seed=3)
    rlo, rhi = downstream.paired_bootstrap(base, noisy, seed=3)
    np.testing.assert_allclose((lo, hi), (-rhi, -rlo), atol=1e-12)
    diff = sum(noisy["final_nll"]) / tokens.sum() - sum(base["final_nll"]) / tokens.sum()
    assert lo < diff < hi and hi - lo > 0.05
    short = {"final_nll": base["final_nll"][:-1], "final_tokens": tokens[:-1]}
    with pytest.raises(InputError, match="same held-out texts"):
        downstream.paired_bootstrap(short, base)


def test_read_selection_and_split(tmp_path):
    pool = Corpus.from_texts(["a", "b", "c"], ids=["x", "y", "z"])
    write_jsonl(tmp_path / "s.jsonl", [{"id": "z"}, {"id": "x"}])
    assert downstream.read_selection(tmp_path / "s.jsonl", pool) == [2, 0]
    write_jsonl(tmp_path / "bad.jsonl", [{"id": "z"}, {"id": "nope"}])
    with pytest.raises(InputError, match=r"bad.jsonl:2: id 'nope' is not in the pool"):
        downstream.read_selection(tmp_path / "bad.jsonl", pool)
    target = Corpus.from_texts([f"t{i}" for i in range(10)])
    rest, held = downstream.split_heldout(target, 0.2, seed=0)
    assert len(held) == 2 and len(rest) == 8 and not set(held.texts) & set(rest.texts)
    with pytest.raises(InputError, match="cannot hold out"):
        downstream.split_heldout(target, 1.5)


def test_cli_downstream(tiny, tmp_path, capsys):
    d, _ = tiny
    pool = [{"id": f"p{i}", "text": t} for i, t in enumerate(CODE + PROSE)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "target.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(CODE)])
    write_jsonl(tmp_path / "held.jsonl", [{"id": "h", "text": "def g(y):\n    return y\n"}])
    write_jsonl(tmp_path / "code.jsonl", [{"id": f"p{i}"} for i in range(6)])
    base = ["downstream", "--pool", str(tmp_path / "pool.jsonl"), "--model", str(d)]
    base += ["--target", str(tmp_path / "target.jsonl"), "--heldout", str(tmp_path / "held.jsonl")]
    base += ["--tokens", "64", "--seq-len", "16", "--batch-size", "2", "--eval-every", "0"]
    base += ["--eval-max-tokens", "16", "--no-progress"]
    out = tmp_path / "r.json"
    argv = [*base, "--selections", str(tmp_path / "code.jsonl"), "--methods", "random,dsir"]
    argv += ["--out", str(out), "--plot", str(tmp_path / "c.png")]
    assert cli.main(argv) == 0
    rep = json.loads(out.read_text())
    assert list(rep["curves"]) == ["code", "random", "dsir"]
    assert all(c["tokens"] == [0, 64] for c in rep["curves"].values())
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out_text = capsys.readouterr().out
    assert "| code |" in out_text and "vs random (95% bootstrap)" in out_text.splitlines()[0]
    # --seeds 2 --baseline code: the config carries both seeds, the table their range
    argv = [*base, "--selections", str(tmp_path / "code.jsonl"), "--methods", "random,dsir"]
    argv += ["--seeds", "2", "--baseline", "code", "--out", str(tmp_path / "r2.json")]
    argv += ["--workdir", str(tmp_path / "wd")]
    assert cli.main(argv) == 0
    first = (tmp_path / "r2.json").read_bytes()
    assert len(list((tmp_path / "wd").glob("curve-*.json"))) == 6
    assert list((tmp_path / "wd" / "scores-dsir").glob("shard-*.npy"))  # the method's shards
    assert cli.main(argv) == 0 and (tmp_path / "r2.json").read_bytes() == first  # all reused
    rep = json.loads(first)
    assert rep["config"]["seeds"] == 2 and len(rep["curves"]["random"]["ce_seeds"]) == 2
    head = capsys.readouterr().out.splitlines()[0]
    assert head.endswith(
        "| vs code (95% bootstrap) | vs code, per seed | tokens to code's final CE |"
    )
    # bad input: one line each
    write_jsonl(tmp_path / "ghost.jsonl", [{"id": "p0"}, {"id": "ghost"}])
    bad = [
        ([*base, "--selections", str(tmp_path / "ghost.jsonl")], "ghost.jsonl:2: id 'ghost'"),
        ([*base, "--methods", "nope"], "unknown method 'nope'"),
        ([*base, "--methods", "gip"], "gip needs --embeddings"),
        ([*base, "--methods", "dsir", "--baseline", "random"], "--baseline 'random' is not"),
        ([*base, "--selections", str(tmp_path / "code.jsonl"), "--tokens", "100000"],
         "selection 'code' holds"),
    ]  # fmt: skip
    for args, msg in bad:
        assert cli.main([*args, "--out", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_cli_downstream_full_and_doc_tokens_equal_the_library_call(tiny, tmp_path):
    """`--full --doc-tokens N` reach `DownstreamConfig` (full fine-tuning, its own default LR,
    document heads): the CLI's report carries that config and its curves equal
    `evaluate_selections` called with it."""
    d, lm = tiny
    from jaxsel.downstream import FULL_LR

    pool = [{"id": f"p{i}", "text": t} for i, t in enumerate(CODE + PROSE)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "target.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(CODE)])
    held = ["def g(y):\n    return y\n"]
    write_jsonl(tmp_path / "held.jsonl", [{"id": "h", "text": held[0]}])
    write_jsonl(tmp_path / "sel.jsonl", [{"id": f"p{i}"} for i in (6, 0, 7, 1, 8, 2, 9, 3)])
    base = ["downstream", "--pool", str(tmp_path / "pool.jsonl"), "--model", str(d)]
    base += ["--target", str(tmp_path / "target.jsonl"), "--heldout", str(tmp_path / "held.jsonl")]
    base += ["--selections", str(tmp_path / "sel.jsonl"), "--tokens", "32", "--seq-len", "8"]
    base += ["--batch-size", "2", "--eval-every", "16", "--eval-max-tokens", "16", "--no-progress"]
    out = tmp_path / "full.json"
    assert cli.main([*base, "--full", "--doc-tokens", "4", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["config"]["full"] and got["config"]["doc_tokens"] == 4
    assert got["config"]["lr"] == FULL_LR
    texts = [pool[i]["text"] for i in (6, 0, 7, 1, 8, 2, 9, 3)]
    cfg = DownstreamConfig(
        tokens=32, seq_len=8, batch_size=2, lr=FULL_LR, full=True, doc_tokens=4,
        eval_every=16, eval_max_tokens=16,
    )  # fmt: skip
    ref = downstream.evaluate_selections(lm, {"sel": texts}, held, cfg, target=CODE)
    assert got["curves"]["sel"]["tokens"] == ref["curves"]["sel"]["tokens"] == [0, 16, 32]
    np.testing.assert_allclose(got["curves"]["sel"]["ce"], ref["curves"]["sel"]["ce"], rtol=1e-6)
    # document heads: each text gives its separator and at most 4 tokens (8 texts: 40 tokens;
    # a budget of 48 is refused, naming the selection), so 7 texts (35 tokens) cover 32 + 1
    assert got["texts_used"] == ref["texts_used"] == {"sel": 7}


@pytest.mark.slow  # ~50 s on the idle 2-core VM; the tiny-model tests are the fast siblings
def test_target_domain_beats_random_text_on_smollm2(smollm2):
    """Held-out HumanEval problems: LoRA on other HumanEval problems lowers their CE; the same
    budget of random pool text (the floor) lowers it less."""
    target, rand, held = _humaneval_vs_random(40)
    cfg = DownstreamConfig(
        tokens=768, seq_len=64, batch_size=4, lr=5e-3, eval_every=0, eval_max_tokens=64
    )
    rep = downstream.evaluate_selections(smollm2, {"humaneval": target, "random": rand}, held, cfg)
    base, ours, floor = (
        rep["untrained_ce"],
        rep["curves"]["humaneval"]["ce"][-1],
        rep["curves"]["random"]["ce"][-1],
    )
    assert ours < base - 0.05 and ours < floor - 0.05, (base, ours, floor)


@pytest.mark.slow  # ~60 s on the idle 2-core VM; `test_full_finetune_on_target_domain...` is the
# tiny-model sibling
def test_full_finetuning_smollm2_on_one_device(smollm2):
    """Full fine-tuning of all 135M weights (8 AdamW steps): HumanEval lowers held-out HumanEval
    CE more than random pool text. On one device of the test's 8: every device of the data mesh
    holds the weights, their delta and its Adam moments (~2.2 GB)."""
    import jax

    from jaxsel import parallel

    target, rand, held = _humaneval_vs_random(80)
    cfg = DownstreamConfig(
        tokens=2048, seq_len=64, batch_size=4, lr=2e-5, eval_every=0, eval_max_tokens=64, full=True
    )
    rep = downstream.evaluate_selections(
        smollm2,
        {"humaneval": target, "random": rand},
        held,
        cfg,
        mesh=parallel.data_mesh(tuple(jax.devices()[:1])),
    )
    base, ours, floor = (
        rep["untrained_ce"],
        rep["curves"]["humaneval"]["ce"][-1],
        rep["curves"]["random"]["ce"][-1],
    )
    # measured: 2.8916 untrained, 2.8456 humaneval, 2.8762 random
    assert ours < base - 0.03 and ours < floor - 0.015, (base, ours, floor)


def _humaneval_vs_random(n_random: int) -> tuple[list[str], list[str], list[str]]:
    """100 HumanEval problems, n_random random pool texts, 6 held-out HumanEval problems."""
    from jaxsel.data.defaults import default_pool, humaneval_target

    target, pool = humaneval_target(), default_pool()
    rand = [pool.texts[i] for i in np.random.default_rng(0).permutation(len(pool))[:n_random]]
    return target.texts[:100], rand, target.texts[150:156]


def test_full_adapter_is_full_finetuning(tiny):
    """`Full` (a dense delta on every weight) trained by the one adapter loop equals full
    fine-tuning written independently: optax Adam on the weights themselves, same batch and
    schedule; the model's own params are never changed. (The schedule and shapes are the next
    test's, so both share one compiled step.)"""
    import jax
    import optax

    from jaxsel.lm import train_tokens
    from jaxsel.lm.adapters import init_full
    from jaxsel.models import llama

    _, lm = tiny
    before = jax.tree.map(np.array, lm.params)
    seqs = [[lm.tokenizer.bos_id, *ids][:12] for ids in lm.tokenizer.encode_batch(CODE[:4])]
    assert all(len(s) == 12 for s in seqs)
    tokens, mask = np.asarray(seqs, np.int32), np.ones((4, 12), bool)
    zero = init_full(lm.params)

    cfg = DownstreamConfig(tokens=128, seq_len=16, batch_size=4, lr=1e-2, full=True)
    tcfg = cfg.train_config()
    losses = []
    full, _ = train_tokens(
        lm.params, lm.cfg, zero, seqs, tcfg, on_step=lambda s, loss, st: losses.append(loss)
    )

    def nll(params):
        lp, _ = llama.token_logprobs(params, tokens, mask, lm.cfg)
        return -lp.sum() / lp.size

    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-2, tcfg.warmup_steps, tcfg.steps, 0.0)
    tx, grad = optax.adam(sched), jax.jit(jax.value_and_grad(nll))
    params, ref_losses = lm.params, []
    state = tx.init(params)
    for _ in range(tcfg.steps):
        loss, g = grad(params)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        ref_losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert float(grad(params)[0]) < ref_losses[0] - 0.1
    leaves = (jax.tree.leaves(t) for t in (lm.params, full.delta, params))
    for w, d, r in zip(*leaves, strict=True):
        np.testing.assert_allclose(np.asarray(w) + d, r, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, lm.params))


def test_full_finetune_on_target_domain_beats_random_text(tiny):
    """Full fine-tuning on code lowers held-out code's CE more than the same budget of prose."""
    _, lm = tiny
    cfg = DownstreamConfig(
        tokens=128, seq_len=16, batch_size=4, lr=1e-2, eval_every=0, eval_max_tokens=16, full=True
    )
    held = ["def g(y):\n    return y\n", "for j in range(3):\n    print(j)\n"]
    rep = downstream.evaluate_selections(lm, {"code": CODE * 4, "prose": PROSE * 6}, held, cfg)
    base = rep["untrained_ce"]
    code, prose = (rep["curves"][n]["ce"][-1] for n in ("code", "prose"))
    assert code < base - 0.2 and code < prose - 0.2, (base, code, prose)


def test_workdir_resumes_curve_by_curve(tiny, tmp_path, monkeypatch, caplog):
    """With a workdir every (selection, seed) curve is committed when it ends: a rerun with more
    seeds trains only the new ones and reports exactly what a fresh run does; a damaged curve
    file is dropped and redone; another held-out set is another job (refused)."""
    _, lm = tiny
    held = [CODE[0], PROSE[0]]
    sel = {"code": CODE * 4, "prose": PROSE * 4}
    kw = dict(tokens=64, seq_len=16, batch_size=2, eval_every=32, eval_max_tokens=16)
    wd = tmp_path / "wd"
    trained = []
    real = downstream.train_tokens

    def counting(*a, name, **k):
        trained.append(name)
        return real(*a, name=name, **k)

    monkeypatch.setattr(downstream, "train_tokens", counting)
    one = downstream.evaluate_selections(lm, sel, held, DownstreamConfig(**kw), workdir=wd)
    assert len(trained) == 2 and len(list(wd.glob("curve-*.json"))) == 2
    # renamed selection: same tokens, same curve file
    trained.clear()
    with caplog.at_level(logging.INFO):
        again = downstream.evaluate_selections(
            lm, {"c": CODE * 4}, held, DownstreamConfig(**kw), workdir=wd
        )
    assert trained == [] and "reusing its verified curve" in caplog.text
    assert again["curves"]["c"]["ce"] == one["curves"]["code"]["ce"]
    # three seeds: only seeds 1 and 2 train; the report equals a fresh run's
    trained.clear()
    three = downstream.evaluate_selections(
        lm, sel, held, DownstreamConfig(seeds=3, **kw), workdir=wd
    )
    assert trained == ["downstream code", "downstream code", "downstream prose", "downstream prose"]
    fresh = downstream.evaluate_selections(lm, sel, held, DownstreamConfig(seeds=3, **kw))
    assert json.dumps(three) == json.dumps(fresh)
    # a flipped byte: the file no longer verifies, is removed and its curve retrained
    victim = sorted(wd.glob("curve-*-s1-*.json"))[0]
    good = victim.read_bytes()
    data = bytearray(good)
    data[5] ^= 1
    victim.write_bytes(bytes(data))
    trained.clear()
    with caplog.at_level(logging.WARNING):
        redo = downstream.evaluate_selections(
            lm, sel, held, DownstreamConfig(seeds=3, **kw), workdir=wd
        )
    assert len(trained) == 1 and "does not verify" in caplog.text
    assert victim.read_bytes() == good  # retrained to the same bytes, under the same name
    assert json.dumps(redo) == json.dumps(fresh)
    with pytest.raises(InputError, match="holds shards of another job"):
        downstream.evaluate_selections(lm, sel, held[:1], DownstreamConfig(**kw), workdir=wd)
