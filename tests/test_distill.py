"""Distillation into a cheaper student: the student networks, the two-term loss
(``--ibm-weight``), the remix stream across datasets and a few training steps.

Models are small (8 kHz, 64 bins, 2 filters a level) with random weights; audio is
synthesized.
"""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_svs import examples, pipeline, spectral
from keras_svs.models import (Preset, bin_cross_entropy, build_model, get_preset,
                              load_model, logits_model, weighted_bin_cross_entropy)
from keras_svs.models.student import EXTENSION_CONTEXT
from keras_svs.models.teacher import TeacherTargets, blend_targets, distillation_loss


def _student(**arch) -> Preset:
    """The ``tinystereo`` input (8 kHz, 64 bins, stereo) with a student network."""
    return dataclasses.replace(get_preset("tinystereo"), name="student",
                               architecture="student",
                               arch={"filters": (2, 2, 2, 2, 2, 2), **arch})


def _softplus(z):
    return np.logaddexp(0.0, z)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("arch", [dict(heads=2), dict(heads=1), dict(heads=2, separable=3),
                                  dict(heads=2, network_bins=32, filters=(2,) * 5),
                                  dict(heads=1, network_bins=32, filters=(2,) * 5)])
def test_a_student_maps_the_pairs_input_to_its_probabilities_and_reloads(tmp_path, arch):
    keras.utils.set_random_seed(0)
    model = build_model(_student(**arch))
    x = np.random.default_rng(0).random((2, 128, 64, 2), dtype=np.float32)
    p = np.asarray(model(x, training=False))
    assert p.shape == (2, 128, 64, 2, 2)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
    assert np.asarray(logits_model(model)(x, training=False)).shape == (2, 128, 64, 2)
    if arch.get("separable"):
        kinds = {type(model.get_layer(f"student_down{i}_conv")).__name__ for i in (2, 3)}
        assert kinds == {"Conv2D", "SeparableConv2D"}
    model.save(tmp_path / "student.keras")
    again = load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(np.asarray(again(x, training=False)), p, atol=1e-6)


def test_a_narrower_student_has_fewer_parameters_and_the_extension_reads_the_band_above():
    wide = build_model(dataclasses.replace(get_preset("student"), bins=128,
                                           arch=dict(heads=2)))
    narrow = build_model(dataclasses.replace(get_preset("student"), bins=128,
                                             arch=dict(heads=2, filters=(8, 16, 32, 64, 128,
                                                                         256))))
    assert narrow.count_params() < wide.count_params() / 3
    keras.utils.set_random_seed(1)
    model = logits_model(build_model(_student(heads=2, network_bins=EXTENSION_CONTEXT,
                                              filters=(2,) * 5)))
    x = np.random.default_rng(1).random((1, 64, 64, 2), dtype=np.float32)
    louder = x.copy()
    louder[:, :, EXTENSION_CONTEXT:] *= 10  # the band above the network's only
    a, b = (np.asarray(model(v, training=False)) for v in (x, louder))
    np.testing.assert_array_equal(a[:, :, :EXTENSION_CONTEXT], b[:, :, :EXTENSION_CONTEXT])
    assert np.abs(a[:, :, EXTENSION_CONTEXT:] - b[:, :, EXTENSION_CONTEXT:]).max() > 1e-3
    with pytest.raises(ValueError, match="heads"):
        build_model(_student(heads=3))
    with pytest.raises(ValueError, match="multiple of 64"):
        build_model(_student(network_bins=32))


@pytest.mark.parametrize("weight", [0.0, 0.5, 2.0])
def test_the_distillation_loss_and_its_gradient_match_the_formula(weight):
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, (2, 8, 16, 2)).astype(np.float32)
    q = rng.random(z.shape, dtype=np.float32)
    t = np.where(rng.random(z.shape) < 0.5, 0.98, 0.02).astype(np.float32)
    logits = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = distillation_loss(bin_cross_entropy, t, logits, q, weight)
        total = tf.reduce_sum(loss)
    got = np.asarray(loss)
    ce = lambda target: target * _softplus(-z) + (1 - target) * _softplus(z)  # noqa: E731
    expected = (ce(q) + weight * ce(t)).mean(axis=(1, 2))  # (batch, channels)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    bins = np.prod(z.shape[1:3])
    np.testing.assert_allclose(np.asarray(tape.gradient(total, logits)),
                               ((_sigmoid(z) - q) + weight * (_sigmoid(z) - t)) / bins,
                               rtol=1e-4, atol=1e-7)


