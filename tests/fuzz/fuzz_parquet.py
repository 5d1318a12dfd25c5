"""Coverage-guided fuzzing (atheris/libFuzzer) of the Parquet reader.

    make fuzz                                            (every harness, FUZZ_SECONDS each)
    python tests/fuzz/fuzz_parquet.py tests/fuzz/corpus_parquet -max_total_time=60 \
        -dict=tests/fuzz/parquet.dict
    python tests/fuzz/fuzz_parquet.py --seeds tests/fuzz/corpus_parquet   # (re)write the seeds

Each input is written as a .parquet file and streamed with `open_source(path).batches(...)`;
`source_contract.check_source` allows its documents or one InputError line naming the file,
nothing else: another exception, a hang or a blown memory limit is a crash that libFuzzer
reports and saves. Only jaxsel's Python is instrumented (pyarrow's C++ is not), so coverage
guides the mutations through jaxsel's checks; the seeds and the dictionary reach pyarrow's
decoders. The test suite replays the kept corpus (tests/test_fuzz_regressions.py).
"""

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

try:  # the test suite replays the kept corpus without atheris
    import atheris
except ImportError:
    atheris = None

with atheris.instrument_imports(include=["jaxsel"]) if atheris else contextlib.nullcontext():
    from source_contract import check_source

    from jaxsel.data.sources import open_source

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # inputs are files: keep them in RAM
DIR = Path(tempfile.mkdtemp(prefix="fuzz-parquet-", dir=SHM))
atexit.register(shutil.rmtree, DIR, True)


def test_one_input(data: bytes) -> bool:
    path = DIR / "f.parquet"
    path.write_bytes(data)
    return check_source(open_source(path), str(path))


def seeds() -> dict[str, bytes]:
    """Small valid files: string and integer ids, several row groups, each codec, dictionary
    and plain encodings, data page v2, nulls, extra nested columns, large strings, and texts
    that the reader refuses (binary, empty)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["def f(x):\n    return x + 1\n", "héllo wörld ✓", "a", "text " * 20]
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    tables = {
        "plain": (pa.Table.from_pylist(rows), {}),
        "int-ids": (pa.Table.from_pylist([{**r, "id": i} for i, r in enumerate(rows)]), {}),
        "groups": (pa.Table.from_pylist(rows), {"row_group_size": 1}),
        "v2": (pa.Table.from_pylist(rows), {"data_page_version": "2.0", "use_dictionary": False}),
        "nested": (
            pa.Table.from_pylist(
                [{**r, "meta": {"n": i, "tags": ["x"] * i}} for i, r in enumerate(rows)]
            ),
            {},
        ),
        "large": (
            pa.table(
                {"id": pa.array(["a", "b"]), "text": pa.array(["x y", "z"], pa.large_string())}
            ),
            {},
        ),
        "nulls": (pa.table({"id": ["a", "b"], "text": ["x", None]}), {}),
        "binary": (pa.table({"id": ["a"], "text": pa.array([b"\xff"], pa.binary())}), {}),
        "empty-text": (pa.table({"id": ["a"], "text": [" "]}), {}),
        "no-rows": (
            pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
            {},
        ),
    }
    out = {}
    for name, (table, kw) in tables.items():
        for codec in ("none", "snappy", "zstd") if name == "plain" else ("snappy",):
            path = DIR / f"{name}-{codec}.parquet"
            pq.write_table(table, path, compression=codec, **kw)
            out[path.name] = path.read_bytes()
    return out


if __name__ == "__main__":
    import harness  # when run: the test suite loads this file by path, without its folder

    harness.main(test_one_input, seeds)
