"""keras_svs.models: architectures, presets, saving/loading, loss."""
from __future__ import annotations

import dataclasses
import zipfile

import keras
import numpy as np
import pytest

from keras_svs.models import (PRESETS, bin_accuracy, bin_cross_entropy, build_model,
                              front_end, get_preset, load_model, set_input_statistics,
                              ModelSettings, settings, stft_config)
from keras_svs.spectral import StftConfig


def _magnitudes(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 0.3, shape).astype(np.float32)


def test_paper_model_has_the_papers_size_and_shapes():
    model = build_model("paper")
    assert model.count_params() == 19_489_049
    assert model.input_shape == (None, 9, 2049)
    assert model.output_shape == (None, 9, 2049, 2)
    assert model.name == "paper"
    assert settings(model).preset == "paper"
    assert stft_config(model) == StftConfig(22050, 4096, 1024, 256)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_matches_its_settings(name):
    preset = get_preset(name)
    assert preset.bins <= preset.stft.bins
    assert preset.mask in ("soft", "binary")
    assert 0 <= preset.label_smoothing < 0.5


def test_unknown_preset():
    with pytest.raises(KeyError, match="nope"):
        get_preset("nope")
    with pytest.raises(KeyError):
        build_model("nope")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="architecture"):
        build_model(dataclasses.replace(get_preset("tiny"), architecture="rnn"))


def test_tiny_outputs_are_probabilities(tiny_model):
    x = _magnitudes((3, 9, 129))
    y = np.asarray(tiny_model(x, training=False))
    assert y.shape == (3, 9, 129, 2)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    assert np.all(y >= 0) and np.all(y <= 1)


def test_softmax_output_is_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("tiny")
        assert model.get_layer("conv1").compute_dtype == "bfloat16"
        y = model(_magnitudes((2, 9, 129)), training=False)
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert model.get_layer("probabilities").compute_dtype == "float32"
        assert model.get_layer("spectrogram_input").compute_dtype == "float32"
        np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0, atol=1e-6)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == previous


@pytest.fixture(scope="module")
def unet_models():
    return build_model("unet"), build_model("unet", shortcuts=False)


@pytest.mark.parametrize("frames", [64, 128])
def test_unet_is_fully_convolutional(unet_models, frames):
    model, _ = unet_models
    assert model.input_shape == (None, None, 512)
    y = np.asarray(model(_magnitudes((1, frames, 512)), training=False))
    assert y.shape == (1, frames, 512, 2)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    assert settings(model).frames is None
    assert settings(model).time_multiple == 64


def test_unet_without_shortcuts_has_the_same_weights(unet_models):
    model, autoencoder = unet_models
    shapes = [tuple(w.shape) for w in model.weights]
    assert shapes == [tuple(w.shape) for w in autoencoder.weights]
    assert model.count_params() == autoencoder.count_params()
    autoencoder.set_weights(model.get_weights())  # what training does between the stages
    # the shortcuts are really off: the outputs differ with the same weights
    x = _magnitudes((1, 64, 512), seed=3)
    assert not np.allclose(np.asarray(model(x)), np.asarray(autoencoder(x)))


def test_unet_standardises_input(unet_models):
    model, _ = unet_models
    layer = front_end(model)
    assert layer.settings.log_input and layer.settings.standardize
    x = _magnitudes((1, 64, 512), seed=4)
    plain = np.asarray(layer(x))
    np.testing.assert_allclose(plain[..., 0], np.log(x + 1e-6), rtol=1e-5)
    mean, std = np.full(512, -3.0, np.float32), np.full(512, 2.0, np.float32)
    fresh = build_model("unet")
    set_input_statistics(fresh, mean, std)
    np.testing.assert_allclose(np.asarray(front_end(fresh)(x))[..., 0],
                               (np.log(x + 1e-6) + 3.0) / 2.0, rtol=1e-5, atol=1e-6)


