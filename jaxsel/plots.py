"""Figures for the notebook, the README and the CLI's `--plot PATH` (optional extra `[plot]`).

Pure functions: numbers in, a `matplotlib.figure.Figure` out. They use matplotlib's
object-oriented API only (no pyplot, no global state, no display): `save` renders with the Agg
backend. matplotlib is imported on first use, so the library runs without it. Each figure keeps
the numbers it draws in its artists (line x/y data, bar heights), which is how the tests read
them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxsel.errors import InputError, JaxselError

WIDTH = 7.5  # inches; at DPI this is about the width of a README column
DPI = 110


def _figure(rows: int = 1, cols: int = 1, height: float = 3.6, width: float = WIDTH):
    """A new Figure with a grid of axes (returned as a 2-D array)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise JaxselError("plots need matplotlib: pip install 'jaxsel[plot]'") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def png_bytes(fig) -> bytes:
    """`fig` rendered as PNG bytes by Agg (no display needed; no timestamp or version in the
    file, so the same figure gives the same bytes)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def save(fig, path: str | Path) -> Path:
    """Writes `fig` as a PNG file (see `png_bytes`) atomically; creates the parent directory."""
    from jaxsel.data.outputs import write_bytes

    write_bytes(path, png_bytes(fig))
    return Path(path)


def _log_x(ax) -> None:
    """Log x axis labelled with plain numbers at 1, 2, 5 x each power of ten."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (tab10 in the given order)."""
    return {n: f"C{i % 10}" for i, n in enumerate(names)}


# -------------------------------------------------------------------------------- selection


