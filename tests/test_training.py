"""keras_svs.training: the two-stage run, its files, resuming, precision."""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import shutil

import keras
import numpy as np
import pytest

from conftest import write_training_pairs
from keras_svs import pipeline, training
from keras_svs.datasets import DatasetError, discover
from keras_svs.models import presets
from keras_svs.models import bin_cross_entropy, build_model, get_preset, load_model, settings
from keras_svs.examples import bin_weights
from keras_svs.options import Recipe, RunOptions, training_settings
from keras_svs.training import (epochs_done, load_splits, resolve, resolve_loader,
                                resolve_precision, train)


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_run_writes_every_file(trained_run):
    out = trained_run["out"]
    assert trained_run["model"] == out / "model.keras"
    for stage in ("pretrain", "finetune"):
        rows = _log(out / stage / "log.csv")
        assert len(rows) == 1
        assert {"epoch", "loss", "val_loss", "patches_per_s", "eta_s"} <= set(rows[0])
        assert np.isfinite(float(rows[0]["loss"])) and np.isfinite(float(rows[0]["val_loss"]))
        assert (out / stage / "best.weights.h5").is_file()
        assert (out / stage / "done").exists()
        assert not (out / stage / "backup").exists()  # removed once the stage finished
    assert "bin_accuracy" in _log(out / "finetune" / "log.csv")[0]
    assert not list(out.glob(".*tmp*"))
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["preset"] == "tiny"
    assert record["config"]["epochs"] == 1 and record["config"]["pretrain_epochs"] == 1
    assert record["precision"] == "float32"
    assert record["steps_per_epoch"] == 3
    assert record["train_tracks"] == 3 and record["valid_tracks"] == 1
    assert record["train_seconds"] == pytest.approx(4.5, abs=0.1)


def test_final_model_is_loadable_float32_and_tiny(trained_run):
    model = load_model(trained_run["model"])
    assert settings(model).preset == "tiny"
    assert model.input_shape == (None, 9, 129)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert all(w.dtype == "float32" for w in model.weights)
    y = np.asarray(model(np.full((1, 9, 129), 0.1, np.float32)))
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)


