"""The command line every fuzz harness shares: `--seeds DIR` writes its seed files there,
anything else is libFuzzer's (atheris) over `test_one_input`."""

import sys
from collections.abc import Callable
from pathlib import Path


def main(
    test_one_input: Callable[[bytes], object],
    seeds: Callable[[], dict[str, bytes]] | None = None,
    setup: Callable[[], object] | None = None,
) -> None:
    """`seeds()`: file name -> bytes; `setup()` runs before fuzzing (not before `--seeds`)."""
    if seeds is not None and len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        d = Path(sys.argv[2])
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (d / name).write_bytes(data)
        return
    import atheris

    if setup is not None:
        setup()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
