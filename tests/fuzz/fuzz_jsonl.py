"""Coverage-guided fuzzing (atheris/libFuzzer) of the JSON Lines reader.

    python tests/fuzz/fuzz_jsonl.py tests/fuzz/corpus_jsonl -max_total_time=60   (or `make fuzz`)

Each input is written as a .jsonl file (as .jsonl.gz when it starts with the gzip magic) and read
with `read_jsonl`. The contract: a Corpus or a one-line InputError naming the file, nothing else;
an accepted corpus has unique ids, non-blank texts, and every record survives the writer's JSON
line and the reader's parse unchanged (same values, same types). Not part of the pytest run.
"""

import atexit
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["jaxsel"]):
    from jaxsel.data import corpus
    from jaxsel.errors import InputError

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # inputs are files: keep them in RAM
DIR = Path(tempfile.mkdtemp(prefix="fuzz-jsonl-", dir=SHM))
atexit.register(shutil.rmtree, DIR, True)


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and math.isnan(a):
        return False  # never accepted
    return type(a) is type(b) and a == b


def test_one_input(data: bytes) -> None:
    path = DIR / ("f.jsonl.gz" if data[:2] == b"\x1f\x8b" else "f.jsonl")
    path.write_bytes(data)
    try:
        c = corpus.read_jsonl(path)
    except InputError as e:
        msg = str(e)
        if "\n" in msg or str(path) not in msg:
            raise AssertionError(f"error is not one line naming the file: {msg!r}") from None
        return
    assert len(c) and len(set(c.ids)) == len(c.ids)
    assert all(isinstance(t, str) and t.strip() for t in c.texts)
    for n, rec in enumerate(c.records):
        line = corpus._json_line(rec, path, n).encode("utf-8")
        back = corpus.parse_jsonl_line(line, f"{path}:{n}")
        assert same(rec, back), (rec, back)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
