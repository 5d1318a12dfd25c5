"""experiments/alignment_vs_ce.py (ZIP-FIT Figure 3): the line, R² and Spearman against scipy
on fixed numbers; a dataset's alignment against NCD computed here with lz4.frame; the whole
script on a tiny pool and a tiny random LM (`--target-domain`, two seeds)."""

import importlib.util
import json
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
from test_lamdas import write_tiny_dir

from jaxsel.data import Corpus, write_jsonl
from jaxsel.data.defaults import humaneval_target
from jaxsel.errors import InputError

pytest.importorskip("matplotlib")

_spec = importlib.util.spec_from_file_location(
    "alignment_vs_ce", Path(__file__).parents[1] / "experiments" / "alignment_vs_ce.py"
)
avc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(avc)

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nprint(os.listdir('.'))\n",
    "class A:\n    def f(self):\n        return 1\n",
    "x = [i for i in range(5) if i % 2]\n",
    "with open('f') as fh:\n    data = fh.read()\n",
    "def g(y):\n    return y * 2\n",
    "while True:\n    break\n",
]
PROSE = [
    "the cat sat on the mat and looked out of the window",
    "it was a bright cold day in april and the clocks were striking",
    "all happy families are alike; each unhappy family is unhappy in its own way",
    "call me ishmael. some years ago, never mind how long precisely",
]
NUMS = ["1 2 3 4 5 6 7 8 9 10", "3.14 2.71 1.41 1.73", "100 200 300 400 500", "7 11 13 17 19 23"]


def test_fit_line_matches_scipy():
    from scipy import stats

    x = [0.21, 0.35, 0.18, 0.40, 0.27, 0.30, 0.24]
    y = [2.10, 1.72, 2.15, 1.60, 2.02, 1.95, 2.05]
    fit = avc.fit_line(x, y)
    ref = stats.linregress(x, y)
    np.testing.assert_allclose(
        [fit["slope"], fit["intercept"], fit["r2"], fit["pearson"]],
        [ref.slope, ref.intercept, ref.rvalue**2, ref.rvalue],
        rtol=1e-12,
    )
    np.testing.assert_allclose(fit["spearman"], stats.spearmanr(x, y).statistic, rtol=1e-12)
    # R² is 1 - SS_res / SS_tot of the fitted line
    pred = np.polyval(np.polyfit(x, y, 1), x)
    ss = np.sum((np.asarray(y) - pred) ** 2) / np.sum((np.asarray(y) - np.mean(y)) ** 2)
    np.testing.assert_allclose(fit["r2"], 1 - ss, rtol=1e-12)
    # ties: average ranks, as scipy
    x2, y2 = [1, 2, 2, 3, 5], [5, 4, 4, 1, 2]
    np.testing.assert_allclose(
        avc.fit_line(x2, y2)["spearman"], stats.spearmanr(x2, y2).statistic, rtol=1e-12
    )
    assert avc.fit_line([0, 1, 2], [3, 1, -1]) == pytest.approx(
        {"n": 3, "slope": -2, "intercept": 3, "r2": 1, "pearson": -1, "spearman": -1}
    )
    with pytest.raises(InputError, match="at least 2 points"):
        avc.fit_line([1], [2])
    with pytest.raises(InputError, match="two different alignments"):
        avc.fit_line([1, 1], [2, 3])


