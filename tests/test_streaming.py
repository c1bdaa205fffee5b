"""keras_svs.streaming: block-wise separation of files equals the one-piece Separator."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import TINY_RATE, synth_mixture
from keras_svs import audio, spectral, streaming
from keras_svs.models import build_model, get_preset
from keras_svs.separation import Separator

TOLERANCE = 1e-4  # max abs difference relative to the input's peak


def _write_input(path, rate, seconds, channels=2, seed=0):
    """A float WAV (lossless, so both paths see the same samples) of an odd length."""
    x = synth_mixture(rate, seconds, channels, seed=seed)
    x = x[:, :x.shape[1] - 37]  # a length that is a multiple of nothing in particular
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.T, rate, subtype="FLOAT")
    return x


def _stream(separator, path, out, **kwargs):
    outs = {s: out / f"{s}.wav" for s in ("vocals", "accompaniment")}
    written = streaming.separate_stream(separator, path, outs, bit_depth=32, **kwargs)
    assert written == outs
    return {s: sf.read(p, dtype="float32", always_2d=True) for s, p in written.items()}


def _check(separator, path, out, **kwargs):
    """Streams ``path``; returns the max difference to the one-piece separation
    relative to the peak, after checking rate, shape and that the stems sum to it."""
    x, rate = audio.read(path)
    whole = separator.separate(x, rate)
    stems = _stream(separator, path, out, **kwargs)
    peak = np.abs(x).max()
    worst = 0.0
    for stem, (data, stem_rate) in stems.items():
        assert stem_rate == rate
        assert data.T.shape == x.shape
        worst = max(worst, np.abs(data.T - whole[stem]).max() / peak)
    total = stems["vocals"][0] + stems["accompaniment"][0]
    assert np.abs(total.T - x).max() / peak < TOLERANCE
    assert sorted(p.name for p in out.iterdir()) == ["accompaniment.wav", "vocals.wav"]
    return worst


@pytest.fixture(scope="module")
def tiny_separator(tiny_model):
    return Separator(tiny_model, mask="soft")


@pytest.fixture(scope="module")
def unet_separator():
    keras.utils.set_random_seed(3)
    preset = dataclasses.replace(get_preset("unet"), arch=dict(filters=(2,) * 6))
    return Separator(build_model(preset), mask="soft")


@pytest.mark.parametrize("mode", ["average", "centre"])
def test_patch_model_at_its_rate(tiny_model, tmp_path, mode):
    separator = Separator(tiny_model, mask="soft", mode=mode)
    path = tmp_path / "in.wav"
    _write_input(path, TINY_RATE, 7.3)
    assert _check(separator, path, tmp_path / "out", block_seconds=1.0) < TOLERANCE


def test_patch_model_at_another_rate(tiny_separator, tmp_path):
    """22.05 kHz into the 8 kHz model: soxr.ResampleStream is bit-identical to the one-shot
    soxr.resample, so the same tolerance holds."""
    path = tmp_path / "in.wav"
    _write_input(path, 22050, 6.1, channels=2, seed=1)
    assert _check(tiny_separator, path, tmp_path / "out", block_seconds=0.7) < TOLERANCE


def test_unet_blocks_with_context(unet_separator, tmp_path):
    """A random-weight six-level U-Net: blocks of 64 model frames with 320 frames of context;
    25 s = 1563 frames, so the context is cut on both sides of inner blocks."""
    path = tmp_path / "in.wav"
    _write_input(path, 16000, 25.0, channels=2, seed=2)
    assert _check(unet_separator, path, tmp_path / "out", block_seconds=1.0) < TOLERANCE
    # without context the blocks are visibly wrong: the test sees the block edges
    worse = _check(unet_separator, path, tmp_path / "short", block_seconds=1.0, context=0)
    assert worse > 10 * TOLERANCE


def test_unet_mask_needs_the_whole_receptive_field(unet_separator):
    """At the mask level, 64 frames of context (one multiple) are measurably short of the
    receptive field; the default 320 give the one-piece mask to float rounding."""
    x = synth_mixture(16000, 25.0, 2, seed=2)[:, :-37]
    spectrum = spectral.stft_numpy(x, unet_separator.config)  # as Separator.separate
    magnitude = np.abs(spectrum.mean(axis=0))
    whole = unet_separator.voice_mask(magnitude)
    bins = unet_separator.settings.bins

    def blocks(context):
        parts = unet_separator.mask_blocks(lambda a, b: magnitude[a:b, :bins], whole.shape[0],
                                           64, context)
        return np.abs(np.concatenate([m for _, m in parts]) - whole).max()

    assert streaming.model_blocking(unet_separator) == (64, 320)
    assert blocks(320) < 1e-6
    assert blocks(64) > 1e-6


def test_unet_receptive_field_within_the_context(unet_separator):
    """A change of one input frame changes no output frame farther than the default
    context (320 frames), wherever the frame sits on the stride grid; it does reach
    beyond 256 frames (so four multiples would not do)."""
    _, context = streaming.model_blocking(unet_separator)
    rng = np.random.default_rng(5)
    magnitude = rng.random((1536, 512)).astype(np.float32) * 0.1
    base = unet_separator.voice_probability(magnitude)
    reach = 0
    for frame in range(704, 768, 7):
        changed = magnitude.copy()
        changed[frame] += 1.0
        moved = np.flatnonzero(np.any(unet_separator.voice_probability(changed) != base, axis=1))
        reach = max(reach, np.abs(moved - frame).max())
    assert 256 < reach <= context


def test_unet_at_another_rate(unet_separator, tmp_path):
    path = tmp_path / "in.flac"
    x = synth_mixture(44100, 2.0, 1, seed=4)[:, :-11]
    sf.write(path, x.T, 44100, subtype="PCM_24")
    assert _check(unet_separator, path, tmp_path / "out", block_seconds=0.5) < TOLERANCE


@pytest.fixture(scope="module")
def stereo_separator():
    keras.utils.set_random_seed(4)
    return Separator(build_model("tinystereo"))


@pytest.mark.parametrize("rate, channels", [(8000, 2), (8000, 1), (11025, 3)])
def test_stereo_model_blocks(stereo_separator, tmp_path, monkeypatch, rate, channels):
    """A stereo (``spleeter``-type) model streams in the whole-file path's model blocks
    (:meth:`Separator.fixed_blocks`, made small here so that a 6 s song takes several):
    each channel its own mask (a third the mean), a mono input in both, another rate
    resampled channel by channel; equal to the one-piece separation."""
    from keras_svs import separation

    monkeypatch.setattr(separation, "BLOCK_FRAMES", 128)
    monkeypatch.setattr(separation, "BLOCK_CONTEXT", 64)
    monkeypatch.setattr(streaming, "INPUT_BLOCK_SECONDS", 0.7)
    assert stereo_separator.fixed_blocks() == (128, 64)
    calls = []
    original = stereo_separator.predict
    monkeypatch.setattr(stereo_separator, "predict",
                        lambda m: calls.append(m.shape) or original(m))
    path = tmp_path / "in.wav"
    _write_input(path, rate, 6.0, channels=channels, seed=6)
    assert _check(stereo_separator, path, tmp_path / "out", block_seconds=1.0) < TOLERANCE
    assert len(calls) >= 2 * 5 and max(shape[0] for shape in calls) <= 256
    assert {shape[1:] for shape in calls} == {(64, 2)}  # (bins, model channels)


def test_input_blocks_shorter_than_model_blocks(unet_separator, tmp_path, monkeypatch):
    """The input-rate STFT and inverse run in shorter blocks than the model: still exact."""
    monkeypatch.setattr(streaming, "INPUT_BLOCK_SECONDS", 0.3)
    path = tmp_path / "in.wav"
    _write_input(path, 44100, 2.0, seed=5)
    spans = []
    original = spectral.overlap_add_numpy

    def overlap_add(spectrum, config, *args, **kwargs):
        spans.append(spectrum.shape[1] * config.hop_length / 44100)
        return original(spectrum, config, *args, **kwargs)

    monkeypatch.setattr(spectral, "overlap_add_numpy", overlap_add)
    assert _check(unet_separator, path, tmp_path / "out", block_seconds=1.5) < TOLERANCE
    streamed = sorted(spans)[:-1]  # the longest is the one-piece separation's
    assert len(streamed) >= 6 and max(streamed) < 0.35


def test_failure_leaves_no_file(tiny_separator, tmp_path, monkeypatch):
    path = tmp_path / "in.wav"
    _write_input(path, TINY_RATE, 5.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "vocals.wav").write_bytes(b"old")  # an existing output stays untouched
    calls = {"n": 0}
    original = tiny_separator.predict

    def failing(*args, **kwargs):  # the model, called once per model block
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("model failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_separator, "predict", failing)
    with pytest.raises(RuntimeError, match="model failed"):
        _stream(tiny_separator, path, out, block_seconds=0.5)
    assert calls["n"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["vocals.wav"]
    assert (out / "vocals.wav").read_bytes() == b"old"


def test_bad_inputs_write_nothing(tiny_separator, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(audio.AudioError, match="nothing.wav"):
        streaming.separate_stream(tiny_separator, tmp_path / "nothing.wav",
                                  {"vocals": out / "v.wav"})
    path = tmp_path / "in.wav"
    _write_input(path, TINY_RATE, 1.0)
    with pytest.raises(audio.AudioError, match="format"):
        streaming.separate_stream(tiny_separator, path, {"vocals": out / "v.mp4"})
    with pytest.raises(ValueError, match="stems"):
        streaming.separate_stream(tiny_separator, path, {"drums": out / "d.wav"})
    assert not out.exists()


def test_separate_file_stream_layout_and_pcm(tiny_separator, tmp_path):
    path = tmp_path / "my song.wav"
    x = _write_input(path, 16000, 2.0, channels=1)
    written = streaming.separate_file_stream(tiny_separator, path, tmp_path / "out",
                                             codec="flac", bit_depth=24,
                                             stems=("vocals",), block_seconds=0.5)
    assert written == {"vocals": tmp_path / "out" / "my song" / "vocals.flac"}
    assert audio.info(written["vocals"]) == (16000, 1, x.shape[1])
    assert sf.info(str(written["vocals"])).subtype == "PCM_24"
    whole = tiny_separator.separate(audio.read(path)[0], 16000)["vocals"]
    np.testing.assert_allclose(audio.read(written["vocals"])[0], whole, atol=2 ** -22)
    assert [p.name for p in (tmp_path / "out" / "my song").iterdir()] == ["vocals.flac"]


def test_reads_are_bounded_by_the_block(tiny_separator, tmp_path, monkeypatch):
    """No read from the file grows with its length: each is about a block."""
    path = tmp_path / "in.wav"
    _write_input(path, TINY_RATE, 9.0, channels=1)
    sizes = []
    original = audio.BlockReader.read

    def read(self, start, stop):
        sizes.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(audio.BlockReader, "read", read)
    _stream(tiny_separator, path, tmp_path / "out", block_seconds=1.0)
    assert len(sizes) > 10
    assert max(sizes) < 1.2 * TINY_RATE  # 1 s of audio + the STFT and patch context


def test_cli_block_seconds(tiny_model_path, tmp_path, monkeypatch):
    """``keras-svs separate --block-seconds``: long files stream (same output), short ones
    are separated whole; without the option, files over AUTO_STREAM_SECONDS stream."""
    from click.testing import CliRunner

    from keras_svs import batch
    from keras_svs.cli import main

    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    _write_input(long, 16000, 3.0, channels=2)
    _write_input(short, 16000, 0.8, channels=1)
    streamed = []
    original = streaming.separate_file_stream

    def spy(separator, path, *args, **kwargs):
        streamed.append(path.name)
        return original(separator, path, *args, **kwargs)

    monkeypatch.setattr(streaming, "separate_file_stream", spy)

    def cli(out, *extra):
        result = CliRunner().invoke(main, ["separate", str(long), str(short), "--model",
                                           str(tiny_model_path), "--mask", "soft",
                                           "--bit-depth", "32", "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        return {f"{name}/{s}": sf.read(out / name / f"{s}.wav", dtype="float32")[0]
                for name in ("long", "short") for s in ("vocals", "accompaniment")}

    blocks = cli(tmp_path / "blocks", "--block-seconds", "1")
    assert streamed == ["long.wav"]
    whole = cli(tmp_path / "whole")
    assert streamed == ["long.wav"]  # both shorter than the default AUTO_STREAM_SECONDS
    monkeypatch.setattr(batch, "AUTO_STREAM_SECONDS", 2.0)  # long.wav lasts 3 s
    automatic = cli(tmp_path / "auto")
    assert streamed == ["long.wav", "long.wav"]
    for key, data in whole.items():
        np.testing.assert_allclose(automatic[key], data, atol=1e-5)
    for key, data in whole.items():
        np.testing.assert_allclose(blocks[key], data, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "blocks" / "long").iterdir()) == [
        "accompaniment.wav", "vocals.wav"]
    # the automatic block is the streaming default (kept apart for a fast --help)
    assert batch.AUTO_BLOCK_SECONDS == streaming.DEFAULT_BLOCK_SECONDS
    result = CliRunner().invoke(main, ["separate", str(long), "--block-seconds", "0"])
    assert result.exit_code != 0


def test_progress_adds_up_to_the_length(tiny_separator, tmp_path):
    path = tmp_path / "in.wav"
    x = _write_input(path, TINY_RATE, 3.0)
    steps = []
    _stream(tiny_separator, path, tmp_path / "out", block_seconds=0.5, progress=steps.append)
    assert len(steps) >= 6 and all(s > 0 for s in steps) and sum(steps) == x.shape[1]
