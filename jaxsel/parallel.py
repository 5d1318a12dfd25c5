"""Devices, processes, meshes and shardings: the only module that knows how many devices and
processes there are.

Code elsewhere names *logical* axes ("pool", "batch", ...); `RULES` maps them to mesh axes
(MaxText's logical_axis_rules, big_vision's sharding_rules). The default mesh has one `data` axis
over this process's devices.

Many hosts run JAX's multi-controller runtime: `initialize()` starts it (explicit coordinator,
process count and id, or found by JAX's own cluster detection on TPU pods, SLURM, Open MPI); every
process then reads its own parts of the pool (`jaxsel.data.parts_for_process`), scores them on its
local devices, and the per-process results meet in `allgather_rows` (rows of any dtype, carried
bit for bit, so a float64 score gathers exactly). A process that fails says so in the
coordination service's key-value store (`announce_failure`); the others stop at their next
`barrier` with one line naming it, instead of waiting out JAX's timeouts. A process that dies
without a word (`kill -9`, out of memory, a lost host) is seen by the connections of the
start-up handshake, which stay open for the job: the others exit with status 2 and one line
within seconds (`leave`), where JAX would abort them with a native trace after its heartbeat
timeout.
"""

from __future__ import annotations

import _thread
import atexit
import functools
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from jaxsel.errors import InputError, JaxselError

if TYPE_CHECKING:
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"

# logical axis -> mesh axis (None = replicated).
RULES: dict[str, str | None] = {
    "pool": DATA,  # items of a selection pool (columns of F in GIP, candidates in LAMDAS)
    "batch": DATA,  # examples of a device batch
    "embed": None,
    "seq": None,
    "vocab": None,
    "query": None,
}


def _jax():
    """JAX, imported on first use: a job that never touches a device (a compression method
    called from Python) does not pay for importing it; the CLI does, to ask JAX's cluster
    detection whether it is one of several processes."""
    import jax

    return jax


def _jax_imported() -> bool:
    """Whether anything imported JAX: if nothing did, nothing started its distributed runtime,
    and this is process 0 of 1."""
    return "jax" in sys.modules


class Processes(NamedTuple):
    """This process's place among the processes of a job."""

    index: int
    count: int


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> Processes:
    """Starts JAX's multi-controller runtime when the job has several processes.

    With `coordinator` ("HOST:PORT", process 0's address), `num_processes` and `process_id`
    given, the processes first check that they agree (a plain TCP handshake on the
    coordinator's port, before JAX binds it): JAX aborts with a native stack trace, after its
    timeout, when they do not. Without them, JAX's cluster detection finds the three (TPU pod
    workers, SLURM `srun`, Open MPI) and the same handshake runs; otherwise this is one process
    and nothing starts. Either way the handshake's connections then watch the peers (`_watch`).

    Raises:
      InputError: the flags are incomplete or out of range, the processes disagree on the
        count, or the coordinator is unreachable within `timeout_s`.
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise InputError("give --coordinator, --num-processes and --process-id together")
    jax = _jax()
    if jax.distributed.is_initialized():
        return processes()
    if all(given):
        _address(coordinator)
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise InputError(f"--process-id {process_id} is not in [0, {num_processes})")
        if num_processes > 1:
            _watch(_handshake(coordinator, num_processes, process_id, timeout_s))
            jax.distributed.initialize(
                coordinator, num_processes, process_id, initialization_timeout=timeout_s
            )
    else:
        _auto_initialize(timeout_s)
    got = processes()
    if num_processes is not None and got.count != num_processes:
        raise InputError(f"JAX counts {got.count} processes, --num-processes says {num_processes}")
    return got


def _auto_initialize(timeout_s: int) -> None:
    """Starts the processes that JAX's own cluster detection finds (Cloud TPU metadata, SLURM,
    Open MPI, ...; `JAX_COORDINATOR_ADDRESS`/`_PORT` as JAX reads them), after the same
    handshake as an explicit `--coordinator`, whose connections then watch the peers: a peer
    that dies makes the others exit 2 with one line, where JAX would abort them (SIGABRT).
    No cluster found means one process."""
    from jax._src import clusters, xla_bridge

    if xla_bridge.backends_are_initialized():
        return  # JAX already runs computations here (a notebook, a test): one process
    try:
        coordinator, n, pid, _ = clusters.ClusterEnv.auto_detect_unset_distributed_params(
            os.environ.get("JAX_COORDINATOR_ADDRESS"), None, None, None, None, timeout_s
        )
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise JaxselError(f"JAX's cluster detection failed: {e}") from None
    if coordinator is None or n is None or pid is None:
        return  # no cluster environment
    _address(coordinator)
    if not 0 <= pid < n:
        raise InputError(f"the cluster gives this process id {pid} of {n}")
    if n > 1:
        _watch(_handshake(coordinator, n, pid, timeout_s))
    try:
        _jax().distributed.initialize(coordinator, n, pid, initialization_timeout=timeout_s)
    except ValueError as e:
        raise JaxselError(f"jax.distributed.initialize: {e}") from None


def processes() -> Processes:
    if not _jax_imported():
        return Processes(0, 1)
    jax = _jax()
    return Processes(jax.process_index(), jax.process_count())


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def _address(coordinator: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" or "[IPV6]:PORT", port 1..65535; else an InputError."""
    host, sep, port = coordinator.rpartition(":")
    bad = f"--coordinator {coordinator!r}: "
    usage = bad + "expected HOST:PORT (an IPv6 host in brackets: [::1]:PORT)"
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise InputError(usage)
    if not 1 <= int(port) <= 65535:
        raise InputError(bad + f"port {int(port)} is not in 1..65535")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed or ":" in host:
        host = host[1:-1] if bracketed else host
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError(usage) from None
        if not bracketed:
            raise InputError(bad + f"an IPv6 host goes in brackets: [{host}]:{port}")
    elif not _HOST.fullmatch(host):
        raise InputError(bad + f"{host!r} is not a host name or address")
    return host, int(port)


