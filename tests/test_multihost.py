"""Several JAX processes on this machine (coordinator on 127.0.0.1): the start-up handshake, exact
gathering of per-process rows, and one-line errors when the processes disagree."""

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


LATE = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from jaxsel import parallel

    pid, port = int(sys.argv[1]), sys.argv[2]
    parallel.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=20)
    if pid == 1:  # a longer share of a pass: past gloo's 30 s for a late peer
        time.sleep(40)
    got = parallel.gathered(np.arange(2 + pid, dtype=np.int64))
    parallel.barrier("done")
    print("ok", got.tolist())
    """
)


@pytest.mark.slow
def test_a_process_40_s_late_to_the_first_gather(tmp_path):
    """JAX's CPU collectives abort a first collective whose peer is > 30 s late (the 2-process
    DSIR run at 0.25M documents did); `allgather_rows` waits at a coordination barrier first."""
    script = tmp_path / "late.py"
    script.write_text(LATE)
    port = str(free_port())
    res = launch([[str(script), str(i), port] for i in range(2)])
    for r in res:
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1] == "ok [0, 1, 0, 1, 2]"


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


# ------------------------------------------------------ jaxsel score|select on 2 processes


def _pool_files(root: Path) -> str:
    """Five JSONL files (five parts) of CPython module heads; some texts repeat across files, so
    equal scores tie across processes and must break by pool order."""
    import json
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    heads = [p.read_text(errors="replace")[: 300 + 37 * i] for i, p in
             enumerate(sorted(stdlib.glob("*.py"))[:40])]  # fmt: skip
    root.mkdir()
    n = 0
    for f, size in enumerate([9, 3, 12, 7, 9]):
        with open(root / f"pool-{f}.jsonl", "w") as out:
            for _ in range(size):
                text = heads[(n * 7) % 40] if n % 5 else heads[3]  # heads[3] in every file
                out.write(json.dumps({"id": f"d{n}", "text": text, "n": n}) + "\n")
                n += 1
    return str(root / "*.jsonl")


def _cli(
    args: list[str], n: int, port: int, entry: tuple[str, ...] = ("-m", "jaxsel.cli")
) -> list[subprocess.CompletedProcess]:
    argvs = [[*entry, *args] for _ in range(n)]
    if n > 1:
        argvs = [
            [*a, "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
             "--process-id", str(i)]
            for i, a in enumerate(argvs)
        ]  # fmt: skip
    res = launch(argvs)
    for r in res:
        assert r.returncode == 0, r.stderr[-3000:]
    return res


def _one_and_two_processes(args: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """`args` run at once by 1 process (--out one.jsonl) and by 2 (--out two.jsonl): 3 results."""
    port = free_port()
    two = [
        [*args, "--out", str(tmp_path / "two.jsonl"), "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)]
        for i in range(2)
    ]  # fmt: skip
    return launch([[*args, "--out", str(tmp_path / "one.jsonl")], *two])


@pytest.fixture(scope="module")
def two_process_job(tmp_path_factory):
    """One pool and target; `select -k` and `score` by 1 process and by 2 processes."""
    import json

    root = tmp_path_factory.mktemp("mh")
    pool = _pool_files(root / "pool")
    target = root / "target.jsonl"
    with open(target, "w") as f:
        for i, p in enumerate(["def f(x):\n    return x + 1\n", "import os\nprint(os.getcwd())\n"]):
            f.write(json.dumps({"id": i, "text": p}) + "\n")
    common = ["--pool", pool, "--target", str(target), "--no-progress", "--workers", "1"]
    runs = {}
    for n in (1, 2):
        out = root / f"sel{n}.jsonl"
        wd = root / f"wd{n}"
        _cli(["select", "--method", "zipfit", "-k", "11", "--out", str(out),
              "--workdir", str(wd), *common], n, free_port())  # fmt: skip
        runs[n] = out, wd
    return root, pool, target, common, runs


def test_two_processes_select_byte_identical_to_one(two_process_job):
    root, pool, target, common, runs = two_process_job
    one, two = runs[1][0].read_bytes(), runs[2][0].read_bytes()
    assert one == two and one.count(b"\n") == 11
    # the same shard set, written by 1 process or by 2
    names = {n: sorted(p.name for p in runs[n][1].glob("shard-*")) for n in (1, 2)}
    assert names[1] == names[2] and names[1]


def test_two_processes_score_and_threshold_byte_identical(two_process_job, tmp_path):
    root, pool, target, common, runs = two_process_job
    for args in (
        ["score", "--method", "dsir", "--buckets", "512", "--resample", "gumbel"],
        ["select", "--method", "zipfit", "--threshold", "0.05"],
        # a whole [N] vector (Gumbel keys): each process takes the slice of its own parts
        ["select", "--method", "dsir", "--buckets", "512", "--resample", "gumbel", "-k", "7"],
    ):
        outs = []
        for n in (1, 2):
            out = tmp_path / f"{args[0]}-{n}.jsonl"
            _cli([*args, "--out", str(out), *common[:4], "--no-progress"], n, free_port())
            outs.append(out.read_bytes())
        assert outs[0] == outs[1] and outs[0].count(b"\n") > 3


def _pool_counted(r: subprocess.CompletedProcess) -> int:
    """Documents of DSIR's counting pass (p_raw) read by one process, from its log."""
    got = re.findall(r"dsir: pool counts of (\d+) documents in \d+ part\(s\), here", r.stderr)
    assert len(got) == 1, r.stderr[-2000:]
    return int(got[0])


