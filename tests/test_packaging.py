"""The package as a wheel: built with ``pip wheel``, installed with ``pip install --target``
and imported from outside the repository, it finds what it reads at run time (the shipped
model, the split files) and its console command runs with them.

The wheel is installed without its dependencies: this environment's serve. The real-data
check skips when ``../shared/data/mir1k`` is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIR1K = ROOT.parent / "shared" / "data" / "mir1k"

#: Run from outside the repository with the install first on PYTHONPATH: where the package
#: is and which split file a dataset folder named ``mir1k`` gets, as JSON.
WHERE_SCRIPT = """
import json
from pathlib import Path
import keras_svs
from keras_svs.datasets import splits
(Path.cwd() / "mir1k").mkdir()
found = splits.split_file_for(Path.cwd() / "mir1k")
print(json.dumps({"package": keras_svs.__file__, "split_file": found and str(found),
                  "split_names": found and splits.split_names(found)}))
"""


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """``(wheel, folder, build log)``: this checkout built into a wheel, installed (without
    dependencies) into ``folder``."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-v", "-w",
         str(work / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = (work / "dist").glob("keras_svs-*.whl")
    target = work / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
         "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return wheel, target, build.stdout + build.stderr


def run_installed(command: list[str], target: Path, cwd: Path, timeout: float):
    """Run ``command`` in ``cwd`` with the install first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_wheel_holds_the_package_and_its_data_only(wheel_install):
    wheel, _, log = wheel_install
    names = zipfile.ZipFile(wheel).namelist()
    assert all(name.startswith(("keras_svs/", "keras_svs-")) for name in names), names
    for data in ("keras_svs/assets/default.keras", "keras_svs/assets/MODEL_CARD.md",
                 "keras_svs/assets/LICENSE-spleeter.txt", "keras_svs/assets/splits/mir1k.json",
                 "keras_svs/assets/default.litert.json",
                 "keras_svs/assets/default.litert.tflite.zlib",
                 "keras_svs/assets/default.litert-int8.json",
                 "keras_svs/assets/default.litert-int8.tflite.zlib"):
        assert data in names
    assert wheel.stat().st_size <= 100e6, wheel.stat().st_size
    assert not any("__pycache__" in name for name in names)
    assert "absent from the `packages` configuration" not in log, log[-3000:]


def test_installed_package_finds_its_split_files(wheel_install, tmp_path):
    _, target, _ = wheel_install
    result = run_installed([sys.executable, "-c", WHERE_SCRIPT], target, tmp_path, 120)
    assert result.returncode == 0, result.stderr[-3000:]
    where = json.loads(result.stdout.splitlines()[-1])
    assert Path(where["package"]).is_relative_to(target), where
    assert where["split_file"] == str(target / "keras_svs" / "assets" / "splits" / "mir1k.json")
    assert sorted(where["split_names"]) == ["all", "test", "train", "valid"], where


@pytest.mark.skipif(not MIR1K.is_dir(), reason=f"no MIR-1K at {MIR1K}")
def test_installed_console_script_evaluates_the_mir1k_test_split(wheel_install, tmp_path):
    _, target, _ = wheel_install
    script = target / "bin" / "keras-svs"
    assert script.is_file()
    result = run_installed([sys.executable, str(script), "evaluate", "--data", str(MIR1K),
                            "--split", "test", "--limit", "2", "--json", "result.json"],
                           target, tmp_path, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GNSDR" in result.stdout, result.stdout
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["clips"] == 2, report
    # the shipped model and the MIR-1K split, both from the install
    assert report["model"] == str(target / "keras_svs" / "assets" / "default.keras"), report
    assert report["split_file"] == str(target / "keras_svs" / "assets" / "splits" / "mir1k.json")
