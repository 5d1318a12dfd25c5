"""`jaxsel eval` and `jaxsel compare` end to end on a tiny pool, checked by hand counts."""

import json

from jaxsel.cli import main


def _pool(tmp_path):
    recs = [
        {"id": f"d{i}", "text": f"document {i} " * (i + 1), "domain": "py" if i % 2 else "c"}
        for i in range(8)
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, recs


def test_eval_selection(tmp_path, capsys):
    pool, recs = _pool(tmp_path)
    sel = tmp_path / "sel.jsonl"
    sel.write_text("".join(json.dumps(recs[i]) + "\n" for i in [1, 3, 0]))
    assert main(["eval", str(sel), "--pool", str(pool), "--domain", "py"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["k"] == 3
    assert abs(report["precision_at_k"] - 2 / 3) < 1e-12
    assert report["base_rate"] == 0.5


def test_eval_score_file_uses_scores(tmp_path, capsys):
    pool, recs = _pool(tmp_path)
    scores = tmp_path / "s.jsonl"
    # py items (odd) score high -> precision@4 = 1
    scores.write_text(
        "".join(json.dumps({"id": r["id"], "score": i % 2}) + "\n" for i, r in enumerate(recs))
    )
    assert main(["eval", str(scores), "--pool", str(pool), "--domain", "py", "-k", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["precision_at_k"] == 1.0
    assert len(report["by_length_bucket"]) == 4


def test_eval_unknown_id_is_one_line_error(tmp_path, capsys):
    pool, _ = _pool(tmp_path)
    sel = tmp_path / "sel.jsonl"
    sel.write_text(json.dumps({"id": "nope", "text": "x"}) + "\n")
    assert main(["eval", str(sel), "--pool", str(pool)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not in the pool" in err[-1]


def test_compare_random_is_seeded(tmp_path, capsys):
    pool, _ = _pool(tmp_path)
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": "t", "text": "document"}) + "\n")
    argv = [
        "compare",
        "--pool",
        str(pool),
        "--target",
        str(target),
        "--methods",
        "random",
        "--domain",
        "py",
        "-k",
        "2",
        "4",
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert main(argv) == 0
    first = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert main(argv) == 0
    second = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert first["P@4"] == second["P@4"] and first["method"] == "random"
    assert "| random |" in capsys.readouterr().out
