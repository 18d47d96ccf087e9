"""The notebook tour (notebooks-data/exports.ipynb) runs top to bottom on the package.

It runs on the fast mini-aligner here (ALENS_NOTEBOOK_MODEL); the notebook's own default is
Aligner-135M. Skipped where Jupyter's runner is not installed (python/test.sh installs it).
"""

import os

import pytest

from conftest import ROOT


def test_the_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    os.environ["ALENS_NOTEBOOK_MODEL"] = "mini-aligner"
    os.environ["ALENS_NOTEBOOK_ROOT"] = str(ROOT)
    os.environ.setdefault("MPLBACKEND", "Agg")
    notebook = nbformat.read(ROOT / "notebooks-data" / "exports.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks-data")}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # The knob cell printed the three alphas' corrections.
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert all(f"{a} |" in printed for a in ("-1.0", "+0.0", "+1.0")), printed
