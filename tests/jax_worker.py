"""The JAX side of ``tests/test_jax.py``, run as ``KERAS_BACKEND=jax python
tests/jax_worker.py OUT`` (one process cannot switch Keras backends).

It writes to ``OUT``:

* ``losses.json``: per-step training losses of the ``paper`` preset (the authors' network,
  19,489,049 parameters) and of the ``spleeter`` preset (Deezer's two U-Nets, on 64-frame,
  128-bin patches) fitted for a few steps on one batch of synthetic examples;
* ``batches.npz``: the first batches of the NumPy loader (:func:`keras_svs.batches.stream`)
  for fixed seeds, random crops and the paper's grid;
* ``tiny.keras`` (the ``tiny`` preset trained by :func:`keras_svs.training.train`, the path
  of ``keras-svs train`` under JAX) and ``spleeter.keras`` (the fitted U-Nets), with
  ``stems.npz``: each one's stems of a synthetic mixture separated under JAX;
* ``imported.json``: whether TensorFlow was imported while training (it must not be: the
  GPU machines have none).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from conftest import synth_mixture, synth_pair, write_training_pairs
from keras_svs import examples

#: What the test checks: the loader's seeds, and the presets' few fitting steps.
SAMPLERS = {"crops": dict(remix=0.5, pitch=0.5, seed=3), "grid": dict(remix=0.0, seed=4,
                                                                     patch_hop=8)}
STEPS = 4


def synthetic(preset, clips: int = 3, seconds: float = 1.2) -> examples.DecodedAudio:
    """Synthetic voice/accompaniment clips at the preset's rate and channels."""
    pairs = [synth_pair(preset.stft.sample_rate, seconds, seed) for seed in range(clips)]
    lengths = np.array([len(v) for v, _ in pairs], np.int64)

    def joined(k):
        x = np.concatenate([pair[k] for pair in pairs])
        return x if preset.channels == 1 else np.stack([x, 0.8 * x])

    return examples.DecodedAudio([f"c{i}" for i in range(clips)], joined(0), joined(1),
                                 np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths,
                                 preset.stft.sample_rate)


def fit_steps(preset, batch_size: int):
    """Fit the preset's network (its logits view, the cross-entropy from the logits, Adam at
    the preset's rate) for :data:`STEPS` steps on one batch; returns the model and each
    step's loss before its update."""
    import keras

    from keras_svs.models import bin_cross_entropy, build_model, logits_model

    keras.utils.set_random_seed(0)
    x, y = examples.PatchSampler(synthetic(preset), preset, "finetune",
                                 batch_size=batch_size, seed=0).batch(0)
    model = build_model(preset)
    view = logits_model(model)
    view.compile(optimizer=keras.optimizers.Adam(preset.learning_rate), loss=bin_cross_entropy)
    return model, [float(view.train_on_batch(x, y)) for _ in range(STEPS)]


def main(out: Path) -> None:
    assert os.environ.get("KERAS_BACKEND") == "jax", "run with KERAS_BACKEND=jax"
    sys.modules["tensorflow"] = None  # training must not need it: importing it now fails
    from keras_svs import batches
    from keras_svs.models import get_preset
    from keras_svs.models.presets import with_network_input

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    seconds = {}

    def lap(name):
        seconds[name] = round(time.time() - started - sum(seconds.values()), 1)

    losses = {}
    paper, losses["paper"] = fit_steps(get_preset("paper"), batch_size=4)
    del paper
    spleeter = with_network_input(get_preset("spleeter"), frames=64, bins=128)
    unets, losses["spleeter"] = fit_steps(spleeter, batch_size=2)
    (out / "losses.json").write_text(json.dumps(losses))
    lap("fit")

    tiny = get_preset("tiny")
    loaded = {}
    for name, settings in SAMPLERS.items():
        sampler = examples.PatchSampler(synthetic(tiny), tiny, "finetune", batch_size=4,
                                        **settings)
        stream = batches.stream(sampler, workers=0)
        for k in range(3):
            loaded[f"{name}_{k}_x"], loaded[f"{name}_{k}_y"] = next(stream)
    np.savez(out / "batches.npz", **loaded)
    lap("batches")

    from keras_svs.options import Recipe, RunOptions
    from keras_svs.training import train

    data = write_training_pairs(out / "data", tracks=3, seconds=1.0)
    train(data, out / "tiny", Recipe(preset="tiny", epochs=1, pretrain_epochs=1,
                                     steps_per_epoch=2), RunOptions(verbose=0, gnsdr_clips=0))
    lap("train")
    unets.save(out / "spleeter.keras")
    probe = np.random.default_rng(6).uniform(0, 1, (2, 64, 128, 2)).astype(np.float32)
    np.savez(out / "probe.npz", x=probe, y=np.asarray(unets.predict(probe, verbose=0)))
    lap("save")
    (out / "imported.json").write_text(json.dumps(
        {"tensorflow": any(k.startswith("tensorflow.") for k in sys.modules)}))

    del sys.modules["tensorflow"]  # the engine imports TensorFlow to quiet its start-up
    from keras_svs.separation import Separator

    separated = Separator(out / "tiny" / "model.keras", runtime="tensorflow").separate(
        synth_mixture(8000, 1.0, 1, seed=5), 8000)
    np.savez(out / "stems.npz", **separated)
    lap("separate")
    (out / "seconds.json").write_text(json.dumps(seconds))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
