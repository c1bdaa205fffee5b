"""keras_svs.pipeline: decoding, HDF5 cache, training and validation streams."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import TINY_RATE, synth_pair, write_pairs
from keras_svs import pipeline
from keras_svs.datasets import DatasetError, discover
from keras_svs.models import get_preset

TINY = get_preset("tiny")
SEG = pipeline.patch_samples(TINY)  # 256 + 8 * 64 = 768 samples


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


# -- training stream ------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_training_dataset_shapes(stage):
    decoded = synth_decoded([4000, 3000])
    x, y = first_batch(pipeline.training_dataset(decoded, TINY, stage))
    assert x.shape == y.shape == (TINY.batch_size, TINY.frames, TINY.bins) == (16, 9, 129)
    assert x.dtype == y.dtype == np.float32
    assert np.all(x >= 0) and np.all(x <= 1)
    x, _ = first_batch(pipeline.training_dataset(decoded, TINY, stage, batch_size=5))
    assert x.shape == (5, 9, 129)


def test_finetune_targets_are_smoothed_labels():
    decoded = synth_decoded([4000, 3000])
    _, y = first_batch(pipeline.training_dataset(decoded, TINY, "finetune", remix=0.5))
    assert set(np.unique(y)) == {np.float32(0.02), np.float32(0.98)}


def test_pretrain_input_equals_target_equals_ibm_times_mixture():
    decoded = synth_decoded([SEG, SEG, SEG])  # one crop per clip: the whole clip
    oracles = [oracle_example(*decoded.track(i), stage="pretrain") for i in range(3)]
    x, y = first_batch(pipeline.training_dataset(decoded, TINY, "pretrain", remix=0.0))
    np.testing.assert_array_equal(x, y)
    assert np.any(x > 0) and np.any(x == 0)
    for example in x:
        candidates = [(o[0], None, None) for o in oracles]
        i = match(example, candidates)
        assert i is not None, "pretrain input is not IBM * |X| of any clip"


def test_finetune_target_is_ibm_of_the_same_crop():
    decoded = synth_decoded([SEG, SEG, SEG, SEG])
    oracles = [oracle_example(*decoded.track(i)) for i in range(4)]
    x, y = first_batch(pipeline.training_dataset(decoded, TINY, "finetune", remix=0.0,
                                                 batch_size=24, seed=3))
    seen = set()
    for xi, yi in zip(x, y):
        i = match(xi, oracles)
        assert i is not None, "input is not |X| of any clip"
        seen.add(i)
        _, target, ties = oracles[i]
        np.testing.assert_array_equal(yi[~ties], target[~ties])
    assert len(seen) >= 2  # clips are drawn at random
    assert 0.05 < (y > 0.5).mean() < 0.95  # both classes occur: the check means something


def test_random_crops_of_long_clips_are_consistent():
    """Crops start at random offsets; input and target still come from the same crop."""
    decoded = synth_decoded([3000])
    v_all, a_all = decoded.track(0)
    n, hop = TINY.stft.win_length, TINY.stft.hop_length
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    w /= w.sum()
    offsets = np.arange(len(v_all) - SEG + 1)
    firsts = np.abs(np.fft.rfft(np.stack([(v_all + a_all)[o:o + n] for o in offsets]) * w,
                                TINY.stft.n_fft, axis=1))
    x, y = first_batch(pipeline.training_dataset(decoded, TINY, "finetune", remix=0.0,
                                                 batch_size=8, seed=11))
    found = []
    for xi, yi in zip(x, y):
        o = int(np.argmin(np.abs(firsts - xi[0]).max(axis=1)))
        mixture, target, ties = oracle_example(v_all[o:o + SEG], a_all[o:o + SEG])
        np.testing.assert_allclose(xi, mixture, atol=2e-5, rtol=0)
        np.testing.assert_array_equal(yi[~ties], target[~ties])
        found.append(o)
    assert len(set(found)) > 1


def test_short_clips_are_zero_padded_without_bleed():
    short, long = 500, SEG
    decoded = synth_decoded([short, long])
    v0, a0 = decoded.track(0)
    padded = (np.pad(v0, (0, SEG - short)), np.pad(a0, (0, SEG - short)))
    oracles = [oracle_example(*padded), oracle_example(*decoded.track(1))]
    x, _ = first_batch(pipeline.training_dataset(decoded, TINY, "finetune", remix=0.0,
                                                 batch_size=32, seed=2))
    hits = [match(xi, oracles) for xi in x]
    assert None not in hits
    assert 0 in hits


def assert_remixed(decoded, x, y) -> None:
    """Every patch of the batch ``(x, y)`` is ``|V_i + A_j|`` of two of ``decoded``'s clips
    (at gain 0 dB) with that pair's IBM as its label, and some pairs mix different clips."""
    count = len(decoded.lengths)
    tracks = [decoded.track(i) for i in range(count)]
    combos = {(i, j): oracle_example(tracks[i][0], tracks[j][1])
              for i in range(count) for j in range(count)}
    keys = list(combos)
    pairs = []
    for xi, yi in zip(x, y):
        k = match(xi, [combos[key] for key in keys])
        assert k is not None, "remixed patch is not |V_i + A_j| of any two clips"
        _, target, ties = combos[keys[k]]
        np.testing.assert_array_equal(yi[~ties], target[~ties])
        pairs.append(keys[k])
    assert any(i != j for i, j in pairs)


