"""Where a spec's bytes live: a plain local path, or a URL read and written through fsspec.

`is_url` is the one test (a `scheme://` prefix); a plain path never reaches fsspec, so local
reading keeps its own fast code (`open`, `os.stat`, memory maps). A URL (`file://`, `memory://`,
`s3://`, `gs://`, `hf://datasets/...`, any protocol fsspec knows) is mapped to a filesystem and
a path by `resolve` (fsspec's `url_to_fs`), and everything done with it runs inside `errors`,
which turns the libraries' failures into one `InputError` line: a missing filesystem package
(naming the `jaxsel[remote]` extra), missing credentials, an unreachable host, a missing file.

The readers (`jaxsel.data.formats`) open URLs with `open_input` and list them with `files`;
the writers (`jaxsel.data.outputs`) write a local temporary file and publish it with `upload`;
a verified store at a URL (`jaxsel.shards.VerifiedStore`) writes its files with `write_whole`,
lists them with `listdir`, reads them with `cat` and deletes them with `remove`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from jaxsel.errors import InputError, JaxselError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
EXTRA = "pip install 'jaxsel[remote]'"
# Filesystems without a cheap rename: an object appears whole when its upload completes, so a
# file is written once at its final name (a rename there would be a copy and a delete).
WRITE_ONCE = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "hf", "oci"})
# Libraries whose exceptions `errors` reports in one line (their own messages span lines and
# carry botocore/aiohttp frames).
_REMOTE_MODULES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp", "requests")
_REMOTE_MODULES += ("huggingface_hub", "httpx", "httpcore", "adlfs", "azure", "urllib3", "fsspec")
_UNREACHABLE = (
    "ConnectionError",
    "ConnectError",
    "ClientConnectorError",
    "EndpointConnectionError",
)


_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`",
    "hf": "set HF_TOKEN, or run `hf auth login`",
}
_CREDENTIALS |= {"s3a": _CREDENTIALS["s3"], "gcs": _CREDENTIALS["gs"]}


def is_url(spec: str | os.PathLike) -> bool:
    """A `scheme://...` spec (read through fsspec); anything else is a local path."""
    return isinstance(spec, str) and _SCHEME.match(spec) is not None


def scheme(spec: str) -> str:
    """The URL's scheme, lower case ("s3" for "s3://b/k")."""
    return _SCHEME.match(spec).group(1).lower()


def resolve(spec: str) -> tuple[Any, str]:
    """(fsspec filesystem, path on it) of a URL; one line when fsspec or the protocol's package
    is missing, or the protocol is unknown."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise InputError(f"{spec}: reading URLs needs fsspec: {EXTRA}") from None
    with errors(spec):
        try:
            return url_to_fs(spec)
        except ValueError as e:
            if "Protocol not known" in str(e):
                raise InputError(f"{spec}: unknown filesystem protocol {scheme(spec)!r}") from None
            raise


def local_of(spec: str) -> str | None:
    """The local path of a `file://` URL (so `file:///a/b` and `/a/b` are one file), None for
    another URL."""
    return spec[len("file://") :] if spec.startswith("file://") else None


def join(spec: str, rel: str) -> str:
    """`rel` (a "/"-separated relative path) below the directory `spec`."""
    return f"{spec.rstrip('/')}/{rel}" if is_url(spec) else os.path.join(spec, rel)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def one_line(e: BaseException) -> str:
    """A library's message on one line (pyarrow's, botocore's and array_record's span lines),
    at most 300 characters; the exception's type when it has no message."""
    return " ".join(str(e).split())[:300] or type(e).__name__


def _message(spec: str, e: Exception) -> str | None:
    """One line for a filesystem library's failure, None for an exception that is not one."""
    chain = list(_chain(e))
    names = [c.__name__ for x in chain for c in type(x).__mro__]
    proto = scheme(spec) if is_url(spec) else "file"
    if isinstance(e, ImportError):
        return f"{spec}: {proto}:// needs a filesystem package ({one_line(e)}): {EXTRA}"
    if any("Credentials" in n for n in names):
        how = _CREDENTIALS.get(proto, "configure them as the storage's own tools do")
        return f"{spec}: no credentials found for {proto}:// ({how})"
    if isinstance(e, FileNotFoundError):
        return f"{spec}: no such file"
    if isinstance(e, IsADirectoryError):
        return f"{spec}: is a directory"
    if isinstance(e, PermissionError):
        return f"{spec}: access denied ({one_line(e)})"
    if any(n in _UNREACHABLE for n in names):
        return f"{spec}: cannot reach {proto}:// ({one_line(e)})"
    if isinstance(e, OSError) or any(
        type(x).__module__.split(".")[0] in _REMOTE_MODULES for x in chain
    ):
        return f"{spec}: {one_line(e)}"
    return None


@contextlib.contextmanager
def errors(spec: str) -> Iterator[None]:
    """Inside: a filesystem library's failure on `spec` is one `InputError` line (jaxsel's own
    errors pass as they are)."""
    try:
        yield
    except JaxselError:
        raise
    except Exception as e:
        msg = _message(spec, e)
        if msg is None:
            raise
        raise InputError(msg) from None


def guarded(spec: str):
    """`errors(spec)` for a URL; nothing for a local path (its errors stay as they were)."""
    return errors(spec) if is_url(spec) else contextlib.nullcontext()


