"""keras_svs.pipeline: decoding, the HDF5 cache, input statistics, the tf.data stream."""
from __future__ import annotations

import dataclasses
import itertools

import h5py
import numpy as np
import pytest

from conftest import TINY_RATE, synth_pair, write_pairs
from keras_svs import batches, pipeline
from keras_svs.datasets import DatasetError, discover
from keras_svs.examples import PatchSampler, patch_samples
from keras_svs.models import get_preset

TINY = get_preset("tiny")
SEG = patch_samples(TINY)  # 256 + 8 * 64 = 768 samples


def decoded_from(pairs, rate=TINY_RATE, names=None) -> pipeline.DecodedAudio:
    """A DecodedAudio from ``[(voice, accompaniment), ...]`` 1-D arrays."""
    lengths = np.array([len(v) for v, _ in pairs], np.int64)
    return pipeline.DecodedAudio(
        names or [f"t{i}" for i in range(len(pairs))],
        np.concatenate([v for v, _ in pairs]).astype(np.float32),
        np.concatenate([a for _, a in pairs]).astype(np.float32),
        np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), lengths, rate)


def synth_decoded(lengths, offset=2000) -> pipeline.DecodedAudio:
    pairs = []
    for i, n in enumerate(lengths):
        v, a = synth_pair(TINY_RATE, (offset + n) / TINY_RATE + 0.01, i)
        pairs.append((v[offset:offset + n], a[offset:offset + n]))
    return decoded_from(pairs)


def oracle_frames(x: np.ndarray, config=TINY.stft, bins=TINY.bins) -> np.ndarray:
    """Unpadded complex STFT of a segment in NumPy: ``(frames, bins)``."""
    n, hop = config.win_length, config.hop_length
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w /= w.sum()
    frames = 1 + (len(x) - n) // hop
    return np.stack([np.fft.rfft(x[i * hop:i * hop + n] * w, config.n_fft)[:bins]
                     for i in range(frames)])


def oracle_example(v, a, stage="finetune", smoothing=TINY.label_smoothing):
    sv, sa = oracle_frames(v), oracle_frames(a)
    mixture = np.abs(sv + sa)
    voice_wins = np.abs(sv) > np.abs(sa)
    ties = np.abs(np.abs(sv) - np.abs(sa)) < 1e-5  # float32 may decide these either way
    if stage == "pretrain":
        vocal = voice_wins * mixture
        return vocal, vocal, ties
    target = np.where(voice_wins, np.float32(1 - smoothing), np.float32(smoothing))
    return mixture, target.astype(np.float32), ties


def first_batch(ds):
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def match(example_input, candidates):
    """Index of the candidate whose input equals ``example_input`` (else None)."""
    for i, (x, _, _) in enumerate(candidates):
        if np.allclose(example_input, x, atol=2e-5, rtol=0):
            return i
    return None


# -- decoding and the HDF5 cache ---------------------------------------------------------
def test_decode_resamples_to_mono_at_the_preset_rate(tmp_path):
    root = write_pairs(tmp_path / "d", ["b", "a"], rate=16000, seconds=0.5)
    decoded = pipeline.decode(discover(root), TINY_RATE, jobs=2)
    assert decoded.names == ["a", "b"]
    assert decoded.sample_rate == TINY_RATE
    np.testing.assert_array_equal(decoded.lengths, [4000, 4000])
    np.testing.assert_array_equal(decoded.starts, [0, 4000])
    assert decoded.voice.shape == decoded.accompaniment.shape == (8000,)
    assert decoded.voice.dtype == np.float32
    assert decoded.seconds == pytest.approx(1.0)
    v, a = decoded.track(1)  # "b" was written first: seed 0
    v0, a0 = synth_pair(16000, 0.5, 0)
    # compare at the source rate's low band: energy ratio of the two sources is kept
    assert np.sqrt(np.mean(v ** 2)) == pytest.approx(np.sqrt(np.mean(v0 ** 2)), rel=0.05)
    assert np.sqrt(np.mean(a ** 2)) == pytest.approx(np.sqrt(np.mean(a0 ** 2)), rel=0.05)
    with pytest.raises(DatasetError):
        pipeline.decode([], TINY_RATE)


