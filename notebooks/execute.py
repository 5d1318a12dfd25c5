"""Executes walkthrough.ipynb top to bottom in a Jupyter kernel (nbclient) and saves it with its
outputs: `make notebook` (full size, in place, README figures into docs/figures/).

    .venv/bin/python notebooks/execute.py [--size full|small] [--out PATH] [--figures DIR]
"""

import argparse
import os
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("full", "small"), default="full")
    p.add_argument("--out", default=str(HERE / "walkthrough.ipynb"), help="executed notebook")
    p.add_argument("--figures", help="also write the figures here as PNG (README figures)")
    args = p.parse_args()
    os.environ["JAXSEL_NOTEBOOK_SIZE"] = args.size
    if args.figures:
        os.environ["JAXSEL_NOTEBOOK_FIGURES"] = str(Path(args.figures).resolve())
    nb = nbformat.read(HERE / "walkthrough.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=3600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()  # stops at the first cell that raises (CellExecutionError)
    nbformat.write(nb, args.out)
    print(f"executed ({args.size}) -> {args.out}")


if __name__ == "__main__":
    main()
