"""Test set-up: 8 fake CPU devices, set before jax is imported anywhere (STYLE §11)."""

import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `jaxsel` commands the tests start keep no compilation cache (`jaxsel.host`): a job killed by
# a test mid-write could leave a torn entry that a later test's stderr would then report;
# tests/test_host.py runs the cache itself in its own directories.
os.environ.setdefault("JAXSEL_COMPILE_CACHE", "off")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) saved by transformers as a HF directory
    (config.json + model.safetensors) with MiniLM's tokenizer.json. Weights are drawn with a
    large spread so that every part of the forward pass matters numerically."""
    import shutil

    import torch
    import transformers

    from jaxsel.models.bert import minilm_dir

    cfg = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(minilm_dir() / "tokenizer.json", path / "tokenizer.json")
    return path


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M (`load_smollm2`), loaded once for the whole run."""
    from jaxsel.models.loaders import load_smollm2

    return load_smollm2()


@pytest.fixture(scope="session")
def tiny_lm():
    """A random 2-layer Llama (`test_llama.TINY`) with a tiny BPE tokenizer: the fast LM."""
    import tokenizers
    from llama_ref import random_params, tiny_tokenizer_json
    from test_llama import TINY

    from jaxsel.models.loaders import LoadedLM
    from jaxsel.models.tokenizer import Tokenizer

    tok = Tokenizer(tokenizers.Tokenizer.from_str(tiny_tokenizer_json(TINY.vocab_size)), 0, 0)
    return LoadedLM(TINY, random_params(TINY, seed=7), tok, "tiny")
