"""keras_svs.examples: the one definition of a training example (PatchSampler: crops, remix,
gains, pitch; targets and weights), and the validation arrays."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_RATE
from keras_svs import examples, pipeline, spectral
from keras_svs.examples import PatchSampler
from test_pipeline import SEG, TINY, decoded_from, match, oracle_example, synth_decoded

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


def test_unknown_stage_target_or_weights():
    decoded = synth_decoded([SEG])
    with pytest.raises(ValueError, match="stage"):
        PatchSampler(decoded, TINY, "pretraining")
    with pytest.raises(ValueError, match="target"):
        PatchSampler(decoded, TINY, target="irm")
    with pytest.raises(ValueError, match="weights"):
        examples.validation_arrays(decoded, TINY, weights="loud")


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


# -- targets and weights ----------------------------------------------------------------------
def test_bin_weights_are_the_level_over_the_examples_mean_level():
    rng = np.random.default_rng(8)
    magnitude = rng.random((2, 3, 4, 2)).astype(np.float32)  # two channels
    for exponent in (1, 2):
        w = examples.bin_weights(magnitude, exponent)
        assert w.shape == magnitude.shape and w.dtype == np.float32
        np.testing.assert_allclose(w.mean(axis=(1, 2)), 1.0, rtol=1e-5)  # each channel
        level = magnitude ** exponent
        np.testing.assert_allclose(w[0] / w[0, 0, 0], level[0] / level[0, 0, 0], rtol=1e-5)
    assert np.all(np.isfinite(examples.bin_weights(np.zeros((1, 2, 3)), 2)))  # silence


@pytest.mark.parametrize("target, weights", [("ibm", "magnitude"), ("psa", "power")])
def test_weighted_targets_carry_the_inputs_bin_weights(target, weights):
    decoded = synth_decoded([4000, 3000])
    x, y = PatchSampler(decoded, TINY, batch_size=4, remix=0.5, target=target,
                        weights=weights).batch(0)
    assert y.shape == (*x.shape, 2)
    np.testing.assert_allclose(y[..., 1], examples.bin_weights(x, examples.WEIGHTS[weights]),
                               rtol=1e-6)
    plain = PatchSampler(decoded, TINY, batch_size=4, remix=0.5, target=target).batch(0)
    np.testing.assert_array_equal(y[..., 0], plain[1])  # the same draws, the target kept
    if target == "psa":
        assert y[..., 0].min() >= 0 and y[..., 0].max() <= 1
        assert len(np.unique(y[..., 0])) > 2  # a ratio mask, not labels
    vx, vy = examples.validation_arrays(decoded, TINY, "finetune", target, weights)
    assert vy.shape == (*vx.shape, 2)
    _, pretrain = PatchSampler(decoded, TINY, "pretrain", weights=weights).batch(0)
    assert pretrain.ndim == 3  # the autoencoder's target carries no weights


# -- validation arrays -----------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_validation_arrays_cover_every_non_overlapping_patch(stage):
    step = TINY.frames * TINY.stft.hop_length  # 576
    lengths = [SEG + 3 * step + 10, 500, 2 * SEG]
    decoded = synth_decoded(lengths)
    expected = sum(len(range(0, max(n - SEG, 0) + 1, step)) for n in lengths)
    assert expected == 4 + 1 + 2
    x, y = examples.validation_arrays(decoded, TINY, stage)
    assert x.shape == y.shape == (expected, TINY.frames, TINY.bins)
    assert x.dtype == y.dtype == np.float32
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
    x, _ = examples.validation_arrays(decoded, TINY)
    assert x.shape[0] == 300
    v, a = decoded.track(2)
    last = examples.from_segments(v[None, -SEG:], a[None, -SEG:], TINY, "finetune")[0][0]
    np.testing.assert_array_equal(x[-1], last)


# -- the fixed grid of the paper's training set (patch_hop) ----------------------------------
def test_grid_patches_start_every_hop_frames_inside_each_clip():
    hop = 3 * TINY.stft.hop_length  # samples between patch starts for patch_hop=3
    lengths = np.array([SEG + 2 * hop + 5, SEG - 100, SEG])
    clip, offset = examples.grid_patches(lengths, TINY, 3)
    np.testing.assert_array_equal(clip, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(offset, [0, hop, 2 * hop, 0, 0])
    with pytest.raises(ValueError, match="patch_hop"):
        examples.grid_patches(lengths, TINY, 0)


def test_grid_patches_are_frames_of_the_whole_clips_spectrogram():
    """Patch j of the grid is frames ``8j .. 8j + 8`` of the clip's own STFT: the authors'
    training set, cut from each song's spectrogram every 8 frames."""
    decoded = synth_decoded([SEG + 40 * TINY.stft.hop_length])
    v, a = decoded.track(0)
    whole = np.abs(spectral.stft_numpy(v + a, TINY.stft, padded=False))[:, :TINY.bins]
    sampler = PatchSampler(decoded, TINY, "finetune", batch_size=4, remix=0.0, seed=2,
                           patch_hop=8)
    clip, offset = sampler.grid
    assert len(clip) == 6  # 49 frames: patches start at frames 0, 8, ..., 40 (40 + 9 = 49)
    x, _ = sampler.batch(0)
    starts = offset[examples.grid_items(0, len(clip), 4, 2)] // TINY.stft.hop_length
    for example, start in zip(x, starts):
        np.testing.assert_allclose(example, whole[start:start + TINY.frames], atol=1e-6)