def test_dataset_alignment_is_the_papers_ncd_with_lz4():
    def c(b):
        return len(lz4.frame.compress(b, compression_level=0))

    ref = Corpus.from_texts(CODE[:3])
    got = avc.dataset_alignment(PROSE + CODE[3:], ref, 5)
    ys = [t.encode() for t in CODE[:3]]
    want = []
    for t in (PROSE + CODE[3:])[:5]:
        x = t.encode()
        ncd = [(c(x + y) - min(c(x), c(y))) / max(c(x), c(y)) for y in ys]
        want.append(1 - np.mean(ncd))
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_script_end_to_end_on_a_tiny_pool(tmp_path):
    """`--target-domain code`: 4 code documents are the target (3 reference, 1 held out), the
    other 4 stay the `code` dataset; every dataset trains on the same 64 tokens with two seeds;
    the report's alignment, fit, seed ranges and figure agree with what it ran."""
    write_tiny_dir(tmp_path / "m", seed=1)
    recs = [{"id": f"c{i}", "text": t * 3, "domain": "code"} for i, t in enumerate(CODE)]
    recs += [{"id": f"p{i}", "text": t * 3, "domain": "prose"} for i, t in enumerate(PROSE)]
    recs += [{"id": f"n{i}", "text": t * 3, "domain": "nums"} for i, t in enumerate(NUMS)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    out = tmp_path / "out"
    argv = ["--pool", str(tmp_path / "pool.jsonl"), "--target-domain", "code"]
    argv += ["--target-docs", "4", "--heldout-fraction", "0.25", "--align-docs", "3"]
    argv += ["--tokens", "64", "--seq-len", "16", "--batch-size", "2", "--eval-max-tokens", "16"]
    argv += ["--seeds", "2", "--model", str(tmp_path / "m"), "--out", str(out)]
    argv += ["--workdir", str(tmp_path / "wd")]
    res = avc.main(argv)
    assert len(list((tmp_path / "wd").glob("curve-*.json"))) == 6  # 3 datasets x 2 seeds
    assert json.loads(json.dumps(res)) == json.loads((out / "results.json").read_text())
    meta, rows = res["meta"], res["datasets"]
    assert meta["complete"] and (meta["reference_items"], meta["heldout_items"]) == (3, 1)
    assert [r["name"] for r in rows] == ["code", "nums", "prose"]
    assert [r["documents"] for r in rows] == [4, 4, 4]
    # the code dataset is the code documents that are not the target, in their seeded order
    args = avc.parse_args(argv)
    pool = Corpus.from_texts([r["text"] for r in recs], domain=[r["domain"] for r in recs])
    reference, heldout, datasets = avc.target_and_datasets(pool, args)
    assert not set(datasets["code"]) & set(reference.texts + heldout.texts)
    together = [*datasets["code"], *reference.texts, *heldout.texts]
    assert sorted(together) == sorted(t * 3 for t in CODE)
    for r in rows:
        a = avc.dataset_alignment(datasets[r["name"]], reference, 3)
        assert r["alignment_docs"] == 3
        np.testing.assert_allclose([r["alignment"], r["alignment_sd"]], [a.mean(), a.std()])
        assert len(r["ce_seeds"]) == 2 and r["ce_seeds"][0] != r["ce_seeds"][1]
        np.testing.assert_allclose(r["ce"], np.mean(r["ce_seeds"]), rtol=1e-6)
        assert len(r["train_loss"]) == 2  # 64 tokens = 4 rows of 16 = 2 steps of 2 rows
    fit = avc.fit_line([r["alignment"] for r in rows], [r["ce"] for r in rows])
    assert res["fit"] == pytest.approx(fit)
    # the on-target dataset is the best aligned
    assert max(rows, key=lambda r: r["alignment"])["name"] == "code"
    table = (out / "table.md").read_text()
    assert f"R² = {fit['r2']:.3f}, Spearman = {fit['spearman']:+.3f}" in table
    assert table.splitlines()[0].startswith("| dataset | alignment (mean ± sd) | held-out CE |")
    lo, hi = min(rows[0]["ce_seeds"]), max(rows[0]["ce_seeds"])
    assert f"| {lo:.4f}–{hi:.4f} |" in table
    assert (out / "alignment_vs_ce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_add_humaneval_makes_an_on_target_dataset(tmp_path):
    """`--add-humaneval --target-domain humaneval`: HumanEval's problems not in the target are
    a dataset of their own, disjoint from the reference and held-out split."""
    recs = [{"id": f"p{i}", "text": t, "domain": "prose"} for i, t in enumerate(PROSE)]
    write_jsonl(tmp_path / "pool.jsonl", recs)
    argv = ["--pool", str(tmp_path / "pool.jsonl"), "--add-humaneval"]
    args = avc.parse_args([*argv, "--target-domain", "humaneval", "--target-docs", "80"])
    pool = avc.load_pool(args)
    he = humaneval_target()
    assert len(pool) == len(PROSE) + len(he) == len(PROSE) + 164
    assert pool.field("domain").count("humaneval") == 164
    reference, heldout, datasets = avc.target_and_datasets(pool, args)
    assert (len(reference), len(heldout), len(datasets["humaneval"])) == (64, 16, 84)
    assert datasets["prose"] and sorted(datasets["prose"]) == sorted(PROSE)
    target = [*reference.texts, *heldout.texts]
    assert not set(datasets["humaneval"]) & set(target)
    assert sorted(datasets["humaneval"] + target) == sorted(he.texts)


def test_alignment_figure_draws_points_line_and_untrained():
    from jaxsel import plots

    fig = plots.alignment_vs_ce(
        ["a", "b", "c"],
        [0.1, 0.2, 0.3],
        [2.0, 1.8, 1.5],
        2.2,
        slope=-2.5,
        intercept=2.27,
        ce_range=[(1.9, 2.1), (1.7, 1.85), (1.45, 1.5)],
        title="t",
    )
    ax = fig.axes[0]
    lines = {ln.get_label(): (ln.get_xdata(), ln.get_ydata()) for ln in ax.get_lines()}
    x, y = lines["linear fit"]
    np.testing.assert_allclose(y, -2.5 * np.asarray(x) + 2.27)
    np.testing.assert_allclose(lines["untrained (2.200)"][1], [2.2, 2.2])
    pts = [c.lines[0].get_xydata()[0] for c in ax.containers]
    np.testing.assert_allclose(pts, [[0.1, 2.0], [0.2, 1.8], [0.3, 1.5]])
    bars = [c.lines[2][0].get_segments()[0][:, 1] for c in ax.containers]
    np.testing.assert_allclose(bars, [[1.9, 2.1], [1.7, 1.85], [1.45, 1.5]])
    with pytest.raises(InputError, match="2 names, 3 alignments"):
        plots.alignment_vs_ce(["a", "b"], [0.1, 0.2, 0.3], [1, 2, 3], 2.0, slope=0, intercept=0)
