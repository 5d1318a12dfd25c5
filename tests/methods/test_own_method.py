"""A method of your own, in one file and touching no other: score = -scale * log(byte length).

Registering the value is all it takes: the method gets its CLI flags from its Config, runs
through `score`, `select` and `compare`, on Ray and on 2 JAX processes (byte for byte as on
one), and passes the contract every built-in method passes."""

import dataclasses
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from test_contract import check_contract
from test_multihost import _cli, _pool_files, free_port

from jaxsel import methods
from jaxsel.cli import main
from jaxsel.methods import LOCAL_AND_RAY, BatchScores, Streamed

HERE = Path(__file__).parent  # and its parent: the modules it imports

# ------------------------------------------------------------------------- the whole method


@dataclasses.dataclass(frozen=True)
class Config:
    """test-length: shorter documents first.

    Score: higher = shorter; -scale * ln(byte length), in (−∞, 0] for scale > 0.
    """

    scale: float = dataclasses.field(default=1.0, metadata={"help": "weight of -log(bytes)"})
    shard_size: int = dataclasses.field(default=4, metadata={"help": "documents per batch"})


class State(NamedTuple):
    key: dict  # what identifies the scoring (bound into resumable shards)
    scale: float


def prepare(pool, target, config: Config, run) -> State:
    return State({"method": "test-length", "scale": config.scale}, config.scale)


def score_batch(state: State, batch) -> BatchScores:
    nbytes = np.array([max(len(t.encode("utf-8")), 1) for t in batch.texts], np.float64)
    return BatchScores(-state.scale * np.log(nbytes), {"documents": len(nbytes)})


def describe(state: State, stats: dict) -> dict:
    return {"scale": state.scale, "documents": int(stats.get("documents", 0))}


LENGTH = Streamed("test-length", Config, prepare, score_batch, describe, LOCAL_AND_RAY)
methods.register(LENGTH)

# ------------------------------------------------------------------------------------ tests


def _want(path: Path, scale: float) -> list[tuple[str, float]]:
    """(id, score) best first, ties by pool order: by hand from the file."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    s = [-scale * np.log(max(len(r["text"].encode("utf-8")), 1)) for r in recs]
    order = sorted(range(len(recs)), key=lambda i: (-s[i], i))
    return [(recs[i]["id"], s[i]) for i in order]


@pytest.fixture()
def files(tmp_path):
    pool, target = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    texts = ["a" * n for n in (5, 50, 3, 500, 3, 40, 7)]
    with open(pool, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t, "domain": "a" if i % 2 else "b"}) + "\n")
    target.write_text(json.dumps({"id": 0, "text": "x"}) + "\n")
    return pool, target


def test_own_method_keeps_the_contract(tmp_path):
    check_contract("test-length", {"scale": 2.0}, tmp_path)


def test_own_method_on_the_command_line(files, tmp_path, capsys):
    pool, target = files
    common = ["--method", "test-length", "--scale", "2", "--pool", str(pool)]
    common += ["--target", str(target), "--no-progress"]
    out = tmp_path / "sel.jsonl"
    assert main(["select", *common, "-k", "3", "--out", str(out)]) == 0
    got = [(r["id"], r["score"]) for r in map(json.loads, out.read_text().splitlines())]
    assert got == _want(pool, 2.0)[:3]  # ties (two 3-byte texts) by pool order
    assert main(["score", *common, "--out", str(tmp_path / "s.jsonl")]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["select", "--method", "test-length", "--help"])
    assert "--scale SCALE" in capsys.readouterr().out
    argv = ["compare", "--methods", "test-length,random", "--pool", str(pool)]
    assert main([*argv, "--target", str(target), "-k", "2", "--domain", "b"]) == 0
    assert "| test-length |" in capsys.readouterr().out


def test_own_method_on_ray_and_two_processes(tmp_path):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors need no import
    pool = _pool_files(tmp_path / "pool")
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": 0, "text": "x"}) + "\n")
    common = ["select", "--method", "test-length", "--pool", pool, "--target", str(target)]
    common += ["-k", "9", "--no-progress"]
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main([*common, "--out", str(local)]) == 0
    argv = [*common, "--out", str(on_ray), "--engine", "ray", "--ray-workers", "2"]
    assert main(argv) == 0
    assert on_ray.read_bytes() == local.read_bytes()
    script = tmp_path / "cli.py"  # each process registers the method, then runs the CLI
    script.write_text(
        f"import sys\nsys.path[:0] = {[str(p) for p in (HERE, HERE.parent)]!r}\n"
        "import test_own_method\nfrom jaxsel.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    two = tmp_path / "two.jsonl"
    _cli([*common, "--out", str(two)], 2, free_port(), (str(script),))
    assert two.read_bytes() == local.read_bytes()