def test_final_model_holds_the_best_finetune_weights(trained_run):
    model = load_model(trained_run["model"])
    best = load_model(trained_run["model"])
    best.load_weights(trained_run["out"] / "finetune" / "best.weights.h5")
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_rerun_after_completion_does_not_retrain(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run["out"], out)
    before = {s: (out / s / "log.csv").read_text() for s in ("pretrain", "finetune")}
    weights = load_model(out / "model.keras").get_weights()
    train(trained_run["data"], out, *trained_run["config"])
    for stage in ("pretrain", "finetune"):
        assert (out / stage / "log.csv").read_text() == before[stage]
        assert epochs_done(out, stage) == 1
    for a, b in zip(weights, load_model(out / "model.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_epochs_done(tmp_path, trained_run):
    assert epochs_done(trained_run["out"], "finetune") == 1
    assert epochs_done(tmp_path, "finetune") == 0


def test_finetune_loss_decreases(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=5, seconds=2.0)
    # the tiny preset's 1e-3 moves the loss by < 0.01 in 30 steps; 3e-3 makes it clear
    config = training_settings(preset="tiny", epochs=6, pretrain_epochs=0, steps_per_epoch=5,
                         learning_rate=3e-3, verbose=0, remix=0.0)
    path = train(data, tmp_path / "run", *config)
    rows = _log(tmp_path / "run" / "finetune" / "log.csv")
    assert len(rows) == 6
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.03, losses
    val_losses = [float(r["val_loss"]) for r in rows]
    assert val_losses[-1] < val_losses[0], val_losses
    assert not (tmp_path / "run" / "pretrain").exists()  # 0 epochs: the stage is skipped
    assert path.is_file()


def test_mixed_precision_training_still_saves_float32(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    policy = keras.mixed_precision.global_policy().name
    config = training_settings(preset="tiny", epochs=1, pretrain_epochs=0, steps_per_epoch=1,
                         precision="mixed_bfloat16", cosine=True, verbose=0)
    path = train(data, tmp_path / "run", *config)
    assert keras.mixed_precision.global_policy().name == policy  # restored
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["precision"] == "mixed_bfloat16"
    model = load_model(path)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


def test_resolve_precision():
    assert resolve_precision("auto") == "float32"  # this machine has no GPU
    assert resolve_precision("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float64")


def test_config_resolves_preset_defaults():
    tiny = get_preset("tiny")
    resolved = resolve(Recipe(preset="tiny"))
    assert (resolved.epochs, resolved.pretrain_epochs) == (tiny.epochs, tiny.pretrain_epochs)
    assert resolved.batch_size == tiny.batch_size
    assert resolved.learning_rate == tiny.learning_rate
    assert resolved.remix == tiny.remix
    explicit = resolve(Recipe(preset="tiny", epochs=3, pretrain_epochs=0, batch_size=4,
                              learning_rate=0.1, remix=0.0))
    assert (explicit.epochs, explicit.pretrain_epochs, explicit.batch_size,
            explicit.learning_rate, explicit.remix) == (3, 0, 4, 0.1, 0.0)
    with pytest.raises(KeyError, match="nope"):
        resolve(Recipe(preset="nope"))


def test_the_paper_preset_trains_on_the_authors_grid_by_default():
    """The ``paper`` preset cuts its patches every 8 frames (the authors' training set);
    ``patch_hop=0`` asks for random crops, and the other presets crop at random."""
    assert resolve(Recipe(preset="paper")).patch_hop == 8
    assert resolve(Recipe(preset="paper", patch_hop=0)).patch_hop == 0
    assert resolve(Recipe(preset="tiny")).patch_hop == 0
    assert resolve(Recipe(preset="tiny", patch_hop=3)).patch_hop == 3
    assert training_settings(patch_hop=8)[0] == Recipe(patch_hop=8)


def test_load_splits_with_and_without_cache(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=0.5)
    tiny = get_preset("tiny")
    train_audio, valid_audio = load_splits(data, None, tiny)
    assert train_audio.names == ["clip_1", "clip_2"] and valid_audio.names == ["clip_0"]
    everything = pipeline.decode(discover(data), 8000)
    cache = pipeline.save_hdf5(everything, tmp_path / "cache.h5")
    cached_train, cached_valid = load_splits(data, cache, tiny)
    assert cached_train.names == train_audio.names
    np.testing.assert_array_equal(cached_train.voice, train_audio.voice)
    np.testing.assert_array_equal(cached_valid.accompaniment, valid_audio.accompaniment)
    with pytest.raises(DatasetError, match="8000 Hz"):
        load_splits(data, cache, get_preset("small"))


# -- NumPy loader, GNSDR monitor, cosine schedule, time budget ------------------------------
def test_numpy_loader_run_logs_gnsdr_and_cosine_learning_rate(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    config = training_settings(preset="tiny", loader="numpy", epochs=2, pretrain_epochs=1,
                         steps_per_epoch=2, gnsdr_clips=1, cosine=True, verbose=0)
    out = tmp_path / "run"
    path = train(data, out, *config)
    assert path == out / "model.keras" and path.is_file()
    assert settings(load_model(path)).preset == "tiny"
    rows = _log(out / "finetune" / "log.csv")
    assert len(rows) == 2
    assert {"loss", "val_loss", "bin_accuracy", "val_gnsdr", "gnsdr_s",
            "learning_rate"} <= set(rows[0])
    base = get_preset("tiny").learning_rate
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] == pytest.approx(base, rel=1e-6)
    assert lrs[1] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi / 2)), rel=1e-6)
    assert lrs[1] == pytest.approx(base / 2, rel=1e-6)
    for row in rows:
        assert np.isfinite(float(row["val_gnsdr"])) and float(row["gnsdr_s"]) >= 0
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))
    pretrain = _log(out / "pretrain" / "log.csv")
    assert len(pretrain) == 1
    assert "val_gnsdr" not in pretrain[0]  # the autoencoder is not a separator
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["loader"] == "numpy"


