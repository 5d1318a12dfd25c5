"""`--engine ray`: Ray Data map_batches over the pool's parts writes the local engine's shards and
output byte for byte, resumes only missing shards, and refuses an unreachable cluster in one
line. One local Ray cluster (2 CPUs) for the module: Ray's start-up is the slow part."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_multihost import ROOT, free_port

from jaxsel.cli import main

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _data(root: Path) -> tuple[str, str]:
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))[:36]
    (root / "pool").mkdir()
    for f in range(3):
        with open(root / "pool" / f"p{f}.jsonl", "w") as out:
            for i, p in enumerate(files[f::3]):
                text = p.read_text(errors="replace")[: 200 + 50 * i]
                out.write(json.dumps({"id": f"{f}-{i}", "text": text}) + "\n")
    with open(root / "target.jsonl", "w") as out:
        for i, t in enumerate(["def add(a, b):\n    return a + b\n", "class A:\n    pass\n"]):
            out.write(json.dumps({"id": i, "text": t}) + "\n")
    return str(root / "pool" / "*.jsonl"), str(root / "target.jsonl")


def _run(*args: str) -> None:
    assert main(list(args)) == 0


def _on_ray(caplog) -> list[int]:
    """Batches scored on Ray per run, from the pipeline's log."""
    msgs = [
        r.getMessage()
        for r in caplog.records
        if "batches computed on Ray" in r.getMessage() and "(counts)" not in r.getMessage()
    ]
    caplog.clear()
    return [int(m.split(": ")[1].split()[0]) for m in msgs]


def test_ray_engine_equals_local_and_resumes(cluster, tmp_path, caplog):
    caplog.set_level("INFO", logger="jaxsel")
    pool, target = _data(tmp_path)
    for method, extra in (("zipfit", ["--workers", "1", "--shard-size", "5"]),
                          ("dsir", ["--buckets", "256", "--shard-size", "4"])):  # fmt: skip
        common = ["select", "--method", method, "--pool", pool, "--target", target, "-k", "8",
                  "--no-progress", *extra]  # fmt: skip
        local, on_ray = tmp_path / f"{method}-local.jsonl", tmp_path / f"{method}-ray.jsonl"
        wl, wr = tmp_path / f"{method}-wl", tmp_path / f"{method}-wr"
        _run(*common, "--out", str(local), "--workdir", str(wl))
        _run(*common, "--out", str(on_ray), "--workdir", str(wr), "--engine", "ray")
        if method == "dsir":  # the first pass (p_raw) is counted on Ray too, every document once
            counted = [r.getMessage() for r in caplog.records if "pool counts" in r.getMessage()]
            assert counted == [
                "dsir: pool counts of 36 documents in 3 part(s), here",
                "dsir: pool counts of 36 documents in 3 part(s), on Ray",
            ]
        assert _on_ray(caplog) == [len(list(wr.glob("shard-*.npy")))]
        assert local.read_bytes() == on_ray.read_bytes() and local.read_bytes().count(b"\n") == 8
        shards = {p.name: p.read_bytes() for p in wl.glob("shard-*")}
        assert shards and shards == {p.name: p.read_bytes() for p in wr.glob("shard-*")}

    # resume: a killed task or driver leaves some shards missing; only those go to Ray again
    names = sorted({p.name.split(".")[0] for p in wr.glob("shard-*")})
    gone = [p for p in wr.glob("shard-*") if p.name.split(".")[0] in names[::2]]
    for p in gone:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in wr.glob("shard-*")}
    again = tmp_path / "again.jsonl"
    _run(*common, "--out", str(again), "--workdir", str(wr), "--engine", "ray")
    assert _on_ray(caplog) == [len(names[::2])]
    assert again.read_bytes() == local.read_bytes()
    assert all(p.exists() for p in gone)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def _counted_on_ray(caplog) -> list[int]:
    """Batches of DSIR's first pass counted on Ray per run, from the engine's log."""
    msgs = [
        r.getMessage()
        for r in caplog.records
        if "(counts): " in r.getMessage() and "batches computed on Ray" in r.getMessage()
    ]
    return [int(m.split(": ")[1].split()[0]) for m in msgs]