def test_the_ibm_weight_changes_the_loss_and_equals_a_scaled_blend():
    keras.utils.set_random_seed(3)
    student = logits_model(build_model(_student(heads=2)))
    teacher = logits_model(build_model("tinystereo"))
    rng = np.random.default_rng(3)
    x = rng.random((2, 64, 64, 2), dtype=np.float32)
    y = np.stack([np.where(rng.random(x.shape) < 0.5, 0.98, 0.02),
                  rng.random(x.shape) + 0.5], axis=-1).astype(np.float32)

    def evaluate(**kwargs):
        taught = TeacherTargets(student, teacher, **kwargs)
        taught.compile(loss=weighted_bin_cross_entropy)
        return float(taught.evaluate(x, y, batch_size=2, verbose=0))

    alone, with_ibm = evaluate(share=0.5, ibm_weight=0.0), evaluate(share=0.5, ibm_weight=1.0)
    own = float(np.mean(weighted_bin_cross_entropy(y, student(x, training=False))))
    assert with_ibm == pytest.approx(alone + own, rel=1e-5)
    assert with_ibm - alone > 0.1 * own  # the flag has an effect
    # linear in the target: L(q) + w L(t) = (1 + w) L(blend with share 1 / (1 + w))
    blended = evaluate(share=1 / 3)
    assert evaluate(share=0.9, ibm_weight=2.0) == pytest.approx(3 * blended, rel=1e-5)
    q = keras.ops.sigmoid(teacher(x, training=False))
    assert alone == pytest.approx(float(np.mean(weighted_bin_cross_entropy(
        blend_targets(y, q, 1.0), student(x, training=False)))), rel=1e-5)
    with pytest.raises(ValueError, match=">= 0"):
        TeacherTargets(student, teacher, 0.5, ibm_weight=-1.0)


