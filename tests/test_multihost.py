"""Several JAX processes on this machine (coordinator on 127.0.0.1): the start-up handshake, exact
gathering of per-process rows, and one-line errors when the processes disagree."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argvs: list[list[str]], timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Runs one Python process per argv at once (2 fake CPU devices each); their results."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, *a], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for a in argvs
    ]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


GATHER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jaxsel import parallel
    from jaxsel.errors import InputError

    pid, n, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    try:
        me = parallel.initialize(f"127.0.0.1:{port}", n, pid, timeout_s=20)
    except InputError as e:
        print(f"error: {e}")
        sys.exit(2)
    rng = np.random.default_rng(pid)
    rows = rng.standard_normal((3 + pid, 2)) * 1e-300  # float64 only: lost in float32
    keys = rng.integers(0, 2**62, (3 + pid, 2))
    got = parallel.allgather_rows(rows), parallel.allgather_rows(keys)
    want = [np.random.default_rng(p) for p in range(n)]
    for p, r in enumerate(want):
        assert np.array_equal(got[0][p], r.standard_normal((3 + p, 2)) * 1e-300)
        assert np.array_equal(got[1][p], r.integers(0, 2**62, (3 + p, 2)))
    assert got[0][pid].dtype == np.float64 and got[1][pid].dtype == np.int64
    parallel.barrier("done")
    print(f"ok {me.index} {me.count}")
    """
)


def test_two_processes_gather_rows_bit_for_bit(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    port = str(free_port())
    res = launch([[str(script), str(i), "2", port] for i in range(2)])
    for i, r in enumerate(res):
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1] == f"ok {i} 2"


def test_process_count_mismatch_is_one_line(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    port = str(free_port())
    res = launch([[str(script), "0", "2", port], [str(script), "1", "3", port]])
    want = "error: process 1 was started with --num-processes 3, the coordinator (process 0) with 2"
    for r in res:
        assert r.returncode == 2 and r.stdout.strip().splitlines()[-1] == want, r.stderr[-2000:]
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, msg",
    [
        (("127.0.0.1:1", 2, 2), r"--process-id 2 is not in \[0, 2\)"),
        (("127.0.0.1:1", None, 0), "give --coordinator, --num-processes and --process-id together"),
        (("nohostport", 2, 1), "expected HOST:PORT"),
    ],
)
def test_bad_process_flags(args, msg):
    from jaxsel import parallel
    from jaxsel.errors import InputError

    with pytest.raises(InputError, match=msg):
        parallel.initialize(*args, timeout_s=1)


def test_unreachable_coordinator():
    from jaxsel import parallel
    from jaxsel.errors import InputError

    with pytest.raises(InputError, match=r"coordinator 127.0.0.1:\d+ unreachable for 1 s"):
        parallel.initialize(f"127.0.0.1:{free_port()}", 2, 1, timeout_s=1)
