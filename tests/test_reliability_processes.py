"""Processes stop cleanly: a signalled `jaxsel score` (SIGTERM, Ctrl-C) exits with one line and
its compressor pool gone, `kill -9` leaves no process behind, a finished shard survives every
stop and the rerun equals a fresh run; the same for the local Ray of `--engine ray` (GCS,
raylet, agents, actors); `--coordinator` is checked before anything starts, and a process of a
several-process job that dies makes the others exit 2 with one line, whether the processes met
through `--coordinator` or through JAX's own cluster detection (SLURM variables here)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_multihost import free_port

from jaxsel import parallel
from jaxsel.cli import main
from jaxsel.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
}
USAGE = "expected HOST:PORT (an IPv6 host in brackets: [::1]:PORT)"
RESUME = "(finished shards are kept; rerun with the same --workdir to resume)"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """`jaxsel score` arguments over a two-file pool of 24 CPython module heads against
    HumanEval with lzma in a 2-process compressor pool (12 shards of about 0.1 s), and the bytes
    a fresh run writes."""
    import json
    import sysconfig

    root = tmp_path_factory.mktemp("job")
    heads = [p.read_text(errors="replace")[:2000]
             for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:24]]  # fmt: skip
    for f in range(2):
        with open(root / f"pool-{f}.jsonl", "w") as out:
            for i in range(12 * f, 12 * f + 12):
                out.write(json.dumps({"id": i, "text": heads[i]}) + "\n")
    args = ["score", "--pool", str(root / "pool-*.jsonl"), "--compressor", "lzma",
            "--workers", "2", "--shard-size", "2", "--no-progress"]  # fmt: skip
    fresh = _cli([*args, "--out", str(root / "fresh.jsonl")])
    assert fresh.wait(timeout=120) == 0, fresh.stderr.read()
    return root, args, (root / "fresh.jsonl").read_bytes()


def _cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxsel.cli", *args],
        env={**ENV, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a Ctrl-C reaches only the job
    )


def _when_shards(workdir: Path, n: int, *procs: subprocess.Popen) -> None:
    """Waits until `n` shards are committed in `workdir` (the jobs still running)."""
    deadline = time.monotonic() + 60
    while len(list(workdir.glob("shard-*.npy"))) < n:
        assert all(p.poll() is None for p in procs), "the job ended before it was stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents = {}
    for d in Path("/proc").iterdir():
        try:
            parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in found]
        found.update(kids)
        todo += kids
    return found


def _alive_after(pids: set[int], seconds: float = 10) -> set[int]:
    """Those of `pids` still running (not zombies) after waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = set()
        for p in pids:
            try:
                if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(p)
            except OSError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _said(stderr: str) -> list[str]:
    """The lines of stderr that are not the job's log (INFO/WARNING lines)."""
    return [x for x in stderr.splitlines() if not x.startswith(("INFO ", "WARNING "))]


def _resumed_equals_fresh(job, workdir: Path) -> None:
    root, args, fresh = job
    out = workdir.with_suffix(".jsonl")
    p = _cli([*args, "--workdir", str(workdir), "--out", str(out)])
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert out.read_bytes() == fresh


@pytest.mark.parametrize(
    "how, code, line",
    [
        ("SIGTERM", 143, f"terminated {RESUME}"),
        ("SIGINT to the process group (Ctrl-C)", 130, f"interrupted {RESUME}"),
    ],
)
def test_a_signal_stops_the_job_with_one_line_and_its_pool(job, how, code, line):
    root, args, fresh = job
    wd = root / f"wd-{code}"
    p = _cli([*args, "--workdir", str(wd), "--out", str(wd.with_suffix(".jsonl"))])
    _when_shards(wd, 2, p)
    kids = _descendants(p.pid)
    assert len(kids) >= 3  # resource tracker, forkserver, workers
    if how == "SIGTERM":
        p.send_signal(signal.SIGTERM)
    else:
        os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)  # (a leftover holding stderr open would block here)
    assert p.returncode == code and _said(err) == [line], err[-3000:]
    assert not _alive_after(kids)
    assert not wd.with_suffix(".jsonl").exists()
    if how == "SIGTERM":
        _resumed_equals_fresh(job, wd)


def test_kill_9_leaves_no_process_and_resume_is_exact(job):
    root, args, fresh = job
    wd = root / "wd-9"
    p = _cli([*args, "--workdir", str(wd), "--out", str(wd.with_suffix(".jsonl"))])
    _when_shards(wd, 2, p)
    kids = _descendants(p.pid)
    assert len(kids) >= 3
    p.kill()
    p.communicate(timeout=30)
    assert not _alive_after(kids, 5)
    _resumed_equals_fresh(job, wd)