def test_time_budget_stops_each_stage_after_one_epoch(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    config = training_settings(preset="tiny", loader="numpy", epochs=50, pretrain_epochs=20,
                         steps_per_epoch=1, gnsdr_clips=0, cosine=True, time_budget=1e-3,
                         verbose=0)
    out = tmp_path / "run"
    train(data, out, *config)
    assert epochs_done(out, "pretrain") == 1  # the first epoch always runs
    assert epochs_done(out, "finetune") == 1
    rows = _log(out / "finetune" / "log.csv")
    assert "val_gnsdr" not in rows[0]  # gnsdr_clips=0: no monitor
    assert float(rows[0]["eta_s"]) == 0.0  # the budget says: no epoch left
    assert (out / "model.keras").is_file()
    assert json.loads((out / "training.json").read_text())["config"]["time_budget"] == 1e-3


class _Clock:
    """A fake ``time.time`` for the callbacks."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(training.time, "time", fake)
    return fake


@pytest.fixture(scope="module")
def compiled_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1.0), loss="mse")
    return model


def _epoch(callback, epoch, seconds, clock):
    callback.on_epoch_begin(epoch)
    clock.now += seconds
    callback.on_epoch_end(epoch, {})


def test_time_budget_estimates_and_stops(clock, compiled_model):
    budget = training.TimeBudget(clock.now + 100.0, epochs=50)
    budget.set_model(compiled_model)
    compiled_model.stop_training = False
    assert budget.expected_epochs() == 50  # before any epoch: the configured count
    _epoch(budget, 0, 10.0, clock)  # 90 s left: 9 more epochs of 10 s
    assert budget.expected_epochs() == 10
    assert not compiled_model.stop_training
    _epoch(budget, 1, 20.0, clock)  # 70 s left at 20 s each: 3 more
    assert budget.expected_epochs() == 2 + 3
    assert not compiled_model.stop_training
    clock.now += 45.0  # 25 s left
    _epoch(budget, 2, 20.0, clock)  # 5 s left: the next 20 s epoch would not fit
    assert compiled_model.stop_training
    assert budget.expected_epochs() == 3
    # no deadline: never stops, keeps the configured count
    free = training.TimeBudget(None, epochs=7)
    free.set_model(compiled_model)
    compiled_model.stop_training = False
    _epoch(free, 0, 1e6, clock)
    assert not compiled_model.stop_training and free.expected_epochs() == 7
    # a long budget never raises the estimate above ``epochs``
    capped = training.TimeBudget(clock.now + 1e6, epochs=4)
    capped.set_model(compiled_model)
    _epoch(capped, 0, 1.0, clock)
    assert capped.expected_epochs() == 4 and not compiled_model.stop_training


def test_cosine_schedule_follows_expected_epochs(compiled_model):
    total = [4]
    schedule = training.CosineSchedule(0.01, lambda: total[0])
    schedule.set_model(compiled_model)

    def lr_at(epoch):
        schedule.on_epoch_begin(epoch)
        logs = {}
        schedule.on_epoch_end(epoch, logs)
        assert logs["learning_rate"] == pytest.approx(float(keras.ops.convert_to_numpy(
            compiled_model.optimizer.learning_rate)))
        return logs["learning_rate"]

    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]
    assert [lr_at(e) for e in range(5)] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert lr_at(0) == pytest.approx(0.01)
    assert lr_at(9) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    total[0] = 2  # a time budget revised the count: the schedule follows
    assert lr_at(1) == pytest.approx(0.005, rel=1e-6)
    total[0] = 0  # never divides by zero
    assert lr_at(0) == pytest.approx(0.01)


def test_resolve_loader(monkeypatch):
    assert keras.backend.backend() == "tensorflow"
    assert resolve_loader("auto") == "tf"
    assert resolve_loader("tf") == "tf" and resolve_loader("numpy") == "numpy"
    for bad in ("torch", "TF", ""):
        with pytest.raises(ValueError, match="loader"):
            resolve_loader(bad)
    monkeypatch.setattr(training.keras.backend, "backend", lambda: "jax")
    assert resolve_loader("auto") == "numpy"
    assert resolve_loader("tf") == "tf"


def test_settings_split_into_a_recipe_and_run_options():
    """Built by keyword; the flat settings of the command line split by field; the defaults
    live in the two dataclasses."""
    recipe, options = training_settings(preset="tiny", gain_db=3.0, loader="numpy",
                                        workers=2, time_budget=60.0, init="a.keras")
    assert recipe == Recipe(preset="tiny", gain_db=3.0)
    assert options == RunOptions(loader="numpy", workers=2, time_budget=60.0, init="a.keras")
    assert (Recipe().gain_db, Recipe().loss, RunOptions().loader) == (6.0, "ce", "auto")
    assert (RunOptions().gnsdr_clips, RunOptions().gnsdr_every) == (3, 1)
    assert not {f.name for f in dataclasses.fields(Recipe)} & {
        f.name for f in dataclasses.fields(RunOptions)}
    with pytest.raises(TypeError, match="learning_rat"):
        training_settings(learning_rat=1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.seed = 1
    with pytest.raises(TypeError):
        Recipe("tiny")  # keyword only: a positional recipe hides which field is which


# -- faults: a killed run, NaN loss, bad tracks -----------------------------------------
def _train_command(data, out, epochs):
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "keras-svs"
    return [str(script), "train", "--data", str(data), "--preset", "tiny", "-o", str(out),
            "--epochs", str(epochs), "--pretrain-epochs", "0", "--steps-per-epoch", "30",
            "--gnsdr-clips", "0"]


def test_killed_run_resumes_from_its_last_epoch(tmp_path):
    """SIGKILL mid-run, the same command again: no epoch lost or repeated, same count."""
    import os
    import signal
    import subprocess
    import time

    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    out = tmp_path / "run"
    command = _train_command(data, out, epochs=4)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    log = out / "finetune" / "log.csv"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            if log.is_file() and len(_log(log)) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_after = len(_log(log))
    assert 2 <= killed_after < 4
    assert (out / "finetune" / "backup").is_dir() and not (out / "model.keras").exists()
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    assert [int(row["epoch"]) for row in _log(log)] == [0, 1, 2, 3]
    assert (out / "model.keras").is_file()
    assert epochs_done(out, "finetune") == 4


def test_nan_loss_stops_the_run_with_a_clear_message(tmp_path, monkeypatch):
    from keras import ops

    def nan_loss(target, logits):
        return bin_cross_entropy(target, logits) * ops.convert_to_tensor(float("nan"))

    monkeypatch.setitem(training._LOSS_PARTS, "ce", (nan_loss, None, "ibm"))
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    config = training_settings(preset="tiny", epochs=3, pretrain_epochs=0, steps_per_epoch=4,
                         verbose=0, gnsdr_clips=0)
    with pytest.raises(FloatingPointError, match="NaN"):
        train(data, tmp_path / "run", *config)
    assert not (tmp_path / "run" / "model.keras").exists()
    assert len(_log(tmp_path / "run" / "finetune" / "log.csv")) <= 1


def _spoil(path):
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")


def test_an_unreadable_clip_is_named(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=4, seconds=1.0)
    _spoil(data / "clip_2.wav")
    preset = get_preset("tiny")
    with pytest.raises(DatasetError, match="clip_2.wav.*--skip-bad"):
        load_splits(data, None, preset)


def test_skip_bad_skips_unreadable_and_non_finite_clips_with_a_warning(tmp_path):
    import soundfile as sf

    data = write_training_pairs(tmp_path / "data", tracks=5, seconds=1.0)
    _spoil(data / "clip_2.wav")
    noisy = np.zeros((8000, 2), np.float32)
    noisy[100] = np.nan
    sf.write(data / "clip_3.wav", noisy, 8000, subtype="FLOAT")
    with pytest.raises(DatasetError, match="clip_3.wav.*NaN"):
        pipeline.decode([t for t in discover(data) if t.name == "clip_3"], 8000)
    with pytest.warns(UserWarning) as caught:
        train_audio, valid_audio = load_splits(data, None, get_preset("tiny"), skip_bad=True)
    assert sorted(train_audio.names) == ["clip_1", "clip_4"]
    assert valid_audio.names == ["clip_0"]
    messages = " ".join(str(w.message) for w in caught)
    assert "clip_2" in messages and "clip_3" in messages


def test_skip_bad_with_nothing_left_is_an_error(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=1.0)
    _spoil(data / "clip_0.wav")
    with pytest.raises(DatasetError, match="none of the 1 tracks"), pytest.warns(UserWarning):
        load_splits(data, None, get_preset("tiny"), skip_bad=True)


def test_init_starts_from_a_trained_model(trained_run, tmp_path):
    """``--init``: the run starts from the given model's weights (0 epochs keep them)."""
    config = training_settings(preset="tiny", epochs=0, pretrain_epochs=0, steps_per_epoch=1,
                         verbose=0, gnsdr_clips=0, init=str(trained_run["model"]))
    path = train(trained_run["data"], tmp_path / "warm", *config)
    for a, b in zip(load_model(trained_run["model"]).get_weights(),
                    load_model(path).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_init_refuses_a_model_of_another_preset(trained_run, tmp_path):
    other = build_model("small")
    other.save(tmp_path / "small.keras")
    config = training_settings(preset="tiny", epochs=1, pretrain_epochs=0, steps_per_epoch=1,
                         verbose=0, gnsdr_clips=0, init=str(tmp_path / "small.keras"))
    with pytest.raises(ValueError, match="small"):
        train(trained_run["data"], tmp_path / "warm", *config)


# -- the magnitude-weighted loss (--loss weighted) ----------------------------------------
def test_phase_sensitive_error_is_the_complex_spectral_error():
    """With power weights, the loss is ``sum |p X - V|^2`` over the patch's mean ``|X|^2``
    and bin count, less the quadrature part ``sum |X|^2 Im(V / X)^2`` that no real mask
    removes (exact where the phase-sensitive mask is not clipped)."""
    from keras_svs.models import phase_sensitive_error

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 6)) + 1j * rng.normal(size=(2, 4, 6))
    ratio = rng.uniform(0.05, 0.95, x.shape) + 1j * rng.normal(0, 0.3, x.shape)  # V / X
    v = ratio * x
    p = rng.uniform(0, 1, x.shape)
    magnitude = np.abs(x).astype(np.float32)
    weights = bin_weights(magnitude, 2)
    target = np.stack([ratio.real, weights], axis=-1).astype(np.float32)
    logits = np.log(p / (1 - p)).astype(np.float32)
    loss = keras.ops.convert_to_numpy(phase_sensitive_error(target, logits))
    power = np.abs(x) ** 2
    error = (np.abs(p * x - v) ** 2 - power * ratio.imag ** 2).sum(axis=(1, 2))
    expected = error / (power.mean(axis=(1, 2)) * power[0].size)
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    # a perfect mask scores 0
    perfect = np.log(ratio.real / (1 - ratio.real)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(phase_sensitive_error(target, perfect)), 0.0, atol=1e-6)


