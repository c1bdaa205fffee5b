"""keras_svs.monitor: backend-agnostic voice probability, separation and validation GNSDR."""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from conftest import TINY_RATE, synth_mixture, synth_pair
from keras_svs import monitor, spectral
from keras_svs.models import build_model, get_preset, settings, stft_config
from keras_svs.separation import Separator
from test_pipeline import decoded_from

MODES = ("average", "centre")


@pytest.fixture(scope="module")
def small_unet():
    """A fully convolutional model: the ``unet`` preset with 2 channels per level."""
    keras.utils.set_random_seed(2)
    preset = dataclasses.replace(get_preset("unet"), arch=dict(filters=(2,) * 6, dropout=0.2))
    return build_model(preset)


def constant_model(logit: float) -> keras.Model:
    """A tiny patch model whose voice probability is the same for every bin:
    ``sigmoid(logit)`` (exactly 1.0 or 0.0 in float32 for ``|logit| = 100``)."""
    model = build_model("tiny")
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.full_like(bias, logit)])
    return model


def magnitude_of(model, seconds=0.6, seed=0) -> np.ndarray:
    config = stft_config(model)
    x = synth_mixture(config.sample_rate, seconds, seed=seed)[0]
    return np.abs(spectral.stft_numpy(x, config))


def synth_clips(seconds=(0.5, 0.35)) -> list[tuple[np.ndarray, np.ndarray]]:
    return [synth_pair(TINY_RATE, s, i) for i, s in enumerate(seconds)]


# -- voice_probability ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_patch_model_probability_shape_range_and_separator_agreement(tiny_model, mode):
    mag = magnitude_of(tiny_model)
    p = monitor.voice_probability(tiny_model, mag, mode)
    assert p.shape == mag.shape == (mag.shape[0], 129)
    assert p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert np.std(p) > 0  # an untrained model still varies: the comparison means something
    # the TensorFlow separator (tf.signal framing, overlap-add) gives the same numbers
    np.testing.assert_allclose(p, Separator(tiny_model, mode=mode).voice_probability(mag),
                               rtol=0, atol=2e-6)
    # blocks of patches are an implementation detail
    np.testing.assert_allclose(monitor.voice_probability(tiny_model, mag, mode, block=4), p,
                               rtol=0, atol=1e-6)


def test_centre_mode_is_the_centre_frame_of_a_patch_around_each_frame(tiny_model):
    frames = settings(tiny_model).frames
    half = frames // 2
    mag = magnitude_of(tiny_model, seconds=0.25)  # a few dozen frames
    total = mag.shape[0]
    padded = np.pad(mag, ((half, half), (0, 0)))
    patches = np.stack([padded[t:t + frames] for t in range(total)])
    direct = keras.ops.convert_to_numpy(tiny_model(patches, training=False))[:, half, :, 0]
    np.testing.assert_allclose(monitor.voice_probability(tiny_model, mag, "centre"), direct,
                               rtol=0, atol=1e-6)


def test_average_mode_averages_every_patch_covering_a_frame(tiny_model):
    frames = settings(tiny_model).frames
    hop = math.ceil(frames / 3)
    mag = magnitude_of(tiny_model, seconds=0.25)
    total = mag.shape[0]
    edge = frames - hop
    padded = np.pad(mag, ((edge, total + frames), (0, 0)))
    summed = np.zeros((len(padded), mag.shape[1]))
    count = np.zeros(len(padded))
    for s in range(0, edge + total, hop):  # every patch that touches a real frame
        voice = keras.ops.convert_to_numpy(tiny_model(padded[None, s:s + frames]))[0, ..., 0]
        summed[s:s + frames] += voice
        count[s:s + frames] += 1
    expected = (summed / np.maximum(count, 1)[:, None])[edge:edge + total]
    np.testing.assert_allclose(monitor.voice_probability(tiny_model, mag, "average"),
                               expected, rtol=0, atol=1e-6)


