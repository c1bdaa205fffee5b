"""keras_svs.export: a SavedModel that separates without keras_svs or Keras."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import TINY_RATE, synth_mixture
from keras_svs import spectral
from keras_svs.export import export
from keras_svs.models import build_model, get_preset
from keras_svs.separation import Separator

#: Runs in a fresh interpreter: keras_svs and keras cannot be imported there.
CHILD = textwrap.dedent("""
    import sys
    sys.modules["keras_svs"] = None
    sys.modules["keras"] = None
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf

    data = np.load(sys.argv[1])
    results = {}
    for name in ("tiny", "narrow"):
        loaded = tf.saved_model.load(sys.argv[2] + "/" + name)
        stems = loaded.serve(tf.constant(data["waveform"]))
        results[name + "_vocals"] = stems["vocals"].numpy()
        results[name + "_accompaniment"] = stems["accompaniment"].numpy()
        out = loaded.spectrogram(tf.constant(data["magnitude"]))
        results[name + "_probability"] = out["voice_probability"].numpy()
        results[name + "_mask"] = out["mask"].numpy()
        default = loaded.signatures["serving_default"]
        results[name + "_default"] = default(waveform=tf.constant(data["waveform"]))["vocals"].numpy()
    np.savez(sys.argv[3], **results)
    assert "keras" not in [m for m in sys.modules if sys.modules[m] is not None]
    print("child ok")
""")


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """Exports of the tiny model and of a narrow-band tiny model (100 of 129 bins), and
    their outputs computed by a child process without keras_svs and Keras."""
    base = tmp_path_factory.mktemp("export")
    narrow = build_model(dataclasses.replace(get_preset("tiny"), bins=100))
    models = {"tiny": tiny_model, "narrow": narrow}
    for name, model in models.items():
        export(model, base / name, mask="soft")
    waveform = synth_mixture(TINY_RATE, 1.3, 2, seed=3)
    config = spectral.StftConfig(8000, 256, 256, 64)
    magnitude = spectral.magnitude(spectral.stft(waveform.mean(0), config)).numpy()
    np.savez(base / "inputs.npz", waveform=waveform, magnitude=magnitude)
    child = subprocess.run([sys.executable, "-c", CHILD, str(base / "inputs.npz"), str(base),
                            str(base / "outputs.npz")], capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "child ok" in child.stdout
    return {"dir": base, "models": models, "waveform": waveform, "magnitude": magnitude,
            "outputs": dict(np.load(base / "outputs.npz")),
            "separators": {n: Separator(m, mask="soft") for n, m in models.items()}}


@pytest.mark.parametrize("name", ["tiny", "narrow"])
def test_serve_matches_separator(exported, name):
    waveform = exported["waveform"]
    expected = exported["separators"][name].separate(waveform, TINY_RATE)
    out = exported["outputs"]
    assert out[f"{name}_vocals"].shape == waveform.shape
    np.testing.assert_allclose(out[f"{name}_vocals"], expected["vocals"], atol=1e-4)
    np.testing.assert_allclose(out[f"{name}_accompaniment"], expected["accompaniment"],
                               atol=1e-4)
    np.testing.assert_allclose(out[f"{name}_vocals"] + out[f"{name}_accompaniment"], waveform,
                               atol=1e-5)
    np.testing.assert_allclose(out[f"{name}_default"], out[f"{name}_vocals"], atol=1e-6)
    assert 0.05 < np.linalg.norm(out[f"{name}_vocals"]) / np.linalg.norm(waveform) < 0.95


@pytest.mark.parametrize("name,bins", [("tiny", 129), ("narrow", 100)])
def test_spectrogram_endpoint(exported, name, bins):
    out = exported["outputs"]
    frames = exported["magnitude"].shape[0]
    assert out[f"{name}_mask"].shape == (frames, 256 // 2 + 1)
    assert out[f"{name}_probability"].shape == (frames, bins)
    separator = exported["separators"][name]
    np.testing.assert_allclose(out[f"{name}_probability"],
                               separator.voice_probability(exported["magnitude"]), atol=1e-5)
    np.testing.assert_allclose(out[f"{name}_mask"], separator.voice_mask(exported["magnitude"]),
                               atol=1e-5)
    mask = out[f"{name}_mask"]
    np.testing.assert_array_equal(mask[:, bins:], np.repeat(mask[:, bins - 1:bins],
                                                            129 - bins, axis=1))


def test_export_folder_contents(exported):
    folder = exported["dir"] / "narrow"
    assert (folder / "saved_model.pb").is_file()
    meta = json.loads((folder / "assets" / "keras_svs.json").read_text())
    assert meta["sample_rate"] == 8000
    assert meta["mask"] == "soft" and meta["mode"] == "average"
    assert meta["model_bins"] == 100 and meta["spectrum_bins"] == 129
    assert meta["preset"] == "tiny"
    assert set(meta["endpoints"]) == {"serve", "spectrogram"}
    assert sorted(p.name for p in exported["dir"].iterdir() if p.name.startswith(".")) == []


def test_export_from_a_path_replaces_the_folder(tiny_model_path, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert export(tiny_model_path, out, mask="binary", threshold=0.3) == out
    assert not (out / "stale.txt").exists()
    meta = json.loads((out / "assets" / "keras_svs.json").read_text())
    assert (meta["mask"], meta["threshold"]) == ("binary", 0.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_export_refuses_a_bad_mask(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="mask"):
        export(tiny_model, tmp_path / "x", mask="hard")
    assert not (tmp_path / "x").exists()


def test_export_in_process_runs_unet_at_any_length(tmp_path):
    """Fully convolutional models: the exported graph pads to the time multiple."""
    preset = dataclasses.replace(get_preset("unet"), stft=spectral.StftConfig(8000, 256, 256, 64),
                                 bins=128, arch=dict(filters=(4, 4), dropout=0.2))
    model = build_model(preset)
    export(model, tmp_path / "u")
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tmp_path / "u"))
    x = synth_mixture(8000, 0.77, 1)
    stems = loaded.serve(tf.constant(x))
    assert stems["vocals"].shape == x.shape
    expected = Separator(model).separate(x, 8000)
    np.testing.assert_allclose(stems["vocals"].numpy(), expected["vocals"], atol=1e-4)


def test_load_export_checks_the_folder(tiny_model_path, tmp_path):
    import shutil

    from keras_svs.export import load_export

    out = export(tiny_model_path, tmp_path / "exported")
    loaded, meta = load_export(out)
    assert meta["sample_rate"] == TINY_RATE and hasattr(loaded, "serve")
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "variables")
    with pytest.raises(ValueError, match="broken.*variables are missing"):
        load_export(broken)
    (broken / "saved_model.pb").unlink()
    with pytest.raises(ValueError, match="broken.*no saved_model.pb"):
        load_export(broken)
    with pytest.raises(ValueError, match="no such SavedModel"):
        load_export(tmp_path / "nothing")


def test_info_on_an_export_and_a_broken_export(tiny_model_path, tmp_path):
    import shutil

    from click.testing import CliRunner

    from keras_svs.cli import main

    out = export(tiny_model_path, tmp_path / "exported")
    result = CliRunner().invoke(main, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "sample_rate: 8000" in result.stdout
    shutil.rmtree(out / "variables")
    result = CliRunner().invoke(main, ["info", str(out)])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "variables are missing" in lines[0], result.stderr
    assert "Traceback" not in result.output
