"""Every registered method through the same behavioural checks (optax's alias_test shape):
an empty pool is refused, the same inputs give the same bytes, ties break by pool order, a
resumed run equals a fresh one, and `score` and `select` agree. Method-specific numbers are
checked against references in each method's own test file.

`check_contract` is public to the tests: a method of your own passes the same checks
(tests/methods/test_own_method.py)."""

import shutil

import numpy as np
import pytest
from test_zipfit import make_pool, make_target

from jaxsel import methods, pipeline
from jaxsel.data import Corpus
from jaxsel.data.adapters import CorpusSource
from jaxsel.errors import InputError

# Small settings per built-in method, so that the whole matrix runs in seconds on 2 cores.
# "{bert}" is replaced by a tiny random BERT directory; a method not listed runs its defaults.
OPTIONS = {
    "zipfit": {"workers": 1, "shard_size": 4},
    "zipfit-fast": {"workers": 1, "shard_size": 4},
    "dsir": {"buckets": 256, "shard_size": 4},
    "random": {"seed": 1},
    "gip": {"embed": "{bert}", "k": 6},
    "ppl": {"max_tokens": 16, "shard_size": 4},
    "lamdas": {"epochs": 1, "prefix_len": 2, "init": "random", "max_tokens": 16, "shard_size": 4},
    "embed-sim": {"model": "{bert}", "shard_size": 4},
    "hybrid": {"of": "dsir(buckets=256),zipfit(workers=1),random"},
}


def _pool() -> Corpus:
    """Twelve documents and two exact copies at the end (ties for every deterministic score)."""
    base = make_pool(12, seed=3, long_doc=False)
    texts = [*base.texts, base.texts[0], base.texts[3]]
    return Corpus.from_texts(texts, ids=[f"d{i}" for i in range(len(texts))])


def _run(config, lm, workdir=None) -> methods.Run:
    run = methods.Run(workdir)
    if lm is not None and hasattr(config, "model"):
        run.models[("lm", config.model, config.dtype)] = lm
    return run


def check_contract(name: str, options: dict, tmp_path, lm=None) -> None:
    """The behavioural checks every method passes (module docstring)."""
    entry = methods.get(name)
    method, config = entry(**options)
    assert isinstance(method, methods.Streamed | methods.WholePool)
    pool, target = _pool(), make_target(3)

    with pytest.raises(InputError):  # an empty pool is refused
        with _run(config, lm) as run:
            pipeline.score(method, CorpusSource(Corpus((), (), ())), target, config, run)

    def scores(workdir=None):
        with _run(config, lm, workdir) as run:
            return pipeline.score(method, CorpusSource(pool), target, config, run)

    first = scores()
    assert first.values.shape == (len(pool),) and first.method == name
    assert scores().values.tobytes() == first.values.tobytes()  # same inputs, same bytes

    # select == the scores' ranking: best first, ties by pool order (brute force)
    k = 5
    with _run(config, lm) as run:
        sel = pipeline.select(method, CorpusSource(pool), target, config, run, k=k)
    if first.order is None:
        want = sorted(range(len(pool)), key=lambda i: (-first.values[i], i))[:k]
    else:  # a greedy method: its selection order
        want = list(first.order[:k])
    assert sel.keys[:, 1].tolist() == want
    np.testing.assert_array_equal(sel.scores, first.values[want])
    assert np.all(np.diff(sel.scores) <= 0)

    # a run resumed from a workdir with half of its shards gone equals a fresh run
    wd = tmp_path / f"wd-{name}"
    assert scores(wd).values.tobytes() == first.values.tobytes()
    shards = sorted(wd.rglob("shard-*"))
    for p in shards[::2]:
        p.unlink()
    assert scores(wd).values.tobytes() == first.values.tobytes()
    shutil.rmtree(wd, ignore_errors=True)


@pytest.mark.parametrize("name", methods.names())
def test_every_method_keeps_the_contract(name, tmp_path, tiny_bert_dir, tiny_lm):
    options = {
        k: v.replace("{bert}", str(tiny_bert_dir)) if isinstance(v, str) else v
        for k, v in OPTIONS.get(name, {}).items()
    }
    check_contract(name, options, tmp_path, lm=tiny_lm)


def test_every_built_in_method_is_in_the_matrix():
    assert set(OPTIONS) <= set(methods.names())
    assert {n for n in methods.names() if not n.startswith("test-")} <= set(OPTIONS)
