"""embed-sim against a numpy float64 cosine on the encoder's own embeddings; hybrid's rank fusion
against hand computations and against fusing separately scored members; bad input."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from test_zipfit import make_pool, make_target

from jaxsel import cli, methods
from jaxsel.errors import InputError, JaxselError
from jaxsel.methods import embed_sim, hybrid
from jaxsel.models import bert
from jaxsel.models.embed import embed_corpus
from jaxsel.scores import Scores

MAX = 64


def _unit64(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(pool_emb, target_emb, reduce, k):
    """numpy float64: cosine to the centroid / to the nearest target / mean of the k nearest."""
    x, t = _unit64(pool_emb), _unit64(target_emb)
    if reduce == "centroid":
        return x @ _unit64(t.mean(0))
    sims = x @ t.T
    if reduce == "max":
        return sims.max(1)
    return np.sort(sims, axis=1)[:, ::-1][:, :k].mean(1)


@pytest.mark.parametrize("reduce, k", [("centroid", 1), ("max", 1), ("topk", 3), ("topk", 99)])
def test_embed_sim_equals_numpy_cosine(tiny_bert_dir, reduce, k):
    pool, target = make_pool(n=11, long_doc=False), make_target(n=5)
    cfg = embed_sim.Config(model=str(tiny_bert_dir), reduce=reduce, nearest=k, max_tokens=MAX)
    got = methods.get("embed-sim").score(pool, target, cfg)
    enc = bert.load_bert(tiny_bert_dir)
    ref = _reference(
        embed_corpus(pool, enc, max_tokens=MAX),
        embed_corpus(target, enc, max_tokens=MAX),
        reduce,
        k,
    )
    assert got.values.dtype == np.float64 and got.values.shape == (len(pool),)
    np.testing.assert_allclose(got.values, ref, atol=1e-5, rtol=0)
    if reduce == "topk":
        assert got.meta["nearest_used"] == min(k, len(target))


def test_embed_sim_blocks_and_resume(tiny_bert_dir, tmp_path, monkeypatch):
    pool, target = make_pool(n=11, long_doc=False), make_target(n=5)
    cfg = embed_sim.Config(model=str(tiny_bert_dir), reduce="max", max_tokens=MAX, shard_size=4)
    first = embed_sim.score(pool, target, cfg, workdir=tmp_path)
    assert (tmp_path / "manifest.json").exists()  # the pipeline's shards of pool batches
    assert len(list(tmp_path.glob("shard-*.json"))) == 3  # 11 documents in batches of 4
    assert (tmp_path / "target-embed" / "manifest.json").exists()

    def never(*args):
        raise AssertionError("the encoder ran again")

    # Resumed from the shards (the encoder is never called again): the same bytes.
    monkeypatch.setattr("jaxsel.models.embed._embed_fn", lambda cfg, mesh: never)
    again = embed_sim.score(pool, target, cfg, workdir=tmp_path)
    assert again.values.tobytes() == first.values.tobytes()
    monkeypatch.undo()
    # Scored in blocks of 8 pool rows (one per fake device) instead of one block per batch.
    monkeypatch.setattr(embed_sim, "_SIM_CELLS", 8 * len(target))
    blocks = embed_sim.score(pool, target, cfg)
    np.testing.assert_allclose(blocks.values, first.values, atol=1e-6, rtol=0)


def test_embed_sim_minilm_prefers_code():
    """The real MiniLM: Python snippets sit closer to a Python target than English prose."""
    target = make_target(n=3)
    pool = make_pool(n=6, long_doc=False)
    s = embed_sim.score(pool, target, embed_sim.Config(max_tokens=64))
    code = [v for v, d in zip(s.values, pool.field("domain"), strict=True) if d == "python"]
    prose = [v for v, d in zip(s.values, pool.field("domain"), strict=True) if d == "prose"]
    assert min(code) > max(prose)


def test_embed_sim_bad_config():
    with pytest.raises(InputError, match="reduce"):
        embed_sim.Config(reduce="median")
    with pytest.raises(InputError, match="nearest"):
        embed_sim.Config(nearest=0)


# ------------------------------------------------------------------------------------ hybrid


def _s(values):
    return Scores(np.array(values, np.float64), "m")


def test_rrf_by_hand():
    a = _s([3.0, 1.0, 2.0, 2.0])  # ranks 1, 4, 2, 3 (tie 2.0: lower index first)
    b = _s([0.1, 0.9, 0.5, -np.inf])  # ranks 3, 1, 2, 4
    got = hybrid.reciprocal_rank_fusion([a, b], [1.0, 2.0], k=60)
    want = [
        1 / 61 + 2 / 63,
        1 / 64 + 2 / 61,
        1 / 62 + 2 / 62,
        1 / 63 + 2 / 64,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_array_equal(hybrid.ranks(a), [1, 4, 2, 3])


def test_zscore_by_hand():
    a = _s([1.0, 2.0, 3.0, 6.0])  # mean 3, population std sqrt(14/4)
    b = _s([5.0, 5.0, 5.0, 5.0])  # constant: contributes 0
    c = _s([0.0, 1.0, -np.inf, 2.0])  # finite mean 1, std sqrt(2/3); item 2 unranked
    sa, sc = np.sqrt(3.5), np.sqrt(2 / 3)
    got = hybrid.zscore_fusion([a, b, c], [2.0, 1.0, 1.0])
    want = [
        (2 * (-2 / sa) + 0 + (-1 / sc)) / 4,
        (2 * (-1 / sa) + 0 + 0) / 4,
        -np.inf,
        (2 * (3 / sa) + 0 + (1 / sc)) / 4,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-14)


@pytest.mark.parametrize("fusion", ["zscore", "rrf"])
def test_length_debiased_fusion_by_hand(fusion):
    """debias="length": each member standardised ((v - median) / std) within the pool's
    length-quantile bins (2 bins for 100-149 items), then fused; written out by hand."""
    rng = np.random.default_rng(3)
    n = 120
    lengths = rng.permutation(np.arange(10, 5000))[:n]  # distinct: no ties at a bin edge
    a = rng.normal(size=n) - 1e-3 * lengths  # a length-biased member
    b = rng.normal(size=n)
    b[[5, 17]] = -np.inf  # unranked items stay unranked (bins over the ranked ones)

    def by_hand(v):
        out, fin = v.copy(), np.isfinite(v)
        short = lengths <= np.median(lengths[fin])  # the two quantile bins of the ranked items
        for m in (short & fin, ~short & fin):
            out[m] = (v[m] - np.median(v[m])) / v[m].std()
        return out

    cfg = hybrid.Config(of="x,y", weights="1,3", fusion=fusion, debias="length")
    got = hybrid.fuse([_s(a), _s(b)], cfg, lengths)
    plain = hybrid.Config(of="x,y", weights="1,3", fusion=fusion, debias="none")
    want = hybrid.fuse([_s(by_hand(a)), _s(by_hand(b))], plain)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isneginf(got[[5, 17]]).all() == (fusion == "zscore")
    with pytest.raises(ValueError, match="needs the pool's lengths"):
        hybrid.fuse([_s(a), _s(b)], cfg)

    # debias="auto" (the default) standardises only the members whose |Spearman(score, length)|
    # (scipy's, over the ranked items) is >= 0.5: here the length-biased member a, not b
    rho = [abs(spearmanr(v[np.isfinite(v)], lengths[np.isfinite(v)])[0]) for v in (a, b)]
    assert rho[0] >= 0.5 > rho[1]
    auto = hybrid.Config(of="x,y", weights="1,3", fusion=fusion)
    assert auto.debias == "auto"
    assert hybrid.to_debias([_s(a), _s(b)], auto, lengths) == [True, False]
    got = hybrid.fuse([_s(a), _s(b)], auto, lengths)
    np.testing.assert_allclose(got, hybrid.fuse([_s(by_hand(a)), _s(b)], plain), rtol=1e-12)
    flat = np.full(n, 2.0)  # a constant member (Spearman undefined) is left as it is
    assert hybrid.to_debias([_s(flat)], auto, lengths) == [False]


@pytest.mark.parametrize("fusion", ["rrf", "zscore"])
def test_hybrid_equals_fusing_members(fusion, tmp_path):
    pool, target = make_pool(long_doc=False), make_target()
    cfg = hybrid.Config(of="dsir,zipfit,random", weights="1,2,0.5", fusion=fusion)
    got = methods.get("hybrid").score(pool, target, cfg, workdir=tmp_path)
    members = [methods.get(m) for m in cfg.members]
    singles = [m.score(pool, target, m.config_cls()) for m in members]
    lengths = [len(t.encode("utf-8")) for t in pool.texts]
    np.testing.assert_array_equal(got.values, hybrid.fuse(singles, cfg, lengths))
    assert set(got.meta["members"]) == set(cfg.members)
    confounded = [
        m
        for m, s in zip(cfg.members, singles, strict=True)
        if abs(spearmanr(s.values, lengths)[0]) >= 0.5
    ]
    assert got.meta["length_debiased"] == confounded == ["dsir", "zipfit"]  # random is not
    # members kept their shards in <workdir>/<member>; a rerun reuses them: same bytes
    assert (tmp_path / "zipfit" / "manifest.json").exists()
    again = hybrid.score(pool, target, cfg, workdir=tmp_path)
    assert again.values.tobytes() == got.values.tobytes()


def test_hybrid_bad_input():
    pool, target = make_pool(n=4, long_doc=False), make_target(n=2)
    with pytest.raises(JaxselError, match="member 'gip' failed: gip needs --embeddings"):
        hybrid.score(pool, target, hybrid.Config(of="dsir,gip"))
    for of, weights, msg in [
        ("dsir,nope", None, "unknown member 'nope'"),
        ("dsir,dsir", None, "listed twice"),
        ("dsir,hybrid", None, "its own member"),
        ("dsir,zipfit,random", "1,2", "2 weights for 3 members"),
        ("dsir,zipfit", "1,-1", "weights must be"),
        ("dsir,zipfit", "1,x", "weights must be numbers"),
    ]:
        with pytest.raises(InputError, match=msg):
            hybrid.score(pool, target, hybrid.Config(of=of, weights=weights))
    with pytest.raises(InputError, match="fusion must be"):
        hybrid.Config(fusion="max")
    with pytest.raises(InputError, match="debias must be"):
        hybrid.Config(debias="size")


def test_cli_select_hybrid(tmp_path, capsys):
    pool, target = make_pool(long_doc=False), make_target()
    for name, corpus in (("pool", pool), ("target", target)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for r in corpus.records:
                f.write(json.dumps(r) + "\n")
    out = tmp_path / "sel.jsonl"
    argv = ["select", "--method", "hybrid", "--of", "dsir,zipfit", "--fusion", "zscore"]
    argv += ["--pool", str(tmp_path / "pool.jsonl"), "--target", str(tmp_path / "target.jsonl")]
    assert cli.main([*argv, "-k", "3", "--out", str(out), "--no-progress"]) == 0
    sel = [json.loads(x) for x in out.read_text().splitlines()]
    cfg = hybrid.Config(of="dsir,zipfit", fusion="zscore")
    want = hybrid.score(pool, target, cfg).ranking()[:3]
    assert [r["id"] for r in sel] == [pool.ids[i] for i in want]
    assert cli.main([*argv, "--weights", "1,x", "--out", str(out)]) == 2
    assert "--weights must be numbers" in capsys.readouterr().err