def test_short_input_shorter_than_a_patch(tiny_model):
    mag = magnitude_of(tiny_model)[:3]
    for mode in MODES:
        p = monitor.voice_probability(tiny_model, mag, mode)
        assert p.shape == (3, 129)
        np.testing.assert_allclose(p, Separator(tiny_model, mode=mode).voice_probability(mag),
                                   rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_fully_convolutional_probability(small_unet, mode):
    cfg = settings(small_unet)
    assert cfg.frames is None and cfg.time_multiple == 64
    mag = magnitude_of(small_unet, seconds=1.1)  # 16 kHz: 72 frames, not a multiple of 64
    assert mag.shape[1] == 513 and mag.shape[0] % 64
    p = monitor.voice_probability(small_unet, mag, mode)
    assert p.shape == (mag.shape[0], 512)  # the model's bins; the top STFT bin is dropped
    assert p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    np.testing.assert_allclose(p, Separator(small_unet).voice_probability(mag),
                               rtol=0, atol=2e-6)


# -- separate_voice ---------------------------------------------------------------------------
def _threshold_clear_of(probability: np.ndarray, near: float = 0.5) -> float:
    """A threshold near ``near`` that no probability is close to: the middle of the widest
    gap between the probabilities within 0.1 of ``near``. The two paths compute the
    probabilities in different batch shapes, so they may differ in the last float32 bits
    (oneDNN's kernels do), and a bin sitting on the threshold would flip its mask."""
    values = np.sort(probability[np.abs(probability - near) < 0.1])
    edges = np.concatenate([[near - 0.1], values, [near + 0.1]])
    k = int(np.argmax(np.diff(edges)))
    assert edges[k + 1] - edges[k] > 1e-4
    return float(edges[k] + edges[k + 1]) / 2


@pytest.mark.parametrize("mask", ["soft", "binary", "thresholded"])
def test_separate_voice_matches_separator(tiny_model, mask):
    x = synth_mixture(TINY_RATE, 0.7, seed=1)[0]
    x = x[:len(x) - 13]  # not a whole number of hops
    magnitude = np.abs(spectral.stft_numpy(x, stft_config(tiny_model)))
    threshold = _threshold_clear_of(monitor.voice_probability(tiny_model, magnitude))
    vocals = monitor.separate_voice(tiny_model, x, mask, threshold)
    assert vocals.shape == x.shape and vocals.dtype == np.float32
    want = Separator(tiny_model, mask=mask, threshold=threshold).separate(x, TINY_RATE)["vocals"]
    np.testing.assert_allclose(vocals, want, rtol=0, atol=1e-5)


def test_separate_voice_of_fully_convolutional_model(small_unet):
    x = synth_mixture(16000, 0.5, seed=2)[0]
    vocals = monitor.separate_voice(small_unet, x)  # its default mask: soft
    assert vocals.shape == x.shape and vocals.dtype == np.float32
    np.testing.assert_allclose(vocals, Separator(small_unet).separate(x, 16000)["vocals"],
                               rtol=0, atol=1e-5)


def test_separate_voice_with_all_voice_and_no_voice_masks():
    x = synth_mixture(TINY_RATE, 0.5, seed=3)[0]
    np.testing.assert_allclose(monitor.separate_voice(constant_model(100.0), x, "soft"), x,
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(monitor.separate_voice(constant_model(-100.0), x, "soft"),
                                  np.zeros_like(x))


def test_separate_voice_unknown_mask(tiny_model):
    with pytest.raises(ValueError, match="mask"):
        monitor.separate_voice(tiny_model, np.zeros(2000, np.float32), "hard")


# -- gnsdr ------------------------------------------------------------------------------------
def test_gnsdr_scores_and_counts_clips(tiny_model):
    clips = synth_clips()
    silent_voice = (np.zeros(TINY_RATE // 4, np.float32), clips[0][1][:TINY_RATE // 4])
    silent_accompaniment = (clips[1][0], np.zeros_like(clips[1][1]))
    decoded = decoded_from([silent_voice, clips[0], silent_accompaniment, clips[1]])
    scores = monitor.gnsdr(tiny_model, decoded)
    assert set(scores) == {"voice_gnsdr", "voice_gsir", "voice_gsar", "accompaniment_gnsdr",
                           "clips"}
    assert scores["clips"] == 2  # the clips with a silent source are skipped
    for key in ("voice_gnsdr", "voice_gsir", "voice_gsar", "accompaniment_gnsdr"):
        assert np.isfinite(scores[key]), (key, scores)
    # ``clips`` counts the first clips of the data, skipped ones included
    assert monitor.gnsdr(tiny_model, decoded, clips=1) == {}
    # length-weighted mean of the clips' own scores
    singles = [monitor.gnsdr(tiny_model, decoded_from([c])) for c in clips]
    weights = np.array([len(c[0]) for c in clips], float)
    weights /= weights.sum()
    for key in ("voice_gnsdr", "accompaniment_gnsdr", "voice_gsir"):
        assert scores[key] == pytest.approx(sum(w * s[key] for w, s in zip(weights, singles)),
                                            abs=1e-6)


def test_gnsdr_of_all_voice_and_no_voice_estimates():
    """Estimate = mixture gives NSDR 0: all voice for the voice, no voice for the
    accompaniment (exactly: x - 0 is x)."""
    decoded = decoded_from(synth_clips((0.4,)))
    all_voice = monitor.gnsdr(constant_model(100.0), decoded, mask="soft")
    assert all_voice["voice_gnsdr"] == pytest.approx(0.0, abs=1e-3)
    no_voice = monitor.gnsdr(constant_model(-100.0), decoded, mask="soft")
    assert no_voice["accompaniment_gnsdr"] == 0.0
    # faint noise as the voice: far worse than the mixture
    assert no_voice["voice_gnsdr"] < all_voice["voice_gnsdr"] - 5
    assert all_voice["clips"] == no_voice["clips"] == 1


# -- ValidationGnsdr --------------------------------------------------------------------------
def test_validation_gnsdr_callback(tiny_model):
    decoded = decoded_from(synth_clips((0.4, 0.3)))
    callback = monitor.ValidationGnsdr(tiny_model, decoded, clips=1, every=2)
    callback.set_model(keras.Sequential([keras.Input((1,))]))  # the fitted model (unused)
    callback.on_epoch_end(0, None)  # no logs: nothing to do, no error
    logs = {"loss": 0.5}
    callback.on_epoch_end(0, logs)  # not a GNSDR epoch: NaN keeps the CSV columns fixed
    assert set(logs) == {"loss", "val_gnsdr", "gnsdr_s"}
    assert math.isnan(logs["val_gnsdr"]) and math.isnan(logs["gnsdr_s"])
    logs = {"loss": 0.5}
    callback.on_epoch_end(1, logs)
    expected = monitor.gnsdr(tiny_model, decoded, clips=1)["voice_gnsdr"]
    assert logs["val_gnsdr"] == pytest.approx(expected, abs=1e-9)
    assert logs["gnsdr_s"] >= 0.0
    # every=0 counts as 1; nothing to score (a silent voice) gives NaN, not an error
    silent = decoded_from([(np.zeros(2000, np.float32), decoded.track(0)[1][:2000])])
    every = monitor.ValidationGnsdr(tiny_model, silent, clips=1, every=0)
    
    logs = {}
    every.on_epoch_end(0, logs)
    assert math.isnan(logs["val_gnsdr"]) and logs["gnsdr_s"] >= 0.0


def test_unknown_mode_is_refused():
    import keras_svs.monitor as monitor
    from keras_svs.models import build_model

    model = build_model("tiny")
    with pytest.raises(ValueError, match="mode"):
        monitor.voice_probability(model, np.zeros((20, 129), np.float32), mode="center")
