"""The streaming readers' contract, checked on one input by the Parquet and TFDS fuzz harnesses
(`fuzz_parquet.py`, `fuzz_tfds.py`) and replayed over their kept corpora by the test suite
(`tests/test_fuzz_regressions.py`)."""

from jaxsel.data.sources import Source
from jaxsel.errors import InputError


def check_source(src: Source, name: str) -> bool:
    """Streams `src`: its documents (True) or a one-line InputError naming `name` (False),
    nothing else. Accepted documents have non-blank string texts and ids that are unique
    strings or finite numbers (1 == 1.0, as jaxsel compares ids)."""
    try:
        batches = list(src.batches(7))
    except InputError as e:
        msg = str(e)
        if "\n" in msg or name not in msg:
            raise AssertionError(f"error is not one line naming {name}: {msg!r}") from None
        return False
    ids = [i for b in batches for i in b.ids]
    texts = [t for b in batches for t in b.texts]
    assert ids and len(ids) == len(texts)
    assert all(isinstance(i, (str, int, float)) and not isinstance(i, bool) for i in ids)
    assert len({(isinstance(i, str), i) for i in ids}) == len(ids), "duplicate ids accepted"
    assert all(isinstance(t, str) and t.strip() for t in texts)
    return True