def test_ray_pool_counts_resume_from_either_engines_shards(cluster, tmp_path, caplog):
    """DSIR's counting pass on Ray keeps each batch's counts as the local engine's shards
    (same names, same bytes): a Ray rerun after losing one count shard of a local run counts
    that batch alone, rewrites it byte for byte, and writes the local output."""
    caplog.set_level("INFO", logger="jaxsel")
    pool, target = _data(tmp_path)
    common = ["select", "--method", "dsir", "--pool", pool, "--target", target, "-k", "8",
              "--no-progress", "--buckets", "256", "--shard-size", "4"]  # fmt: skip
    wl, wr = tmp_path / "wl", tmp_path / "wr"
    local, fresh, resumed = (tmp_path / f"{n}.jsonl" for n in ("local", "fresh", "resumed"))
    _run(*common, "--out", str(local), "--workdir", str(wl))
    counts = {p.name: p.read_bytes() for p in (wl / "pool-counts").glob("shard-*")}
    assert len(counts) == 2 * 9  # 3 files of 12 documents: 3 batches of 4 each, .npy + .json

    _run(*common, "--out", str(fresh), "--workdir", str(wr), "--engine", "ray")
    assert _counted_on_ray(caplog) == [9] and _on_ray(caplog) == [9]
    assert {p.name: p.read_bytes() for p in (wr / "pool-counts").glob("shard-*")} == counts

    lost = sorted((wl / "pool-counts").glob("shard-*.npy"))[4]
    lost.unlink()
    lost.with_suffix(".json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (wl / "pool-counts").glob("shard-*")}
    _run(*common, "--out", str(resumed), "--workdir", str(wl), "--engine", "ray")
    assert _counted_on_ray(caplog) == [1] and _on_ray(caplog) == [0]  # score shards still fit
    assert {p.name: p.read_bytes() for p in (wl / "pool-counts").glob("shard-*")} == counts
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert local.read_bytes() == fresh.read_bytes() == resumed.read_bytes()
    assert local.read_bytes().count(b"\n") == 8


def test_ray_engine_on_a_parquet_pool_equals_local(cluster, tmp_path, caplog):
    """A Parquet pool (8 row groups = 8 parts) scored on Ray: the local engine's bytes, which
    are those of the same records as JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxsel.data.sources import open_source

    caplog.set_level("INFO", logger="jaxsel")
    pool, target = _data(tmp_path)
    records = [r for b in open_source(pool).batches(64) for r in b.records]
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=5)
    common = ["select", "--method", "zipfit", "--target", target, "-k", "8", "--no-progress",
              "--workers", "1", "--shard-size", "4"]  # fmt: skip
    outs = {}
    for name, extra in (("jsonl", ["--pool", pool]), ("local", ["--pool", str(path)]),
                        ("ray", ["--pool", str(path), "--engine", "ray"])):  # fmt: skip
        outs[name] = tmp_path / f"{name}.jsonl"
        _run(*common, *extra, "--out", str(outs[name]))
    assert _on_ray(caplog) == [15]  # row groups of 5 (7) and 1: 7 × 2 + 1 batches of ≤ 4
    one = outs["jsonl"].read_bytes()
    assert one.count(b"\n") == 8 and outs["local"].read_bytes() == one
    assert outs["ray"].read_bytes() == one


def test_unreachable_ray_address_is_one_line(tmp_path):
    pool, target = _data(tmp_path)
    port = free_port()
    r = subprocess.run(
        [sys.executable, "-m", "jaxsel.cli", "select", "--pool", pool, "--target", target,
         "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
         "--out", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: Ray address 127.0.0.1:{port} unreachable")
    ), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--method", "gip", "--engine", "ray"], "--engine ray runs the host-pool methods"),
        (["--ray-workers", "2"], "--ray-address and --ray-workers go with --engine ray"),
        (["--engine", "ray", "--ray-workers", "0"], "--ray-workers must be positive"),
        (["--engine", "ray", "--ray-address", "nohost"], "expected HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_engine_flags_refused_in_one_line(tmp_path, capsys, args, msg):
    pool, target = _data(tmp_path)
    argv = ["select", "--pool", pool, "--target", target, "--out", str(tmp_path / "o.jsonl"), *args]
    assert main(argv) == 2
    assert msg in capsys.readouterr().err.strip().splitlines()[-1]
