"""The walkthrough notebook's code cells run, in order, as a plain script.

Shell escapes (``!pip ...``) become no-ops; ``DATA`` points nowhere so that the training
cell uses its synthesised toy dataset, never the real MIR-1K.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def notebook_script() -> str:
    """The notebook's code cells joined into one script, IPython-only lines neutralised."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    script = "\n\n".join(code)
    return re.sub(r"^(\s*)[!%].*$", r"\1pass", script, flags=re.MULTILINE)


def test_notebook_runs_top_to_bottom(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    script = tmp_path / "walkthrough.py"
    script.write_text(notebook_script())
    env = {**os.environ, "DATA": str(tmp_path / "no-such-dataset"), "MPLBACKEND": "Agg",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |vocals + accompaniment - mixture|" in result.stdout
    assert "model written to" in result.stdout
    match = re.search(r"SavedModel vs Separator, max difference: (\S+)", result.stdout)
    assert match and float(match.group(1)) < 1e-4, result.stdout[-2000:]
    assert (tmp_path / "runs" / "notebook_savedmodel" / "saved_model.pb").is_file()