def test_weighted_cross_entropy_weighs_bins():
    from keras_svs.models import weighted_bin_cross_entropy

    rng = np.random.default_rng(8)
    target = (rng.random((2, 3, 4)) > 0.5).astype(np.float32) * 0.96 + 0.02
    voice = rng.uniform(0.05, 0.95, (2, 3, 4)).astype(np.float32)
    probabilities = np.log(voice / (1 - voice))  # the logits
    plain = keras.ops.convert_to_numpy(bin_cross_entropy(target, probabilities))
    ones = np.stack([target, np.ones_like(target)], axis=-1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(weighted_bin_cross_entropy(ones, probabilities)), plain,
        rtol=1e-6)
    # a weight of 2 on one bin, 0 on the others: twice that bin's cross-entropy / bins
    weights = np.zeros_like(target)
    weights[:, 1, 2] = 2.0
    one = keras.ops.convert_to_numpy(weighted_bin_cross_entropy(
        np.stack([target, weights], axis=-1), probabilities))
    ce = -(target * np.log(voice) + (1 - target) * np.log(1 - voice))
    np.testing.assert_allclose(one, 2 * ce[:, 1, 2] / 12, rtol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "weighted", "psa"])
def test_both_loaders_give_the_same_training_batches(tmp_path, loss):
    """One definition of an example: for the same recipe and seed the tf.data stream and
    the NumPy stream that a run fits on are equal, weight channels included."""
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    tiny = get_preset("tiny")
    train_audio, valid_audio = load_splits(data, None, tiny)
    recipe = resolve(Recipe(preset="tiny", loss=loss, pitch=0.5, seed=4, batch_size=8))

    def first(loader, count=2):
        stream = iter(training._data(train_audio, tiny, recipe, RunOptions(loader=loader),
                                     "finetune", training=True))
        return [tuple(keras.ops.convert_to_numpy(t) for t in next(stream))
                for _ in range(count)]

    for (x, y), (x_ref, y_ref) in zip(first("tf"), first("numpy")):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
        assert y.shape == (x.shape if loss == "ce" else (*x.shape, 2))
    x, y = training._data(valid_audio, tiny, recipe, RunOptions(), "finetune", training=False)
    assert y.shape == (x.shape if loss == "ce" else (*x.shape, 2))
    if loss != "ce":
        np.testing.assert_allclose(y[..., 1], bin_weights(x, 1 if loss == "weighted" else 2),
                                   rtol=1e-6)


