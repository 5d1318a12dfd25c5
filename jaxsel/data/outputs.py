"""Every file jaxsel writes goes through here: checked before any work, written atomically.

- `check_output` / `check_workdir` run before models load or scoring starts: an output that is
  (or resolves to, through symlinks or hard links) one of the inputs or lies inside an input
  directory, a directory, below a file, or not writable is refused with one line naming it.
- `atomic_open` writes a fresh temporary file in the destination's directory
  (`tempfile.mkstemp`: an unpredictable name opened with O_EXCL, so a symlink planted there is
  never followed) and moves it over the destination with `os.replace` only once it is complete.
  A crash leaves the old file (or none), never a partial one; a failed write removes its temp.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from jaxsel.errors import InputError, JaxselError

STDOUT = "-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable_dir(path: Path, what: str) -> None:
    """`path` exists as a writable directory, or can be created under one."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        if p.is_symlink():  # a dangling link would be created through
            raise InputError(f"{what} {path}: {p} is a dangling symlink")
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{what} {path}: {p} is not a directory")
    try:  # a real probe: os.access says yes to root on read-only or special filesystems
        fd, probe = tempfile.mkstemp(dir=p, prefix=".jaxsel-probe.")
    except OSError as e:
        raise InputError(f"{what} {path}: directory {p} is not writable ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output(
    path: str | os.PathLike | None,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "output",
) -> None:
    """Refuses an output location before any work is done (see the module docstring).

    Args:
      path: the output file; None or "-" (stdout) pass.
      inputs: files (or directories) the command reads; None entries are ignored.
      what: how the message names the output (e.g. "--out").
    """
    if path is None or str(path) == STDOUT:
        return
    out = Path(path)
    real_parents = Path(os.path.realpath(out)).parents
    for src in inputs:
        if src is None or str(src) == STDOUT:
            continue
        if _same_file(out, Path(src)):
            raise InputError(f"{what} {out}: is the input {src}; refusing to overwrite it")
        if Path(src).is_dir() and Path(os.path.realpath(src)) in real_parents:
            # a text-directory pool would read the output back as a document next time
            raise InputError(f"{what} {out}: is inside the input directory {src}")
    if out.is_dir():
        raise InputError(f"{what} {out}: is a directory")
    _writable_dir(out.parent, what)


def check_workdir(path: str | os.PathLike | None, what: str = "--workdir") -> None:
    """A work directory must be a writable directory or creatable; None passes."""
    if path is None:
        return
    wd = Path(path)
    if wd.exists() and not wd.is_dir():
        raise InputError(f"{what} {wd}: exists and is not a directory")
    _writable_dir(wd, what)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Opens a fresh temp file beside `path`; on success it replaces `path` (parents created).

    `mode` is "wb" or "w" (UTF-8 text). The file gets the usual 0o666 & ~umask permissions.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise JaxselError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, JaxselError):
            raise JaxselError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """`np.save` to exactly `path` (no ".npy" appended), atomically; no pickled objects."""
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(arr), allow_pickle=False)
