"""`--plot` of `jaxsel eval`, `compare` and `compress --info`: each writes a PNG, and the numbers
the figure draws (read back from its artists) equal ones computed independently here: hand
counts, a brute-force ranking, and SmolLM2's token costs from the float64 numpy forward."""

import json
import os

import numpy as np
import pytest
from llama_ref import np_forward

from jaxsel import finezip, methods, plots
from jaxsel.cli import main
from jaxsel.data import read_jsonl
from jaxsel.evaluate import precision_at_k, precision_curve

pytest.importorskip("matplotlib")


@pytest.fixture
def figures(monkeypatch):
    """Every figure `plots.save` writes (the PNG is still written)."""
    saved, real = [], plots.save

    def save(fig, path):
        saved.append(fig)
        return real(fig, path)

    monkeypatch.setattr(plots, "save", save)
    return saved


def _png_ok(path):
    from PIL import Image

    assert path.stat().st_size > 5000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 200
        assert np.asarray(im.convert("L")).std() > 10  # something is drawn


def _lines(ax):
    return {ln.get_label(): (ln.get_xdata(), ln.get_ydata()) for ln in ax.get_lines()}


def _pool(tmp_path):
    words = {"py": "def return import class lambda self", "c": "int char struct void static"}
    recs = [
        {
            "id": f"d{i}",
            "text": " ".join(words["py" if i % 3 == 0 else "c"].split()[: 2 + i % 4]) * (1 + i),
            "domain": "py" if i % 3 == 0 else "c",
        }
        for i in range(24)
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, recs


def test_precision_curve_is_precision_at_every_k():
    ranked = list("abaabbbab")
    want = [precision_at_k(ranked, "a", k) for k in range(1, len(ranked) + 1)]
    np.testing.assert_allclose(precision_curve(ranked, "a"), want, rtol=0, atol=1e-15)


def test_eval_plot(tmp_path, figures, capsys):
    pool, recs = _pool(tmp_path)
    sel_a, sel_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sel_a.write_text("".join(json.dumps(recs[i]) + "\n" for i in [0, 1, 3, 6, 2]))
    sel_b.write_text("".join(json.dumps(recs[i]) + "\n" for i in [4, 9]))
    png = tmp_path / "eval.png"
    argv = ["eval", str(sel_a), str(sel_b), "--pool", str(pool), "--domain", "py"]
    assert main([*argv, "--plot", str(png)]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert reports[str(sel_a)]["precision_at_k"] == 3 / 5
    _png_ok(png)
    (fig,) = figures
    curves, mix = fig.axes[0], fig.axes[1]
    lines = _lines(curves)
    # selection a = py, c, py, py, c -> hits 1,1,2,3,3 over K = 1..5
    np.testing.assert_array_equal(lines["a"][0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(lines["a"][1], [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(lines["b"][1], [0, 1 / 2])  # d4, d9: c, py
    base = [v for k, v in lines.items() if k.startswith("base rate")][0]
    np.testing.assert_allclose(base[1], [8 / 24, 8 / 24])
    assert curves.get_xlabel() and curves.get_ylabel() and curves.get_legend()
    # domain mix: stacked bars, one container per domain, one bar per selection
    widths = {c.get_label(): [p.get_width() for p in c.patches] for c in mix.containers}
    np.testing.assert_allclose(widths["py"], [3 / 5, 1 / 2])
    np.testing.assert_allclose(widths["c"], [2 / 5, 1 / 2])


def test_compare_plot(tmp_path, figures, capsys):
    pool, recs = _pool(tmp_path)
    target = tmp_path / "t.jsonl"
    target.write_text(json.dumps({"id": "t", "text": "def f(self): return lambda x: x"}) + "\n")
    png = tmp_path / "cmp.png"
    argv = ["compare", "--pool", str(pool), "--target", str(target), "--methods", "dsir,random"]
    assert main([*argv, "--domain", "py", "-k", "4", "--plot", str(png)]) == 0
    _png_ok(png)
    (fig,) = figures
    lines = _lines(fig.axes[0])
    corpus, tgt = read_jsonl(pool), read_jsonl(target)
    for name in ("dsir", "random"):
        m = methods.get(name)
        v = m.score(corpus, tgt, m.config_cls(), progress=False).values
        order = sorted(range(len(v)), key=lambda i: (-v[i], i))  # brute force, ties by index
        hits = np.cumsum([recs[i]["domain"] == "py" for i in order])
        np.testing.assert_array_equal(lines[name][0], np.arange(1, 25))
        np.testing.assert_allclose(lines[name][1], hits / np.arange(1, 25), rtol=0, atol=1e-15)
    assert fig.axes[0].get_legend() is not None


def _tiny_hf_dir(path):
    """A random 2-layer Llama as an HF directory (safetensors written from our own layout) with
    a byte-level tokenizer: loads through `--model DIR` like a user's model."""
    from llama_ref import random_params, tiny_tokenizer_json
    from safetensors.numpy import save_file

    from jaxsel.models.llama import LlamaConfig
    from jaxsel.models.loaders import hf_state_dict

    cfg = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, rope_theta=1e4, rms_eps=1e-5, tie_embeddings=False,
        max_position=128,
    )  # fmt: skip
    path.mkdir()
    save_file(hf_state_dict(random_params(cfg), cfg), str(path / "model.safetensors"))
    conf = {
        "model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "rope_theta": 1e4, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "max_position_embeddings": 128,
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(conf))
    (path / "tokenizer.json").write_text(tiny_tokenizer_json(300))
    return str(path)


LICENSE = (
    b"Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    b"software and associated documentation files, to deal in the Software without "
    b"restriction, including without limitation the rights to use, copy, modify, merge.\n"
)


@pytest.mark.parametrize(
    "model,coder",
    [("tiny", "ac"), ("tiny", "ac-match"), pytest.param("smollm2", "ac", marks=pytest.mark.slow)],
)
def test_compress_info_plot(tmp_path, figures, monkeypatch, model, coder):
    """Per-window bits/byte = what the window's tokens cost in the archive / their bytes; the
    windows add up to the range-coded payload. With `ac` that is the float64 numpy forward's
    -log2 p, in the coder's context (segments; the first window from bos, later ones after a
    prefill of C - S + 1 tokens); with `ac-match` (the default coder) the repeated licence text
    costs far less than that. A random 2-layer Llama from an HF directory by default; SmolLM2 in
    the slow run."""
    from jaxsel.models.loaders import load_lm

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # the CLI appends flags
    spec = _tiny_hf_dir(tmp_path / "lm") if model == "tiny" else "smollm2"
    src, arch, png = tmp_path / "t.txt", tmp_path / "t.fz", tmp_path / "windows.png"
    text = LICENSE * 3  # segments long enough for windows past the first
    src.write_bytes(text)
    argv = ["compress", str(src), str(arch), "--context", "16", "--stride", "6", "--model", spec]
    argv += ["--coder", coder]
    assert main([*argv, "--batch-size", "8", "--no-fallback"]) == 0
    assert main(["compress", "--info", str(arch), "--plot", str(png), "--model", spec]) == 0
    _png_ok(png)
    (fig,) = figures
    ax = fig.axes[0]
    heights = np.array([p.get_height() for p in ax.containers[0].patches])
    lm = load_lm(spec)
    m = finezip.read_header(arch.read_bytes())[0].model
    ids = lm.tokenizer.encode(text.decode())
    assert m.n_tokens == len(ids)  # the coder may shrink C and S to short segments (make_plan)
    c, st = m.context, m.stride

    def cost(context, targets):  # -log2 p of `targets` after `context`, numpy float64
        row = np.array([[*context, *targets]])
        logits = np_forward(lm.params, row, lm.cfg)[0]
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        pos = np.arange(len(context) - 1, row.shape[1] - 1)
        return -logp[pos, row[0, pos + 1]].sum() / np.log(2)

    seg = -(-m.n_tokens // (m.batch_size * m.n_batches))
    bits, nbytes = [], []
    for s0 in range(0, len(ids), seg):
        s = ids[s0 : s0 + seg]
        wins = [([lm.tokenizer.bos_id], s[:c])]
        wins += [(s[w - (c - st + 1) : w], s[w : w + st]) for w in range(c, len(s), st)]
        for context, targets in wins:
            bits.append(cost(context, targets))
            nbytes.append(len(lm.tokenizer.decode(targets).encode()))
    assert sum(nbytes) == len(text) and len(heights) == len(bits) > 2
    if model == "tiny":  # sliding windows after the first, not only one window per segment
        assert (c, st) == (16, 6) and len(bits) > m.batch_size * m.n_batches
    drawn = heights * nbytes  # bits of each window as plotted
    if coder == "ac":
        np.testing.assert_allclose(heights, np.array(bits) / nbytes, rtol=1e-3)
    else:
        assert drawn.sum() < 0.5 * sum(bits), (drawn.sum(), sum(bits))
    payload = 8 * m.sections(finezip.read_header(arch.read_bytes())[0].body_len)[2]
    total = drawn.sum()
    assert total <= payload <= total + 64 * m.n_batches * m.batch_size + 0.02 * total
    whole = [v for k, v in _lines(ax).items() if k.startswith("payload, whole file")][0]
    np.testing.assert_allclose(whole[1], payload / len(text))
    assert f"{8 * arch.stat().st_size / len(text):.3f} bits/byte" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None


def _tiny_lm(tmp_path):
    from jaxsel.models.loaders import load_lm

    return load_lm(_tiny_hf_dir(tmp_path / "lm"))


def test_token_bits_do_not_depend_on_batching(tmp_path):
    from jaxsel.finezip import engine
    from jaxsel.finezip.costs import token_bits

    lm = _tiny_lm(tmp_path)
    ids = np.array(lm.tokenizer.encode(LICENSE.decode()))
    plan = engine.Plan(ids.size, 16, 6, 4, 2)
    ref = token_bits(lm, ids, plan, batch=64)  # one batch
    np.testing.assert_allclose(token_bits(lm, ids, plan, batch=3), ref, rtol=1e-5, atol=1e-5)
    # one segment with a context longer than the text: every token from bos on, one window;
    # the first segment of `plan` starts the same way for its first 16 tokens
    whole = token_bits(lm, ids[:10], engine.Plan(10, 16, 6, 1, 1))
    np.testing.assert_allclose(whole, ref[:10], rtol=1e-5, atol=1e-5)


def test_compress_plot_needs_info_and_a_model_archive(tmp_path, capsys):
    src, arch = tmp_path / "b", tmp_path / "b.fz"
    src.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SystemExit):  # --plot is `jaxsel info`'s (or `compress --info`'s)
        main(["compress", str(src), str(arch), "--plot", str(tmp_path / "x.png")])
    assert capsys.readouterr().err == f"error: unrecognized arguments: --plot {tmp_path}/x.png\n"
    assert main(["compress", str(src), str(arch)]) == 0
    assert main(["compress", "--info", str(arch), "--plot", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: archive mode")
    assert not (tmp_path / "x.png").exists()


def test_pca_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)) @ np.diag([5, 3, 1, 0.5, 0.2, 0.1])
    coords, explained = plots.pca_2d(x)
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(xc.T @ xc)
    top = v[:, ::-1][:, :2]
    for j in range(2):  # same axis up to sign
        assert abs(abs(np.dot(coords[:, j], xc @ top[:, j])) - np.sum((xc @ top[:, j]) ** 2)) < 1e-8
    np.testing.assert_allclose(explained, w[::-1][:2] / w.sum(), rtol=1e-10)


def test_downstream_figure_draws_the_report():
    report = {
        "curves": {
            "a": {"tokens": [0, 64], "ce": [3.0, 2.5]},
            "b": {"tokens": [0, 64], "ce": [3.0, 2.8]},
        },
        "untrained_ce": 3.0,
    }
    ax = plots.downstream_figure(report).axes[0]
    lines = _lines(ax)
    np.testing.assert_array_equal(lines["a"][0], [0, 64])
    np.testing.assert_array_equal(lines["b"][1], [3.0, 2.8])
    np.testing.assert_array_equal(lines["untrained"][1], [3.0, 3.0])
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None


def test_downstream_plot_draws_the_seed_band(tmp_path, figures):
    """With several fine-tuning seeds each curve is their mean and a band spans the lowest to
    the highest seed at every evaluated token count; with one seed there is no band."""
    seeds = {
        "a": [[3.0, 2.6, 2.4], [3.0, 2.5, 2.2], [3.0, 2.7, 2.3]],
        "b": [[3.0, 2.9, 2.8], [3.0, 2.8, 2.85], [3.0, 2.95, 2.7]],
    }
    report = {
        "curves": {
            n: {"tokens": [0, 32, 64], "ce": np.mean(s, 0).tolist(), "ce_seeds": s}
            for n, s in seeds.items()
        },
        "untrained_ce": 3.0,
    }
    for n, s in seeds.items():
        lo, hi = plots.seed_band(report["curves"][n])
        np.testing.assert_array_equal(lo, np.min(s, 0))
        np.testing.assert_array_equal(hi, np.max(s, 0))
    plots.downstream_curves(report, tmp_path / "d.png")
    _png_ok(tmp_path / "d.png")
    ax = figures[-1].axes[0]
    lines = _lines(ax)
    for (n, s), band in zip(seeds.items(), ax.collections, strict=True):
        np.testing.assert_allclose(lines[n][1], np.mean(s, 0))
        # fill_between's polygon: the lower bound left to right, the upper right to left
        xy = band.get_paths()[0].vertices
        for x, lo, hi in zip([0, 32, 64], np.min(s, 0), np.max(s, 0), strict=True):
            at = xy[np.isclose(xy[:, 0], x), 1]
            np.testing.assert_allclose([at.min(), at.max()], [lo, hi])
        assert band.get_facecolor()[0][:3] == pytest.approx(_line_color(ax, n))
    assert "band: lowest to highest seed" in ax.get_title()
    one = {"curves": {"a": {"tokens": [0, 64], "ce": [3.0, 2.5], "ce_seeds": [[3.0, 2.5]]}}}
    one["untrained_ce"] = 3.0
    assert plots.seed_band(one["curves"]["a"]) is None
    assert not plots.downstream_figure(one).axes[0].collections


def _line_color(ax, label):
    from matplotlib.colors import to_rgb

    return to_rgb(next(ln for ln in ax.get_lines() if ln.get_label() == label).get_color())