def test_paper_model_has_no_statistics(tiny_model):
    with pytest.raises(ValueError, match="standardise"):
        set_input_statistics(tiny_model, np.zeros(129), np.ones(129))


def test_settings_are_typed_and_stored_by_field_name():
    model = build_model("tiny")
    s = settings(model)
    assert isinstance(s, ModelSettings) and s.preset == "tiny" and s.frames == 9
    assert s.stft == stft_config(model)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mask = "soft"
    config = model.get_layer("spectrogram_input").get_config()
    assert {k: config[k] for k in s.as_dict()} == s.as_dict()
    with pytest.raises(ValueError, match="channels"):
        dataclasses.replace(s, channels=0)


def test_the_shipped_model_file_has_typed_settings():
    from keras_svs.separation import default_model_path

    s = settings(load_model(default_model_path()))
    assert (s.preset, s.channels, s.frames, s.extension) == ("spleeter", 2, None, "mean")


def test_save_load_round_trip(tmp_path):
    keras.utils.set_random_seed(5)
    preset = dataclasses.replace(get_preset("tiny"), mask="soft", threshold=0.3)
    model = build_model(preset)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    assert settings(loaded) == settings(model)
    assert settings(loaded).mask == "soft"
    assert settings(loaded).threshold == pytest.approx(0.3)
    x = _magnitudes((4, 9, 129))
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-7)
    assert loaded.count_params() == model.count_params()


def test_save_load_keeps_input_statistics(tmp_path):
    preset = dataclasses.replace(get_preset("unet"), arch=dict(filters=(4, 4), dropout=0.2),
                                 bins=128)
    model = build_model(preset)
    mean = np.linspace(-5, -1, 128).astype(np.float32)
    std = np.linspace(0.5, 2, 128).astype(np.float32)
    set_input_statistics(model, mean, std)
    model.save(tmp_path / "u.keras")
    loaded = load_model(tmp_path / "u.keras")
    np.testing.assert_allclose(np.asarray(front_end(loaded).mean), mean)
    np.testing.assert_allclose(np.asarray(front_end(loaded).std), std)
    x = _magnitudes((1, 8, 128))
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_load_model_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.keras"
    with pytest.raises(ValueError, match="missing.keras"):
        load_model(missing)
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="notes.keras"):
        load_model(text)
    bad_zip = tmp_path / "empty.keras"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match="empty.keras"):
        load_model(bad_zip)
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        load_model(tmp_path)  # a folder


def test_load_model_refuses_other_keras_models(tmp_path):
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "other.keras"
    other.save(path)
    with pytest.raises(ValueError, match="other.keras"):
        load_model(path)


def test_load_model_refuses_a_lambda_layer(tmp_path):
    """Safe mode: a .keras file that would run arbitrary Python is refused, not loaded."""
    marker = tmp_path / "ran"
    inputs = keras.Input((9, 129))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="lambda.keras.*(Lambda|unsafe|safe)"):
        load_model(path)
    assert not marker.exists()


def _rewrite_config(source, target, edit):
    """Copy a .keras zip, passing its config.json through ``edit(dict)``."""
    import json

    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)


@pytest.mark.parametrize("tamper", ["foreign_module", "unknown_class", "broken_json",
                                    "wrong_shape"])
def test_load_model_refuses_a_tampered_config(tiny_model_path, tmp_path, tamper):
    path = tmp_path / f"{tamper}.keras"
    if tamper == "broken_json":
        with zipfile.ZipFile(tiny_model_path) as zin, zipfile.ZipFile(path, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                zout.writestr(item, data[:len(data) // 2] if item.filename == "config.json"
                              else data)
    else:
        def edit(config):
            layer = config["config"]["layers"][-1]
            if tamper == "foreign_module":
                layer["module"], layer["class_name"] = "os", "system"
                layer["registered_name"] = None
            elif tamper == "unknown_class":
                layer["class_name"] = layer["registered_name"] = "NoSuchLayer"
            else:  # the input grows, so the stored weights no longer fit
                for spec in config["config"]["layers"]:
                    if spec["class_name"] == "InputLayer":
                        spec["config"]["batch_shape"] = [None, 9, 300]
            return config

        _rewrite_config(tiny_model_path, path, edit)
    with pytest.raises(ValueError, match=f"{tamper}.keras"):
        load_model(path)


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p)).astype(np.float32)