def test_two_processes_split_dsir_pool_counts(two_process_job, tmp_path):
    """DSIR's first pass (bucket counts over the whole pool) is split like scoring: each process
    reads only the rows of its own parts, and the summed integer counts give the 1-process
    selection byte for byte (a wrong p_raw would change every weight)."""
    from jaxsel.data.sources import open_source, parts_for_process

    root, pool, target, common, runs = two_process_job
    src = open_source(pool)
    rows = [
        sum(len(b) for b in src.batches(7, parts_for_process(src.parts(), i, 2), check_ids=False))
        for i in range(2)
    ]
    assert min(rows) > 0 and sum(rows) == 40
    outs, counted = [], []
    for n in (1, 2):
        out = tmp_path / f"dsir-{n}.jsonl"
        res = _cli(["select", "--method", "dsir", "--buckets", "512", "-k", "9", "--out", str(out),
                    *common[:4], "--no-progress"], n, free_port())  # fmt: skip
        outs.append(out.read_bytes())
        counted.append([_pool_counted(r) for r in res])
    assert counted == [[40], rows]
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 9


def test_two_processes_split_gip_embedding(two_process_job, tiny_bert_dir, tmp_path):
    """GIP `--embed` on 2 processes: each embeds only the rows of its own parts (the split
    scoring uses); the float32 rows, gathered exactly in pool order (5 rows per process per
    gather, `gip._GATHER_ROWS` lowered: 24 and 16 rows = 5 rounds, the last without rows of
    process 1), give every process the matrix of 1 process, so the greedy selection is the
    1-process one byte for byte."""
    from jaxsel.data.sources import open_source, parts_for_process

    root, pool, target, common, runs = two_process_job
    src = open_source(pool)
    rows = [
        sum(len(b) for b in src.batches(7, parts_for_process(src.parts(), i, 2), check_ids=False))
        for i in range(2)
    ]
    script = tmp_path / "cli.py"
    script.write_text(
        "import sys\nfrom jaxsel.methods import gip\ngip._GATHER_ROWS = 5\n"
        "from jaxsel.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    outs, embedded = [], []
    for n in (1, 2):
        out = tmp_path / f"gip-{n}.jsonl"
        res = _cli(["select", "--method", "gip", "--embed", str(tiny_bert_dir), "-k", "11",
                    "--out", str(out), "--workdir", str(tmp_path / f"wd{n}"), *common[:4],
                    "--no-progress"], n, free_port(), (str(script),))  # fmt: skip
        outs.append(out.read_bytes())
        got = [re.findall(r"gip: embeddings of (\d+) documents here", r.stderr) for r in res]
        embedded.append([int(g[0]) if len(g) == 1 else g for g in got])
    assert embedded == [[40], rows] == [[40], [24, 16]]
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 11
    # one embedding shard per batch (= part), the same set whether 1 or 2 processes wrote it
    shards = [sorted(p.name for p in (tmp_path / f"wd{n}" / "embed").glob("shard-*.npy"))
              for n in (1, 2)]  # fmt: skip
    assert shards[0] == shards[1] and len(shards[0]) == 5


def test_two_processes_parquet_pool_byte_identical_to_one(two_process_job, tmp_path):
    """The same pool as one Parquet file of 5 row groups (= 5 parts): 2 processes write the
    bytes of 1 process, which are those of the JSONL pool's run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxsel.data.sources import open_source

    root, pool, target, common, runs = two_process_job
    records = [r for b in open_source(pool).batches(64) for r in b.records]
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=8)
    assert len(open_source(str(path)).parts()) == 5
    args = ["--pool", str(path), *common[2:]]
    outs = []
    for n in (1, 2):
        out = tmp_path / f"sel{n}.jsonl"
        _cli(["select", "--method", "zipfit", "-k", "11", "--out", str(out), *args], n, free_port())
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == runs[1][0].read_bytes()


def test_resume_after_a_killed_process_redoes_its_shards_alone(two_process_job):
    """A killed process leaves its finished shards whole (atomic commits) and the rest absent:
    delete half of process 1's shards, as a kill would, and rerun both processes."""
    from jaxsel.data.sources import open_source, parts_for_process

    root, pool, target, common, runs = two_process_job
    out, wd = runs[2]
    mine = {p.index for p in parts_for_process(open_source(pool).parts(), 1, 2)}
    shards = sorted(wd.glob("shard-*"))
    names = sorted({p.name.split(".")[0] for p in shards if int(p.name.split("-")[1]) in mine})
    gone = [p for p in shards if p.name.split(".")[0] in names[: len(names) // 2 + 1]]
    assert gone and len(gone) < len(shards)
    for p in gone:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in shards if p not in gone}
    again = root / "again.jsonl"
    _cli(["select", "--method", "zipfit", "-k", "11", "--out", str(again),
          "--workdir", str(wd), *common], 2, free_port())  # fmt: skip
    assert again.read_bytes() == out.read_bytes()
    assert all(p.exists() for p in gone)  # redone ...
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # ... and nothing else


def test_duplicate_id_across_processes_is_the_same_one_line(tmp_path):
    import json

    (tmp_path / "pool").mkdir()
    for f, ids in enumerate([["a", "dup", "b"], ["c", "dup"]]):
        with open(tmp_path / "pool" / f"p{f}.jsonl", "w") as out:
            for i in ids:
                out.write(json.dumps({"id": i, "text": f"text of {i} in file {f}"}) + "\n")
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": 0, "text": "def f(): pass"}) + "\n")
    args = ["-m", "jaxsel.cli", "select", "--pool", str(tmp_path / "pool" / "*.jsonl"),
            "--target", str(target), "-k", "2", "--no-progress", "--workers", "1"]  # fmt: skip
    res = _one_and_two_processes(args, tmp_path)
    want = (f"error: {tmp_path}/pool/p1.jsonl:2: duplicate id 'dup' "
            f"(first seen at {tmp_path}/pool/p0.jsonl:2)")  # fmt: skip
    for r in res:
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == want, r.stderr[-2000:]
    assert not (tmp_path / "one.jsonl").exists() and not (tmp_path / "two.jsonl").exists()


ID_RUNS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from jaxsel import parallel
    from jaxsel.data.sources import Batch, IdDigests
    from jaxsel.errors import InputError

    pid, n, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    parallel.initialize(f"127.0.0.1:{port}", n, pid, timeout_s=20)
    for case in range(4):
        rng = np.random.default_rng(case)
        ids = [f"u{i}" for i in range(97)] if case < 2 else [
            f"d{v}" for v in rng.integers(0, 200, 97)]
        if case == 1:  # one pair: the first row (process 0) and the last (process 1)
            ids[-1] = ids[0]
        seen, first = {}, None  # brute force: the first id an earlier row has
        for i, x in enumerate(ids):
            if x in seen and first is None:
                first = f"row {i}: duplicate id {x!r} (first seen at row {seen[x]})"
            seen.setdefault(x, i)
        mine = IdDigests(run_size=5)  # process p reads rows 60p.. (unequal shares, many runs)
        for r in range(60 * pid, 97 if pid == n - 1 else 60 * (pid + 1)):
            mine.add(Batch([ids[r]], ["t"], [{}], np.array([[0, r]], np.int64)))
        try:
            mine.verify(lambda k: (ids[k[1]], f"row {k[1]}"), parallel.gathered)
            got = None
        except InputError as e:
            got = str(e)
        assert got == first, (case, got, first)
        print(f"case {case}: {got}")
    parallel.barrier("done")
    print("ok")
    """
)


def test_two_processes_find_the_duplicate_ids_of_a_brute_force_set(tmp_path):
    """Digests in sorted runs of 5 on each process, checked range by range across both: the
    same first duplicate (or none) as a Python dict over all ids."""
    script = tmp_path / "ids.py"
    script.write_text(ID_RUNS)
    port = str(free_port())
    res = launch([[str(script), str(i), "2", port] for i in range(2)])
    for r in res:
        assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
    cases = [[x for x in r.stdout.splitlines() if x.startswith("case")] for r in res]
    assert cases[0] == cases[1] and len(cases[0]) == 4
    assert cases[0][0] == "case 0: None" and cases[0][1].startswith("case 1: row 96: ")


def test_two_processes_duplicate_id_over_several_digest_ranges(tmp_path):
    """The CLI's duplicate-id check with runs of 2 digests (`sources.ID_RUN`, lowered as
    tests/data/test_sources.py does): 13 ids = 7 ranges walked by both processes; 1 and 2 processes
    name the duplicate a brute-force pass over the pool finds first."""
    import json

    files = [["a", "dup1", "b", "c", "d"], ["e", "f", "dup2", "g"], ["dup2", "h", "dup1", "i"]]
    (tmp_path / "pool").mkdir()
    for f, ids in enumerate(files):
        with open(tmp_path / "pool" / f"p{f}.jsonl", "w") as out:
            for i in ids:
                out.write(json.dumps({"id": i, "text": f"text of {i} in file {f}"}) + "\n")
    seen, want = {}, None
    for f, ids in enumerate(files):
        for line, i in enumerate(ids, 1):
            where = f"{tmp_path}/pool/p{f}.jsonl:{line}"
            if i in seen and want is None:
                want = f"error: {where}: duplicate id {i!r} (first seen at {seen[i]})"
            seen.setdefault(i, where)
    assert want.startswith(f"error: {tmp_path}/pool/p2.jsonl:1: duplicate id 'dup2'")
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": 0, "text": "def f(): pass"}) + "\n")
    script = tmp_path / "cli.py"
    script.write_text(
        "import sys\nfrom jaxsel.data import sources\nsources.ID_RUN = 2\n"
        "from jaxsel.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    args = [str(script), "select", "--pool", str(tmp_path / "pool" / "*.jsonl"),
            "--target", str(target), "-k", "2", "--no-progress", "--workers", "1"]  # fmt: skip
    res = _one_and_two_processes(args, tmp_path)
    for r in res:
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == want, r.stderr[-2000:]
    assert not (tmp_path / "one.jsonl").exists() and not (tmp_path / "two.jsonl").exists()


@pytest.mark.parametrize("method", ["zipfit", "dsir"])  # fails while scoring / counting
def test_a_bad_line_only_process_1_reads_stops_both_in_one_line(tmp_path, method):
    """Process 1 fails on its own part (malformed JSON) while process 0 goes on to the first
    gather: process 1 names the file and line, process 0 says that process 1 failed; both exit
    2 promptly (not after JAX's 300 s exit barrier with a native abort) and nothing is written."""
    import time

    from jaxsel.data.sources import open_source, parts_for_process

    pool = _pool_files(tmp_path / "pool")
    bad = tmp_path / "pool" / "pool-4.jsonl"  # the last file: always in process 1's last part
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text("".join(lines[:-1]) + '{"id": "d39", "text": \n')
    parts = open_source(pool).parts()
    assert str(bad) in {p.path for p in parts_for_process(parts, 1, 2)}
    assert str(bad) not in {p.path for p in parts_for_process(parts, 0, 2)}
    target = tmp_path / "target.jsonl"
    target.write_text('{"id": 0, "text": "def f(x):\\n    return x + 1\\n"}\n')
    out, port = tmp_path / "sel.jsonl", free_port()
    args = ["-m", "jaxsel.cli", "select", "--method", method, "-k", "5", "--pool", pool,
            "--target", str(target), "--no-progress", "--out", str(out),
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]  # fmt: skip
    start = time.monotonic()
    res = launch([[*args, "--process-id", str(i)] for i in range(2)], timeout=150)
    took = time.monotonic() - start
    want = [f"error: process 1 of the job failed: {bad}:9: malformed JSON",
            f"error: {bad}:9: malformed JSON"]  # fmt: skip
    for r, w in zip(res, want, strict=True):
        assert r.returncode == 2, r.stderr[-3000:]
        assert r.stderr.strip().splitlines()[-1].startswith(w), r.stderr[-3000:]
        assert "Traceback" not in r.stderr and "Terminating process" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob("sel*"))
    assert took < 60, took  # start-up included; the exit barrier alone would take 300 s


def test_any_process_count_on_one_file_writes_the_same_bytes(tmp_path):
    """One 17 MB JSONL file (3 parts of 8 MiB): 1, 2, 3 and 5 processes write the same bytes,
    with parts to spare, one each, and two processes that read nothing but take part in every
    gather. DSIR (a pool pass, then scores) on a one-part file: 3 processes, 2 of them idle."""
    import json

    big = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    words = np.array(["def", "return", "the", "of", "x", "import", "class", "data", "=", "("])
    with open(big, "w") as f:
        for i in range(8500):
            text = " ".join(words[rng.integers(0, len(words), 470)])
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    assert 16e6 < big.stat().st_size < 18e6
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": 0, "text": "def f(x): return x"}) + "\n")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(big.read_text().splitlines(keepends=True)[:60]))
    for pool, method, counts in ((big, "random", (1, 2, 3, 5)), (small, "dsir", (1, 3))):
        outs = []
        for n in counts:
            out = tmp_path / f"{method}-{n}.jsonl"
            _cli(["select", "--method", method, "--pool", str(pool), "--target", str(target),
                  "-k", "25", "--out", str(out), "--no-progress"], n, free_port())  # fmt: skip
            outs.append(out.read_bytes())
        assert outs[0].count(b"\n") == 25 and all(o == outs[0] for o in outs), method
