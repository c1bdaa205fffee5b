"""The JAX backend, which trains on GPU machines without TensorFlow: the presets train, the
NumPy loader's examples are those of tf.data, and a model saved under JAX separates the same
under TensorFlow.

This process runs TensorFlow; the JAX side runs once, in a subprocess with
``KERAS_BACKEND=jax`` (``tests/jax_worker.py``), and these tests check what it wrote. It
needs the ``[jax]`` extra (installed by ``make venv``); without it they skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax", reason="jax (the [jax] extra, requirements-lock.txt) is not installed")

from conftest import synth_mixture  # noqa: E402
from keras_svs import examples, pipeline  # noqa: E402
from keras_svs.models import get_preset  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> Path:
    """The folder the JAX worker wrote (it runs once for this module, ~1-2 min of CPU)."""
    out = tmp_path_factory.mktemp("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           # fewer LLVM passes: the worker's compiles dominate its time, its steps are few
           "XLA_FLAGS": "--xla_llvm_disable_expensive_passes=true --xla_backend_optimization_level=0",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(TESTS / "jax_worker.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.parametrize("preset", ["paper", "spleeter"])
def test_presets_train_under_jax_and_the_loss_falls(jax_run, preset):
    """A few Adam steps at the preset's rate on one batch of synthetic examples: each step's
    loss is finite and the last below the first."""
    losses = json.loads((jax_run / "losses.json").read_text())[preset]
    assert len(losses) >= 3 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert np.all(np.diff(losses) < 0), losses  # one batch: every step lowers its loss


def test_training_under_jax_imports_no_tensorflow(jax_run):
    """The GPU machines have no TensorFlow: building, fitting, the NumPy loader and
    ``keras_svs.training.train`` ran with its import made to fail."""
    assert json.loads((jax_run / "imported.json").read_text()) == {"tensorflow": False}
    assert (jax_run / "tiny" / "model.keras").is_file()
    for stage in ("pretrain", "finetune"):
        assert (jax_run / "tiny" / stage / "best.weights.h5").is_file()


@pytest.mark.parametrize("name", list(("crops", "grid")))
def test_numpy_loader_under_jax_gives_the_tf_data_examples(jax_run, name):
    """Same seed, same batches: the NumPy loader under JAX and tf.data here (random crops
    with remix and pitch, and the paper's grid)."""
    sys.path.insert(0, str(TESTS))
    from jax_worker import SAMPLERS, synthetic

    tiny = get_preset("tiny")
    sampler = examples.PatchSampler(synthetic(tiny), tiny, "finetune", batch_size=4,
                                    **SAMPLERS[name])
    got = np.load(jax_run / "batches.npz")
    for k, (x, y) in enumerate(pipeline.training_dataset(sampler).take(3)):
        np.testing.assert_array_equal(got[f"{name}_{k}_x"], x.numpy())
        np.testing.assert_array_equal(got[f"{name}_{k}_y"], y.numpy())


def test_a_model_trained_under_jax_separates_the_same_under_tensorflow(jax_run):
    """The tiny model that ``keras_svs.training.train`` saved under JAX, separated here by
    the TensorFlow runtime: the stems JAX made, within 1e-4."""
    from keras_svs.separation import Separator

    want = np.load(jax_run / "stems.npz")
    got = Separator(jax_run / "tiny" / "model.keras", runtime="tensorflow").separate(
        synth_mixture(8000, 1.0, 1, seed=5), 8000)
    assert set(got) == set(want.files) == {"vocals", "accompaniment"}
    for stem, x in got.items():
        assert np.abs(x).max() > 1e-3  # not silent: a real comparison
        np.testing.assert_allclose(x, want[stem], atol=1e-4, rtol=0)


def test_spleeter_u_nets_fitted_under_jax_predict_the_same_under_tensorflow(jax_run):
    """Deezer's U-Nets (strided and transposed convolutions, batch norms) after a few JAX
    steps, loaded here: the voice probabilities of the same input within 1e-4."""
    from keras_svs.models import load_model

    probe = np.load(jax_run / "probe.npz")
    model = load_model(jax_run / "spleeter.keras")
    got = np.asarray(model.predict(probe["x"], verbose=0))
    assert got.shape == probe["y"].shape == (2, 64, 128, 2, 2)
    assert got[..., 0].std() > 1e-3  # the probabilities vary: a real comparison
    np.testing.assert_allclose(got, probe["y"], atol=1e-4, rtol=0)