def _send(conn: socket.socket, msg: dict) -> None:
    conn.sendall((json.dumps(msg) + "\n").encode())


def _recv(conn: socket.socket) -> dict:
    """One line, read byte by byte: what follows it on the connection is `_watching`'s."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("closed")
        line += byte
    return json.loads(line)


def _handshake(coordinator: str, n: int, pid: int, timeout_s: float) -> dict[int, socket.socket]:
    """Every process tells process 0 its (count, id); process 0 answers all of them "ok" once
    n-1 distinct peers with its count have arrived, or the first disagreement to everyone.
    Returns the connections, open: process 0's to every other process, the others' to it."""
    host, port = _address(coordinator)
    deadline = time.monotonic() + timeout_s
    if pid != 0:
        while True:
            try:
                conn = socket.create_connection((host, port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise InputError(
                        f"coordinator {coordinator} unreachable for {timeout_s:g} s (is process 0 "
                        "running there?)"
                    ) from None
                time.sleep(0.2)
        conn.settimeout(max(deadline - time.monotonic(), 1))
        try:
            _send(conn, {"count": n, "id": pid})
            reply = _recv(conn)
        except (OSError, ValueError):
            conn.close()
            raise InputError(
                f"coordinator {coordinator} did not confirm the {n} processes within "
                f"{timeout_s:g} s"
            ) from None
        if "error" in reply:
            conn.close()
            raise InputError(reply["error"])
        return {0: conn}
    peers: dict[int, socket.socket] = {}
    dual = socket.has_dualstack_ipv6()  # IPv6 peers too ([::1]:PORT)
    family = socket.AF_INET6 if dual else socket.AF_INET
    with socket.create_server(("", port), family=family, dualstack_ipv6=dual) as server:
        try:
            while len(peers) < n - 1:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    raise InputError(
                        f"only {len(peers)} of the {n - 1} other processes reached the coordinator "
                        f"{coordinator} within {timeout_s:g} s (is --num-processes {n} right?)"
                    ) from None
                conn.settimeout(10)
                try:
                    msg = _recv(conn)
                    count, other = int(msg["count"]), int(msg["id"])
                except (OSError, ValueError, KeyError, TypeError):
                    conn.close()
                    continue  # not one of ours
                error = None
                if count != n:
                    error = (
                        f"process {other} was started with --num-processes {count}, the "
                        f"coordinator (process 0) with {n}"
                    )
                elif other in peers or not 0 < other < n:
                    error = f"two processes have --process-id {other}"
                if error:
                    for c in [*peers.values(), conn]:
                        _send(c, {"error": error})
                    raise InputError(error)
                peers[other] = conn
            for c in peers.values():
                _send(c, {"ok": True})
        except BaseException:
            for c in peers.values():
                c.close()
            raise
    return peers


_PEERS: dict[int, socket.socket] = {}  # process index -> its handshake connection, kept open
_LEAVING = threading.Event()  # set once this process said goodbye (or stops for a lost peer)
_SENDING = threading.Lock()
_LOST: list[int] = []  # the peer whose death stops this process
GRACE_S = 5.0  # how long the main thread has to stop the job after a peer died


def _watch(peers: dict[int, socket.socket]) -> None:
    """Watches the peers' connections for the rest of the job (a daemon thread); `leave` says
    goodbye at exit. TCP keepalive notices a host that vanished (about 25 s)."""
    for c in peers.values():
        c.settimeout(None)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, opt):
                c.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    _PEERS.update(peers)
    atexit.register(leave)
    threading.Thread(target=_watching, name="jaxsel-peers", daemon=True).start()


def _watching() -> None:
    sel = selectors.DefaultSelector()
    pending = {}
    for index, c in _PEERS.items():
        sel.register(c, selectors.EVENT_READ, index)
        pending[index] = b""
    while sel.get_map():
        for key, _ in sel.select():
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if _LEAVING.is_set():
                return
            if not data:
                _lost(key.data)
            *lines, pending[key.data] = (pending[key.data] + data).split(b"\n")
            for line in lines:
                if line == b"bye":  # it finished (or failed and said so through `barrier`)
                    sel.unregister(key.fileobj)
                elif line.startswith(b"lost "):  # relayed by process 0
                    _lost(int(line[5:]))


def _lost(index: int) -> None:
    """Process `index` died without a word: tells the others (process 0 relays) and exits 2.
    Process 0 first stops the job in its main thread as SIGTERM does (compressor pools
    close; the CLI says `lost_peer()`), for up to `GRACE_S`; the others exit at once, since
    JAX aborts them (SIGABRT) as soon as its coordination service, in process 0, is gone."""
    with _SENDING:
        if _LEAVING.is_set():
            return
        _LEAVING.set()
        _LOST.append(index)
        for other, c in _PEERS.items():
            if other != index:
                try:
                    c.sendall(f"lost {index}\n".encode())
                except OSError:
                    pass
    if 0 not in _PEERS:  # this is process 0
        _thread.interrupt_main(signal.SIGTERM)
        time.sleep(GRACE_S)
    sys.stderr.write(f"error: {lost_peer()}\n")  # one write: native logs cannot cut the line
    sys.stderr.flush()
    from multiprocessing import util

    util._run_finalizers(0)  # unlinks this process's semaphores (compressor pools)
    os._exit(2)


def lost_peer() -> str | None:
    """Why this process stops when a peer died without a word (None otherwise)."""
    if not _LOST:
        return None
    return (
        f"process {_LOST[0]} of the job stopped before the job ended (killed, or its host "
        "lost); stopping"
    )


def leave() -> None:
    """Says goodbye to the peers: this process ends, its connections close without alarm
    (called at exit)."""
    with _SENDING:
        if _LEAVING.is_set():
            return
        _LEAVING.set()
        for c in _PEERS.values():
            try:
                c.sendall(b"bye\n")
            except OSError:
                pass


def exit_now(code: int) -> None:
    """Ends a process of a several-process job at once (a stopped job: SIGTERM, SIGINT),
    without goodbye or JAX's exit barrier, which would hold it until every peer ends: the
    peers see its connections close and stop within seconds. No-op on one process."""
    if _PEERS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def allgather_rows(rows: np.ndarray) -> list[np.ndarray]:
    """Every process's `rows` ([n_p, ...], any fixed-width dtype, the same trailing shape and
    dtype on all processes), in process order. The bytes travel as uint32 words, so float64
    and int64 arrive exactly whatever `jax_enable_x64` says."""
    rows = np.ascontiguousarray(rows)
    if processes().count == 1:
        return [rows]
    from jax.experimental import multihost_utils

    # The processes enter the collective together: JAX's CPU collectives (gloo) give up when a
    # peer is more than 30 s late to the first one (its context is set up then), and one
    # process may finish its share of a pass minutes before another.
    barrier("jaxsel: gather")  # counted per use, like every barrier name

    width = int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.itemsize
    counts = multihost_utils.process_allgather(np.array([rows.shape[0]], np.int32)).reshape(-1)
    if not counts.max():
        return [rows[:0] for _ in counts]
    words = -(-width // 4)
    buf = np.zeros((int(counts.max()), words * 4), np.uint8)
    buf[: rows.shape[0], :width] = rows.view(np.uint8).reshape(rows.shape[0], width)
    gathered = multihost_utils.process_allgather(buf.view(np.uint32))
    return [
        np.ascontiguousarray(g.view(np.uint8)[:c, :width])
        .view(rows.dtype)
        .reshape(c, *rows.shape[1:])
        for g, c in zip(np.asarray(gathered), counts.tolist(), strict=True)
    ]


def distributed() -> bool:
    """Whether this job runs several processes (without touching JAX's backend otherwise)."""
    return _jax_imported() and _jax().distributed.is_initialized() and processes().count > 1


def is_writer() -> bool:
    """Whether this process writes the job's outputs (process 0)."""
    return not distributed() or processes().index == 0


def local_parts(source) -> list | None:
    """The parts of `source` this process reads (`jaxsel.data.parts_for_process`); None = all
    (one process)."""
    if not distributed():
        return None
    from jaxsel.data.sources import parts_for_process

    return parts_for_process(source.parts(), *processes())


def gathered(rows: np.ndarray) -> np.ndarray:
    """`allgather_rows` concatenated in process order (the rows themselves on one process)."""
    return np.concatenate(allgather_rows(rows)) if distributed() else rows


def in_pool_order(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every process's (keys [n_p, 2], values [n_p]) as one pool: gathered and sorted by key
    (= pool order). One process returns its arguments."""
    if not distributed():
        return keys, values
    keys, values = gathered(keys.reshape(-1, 2)), gathered(values)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    return keys[order], values[order]


def summed(stats: dict[str, float]) -> dict[str, float]:
    """Additive statistics summed over the processes (the dict itself on one process)."""
    if not distributed():
        return stats
    out: dict[str, float] = {}
    for raw in allgather_rows(np.frombuffer(json.dumps(stats).encode(), np.uint8)):
        for name, v in json.loads(raw.tobytes()).items():
            out[name] = out.get(name, 0) + v
    return out


class PeerFailed(JaxselError):
    """Another process of the job failed (its own error is its own `error:` line)."""


FAILED = "jaxsel/failed/"  # coordination key-value directory: process index -> its error
POLL_S = 0.2  # how often a waiting process looks for a failed peer
_BARRIERS: dict[str, int] = {}  # name -> times this process has waited at it before


def _client():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def announce_failure(message: str) -> None:
    """Tells the job's other processes that this one stops with `message`: they raise
    `PeerFailed` at their next `barrier` (every gather starts with one) instead of waiting
    there, and all reach JAX's exit barrier within seconds. No-op on one process."""
    if not distributed():
        return
    try:
        _client().key_value_set(f"{FAILED}{processes().index}", message, allow_overwrite=True)
    except RuntimeError:  # the coordination service is gone: the others fail on their own
        pass


def _check_peers() -> None:
    failed = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in _client().key_value_dir_get(FAILED))
    if failed:
        raise PeerFailed(f"process {failed[0][0]} of the job failed: {failed[0][1]}")


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Waits until every process reaches `name` (no-op on one process), or raises `PeerFailed`
    as soon as a process has announced a failure (`announce_failure`). Held by the coordination
    service's key-value store, not a device collective, so it waits as long as `timeout_s`
    (process 0 writing a large output while the others are done)."""
    if not distributed():
        return
    client = _client()
    _BARRIERS[name] = _BARRIERS.get(name, -1) + 1  # the same count on every process
    key = f"jaxsel/barrier/{name}/{_BARRIERS[name]}"
    if client.key_value_increment(f"{key}/arrived", 1) == processes().count:
        client.key_value_set(f"{key}/open", "1")
    deadline = time.monotonic() + timeout_s
    while True:
        _check_peers()
        try:
            client.blocking_key_value_get(f"{key}/open", int(POLL_S * 1000))
            return
        except RuntimeError:  # not open yet (DEADLINE_EXCEEDED)
            if time.monotonic() > deadline:
                raise JaxselError(
                    f"not every process reached {name!r} within {timeout_s:g} s"
                ) from None


@functools.cache
def data_mesh(devices: tuple | None = None) -> Mesh:
    """A 1-D mesh named `data` over a tuple of `devices` (default: this process's devices), with
    Auto axis types so that contractions over a sharded axis insert their all-reduce instead of
    raising (DESIGN §5). Local, not global: each process of a multi-host job scores its own
    parts of the pool, with its own batch counts, so no computation spans processes."""
    from jax.sharding import AxisType, Mesh

    devices = _jax().local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA,), axis_types=(AxisType.Auto,))


def spec(*logical: str | None) -> PartitionSpec:
    """PartitionSpec for an array whose dims carry these logical axis names."""
    from jax.sharding import PartitionSpec

    return PartitionSpec(*(RULES.get(a) if a is not None else None for a in logical))


def sharding(*logical: str | None, mesh: Mesh | None = None) -> NamedSharding:
    from jax.sharding import NamedSharding

    return NamedSharding(mesh or data_mesh(), spec(*logical))


def replicated(mesh: Mesh | None = None) -> NamedSharding:
    from jax.sharding import NamedSharding

    return NamedSharding(mesh or data_mesh(), spec())


def data_size(mesh: Mesh | None = None) -> int:
    """Number of shards along `data`: pool/batch sizes are padded to a multiple of it."""
    return (mesh or data_mesh()).shape[DATA]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_axis(x: np.ndarray, size: int, axis: int = 0, value=0) -> np.ndarray:
    """Pads `x` along `axis` to `size` with `value` (host-side, before device_put)."""
    pad = size - x.shape[axis]
    if pad < 0:
        raise ValueError(f"cannot pad axis of {x.shape[axis]} down to {size}")
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return np.pad(x, widths, constant_values=value)
