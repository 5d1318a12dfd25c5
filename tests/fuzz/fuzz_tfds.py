"""Coverage-guided fuzzing (atheris/libFuzzer) of the TFDS (array_record) reader.

    make fuzz                                            (every harness, FUZZ_SECONDS each)
    python tests/fuzz/fuzz_tfds.py tests/fuzz/corpus_tfds -max_total_time=60 \
        -dict=tests/fuzz/tfds.dict
    python tests/fuzz/fuzz_tfds.py --seeds tests/fuzz/corpus_tfds   # (re)write the seeds

A tiny TFDS dataset is prepared once (array_record, in a temporary data dir, no network); each
input replaces the bytes of its train split's shard (`shard`) and `tfds:NAME:train` is streamed
with `open_source`. `source_contract.check_source` allows its documents or one InputError line
naming the split, nothing else: another exception, a hang, a blown memory limit or an abort of
array_record's C++ reader is a crash that libFuzzer reports and saves. The test suite replays
the kept corpus (tests/test_fuzz_regressions.py).
"""

import atexit
import contextlib
import functools
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

NAME = "jaxsel_fuzz_shard"
SPEC = f"tfds:{NAME}:train"
BLOCK = 1 << 16  # riegeli's block size
SEP = b"\xfe\xfdREC"  # between the records of a mode-2 input
TEXTS = ["def f(x):\n    return x + 1\n", "héllo wörld ✓", "a", "text " * 20]

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # inputs are files: keep them in RAM
DIR = Path(tempfile.mkdtemp(prefix="fuzz-tfds-", dir=SHM))
atexit.register(shutil.rmtree, DIR, True)


@functools.cache
def prepared() -> tuple[Path, Path]:
    """(data dir, train shard) of the tiny dataset, prepared on first use."""
    import numpy as np
    import tensorflow_datasets as tfds

    class JaxselFuzzShard(tfds.core.GeneratorBasedBuilder):
        """A few short texts as a TFDS text dataset."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"id": tfds.features.Text(), "text": tfds.features.Text(), "n": np.int64}
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, t in enumerate(TEXTS):
                yield f"d{i}", {"id": f"d{i}", "text": t, "n": len(t)}

    tfds.disable_progress_bar()
    data_dir = DIR / "tfds"
    JaxselFuzzShard(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    (shard,) = data_dir.rglob("*-train.array_record-*")
    return data_dir, shard


def shard(data: bytes) -> bytes:
    """The shard a fuzz input stands for. Its first byte picks a mode, so that mutations reach
    past the hashes that guard every riegeli chunk: 0 = the rest as is; 1 = the rest is a 2-byte
    little-endian length n, then the 64 KiB blocks of a shard with their zero padding cut off
    (n bytes, then the rest; array_record pads its footer to a block boundary, so a real shard
    is 128 KiB of which under 1 KiB is records, index and postscript); 2 = the rest is the
    records (serialized tf.train.Example protos) joined by `SEP`, written as TFDS writes them."""
    mode, rest = (data[0] % 3, data[1:]) if data else (0, b"")
    if mode == 1 and len(rest) >= 2:
        n = int.from_bytes(rest[:2], "little")
        return rest[2 : 2 + n].ljust(BLOCK, b"\0") + rest[2 + n :].ljust(BLOCK, b"\0")
    if mode == 2:
        from array_record.python.array_record_module import ArrayRecordWriter

        tmp = DIR / "records.tmp"
        w = ArrayRecordWriter(str(tmp), "group_size:1")
        for record in rest.split(SEP):
            w.write(record)
        w.close()
        return tmp.read_bytes()
    return rest


def seeds(real: bytes) -> dict[str, bytes]:
    """The real shard in each mode (`shard` inverted), and truncated."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(prepared()[1]))
    records = reader.read_all()
    reader.close()
    a, b = (real[i : i + BLOCK].rstrip(b"\0") for i in (0, BLOCK))
    out = {
        "blocks": b"\1" + len(a).to_bytes(2, "little") + a + b,
        "records": b"\2" + SEP.join(records),
        "truncated": b"\0" + real[:1024],
    }
    assert shard(out["blocks"]) == real and not any(SEP in r for r in records)
    return out


def test_one_input(data: bytes) -> bool:
    data_dir, path = prepared()
    tmp = DIR / "shard.tmp"
    tmp.write_bytes(shard(data))
    os.replace(tmp, path)  # a new file: a reader still open on the old one keeps it
    return check_source(open_source(SPEC, data_dir=data_dir), SPEC)


def main() -> None:
    import harness  # when run: the test suite loads this file by path, without its folder

    harness.main(test_one_input, lambda: seeds(prepared()[1].read_bytes()), setup=prepared)


if __name__ == "__main__":
    main()