# ------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_job(job):
    """`jaxsel score --engine ray` arguments over the job's 24 documents in 8 files (8 Ray
    tasks of 3 shards on 2 Ray workers: shards arrive while most of the pool is still to do),
    and the bytes a fresh local run writes (the Ray engine's, byte for byte: tests/test_ray.py)."""
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    root, args, fresh = job
    lines = b"".join(sorted(root.glob("pool-*.jsonl"), key=str)[f].read_bytes() for f in (0, 1))
    lines = lines.splitlines(keepends=True)
    (root / "ray").mkdir()
    for f in range(8):
        (root / "ray" / f"pool-{f}.jsonl").write_bytes(b"".join(lines[3 * f : 3 * f + 3]))
    args = ["score", "--pool", str(root / "ray" / "pool-*.jsonl"), "--compressor", "lzma",
            "--workers", "1", "--shard-size", "1", "--no-progress"]  # fmt: skip
    local = _cli([*args, "--out", str(root / "ray" / "fresh.jsonl")])
    assert local.wait(timeout=120) == 0, local.stderr.read()
    return root / "ray", [*args, "--engine", "ray", "--ray-workers", "2"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize(
    "how, code, line",
    [
        ("SIGTERM", 143, f"terminated {RESUME}"),
        pytest.param("SIGINT", 130, f"interrupted {RESUME}", marks=pytest.mark.slow),
        ("SIGKILL", -9, None),
    ],
)
def test_a_stopped_ray_job_leaves_no_ray_process_and_resumes_exactly(ray_job, how, code, line):
    """The local Ray a job starts (GCS, raylet, its agents, the job's actors) ends with the job
    however it stops: SIGTERM, Ctrl-C to the process group, or kill -9 (Ray's own agents
    would linger about a minute on the lost GCS). Finished shards stay, and a rerun on Ray
    writes the fresh run's bytes."""
    root, args = ray_job
    wd = root / f"wd-{how}"
    p = _cli([*args, "--workdir", str(wd), "--out", str(wd.with_suffix(".jsonl"))])
    _when_shards(wd, 3, p)
    kids = _descendants(p.pid)
    names = " ".join(_cmdline(k) for k in kids)
    assert "gcs_server" in names and "raylet" in names, names  # Ray runs under the job
    if how == "SIGINT":
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(getattr(signal, how))
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err[-3000:]
    if line:  # the job's own line last; no native trace (Ray's handler), no traceback
        assert err.splitlines()[-1] == line, err[-3000:]
        assert "Traceback" not in err and "received at time" not in err, err[-3000:]
    assert not _alive_after(kids), [_cmdline(k) for k in _alive_after(kids, 0)]
    assert not wd.with_suffix(".jsonl").exists() and list(wd.glob("shard-*.npy"))
    out = wd.with_suffix(".again.jsonl")
    again = _cli([*args, "--workdir", str(wd), "--out", str(out)])
    assert again.wait(timeout=180) == 0, again.stderr.read()[-3000:]
    assert out.read_bytes() == (root / "fresh.jsonl").read_bytes()


# ------------------------------------------------------------------------------ coordinator


@pytest.mark.parametrize(
    "address, msg",
    [
        ("127.0.0.1:0", "port 0 is not in 1..65535"),
        ("localhost:99999", "port 99999 is not in 1..65535"),
        ("::1:1234", "an IPv6 host goes in brackets: [::1]:1234"),
        ("!!!:1234", "'!!!' is not a host name or address"),
        ("!!!:12:34", USAGE),
        ("[::zz]:1234", USAGE),
        ("host:", USAGE),
        ("host:+80", USAGE),
    ],
)
def test_bad_coordinator_is_one_line_before_anything_starts(tmp_path, capsys, address, msg):
    argv = ["score", "--pool", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o.jsonl"),
            "--coordinator", address, "--num-processes", "2", "--process-id", "1"]  # fmt: skip
    t0 = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - t0 < 10  # not the handshake's wait for peers
    err = capsys.readouterr().err.strip()
    assert err == f"error: --coordinator {address!r}: {msg}"


@pytest.mark.parametrize(
    "address, want",
    [("[::1]:1234", ("::1", 1234)), ("node-7.example:65535", ("node-7.example", 65535))],
)
def test_good_coordinator_addresses(address, want):
    assert parallel._address(address) == want


def test_handshake_over_ipv6_keeps_its_connections():
    """Process 0 listens on both stacks: a peer reaches it at [::1]."""
    import socket

    if not socket.has_dualstack_ipv6():
        pytest.skip("no IPv6 here")
    port, got = free_port(), {}

    def run(pid):
        got[pid] = parallel._handshake(f"[::1]:{port}", 2, pid, 20)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got[0]) == [1] and sorted(got[1]) == [0]
    for conns in got.values():
        for c in conns.values():
            c.close()


