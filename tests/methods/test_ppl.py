"""The `ppl` method: per-text mean log-prob equals an unbatched float64 reference, whatever the
batching, sharding (8 fake devices), truncation or resumption; one compile per bucket."""

import numpy as np
import pytest
from llama_ref import np_forward
from test_llama import TINY

from jaxsel import methods, parallel
from jaxsel.data import Corpus
from jaxsel.errors import InputError
from jaxsel.methods import ppl

TEXTS = ["hello world", "a", "def f(x):\n    return x\n" * 3, "ü€🙂", "zz" * 30, "\x04"]


def _ref(lm, text, max_tokens):
    ids = [0, *lm.tokenizer.encode(text)[:max_tokens]]
    lg = np_forward(lm.params, np.array([ids]), lm.cfg)[0, :-1]
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    return float(np.mean(lg[np.arange(len(ids) - 1), ids[1:]] - lse))


def test_scores_equal_unbatched_reference(tiny_lm, tmp_path):
    pool = Corpus.from_texts(TEXTS)
    cfg = ppl.Config(max_tokens=40, batch_size=3, shard_size=2)
    s = methods.get("ppl").score(pool, None, cfg, lm=tiny_lm, progress=False)
    ref = [_ref(tiny_lm, t, 40) for t in TEXTS]
    np.testing.assert_allclose(s.values, ref, atol=1e-4)
    n = [len(tiny_lm.tokenizer.encode(t)) for t in TEXTS]
    assert s.meta["truncated"] == 2 == sum(k > 40 for k in n)
    assert s.meta["tokens_scored"] == sum(min(k, 40) for k in n)
    # Resumable: a second run over the same workdir reads the shards back.
    a = ppl.score(pool, None, cfg, lm=tiny_lm, progress=False, workdir=tmp_path)
    b = ppl.score(pool, None, cfg, lm=tiny_lm, progress=False, workdir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir())[:1] == ["manifest.json"]
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(a.values, s.values, atol=1e-6)


def test_one_compile_per_bucket(tiny_lm):
    texts = ["abc", "abcd", "abcde", "xy"]  # all in the smallest bucket
    cfg = ppl.Config(max_tokens=64, batch_size=2)
    ppl.score(Corpus.from_texts(texts), None, cfg, lm=tiny_lm, progress=False)
    fn = ppl._loglik_fn(TINY, parallel.data_mesh())
    n = fn._cache_size()
    ppl.score(Corpus.from_texts(texts[::-1]), None, cfg, lm=tiny_lm, progress=False)
    assert fn._cache_size() == n >= 1


def test_config_errors(tiny_lm):
    with pytest.raises(InputError, match="max_tokens must be a positive integer"):
        ppl.Config(max_tokens=0)
    with pytest.raises(InputError, match="exceeds the model's context"):
        ppl.score(Corpus.from_texts(["a"]), None, ppl.Config(max_tokens=500), lm=tiny_lm,
                  progress=False)  # fmt: skip


def test_cli_score_with_an_hf_dir(tmp_path):
    import json

    from llama_ref import save_hf_dir
    from test_llama import _tiny_hf

    from jaxsel.cli import main

    save_hf_dir(_tiny_hf("qwen2"), tmp_path / "m", 300)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in
                            enumerate(["fluent text", "q" * 50])))  # fmt: skip
    out = tmp_path / "s.jsonl"
    argv = ["score", "--method", "ppl", "--pool", str(pool), "--model", str(tmp_path / "m"),
            "--max-tokens", "32", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1"] and all(r["score"] < 0 for r in rows)