def test_hdf5_round_trip_and_subset(tmp_path):
    decoded = synth_decoded([1000, 1500, 800])
    decoded.names = ["alpha", "beta", "gamma"]
    path = pipeline.save_hdf5(decoded, tmp_path / "cache.h5", TINY.stft)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["cache.h5"]
    back = pipeline.load_hdf5(path)
    assert back.names == decoded.names
    assert back.sample_rate == TINY_RATE
    for key in ("voice", "accompaniment", "starts", "lengths"):
        np.testing.assert_array_equal(getattr(back, key), getattr(decoded, key))
    subset = pipeline.load_hdf5(path, ["gamma", "alpha"])
    assert subset.names == ["gamma", "alpha"]
    np.testing.assert_array_equal(subset.lengths, [800, 1000])
    np.testing.assert_array_equal(subset.starts, [0, 800])
    for name in ("gamma", "alpha"):
        i, j = subset.names.index(name), decoded.names.index(name)
        for got, want in zip(subset.track(i), decoded.track(j)):
            np.testing.assert_array_equal(got, want)
    with h5py.File(path) as f:
        assert f["spectra/beta/magnitude"].shape == (TINY.stft.num_frames(1500),
                                                     TINY.stft.bins)
        assert set(np.unique(f["spectra/beta/ibm"][()])) <= {0, 1}
    with pytest.raises(DatasetError, match="delta"):
        pipeline.load_hdf5(path, ["alpha", "delta"])


def test_input_statistics_shapes_and_values():
    decoded = synth_decoded([3000, 2000])
    mean, std = pipeline.input_statistics(decoded, TINY)
    assert mean.shape == std.shape == (TINY.bins,)
    assert mean.dtype == std.dtype == np.float32
    from keras_svs import spectral

    frames = [spectral.magnitude(spectral.stft(v + a, TINY.stft)).numpy()
              for v, a in (decoded.track(0), decoded.track(1))]
    everything = np.concatenate(frames)
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(std, everything.std(0), rtol=1e-3, atol=1e-6)


def test_input_statistics_of_log_preset():
    unet = get_preset("unet")
    v, a = synth_pair(16000, 1.0, 0)
    decoded = decoded_from([(v, a)], rate=16000)
    mean, std = pipeline.input_statistics(decoded, unet)
    assert mean.shape == std.shape == (unet.bins,)
    assert np.all(mean < 0)  # log of magnitudes in [0, 1]
    assert np.all(std >= 0) and np.all(np.isfinite(std))


def test_steps_per_epoch():
    decoded = synth_decoded([576 * 40])
    assert pipeline.steps_per_epoch(decoded, TINY, 16) == 2
    assert pipeline.steps_per_epoch(decoded, TINY, 64) == 1


# -- the tf.data training stream -------------------------------------------------------------
def stereo_decoded(lengths) -> pipeline.DecodedAudio:
    """Two-channel clips: each channel a different synthetic pair."""
    left, right = synth_decoded(lengths), synth_decoded(lengths, offset=3000)
    return pipeline.DecodedAudio(left.names, np.stack([left.voice, right.voice]),
                                 np.stack([left.accompaniment, right.accompaniment]),
                                 left.starts, left.lengths, left.sample_rate)


@pytest.mark.parametrize("stage, target, weights, channels", [
    ("finetune", "ibm", None, 1), ("pretrain", "ibm", None, 1),
    ("finetune", "psa", "power", 1), ("finetune", "ibm", "magnitude", 2)])
def test_tf_data_and_numpy_loaders_give_the_same_batches(stage, target, weights, channels):
    """One definition of an example: tf.data's batch k is the sampler's batch k, as the
    NumPy loader's is, with the static shapes Keras needs."""
    decoded = synth_decoded([4000, 3000, 2500]) if channels == 1 else stereo_decoded(
        [4000, 3000])
    preset = TINY if channels == 1 else dataclasses.replace(TINY, channels=2)
    sampler = PatchSampler(decoded, preset, stage, batch_size=6, remix=0.5, pitch=0.5,
                           seed=7, target=target, weights=weights)
    ds = pipeline.training_dataset(sampler)
    x_shape, y_shape = sampler.shapes
    assert tuple(ds.element_spec[0].shape) == x_shape
    assert tuple(ds.element_spec[1].shape) == y_shape
    assert y_shape[-1] == 2 if (weights and stage == "finetune") else y_shape == x_shape
    tf_batches = [(x.numpy(), y.numpy()) for x, y in ds.take(3)]
    numpy_batches = list(itertools.islice(batches.stream(sampler), 3))
    for (x, y), (x_ref, y_ref) in zip(tf_batches, numpy_batches):
        assert x.dtype == y.dtype == np.float32 and x.shape == x_shape
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    assert not np.array_equal(tf_batches[0][0], tf_batches[1][0])


def test_training_dataset_starts_at_a_batch_and_is_deterministic():
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, batch_size=4, remix=0.5,
                           seed=2)
    x, _ = first_batch(pipeline.training_dataset(sampler, start=5))
    np.testing.assert_array_equal(x, sampler.batch(5)[0])
    again, _ = first_batch(pipeline.training_dataset(sampler, start=5))
    np.testing.assert_array_equal(again, x)
    other = PatchSampler(synth_decoded([4000, 3000]), TINY, batch_size=4, remix=0.5, seed=3)
    assert not np.array_equal(first_batch(pipeline.training_dataset(other, start=5))[0], x)
