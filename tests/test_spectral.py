"""keras_svs.spectral: STFT conventions, masks and grid conversions."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_svs import spectral
from keras_svs.spectral import StftConfig

PAPER = StftConfig(22050, 4096, 1024, 256)
RATE16K = StftConfig(16000, 1024, 1024, 256)
TINY = StftConfig(8000, 256, 256, 64)
ODD = StftConfig(16000, 512, 400, 160)  # hop does not divide the window
CONFIGS = {"paper": PAPER, "16k": RATE16K, "tiny": TINY, "odd": ODD}


def numpy_stft(x: np.ndarray, config: StftConfig) -> np.ndarray:
    """Oracle: the module's conventions written out in NumPy (complex128)."""
    n = config.win_length
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w /= w.sum()
    frames = config.num_frames(len(x))
    padded = np.zeros(config.num_samples(frames))
    padded[config.pad:config.pad + len(x)] = x
    out = np.empty((frames, config.bins), complex)
    for i in range(frames):
        out[i] = np.fft.rfft(padded[i * config.hop_length:i * config.hop_length + n] * w,
                             config.n_fft)
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("length", [1, 100, 255, 256, 1000, 22050])
def test_stft_istft_round_trip(name, length):
    config = CONFIGS[name]
    x = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    spectrum = spectral.stft(x, config)
    assert spectrum.dtype == tf.complex64
    assert spectrum.shape == (config.num_frames(length), config.bins)
    y = spectral.istft(spectrum, config, length).numpy()
    assert y.shape == (length,)
    error = np.linalg.norm(y - x) / np.linalg.norm(x)
    assert error < 1e-5


