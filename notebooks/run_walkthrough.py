"""Runs the code cells of walkthrough.ipynb in order, without Jupyter:
`.venv/bin/python notebooks/run_walkthrough.py` (about 3–5 minutes on a 2-core CPU)."""

import json
from pathlib import Path

nb = json.loads((Path(__file__).parent / "walkthrough.ipynb").read_text())
env: dict = {}
for n, cell in enumerate(nb["cells"]):
    if cell["cell_type"] == "code":
        print(f"--- cell {n}")
        exec(compile("".join(cell["source"]), f"walkthrough.ipynb[{n}]", "exec"), env)