@pytest.mark.parametrize("loader, loss", [("tf", "weighted"), ("numpy", "psa")])
def test_weighted_loss_run(tmp_path, loader, loss):
    """Each weighted loss trains (its loss falls) on each loader; the loaders give the same
    examples for both (test_both_loaders_give_the_same_training_batches above)."""
    data = write_training_pairs(tmp_path / "data", tracks=4, seconds=2.0)
    config = training_settings(preset="tiny", epochs=4, pretrain_epochs=0, steps_per_epoch=5,
                         learning_rate=3e-3, verbose=0, remix=0.0, loss=loss,
                         loader=loader, gnsdr_clips=0)
    path = train(data, tmp_path / "run", *config)
    rows = _log(tmp_path / "run" / "finetune" / "log.csv")
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert 0.0 < float(rows[-1]["bin_accuracy"]) <= 1.0
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["config"]["loss"] == loss
    assert load_model(path).name == build_model("tiny").name


def test_unknown_loss_is_refused(tmp_path):
    with pytest.raises(ValueError, match="loss must be one of"):
        train(tmp_path, tmp_path / "run", Recipe(preset="tiny", loss="l1"))


# -- weight averaging (--average-last) ----------------------------------------------------
def test_average_snapshots_is_the_elementwise_mean(tmp_path):
    model = build_model("tiny")
    rng = np.random.default_rng(0)
    paths, sets = [], []
    for i in range(3):
        weights = [rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()]
        model.set_weights(weights)
        paths.append(tmp_path / f"epoch{i:02d}.weights.h5")
        model.save_weights(paths[-1])
        sets.append(weights)
    training.average_snapshots(model, paths)
    for got, *each in zip(model.get_weights(), *sets):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no weight snapshots"):
        training.average_snapshots(model, [])


