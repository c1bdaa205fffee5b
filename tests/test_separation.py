"""keras_svs.separation: Separator, masks, block-wise inference, files."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import TINY_RATE, synth_mixture
from keras_svs import audio, spectral
from keras_svs.export import patch_probabilities, whole_probability
from keras_svs.models import build_model, get_preset
from keras_svs.separation import (MASKS, Separator, average_patches, make_mask, mask_channels,
                                  model_channels, patch_weights)


@pytest.fixture(scope="module")
def separator(tiny_model):
    return Separator(tiny_model, mask="soft")


@pytest.mark.parametrize("channels,rate", [(None, 8000), (None, 44100), (2, 16000),
                                           (2, 48000), (6, 8000), (6, 44100)])
def test_separate_keeps_shape_and_sums_to_input(separator, rate, channels):
    seconds = 1.0 if rate < 40000 else 0.5
    x = synth_mixture(rate, seconds, channels or 1, seed=rate % 7)
    if channels is None:
        x = x[0]  # (samples,)
    stems = separator.separate(x, rate)
    assert set(stems) == {"vocals", "accompaniment"}
    for stem in stems.values():
        assert stem.shape == x.shape
        assert stem.dtype == np.float32
        assert np.all(np.isfinite(stem))
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], x, atol=1e-5)
    # an untrained soft mask sits near 0.5: the vocals are a real, partial share
    ratio = np.linalg.norm(stems["vocals"]) / np.linalg.norm(x)
    assert 0.1 < ratio < 0.9


@pytest.fixture(scope="module")
def binary_separator(tiny_model):
    return Separator(tiny_model, mask="binary", threshold=0.5)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_all_pass_and_all_stop_masks(binary_separator, monkeypatch, rate):
    """A mask of ones gives back the input (exact STFT inversion at the input's own rate);
    a mask of zeros gives silence."""
    x = synth_mixture(rate, 0.5, 2, seed=1)
    monkeypatch.setattr(binary_separator, "threshold", -1.0)  # every probability is above
    everything = binary_separator.separate(x, rate)
    np.testing.assert_allclose(everything["vocals"], x, atol=1e-5)
    np.testing.assert_allclose(everything["accompaniment"], 0.0, atol=1e-5)
    monkeypatch.setattr(binary_separator, "threshold", 1.0)  # none is above
    nothing = binary_separator.separate(x, rate)
    np.testing.assert_allclose(nothing["vocals"], 0.0, atol=1e-7)
    np.testing.assert_allclose(nothing["accompaniment"], x, atol=1e-7)


def test_mask_follows_the_model_in_time(binary_separator, monkeypatch):
    """A probability that is 1 in the first half of the song and 0 in the second puts the
    first half in the vocals and the second half in the accompaniment, at any rate."""
    separator = binary_separator
    total = {}

    def fake_probability(magnitude):
        p = np.zeros((magnitude.shape[0], 129), np.float32)
        p[: magnitude.shape[0] // 2] = 1.0
        total["frames"] = magnitude.shape[0]
        return p

    monkeypatch.setattr(separator, "voice_probability", fake_probability)
    rate = 44100
    x = synth_mixture(rate, 1.0, 1, seed=2)
    stems = separator.separate(x, rate)
    assert total["frames"] == spectral.StftConfig(8000, 256, 256, 64).num_frames(8000)
    quarter = rate // 4
    np.testing.assert_allclose(stems["vocals"][:, :quarter], x[:, :quarter], atol=1e-5)
    np.testing.assert_allclose(stems["vocals"][:, -quarter:], 0.0, atol=1e-5)


def test_voice_probability_range_and_shape(separator):
    x = synth_mixture(TINY_RATE, 1.0, 1)[0]
    magnitude = spectral.magnitude(spectral.stft(x, separator.config)).numpy()
    p = separator.voice_probability(magnitude)
    assert p.shape == (magnitude.shape[0], 129)
    assert p.dtype == np.float32
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert separator.voice_mask(magnitude).shape == magnitude.shape


@pytest.mark.parametrize("mode", ["average", "centre"])
def test_blockwise_equals_one_piece(tiny_model, mode):
    separator = Separator(tiny_model, mode=mode)
    frames = separator.block + separator.block // 2 + 5  # more than one block
    magnitude = np.random.default_rng(0).uniform(0, 0.5, (frames, 129)).astype(np.float32)
    blocks = separator.voice_probability(magnitude)
    whole = whole_probability(tiny_model, tf.constant(magnitude), mode).numpy()
    assert blocks.shape == whole.shape == (frames, 129)
    np.testing.assert_allclose(blocks, whole, atol=1e-5)
    short = magnitude[:40]
    np.testing.assert_allclose(separator.voice_probability(short),
                               whole_probability(tiny_model, tf.constant(short), mode).numpy(),
                               atol=1e-5)


def test_centre_mode_uses_each_patchs_centre_frame(tiny_model):
    separator = Separator(tiny_model, mode="centre")
    magnitude = np.random.default_rng(1).uniform(0, 0.5, (30, 129)).astype(np.float32)
    p = separator.voice_probability(magnitude)
    padded = np.pad(magnitude, ((4, 4), (0, 0)))
    for t in (0, 13, 29):
        patch = padded[t:t + 9][None]  # frame t sits in the middle
        expected = np.asarray(tiny_model(patch, training=False))[0, 4, :, 0]
        np.testing.assert_allclose(p[t], expected, atol=1e-5)


def test_average_mode_averages_overlapping_patches(tiny_model):
    separator = Separator(tiny_model, mode="average")
    assert separator.hop == 3
    magnitude = np.random.default_rng(2).uniform(0, 0.5, (30, 129)).astype(np.float32)
    p = separator.voice_probability(magnitude)
    padded = np.pad(magnitude, ((6, 30), (0, 0)))  # patches start at -6, -3, 0, 3, ...
    t = 10  # covered by the patches starting at 3, 6 and 9 (padded 9, 12, 15)
    preds = [np.asarray(tiny_model(padded[s:s + 9][None], training=False))[0, t + 6 - s, :, 0]
             for s in (9, 12, 15)]
    np.testing.assert_allclose(p[t], np.mean(preds, axis=0), atol=1e-5)


def test_patch_weights():
    assert patch_weights(9, "centre")[0] == 1
    np.testing.assert_array_equal(patch_weights(9, "centre")[1], np.eye(9)[4])
    hop, w = patch_weights(9, "average")
    assert hop == 3 and np.all(w == 1)
    with pytest.raises(ValueError, match="mode"):
        patch_weights(9, "middle")


def test_patch_probabilities_with_a_constant_model():
    """Overlap-add normalisation: a model that always says p gives p everywhere."""
    def model(patches, training=False):
        return tf.stack([tf.fill(tf.shape(patches), 0.25), tf.fill(tf.shape(patches), 0.75)],
                        -1)

    out = patch_probabilities(model, tf.zeros([30, 7]), 3, tf.ones([9])).numpy()
    assert out.shape == ((30 - 9) // 3 * 3 + 9, 7)
    np.testing.assert_allclose(out, 0.25, atol=1e-7)


def test_average_patches_weighs_each_position_and_leaves_gaps_at_zero():
    voice = np.stack([np.full((4, 2), v, np.float32) for v in (0.2, 0.6, 1.0)])  # 3 patches
    out = average_patches(voice, 2, np.ones(4, np.float32))
    assert out.shape == (2 * 2 + 4, 2)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.2, 0.4, 0.4, 0.8, 0.8, 1.0, 1.0], atol=1e-7)
    centre = average_patches(voice, 5, np.float32([0, 1, 0, 0]))  # apart: frames between
    np.testing.assert_allclose(centre[:, 1], [0, 0.2, 0, 0, 0, 0, 0.6, 0, 0, 0, 0, 1.0, 0, 0],
                               atol=1e-7)


@pytest.mark.parametrize("have,seen,masks", [(1, [0, 0], [2]), (2, [0, 1], [0, 1]),
                                             (4, [0, 1], [0, 1, 2, 2])])
def test_channels_a_stereo_model_sees_and_the_masks_they_take(have, seen, masks):
    np.testing.assert_array_equal(model_channels(have, 2), seen)
    np.testing.assert_array_equal(mask_channels(have, 2), masks)  # 2: the mean mask
    assert list(model_channels(have, 1)) == [0] and 0 not in mask_channels(have, 1)[1:]


def test_separate_with_mask_gives_the_mask_on_the_models_grid(separator):
    x = synth_mixture(16000, 0.6, 2, seed=4)
    stems, mask = separator.separate_with_mask(x, 16000)
    for stem, data in separator.separate(x, 16000).items():
        np.testing.assert_array_equal(stems[stem], data)
    mono = audio.resample(x.mean(axis=0), 16000, separator.config.sample_rate)
    expected = separator.voice_mask(np.abs(spectral.stft_numpy(mono, separator.config)))
    np.testing.assert_array_equal(mask, expected)
    assert not hasattr(separator, "last_mask")


def test_a_model_as_it_is_follows_its_weights(tiny_model):
    """inference_form=False computes with the model itself: new weights, new output (what
    validation during training needs)."""
    model = build_model("tiny")
    model.set_weights(tiny_model.get_weights())
    live = Separator(model, mask="soft", inference_form=False)
    assert live.model is model
    magnitude = np.random.default_rng(3).uniform(0, 0.5, (20, 129)).astype(np.float32)
    before = live.voice_probability(magnitude)
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.full_like(bias, 100.0)])
    # on an AVX2-only CPU TensorFlow's sigmoid(100) is 1 - 2**-24, not 1.0
    np.testing.assert_allclose(live.voice_probability(magnitude), 1.0, rtol=0, atol=1e-6)
    assert np.all(before < 0.999)


def test_probability_blocks_start_on_the_models_grid(separator):
    with pytest.raises(ValueError, match="multiple of 3"):
        next(separator.probability_blocks(lambda a, b: None, 10, 4, 6))
    with pytest.raises(ValueError, match="mode must be one of"):
        Separator(separator.model, mode="middle")


@pytest.mark.parametrize("as_tensor", [False, True])
def test_make_mask(as_tensor):
    p = np.array([0.1, 0.35, 0.5, 0.9], np.float32)
    value = tf.constant(p) if as_tensor else p
    out = {kind: np.asarray(make_mask(value, kind, 0.4)) for kind in MASKS}
    np.testing.assert_array_equal(out["soft"], p)
    np.testing.assert_array_equal(out["binary"], [0, 0, 1, 1])
    np.testing.assert_array_equal(out["thresholded"], np.float32([0, 0, 0.5, 0.9]))
    assert out["binary"].dtype == np.float32
    with pytest.raises(ValueError, match="mask"):
        make_mask(value, "hard", 0.5)


def test_separator_defaults_come_from_the_model(tiny_model):
    separator = Separator(tiny_model)
    assert separator.mask == "binary"  # the tiny preset's
    assert separator.threshold == 0.5
    assert Separator(tiny_model, threshold=0.2).threshold == 0.2
    with pytest.raises(ValueError, match="mask"):
        Separator(tiny_model, mask="hard")
    with pytest.raises(ValueError, match="mode"):
        Separator(tiny_model, mode="middle")


def test_separator_loads_a_path(tiny_model_path):
    separator = Separator(tiny_model_path)
    assert separator.settings.preset == "tiny"
    assert separator.config == spectral.StftConfig(8000, 256, 256, 64)


def test_narrow_band_model_masks_the_full_band():
    """A model that sees fewer bins than its STFT has: the top bin's mask is repeated."""
    preset = dataclasses.replace(get_preset("tiny"), bins=100)
    separator = Separator(build_model(preset), mask="soft")
    x = synth_mixture(TINY_RATE, 0.5, 1)[0]
    magnitude = spectral.magnitude(spectral.stft(x, separator.config)).numpy()
    assert separator.voice_probability(magnitude).shape == (magnitude.shape[0], 100)
    mask = separator.voice_mask(magnitude)
    assert mask.shape == magnitude.shape
    np.testing.assert_array_equal(mask[:, 100:], np.repeat(mask[:, 99:100], 29, axis=1))
    stems = separator.separate(x, TINY_RATE)
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], x, atol=1e-5)


