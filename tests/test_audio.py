"""keras_svs.audio: reading, writing, resampling."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from keras_svs import audio


def _signal(channels: int, n: int = 2000, peak: float = 0.9, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (peak * (2 * rng.random((channels, n)) - 1)).astype(np.float32)


@pytest.mark.parametrize("suffix,bits,subtype,tol", [
    (".wav", 16, "PCM_16", 1.0 / 2 ** 15),
    (".wav", 24, "PCM_24", 1.0 / 2 ** 23),
    (".wav", 32, "FLOAT", 0.0),
    (".flac", 16, "PCM_16", 1.0 / 2 ** 15),
    (".flac", 24, "PCM_24", 1.0 / 2 ** 23),
])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_write_read_round_trip(tmp_path, suffix, bits, subtype, tol, channels):
    x = _signal(channels)
    path = audio.write(tmp_path / f"x{suffix}", x, 22050, bit_depth=bits)
    assert path == tmp_path / f"x{suffix}"
    assert sf.info(str(path)).subtype == subtype
    y, rate = audio.read(path)
    assert rate == 22050
    assert y.dtype == np.float32
    assert y.shape == (channels, 2000)
    np.testing.assert_allclose(y, x, atol=tol, rtol=0)
    assert audio.info(path) == (22050, channels, 2000)


def test_float_wav_keeps_values_above_one(tmp_path):
    x = np.array([[0.0, 1.5, -2.25, 3.0, 0.5]], np.float32)
    y, _ = audio.read(audio.write(tmp_path / "loud.wav", x, 8000, bit_depth=32))
    np.testing.assert_array_equal(y, x)


def test_pcm_write_clips_to_full_scale(tmp_path):
    x = np.array([[0.0, 1.5, -2.25, 0.5]], np.float32)
    y, _ = audio.read(audio.write(tmp_path / "clip.wav", x, 8000, bit_depth=16))
    assert np.all(np.abs(y) <= 1.0)
    np.testing.assert_allclose(y[0, 1:3], [1.0, -1.0], atol=1e-4)


def test_one_dimensional_input_is_written_as_mono(tmp_path):
    x = _signal(1)[0]
    y, _ = audio.read(audio.write(tmp_path / "m.wav", x, 8000, bit_depth=32))
    assert y.shape == (1, x.size)
    np.testing.assert_array_equal(y[0], x)


def test_read_mono_and_resample_options(tmp_path):
    x = _signal(2, n=4410)
    path = audio.write(tmp_path / "s.wav", x, 44100, bit_depth=32)
    y, rate = audio.read(path, mono=True)
    assert (y.shape, rate) == ((1, 4410), 44100)
    np.testing.assert_allclose(y[0], x.mean(axis=0), atol=1e-6)
    y, rate = audio.read(path, sample_rate=16000)
    assert (y.shape, rate) == ((2, round(4410 * 16000 / 44100)), 16000)


@pytest.mark.parametrize("n", [44100, 44101, 22050, 12345, 100003])
def test_resample_keeps_frequency_and_length(n):
    t = np.arange(n) / 44100
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]
    y = audio.resample(x, 44100, 16000)
    assert y.dtype == np.float32
    assert y.shape == (1, round(n * 16000 / 44100))
    spectrum = np.abs(np.fft.rfft(y[0] * np.hanning(y.shape[-1])))
    peak_hz = np.argmax(spectrum) * 16000 / y.shape[-1]
    assert abs(peak_hz - 1000) < 16000 / y.shape[-1] + 1e-9
    # the amplitude survives too (away from the edges)
    middle = y[0, y.shape[-1] // 4: 3 * y.shape[-1] // 4]
    assert np.max(np.abs(middle)) == pytest.approx(0.5, abs=0.01)


def test_resample_same_rate_is_identity():
    x = _signal(2)
    np.testing.assert_array_equal(audio.resample(x, 8000, 8000), x)


def test_to_mono():
    x = _signal(3)
    np.testing.assert_allclose(audio.to_mono(x), x.mean(axis=0))
    row = x[0]
    assert audio.to_mono(row) is row


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name,bits", [("x.flac", 32), ("x.wav", 8), ("x.mp3", 8),
                                       ("x.aiff", 16)])
def test_write_refuses_bad_format_or_depth_and_leaves_nothing(tmp_path, name, bits):
    with pytest.raises(audio.AudioError, match=name.replace(".", r"\.")):
        audio.write(tmp_path / name, _signal(1), 8000, bit_depth=bits)
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path):
    with pytest.raises(Exception):
        audio.write(tmp_path / "bad.wav", _signal(2), 0)  # libsndfile refuses rate 0
    assert _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    path = audio.write(tmp_path / "keep.wav", _signal(1), 8000)
    before = path.read_bytes()
    with pytest.raises(Exception):
        audio.write(path, _signal(1, seed=3), -5)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == ["keep.wav"]


def test_successful_write_leaves_no_temp_file_and_creates_folders(tmp_path):
    path = audio.write(tmp_path / "a" / "b" / "out.flac", _signal(2), 16000, bit_depth=24)
    assert path.is_file()
    assert _leftovers(path.parent) == ["out.flac"]


def test_ogg_round_trip(tmp_path):
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    y, rate = audio.read(audio.write(tmp_path / "x.ogg", x, 16000))
    assert rate == 16000 and y.shape[0] == 1
    assert abs(y.shape[1] - 16000) <= 1024  # a lossy codec may pad


def test_mp3_read(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3, so no MP3 test file can be made")
    t = np.arange(44100) / 44100
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = tmp_path / "tone.mp3"
    try:
        sf.write(str(path), np.stack([x, x], axis=1), 44100, format="MP3")
    except Exception as error:  # pragma: no cover - depends on the libsndfile build
        pytest.skip(f"soundfile could not write MP3 here: {error}")
    y, rate = audio.read(path)
    assert rate == 44100
    assert y.shape[0] == 2
    assert abs(y.shape[1] - 44100) < 3000  # encoder delay and padding
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) * 44100 / y.shape[1] - 1000) < 5
    y16, rate16 = audio.read(path, sample_rate=16000, mono=True)
    assert rate16 == 16000 and y16.shape[0] == 1


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(audio.AudioError, match="missing.wav"):
        audio.read(tmp_path / "missing.wav")
    with pytest.raises(audio.AudioError, match="is a directory"):
        audio.read(tmp_path)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(audio.AudioError, match="junk.wav"):
        audio.read(junk)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(audio.AudioError, match="empty.wav"):
        audio.read(empty)
    assert issubclass(audio.AudioError, ValueError)


def test_written_files_get_the_usual_permissions(tmp_path):
    path = audio.write(tmp_path / "x.wav", np.zeros((1, 100), np.float32), 8000)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("rate, bitrate", [(44100, 320), (44100, 128), (22050, 64)])
def test_mp3_is_written_at_its_bitrate_and_reads_back_whole(tmp_path, rate, bitrate):
    seconds = 4.0
    x = (0.3 * np.random.default_rng(0).standard_normal((2, int(rate * seconds)))
         ).astype(np.float32)
    path = audio.write(tmp_path / "noise.mp3", x, rate, bitrate=bitrate)
    assert sf.info(str(path)).format == "MP3"
    kbps = path.stat().st_size * 8 / seconds / 1000
    assert abs(kbps - bitrate) < 0.1 * bitrate, kbps
    back, back_rate = audio.read(path)
    assert back_rate == rate and back.shape == x.shape


def test_mp3_at_a_rate_it_cannot_store_leaves_nothing(tmp_path):
    x = np.zeros((2, 9600), np.float32)
    with pytest.raises(audio.AudioError, match="vocals.mp3"):
        audio.write_all({tmp_path / "out" / "vocals.wav": x,
                         tmp_path / "out" / "vocals.mp3": x}, 96000)
    assert not (tmp_path / "out").exists()
