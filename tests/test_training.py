"""keras_svs.training: the two-stage run, its files, resuming, precision."""
from __future__ import annotations

import csv
import json
import shutil

import keras
import numpy as np
import pytest

from conftest import write_training_pairs
from keras_svs import pipeline
from keras_svs.datasets import DatasetError, discover
from keras_svs.models import get_preset, load_model, settings
from keras_svs.training import (TrainConfig, epochs_done, load_splits, resolve_precision,
                                train)


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
    assert settings(model)["preset"] == "tiny"
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
    train(trained_run["data"], out, trained_run["config"])
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
    config = TrainConfig(preset="tiny", epochs=6, pretrain_epochs=0, steps_per_epoch=5,
                         learning_rate=3e-3, verbose=0, remix=0.0)
    path = train(data, tmp_path / "run", config)
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
    config = TrainConfig(preset="tiny", epochs=1, pretrain_epochs=0, steps_per_epoch=1,
                         precision="mixed_bfloat16", cosine=True, verbose=0)
    path = train(data, tmp_path / "run", config)
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
    resolved = TrainConfig(preset="tiny").resolved()
    assert (resolved.epochs, resolved.pretrain_epochs) == (tiny.epochs, tiny.pretrain_epochs)
    assert resolved.batch_size == tiny.batch_size
    assert resolved.learning_rate == tiny.learning_rate
    assert resolved.remix == tiny.remix
    explicit = TrainConfig(preset="tiny", epochs=3, pretrain_epochs=0, batch_size=4,
                           learning_rate=0.1, remix=0.0).resolved()
    assert (explicit.epochs, explicit.pretrain_epochs, explicit.batch_size,
            explicit.learning_rate, explicit.remix) == (3, 0, 4, 0.1, 0.0)
    with pytest.raises(KeyError, match="nope"):
        TrainConfig(preset="nope").resolved()


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
