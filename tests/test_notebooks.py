"""Every notebook runs top to bottom on the CPU at tiny size (few train steps)."""

import glob
import os

import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "notebooks", "*.ipynb")))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes_without_errors(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    # The kernel inherits the environment: one CPU device (not the suite's 8 fake
    # ones), 2 train steps, and a scratch workdir. A notebook at this size is almost
    # all compilation: XLA's backend optimisations off and the classic threefry PRNG
    # (as tests/conftest.py) cut its time by a third; what runs is unchanged.
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.setenv("JAX_THREEFRY_PARTITIONABLE", "false")
    monkeypatch.setenv("NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The sampling cell displayed the grids inline.
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {})
               for o in outputs)
