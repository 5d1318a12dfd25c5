"""The CPU stage on a Ray cluster: `--engine ray [--ray-address ADDR]`.

`RayEngine` implements the batch loop's engine protocol (`jaxsel.methods.runtime.Engine`): the
batches of the pool without a finished shard are computed as Ray Data `map_batches` over the
same parts the local engine reads (`jaxsel.data.sources`); each Ray actor makes the batch
function once (for a method's scoring: the method's target state, shipped when it pickles, else
prepared on the actor with one worker) and then computes whole batches of a part, named as the
local engine names them (part, first row). The driver stores each result as the same
checksummed shard the local engine would write, and the loop then reads those shards back in
pool order; the output is the local engine's, byte for byte. Only batches without a finished
shard are sent (a job with no shard yet sends whole parts), so a rerun after a killed task or
driver redoes the missing shards alone. Any pass of the loop runs here: scoring and DSIR's
first pass over the pool alike. The engine knows no method by name: a method says whether Ray
can run it (`engines`).

Without an address a local Ray starts (as many CPUs as workers) and stops with the job, however
the job stops (SIGTERM, Ctrl-C, kill -9: `session`); a running Ray (`ray.init()` in a notebook)
is used as it is. Paths of the pool must be readable by
every worker (shared storage on a real cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxsel.errors import InputError, JaxselError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RayEngine:
    """Where and how wide the Ray stage runs; an engine of the batch loop.

    Use as a context manager (a `Run` enters it): Ray starts (or is joined) on first use and a
    Ray started here stops when the job ends.

    Attributes:
      address: a running cluster ("HOST:PORT" of its GCS, "ray://HOST:PORT" for Ray Client, or
        "auto"); None starts a local Ray for the job.
      workers: Ray actors computing at once (default: the cluster's CPUs).
    """

    address: str | None = None
    workers: int | None = None
    name = "ray"
    where = "on Ray"
    needs_store = True  # results travel through the loop's shards

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--ray-workers must be positive, got {self.workers}")
        if self.address is not None:
            _host_port(self.address)
        self._stack = contextlib.ExitStack()
        self._size: int | None = None

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._size = None

    def parts(self, source) -> None:
        return None  # the driver reads every part; the actors compute

    def fill(self, source, make, store, batch_size: int, desc: str, progress=False) -> None:
        """Computes every batch of `source` without a finished shard in `store` on Ray and
        stores it there (`progress`: a bar over the parts to compute, a part credited as its
        Ray task ends)."""
        from jaxsel.data.progress import PoolProgress
        from jaxsel.shards import fingerprint_texts, shard_name

        jobs: dict[int, list[int] | None] = {}
        if store.empty():  # nothing to resume: every batch of every part, without reading here
            jobs = {p: None for p in range(len(source.parts()))}
        else:
            for batch in source.batches(batch_size):
                part, row = int(batch.keys[0, 0]), int(batch.keys[0, 1])
                if store.load(shard_name(part, row), fingerprint_texts(batch.texts)) is None:
                    jobs.setdefault(part, []).append(row)
        done = 0
        parts = source.parts()
        todo = [parts[p] for p in sorted(jobs)]
        bar = PoolProgress.of(source, todo, f"{desc} (Ray)", disable=not progress)
        with contextlib.closing(bar):
            for out in self._map(_Worker, (make, source, batch_size), _items(jobs)) if jobs else ():
                cols = (out[k] for k in ("part", "row", "fp", "result", "stats", "error"))
                for p, r, fp, res, st, err in zip(*cols, strict=True):
                    if err:
                        raise JaxselError(str(err))
                    result = np.load(io.BytesIO(res), allow_pickle=False)
                    store.save(shard_name(int(p), int(r)), result, json.loads(st), str(fp))
                    done += 1
                part = out["part"].astype(np.int64)  # a task computes one part's batches
                for p in np.unique(part):
                    bar.part_done(int(p), int(out["docs"][part == p].sum()))
        log.info("%s: %d batches computed on Ray", desc, done)

    def _map(self, actor: type, args: tuple, items: list[dict]) -> Iterator[dict]:
        """`items` through Ray Data map_batches on a pool of `actor`s (one item per call): the
        output batches as they finish."""
        if self._size is None:
            self._size = self._stack.enter_context(session(self))
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        if not logging.getLogger().isEnabledFor(logging.INFO):  # other libraries' INFO: with -v
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items(items).map_batches(
            actor,
            fn_constructor_args=args,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self._size, len(items))),
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address; None for "auto" (Ray finds it)."""
    if address == "auto":
        return None
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _reachable(address: str) -> None:
    """Refuses an address nobody listens on in one line (ray.init would retry for minutes)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=5).close()
    except OSError as e:
        raise InputError(f"Ray address {address} unreachable ({e.strerror or e})") from None


@contextlib.contextmanager
def session(engine: RayEngine) -> Iterator[int]:
    """Connects to (or starts) Ray for the job and yields the number of workers to use; a Ray
    started here stops when the job ends, one that was running stays.

    A stopped job stops its Ray: SIGTERM keeps the job's handler (Ray's own, installed by
    `ray.init`, would abort the driver with a native trace) and SIGTERM or SIGINT unwind
    through `ray.shutdown()`; a job killed outright (`kill -9`, out of memory) has its Ray
    processes killed by `_reap` within a second, where Ray's own agents would linger a minute
    on the lost GCS."""
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'jaxsel[ray]'") from None
    started, reaper = False, None
    if not ray.is_initialized():
        kw: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if engine.address is not None:
            _reachable(engine.address)
            kw["address"] = engine.address
        else:
            kw["num_cpus"] = engine.workers or os.cpu_count() or 1
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGTERM) if main else None
        try:
            with warnings.catch_warnings():  # Ray forks to exec its processes: no deadlock risk
                warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
                ray.init(**kw)
        except ConnectionError as e:
            raise JaxselError(f"Ray at {engine.address}: {e}") from None
        finally:
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)
        started = True
        if engine.address is None:
            reaper = _reaper()
    try:
        yield engine.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
    finally:
        if started:
            ray.shutdown()
        if reaper is not None:
            reaper.kill()
            reaper.wait()


def _reaper() -> subprocess.Popen:
    """A process that kills this one's descendants (the local Ray's GCS, raylet, agents and
    workers) should this one die before it stops them (`_reap`)."""
    root = str(Path(__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(0, {root!r}); from jaxsel.ray_engine import _reap; _reap()"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        close_fds=True,
    )


def _reap() -> None:
    """The reaper's body (`_reaper`): every half second notes the descendants of the process
    `sys.argv[1]` (pid and start time, so a reused pid is never taken for one); once that
    process has ended, kills (SIGKILL) those still running and their own descendants. Ignores
    SIGINT and SIGTERM: the job's handlers stop Ray in order and then kill this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    job, me = int(sys.argv[1]), os.getpid()
    try:
        fd = os.pidfd_open(job)  # readable once the job has ended (Linux >= 5.3)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # pragma: no cover - no pidfd: the job's pid is polled
        fd = None
    seen: dict[int, str] = {}
    while True:
        start = _procs().get(job, ("",))[0]
        if not start or fd is not None and select.select([fd], [], [], 0.5)[0]:
            break
        seen.update(_tree({job: start}, me))
        if fd is None:  # pragma: no cover
            time.sleep(0.5)
    for _ in range(3):  # a process may start another before its kill lands
        seen.update(_tree(seen, me))
        running = _procs()
        for pid, start in seen.items():
            if running.get(pid, ("",))[0] == start:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _procs() -> dict[int, tuple[str, int]]:
    """pid -> (start time, parent pid) of every process, from /proc."""
    out = {}
    for d in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(d)] = (fields[19], int(fields[1]))
        except (ValueError, OSError, IndexError):
            continue
    return out