def test_remix_combines_sources_of_different_clips():
    decoded = synth_decoded([SEG, SEG, SEG])
    x, y = first_batch(pipeline.training_dataset(decoded, TINY, "finetune", remix=1.0,
                                                 gain_db=0.0, batch_size=24, seed=4))
    assert_remixed(decoded, x, y)


def test_gain_and_pitch_augmentation_change_patches():
    decoded = synth_decoded([SEG, SEG])
    plain, _ = first_batch(pipeline.training_dataset(decoded, TINY, remix=0.0, seed=1))
    shifted, y = first_batch(pipeline.training_dataset(decoded, TINY, remix=1.0, pitch=1.0,
                                                       seed=1))
    assert np.all(np.isfinite(shifted))
    assert set(np.unique(y)) <= {np.float32(0.02), np.float32(0.98)}
    oracles = [oracle_example(*decoded.track(i)) for i in range(2)]
    assert all(match(xi, oracles) is not None for xi in plain)
    assert sum(match(xi, oracles) is None for xi in shifted) >= len(shifted) // 2


def test_training_dataset_is_deterministic_for_a_seed():
    decoded = synth_decoded([4000, 3000, 2500])

    def batches(seed):
        ds = pipeline.training_dataset(decoded, TINY, "finetune", remix=0.5, pitch=0.5,
                                       seed=seed)
        return [x.numpy() for x, _ in ds.take(2)]

    a, b, c = batches(7), batches(7), batches(8)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])


def test_unknown_stage():
    decoded = synth_decoded([SEG])
    with pytest.raises(ValueError, match="stage"):
        pipeline.training_dataset(decoded, TINY, "pretraining")
    with pytest.raises(ValueError, match="stage"):
        pipeline.validation_dataset(decoded, TINY, "test")


# -- validation stream ----------------------------------------------------------------------
def test_validation_dataset_is_finite_and_covers_every_patch():
    step = TINY.frames * TINY.stft.hop_length  # 576
    lengths = [SEG + 3 * step + 10, 500, 2 * SEG]
    decoded = synth_decoded(lengths)
    expected = sum(len(range(0, max(n - SEG, 0) + 1, step)) for n in lengths)  # 4 + 1 + 2
    ds = pipeline.validation_dataset(decoded, TINY, "finetune", batch_size=3)
    batches = list(ds)
    assert sum(x.shape[0] for x, _ in batches) == expected == 7
    assert [x.shape[0] for x, _ in batches] == [3, 3, 1]
    assert len(list(ds)) == 3  # a second pass ends too
    x0 = batches[0][0].numpy()
    v, a = decoded.track(0)
    mixture, target, ties = oracle_example(v[step:step + SEG], a[step:step + SEG])
    np.testing.assert_allclose(x0[1], mixture, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(batches[0][1].numpy()[1][~ties], target[~ties])
    v, a = decoded.track(1)
    padded = oracle_example(np.pad(v, (0, SEG - 500)), np.pad(a, (0, SEG - 500)))
    np.testing.assert_allclose(batches[1][0].numpy()[1], padded[0], atol=2e-5, rtol=0)


def test_validation_pretrain_targets():
    decoded = synth_decoded([2 * SEG])
    for x, y in pipeline.validation_dataset(decoded, TINY, "pretrain"):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
        mixture, target, _ = oracle_example(*[s[:SEG] for s in decoded.track(0)])
        ibm = (target > 0.5) * mixture
        np.testing.assert_allclose(x.numpy()[0], ibm, atol=2e-5, rtol=0)