def test_stft_batched_channels_round_trip():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 5000)).astype(np.float32)
    spectrum = spectral.stft(x, TINY)
    assert spectrum.shape == (3, TINY.num_frames(5000), TINY.bins)
    y = spectral.istft(spectrum, TINY, 5000).numpy()
    assert np.linalg.norm(y - x) / np.linalg.norm(x) < 1e-5
    np.testing.assert_allclose(spectrum[1].numpy(), spectral.stft(x[1], TINY).numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("name", ["paper", "odd"])
def test_stft_matches_numpy_oracle(name):
    config = CONFIGS[name]
    x = np.random.default_rng(1).uniform(-1, 1, 3000).astype(np.float32)
    np.testing.assert_allclose(spectral.stft(x, config).numpy(), numpy_stft(x, config),
                               atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("length", [1, 63, 64, 65, 1000, 4097])
def test_num_frames_matches_stft(name, length):
    config = CONFIGS[name]
    spectrum = spectral.stft(np.zeros(length, np.float32), config)
    assert spectrum.shape[0] == config.num_frames(length)


def test_unpadded_stft_frames():
    x = np.zeros(TINY.num_samples(9), np.float32)
    assert spectral.stft(x, TINY, padded=False).shape == (9, TINY.bins)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_full_scale_sine_magnitude_is_at_most_one(name):
    config = CONFIGS[name]
    k = config.n_fft // 16  # a bin-centred frequency
    f = k * config.sample_rate / config.n_fft
    t = np.arange(config.sample_rate // 2) / config.sample_rate
    x = np.sin(2 * np.pi * f * t).astype(np.float32)
    mag = spectral.magnitude(spectral.stft(x, config)).numpy()
    assert mag.dtype == np.float32
    assert mag.max() <= 1.0
    middle = mag[mag.shape[0] // 2]
    assert np.argmax(middle) == k
    assert middle[k] == pytest.approx(0.5, abs=0.01)
    # white noise at full scale stays in [0, 1] too
    noise = np.random.default_rng(0).uniform(-1, 1, 20000).astype(np.float32)
    assert spectral.magnitude(spectral.stft(noise, config)).numpy().max() <= 1.0


def test_window_is_normalised_periodic_hann():
    w = spectral.window(TINY).numpy()
    assert w.shape == (256,)
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)
    np.testing.assert_allclose(w, hann / hann.sum(), atol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.02])
def test_ibm_matches_numpy(smoothing):
    rng = np.random.default_rng(2)
    v = rng.standard_normal((40, 129)) + 1j * rng.standard_normal((40, 129))
    a = rng.standard_normal((40, 129)) + 1j * rng.standard_normal((40, 129))
    v[0, :5] = a[0, :5]  # ties: not voice
    oracle = np.where(np.abs(v) > np.abs(a), 1.0 - smoothing, smoothing)
    mask = spectral.ibm(tf.constant(np.abs(v), tf.float32),
                        tf.constant(np.abs(a), tf.float32), smoothing).numpy()
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, oracle, atol=1e-7)
    assert set(np.unique(mask)) == {np.float32(1 - smoothing), np.float32(smoothing)}


def test_irm_range_and_silence():
    rng = np.random.default_rng(3)
    v = rng.uniform(0, 1, (10, 20)).astype(np.float32)
    a = rng.uniform(0, 1, (10, 20)).astype(np.float32)
    v[0, 0] = a[0, 0] = 0.0
    mask = spectral.irm(tf.constant(v), tf.constant(a)).numpy()
    assert mask.shape == v.shape
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[0, 0] == 0.5
    np.testing.assert_allclose(mask[1:], v[1:] ** 2 / (v[1:] ** 2 + a[1:] ** 2), rtol=1e-5)


def test_phase_sensitive_mask_values_and_numpy_twin():
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(6, 9)) + 1j * rng.normal(size=(6, 9))).astype(np.complex64)
    v = (rng.normal(size=(6, 9)) + 1j * rng.normal(size=(6, 9))).astype(np.complex64)
    v[0], v[1], v[2] = x[0], 0.5 * x[1], -x[2]  # all voice, half, opposite phase
    v[3] = 1j * x[3]  # in quadrature: no real share
    x[4, 0] = 0.0  # a silent bin
    mask = spectral.phase_sensitive_mask(tf.constant(v), tf.constant(x)).numpy()
    assert mask.dtype == np.float32 and mask.shape == x.shape
    np.testing.assert_allclose(mask[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(mask[1], 0.5, rtol=1e-5)
    np.testing.assert_array_equal(mask[2], 0.0)
    np.testing.assert_allclose(mask[3], 0.0, atol=1e-6)
    assert mask[4, 0] == 0.0
    expected = np.clip((v[5] * np.conj(x[5])).real / np.abs(x[5]) ** 2, 0, 1)
    np.testing.assert_allclose(mask[5], expected, rtol=1e-5)
    twin = spectral.phase_sensitive_mask_numpy(v, x)
    assert twin.dtype == np.float32
    np.testing.assert_allclose(twin, mask, rtol=1e-5, atol=1e-7)


def test_config_properties_and_validation():
    assert PAPER.bins == 2049 and PAPER.pad == 768
    assert PAPER.num_samples(9) == 1024 + 8 * 256
    np.testing.assert_allclose(PAPER.bin_frequencies()[[0, -1]], [0, 11025])
    np.testing.assert_allclose(TINY.frame_times(2), [(0 - 192 + 128) / 8000,
                                                    (64 - 192 + 128) / 8000])
    with pytest.raises(ValueError):
        StftConfig(16000, 512, 1024, 256)  # n_fft < window
    with pytest.raises(ValueError):
        StftConfig(16000, 1024, 1024, 0)


def test_at_rate():
    assert PAPER.at_rate(22050) is PAPER
    assert PAPER.at_rate(44100) == StftConfig(44100, 8192, 2048, 512)
    assert RATE16K.at_rate(8000) == StftConfig(8000, 512, 512, 128)
    c = TINY.at_rate(44100)
    assert c.sample_rate == 44100
    assert c.win_length == round(256 * 44100 / 8000)
    assert c.hop_length == round(64 * 44100 / 8000)
    assert c.n_fft == 1440  # 2 x 720 = 2^5 3^2 5 >= 256 * 5.5125 = 1411.2
    assert StftConfig(16000, 1024, 1024, 256).at_rate(44100) == StftConfig(
        44100, 2880, 2822, 706)
    assert StftConfig(16000, 1024, 1024, 256).at_rate(48000).n_fft == 3072
    # durations kept, frequency resolution at least as fine
    assert c.win_length / 44100 == pytest.approx(256 / 8000, rel=1e-3)
    assert 44100 / c.n_fft <= 8000 / 256


def test_fit_bins_crops_or_repeats_top_bin():
    mask = np.arange(12, dtype=np.float32).reshape(2, 6)
    grown = spectral.fit_bins(mask, 9)
    assert grown.shape == (2, 9)
    np.testing.assert_array_equal(grown[:, :6], mask)
    np.testing.assert_array_equal(grown[:, 6:], np.repeat(mask[:, -1:], 3, axis=1))
    np.testing.assert_array_equal(spectral.fit_bins(mask, 4), mask[:, :4])
    np.testing.assert_array_equal(spectral.fit_bins(mask, 6), mask)
    assert isinstance(grown, np.ndarray) and grown.dtype == np.float32
    tensor = spectral.fit_bins(tf.constant(mask), 9)  # a tensor stays a tensor (export)
    assert isinstance(tensor, tf.Tensor)
    np.testing.assert_array_equal(tensor.numpy(), grown)


def test_mask_to_grid_identity_on_same_grid():
    mask = np.random.default_rng(4).uniform(0, 1, (30, TINY.bins)).astype(np.float32)
    out = spectral.mask_to_grid(mask, TINY, TINY, 30)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, mask)


def test_mask_to_grid_extends_constant_mask_to_44k():
    target = TINY.at_rate(44100)
    frames = target.num_frames(44100)
    out = spectral.mask_to_grid(np.full((TINY.num_frames(8000), TINY.bins), 0.7, np.float32),
                                TINY, target, frames)
    assert out.shape == (frames, target.bins)
    np.testing.assert_allclose(out, 0.7, atol=1e-6)


def test_mask_to_grid_interpolates_frequency_and_holds_top_bin():
    target = TINY.at_rate(44100)
    freqs = TINY.bin_frequencies()
    mask = np.tile((freqs / freqs[-1]).astype(np.float32), (20, 1))  # 0 at DC, 1 at 4 kHz
    out = spectral.mask_to_grid(mask, TINY, target, 50)
    f_target = target.bin_frequencies()
    expected = np.clip(f_target / freqs[-1], 0, 1)
    np.testing.assert_allclose(out[10], expected, atol=1e-5)
    assert np.all(out[:, f_target > 4000] == pytest.approx(1.0))


def test_mask_to_grid_interpolates_time():
    target = StftConfig(8000, 256, 256, 32)  # half the hop: twice the frames
    mask = np.zeros((10, TINY.bins), np.float32)
    mask[5:] = 1.0
    out = spectral.mask_to_grid(mask, TINY, target, 20)
    times = target.frame_times(20)
    source_times = TINY.frame_times(10)
    expected = np.interp(times, source_times, (np.arange(10) >= 5).astype(float))
    np.testing.assert_allclose(out[:, 0], expected, atol=1e-6)


# -- the NumPy twins: window_numpy, stft_numpy, istft_numpy ---------------------------------
NUMPY_CONFIGS = {**CONFIGS, "odd_window": StftConfig(44100, 2048, 1411, 353)}


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


@pytest.mark.parametrize("name", sorted(NUMPY_CONFIGS))
def test_window_numpy_matches_tensorflow(name):
    config = NUMPY_CONFIGS[name]
    w = spectral.window_numpy(config)
    assert w.dtype == np.float32 and w.shape == (config.win_length,)
    np.testing.assert_allclose(w, spectral.window(config).numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", sorted(NUMPY_CONFIGS))
@pytest.mark.parametrize("padded", [True, False])
def test_stft_numpy_matches_tensorflow(name, padded):
    config = NUMPY_CONFIGS[name]
    length = 3 * config.win_length + config.hop_length // 2 + 7
    x = np.random.default_rng(5).uniform(-1, 1, length).astype(np.float32)
    got = spectral.stft_numpy(x, config, padded=padded)
    want = spectral.stft(x, config, padded=padded).numpy()
    assert got.dtype == np.complex64
    assert got.shape == want.shape
    if padded:
        assert got.shape == (config.num_frames(length), config.bins)
    else:
        assert got.shape == (1 + (length - config.win_length) // config.hop_length, config.bins)
    assert _relative(got, want) < 1e-5
    # frame by frame too, so that a misplaced (quiet) frame cannot hide in the global norm
    for frame_got, frame_want in zip(got, want):
        assert _relative(frame_got, frame_want) < 1e-5


@pytest.mark.parametrize("name", sorted(NUMPY_CONFIGS))
@pytest.mark.parametrize("length", [1, 100, 1411, 5000])
def test_istft_numpy_round_trip_and_matches_tensorflow(name, length):
    config = NUMPY_CONFIGS[name]
    x = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    spectrum = spectral.stft_numpy(x, config)
    assert spectrum.shape == (config.num_frames(length), config.bins)
    y = spectral.istft_numpy(spectrum, config, length)
    assert y.dtype == np.float32 and y.shape == (length,)
    assert _relative(y, x) < 1e-5
    y_tf = spectral.istft(tf.constant(spectrum), config, length).numpy()
    assert _relative(y, y_tf) < 1e-5


@pytest.mark.parametrize("name", sorted(NUMPY_CONFIGS))
def test_overlap_add_numpy_matches_tensorflow_inverse_stft(name):
    """The raw overlap-add that streaming carries across blocks: tf.signal.inverse_stft
    with its reconstruction window, frame for frame and sample for sample."""
    config = NUMPY_CONFIGS[name]
    rng = np.random.default_rng(7)
    spectrum = (rng.standard_normal((2, 9, config.bins))
                + 1j * rng.standard_normal((2, 9, config.bins))).astype(np.complex64)
    got = spectral.overlap_add_numpy(spectrum, config)
    window = tf.signal.inverse_stft_window_fn(
        config.hop_length, forward_window_fn=lambda _, dtype: spectral.window(config, dtype))
    want = tf.signal.inverse_stft(spectrum, config.win_length, config.hop_length,
                                  config.n_fft, window_fn=window).numpy()
    assert got.shape == want.shape == (2, 8 * config.hop_length + config.win_length)
    assert _relative(got, want) < 1e-5


@pytest.mark.parametrize("name", ["tiny", "odd", "odd_window"])
def test_stft_numpy_multichannel(name):
    config = NUMPY_CONFIGS[name]
    x = np.random.default_rng(6).uniform(-1, 1, (2, 4000)).astype(np.float32)
    x[1] *= 0.25  # the channels differ
    spectrum = spectral.stft_numpy(x, config)
    assert spectrum.shape == (2, config.num_frames(4000), config.bins)
    for c in range(2):
        np.testing.assert_allclose(spectrum[c], spectral.stft_numpy(x[c], config),
                                   rtol=0, atol=1e-6)
    assert _relative(spectrum, spectral.stft(x, config).numpy()) < 1e-5
    unpadded = spectral.stft_numpy(x, config, padded=False)
    assert unpadded.shape == (2, 1 + (4000 - config.win_length) // config.hop_length,
                              config.bins)
    y = spectral.istft_numpy(spectrum, config, 4000)
    assert y.shape == (2, 4000)
    for c in range(2):
        assert _relative(y[c], x[c]) < 1e-5
    # a (batch, channel) layout works the same
    stacked = spectral.stft_numpy(np.stack([x, x[::-1]]), config)
    assert stacked.shape == (2, 2, config.num_frames(4000), config.bins)
    np.testing.assert_array_equal(stacked[1, 0], spectrum[1])


def test_stft_numpy_shorter_than_a_window_unpadded_is_empty():
    x = np.zeros(TINY.win_length - 1, np.float32)
    assert spectral.stft_numpy(x, TINY, padded=False).shape == (0, TINY.bins)
    assert spectral.stft_numpy(x, TINY).shape == (TINY.num_frames(len(x)), TINY.bins)


@pytest.mark.parametrize("name", ["tiny", "odd_window"])
def test_numpy_transforms_in_chunks_match_tensorflow(monkeypatch, name):
    """Long signals are transformed a few frames at a time: chunk edges change nothing."""
    monkeypatch.setattr(spectral, "_CHUNK", 7)
    config = NUMPY_CONFIGS[name]
    x = np.random.default_rng(8).uniform(-1, 1, (2, 40 * config.hop_length + 3)).astype(
        np.float32)
    spectrum = spectral.stft_numpy(x, config, workers=2)
    assert spectrum.shape[-2] > 3 * 7
    assert _relative(spectrum, spectral.stft(x, config).numpy()) < 1e-5
    y = spectral.istft_numpy(spectrum, config, x.shape[-1], workers=2)
    assert _relative(y, x) < 1e-5
    assert _relative(y, spectral.istft(tf.constant(spectrum), config, x.shape[-1]).numpy()) \
        < 1e-5


def test_frame_span_position_and_times_of_a_stretch():
    x = np.random.default_rng(8).standard_normal(3000).astype(np.float32)
    whole = spectral.stft_numpy(x, ODD)
    first, last = ODD.frame_span(4, 9)
    padded = np.pad(x, (ODD.pad, ODD.pad + ODD.hop_length * 10))  # sample i at i + pad
    piece = spectral.stft_numpy(padded[first + ODD.pad:last + ODD.pad], ODD, padded=False)
    np.testing.assert_allclose(piece, whole[4:9], atol=1e-6)
    np.testing.assert_array_equal(ODD.frame_times(5, 4), ODD.frame_times(9)[4:])
    np.testing.assert_allclose(ODD.frame_position(ODD.frame_times(5, 4)), np.arange(4, 9),
                               atol=1e-9)


def test_mask_to_grid_of_a_stretch_equals_the_whole_ones():
    target = StftConfig(11025, 512, 353, 88)
    mask = np.random.default_rng(9).uniform(0, 1, (60, TINY.bins)).astype(np.float32)
    whole = spectral.mask_to_grid(mask, TINY, target, 80)
    # target frames 30-49 lie between source frames 29 and 50
    piece = spectral.mask_to_grid(mask[27:53], TINY, target, 20, source_start=27,
                                  target_start=30)
    np.testing.assert_allclose(piece, whole[30:50], rtol=0, atol=1e-6)
    shifted = spectral.mask_to_grid(mask[27:53], TINY, target, 20)  # without the offsets
    assert np.abs(shifted - whole[30:50]).max() > 0.1
