"""Stereo (``channels == 2``) models end to end: separation, band extension, SavedModel,
training batches, training, validation GNSDR, evaluation at the files' own rate.

The model is the ``tinystereo`` preset: Spleeter's architecture (two U-Nets, one mask per
channel) with 2 filters a level, at 8 kHz; random weights unless trained here.
"""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import synth_pair, write_musdb, write_pairs, write_splits
from keras_svs import evaluation, pipeline, separation, spectral
from keras_svs.examples import PatchSampler, from_segments, patch_samples, validation_arrays
from keras_svs.models import build_model, get_preset, load_model, settings
from keras_svs.separation import Separator

RATE = 8000


@pytest.fixture(scope="module")
def stereo_model_path(tmp_path_factory):
    keras.utils.set_random_seed(2)  # the same weights whatever ran before in this worker
    path = tmp_path_factory.mktemp("stereo") / "tinystereo.keras"
    build_model("tinystereo").save(path)
    return path


@pytest.fixture(scope="module")
def stereo(stereo_model_path):
    """On TensorFlow: LiteRT's XNNPACK gave this untrained two-filter net's probabilities,
    called again after other inputs, up to 0.13 away from its first call's now and then
    (in-process, order-dependent); the masks compared here are the engine's, not LiteRT's
    (tests/test_runtime.py compares LiteRT's stems with TensorFlow's)."""
    return Separator(stereo_model_path, runtime="tensorflow")


