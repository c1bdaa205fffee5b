"""Distillation (``--teacher``): targets blended with a teacher's voice probabilities.

Models are the ``tinystereo`` preset (Spleeter's architecture, 2 filters a level, 8 kHz)
with random weights; the audio is synthesized.
"""
from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from conftest import write_musdb, write_splits
from keras_svs.models import (build_model, load_model, logits_model, phase_sensitive_error,
                              weighted_bin_cross_entropy)
from keras_svs.models.teacher import TeacherTargets, blend_targets, load_teacher

RATE = 8000


def _batch(seed: int = 0, weighted: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.random((2, 64, 64, 2), dtype=np.float32)
    y = rng.random((2, 64, 64, 2) + ((2,) if weighted else ()), dtype=np.float32)
    return x, y


def test_blend_targets_mixes_the_target_and_keeps_the_weights():
    _, y = _batch()
    q = np.full(y.shape[:-1], 0.25, np.float32)
    for share in (0.0, 0.3, 1.0):
        out = np.asarray(blend_targets(y, q, share))
        assert out.shape == y.shape
        np.testing.assert_allclose(out[..., 0], (1 - share) * y[..., 0] + share * 0.25,
                                   rtol=1e-6)
        np.testing.assert_array_equal(out[..., 1], y[..., 1])  # the bin weights
    _, plain = _batch(weighted=False)
    np.testing.assert_allclose(np.asarray(blend_targets(plain, q, 0.5)),
                               0.5 * plain + 0.125, rtol=1e-6)


@pytest.mark.parametrize("loss", [phase_sensitive_error, weighted_bin_cross_entropy])
def test_the_loss_is_taken_against_the_blended_targets(loss):
    keras.utils.set_random_seed(1)
    student, teacher = logits_model(build_model("tinystereo")), logits_model(
        build_model("tinystereo"))
    taught = TeacherTargets(student, teacher, 0.4)
    taught.compile(loss=loss)
    x, y = _batch()
    got = float(taught.evaluate(x, y, batch_size=2, verbose=0))
    q = keras.ops.sigmoid(teacher(x, training=False))
    expected = float(np.mean(loss(blend_targets(y, q, 0.4), student(x, training=False))))
    own = float(np.mean(loss(y, student(x, training=False))))
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - own) > 1e-4 * abs(own)  # the teacher changed the targets


def test_the_taught_model_holds_the_students_weights_only(tmp_path):
    student = logits_model(build_model("tinystereo"))
    teacher = logits_model(build_model("tinystereo"))
    taught = TeacherTargets(student, teacher, 1.0)
    assert len(taught.weights) == len(student.weights)
    assert {id(w) for w in taught.weights} == {id(w) for w in student.weights}
    assert not teacher.trainable
    taught.save_weights(tmp_path / "taught.weights.h5")
    other = logits_model(build_model("tinystereo"))
    other.load_weights(tmp_path / "taught.weights.h5")  # loads into the plain view
    for a, b in zip(other.get_weights(), student.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\]"):
        TeacherTargets(student, teacher, 1.5)


def test_load_teacher_checks_the_input_and_takes_the_current_precision(tmp_path):
    path = tmp_path / "teacher.keras"
    trained = build_model("tinystereo")
    trained.save(path)
    student = build_model("tinystereo")
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        teacher = load_teacher(path, student)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert teacher.get_layer("vocals_down1_conv").compute_dtype == "bfloat16"
    np.testing.assert_array_equal(teacher.get_layer("vocals_down1_conv").get_weights()[0],
                                  trained.get_layer("vocals_down1_conv").get_weights()[0])
    with pytest.raises(ValueError, match="input differs from the student's: .*channels 2"):
        load_teacher(path, build_model("tiny"))


def test_a_distilled_run_fits_the_teachers_probabilities(tmp_path):
    """Share 1, the student starting as the teacher and a learning rate too small to move
    it: the validation loss is ~0 (the targets are the teacher's own probabilities), where
    the same validation examples' own targets give the same model a clearly positive loss."""
    from keras_svs import examples
    from keras_svs.models.presets import get_preset
    from keras_svs.training import Recipe, RunOptions, load_splits, train, with_network_input

    musdb = write_musdb(tmp_path / "musdb", ["m1", "m2", "m3"], rate=RATE, seconds=2.0)
    write_splits(musdb, {"train": ["m1", "m2"], "valid": ["m3"]})
    keras.utils.set_random_seed(3)
    teacher = tmp_path / "teacher.keras"
    build_model("tinystereo").save(teacher)
    before = load_model(teacher).get_weights()
    recipe = Recipe(preset="tinystereo", epochs=1, pretrain_epochs=0, steps_per_epoch=2,
                    learning_rate=1e-12, loss="psa", freeze_batch_norm=True, frames=64,
                    precision="float32", teacher=str(teacher), teacher_share=1.0)
    out = tmp_path / "run"
    train(musdb, out, recipe, RunOptions(verbose=0, init=str(teacher), gnsdr_clips=0))
    rows = list(csv.DictReader((out / "finetune" / "log.csv").open()))
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["teacher"] == str(teacher)
    assert record["config"]["teacher_share"] == 1.0
    assert float(rows[-1]["val_loss"]) < 1e-6

    preset = with_network_input(get_preset("tinystereo"), 64)
    (valid,) = load_splits(musdb, None, preset, ("valid",))
    x, y = examples.validation_arrays(valid, preset, "finetune", "psa", "power")
    plain = TeacherTargets(logits_model(load_model(out / "model.keras")),
                           logits_model(load_model(teacher)), 0.0)
    plain.compile(loss=phase_sensitive_error)
    assert float(plain.evaluate(x, y, verbose=0)) > 1e-3  # the examples' own targets
    for a, b in zip(load_model(teacher).get_weights(), before):
        np.testing.assert_array_equal(a, b)  # the teacher's file is unchanged
