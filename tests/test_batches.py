"""keras_svs.batches: NumPy training batches (PatchSampler), validation arrays, worker stream."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import TINY_RATE
from keras_svs import batches, pipeline, spectral
from keras_svs.batches import PatchSampler
from test_pipeline import (SEG, TINY, assert_remixed, decoded_from, match, oracle_example,
                           synth_decoded)

S = TINY.label_smoothing
LABELS = {np.float32(S), np.float32(1 - S)}


def noise_decoded(lengths, seed=0) -> pipeline.DecodedAudio:
    """Clips of white noise (every crop is unique), voice louder than accompaniment in
    about half of the bins."""
    rng = np.random.default_rng(seed)
    return decoded_from([(0.3 * rng.uniform(-1, 1, n), 0.3 * rng.uniform(-1, 1, n))
                         for n in lengths])


def candidate_crops(decoded: pipeline.DecodedAudio):
    """Every full crop of every clip: ``[(clip, offset)]``, voice and accompaniment
    segments ``(candidates, SEG)``."""
    where, voices, accompaniments = [], [], []
    for i in range(len(decoded.names)):
        v, a = decoded.track(i)
        for o in range(len(v) - SEG + 1):
            where.append((i, o))
            voices.append(v[o:o + SEG])
            accompaniments.append(a[o:o + SEG])
    return where, np.stack(voices), np.stack(accompaniments)


def assert_same_examples(got, want, atol=2e-6):
    """``(input, target)`` pairs equal, labels allowed to differ only at near ties."""
    (x, y), (x_ref, y_ref) = got, want
    assert x.shape == x_ref.shape and y.shape == y_ref.shape
    np.testing.assert_allclose(x, x_ref, rtol=0, atol=atol)
    differ = ~np.isclose(y, y_ref, rtol=0, atol=atol)
    assert differ.mean() < 1e-3, differ.mean()


# -- PatchSampler ---------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_batch_shapes_and_dtypes(stage):
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, stage, pitch=0.5)
    assert sampler.batch_size == TINY.batch_size and sampler.remix == TINY.remix
    x, y = sampler.batch(0)
    assert x.shape == y.shape == (TINY.batch_size, TINY.frames, TINY.bins) == (16, 9, 129)
    assert x.dtype == y.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert np.all(x >= 0)
    x, y = PatchSampler(synth_decoded([4000]), TINY, stage, batch_size=5).batch(3)
    assert x.shape == y.shape == (5, 9, 129)


def test_unknown_stage():
    with pytest.raises(ValueError, match="stage"):
        PatchSampler(synth_decoded([SEG]), TINY, "pretraining")


def test_batches_are_deterministic_in_seed_and_index():
    decoded = synth_decoded([4000, 3000, 2500])

    def sampler(seed):
        return PatchSampler(decoded, TINY, "finetune", remix=0.5, pitch=0.5, seed=seed)

    a, b = sampler(7), sampler(7)
    for index in (0, 5):
        for left, right in zip(a.batch(index), b.batch(index)):
            np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(a.batch(2)[0], a.batch(2)[0])  # no hidden state
    assert not np.array_equal(a.batch(0)[0], a.batch(1)[0])
    assert not np.array_equal(a.batch(0)[0], sampler(8).batch(0)[0])


def test_finetune_targets_take_only_the_smoothed_labels():
    x, y = PatchSampler(synth_decoded([4000, 3000]), TINY, "finetune", remix=0.5,
                        pitch=0.5).batch(0)
    assert set(np.unique(y)) == LABELS  # both labels occur, nothing else
    assert 0.02 < (y > 0.5).mean() < 0.98


def test_pretrain_input_equals_target_and_lies_in_unit_interval():
    decoded = synth_decoded([4000, 3000])
    x, y = PatchSampler(decoded, TINY, "pretrain", remix=0.0).batch(1)
    np.testing.assert_array_equal(x, y)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.any(x > 0) and np.any(x == 0)  # IBM zeroes the accompaniment's bins
    # with remix and gains (up to +6 dB per source) the magnitudes stay bounded and finite
    x, y = PatchSampler(decoded, TINY, "pretrain", remix=1.0, pitch=1.0).batch(1)
    np.testing.assert_array_equal(x, y)
    assert np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 2.0


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_plain_crops_are_crops_of_the_data(stage):
    """remix=0, pitch=0: each patch is exactly ``examples`` of one crop of one clip."""
    decoded = noise_decoded([SEG + 300, SEG + 40, SEG])
    where, voices, accompaniments = candidate_crops(decoded)
    firsts = np.abs(spectral.stft_numpy(voices[:, :TINY.stft.win_length]
                                        + accompaniments[:, :TINY.stft.win_length],
                                        TINY.stft, padded=False)[:, 0, :TINY.bins])
    x, y = PatchSampler(decoded, TINY, stage, batch_size=24, remix=0.0, seed=3).batch(0)
    found = []
    for xi, yi in zip(x, y):
        kept = xi[0] > 0 if stage == "pretrain" else slice(None)  # IBM * |X|: the kept bins
        k = int(np.argmin(np.abs(firsts[:, kept] - xi[0][kept]).max(axis=1)))
        mixture, target, ties = oracle_example(voices[k], accompaniments[k], stage)
        if stage == "pretrain":
            np.testing.assert_array_equal(xi, yi)
            np.testing.assert_allclose(xi[~ties], mixture[~ties], rtol=0, atol=2e-5)
        else:
            np.testing.assert_allclose(xi, mixture, rtol=0, atol=2e-5)
            np.testing.assert_array_equal(yi[~ties], target[~ties])
        found.append(where[k])
    clips = {c for c, _ in found}
    assert len(clips) >= 2  # clips drawn at random
    assert len({o for c, o in found if c == 0}) > 1  # offsets drawn at random


def test_short_clips_are_zero_padded_without_bleed():
    decoded = synth_decoded([500, SEG])
    v0, a0 = decoded.track(0)
    oracles = [oracle_example(np.pad(v0, (0, SEG - 500)), np.pad(a0, (0, SEG - 500))),
               oracle_example(*decoded.track(1))]
    x, _ = PatchSampler(decoded, TINY, "finetune", batch_size=32, remix=0.0, seed=2).batch(0)
    hits = [match(xi, oracles) for xi in x]
    assert None not in hits
    assert 0 in hits and 1 in hits


def test_remix_combines_sources_of_different_clips():
    decoded = synth_decoded([SEG, SEG, SEG])
    x, y = PatchSampler(decoded, TINY, "finetune", batch_size=24, remix=1.0, gain_db=0.0,
                        seed=4).batch(0)
    assert_remixed(decoded, x, y)


def test_pitch_shift_moves_a_sine_by_one_to_three_semitones():
    """A 1 kHz sine voice (no accompaniment): every shifted patch peaks 1-3 semitones away,
    up or down; unshifted patches peak at 1 kHz."""
    n = 3 * SEG
    t = np.arange(n) / TINY_RATE
    voice = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    decoded = decoded_from([(voice, np.zeros(n)), (voice, np.zeros(n))])
    resolution = TINY_RATE / TINY.stft.n_fft  # 31.25 Hz per bin

    def peaks(x):
        return np.argmax(x.mean(axis=1), axis=-1) * resolution

    plain, _ = PatchSampler(decoded, TINY, "finetune", batch_size=16, remix=0.0).batch(0)
    np.testing.assert_allclose(peaks(plain), 1000.0, atol=resolution)
    shifted, _ = PatchSampler(decoded, TINY, "finetune", batch_size=32, remix=1.0, pitch=1.0,
                              gain_db=0.0).batch(0)
    ratio = peaks(shifted) / 1000.0
    semitones = 12 * np.log2(ratio)
    slack = 12 * np.log2(1 + resolution / 1000.0)  # half a bin either way, in semitones
    assert np.all((np.abs(semitones) >= 1 - slack) & (np.abs(semitones) <= 3 + slack)), \
        semitones
    assert np.any(semitones > 0) and np.any(semitones < 0)


# -- examples and validation arrays ---------------------------------------------------------
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_examples_match_tensorflow_pipeline(stage):
    decoded = synth_decoded([SEG * 3])
    v, a = decoded.track(0)
    voices = np.stack([v[o:o + SEG] for o in (0, 500, 2 * SEG)])
    accompaniments = np.stack([a[o:o + SEG] for o in (0, 500, 2 * SEG)])
    x, y = batches.examples(voices, accompaniments, TINY, stage)
    assert x.shape == y.shape == (3, TINY.frames, TINY.bins)
    assert x.dtype == y.dtype == np.float32
    for i in range(3):
        want = pipeline._example(voices[i], accompaniments[i], TINY, stage)
        assert_same_examples((x[i], y[i]), tuple(w.numpy() for w in want))
    if stage == "pretrain":
        np.testing.assert_array_equal(x, y)
    else:
        assert set(np.unique(y)) == LABELS


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_validation_arrays_cover_every_non_overlapping_patch(stage):
    step = TINY.frames * TINY.stft.hop_length  # 576
    lengths = [SEG + 3 * step + 10, 500, 2 * SEG]
    decoded = synth_decoded(lengths)
    expected = sum(len(range(0, max(n - SEG, 0) + 1, step)) for n in lengths)
    assert expected == 4 + 1 + 2
    x, y = batches.validation_arrays(decoded, TINY, stage)
    assert x.shape == y.shape == (expected, TINY.frames, TINY.bins)
    assert x.dtype == y.dtype == np.float32
    # the same patches, in the same order, as the tf.data validation set
    ref = list(pipeline.validation_dataset(decoded, TINY, stage, batch_size=64))
    x_ref = np.concatenate([b[0].numpy() for b in ref])
    y_ref = np.concatenate([b[1].numpy() for b in ref])
    assert_same_examples((x, y), (x_ref, y_ref))
    # patch 1 of clip 0 starts one step in; patch 4 is clip 1 zero-padded
    v, a = decoded.track(0)
    mixture, target, ties = oracle_example(v[step:step + SEG], a[step:step + SEG], stage)
    if stage == "pretrain":
        np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(x[1][~ties], mixture[~ties], rtol=0, atol=2e-5)
    else:
        np.testing.assert_allclose(x[1], mixture, rtol=0, atol=2e-5)
        np.testing.assert_array_equal(y[1][~ties], target[~ties])
    v, a = decoded.track(1)
    padded = oracle_example(np.pad(v, (0, SEG - 500)), np.pad(a, (0, SEG - 500)), stage)
    np.testing.assert_allclose(x[4], padded[0], rtol=0, atol=2e-5)


def test_validation_arrays_of_many_clips_span_several_chunks():
    """More than 256 patches: the arrays are built in chunks and concatenated in order."""
    step = TINY.frames * TINY.stft.hop_length
    decoded = noise_decoded([SEG + 99 * step] * 3, seed=1)  # 100 patches each
    x, _ = batches.validation_arrays(decoded, TINY)
    assert x.shape[0] == 300
    v, a = decoded.track(2)
    last = batches.examples(v[None, -SEG:], a[None, -SEG:], TINY, "finetune")[0][0]
    np.testing.assert_array_equal(x[-1], last)


# -- stream -----------------------------------------------------------------------------------
def test_stream_in_process_yields_batches_in_order():
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, "finetune", batch_size=4,
                           remix=0.5, pitch=0.5, seed=5)
    got = list(itertools.islice(batches.stream(sampler, workers=0), 3))
    for index, (x, y) in enumerate(got):
        want = sampler.batch(index)
        np.testing.assert_array_equal(x, want[0])
        np.testing.assert_array_equal(y, want[1])
    x, _ = next(batches.stream(sampler, start=7))
    np.testing.assert_array_equal(x, sampler.batch(7)[0])


def test_stream_with_a_worker_process_yields_the_same_batches():
    """Spawns one process (a few seconds: it imports keras_svs)."""
    sampler = PatchSampler(synth_decoded([4000, 3000]), TINY, "finetune", batch_size=4,
                           remix=0.5, pitch=0.5, seed=5)
    it = batches.stream(sampler, start=2, workers=1)
    try:
        got = list(itertools.islice(it, 3))
    finally:
        it.close()  # leaves the pool's context: the worker is terminated
    for index, (x, y) in zip(range(2, 5), got):
        want = sampler.batch(index)
        np.testing.assert_array_equal(x, want[0])
        np.testing.assert_array_equal(y, want[1])
