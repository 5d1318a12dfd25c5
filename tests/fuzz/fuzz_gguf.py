"""Coverage-guided fuzzing (atheris/libFuzzer) of the GGUF reader (`jaxsel.models.gguf_file`),
differentially against the `gguf` package's own reader.

    make fuzz                                              (every harness, FUZZ_SECONDS each)
    python tests/fuzz/fuzz_gguf.py tests/fuzz/corpus_gguf -max_total_time=60
    python tests/fuzz/fuzz_gguf.py --seeds tests/fuzz/corpus_gguf        # (re)write the seeds

Every input is parsed by `gguf_file.parse`: it answers with one AssetError naming the file or
with fields and tensors whose data lie inside the input; anything else (another exception, a
hang, a blown memory limit) is a crash that libFuzzer reports and saves. When it parses, the
input goes through `gguf.GGUFReader` too, and where that reader also succeeds both must read
the same fields, tensor names, types, shapes, offsets and bytes. The seeds are small GGUF files
written by `gguf.GGUFWriter` (scalars, strings, arrays, F32/F16/Q8_0 tensors, a custom
alignment). The test suite replays the kept corpus (tests/test_fuzz_regressions.py).
"""

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

try:  # the test suite replays the kept corpus without atheris
    import atheris
except ImportError:
    atheris = None

with atheris.instrument_imports(include=["jaxsel"]) if atheris else contextlib.nullcontext():
    from jaxsel.errors import AssetError
    from jaxsel.models import gguf_file

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None
DIR = Path(tempfile.mkdtemp(prefix="fuzz-gguf-", dir=SHM))
atexit.register(shutil.rmtree, DIR, True)


def test_one_input(data: bytes) -> bool:
    """True when the input parses (and agrees with gguf's reader where that reads it too)."""
    try:
        g = gguf_file.parse(data, "fuzz.gguf")
    except AssetError as e:
        if not str(e).startswith("fuzz.gguf: ") or "\n" in str(e):
            raise RuntimeError(f"not one line naming the file: {e!r}") from e
        return False
    for t in g.tensors.values():
        if not 0 <= t.offset <= t.offset + t.n_bytes <= len(data) or t.data.nbytes != t.n_bytes:
            raise RuntimeError(f"tensor {t.name} outside the input")
    path = DIR / "f.gguf"
    path.write_bytes(data)
    import gguf

    try:
        r = gguf.GGUFReader(path)
        ref = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    except Exception:  # gguf's reader fails on inputs ours reads (e.g. a huge alignment pad)
        return True
    if ref != g.fields or [t.name for t in r.tensors] != list(g.tensors):
        raise RuntimeError("fields or tensor names differ from gguf.GGUFReader's")
    for t in r.tensors:
        u = g.tensors[t.name]
        same = (u.type, u.shape, u.offset, u.n_bytes) == (
            t.tensor_type,
            tuple(int(s) for s in t.shape),
            t.data_offset,
            t.n_bytes,
        )
        if not same or not np.array_equal(u.data.view(np.uint8), t.data.view(np.uint8)):
            raise RuntimeError(f"tensor {t.name} differs from gguf.GGUFReader's")
    return True


def seeds() -> dict[str, bytes]:
    import gguf

    out = {}
    for name, align in (("small", None), ("align64", 64)):
        path = DIR / f"{name}.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        if align:
            w.add_custom_alignment(align)
        w.add_block_count(1)
        w.add_uint8("t.u8", 7)
        w.add_int16("t.i16", -3)
        w.add_uint64("t.u64", 2**40)
        w.add_float64("t.f64", 0.5)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "héllo")
        w.add_array("t.arr_i32", [1, -2, 3])
        w.add_token_list(["<s>", "a", "b", "ab"])
        w.add_token_merges(["a b"])
        w.add_tensor("f32", np.arange(8, dtype=np.float32).reshape(2, 4))
        w.add_tensor("f16", np.ones((1, 4), np.float16))
        q8 = gguf.quants.quantize(
            np.linspace(-1, 1, 32, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0
        )
        w.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out[f"{name}.gguf"] = path.read_bytes()
    return out


if __name__ == "__main__":
    import harness  # when run: the test suite loads this file by path, without its folder

    harness.main(test_one_input, seeds)
