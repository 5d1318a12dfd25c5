"""The walkthrough notebook runs top to bottom in a Jupyter kernel (nbclient) at its small size;
a cell that raises fails the test. The executed copy goes to a temporary directory: the
committed notebook (with its full-size outputs) is written only by `make notebook`."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def test_walkthrough_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSEL_NOTEBOOK_SIZE", "small")
    # The kernel runs as a user would, on one CPU device: conftest's 8 fake devices would hold
    # 8 replicated copies of every model.
    flags = os.environ.get("XLA_FLAGS", "").split()
    monkeypatch.setenv("XLA_FLAGS", " ".join(f for f in flags if "device_count" not in f))
    monkeypatch.delenv("JAXSEL_NOTEBOOK_FIGURES", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that raises
    nbformat.write(nb, tmp_path / NOTEBOOK.name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs for c in code), "a code cell printed or showed nothing"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8
    assert "size small:" in "".join(o.get("text", "") for o in code[0].outputs)
