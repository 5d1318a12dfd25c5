"""What the commands share: the data flags (a pool, a target) and how they are read, the model
flags, the check of every output against every input, and bytes from a file or stdin."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from pathlib import Path

from jaxsel import flags
from jaxsel.data import outputs
from jaxsel.errors import InputError
from jaxsel.flags import option

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Pool:
    """The pool and how its records are read."""

    pool: str | None = option(
        None,
        "pool: JSONL(.gz), Parquet, a directory of text files, tfds:NAME[/CONFIG]:SPLIT "
        "(prepared in --data-dir) or hf:PATH (a saved datasets.Dataset); None: the embedded "
        "mixed pool",
        input=True,
    )
    text_field: str = option("text", "text field of JSONL/Parquet records")
    id_field: str = option("id", "id field of JSONL/Parquet records ('' numbers records by line)")
    skip_empty: bool = option(False, "skip (and log) empty texts instead of failing")
    data_dir: str | None = option(None, "TFDS data directory of tfds: inputs (None: TFDS's own)")

    def read(self, path: str, text_field: str | None = None, id_field: str | None = None):
        """The in-memory Corpus at `path`, read with these settings (other fields if given)."""
        from jaxsel.data import read_corpus

        on_empty = "skip" if self.skip_empty else "error"
        text_field = self.text_field if text_field is None else text_field
        id_field = self.id_field if id_field is None else id_field
        return read_corpus(path, text_field, id_field or None, on_empty, self.data_dir)

    def load_pool(self):
        from jaxsel.data.defaults import default_pool

        return self.read(self.pool) if self.pool else default_pool()


@dataclasses.dataclass(frozen=True)
class Data(Pool):
    """The pool, the target and how their records are read."""

    target: str | None = option(
        None, "target/reference set, same forms as --pool (None: HumanEval)", input=True
    )
    target_text_field: str | None = option(None, "text field of the target (None: --text-field)")
    target_id_field: str | None = option(None, "id field of the target (None: --id-field)")

    def load_target(self):
        from jaxsel.data.defaults import humaneval_target

        if not self.target:
            return humaneval_target()
        return self.read(self.target, self.target_text_field, self.target_id_field)


def data(cls: type = Data):
    """The field of a command's data flags (at the top: --pool, --target, ...)."""
    return option(cls(), "inputs and how their records are read", prefix="")


def model(help: str = "a *.gguf file or an HF directory (None: the embedded SmolLM2-135M)"):
    return option(None, help, input=True)


def dtype():
    return option("float32", "compute dtype", choices=DTYPES)


def check_files(config, more_inputs=(), outs=()) -> None:
    """Refuses every output of a command (fields marked "output", and `outs`: `Output`s or
    `(what, path)`) before any work, against everything it reads (fields marked "input", and
    `more_inputs`) and its --workdir (`jaxsel.data.outputs.check_job`)."""
    from jaxsel.data.adapters import inputs_of

    ins, outs = [*more_inputs], [*outs]
    for f, value in _leaves(config):
        if value is None:
            continue
        if f.metadata.get("input"):
            ins += value if isinstance(value, tuple) else [value]
        if f.metadata.get("output"):
            what = f.name.upper() if f.metadata.get("positional") else flags.flag_name(f)
            outs.append((what, value))
    data_dir = getattr(getattr(config, "data", None), "data_dir", None)
    workdir = getattr(config, "workdir", None)
    outputs.check_job(outs, inputs_of(*ins, data_dir=data_dir), workdir)


def _leaves(config):
    """(field, value) of every non-Config field of `config`, nested Configs included."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value)
        else:
            yield f, value


def read_bytes(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None


def write_bytes(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        outputs.write_bytes(path, data)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as SIGINT raises KeyboardInterrupt: the job unwinds
    (compressor pools stop, finished shards stay) and exits with one line."""


def _raise_terminated(signum, frame):
    raise Terminated


def trap_sigterm() -> None:
    """SIGTERM raises `Terminated` (signal handlers belong to the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