def _tree(roots: dict[int, str], me: int) -> dict[int, str]:
    """pid -> start time of the descendants of `roots` (pid -> start time) still running,
    but `me`."""
    procs = _procs()
    found: dict[int, str] = {}
    todo = [p for p, start in roots.items() if procs.get(p, ("",))[0] == start]
    while todo:
        parent = todo.pop()
        for pid, (start, ppid) in procs.items():
            if ppid == parent and pid != me and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


class _Worker:
    """A Ray actor: the batch function, made once, computes batches of parts."""

    def __init__(self, make, source, batch_size: int):
        self.fn, self.source, self.batch_size = make(), source, batch_size
        self.parts = source.parts()

    def __call__(self, jobs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from jaxsel.shards import fingerprint_texts

        keys = ("part", "row", "fp", "result", "stats", "error", "docs")
        out: dict[str, list] = {k: [] for k in keys}
        for part, batch in _wanted(self.source, self.parts, self.batch_size, jobs):
            try:
                result, stats = self.fn(batch)
            except JaxselError as e:  # said on the driver in one line, not as a Ray traceback
                result, stats, error = np.zeros(0), {}, str(e)
            else:
                error = ""
            buf = io.BytesIO()
            np.save(buf, np.asarray(result), allow_pickle=False)
            out["part"].append(part)
            out["row"].append(int(batch.keys[0, 1]))
            out["fp"].append(fingerprint_texts(batch.texts))
            out["result"].append(buf.getvalue())
            out["stats"].append(json.dumps(stats))
            out["error"].append(error)
            out["docs"].append(len(batch))
            if error:
                break
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _wanted(source, parts: list, batch_size: int, jobs: dict[str, np.ndarray]) -> Iterator:
    """(part index, batch) of the batches that `jobs` names (a part and the JSON list of its
    batches' first rows, or null for all of them)."""
    for part, rows in zip(jobs["part"].tolist(), jobs["rows"].tolist(), strict=True):
        wanted = json.loads(rows)
        wanted = None if wanted is None else set(wanted)
        for batch in source.batches(batch_size, [parts[part]]):
            if wanted is None or int(batch.keys[0, 1]) in wanted:
                yield part, batch


def _items(jobs: dict[int, list[int] | None]) -> list[dict]:
    return [
        {"part": p, "rows": json.dumps(None if r is None else sorted(r))}
        for p, r in sorted(jobs.items())
    ]