def test_an_epoch_of_grid_batches_is_one_pass_in_a_new_order():
    patches, batch = 10, 4
    steps = examples.grid_steps(patches, batch)
    assert steps == 3
    epochs = [np.concatenate([examples.grid_items(e * steps + k, patches, batch, seed=7)
                              for k in range(steps)]) for e in range(2)]
    for items in epochs:
        assert set(items) == set(range(patches))  # every patch, 2 of them twice (12 slots)
        assert len(items) == steps * batch
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(examples.grid_items(4, patches, batch, seed=7),
                                  epochs[1][batch:2 * batch])  # depends on its arguments only


def test_grid_sampler_keeps_sources_aligned_and_shards_interleave():
    decoded = noise_decoded([SEG + 30 * TINY.stft.hop_length, SEG + 9 * TINY.stft.hop_length])
    sampler = PatchSampler(decoded, TINY, "finetune", batch_size=3, remix=0.0, seed=1,
                           patch_hop=8)
    clip, offset = sampler.grid
    x, y = sampler.batch(1)
    items = examples.grid_items(1, len(clip), 3, 1)
    v = np.stack([decoded.track(c)[0][o:o + SEG] for c, o in zip(clip[items], offset[items])])
    a = np.stack([decoded.track(c)[1][o:o + SEG] for c, o in zip(clip[items], offset[items])])
    want_x, want_y = examples.from_segments(v, a, TINY)
    np.testing.assert_allclose(x, want_x, atol=1e-6)
    np.testing.assert_array_equal(y, want_y)
    shard = PatchSampler(decoded, TINY, "finetune", batch_size=3, remix=0.0, seed=1,
                         patch_hop=8, shards=2, shard=1)
    np.testing.assert_allclose(shard.batch(0)[0], sampler.batch(1)[0], atol=0)
    with pytest.raises(ValueError, match="patch_hop"):
        PatchSampler(decoded, TINY, patch_hop=-1)


def test_validation_on_the_grid_and_steps_of_one_pass():
    decoded = synth_decoded([SEG + 16 * TINY.stft.hop_length, SEG])
    x, _ = examples.validation_arrays(decoded, TINY, patch_hop=8)
    assert len(x) == 3 + 1
    assert pipeline.steps_per_epoch(decoded, TINY, 3, patch_hop=8) == 2  # ceil(4 / 3)
    assert pipeline.steps_per_epoch(decoded, TINY, 3) == max(
        1, int(decoded.lengths.sum()) // (TINY.frames * TINY.stft.hop_length) // 3)


def test_examples_imports_nothing_that_imports_it():
    """The dependency arrow points from pipeline (tf.data, decode cache I/O) down to examples:
    examples names no keras_svs module above it, not even for type checking."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(examples))
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level > 0}
    assert imported <= {None, "options", "models.presets"}, imported
    assert pipeline.DecodedAudio is examples.DecodedAudio