def test_bin_cross_entropy_from_logits_matches_numpy():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (3, 4, 5)).astype(np.float32)
    target[0] = np.where(target[0] > 0.5, 0.98, 0.02)
    z = rng.normal(0, 4, (3, 4, 5)).astype(np.float32)
    z[1, 0, 0], z[1, 0, 1] = -500.0, 500.0  # saturated: finite, exact
    q = 1 / (1 + np.exp(-z.astype(np.float64)))
    with np.errstate(divide="ignore"):
        ce = -(target * np.log(q) + (1 - target) * np.log1p(-q))
    ce[1, 0, 0] = target[1, 0, 0] * 500.0
    ce[1, 0, 1] = (1 - target[1, 0, 1]) * 500.0
    got = np.asarray(bin_cross_entropy(target, z))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, ce.mean(axis=(1, 2)), rtol=1e-5)
    assert np.all(np.isfinite(got))


def test_logits_loss_equals_the_probability_loss_inside_the_clip():
    """Where the voice probability lies in [1e-7, 1 - 1e-7], the cross-entropy from the
    logits is the cross-entropy of the clipped probabilities (the loss before logits)."""
    rng = np.random.default_rng(1)
    target = np.where(rng.random((4, 9, 7)) > 0.5, 0.98, 0.02).astype(np.float32)
    p = rng.uniform(1e-6, 1 - 1e-6, target.shape)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    before = -(target * np.log(q) + (1 - target) * np.log(1 - q)).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(bin_cross_entropy(target, _logit(p))), before,
                               rtol=1e-5)


def _gradient(loss, target, z):
    """d loss / d z (summed over the batch's per-example losses), on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        z = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = tf.reduce_sum(loss(target, z))
        return tape.gradient(value, z).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: loss(target, v).sum())(z))
    pytest.skip(f"no gradient helper for the {backend} backend")


@pytest.mark.parametrize("loss_name", ["bin_cross_entropy", "weighted_bin_cross_entropy"])
def test_logits_gradient_does_not_vanish_at_a_saturated_logit(loss_name):
    """At logit -60 with target 0.98 the gradient is sigmoid(z) - t = -0.98 per bin (over
    the bins averaged); a loss of clipped probabilities gives ~0 there (BENCHMARKS.md,
    "What each training recipe gives": why the paper's network froze with one)."""
    from keras_svs.models import losses

    loss = getattr(losses, loss_name)
    bins = 6
    z = np.full((1, 1, bins), -60.0, np.float32)
    voice = np.full((1, 1, bins), 0.98, np.float32)
    target = voice if loss_name == "bin_cross_entropy" else np.stack(
        [voice, np.ones_like(voice)], axis=-1)
    gradient = _gradient(loss, target, z) * bins  # the loss is a mean over the bins
    np.testing.assert_allclose(gradient, -0.98, rtol=1e-6)


def test_logits_gradient_on_jax_too():
    """The same gradient computed by JAX, where JAX is installed (lent GPUs run it)."""
    jax = pytest.importorskip("jax")
    from keras_svs.models import losses

    z = np.full((1, 1, 4), -60.0, np.float32)
    target = np.full((1, 1, 4), 0.98, np.float32)

    def ce(v):  # the loss's formula with jax.numpy, as the JAX backend computes it
        return (target * jax.nn.softplus(-v) + (1 - target) * jax.nn.softplus(v)).mean()

    np.testing.assert_allclose(np.asarray(jax.grad(ce)(z)) * 4, -0.98, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(losses.bin_cross_entropy(target, z)),
                               np.asarray(ce(z)), rtol=1e-6)


def test_logits_model_shares_the_weights_and_ends_before_the_head():
    from keras_svs.models import logits_model

    model = build_model("tiny")
    view = logits_model(model)
    assert len(view.weights) == len(model.weights)
    assert all(a is b for a, b in zip(view.weights, model.weights))
    x = np.random.default_rng(2).random((2, 9, 129)).astype(np.float32) * 0.1
    z = np.asarray(view(x))
    p = np.asarray(model(x))
    assert z.shape == (2, 9, 129)
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), p[..., 0], atol=1e-6)
    with pytest.raises(ValueError, match="logits_grid"):
        logits_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))