def _decoded(names, seconds, rate=8000, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([int(seconds * rate)] * len(names), np.int64)
    voice = rng.normal(0, 0.1, (2, lengths.sum())).astype(np.float32)
    accompaniment = rng.normal(0, 0.1, (2, lengths.sum())).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return pipeline.DecodedAudio(list(names), voice, accompaniment, starts, lengths, rate)


def test_the_remix_stream_mixes_songs_of_both_datasets_and_is_fixed_by_its_seed():
    both = pipeline.concatenate([_decoded(["m1", "m2", "m3"], 2.0),
                                 _decoded(["k1", "k2", "k3", "k4"], 1.5, seed=1)])
    preset = get_preset("tinystereo")
    sampler = examples.PatchSampler(both, preset, remix=1.0, pitch=0.5, gain_db=6.0,
                                    batch_size=16, seed=5)
    draws = [sampler.draw(k) for k in range(8)]
    voice = np.concatenate([d.voice_clip for d in draws])
    accompaniment = np.concatenate([d.accompaniment_clip for d in draws])
    assert np.mean(voice != accompaniment) > 0.6  # a voice over another song's band
    assert {both.names[i][0] for i in voice} == {"m", "k"}  # from both datasets
    mixed = [(both.names[v][0], both.names[a][0]) for v, a in zip(voice, accompaniment)]
    assert ("m", "k") in mixed and ("k", "m") in mixed  # across the datasets
    rates = np.concatenate([d.rate for d in draws])
    assert 0.2 < np.mean(rates != 1.0) < 0.8  # pitch shifts, half of the remixed voices
    gains = np.concatenate([d.gains for d in draws])
    assert np.all((gains >= 10 ** (-6 / 20) - 1e-9) & (gains <= 10 ** (6 / 20) + 1e-9))
    assert len(np.unique(gains.round(6))) > 100
    x, y = sampler.batch(3)
    again = examples.PatchSampler(both, preset, remix=1.0, pitch=0.5, gain_db=6.0,
                                  batch_size=16, seed=5).batch(3)
    np.testing.assert_array_equal(x, again[0])
    np.testing.assert_array_equal(y, again[1])
    other = examples.PatchSampler(both, preset, remix=1.0, pitch=0.5, gain_db=6.0,
                                  batch_size=16, seed=6).batch(3)
    assert not np.array_equal(x, other[0])


def test_a_tiny_student_learns_from_the_teacher():
    """A few Adam steps on one remixed batch bring the loss towards its floor: with the
    targets ``q`` and ``t`` weighted ``1`` and ``w``, the least loss at a bin is ``(1 + w)``
    times the entropy of ``(q + w t) / (1 + w)``."""
    keras.utils.set_random_seed(4)
    preset = _student(heads=2, filters=(4, 8, 8, 8, 8, 8))
    student = logits_model(build_model(preset))
    teacher = logits_model(build_model("tinystereo"))
    sampler = examples.PatchSampler(_decoded(["a", "b", "c"], 2.0), preset, remix=1.0,
                                    batch_size=4, seed=0)
    x, y = sampler.batch(0)
    weight = 0.5
    taught = TeacherTargets(student, teacher, 0.5, ibm_weight=weight)
    taught.compile(optimizer=keras.optimizers.Adam(1e-2), loss=bin_cross_entropy)
    history = taught.fit(x, y, batch_size=4, epochs=30, verbose=0).history["loss"]
    q = np.asarray(keras.ops.sigmoid(teacher(x, training=False)))
    best = np.clip((q + weight * y) / (1 + weight), 1e-7, 1 - 1e-7)
    floor = (1 + weight) * np.mean(-best * np.log(best) - (1 - best) * np.log(1 - best))
    assert history[0] > floor
    assert history[-1] - floor < 0.6 * (history[0] - floor), (floor, history)


def test_an_ibm_weight_needs_a_teacher(tmp_path):
    from keras_svs.options import Recipe, RunOptions
    from keras_svs.training import train

    with pytest.raises(ValueError, match="give a teacher"):
        train(tmp_path / "nothing", tmp_path / "run", Recipe(preset="tinystereo",
                                                             ibm_weight=0.5), RunOptions())


def test_the_gpu_scripts_device_examples_equal_the_samplers():
    """benchmarks/gpu/distill.py makes the sampler's examples in jax.numpy from its draws."""
    import importlib.util
    from pathlib import Path

    jnp = pytest.importorskip("jax.numpy")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu" / "distill.py"
    spec = importlib.util.spec_from_file_location("gpu_distill", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    preset = get_preset("tinystereo")
    sampler = examples.PatchSampler(_decoded(["a", "b", "c", "d"], 1.5), preset, remix=1.0,
                                    pitch=0.5, batch_size=6, seed=2)
    held = (jnp.asarray(sampler.voice), jnp.asarray(sampler.accompaniment), sampler.starts,
            sampler.lengths)
    window = jnp.asarray(spectral.window_numpy(preset.stft))
    shifted = 0
    for k in range(4):
        draw = sampler.draw(k)
        shifted += int(np.any(draw.rate != 1.0))
        x, y = script.device_examples(*held, draw, examples.patch_samples(preset), window,
                                      preset.stft.hop_length, preset.bins,
                                      preset.label_smoothing)
        expected_x, expected_y = sampler.batch(k)
        assert x.shape == expected_x.shape and y.shape == expected_y.shape
        np.testing.assert_allclose(np.asarray(x), expected_x, atol=2e-4 * expected_x.max())
        assert np.mean(np.asarray(y) != expected_y) < 1e-3  # ties may fall either way
    assert shifted >= 2  # batches with pitch-shifted voices among them


def test_the_train_command_takes_an_ibm_weight(tmp_path):
    from click.testing import CliRunner

    from keras_svs.cli import main

    runner = CliRunner()
    bad = runner.invoke(main, ["train", "-d", str(tmp_path), "-p", "tinystereo",
                               "--ibm-weight", "-1", "-o", str(tmp_path / "run")])
    assert bad.exit_code == 2 and "--ibm-weight" in bad.output  # a usage error
    alone = runner.invoke(main, ["train", "-d", str(tmp_path), "-p", "tinystereo",
                                 "--ibm-weight", "0.5", "-o", str(tmp_path / "run")])
    assert alone.exit_code != 0 and "give a teacher" in alone.output
    assert "--ibm-weight" in runner.invoke(main, ["train", "--help"]).output
