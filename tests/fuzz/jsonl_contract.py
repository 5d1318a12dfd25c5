"""The JSONL reader's contract, checked on one input by the fuzz harness (`fuzz_jsonl.py`) and
replayed over the kept fuzz corpus by the test suite (`tests/test_reliability.py`)."""

import math
from pathlib import Path

from jaxsel.data import read_jsonl
from jaxsel.data.records import parse_jsonl_line
from jaxsel.data.writers import json_line
from jaxsel.errors import InputError


def same(a, b) -> bool:
    """Equal with the same JSON types (1 != 1.0 != True here)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return False  # never accepted
    return type(a) is type(b) and a == b


def check_file(path: Path) -> bool:
    """Reads `path` with `read_jsonl`: a Corpus (True) or a one-line InputError naming the file
    (False), nothing else. An accepted corpus has unique ids, non-blank texts, and every record
    survives the writer's JSON line and the reader's parse unchanged (values and types)."""
    try:
        c = read_jsonl(path)
    except InputError as e:
        msg = str(e)
        if "\n" in msg or str(path) not in msg:
            raise AssertionError(f"error is not one line naming the file: {msg!r}") from None
        return False
    assert len(c) and len(set(c.ids)) == len(c.ids)
    assert all(isinstance(t, str) and t.strip() for t in c.texts)
    for n, rec in enumerate(c.records):
        line = json_line(rec, path, n).encode("utf-8")
        back = parse_jsonl_line(line, f"{path}:{n}")
        assert same(rec, back), (rec, back)
    return True