def test_bin_cross_entropy_is_minimal_at_the_target():
    target = np.array([[[0.98, 0.02]]], np.float32)
    right, wrong = _logit(target), _logit(1 - target)
    assert float(bin_cross_entropy(target, right)[0]) < float(bin_cross_entropy(target, wrong)[0])


def test_bin_accuracy():
    target = np.array([[[0.98, 0.02, 0.98, 0.02]]], np.float32)
    p = np.array([[[0.9, 0.1, 0.2, 0.7]]], np.float32)
    acc = np.asarray(bin_accuracy(target, _logit(p)))
    np.testing.assert_allclose(acc, [0.5])


def test_half_precision_file_is_smaller_and_loads_as_float32(tmp_path):
    from keras_svs.models import build_model, load_model, save_half_precision

    model = build_model("small")
    full = tmp_path / "full.keras"
    model.save(full)
    half = save_half_precision(model, tmp_path / "half.keras")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    with zipfile.ZipFile(half) as archive:  # the weights stored, to be read where they lie
        assert archive.getinfo("model.weights.h5").compress_type == zipfile.ZIP_STORED
    loaded = load_model(half)
    assert all(w.dtype == "float32" for w in loaded.weights)
    x = np.random.default_rng(0).random((2, 9, 257)).astype("float32") * 0.1
    assert np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=2e-3)
    assert not list(tmp_path.glob(".*.tmp"))


def test_with_bins_keeps_the_weights_and_the_separation_settings(tmp_path):
    """A fully convolutional model re-banded: the same weights, the new band, its own
    mask settings; a fixed-patch network and a band it cannot take are refused, and
    ``keras-svs shrink --bins`` writes it (or one error line and no file)."""
    from click.testing import CliRunner

    from keras_svs.cli import main
    from keras_svs.models import get_preset, load_model, settings, with_bins

    model = build_model(dataclasses.replace(get_preset("tinystereo"), extension="zero",
                                            threshold=0.3))
    narrow = with_bins(model, 128)
    s = settings(narrow)
    assert (s.bins, s.extension, s.threshold, s.preset) == (128, "zero", 0.3, "tinystereo")
    assert tuple(narrow.input_shape) == (None, None, 128, 2)
    assert len(narrow.weights) == len(model.weights)
    for a, b in zip(model.weights, narrow.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).random((1, 64, 128, 2)).astype("float32")
    assert np.isfinite(np.asarray(narrow(x))).all()
    with pytest.raises(ValueError, match="multiple of 64"):
        with_bins(model, 100)
    with pytest.raises(ValueError, match="at most the STFT's 129"):
        with_bins(model, 192)
    with pytest.raises(ValueError, match="exactly 9 frames"):
        with_bins(build_model("tiny"), 64)

    source = tmp_path / "m.keras"
    model.save(source)
    runner = CliRunner()
    result = runner.invoke(main, ["shrink", str(source), str(tmp_path / "n.keras"), "--bins", "128"])
    assert result.exit_code == 0, result.output
    assert settings(load_model(tmp_path / "n.keras")).bins == 128
    result = runner.invoke(main, ["shrink", str(source), str(tmp_path / "bad.keras"), "--bins", "100"])
    assert result.exit_code == 1 and "multiple of 64" in result.output
    assert not (tmp_path / "bad.keras").exists()