def test_snapshots_sort_by_epoch_number(tmp_path):
    for name in ("epoch10.weights.h5", "epoch02.weights.h5", "epoch100.weights.h5",
                 "best.weights.h5"):
        (tmp_path / name).touch()
    assert [p.name for p in training.snapshots(tmp_path)] == [
        "epoch02.weights.h5", "epoch10.weights.h5", "epoch100.weights.h5"]


def test_average_last_run_keeps_the_mean_of_the_last_epochs(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=2.0)
    config = training_settings(preset="tiny", epochs=3, pretrain_epochs=0, steps_per_epoch=2,
                         learning_rate=3e-3, verbose=0, remix=0.0, gnsdr_clips=0,
                         average_last=2)
    path = train(data, tmp_path / "run", *config)
    folder = tmp_path / "run" / "finetune"
    assert [p.name for p in training.snapshots(folder)] == [
        "epoch01.weights.h5", "epoch02.weights.h5", "epoch03.weights.h5"]
    expected = build_model("tiny")
    training.average_snapshots(expected, training.snapshots(folder)[1:])
    got = load_model(path).get_weights()
    assert len(got) == len(expected.get_weights())
    for a, b in zip(got, expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    last = build_model("tiny")
    last.load_weights(folder / "epoch03.weights.h5")
    assert any(not np.allclose(a, b) for a, b in zip(got, last.get_weights()))
    assert json.loads((tmp_path / "run" / "training.json").read_text())[
        "config"]["average_last"] == 2
    # run again: the finished stage is not refitted and gives the same model
    mtime = (folder / "averaged.weights.h5").stat().st_mtime_ns
    again = load_model(train(data, tmp_path / "run", *config)).get_weights()
    assert (folder / "averaged.weights.h5").stat().st_mtime_ns == mtime
    for a, b in zip(again, got):
        np.testing.assert_array_equal(a, b)


def test_negative_average_last_is_refused(tmp_path):
    with pytest.raises(ValueError, match="average_last must be >= 0"):
        train(tmp_path, tmp_path / "run", Recipe(preset="tiny", average_last=-1))


@pytest.mark.parametrize("loader", ["tf", "numpy"])
def test_gain_db_reaches_the_training_stream(tmp_path, loader):
    """``Recipe.gain_db`` sets the remix gain range of either loader: the stream is
    deterministic for a seed, and only the gain range changes it here."""
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    tiny = get_preset("tiny")
    train_audio, _ = load_splits(data, None, tiny)

    def first_batch(gain_db):
        recipe = resolve(Recipe(preset="tiny", remix=1.0, gain_db=gain_db, batch_size=16))
        stream = training._data(train_audio, tiny, recipe, RunOptions(loader=loader),
                                "finetune", training=True)
        x, _ = next(iter(stream))
        return keras.ops.convert_to_numpy(x)

    level = first_batch(0.0)
    np.testing.assert_array_equal(first_batch(0.0), level)
    louder = first_batch(12.0)
    assert np.isfinite(louder).all()
    assert not np.allclose(louder, level)


def _small_unet_preset():
    """The ``unet`` preset at 8 kHz with 128 bins and 2 channels per level (seconds to train)."""
    from keras_svs.spectral import StftConfig
    return dataclasses.replace(get_preset("unet"), stft=StftConfig(8000, 256, 256, 64), bins=128,
                               arch=dict(filters=(2,) * 6, dropout=0.2))


def test_with_network_input_checks_the_network():
    unet = get_preset("unet")
    assert training.with_network_input(unet, None) is unet
    assert training.with_network_input(unet, 192).frames == 192
    assert training.with_network_input(unet, 192).arch == unet.arch
    with pytest.raises(ValueError, match="multiple of 64"):
        training.with_network_input(unet, 100)
    with pytest.raises(ValueError, match="exactly 9 frames"):
        training.with_network_input(get_preset("paper16k"), 18)
    assert resolve(Recipe(preset="unet")).frames is None
    narrow = training.with_network_input(unet, bins=256)
    assert (narrow.bins, narrow.frames, narrow.stft) == (256, unet.frames, unet.stft)
    with pytest.raises(ValueError, match="bins must be a positive multiple of 64"):
        training.with_network_input(unet, bins=200)
    with pytest.raises(ValueError, match="at most the STFT's 513"):
        training.with_network_input(unet, bins=576)


def test_frames_sets_the_training_patch_length(tmp_path, monkeypatch):
    """``Recipe.frames`` reaches both loaders, and the run records it."""
    monkeypatch.setitem(presets.PRESETS, "unet", _small_unet_preset())
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=2.0)
    recipe = resolve(Recipe(preset="unet", frames=128, batch_size=2, epochs=1,
                            pretrain_epochs=0, steps_per_epoch=1))
    preset = training.with_network_input(presets.PRESETS["unet"], 128)
    train_audio, _ = load_splits(data, None, preset)
    for loader in ("tf", "numpy"):
        x, y = next(iter(training._data(train_audio, preset, recipe, RunOptions(loader=loader),
                                        "finetune", training=True)))
        assert keras.ops.shape(x) == (2, 128, 128), loader
    config = (recipe, RunOptions(loader="numpy", gnsdr_clips=0))
    path = train(data, tmp_path / "run", *config)
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert record["config"]["frames"] == 128
    assert load_model(path).name == "unet"


