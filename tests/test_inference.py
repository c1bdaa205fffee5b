"""The folded inference form of a U-Net (keras_svs.models.inference) computes the same
probabilities as the trained model, without batch norm or transposed convolutions."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from keras_svs.models import build_model, get_preset
from keras_svs.models.inference import _subpixel_kernel, at_precision, inference_model


def _small_unet(filters=(4, 8, 16)) -> keras.Model:
    preset = dataclasses.replace(get_preset("unet"), bins=64,
                                 arch=dict(filters=filters, dropout=0.2))
    model = build_model(preset)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained-looking batch norms: folding them must matter
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    model.get_layer("spectrogram_input").set_statistics(rng.normal(-4, 1, 64),
                                                        rng.uniform(0.5, 2, 64))
    return model


@pytest.mark.parametrize("frames", [8, 64])
def test_inference_model_matches_the_model(frames):
    model = _small_unet()
    fast = inference_model(model)
    x = np.abs(np.random.default_rng(1).normal(0, 0.05, (2, frames, 64))).astype(np.float32)
    want = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(fast(x, training=False))
    assert got.shape == want.shape == (2, frames, 64, 2)
    assert np.abs(want[..., 0] - 0.5).max() > 0.05  # a non-trivial output
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_inference_model_has_no_batch_norm_or_transposed_convolution():
    fast = inference_model(_small_unet())
    kinds = {type(layer).__name__ for layer in fast.layers}
    assert "BatchNormalization" not in kinds and "Conv2DTranspose" not in kinds
    assert "Dropout" not in kinds


def test_models_without_a_unet_are_returned_unchanged():
    paper = build_model("tiny")
    assert inference_model(paper) is paper
    preset = dataclasses.replace(get_preset("unet"), bins=64,
                                 arch=dict(filters=(4, 8), dropout=0.2))
    autoencoder = build_model(preset, shortcuts=False)  # zeroed shortcuts: not folded
    assert inference_model(autoencoder) is autoencoder


@pytest.mark.parametrize("size", [3, 4])
def test_subpixel_kernel_equals_a_transposed_convolution(size):
    rng = np.random.default_rng(size)
    x = rng.normal(size=(1, size, size + 1, 3)).astype(np.float32)
    transposed = keras.layers.Conv2DTranspose(2, 5, strides=2, padding="same", use_bias=False)
    want = keras.ops.convert_to_numpy(transposed(x))
    kernel = transposed.get_weights()[0]
    conv = keras.ops.convert_to_numpy(keras.ops.conv(x, _subpixel_kernel(kernel), padding="same"))
    got = conv.reshape(1, size, size + 1, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(
        want.shape)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="5 x 5"):
        _subpixel_kernel(kernel[:3, :3])


def test_bfloat16_precision_rounds_the_network_but_not_its_ends():
    fast = inference_model(_small_unet())
    assert at_precision(fast, "float32") is fast
    half = at_precision(fast, "bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in half.layers}
    assert policies["spectrogram_input"] == policies["probabilities"] == "float32"
    assert policies["enc0_conv"] == policies["dec0_conv"] == "bfloat16"
    x = np.abs(np.random.default_rng(1).normal(0, 0.05, (2, 64, 64))).astype(np.float32)
    want = keras.ops.convert_to_numpy(fast(x, training=False))
    got = keras.ops.convert_to_numpy(half(x, training=False))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-6)
    error = np.abs(got - want)
    assert 0 < error.max() < 0.05 and error.mean() < 0.01  # rounded, yet close


def test_bfloat16_precision_of_a_patch_model():
    paper = build_model("tiny")
    half = at_precision(paper, "bfloat16")
    assert half.get_layer("probabilities").dtype_policy.name == "float32"
    x = np.random.default_rng(2).random((3, 9, 129)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(half(x)),
                               keras.ops.convert_to_numpy(paper(x)), atol=0.05)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="float16"):
        at_precision(build_model("tiny"), "float16")
