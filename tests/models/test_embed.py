"""Corpus embeddings: bucketed, batched and sharded over 8 fake devices equals one text at a time
in corpus order; truncation; resume from shards; `jaxsel embed`; `select --method gip --embed`."""

import json

import numpy as np
import pytest

from jaxsel import cli, parallel
from jaxsel.batching import bucket_lengths
from jaxsel.errors import InputError
from jaxsel.models import bert
from jaxsel.models import embed as embed_mod
from jaxsel.models.embed import embed_corpus

MAX = 64  # tiny-model tests: 3 buckets (16, 32, 64) keep compile time down
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge".split()


def _texts(n=19, seed=0):
    """Texts from 1 to ~300 words in shuffled length order (every bucket, some truncated)."""
    rng = np.random.default_rng(seed)
    sizes = rng.permutation(np.geomspace(1, 300, n).astype(int))
    return [" ".join(rng.choice(WORDS, size=k)) + f" #{i}" for i, k in enumerate(sizes)]


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir):
    return bert.load_bert(tiny_bert_dir)


def _one_at_a_time(model_dir, enc, texts, max_tokens=MAX):
    """Independent unsharded, unpadded reference: transformers on each text alone."""
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for ids in enc.tokenizer.encode_batch(texts, max_tokens):
            h = model(input_ids=torch.as_tensor(ids[None], dtype=torch.long)).last_hidden_state
            rows.append(torch.nn.functional.normalize(h.mean(1), dim=-1).numpy())
    return np.concatenate(rows)


def test_buckets():
    assert bucket_lengths(256) == (16, 32, 64, 128, 256)
    assert bucket_lengths(100) == (16, 32, 64, 100)
    assert bucket_lengths(8) == (8,)


def test_sharded_bucketed_equals_one_at_a_time(tiny, tiny_bert_dir):
    assert parallel.data_size() == 8  # conftest: 8 fake CPU devices
    embed_mod._embed_fn.cache_clear()  # count only this test's compilations (others share cfg)
    texts = _texts()
    got = embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX)  # 4 -> 8 rows, one per device
    assert got.shape == (len(texts), 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, _one_at_a_time(tiny_bert_dir, tiny, texts), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # Same answer whatever the batch size; a second call compiles nothing new.
    fn = embed_mod._embed_fn(tiny.cfg, parallel.data_mesh())
    compiled = fn._cache_size()
    assert compiled <= len(bucket_lengths(MAX))
    np.testing.assert_allclose(embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX), got, atol=0)
    assert fn._cache_size() == compiled
    np.testing.assert_allclose(
        embed_corpus(texts, tiny, batch_size=8, max_tokens=MAX), got, atol=1e-5
    )


def test_truncation_at_max_tokens(tiny):
    head = " ".join(WORDS * 10)
    a, b, c = embed_corpus(
        [head + " cats", head + " dogs and more", "short"], tiny, batch_size=4, max_tokens=MAX
    )
    np.testing.assert_array_equal(a, b)  # the differing tails lie past token 64
    assert not np.allclose(a, c)
    with pytest.raises(InputError, match=r"max_tokens must be in \[2, 512\]"):
        embed_corpus(["x"], tiny, max_tokens=513)
    with pytest.raises(InputError, match="no texts"):
        embed_corpus([], tiny)


def test_resume_reuses_finished_shards(tiny, tmp_path, monkeypatch):
    texts = _texts(n=21, seed=1)
    full = embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX)
    real = embed_mod._embed_fn
    calls = []

    def counting(limit):
        def make(cfg, mesh):
            fn = real(cfg, mesh)

            def wrapped(*args):
                if len(calls) == limit:
                    raise KeyboardInterrupt
                calls.append(1)
                return fn(*args)

            return wrapped

        return make

    wd = tmp_path / "work"
    monkeypatch.setattr(embed_mod, "_embed_fn", counting(limit=5))
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX, workdir=wd, shard_size=8)
    assert sorted(p.name[:12] for p in wd.glob("shard-*.npy")) == ["shard-000000", "shard-000001"]
    calls.clear()
    monkeypatch.setattr(embed_mod, "_embed_fn", counting(limit=100))
    got = embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX, workdir=wd, shard_size=8)
    assert len(calls) == 2  # 21 texts = 6 batches of 4; the 4 in finished shards are reused
    np.testing.assert_allclose(got, full, atol=1e-6)
    with pytest.raises(InputError, match="holds shards of another job"):
        embed_corpus(texts, tiny, batch_size=4, workdir=wd, shard_size=8, max_tokens=32)


PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The cat sat on the mat.", "A cat was sitting on a rug."),
    ("How do I reverse a list in Python?", "What is the way to invert the order of a Python list?"),
]
UNRELATED = [
    ("A man is playing a guitar.", "How do I reverse a list in Python?"),
    ("The cat sat on the mat.", "Share prices dropped steeply today."),
    ("Someone is strumming a guitar.", "A cat was sitting on a rug."),
]


def test_minilm_paraphrases_closer_than_unrelated():
    def cosines(pairs):
        e = embed_corpus([t for p in pairs for t in p])
        return np.sum(e[0::2] * e[1::2], axis=1)

    para, unrel = cosines(PARAPHRASES), cosines(UNRELATED)
    assert para.min() > 0.5 > 0.2 > unrel.max()
    assert para.min() - unrel.max() > 0.4


def test_cli_embed_end_to_end(tiny, tiny_bert_dir, tmp_path, capsys):
    texts = _texts(n=9, seed=2)
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    out = tmp_path / "out" / "e.npy"
    argv = ["embed", "--pool", str(pool), "--out", str(out), "--model", str(tiny_bert_dir)]
    assert cli.main([*argv, "--batch-size", "3", "--max-tokens", str(MAX), "--no-progress"]) == 0
    np.testing.assert_allclose(
        np.load(out), embed_corpus(texts, tiny, batch_size=4, max_tokens=MAX), atol=1e-5
    )
    assert cli.main([*argv[:-1], str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a model directory" in err


def test_gip_embed_option_equals_precomputed_embeddings(tiny_bert_dir, tmp_path):
    pool = tmp_path / "pool.jsonl"
    texts = [t for p in PARAPHRASES + UNRELATED for t in p]
    pool.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    emb, common = tmp_path / "e.npy", ["--pool", str(pool), "--no-progress"]
    assert cli.main(["embed", *common, "--out", str(emb), "--model", str(tiny_bert_dir)]) == 0
    sel = ["select", "--method", "gip", "-k", "4", *common]
    assert cli.main([*sel, "--embeddings", str(emb), "--out", str(tmp_path / "a.jsonl")]) == 0
    assert cli.main([*sel, "--embed", str(tiny_bert_dir), "--out", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_gip_embed_streams_the_pool_into_a_memmap(tmp_path, monkeypatch):
    """`--embed` (all-MiniLM-L6-v2) embeds the pool batch by batch as it streams (3 files = 3
    parts = 3 batches) into a memory-mapped .npy: the selection is byte for byte the one over
    the whole pool's embeddings computed in memory; a rerun reuses each batch's shard."""
    texts = [t for p in PARAPHRASES + UNRELATED for t in p]
    (tmp_path / "pool").mkdir()
    for f in range(3):
        with open(tmp_path / "pool" / f"p{f}.jsonl", "w") as out:
            for i in range(4 * f, 4 * f + 4):
                out.write(json.dumps({"id": f"d{i}", "text": texts[i]}) + "\n")
    np.save(tmp_path / "e.npy", embed_corpus(texts))  # in memory, every text at once
    sel = ["select", "--method", "gip", "-k", "5", "--no-progress",
           "--pool", str(tmp_path / "pool" / "*.jsonl")]  # fmt: skip
    assert cli.main([*sel, "--embeddings", str(tmp_path / "e.npy"),
                     "--out", str(tmp_path / "a.jsonl")]) == 0  # fmt: skip
    calls = []

    def spy(texts, model=None):
        calls.append(len(texts))
        return embed_corpus(texts, model)

    monkeypatch.setattr(embed_mod, "embed_corpus", spy)
    wd = tmp_path / "work"
    for run in range(2):
        out = tmp_path / f"b{run}.jsonl"
        assert cli.main([*sel, "--embed", "--workdir", str(wd), "--out", str(out)]) == 0
        assert out.read_bytes() == (tmp_path / "a.jsonl").read_bytes()
        assert calls == ([4, 4, 4] if run == 0 else [])  # one batch at a time; then shards
        calls.clear()
    assert len(list((wd / "embed").glob("shard-*.npy"))) == 3