def _song(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    v, a = synth_pair(RATE, seconds, seed)
    return np.stack([v + 0.6 * a, 0.5 * v + a]).astype(np.float32)  # channels differ


# -- masks above the band -------------------------------------------------------------------
@pytest.mark.parametrize("as_tensor", [False, True])
def test_fit_bins_extensions(as_tensor):
    mask = np.array([[0.2, 0.4, 0.6, 1.0]], np.float32)
    given = tf.constant(mask) if as_tensor else mask
    out = {e: np.asarray(spectral.fit_bins(given, 6, e)) for e in spectral.EXTENSIONS}
    np.testing.assert_allclose(out["top"], [[0.2, 0.4, 0.6, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(out["zero"], [[0.2, 0.4, 0.6, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(out["mean"], [[0.2, 0.4, 0.6, 1.0, 1.0, 1.0]])  # top quarter
    wide = np.linspace(0, 1, 8, dtype=np.float32)[None]
    np.testing.assert_allclose(np.asarray(spectral.fit_bins(wide, 10, "mean"))[0, 8:],
                               wide[0, 6:].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="extension must be one of"):
        spectral.fit_bins(given, 6, "mirror")


def test_extension_is_a_model_setting(tmp_path):
    preset = dataclasses.replace(get_preset("tinystereo"), extension="zero")
    path = tmp_path / "zero.keras"
    build_model(preset).save(path)
    assert settings(load_model(path)).extension == "zero"
    separator = Separator(path)
    assert separator.extension == "zero"
    mag = np.abs(spectral.stft_numpy(_song(1.0), separator.config))
    mask = separator.voice_mask(mag)
    assert mask.shape == mag.shape  # (channels, frames, all bins)
    assert np.all(mask[..., preset.bins:] == 0)
    assert Separator(path, extension="top").voice_mask(mag)[..., preset.bins:].any()
    with pytest.raises(ValueError, match="extension must be one of"):
        Separator(path, extension="mirror")


# -- separation -------------------------------------------------------------------------
def test_each_channel_gets_its_own_mask(stereo):
    x = _song()
    stems = stereo.separate(x, RATE)
    assert stems["vocals"].shape == x.shape
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], x, atol=1e-6)
    spectrum = spectral.stft_numpy(x, stereo.config)
    mask = stereo.voice_mask(np.abs(spectrum))
    assert mask.shape == (2, spectrum.shape[1], stereo.config.bins)
    assert not np.allclose(mask[0], mask[1], atol=1e-4)  # different channels, masks
    expected = spectral.istft_numpy(spectrum * mask, stereo.config, x.shape[-1])
    np.testing.assert_allclose(stems["vocals"], expected, atol=1e-5)
    _, separated_with = stereo.separate_with_mask(x, RATE)
    np.testing.assert_allclose(separated_with, mask, atol=1e-6)


def test_mono_and_multichannel_inputs(stereo):
    x = _song()
    mono = stereo.separate(x[0], RATE)
    assert mono["vocals"].shape == x[0].shape
    spectrum = spectral.stft_numpy(x[:1], stereo.config)
    both = stereo.voice_mask(np.abs(np.concatenate([spectrum, spectrum])))
    expected = spectral.istft_numpy(spectrum[0] * both.mean(axis=0), stereo.config,
                                    x.shape[-1])
    np.testing.assert_allclose(mono["vocals"], expected, atol=1e-5)
    four = np.concatenate([x, x[::-1]])
    stems = stereo.separate(four, RATE)
    np.testing.assert_allclose(stems["vocals"][:2], stereo.separate(x, RATE)["vocals"],
                               atol=1e-5)
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], four, atol=1e-6)


def test_other_rates_are_resampled_for_the_model(stereo):
    x = _song()
    import soxr

    up = np.stack([soxr.resample(c, RATE, 16000) for c in x])
    stems = stereo.separate(up, 16000)
    assert stems["vocals"].shape == up.shape
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], up, atol=1e-5)


def test_model_blocks_equal_one_call_on_short_songs_and_bound_long_ones(stereo, monkeypatch):
    mag = np.abs(spectral.stft_numpy(_song(4.0), stereo.config))  # (2, frames, bins)
    whole = stereo.voice_probability(mag)
    frames = mag.shape[1]
    assert frames <= separation.BLOCK_FRAMES  # one call, no context clipped
    multiple = stereo.settings.time_multiple
    x = np.pad(np.moveaxis(mag[..., :stereo.settings.bins], 0, -1),
               ((0, -frames % multiple), (0, 0), (0, 0)))
    direct = stereo.model(x[None], training=False).numpy()[0, :frames, :, :, 0]
    np.testing.assert_allclose(whole, np.moveaxis(direct, -1, 0), atol=1e-6)
    calls = []
    original = stereo.predict
    monkeypatch.setattr(stereo, "predict", lambda m: calls.append(m.shape[0]) or original(m))
    monkeypatch.setattr(separation, "BLOCK_FRAMES", 2 * multiple)
    monkeypatch.setattr(separation, "BLOCK_CONTEXT", multiple)
    blocked = stereo.voice_probability(mag)
    assert blocked.shape == whole.shape and np.all((blocked >= 0) & (blocked <= 1))
    assert len(calls) > 1 and max(calls) <= 4 * multiple  # block + context on each side


def test_voice_probability_wants_one_spectrogram_per_channel(stereo):
    with pytest.raises(ValueError, match="2-channel model takes"):
        stereo.voice_probability(np.zeros((10, 129), np.float32))


def test_the_cli_separates_with_a_stereo_model_whole_or_streamed(stereo_model_path,
                                                                  tmp_path):
    from click.testing import CliRunner

    from keras_svs.cli import main

    song = tmp_path / "song.wav"
    sf.write(song, _song().T, RATE, subtype="FLOAT")
    expected = Separator(stereo_model_path, extension="zero").separate(_song(), RATE)
    for name, extra in (("whole", []), ("streamed", ["--block-seconds", "0.5"])):
        result = CliRunner().invoke(main, ["separate", str(song), "-o", str(tmp_path / name),
                                           "-m", str(stereo_model_path), "--extension",
                                           "zero", "--bit-depth", "32", *extra])
        assert result.exit_code == 0, result.output
        vocals, rate = sf.read(tmp_path / name / "song" / "vocals.wav", always_2d=True)
        assert rate == RATE and vocals.shape == (_song().shape[1], 2)
        np.testing.assert_allclose(vocals.T, expected["vocals"], atol=1e-5)


def test_savedmodel_serves_what_the_separator_gives(stereo, stereo_model_path, tmp_path):
    from keras_svs.export import export, load_export

    loaded, meta = load_export(export(stereo_model_path, tmp_path / "exported"))
    assert meta["channels"] == 2 and meta["extension"] == "top"
    x = _song()
    for waveform in (x, x[:1]):
        out = loaded.serve(tf.constant(waveform))
        np.testing.assert_allclose(out["vocals"].numpy(),
                                   np.atleast_2d(stereo.separate(waveform, RATE)["vocals"]),
                                   atol=1e-5)
    mag = np.abs(spectral.stft_numpy(x, stereo.config))
    spec = loaded.spectrogram(tf.constant(mag))
    np.testing.assert_allclose(spec["mask"].numpy(), stereo.voice_mask(mag), atol=1e-5)


def test_the_vocals_net_alone_separates_on_every_runtime_and_exports(tmp_path):
    """A ``spleeter1``-type model (the vocals U-Net alone): the LiteRT form and the
    SavedModel export give the TensorFlow engine's stems."""
    from keras_svs import runtime
    from keras_svs.export import export, load_export

    keras.utils.set_random_seed(7)
    tiny = get_preset("tinystereo")
    path = tmp_path / "single.keras"
    build_model(dataclasses.replace(tiny, name="tinystereo1",
                                    arch={**tiny.arch, "nets": 1})).save(path)
    x = _song()
    reference = Separator(path, runtime="tensorflow")
    want = reference.separate(x, RATE)["vocals"]
    assert np.abs(want).max() > 1e-3  # not a trivial mask
    if runtime.litert_installed():
        converted = Separator(path, runtime="litert")
        assert converted.runtime == "litert"
        np.testing.assert_allclose(converted.separate(x, RATE)["vocals"], want, atol=1e-4)
    loaded, meta = load_export(export(path, tmp_path / "exported"))
    assert meta["channels"] == 2
    np.testing.assert_allclose(loaded.serve(tf.constant(x))["vocals"].numpy(), want,
                               atol=1e-5)


# -- training data ------------------------------------------------------------------------
def _decoded_stereo(n: int = 3, seconds: float = 2.0) -> pipeline.DecodedAudio:
    voices, accompaniments = [], []
    for i in range(n):
        v, a = synth_pair(RATE, seconds, i)
        voices.append(np.stack([v, 0.5 * v]))
        accompaniments.append(np.stack([0.3 * a, a]))
    lengths = np.array([v.shape[-1] for v in voices], np.int64)
    return pipeline.DecodedAudio([f"s{i}" for i in range(n)], np.concatenate(voices, -1),
                                 np.concatenate(accompaniments, -1),
                                 np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths, RATE)


def test_stereo_batches_have_a_channel_axis_and_each_channels_ibm():
    preset = get_preset("tinystereo")
    decoded = _decoded_stereo()
    assert decoded.channels == 2
    sampler = PatchSampler(decoded, preset, batch_size=4, remix=1.0, pitch=0.5, seed=3)
    x, y = sampler.batch(0)
    assert x.shape == y.shape == (4, preset.frames, preset.bins, 2)
    np.testing.assert_array_equal(sampler.batch(0)[0], x)  # (seed, index) decides
    # without augmentation a patch is the first clip's own channels: their IBMs differ
    v, a = decoded.track(0)
    seg = patch_samples(preset)
    inputs, targets = from_segments(v[None, :, :seg], a[None, :, :seg], preset, "finetune")
    for c in range(2):
        mono_in, mono_target = from_segments(v[None, c, :seg], a[None, c, :seg],
                                        dataclasses.replace(preset, channels=1), "finetune")
        np.testing.assert_allclose(inputs[..., c], mono_in, atol=1e-6)
        np.testing.assert_array_equal(targets[..., c], mono_target)
    assert not np.array_equal(targets[..., 0], targets[..., 1])
    vx, vy = validation_arrays(decoded, preset)
    assert vx.shape[1:] == (preset.frames, preset.bins, 2) and vy.shape == vx.shape


def test_decode_gives_a_mono_dataset_two_equal_channels(tmp_path):
    root = write_pairs(tmp_path / "pairs", ["a", "b"], rate=RATE)
    from keras_svs.datasets import discover

    tracks = discover(root)
    stereo = pipeline.decode(tracks, RATE, channels=2)
    mono = pipeline.decode(tracks, RATE)
    assert stereo.voice.shape == (2, mono.voice.shape[0])
    np.testing.assert_array_equal(stereo.voice[0], mono.voice)
    np.testing.assert_array_equal(stereo.voice[1], mono.voice)
    joined = pipeline.concatenate([stereo, stereo])
    assert joined.names == ["a", "b", "a", "b"] and joined.voice.shape[1] == 2 * mono.voice.size
    np.testing.assert_array_equal(joined.track(3)[0], stereo.track(1)[0])
    with pytest.raises(ValueError, match="different rates or channels"):
        pipeline.concatenate([stereo, mono])


def test_a_stereo_model_trains_on_two_datasets_joined_and_a_wider_band(tmp_path):
    """Two datasets joined, batch norms frozen, and ``Recipe.bins``: a fully convolutional
    net trains on a wider band than its preset's, from a model of the preset's band (the
    weights do not depend on it), and the model it writes separates with that band and the
    extension above it."""
    import csv

    from keras_svs.training import Recipe, RunOptions, train, with_network_input

    musdb = write_musdb(tmp_path / "musdb", ["m1", "m2", "m3"], rate=RATE, seconds=2.0)
    write_splits(musdb, {"train": ["m1", "m2"], "valid": ["m3"]})
    pairs = write_pairs(tmp_path / "pairs", ["p1", "p2", "p3"], rate=RATE, seconds=2.0)
    write_splits(pairs, {"train": ["p1", "p2"], "valid": ["p3"]})
    init = tmp_path / "init.keras"
    build_model("tinystereo").save(init)
    recipe = Recipe(preset="tinystereo", epochs=2, pretrain_epochs=0, steps_per_epoch=3,
                    learning_rate=1e-2, loss="weighted", freeze_batch_norm=True, frames=128,
                    bins=128)
    options = RunOptions(verbose=0, init=str(init), gnsdr_clips=1)
    path = train([musdb, pairs], tmp_path / "run", recipe, options)
    model = load_model(path)
    assert settings(model).channels == 2
    assert settings(model).bins == 128 and get_preset("tinystereo").bins == 64
    assert tuple(model.input_shape) == (None, None, 128, 2)
    rows = list(csv.DictReader((tmp_path / "run" / "finetune" / "log.csv").open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert np.isfinite(float(rows[-1]["val_gnsdr"]))
    # the frozen batch norms kept the statistics of the model they started from
    start, end = load_model(init), model
    name = "vocals_down1_bn"
    for before, after in zip(start.get_layer(name).get_weights(),
                             end.get_layer(name).get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(start.get_layer("vocals_down1_conv").get_weights()[0],
                              end.get_layer("vocals_down1_conv").get_weights()[0])
    record = json.loads((tmp_path / "run" / "training.json").read_text())
    assert str(musdb) in json.dumps(record) and str(pairs) in json.dumps(record)
    assert record["config"]["bins"] == 128
    assert with_network_input(get_preset("tinystereo"), 128).frames == 128
    with pytest.raises(ValueError, match="multiple of 64"):
        with_network_input(get_preset("tinystereo"), 100)
    song = np.random.default_rng(0).standard_normal((2, RATE)).astype(np.float32) * 0.1
    stems = Separator(path, runtime="tensorflow").separate(song, RATE)
    assert stems["vocals"].shape == song.shape
    np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], song, atol=1e-5)


# -- evaluation ---------------------------------------------------------------------------
def test_musdb_is_scored_at_its_own_rate_and_channels(stereo_model_path, tmp_path):
    root = write_musdb(tmp_path / "musdb", ["song"], rate=16000, seconds=2.0)
    result = evaluation.evaluate(root, "all", "model", model=stereo_model_path, jobs=1,
                                 progress=False)
    clip = result["per_clip"][0]
    assert result["sample_rate"] == 16000 and clip["rate"] == 16000  # not the model's 8 kHz
    assert clip["samples"] == 32000
    assert np.isfinite(clip["voice"]["museval_SDR"]) and np.isfinite(clip["voice"]["SDR"])
    assert result["museval_scorer"] == evaluation.museval_scorer()
    assert result["extension"] == "top"
    from keras_svs import runtime

    auto = "litert-int8" if runtime.int8_pays() else "litert"
    assert result["runtime"] == (auto if runtime.litert_installed() else "tensorflow")
    on_tensorflow = evaluation.evaluate(root, "all", "model", model=stereo_model_path, jobs=1,
                                        progress=False, runtime="tensorflow")
    assert on_tensorflow["runtime"] == "tensorflow"
    assert on_tensorflow["voice"]["GNSDR"] == pytest.approx(result["voice"]["GNSDR"], abs=1e-3)


def test_museval_package_scores_v4_when_installed():
    metrics = evaluation._museval_metrics()
    if metrics is None:
        pytest.skip("museval is not installed (the [bench] extra)")
    assert evaluation.museval_scorer().startswith("museval ")
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 2, 3000))
    ests = refs + 0.3 * rng.standard_normal(refs.shape)
    ours = evaluation.museval_sdr(refs, ests, 1000)
    sdr = metrics.bss_eval(np.moveaxis(refs, -1, 1), np.moveaxis(ests, -1, 1),
                           compute_permutation=False, window=1000, hop=1000,
                           framewise_filters=False, bsseval_sources_version=False)[0]
    np.testing.assert_allclose(ours, np.median(sdr, axis=1))


@pytest.mark.parametrize("nets", [2, 1])
def test_the_inference_form_of_a_spleeter_model_is_the_same_function(stereo_model_path, nets):
    """The pair (``spleeter``) and the vocals net alone (``spleeter1``)."""
    from keras_svs.models.inference import inference_model

    if nets == 2:
        model = load_model(stereo_model_path)
    else:
        tiny = get_preset("tinystereo")
        model = build_model(dataclasses.replace(tiny, name="tinystereo1",
                                                arch={**tiny.arch, "nets": 1}))
        assert not any(layer.name.startswith("accompaniment_") for layer in model.layers)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # batch norms with statistics, so that nothing is trivial
        if "_bn" in layer.name:
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, variance.shape)])
    fast = inference_model(model)
    assert fast is not model and fast.name.endswith("_inference")
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in fast.layers)
    x = rng.random((2, 128, 64, 2)).astype(np.float32)
    np.testing.assert_allclose(fast(x, training=False).numpy(),
                               model(x, training=False).numpy(), atol=1e-5)