def test_initialize_checks_the_address_of_one_process_too():
    with pytest.raises(InputError, match="port 70000 is not in 1..65535"):
        parallel.initialize("127.0.0.1:70000", 1, 0)


# ------------------------------------------------------------------- several JAX processes


@pytest.mark.parametrize("victim, sig", [(1, "SIGKILL"), (1, "SIGTERM"), (0, "SIGKILL")])
def test_a_process_that_dies_stops_the_others_in_seconds(job, victim, sig):
    """Process 1 killed: process 0 stops the job in order and says so in one line. Process 0
    (JAX's coordination service) killed: process 1 exits 2 with the same line at once, racing
    JAX's own abort on the lost service, whose log lines may precede the exit."""
    root, args, fresh = job
    wd = root / f"wd-2p-{victim}-{sig}"
    port = free_port()
    procs = [
        _cli([*args, "--workdir", str(wd), "--out", str(wd.with_suffix(".jsonl")),
              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)])
        for i in range(2)
    ]  # fmt: skip
    _when_shards(wd, 2, *procs)
    kids = _descendants(procs[0].pid) | _descendants(procs[1].pid)
    procs[victim].send_signal(getattr(signal, sig))
    t0 = time.monotonic()
    survivor = procs[1 - victim]
    _, err = survivor.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    want = (f"error: process {victim} of the job stopped before the job ended (killed, or its "
            "host lost); stopping")  # fmt: skip
    assert survivor.returncode == 2, err[-3000:]
    assert (_said(err) == [want]) if victim else (want in err.splitlines()), err[-3000:]
    _, err = procs[victim].communicate(timeout=30)
    if sig == "SIGTERM":
        assert procs[victim].returncode == 143 and _said(err) == [f"terminated {RESUME}"], err
    assert not _alive_after(kids)


def _slurm(port: int, n: int, pid: int) -> dict[str, str]:
    """The variables `srun -n N` sets that JAX's cluster detection reads (SlurmCluster), with
    every task on this host; the port through `JAX_COORDINATOR_PORT`, which JAX honours."""
    return {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": str(n),
            "SLURM_PROCID": str(pid), "SLURM_LOCALID": str(pid), "SLURM_STEP_NUM_NODES": "1",
            "JAX_COORDINATOR_PORT": str(port)}  # fmt: skip


@pytest.mark.parametrize("victim", [1, 0])
def test_auto_discovered_processes_stop_in_seconds_when_one_dies(job, victim):
    """No --coordinator: the two processes find each other through JAX's own SLURM detection
    (real `jax.distributed`), and a peer killed with `kill -9` makes the other exit 2 with one
    line within seconds, as with an explicit --coordinator, not JAX's SIGABRT."""
    root, args, fresh = job
    wd = root / f"wd-slurm-{victim}"
    port = free_port()
    run = [*args, "--workdir", str(wd), "--out", str(wd.with_suffix(".jsonl"))]
    procs = [_cli(run, _slurm(port, 2, i)) for i in range(2)]
    _when_shards(wd, 2, *procs)
    kids = _descendants(procs[0].pid) | _descendants(procs[1].pid)
    procs[victim].kill()
    t0 = time.monotonic()
    survivor = procs[1 - victim]
    _, err = survivor.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    want = (f"error: process {victim} of the job stopped before the job ended (killed, or its "
            "host lost); stopping")  # fmt: skip
    assert survivor.returncode == 2, err[-3000:]
    assert (_said(err) == [want]) if victim else (want in err.splitlines()), err[-3000:]
    procs[victim].communicate(timeout=30)
    assert not _alive_after(kids)


def test_auto_discovered_processes_score_the_pool_as_one(job):
    """The same SLURM environment, run to the end: process 0 writes a fresh run's bytes."""
    root, args, fresh = job
    out = root / "slurm.jsonl"
    port = free_port()
    procs = [_cli([*args, "--out", str(out)], _slurm(port, 2, i)) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    assert out.read_bytes() == fresh


def test_a_reader_that_leaves_stdout_ends_the_job_quietly():
    """`jaxsel select --out - | head`: the closed pipe is exit 0, not a traceback."""
    p = subprocess.Popen(
        [sys.executable, "-m", "jaxsel.cli", "select", "--method", "dsir", "-k", "300",
         "--no-progress"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    p.stdout.read(100)
    p.stdout.close()  # more than a pipe's buffer is still to come
    err = p.stderr.read()
    assert p.wait(timeout=60) == 0 and _said(err) == [], err[-3000:]