@pytest.mark.parametrize("rate,channels,subtype", [(44100, 2, "PCM_16"), (16000, 1, "PCM_24"),
                                                   (48000, 6, "FLOAT")])
def test_separate_file(separator, tmp_path, rate, channels, subtype):
    x = synth_mixture(rate, 0.6, channels)
    path = tmp_path / "in" / "my song.wav"
    path.parent.mkdir()
    sf.write(path, x.T, rate, subtype=subtype)
    written = separator.separate_file(path, tmp_path / "out")
    assert written == {s: tmp_path / "out" / "my song" / f"{s}.wav"
                       for s in ("vocals", "accompaniment")}
    assert sorted(p.name for p in (tmp_path / "out" / "my song").iterdir()) == [
        "accompaniment.wav", "vocals.wav"]
    total = 0
    for stem_path in written.values():
        assert audio.info(stem_path) == (rate, channels, x.shape[1])
        total = total + audio.read(stem_path)[0]
    np.testing.assert_allclose(total, audio.read(path)[0], atol=3 / 2 ** 15)


def test_separate_file_codec_depth_and_stems(separator, tmp_path):
    x = synth_mixture(16000, 0.5, 2)
    path = tmp_path / "a.flac"
    sf.write(path, x.T, 16000)
    written = separator.separate_file(path, tmp_path / "out", codec="flac", bit_depth=24,
                                      stems=("vocals",))
    assert list(written) == ["vocals"]
    assert sf.info(str(written["vocals"])).subtype == "PCM_24"
    assert not (tmp_path / "out" / "a" / "accompaniment.flac").exists()


def test_separate_file_missing_input_writes_nothing(separator, tmp_path):
    with pytest.raises(audio.AudioError, match="nothing.wav"):
        separator.separate_file(tmp_path / "nothing.wav", tmp_path / "out")
    assert not (tmp_path / "out").exists()