def precision_curves(
    curves: Mapping[str, np.ndarray], base_rate: float, domain: str, *, ax=None, k_max=None
):
    """Precision@K vs K, one line per ranking (`curves[name][K-1]` = precision@K), with the
    base rate (the expected precision of a random ranking) as a dashed floor.

    Args:
      curves: name -> float [n] (see `jaxsel.evaluate.precision_curve`).
      base_rate: share of `domain` in the pool.
      domain: the relevant domain (axis label).
      ax: draw into this Axes instead of a new figure.
      k_max: draw K = 1..k_max only (default: the longest curve).
    Returns the Figure.
    """
    if not curves:
        raise InputError("no precision curve to plot")
    if ax is None:
        ax = _figure()[1][0, 0]
    colors = _colors(list(curves))
    for name, c in curves.items():
        c = np.asarray(c, np.float64)[:k_max]
        style = {"color": "0.45", "ls": ":"} if name == "random" else {"color": colors[name]}
        ax.plot(np.arange(1, c.size + 1), c, label=name, lw=1.6, **style)
    ax.axhline(base_rate, color="0.3", ls="--", lw=1, label=f"base rate ({base_rate:.3f})")
    n = max(np.asarray(c)[:k_max].size for c in curves.values())
    if n > 50:
        _log_x(ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("K (top-K selected, documents" + ("; log scale)" if n > 50 else ")"))
    ax.set_ylabel(f"precision@K ({domain!r} share)")
    ax.set_title(f"precision@K of {domain!r}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return ax.figure


def domain_mix_bars(mixes: Mapping[str, Mapping[str, float]], *, ax=None):
    """One horizontal stacked bar per selection: the share of each domain (sums to 1)."""
    if not mixes:
        raise InputError("no domain mix to plot")
    if ax is None:
        ax = _figure(height=1.2 + 0.4 * len(mixes))[1][0, 0]
    names = list(mixes)
    domains = sorted({d for m in mixes.values() for d in m})
    colors = _colors(domains)
    left = np.zeros(len(names))
    for d in domains:
        w = np.array([mixes[n].get(d, 0.0) for n in names])
        ax.barh(names, w, left=left, label=d, color=colors[d])
        left += w
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of the selection (fraction of documents)")
    ax.set_title("domain mix")
    ax.legend(fontsize=7, ncols=min(len(domains), 3), loc="lower right", framealpha=0.9)
    return ax.figure


def selection_figure(
    curves: Mapping[str, np.ndarray],
    mixes: Mapping[str, Mapping[str, float]],
    base_rate: float,
    domain: str,
):
    """`jaxsel eval --plot`: precision@K curves (left) and domain mixes (right)."""
    fig, axes = _figure(1, 2, height=3.6, width=10)
    precision_curves(curves, base_rate, domain, ax=axes[0, 0])
    domain_mix_bars(mixes, ax=axes[0, 1])
    return fig


def score_distributions(
    scores: Mapping[str, np.ndarray], domains: Sequence[str], nbytes: Sequence[int]
):
    """Per method (one row): score distribution per domain (box plots, left) and score vs
    document length (right), where a length bias shows as a trend. -inf (unranked) is left out.
    """
    if not scores:
        raise InputError("no scores to plot")
    doms = np.asarray(domains, dtype=object)
    order = sorted(set(domains))
    colors = _colors(order)
    nbytes = np.asarray(nbytes, np.float64)
    fig, axes = _figure(len(scores), 2, height=2.3 * len(scores) + 0.4, width=10)
    for row, (name, v) in enumerate(scores.items()):
        v = np.asarray(v, np.float64)
        ok = np.isfinite(v)
        ax = axes[row, 0]
        box = ax.boxplot(
            [v[ok & (doms == d)] for d in order],
            orientation="horizontal",
            tick_labels=order,
            patch_artist=True,
            showfliers=False,
        )
        for patch, d in zip(box["boxes"], order, strict=True):
            patch.set_facecolor(colors[d])
            patch.set_alpha(0.6)
        ax.invert_yaxis()
        ax.set_xlabel(f"{name} score")
        ax.set_ylabel("domain")
        ax.grid(axis="x", alpha=0.3)
        ax = axes[row, 1]
        for d in order:
            sel = ok & (doms == d)
            ax.scatter(nbytes[sel], v[sel], s=4, alpha=0.5, color=colors[d], label=d)
        _log_x(ax)
        ax.set_xlabel("document length (bytes, log scale)")
        ax.set_ylabel(f"{name} score")
        ax.grid(alpha=0.3)
        if row == 0:
            ax.legend(fontsize=7, markerscale=3, ncols=2, loc="best")
    fig.suptitle("score distribution per domain (left) and against length (right)")
    return fig


# -------------------------------------------------------------------------------------- GIP


def ratio_curves(ratios: Mapping[str, Mapping[int, Sequence[float]]], *, what: str = "optimum"):
    """GIP appendix H.1: mean ± std over trials of each method's objective / the exhaustive
    optimum, against k (`ratios[method][k]` = one ratio per trial)."""
    if not ratios:
        raise InputError("no ratios to plot")
    fig, axes = _figure()
    ax = axes[0, 0]
    colors = _colors(list(ratios))
    for name, by_k in ratios.items():
        ks = np.array(sorted(by_k))
        mean = np.array([np.mean(by_k[k]) for k in ks])
        std = np.array([np.std(by_k[k]) for k in ks])
        color = "0.45" if name == "random" else colors[name]
        ax.plot(
            ks, mean, marker="o", ms=3, label=name, color=color, ls=":" if name == "random" else "-"
        )
        ax.fill_between(ks, mean - std, np.minimum(mean + std, 1.0), alpha=0.15, color=color)
    ax.set_xlabel("k (items selected)")
    ax.set_ylabel(f"objective / {what} (mean ± std)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("GIP H.1: greedy vs exhaustive optimum")
    return fig


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `x` [n, d] projected on their two first principal axes ([n, 2], float64) and the
    share of variance each axis explains ([2]). Signs are fixed so that the largest-magnitude
    loading of each axis is positive (deterministic across SVD implementations)."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise InputError(f"PCA needs at least 2 points in >= 2 dimensions, got shape {x.shape}")
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    return xc @ axes.T, (s[:2] ** 2) / np.sum(s**2)


def projection(
    coords: np.ndarray,
    domains: Sequence[str],
    selections: Mapping[str, Sequence[int]],
    explained: Sequence[float] | None = None,
):
    """The pool in 2-D (e.g. `pca_2d` of its embeddings), coloured by domain, with each
    selection's points marked (one marker per selection)."""
    coords = np.asarray(coords, np.float64)
    doms = np.asarray(domains, dtype=object)
    order = sorted(set(domains))
    colors = _colors(order)
    fig, axes = _figure(height=4.8)
    ax = axes[0, 0]
    for d in order:
        c = coords[doms == d]
        ax.scatter(c[:, 0], c[:, 1], s=6, alpha=0.35, color=colors[d], label=d)
    for (name, idx), marker in zip(selections.items(), "xo+^sD", strict=False):
        c = coords[np.asarray(idx, np.int64)]
        style = {"color": "k"} if marker in "x+" else {"facecolors": "none", "edgecolors": "k"}
        ax.scatter(
            c[:, 0],
            c[:, 1],
            s=40,
            marker=marker,
            linewidths=1.2,
            label=f"{name} ({len(idx)})",
            **style,
        )
    ev = [""] * 2 if explained is None else [f", {e:.0%} of variance" for e in explained]
    ax.set_xlabel(f"principal component 1 (embedding units{ev[0]})")
    ax.set_ylabel(f"principal component 2 (embedding units{ev[1]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2, loc="best", markerscale=1.5)
    return fig


# ----------------------------------------------------------------------------------- LAMDAS


def lamdas_report(losses: Sequence[float], s: np.ndarray, domains: Sequence[str], tau: float = 1.0):
    """LAMDAS: reference-set NLL per training epoch (left) and the distribution of
    s(y) per domain with the threshold τ marked (right, log scale)."""
    fig, axes = _figure(1, 2, height=3.4, width=10)
    ax = axes[0, 0]
    ax.plot(np.arange(1, len(losses) + 1), losses, marker="o", label="reference NLL")
    ax.set_xlabel("epoch")
    ax.set_ylabel("reference-set NLL (nats/token)")
    ax.set_title("prefix training")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    s = np.asarray(s, np.float64)
    doms = np.asarray(domains, dtype=object)
    order = sorted(set(domains))
    colors = _colors(order)
    groups = [s[doms == d] for d in order]
    box = ax.boxplot(
        groups, orientation="horizontal", tick_labels=order, showfliers=False, patch_artist=True
    )
    jitter = np.random.default_rng(0)  # fixed: the same figure every run
    for row, (d, g, patch) in enumerate(zip(order, groups, box["boxes"], strict=True)):
        patch.set_facecolor(colors[d])
        patch.set_alpha(0.35)
        y = row + 1 + jitter.uniform(-0.18, 0.18, g.size)
        ax.scatter(g, y, s=5, color=colors[d], alpha=0.7, zorder=3)
    ax.axvline(tau, color="k", ls="--")
    ax.invert_yaxis()
    ax.set_xlabel("s(y) = exp(mean per-token log-ratio)")
    ax.set_ylabel("domain")
    ax.set_title(f"s(y) per domain (dashed: τ = {tau:g})")
    return fig


# ---------------------------------------------------------------------------------- FineZip


def bits_per_byte_bars(results: Mapping[str, float], *, title: str = ""):
    """One bar per compressor: compressed size in bits per original byte (lower is better)."""
    if not results:
        raise InputError("no compressor to plot")
    names = list(results)
    vals = np.array([results[n] for n in names], np.float64)
    fig, axes = _figure(height=0.9 + 0.35 * len(names))
    ax = axes[0, 0]
    bars = ax.barh(names, vals, color=["C3" if "finezip" in n else "C0" for n in names])
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set_xlim(0, vals.max() * 1.15)
    ax.set_xlabel("bits per byte of the original (lower is better)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def token_costs(bits: np.ndarray, pieces: Sequence[str], *, window: int = 16, top: int = 6):
    """Cost of each token along a text (bits = -log2 p under the model) with a running mean
    over `window` tokens; the `top` most expensive tokens are labelled with their text."""
    bits = np.asarray(bits, np.float64)
    if bits.ndim != 1 or bits.size != len(pieces) or not bits.size:
        raise InputError(f"{bits.size} costs for {len(pieces)} token pieces")
    x = np.arange(bits.size)
    fig, axes = _figure(height=3.4)
    ax = axes[0, 0]
    ax.plot(x, bits, lw=0.6, color="C0", alpha=0.6, label="per token")
    w = min(window, bits.size)
    run = np.convolve(bits, np.ones(w) / w, mode="valid")
    ax.plot(x[w - 1 :], run, lw=1.8, color="C3", label=f"mean of the last {w} tokens")
    for i in np.argsort(-bits, kind="stable")[:top]:
        ax.annotate(
            repr(pieces[i])[1:-1][:12],
            (i, bits[i]),
            fontsize=7,
            xytext=(2, 2),
            textcoords="offset points",
        )
    ax.set_xlabel("token position in the text")
    ax.set_ylabel("cost (bits/token = -log2 p)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def window_costs(bits_per_byte: np.ndarray, payload_bpb: float, archive_bpb: float, *, what: str):
    """`jaxsel compress --info --plot`: bits per byte of each coding window (model cost of its
    tokens / their bytes) along the file; the coded payload's bits/byte over the whole file as a
    reference line (the windows add up to it) and the whole archive's, header included, in the
    title. `what` names the windows (x-axis label)."""
    v = np.asarray(bits_per_byte, np.float64)
    fig, axes = _figure(height=3.2)
    ax = axes[0, 0]
    ax.bar(np.arange(v.size), v, width=0.85, color="C0", label="window")
    ax.axhline(payload_bpb, color="C3", ls="--", label=f"payload, whole file ({payload_bpb:.3f})")
    ax.set_xlabel(f"coding window, in file order ({what})")
    ax.set_ylabel("bits per byte of the original")
    ax.set_title(f"model cost per window (archive with its header: {archive_bpb:.3f} bits/byte)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    return fig


# ------------------------------------------------------------------------------- downstream


def seed_band(curve: Mapping) -> tuple[np.ndarray, np.ndarray] | None:
    """The lowest and highest seed CE at each evaluated token count of a report curve
    (`Curve._asdict()`: `ce_seeds[s][i]`), or None with fewer than two seeds."""
    seeds = np.asarray(curve.get("ce_seeds") or [], np.float64)
    if seeds.ndim != 2 or seeds.shape[0] < 2:
        return None
    return seeds.min(axis=0), seeds.max(axis=0)


def downstream_figure(report: dict):
    """Held-out cross-entropy vs training tokens, one line per selection (a `jaxsel downstream`
    report; with several fine-tuning seeds the line is their mean and a band spans the lowest
    to the highest seed), with the untrained model's CE as a dashed line."""
    fig, axes = _figure()
    ax = axes[0, 0]
    colors = _colors(list(report["curves"]))
    seeds = 1
    for name, c in report["curves"].items():
        ax.plot(c["tokens"], c["ce"], marker="o", label=name, color=colors[name])
        band = seed_band(c)
        if band is not None:
            seeds = max(seeds, len(c["ce_seeds"]))
            ax.fill_between(c["tokens"], *band, color=colors[name], alpha=0.2, lw=0)
    ax.axhline(report["untrained_ce"], color="grey", linestyle="--", label="untrained")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out CE (nats/token)")
    title = "downstream: held-out target cross-entropy"
    if seeds > 1:
        title += f"\n(mean of {seeds} fine-tuning seeds; band: lowest to highest seed)"
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


def downstream_curves(report: dict, path: str | Path) -> None:
    """`downstream_figure` written as a PNG (`jaxsel downstream --plot`)."""
    save(downstream_figure(report), path)


def alignment_vs_ce(
    names: Sequence[str],
    alignment: Sequence[float],
    ce: Sequence[float],
    untrained_ce: float,
    *,
    slope: float,
    intercept: float,
    ce_range: Sequence[tuple[float, float]] | None = None,
    title: str = "",
):
    """ZIP-FIT Figure 3: one point per dataset at (its alignment to the target, held-out target
    CE after fine-tuning on it), labelled with its name, with each point's seed range as an
    error bar (`ce_range[i]` = (lowest, highest) seed CE), the fitted line
    CE = slope * alignment + intercept (dashed red) and the untrained CE (dashed grey)."""
    x, y = np.asarray(alignment, np.float64), np.asarray(ce, np.float64)
    if x.size < 2 or x.size != y.size or x.size != len(names):
        raise InputError(f"{len(names)} names, {x.size} alignments and {y.size} CEs to plot")
    fig, axes = _figure(height=4.2)
    ax = axes[0, 0]
    colors = _colors(list(names))
    yerr = None
    if ce_range is not None:
        r = np.asarray(ce_range, np.float64).reshape(-1, 2)
        yerr = np.stack([y - r[:, 0], r[:, 1] - y])
    for i, n in enumerate(names):
        err = None if yerr is None else yerr[:, i : i + 1]
        ax.errorbar(x[i], y[i], yerr=err, fmt="o", ms=7, color=colors[n], capsize=3)
        ax.annotate(n, (x[i], y[i]), fontsize=8, xytext=(5, 4), textcoords="offset points")
    pad = 0.05 * (x.max() - x.min() or 1.0)
    xs = np.array([x.min() - pad, x.max() + pad])
    ax.plot(xs, slope * xs + intercept, color="C3", ls="--", lw=1.2, label="linear fit")
    ax.set_xlim(x.min() - 2 * pad, x.max() + 4 * pad)  # room for the rightmost point's name
    ax.axhline(untrained_ce, color="grey", ls="--", lw=1, label=f"untrained ({untrained_ce:.3f})")
    ax.set_xlabel("ZIP-FIT alignment to the target (mean over the dataset's sample)")
    ax.set_ylabel("held-out target CE after fine-tuning (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig
