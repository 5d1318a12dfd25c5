"""The Parquet, TFDS and GGUF fuzz harnesses (tests/fuzz/fuzz_parquet.py, fuzz_tfds.py,
fuzz_gguf.py) without
atheris: each one's `test_one_input` over its kept corpus (the seeds, what `make fuzz` found,
the crashes it once found, now fixed), so every input meets the readers' contract in CI."""

import importlib
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent / "fuzz"


@pytest.fixture(scope="module")
def harness():
    """`harness(name)`: tests/fuzz/fuzz_NAME.py as a module (imported once per process: the TFDS
    harness registers its dataset builder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(FUZZ))
        yield lambda name: importlib.import_module(f"fuzz_{name}")


def _replay(h, name: str) -> tuple[int, int]:
    """(inputs, accepted) of the corpus; any input that breaks the contract raises."""
    corpus = sorted((FUZZ / f"corpus_{name}").iterdir())
    return len(corpus), sum(h.test_one_input(p.read_bytes()) for p in corpus)


def test_parquet_fuzz_corpus_replays_cleanly(harness):
    n, accepted = _replay(harness("parquet"), "parquet")
    assert n >= 12 and 0 < accepted < n  # both outcomes are exercised


def test_parquet_thrift_error_is_one_line(harness):
    """Fuzzing found a footer whose thrift error message (pyarrow's) ends in a newline."""
    h = harness("parquet")
    assert not h.test_one_input(
        (FUZZ / "corpus_parquet" / "crash-thrift-message-newline").read_bytes()
    )


def test_tfds_fuzz_corpus_replays_cleanly(harness):
    pytest.importorskip("tensorflow_datasets", reason="the [tfds] extra is not installed")
    h = harness("tfds")
    real = h.prepared()[1].read_bytes()
    assert h.test_one_input(b"\0" + real)  # the shard as TFDS wrote it
    assert h.shard(h.seeds(real)["blocks"]) == real
    n, accepted = _replay(h, "tfds")
    assert n >= 3 and 0 < accepted < n


def test_gguf_fuzz_corpus_replays_cleanly(harness):
    """Every kept input is one AssetError line or agrees with gguf's own reader; the two
    crashes fuzzing found (a key with a newline echoed raw, a zero-sized tensor declaring an
    impossible dimension) are in the corpus."""
    h = harness("gguf")
    n, accepted = _replay(h, "gguf")
    assert n >= 4 and 0 < accepted < n
    corpus = FUZZ / "corpus_gguf"
    for crash in ("crash-key-with-newline", "crash-empty-tensor-huge-dim"):
        assert not h.test_one_input((corpus / crash).read_bytes())
