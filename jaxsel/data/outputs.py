"""Every file jaxsel writes goes through here: checked before any work, written atomically.

- `check_job` runs before models load or scoring starts, for the CLI and the Python API alike.
  Every output (a file, a directory output, a sidecar) is compared with every input the job
  reads (`jaxsel.data.sources.Source.inputs`: globs expanded, `hf:` and text directories,
  `tfds:` dataset directories), with the workdir and with the other outputs, by real identity:
  `os.stat`'s device and inode (symlinks and hard links), and every directory above a path.
  Refused with one line naming it: an output that is an input, lies inside an input directory,
  or (a directory output) contains one; two outputs that are one file; an output at the
  workdir's own names (`manifest.json`, `shard-*`) or in its subdirectories; a workdir that is
  or lies inside an input directory; a socket or a block device; a directory where a file goes
  (or the reverse); a location that cannot be created or written.
- `atomic_open` writes a fresh temporary file in the destination's directory
  (`tempfile.mkstemp`: an unpredictable name opened with O_EXCL, so a symlink planted there is
  never followed) and moves it over the destination with `os.replace` only once it is complete.
  A crash leaves the old file (or none), never a partial one; a failed write removes its temp.
  A character device (`/dev/null`) or a FIFO is opened and written in place, never replaced.
- `atomic_dir` is the same for a directory output: written beside, renamed into place whole.
- URLs (`jaxsel.data.fs`): a `file://` URL is its local path. Another URL is compared by
  (protocol, normalised path): the same location spelled twice is one output, an output below
  a remote input directory is refused; the output's directory gets a probe object (write and
  delete) so that missing credentials or rights fail before any work. A remote file is written
  locally and published whole (`fs.upload`: one upload on an object store, a temporary name and
  a move elsewhere); a remote directory output is written locally, then its files are published
  one by one, the old output's files removed first and the metadata (`state.json`,
  `_jaxsel.meta.json`) last, so a directory with its `_jaxsel.meta.json` is complete. A
  `--workdir` URL is checked as a local one is (not an existing file; a probe object written
  and deleted in it) and compared with inputs and outputs by (protocol, normalised path); its
  shards are written by the verified store itself (`jaxsel.shards.VerifiedStore`). A remote
  location that a `Path` has folded (`Path("s3://b/w")` is "s3:/b/w") is refused in one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxsel.data import fs
from jaxsel.errors import InputError, JaxselError

STDOUT = "-"
DIR_META = "_jaxsel.meta.json"  # a directory output's sidecar ("_": dataset readers skip it)
WORKDIR_FILES = ("manifest.json", "shard-", "curve-")  # names a workdir's jobs write (prefixes)


class Output(NamedTuple):
    """An output location; `what` names it in messages (e.g. "--out"); a `directory` output is
    written whole by `atomic_dir`."""

    what: str
    path: str | os.PathLike | None
    directory: bool = False


def _local(path: str | os.PathLike) -> str | os.PathLike:
    """A `file://` URL as its local path; any other path or URL as it is."""
    return fs.local_of(path) or path if fs.is_url(path) else path


def sidecar_of(path: str | os.PathLike, directory: bool = False) -> Path | str | None:
    """The provenance sidecar of an output: `<out>.meta.json`, `<dir>/_jaxsel.meta.json` for a
    directory output (a URL for a URL); None for stdout and outputs written in place (devices,
    FIFOs)."""
    path = _local(path)
    if str(path) == STDOUT or in_place(path):
        return None
    if fs.is_url(path):
        return fs.join(path, DIR_META) if directory else f"{path}.meta.json"
    return Path(path) / DIR_META if directory else Path(f"{path}.meta.json")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stat(path: str | os.PathLike) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None


def in_place(path: str | os.PathLike) -> bool:
    """A character device or a FIFO: written in place, never replaced."""
    return not fs.is_url(path) and _special(_stat(path))


def _special(st: os.stat_result | None) -> bool:
    return st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode))


class _Where(NamedTuple):
    """Where a path really is: as given, symlinks resolved, its stat (None: absent) and the
    (device, inode) of every existing directory above it."""

    path: Path
    real: Path
    st: os.stat_result | None
    above: frozenset[tuple[int, int]]

    @classmethod
    def of(cls, path: str | os.PathLike) -> _Where | _Remote:
        path = _local(path)
        if fs.is_url(path):
            return _Remote.of(path)
        real = Path(os.path.realpath(path))
        above = {(s.st_dev, s.st_ino) for s in map(_stat, real.parents) if s is not None}
        return cls(Path(path), real, _stat(real), frozenset(above))

    def same(self, other: _Where | _Remote) -> bool:
        if not isinstance(other, _Where):
            return False
        if self.st is None or other.st is None:
            return self.st is other.st and self.real == other.real
        return (self.st.st_dev, self.st.st_ino) == (other.st.st_dev, other.st.st_ino)

    def inside(self, d: _Where | _Remote) -> bool:
        """Below the directory `d` (at any depth)."""
        if not isinstance(d, _Where):
            return False
        if d.st is None:
            return d.real in self.real.parents
        return stat.S_ISDIR(d.st.st_mode) and (d.st.st_dev, d.st.st_ino) in self.above

    def is_dir(self) -> bool:
        return self.st is not None and stat.S_ISDIR(self.st.st_mode)


class _Remote(NamedTuple):
    """Where a URL is: as given, its (protocol, normalised path) and what is there ("file",
    "directory", None: absent). `st` is None (nothing remote is a device)."""

    path: str
    key: tuple[str, str]
    kind: str | None
    st: None = None

    @classmethod
    def of(cls, path: str) -> _Remote:
        found = fs.info(path)
        return cls(path, fs.key(path), None if found is None else found.get("type"))

    def same(self, other: _Where | _Remote) -> bool:
        return isinstance(other, _Remote) and self.key == other.key

    def inside(self, d: _Where | _Remote) -> bool:
        if not isinstance(d, _Remote) or d.key[0] != self.key[0] or self.key == d.key:
            return False
        return d.key[1] == "/" or self.key[1].startswith(d.key[1] + "/")

    def is_dir(self) -> bool:
        return self.kind == "directory"


def _check_remote_kind(o: Output, w: _Remote) -> None:
    if w.kind == "directory" and not o.directory:
        raise InputError(f"{o.what} {o.path}: is a directory")
    if w.kind == "directory":
        if fs.files(o.path) and not fs.is_file(fs.join(o.path, DIR_META)):
            raise InputError(
                f"{o.what} {o.path}: a directory that jaxsel did not write (no {DIR_META}); "
                "refusing to replace it"
            )
    elif w.kind is not None and o.directory:
        raise InputError(f"{o.what} {o.path}: exists and is not a directory")


def _check_kind(o: Output, w: _Where | _Remote) -> None:
    """What is at the output location can be written (replaced, or written in place)."""
    if isinstance(w, _Remote):
        return _check_remote_kind(o, w)
    if w.st is None:
        return
    mode = w.st.st_mode
    if stat.S_ISDIR(mode) and not o.directory:
        raise InputError(f"{o.what} {o.path}: is a directory")
    if stat.S_ISDIR(mode):
        if any(os.scandir(w.real)) and not (w.real / DIR_META).is_file():
            raise InputError(
                f"{o.what} {o.path}: a directory that jaxsel did not write (no {DIR_META}); "
                "refusing to replace it"
            )
    elif o.directory:
        raise InputError(f"{o.what} {o.path}: exists and is not a directory")
    elif not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        kind = (
            "a socket" if stat.S_ISSOCK(mode) else "a block device" if stat.S_ISBLK(mode) else None
        )
        raise InputError(f"{o.what} {o.path}: is {kind or 'not a file'}; refusing to write it")


def _name(w: _Where | _Remote) -> str:
    """The last component of where `w` really is."""
    return w.real.name if isinstance(w, _Where) else w.key[1].rsplit("/", 1)[-1]


def _owned_by_workdir(w: _Where | _Remote, wd: _Where | _Remote, directory: bool) -> bool:
    """An output the workdir's jobs could write over: in a subdirectory of it, a directory
    output in it, or a file at one of its own names."""
    if not w.inside(wd):
        return False
    if isinstance(w, _Where):
        top = _Where.of(w.real.parent).same(wd)
    else:
        top = w.key[1].rsplit("/", 1)[0] == wd.key[1].rstrip("/")
    return directory or not top or _name(w).startswith(WORKDIR_FILES)


def check_job(
    outs: Iterable[Output | tuple],
    inputs: Iterable[str | os.PathLike | None] = (),
    workdir: str | os.PathLike | None = None,
) -> None:
    """Refuses a job's output locations before any work is done (see the module docstring).

    Args:
      outs: `Output`s (or `(what, path[, directory])` tuples); None paths and "-" (stdout) pass.
      inputs: the files and directories the job reads; None entries are ignored.
      workdir: the job's work directory, if any.
    """
    _local_workdir(workdir)
    ins = [_Where.of(p) for p in inputs if p is not None and str(p) != STDOUT]
    wd = None
    if workdir is not None:
        with fs.guarded(str(workdir)):
            wd = _Where.of(workdir)
    if wd is not None:
        for i in ins:
            if i.is_dir() and (wd.same(i) or wd.inside(i)):
                raise InputError(f"--workdir {workdir}: is (inside) the input directory {i.path}")
            if i.inside(wd) and _name(i).startswith(WORKDIR_FILES):
                raise InputError(f"--workdir {workdir}: would write over the input {i.path}")
    done: list[tuple[Output, _Where]] = []
    for o in map(lambda t: Output(*t), outs):
        if o.path is None or str(o.path) == STDOUT:
            continue
        with fs.guarded(str(o.path)):
            w = _Where.of(o.path)
            _check_kind(o, w)
        for i in ins:
            if w.same(i):
                raise InputError(
                    f"{o.what} {o.path}: is the input {i.path}; refusing to overwrite it"
                )
            if i.is_dir() and w.inside(i):
                # a text-directory pool would read the output back as a document next time
                raise InputError(f"{o.what} {o.path}: is inside the input directory {i.path}")
            if o.directory and i.inside(w):
                raise InputError(f"{o.what} {o.path}: contains the input {i.path}")
        if wd is not None:
            if wd.same(w) or (o.directory and wd.inside(w)):
                raise InputError(f"{o.what} {o.path}: is (or contains) --workdir {workdir}")
            if _owned_by_workdir(w, wd, o.directory):
                raise InputError(
                    f"{o.what} {o.path}: is where --workdir {workdir} keeps its own files "
                    "(write it beside them, or elsewhere)"
                )
        for p, q in done:
            if w.same(q) and not _special(w.st):
                raise InputError(f"{o.what} {o.path}: is also {p.what}")
            if (p.directory and w.inside(q)) or (o.directory and q.inside(w)):
                raise InputError(f"{o.what} {o.path}: is inside (or contains) {p.what} {p.path}")
        done.append((o, w))
    for o, w in done:  # probes write: only once nothing was refused
        if isinstance(w, _Remote):
            fs.probe_writable(w.path)
        elif not _special(w.st):
            _writable_dir(Path(_local(o.path)).parent, o.what)
    check_workdir(workdir)


def check_output(
    path: str | os.PathLike | None,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "output",
) -> None:
    """`check_job` of one output file."""
    check_job([Output(what, path)], inputs)


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


def check_workdir(path: str | os.PathLike | None, what: str = "--workdir") -> None:
    """A work directory must be a writable directory or creatable; None passes. At a URL: not
    an existing file, and a probe object can be written in it and deleted."""
    if path is None:
        return
    _local_workdir(path, what)
    if fs.is_url(_local(path)):
        found = fs.info(path)
        if found is not None and found.get("type") != "directory":
            raise InputError(f"{what} {path}: exists and is not a directory")
        fs.probe_writable(fs.join(path, "probe"))
        return
    wd = Path(_local(path))
    if wd.exists() and not wd.is_dir():
        raise InputError(f"{what} {wd}: exists and is not a directory")
    _writable_dir(wd, what)


def _local_workdir(path: str | os.PathLike | None, what: str = "--workdir") -> None:
    """Refuses a remote location that is not a URL string: one that `Path` has folded
    ("s3://b/w" -> "s3:/b/w", which would otherwise be created as a local directory named
    "s3:"). The verified store takes a `--workdir` URL as a string; the adapter checkpoints of
    `jaxsel.lm.store` (a `Path`) are written locally only."""
    if path is None or fs.is_url(path):
        return
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]+):/", str(path))
    if scheme is not None and scheme.group(1).lower() != "file":
        how = (
            "give the URL as a string"
            if what == "--workdir"
            else "it is written locally only; give a local directory"
        )
        raise InputError(f"{what} {path}: a remote location given as a path ({how})")


@contextlib.contextmanager
def _remote_file(path: str, mode: str = "wb", **text) -> Iterator:
    """A local temporary file, published whole at the URL `path` once the block completes
    (`fs.upload`); nothing is written remotely when the block fails."""
    with tempfile.TemporaryDirectory(prefix="jaxsel-out-") as d:
        tmp = os.path.join(d, "out")
        with open(tmp, mode, **text) as f:
            yield f
        fs.upload(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[io.IOBase]:
    """Opens a fresh temp file beside `path`; on success it replaces `path` (parents created).
    A character device or a FIFO at `path` is opened and written in place instead.

    `mode` is "wb" or "w" (UTF-8 text). The file gets the usual 0o666 & ~umask permissions.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    text = {"encoding": "utf-8"} if mode == "w" else {}
    path = _local(path)
    if fs.is_url(path):
        with _remote_file(path, mode, **text) as f:
            yield f
        return
    path = Path(path)
    if in_place(path):
        try:
            with open(path, mode, **text) as f:
                yield f
        except OSError as e:
            raise JaxselError(f"{path}: cannot write ({e.strerror or e})") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise JaxselError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **text) as f:
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that open a file by name: a fresh name in a new temporary directory beside
    `path`, moved over `path` once the block completes (copied into a device or FIFO; uploaded
    to a URL)."""
    path = _local(path)
    if fs.is_url(path):
        with tempfile.TemporaryDirectory(prefix="jaxsel-out-") as d:
            tmp = Path(d) / path.rstrip("/").rsplit("/", 1)[-1]
            yield tmp
            fs.upload(str(tmp), path)
        return
    path = Path(path)
    special = in_place(path)
    try:
        if not special:
            path.parent.mkdir(parents=True, exist_ok=True)
        where = None if special else path.parent
        d = tempfile.TemporaryDirectory(dir=where, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise JaxselError(f"{path}: cannot write ({e.strerror})") from None
    with d:
        tmp = Path(d.name) / path.name
        yield tmp
        try:
            if special:
                with open(tmp, "rb") as src, open(path, "wb") as f:
                    shutil.copyfileobj(src, f)
            else:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, path)
        except OSError as e:
            raise JaxselError(f"{path}: cannot write ({e.strerror or e})") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary directory beside `path`, renamed to `path` once the block completes
    (a previous jaxsel output there is replaced: moved aside, then deleted), so the directory
    appears whole or not at all; on failure the temporary directory is removed. At a URL: see
    `_remote_dir`."""
    path = _local(path)
    if fs.is_url(path):
        with _remote_dir(path) as tmp:
            yield tmp
        return
    path = Path(path)
    _check_kind(Output("output", path, True), _Where.of(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise JaxselError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, JaxselError):
            raise JaxselError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


_LAST = ("state.json", "dataset_info.json", DIR_META)  # published last, the sidecar at the end


@contextlib.contextmanager
def _remote_dir(path: str) -> Iterator[Path]:
    """A local temporary directory whose files are published below the URL `path` once the
    block completes: a previous jaxsel output there is removed, then each file is uploaded
    whole (`fs.upload`), the metadata last; a failed upload removes what was published."""
    with fs.guarded(path):
        _check_kind(Output("output", path, True), _Remote.of(path))
    with tempfile.TemporaryDirectory(prefix="jaxsel-out-") as d:
        root = Path(d)
        yield root
        names = sorted(q.relative_to(root).as_posix() for q in root.rglob("*") if q.is_file())
        names.sort(key=lambda n: _LAST.index(n) + 1 if n in _LAST else 0)
        fs.remove(path)
        try:
            for n in names:
                fs.upload(str(root / n), fs.join(path, n))
        except BaseException:
            with contextlib.suppress(Exception):
                fs.remove(path)
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