def test_logits_loss_trains_out_of_a_saturated_start(tmp_path):
    """The paper network's collapse in test size: start fine-tuning from a model whose voice
    logits sit at -60 in every bin (what autoencoder pretraining left in the faithful
    ``paper`` preset) and check that the cross-entropy from the logits falls well below the
    loss of that constant "accompaniment" prediction and keeps falling (a loss of clipped
    probabilities has no gradient there: it stays frozen)."""
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    keras.utils.set_random_seed(0)
    saturated = build_model("tiny")
    bias = saturated.get_layer("logits")
    kernel, _ = bias.get_weights()
    bias.set_weights([kernel * 0.0, np.full(bias.bias.shape, -60.0, np.float32)])
    start = tmp_path / "saturated.keras"
    saturated.save(start)
    recipe, options = training_settings(preset="tiny", epochs=3, pretrain_epochs=0,
                                        steps_per_epoch=8, learning_rate=3e-2,
                                        init=str(start), verbose=0, gnsdr_clips=0)
    train(data, tmp_path / "run", recipe, options)
    losses = [float(row["loss"]) for row in _log(tmp_path / "run" / "finetune" / "log.csv")]
    # the loss of the saturated start on the first epoch's batches: about 60 nats on every
    # bin whose target is voice
    train_audio, _ = load_splits(data, None, get_preset("tiny"))
    stream = training._data(train_audio, get_preset("tiny"), resolve(recipe), options,
                            "finetune", training=True)
    start_loss = float(np.mean([keras.ops.convert_to_numpy(bin_cross_entropy(
        y, np.full(y.shape, -60.0, np.float32))) for _, y in itertools.islice(stream, 8)]))
    assert losses[0] < start_loss, (losses, start_loss)
    assert all(b < a for a, b in zip(losses, losses[1:]))  # falls at every epoch
    assert losses[-1] < 0.6 * losses[0]
