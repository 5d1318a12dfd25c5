"""Remakes the format-3 fixtures that `tests/test_finezip_match.py` decodes with today's code.

An archive decodes bit-exactly only where the LM computes bit-identical floats: the same code,
library versions, flags *and CPU* (XLA:CPU generates code for the host's vector units; the same
archive failed its checksum on a CPU with AMX/AVX512-FP16). So the fixtures are made by the old
code on one machine, and `finezip_v3.cpu` records that machine's CPU (`api.cpu_signature`,
which new headers record); the tests that decode them run only on a CPU with that signature.

Run from the repository root of a checkout of the commit named for each fixture, with the
tests' $XLA_FLAGS and this file's directory as argument:

  git worktree add /tmp/old 24d97be   # lora: Lora scale passed as an argument
  cd /tmp/old && XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
      PYTHONPATH=.:tests python <repo>/tests/data/make_v3_fixtures.py lora <repo>/tests/data
  (eda3b41 with `spans`: decode steps read 2 attention buckets, not recorded in the header)

then, on the same machine, `python tests/data/make_v3_fixtures.py cpu tests/data`.
"""

import sys
from pathlib import Path


def main(what: str, out: Path) -> None:
    if what == "cpu":
        from jaxsel.finezip.api import cpu_signature

        (out / "finezip_v3.cpu").write_text(cpu_signature() + "\n")
        return
    from test_finezip import ENGLISH, tiny_lm

    from jaxsel import finezip
    from jaxsel.finezip.memorize import MemorizeConfig
    from jaxsel.models.loaders import load_smollm2

    tiny = tiny_lm(load_smollm2().tokenizer, 0)
    if what == "lora":  # at 24d97be
        cfg = finezip.FineZipConfig(
            coder="ac", context=18, stride=16, batch_size=8, fallback=False,
            lora=MemorizeConfig(steps=4, rank=4),
        )  # fmt: skip
        data, name = b"the cat sat on the mat; " * 40, "finezip_lora_v3.fzip"
    elif what == "spans":  # at eda3b41
        cfg = finezip.FineZipConfig(
            coder="ac-match", context=512, stride=256, batch_size=8, lanes=1, fallback=False
        )
        data, name = (ENGLISH * 90).encode(), "finezip_spans_v3.fzip"
    else:
        raise SystemExit(f"unknown fixture {what!r}: lora, spans or cpu")
    archive = finezip.compress(data, tiny, cfg)
    assert finezip.decompress(archive, tiny) == data
    (out / name).write_bytes(archive)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
