"""Figures of jaxsel reports (matplotlib, imported only when a figure is asked for)."""

from __future__ import annotations

import os


def downstream_curves(report: dict, path: str | os.PathLike) -> None:
    """Held-out cross-entropy vs training tokens, one line per selection (a `jaxsel downstream`
    report), with the untrained model's CE as a dashed line; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxsel.data.outputs import atomic_open

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, c in report["curves"].items():
        ax.plot(c["tokens"], c["ce"], marker="o", label=name)
    ax.axhline(report["untrained_ce"], color="grey", linestyle="--", label="untrained")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out CE (nats/token)")
    ax.set_title("downstream: held-out target cross-entropy")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": None})
    plt.close(fig)
