"""The walkthrough notebook runs top to bottom in a Jupyter kernel (nbclient, ipykernel),
magics included, as a user's Jupyter would run it.

The kernel is this interpreter (a kernelspec in a temporary folder), so it imports the
keras-svs installed here, and its set-up cell must find it and install nothing. It works in a
temporary folder that holds the repository's ``data/`` (the demo clip); ``DATA`` points
nowhere so that the training cell uses its synthesised toy dataset, never the real MIR-1K.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (with nbclient, the [dev] extra, "
                               "requirements-lock.txt) is not installed")
nbclient = pytest.importorskip("nbclient", reason="nbclient (the [dev] extra, "
                               "requirements-lock.txt) is not installed")
pytest.importorskip("ipykernel", reason="ipykernel (the [dev] extra, requirements-lock.txt) "
                    "is not installed")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
KERNEL = "keras-svs-test"
#: Appended to the notebook in memory: what the kernel ran on.
PROBE = "import sys, keras_svs\nprint('kernel', sys.executable, keras_svs.__file__)"


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel manager whose only kernelspec runs ipykernel on this interpreter."""
    spec = folder / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "keras-svs test", "language": "python"}))
    return KernelManager(kernel_name=KERNEL,
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.get("output_type") == "stream")


def test_notebook_runs_top_to_bottom_in_a_kernel(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data").symlink_to(ROOT / "data")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    # One OpenBLAS thread: in a kernel on a busy two-core machine, OpenBLAS's threads spin
    # against the kernel's own and the evaluation cell's linear solves (BSS-Eval) ran 3x slower.
    env = {**os.environ, "DATA": str(tmp_path / "no-such-dataset"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "OPENBLAS_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)  # the kernel's own (inline) backend
    client = nbclient.NotebookClient(notebook, km=kernel_manager(tmp_path / "kernels"),
                                     timeout=600, resources={"metadata": {"path": str(work)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # set-up: keras-svs found, nothing installed, the demo clip found in place
    assert stream_text(code[0]) == f"working in {work}\n", code[0].outputs
    assert not (work / "keras-svs").exists()
    import keras_svs

    assert stream_text(code[-1]).split() == ["kernel", sys.executable, keras_svs.__file__]
    text = "".join(stream_text(cell) for cell in code)
    assert "max |vocals + accompaniment - mixture|" in text
    assert "model written to" in text
    match = re.search(r"SavedModel vs Separator, max difference: (\S+)", text)
    assert match and float(match.group(1)) < 1e-4, text[-2000:]
    assert (work / "runs" / "notebook_savedmodel" / "saved_model.pb").is_file()
    assert any(out.get("output_type") == "display_data" and "image/png" in out.get("data", {})
               for cell in code for out in cell.outputs), "no figure was drawn"
