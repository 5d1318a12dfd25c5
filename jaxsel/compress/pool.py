"""The CPU compressor pool: compressed sizes of many texts and of many (x, y) pairs on all cores.

Work is cut into chunks of pool items; each chunk's pair sizes are computed against the whole
target list and only the [chunk, n_targets] size matrix comes back, so memory does not grow
with the pool (the N x n pair list is never built). Three executors:
- "threads": the codecs release the GIL while they compress (`_lz4pair` for a whole chunk), so
  threads share the targets without copying them;
- "processes": workers receive the targets once (initializer), then only chunks of pool items;
- "batch" (zstd only): zstandard's `multi_compress_to_buffer`, which compresses a batch of
  concatenations in its own C threads (batches of at most `BATCH_BYTES`).
`EXECUTOR` holds the faster one per codec, measured by `experiments/bench/compress_pool.py` on
the 2-core development VM: all three within noise of each other in wall time, threads using the
least CPU per pair, except lzma (each call allocates its ~90 MB match finder), where processes
were ahead in every run.

Worker processes never outlive the job: they ignore SIGINT (a Ctrl-C reaches the whole process
group; the job stops them), exit as soon as the job process ends however it ends (`kill -9`
too: they watch it, since their parent is the forkserver, not the job), and `close` kills them
rather than waiting for the chunks in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Sequence

import numpy as np

from jaxsel.compress.codecs import Codec
from jaxsel.errors import InputError

# Faster executor per codec on the default pool (experiments/bench/compress_pool.py).
EXECUTOR = {
    "lz4": "threads",
    "gzip": "threads",
    "zlib": "threads",
    "zstd": "threads",
    "bz2": "threads",
    "lzma": "processes",
}
EXECUTORS = ("auto", "threads", "processes", "batch")
BATCH_BYTES = 1 << 25  # input bytes per multi_compress_to_buffer call


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def chunks(xs: Sequence, workers: int) -> list[Sequence]:
    """xs cut into a few consecutive chunks per worker (evens out unequal lengths)."""
    n = max(1, min(len(xs), 4 * workers))
    bounds = np.linspace(0, len(xs), n + 1).astype(int)
    return [xs[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


# ---- process workers: the targets arrive once, chunks of pool items per task.
_W_CODEC: Codec | None = None
_W_YS: Sequence[bytes] = ()


def _init_worker(codec: Codec, ys: Sequence[bytes], job: int) -> None:
    global _W_CODEC, _W_YS
    _W_CODEC, _W_YS = codec, ys
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(job,), daemon=True).start()


def _exit_with(job: int) -> None:
    """Ends this worker when process `job` ends. The worker's parent is the forkserver, which
    stays up while any worker holds its pipe open, so neither a parent-death signal nor the
    forkserver's own exit would end the worker after a `kill -9` of the job."""
    try:
        fd = os.pidfd_open(job)  # readable once the job has ended (Linux >= 5.3)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # pragma: no cover - no pidfd (not Linux): poll
        while _alive(job):
            time.sleep(1)
        os._exit(1)
    select.select([fd], [], [])
    os._exit(1)


def _alive(pid: int) -> bool:  # pragma: no cover - only without pidfd
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _worker_pairs(xs: Sequence[bytes]) -> np.ndarray:
    return _W_CODEC.pair_sizes(xs, _W_YS)


def _worker_sizes(xs: Sequence[bytes]) -> np.ndarray:
    return _W_CODEC.sizes(xs)


class CompressorPool:
    """C(x) and C(x ⊕ y_j) for chunks of pool items against a fixed target list.

    Use as a context manager (the workers live until it closes):

        with CompressorPool(codec, targets) as pool:
            cy = pool.target_sizes
            for chunk in ...: cxy = pool.pair_sizes(chunk)  # [len(chunk), len(targets)]
    """

    def __init__(
        self, codec: Codec, targets: Sequence[bytes], workers: int = 0, executor: str = "auto"
    ):
        if executor not in EXECUTORS:
            raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if workers < 0:
            raise InputError(f"workers must be >= 0 (0 = all cores), got {workers}")
        self.codec = codec
        self.targets = list(targets)
        self.workers = workers or default_workers()
        self.executor = EXECUTOR[codec.name] if executor == "auto" else executor
        if self.executor == "batch":
            if codec.name != "zstd":
                raise InputError(
                    f"the batch executor is zstd's; {codec.name} has threads and processes"
                )
            import zstandard

            self._ex = None
            self._cctx = zstandard.ZstdCompressor(level=codec.level)
        elif self.executor == "processes":
            # forkserver: forking this process could copy locks held by other threads (JAX's, a
            # progress bar's); Python 3.14 makes it the default. Scripts need a __main__ guard.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._ex = cf.ProcessPoolExecutor(
                self.workers, ctx, _init_worker, (codec, self.targets, os.getpid())
            )
        else:
            self._ex = cf.ThreadPoolExecutor(self.workers)
        self.target_sizes = self.sizes(self.targets)

    def __enter__(self) -> CompressorPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the workers now: nothing waits for their results any more (the job ended, or
        stops on an error or a signal), so chunks in flight are not worth finishing."""
        if isinstance(self._ex, cf.ProcessPoolExecutor):
            for p in list(self._ex._processes.values()):  # (Python 3.14: kill_workers())
                p.kill()
        if self._ex is not None:
            self._ex.shutdown(cancel_futures=True)

    def _batch(self, data: list[bytes]) -> np.ndarray:
        res = self._cctx.multi_compress_to_buffer(data, threads=self.workers)
        return np.fromiter((len(res[i]) for i in range(len(res))), np.int64, len(res))

    def sizes(self, xs: Sequence[bytes]) -> np.ndarray:
        """C(x) for each x: int64 [len(xs)]."""
        if not len(xs):
            return np.zeros(0, np.int64)
        if self.executor == "batch":
            return self._batch(list(xs))
        if self.executor == "processes":
            parts = self._ex.map(_worker_sizes, chunks(xs, self.workers))
        else:
            parts = self._ex.map(self.codec.sizes, chunks(xs, self.workers))
        return np.concatenate(list(parts))

    def pair_sizes(self, xs: Sequence[bytes]) -> np.ndarray:
        """C(x_i ⊕ y_j), pool item first: int64 [len(xs), len(targets)]."""
        n = len(self.targets)
        if not len(xs):
            return np.zeros((0, n), np.int64)
        if self.executor == "batch":
            out, ty = [], sum(map(len, self.targets))
            start = 0
            while start < len(xs):  # a run of pool items whose pairs fit in BATCH_BYTES
                stop, size = start + 1, len(xs[start]) * n + ty
                while stop < len(xs) and size + len(xs[stop]) * n + ty <= BATCH_BYTES:
                    size += len(xs[stop]) * n + ty
                    stop += 1
                data = [x + y for x in xs[start:stop] for y in self.targets]
                out.append(self._batch(data).reshape(stop - start, n))
                start = stop
            return np.concatenate(out)
        if self.executor == "processes":
            parts = self._ex.map(_worker_pairs, chunks(xs, self.workers))
        else:
            parts = self._ex.map(
                lambda c: self.codec.pair_sizes(c, self.targets), chunks(xs, self.workers)
            )
        return np.concatenate(list(parts))
