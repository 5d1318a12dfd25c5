"""Coverage-guided fuzzing (atheris/libFuzzer) of the JSON Lines reader.

    python tests/fuzz/fuzz_jsonl.py tests/fuzz/corpus_jsonl -max_total_time=60   (or `make fuzz`)

Each input is written as a .jsonl file (as .jsonl.gz when it starts with the gzip magic) and
checked against `jsonl_contract.check_file`: a Corpus or a one-line InputError naming the file,
nothing else. Not part of the pytest run; the test suite replays the kept corpus.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["jaxsel"]):
    from jsonl_contract import check_file

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # inputs are files: keep them in RAM
DIR = Path(tempfile.mkdtemp(prefix="fuzz-jsonl-", dir=SHM))
atexit.register(shutil.rmtree, DIR, True)


def test_one_input(data: bytes) -> None:
    path = DIR / ("f.jsonl.gz" if data[:2] == b"\x1f\x8b" else "f.jsonl")
    path.write_bytes(data)
    check_file(path)


if __name__ == "__main__":
    import harness  # when run: the test suite loads this file by path, without its folder

    harness.main(test_one_input)