def open_input(spec: str) -> IO[bytes]:
    """`spec` opened for binary reading (a file object with seek and read)."""
    if not is_url(spec):
        return open(spec, "rb")
    fs, path = resolve(spec)
    with errors(spec):
        if "memory" in fs.protocol:  # its files are shared objects: one position for all opens
            return io.BytesIO(fs.cat_file(path))
        return fs.open(path, "rb")


def info(spec: str) -> dict | None:
    """fsspec's info of a URL ({"type": "file"|"directory", "size": ...}); None: absent."""
    fs, path = resolve(spec)
    with errors(spec):
        try:
            return fs.info(path)
        except FileNotFoundError:
            return None


def is_file(spec: str) -> bool:
    if not is_url(spec):
        return os.path.isfile(spec)
    found = info(spec)
    return found is not None and found.get("type") == "file"


def is_dir(spec: str) -> bool:
    if not is_url(spec):
        return os.path.isdir(spec)
    found = info(spec)
    return found is not None and found.get("type") == "directory"


def size(spec: str) -> int:
    if not is_url(spec):
        return os.path.getsize(spec)
    found = info(spec)
    if found is None:
        raise InputError(f"{spec}: no such file")
    return int(found.get("size") or 0)


def files(spec: str) -> list[tuple[str, int]]:
    """(relative "/"-separated path, size) of every file below the directory `spec`, sorted."""
    if not is_url(spec):
        root = Path(spec)
        found = sorted(q for q in root.glob("**/*") if q.is_file())
        return [(q.relative_to(root).as_posix(), q.stat().st_size) for q in found]
    fs, path = resolve(spec)
    root = path.rstrip("/")
    with errors(spec):
        listing = fs.find(root, detail=True)
    found = [
        (name[len(root) :].lstrip("/"), int(d.get("size") or 0))
        for name, d in listing.items()
        if d.get("type") == "file"
    ]
    return sorted(found, key=lambda f: f[0].split("/"))  # as local paths sort (by parts)


def glob(pattern: str) -> list[str]:
    """The URLs matching a URL glob pattern, sorted."""
    fs, path = resolve(pattern)
    with errors(pattern):
        found = fs.glob(path, detail=True)
    return sorted(fs.unstrip_protocol(p) for p, d in found.items() if d.get("type") == "file")


def cat(spec: str) -> bytes:
    if not is_url(spec):
        with open(spec, "rb") as f:
            return f.read()
    fs, path = resolve(spec)
    with errors(spec):
        return fs.cat_file(path)


def key(spec: str) -> tuple[str, str]:
    """(protocol, normalised path): equal for two spellings of one remote location
    (`memory://a/b`, `memory:///a//b/`)."""
    fs, path = resolve(spec)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    norm = re.sub(r"/+", "/", path).rstrip("/")
    return proto, norm or "/"


def _publish(spec: str, put) -> None:
    """`put(fs, path)` writes a complete file at `path`; run so that nothing partial is ever
    visible at the URL `spec`: on an object store once, at `spec` itself (an object appears
    whole when its upload completes); elsewhere at a temporary name beside, moved over `spec`."""
    fs, path = resolve(spec)
    with errors(spec):
        parent = fs._parent(path)
        if parent and not fs.exists(parent):
            fs.makedirs(parent, exist_ok=True)
        if scheme(spec) in WRITE_ONCE:
            put(fs, path)
            return
        tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{os.urandom(6).hex()}.tmp"
        try:
            put(fs, tmp)
            fs.mv(tmp, path)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)


def upload(local: str, spec: str) -> None:
    """Publishes the complete local file `local` at the URL `spec`, never half-written
    (`_publish`: one upload on an object store, a temporary name and a move elsewhere)."""
    _publish(spec, lambda fs, path: fs.put_file(local, path))


def write_whole(spec: str, data: bytes) -> None:
    """Writes `data` at the URL `spec`, never half-written: on an object store one put of the
    complete bytes (`pipe_file`), elsewhere a temporary name and a move (`_publish`)."""
    _publish(spec, lambda fs, path: fs.pipe_file(path, data))


def listdir(spec: str) -> list[str]:
    """The names of the files directly in the directory at the URL `spec`, sorted (none when
    it is absent); listed afresh, never from a cached listing."""
    fs, path = resolve(spec)
    with errors(spec):
        try:
            found = fs.ls(path.rstrip("/"), detail=True, refresh=True)
        except FileNotFoundError:
            return []
    names = (d["name"].rstrip("/").rsplit("/", 1)[-1] for d in found if d.get("type") == "file")
    return sorted(names)


def remove(spec: str) -> None:
    """Deletes the file or directory tree at the URL `spec` (absent: nothing)."""
    fs, path = resolve(spec)
    with errors(spec):
        if fs.exists(path):
            fs.rm(path, recursive=True)


def probe_writable(spec: str) -> None:
    """Writes and deletes a small object beside the URL `spec` (in the directory that holds
    it), so that missing credentials or rights fail before any work (one line)."""
    fs, path = resolve(spec)
    probe = f"{fs._parent(path.rstrip('/')).rstrip('/')}/.jaxsel-probe.{os.urandom(6).hex()}"
    with errors(spec):
        fs.pipe_file(probe, b"")
        fs.rm(probe)
