"""Bad inputs: whatever a user hands ``keras-svs separate`` or ``Separator``, the
outcome is a correct separation or one clear error naming the file.

Every input is generated here, in ``tmp_path``. Each case runs through the command (click's
``CliRunner``, in process) and through :meth:`Separator.separate_file`; a few batches run
through the installed console script, as a user's terminal would see them.

* **Separated**: both stems exist with the input's sample rate, channel count and length
  in frames, every sample finite, float WAV (``--bit-depth 32``) stems that sum to the input
  within 1e-4 of its peak, and no other file in the output folder.
* **Refused**: a non-zero exit and exactly one ``Error:`` line on stderr naming the file
  (``AudioError``/``ValueError`` naming it from the API), no ``Traceback``, and the output
  folder exactly as it was before (no partial, empty or temporary file, no new folder).

``tests/conftest.py`` prints the number of cases at the end of the run.
"""
from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import TINY_RATE, synth_mixture
from keras_svs import audio
from keras_svs.cli import main

CONSOLE_SCRIPT = Path(sys.executable).parent / "keras-svs"
SECONDS = 0.5
STEM_FILES = ("accompaniment.wav", "vocals.wav")


# -- inputs -------------------------------------------------------------------------------
def mixture(rate: int = TINY_RATE, channels: int = 1, seconds: float = SECONDS,
            gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """A synthetic mixture ``(channels, samples)`` (peak about 0.35 before ``gain``)."""
    return synth_mixture(rate, seconds, channels, seed=seed) * np.float32(gain)


def encoded(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x.T, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def require_mp3() -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} here has no MP3 support, so no "
                    f"MP3 input can be made")


def png_bytes() -> bytes:
    """A real 4 x 4 RGB PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + bytes(range(12)) for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def audio_file(name: str, x: np.ndarray | Callable[[], np.ndarray], rate: int = TINY_RATE,
               subtype: str = "FLOAT", fmt: str | None = None):
    """A maker: writes ``x`` (``(channels, samples)``) to ``folder/name``."""
    def make(folder: Path) -> Path:
        data = x() if callable(x) else x
        path = folder / name
        sf.write(path, data.T, rate, subtype=subtype, format=fmt)
        return path
    return make


def raw_file(name: str, content: Callable[[], bytes]):
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content())
        return path
    return make


def missing(folder: Path) -> Path:
    return folder / "missing.wav"


def directory(folder: Path) -> Path:
    path = folder / "folder.wav"
    path.mkdir()
    return path


def wav_cut_in_header() -> bytes:
    return encoded(mixture(), TINY_RATE, "WAV", "PCM_16")[:30]


def wav_cut_in_data() -> bytes:
    """The first 1001 bytes of a 16-bit mono WAV's sample data (500.5 frames)."""
    full = encoded(mixture(), TINY_RATE, "WAV", "PCM_16")
    return full[:full.index(b"data") + 8 + 1001]


def flac_cut() -> bytes:
    full = encoded(mixture(), TINY_RATE, "FLAC", "PCM_16")
    return full[:len(full) // 2]


def mp3_bytes() -> bytes:
    require_mp3()
    return encoded(mixture(seconds=1.0), TINY_RATE, "MP3", "MPEG_LAYER_III")


def mp3_cut() -> bytes:
    full = mp3_bytes()
    return full[:len(full) // 2]


def with_values(x: np.ndarray, where: tuple, value: float) -> np.ndarray:
    x = x.copy()
    x[where] = value
    return x


# -- the output side ----------------------------------------------------------------------
def under(path, folder: Path) -> bool:
    try:
        return Path(os.path.abspath(os.fsdecode(path))).is_relative_to(folder)
    except (TypeError, ValueError):
        return False


def unwritable_output(out: Path, monkeypatch) -> None:
    """The output folder exists but is read-only (0o500). Root ignores permissions, so as
    root the refusal is simulated where the kernel would refuse: creating anything in it."""
    out.mkdir()
    out.chmod(0o500)
    if os.geteuid() != 0:
        return
    real_mkdir, real_open = os.mkdir, os.open

    def refuse(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def mkdir(path, *args, **kwargs):
        if under(path, out.resolve()):
            raise refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path, out.resolve()):
            raise refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def full_disk(at_write: int):
    """The disk fills up during the ``at_write``-th stem: half its frames reach the disk,
    then the write fails with ENOSPC (in ``soundfile.SoundFile.write``, which ``audio``
    calls once per stem for a whole file)."""
    def setup(out: Path, monkeypatch) -> None:
        real = sf.SoundFile.write
        calls = []

        def write(self, data):
            calls.append(self.name)
            if len(calls) < at_write:
                return real(self, data)
            real(self, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)

        monkeypatch.setattr(sf.SoundFile, "write", write)
    return setup


def full_disk_stream(at_call: int):
    """As :func:`full_disk` for streamed separation, which writes block by block: the
    ``at_call``-th block write fails with ENOSPC."""
    def setup(out: Path, monkeypatch) -> None:
        real = sf.SoundFile.write
        calls = []

        def write(self, data):
            calls.append(self.name)
            if len(calls) >= at_call:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            return real(self, data)

        monkeypatch.setattr(sf.SoundFile, "write", write)
    return setup


def existing_output(out: Path, monkeypatch) -> None:
    (out / "good").mkdir(parents=True)
    (out / "good" / "vocals.wav").write_bytes(b"an earlier result")


def output_is_a_file(out: Path, monkeypatch) -> None:
    out.write_bytes(b"a file, not a folder")


# -- the cases ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path]
    #: fragments the Error line must hold (besides the file's name); None: separated
    error: tuple[str, ...] | None = None
    #: the length the stems must have, where the case knows it
    frames: int | None = None
    #: breaks the output side: ``(out, monkeypatch)``
    setup: Callable | None = None
    #: the file an error must name, if not the input (a name under the output folder)
    names: str | None = None
    cli_only: bool = False


GOOD = audio_file("good.wav", lambda: mixture(channels=2))
N = int(round(TINY_RATE * SECONDS))

CASES = [
    # not audio at all
    Case("missing-file", missing, ("no such file",)),
    Case("directory", directory, ("is a directory",)),
    Case("empty-file", raw_file("empty.wav", lambda: b""), ("empty file (0 bytes)",)),
    Case("text-named-wav", raw_file("notes.wav", lambda: b"just some text\n" * 50),
         ("not a readable audio file",)),
    Case("png-named-wav", raw_file("picture.wav", png_bytes), ("not a readable audio file",)),
    # damaged files
    Case("wav-cut-in-header", raw_file("cut_header.wav", wav_cut_in_header),
         ("not a readable audio file",)),
    Case("wav-cut-in-data", raw_file("cut_data.wav", wav_cut_in_data), frames=500),
    Case("flac-cut", raw_file("cut.flac", flac_cut), ("damaged or truncated",)),
    Case("mp3-cut", raw_file("cut.mp3", mp3_cut)),
    Case("mp3", raw_file("song.mp3", mp3_bytes)),
    Case("flac-named-wav", raw_file("really_flac.wav",
                                    lambda: encoded(mixture(), TINY_RATE, "FLAC", "PCM_24")),
         frames=N),
    # odd lengths and levels
    Case("zero-frames", audio_file("zero.wav", np.zeros((2, 0), np.float32), subtype="PCM_16"),
         ("holds no audio samples",)),
    Case("one-frame", audio_file("one.wav", lambda: mixture()[:, :1]), frames=1),
    Case("shorter-than-a-patch", audio_file("short.wav", lambda: mixture()[:, :300]),
         frames=300),
    Case("digital-silence", audio_file("silence.wav", np.zeros((2, N), np.float32),
                                       subtype="PCM_16"), frames=N),
    Case("dc-offset", audio_file("dc.wav", lambda: mixture() + np.float32(0.5)), frames=N),
    Case("full-scale-clipping", audio_file("clipped.wav",
                                           lambda: np.clip(mixture(gain=8.0), -1, 1),
                                           subtype="PCM_16"), frames=N),
    Case("float-above-full-scale", audio_file("loud.wav", lambda: mixture(gain=12.0)),
         frames=N),
    Case("nan-samples", audio_file("nan.wav", lambda: with_values(mixture(), (0, 104), np.nan)),
         ("NaN", "first at 0.013 s")),
    Case("inf-samples", audio_file("inf.wav", lambda: with_values(mixture(), (0, 7), np.inf)),
         ("infinite",)),
    Case("minus-inf-in-one-channel-float64",
         audio_file("neginf.wav", lambda: with_values(mixture(channels=2), (1, slice(50, 60)),
                                                      -np.inf), subtype="DOUBLE"),
         ("infinite", "10 of 4000 frames")),
    # channels, rates, sample formats
    *[Case(f"channels-{c}", audio_file(f"ch{c}.wav", (lambda c=c: mixture(16000, c)),
                                       16000, "PCM_16"), frames=8000)
      for c in (1, 2, 6, 8)],
    *[Case(f"rate-{r}", audio_file(f"r{r}.wav", (lambda r=r: mixture(r, 2 if r == 44100 else 1)),
                                   r, "PCM_16"), frames=int(round(r * SECONDS)))
      for r in (8000, 11025, 22050, 44100, 48000, 96000, 192000)],
    *[Case(f"wav-{subtype.lower()}", audio_file(f"{subtype}.wav",
                                                (lambda: mixture(22050, 2)), 22050, subtype),
           frames=int(round(22050 * SECONDS)))
      for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")],
    # file names
    Case("unicode-name", audio_file("voix é 声 ♪.wav", lambda: mixture()), frames=N),
    Case("spaces-in-name", audio_file("my  song (final mix) .wav", lambda: mixture()),
         frames=N),
    Case("quotes-and-dots-in-name", audio_file("it's \"v2.1\".WAV", lambda: mixture()),
         frames=N),
    # the output side
    Case("output-folder-unwritable", GOOD, ("Permission denied",), setup=unwritable_output,
         names="good/vocals.wav"),
    Case("output-disk-full-first-stem", GOOD, ("No space left on device",),
         setup=full_disk(1), names="good/vocals.wav"),
    Case("output-disk-full-second-stem", GOOD, ("No space left on device",),
         setup=full_disk(2), names="good/accompaniment.wav"),
    Case("output-folder-is-a-file", GOOD, ("Not a directory",), setup=output_is_a_file,
         names="good/vocals.wav"),
    Case("output-exists-no-overwrite", GOOD, ("exists", "--overwrite"),
         setup=existing_output, names="good/vocals.wav", cli_only=True),
]
assert len({case.id for case in CASES}) == len(CASES) >= 40  # at least 40 cases

#: Cases also run through streamed separation (``--block-seconds``), where the input is
#: readable in blocks: what it separates, what it refuses, its own full disk.
STREAM_BLOCK = "0.1"
STREAM_CASES = [case for case in CASES
                if not case.id.startswith(("mp3", "output-disk-full", "minus-inf"))
                and (case.error is None or case.id in ("nan-samples", "inf-samples")
                     or case.setup is not None)] + [
    Case("output-disk-full-streamed", GOOD, ("No space left on device",),
         setup=full_disk_stream(3), names="good/vocals.wav")]


# -- checks -------------------------------------------------------------------------------
def tree(folder: Path) -> dict[str, bytes | None]:
    """Everything under ``folder``: ``{relative path: bytes (files) or None (folders)}``."""
    if not folder.exists():
        return {}
    if not folder.is_dir():
        return {".": folder.read_bytes()}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_separated(path: Path, out: Path, before: dict, expected_frames: int | None):
    """Both float-WAV stems of ``path`` in ``out/<stem>/``, nothing else new; right rate,
    channels and length; finite; summing to the input."""
    reference, rate = sf.read(str(path), dtype="float32", always_2d=True)
    reference = reference.T
    if expected_frames is not None:
        assert reference.shape[1] == expected_frames
    folder = out / path.stem
    new = {k: v for k, v in tree(out).items() if k not in before}
    assert sorted(new) == sorted([folder.name] + [f"{folder.name}/{f}" for f in STEM_FILES])
    stems = {}
    for name in STEM_FILES:
        info = sf.info(str(folder / name))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            rate, reference.shape[0], reference.shape[1], "FLOAT"), name
        stems[name], _ = sf.read(str(folder / name), dtype="float32", always_2d=True)
        assert np.isfinite(stems[name]).all(), name
    total = (stems["vocals.wav"] + stems["accompaniment.wav"]).T
    peak = float(np.abs(reference).max())
    if peak == 0:  # digital silence in, digital silence out
        assert not any(np.any(s) for s in stems.values())
    else:
        assert float(np.abs(total - reference).max()) <= 1e-4 * peak


def named(line: str, case: Case, path: Path, out: Path) -> bool:
    target = str(out / case.names) if case.names else str(path)
    return target in line


@pytest.fixture(scope="module")
def separator(litert_model_path):
    from keras_svs import Separator

    return Separator(litert_model_path)


RUNS = [pytest.param(case, frontend, id=f"{frontend}:{case.id}")
        for case in CASES for frontend in ("cli", "api")
        if not (case.cli_only and frontend == "api")] + [
    pytest.param(case, "stream", id=f"stream:{case.id}") for case in STREAM_CASES]


@pytest.mark.parametrize("case, frontend", RUNS)
def test_bad_input(case, frontend, litert_model_path, separator, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    path = case.make(folder)
    out = tmp_path / "out"
    if case.setup is not None:
        case.setup(out, monkeypatch)
    before = tree(out)
    try:
        streamed = []
        if frontend == "stream":
            from keras_svs import streaming

            real_stream = streaming.separate_stream
            monkeypatch.setattr(streaming, "separate_stream",
                                lambda *a, **k: streamed.append(a[1]) or real_stream(*a, **k))
        if frontend in ("cli", "stream"):
            blocks = ["--block-seconds", STREAM_BLOCK] if frontend == "stream" else []
            result = run_cli("separate", path, "--model", litert_model_path, "-o", out,
                             "--bit-depth", "32", *blocks)
            assert "Traceback" not in result.output, result.output
            if case.error is None:
                assert result.exit_code == 0, result.output
                assert error_lines(result.stderr) == [], result.stderr
            else:
                assert result.exit_code == 1, result.output
                assert isinstance(result.exception, SystemExit), result.exception
                lines = error_lines(result.stderr)
                assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, result.stderr
                assert named(lines[0], case, path, out), lines[0]
                for fragment in case.error:
                    assert fragment in lines[0], lines[0]
                assert result.stdout == ""
        else:
            if case.error is None:
                separator.separate_file(path, out, bit_depth=32)
            else:
                with pytest.raises(ValueError) as caught:  # AudioError is a ValueError
                    separator.separate_file(path, out, bit_depth=32)
                message = str(caught.value)
                assert named(message, case, path, out), message
                for fragment in case.error:
                    assert fragment in message, message
    finally:
        monkeypatch.undo()
        if out.is_dir():
            out.chmod(0o700)
    if (frontend == "stream" and not case.cli_only
            and (case.frames or N) > float(STREAM_BLOCK) * TINY_RATE * 2):
        assert streamed, "not separated in blocks"
    if case.error is None:
        assert_separated(path, out, before, case.frames)
    else:
        assert tree(out) == before  # nothing new, nothing changed, no temporary file


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_separator_refuses_non_finite_waveforms(separator, value):
    x = with_values(mixture(channels=2), (1, 10), value)
    with pytest.raises(ValueError, match="NaN or infinite"):
        separator.separate(x, TINY_RATE)


# -- decoders -----------------------------------------------------------------------------
#: Cases decided when the file is read. librosa's audioread fallback, which reads what
#: libsndfile cannot, uses ffmpeg where ffmpeg is on PATH: each of these must end the same
#: with and without it.
READ_CASES = [case for case in CASES if case.setup is None and not case.cli_only]

#: Run in a subprocess (argv: the tests folder, an empty folder): reads each case's file
#: with ``audio.read`` and prints ``{"backends": [...], case id: outcome}`` as JSON.
READ_SCRIPT = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import audioread
import pytest
from keras_svs import audio
from test_bad_inputs import READ_CASES
outcomes = {"backends": [backend.__name__ for backend in audioread.available_backends()]}
for case in READ_CASES:
    folder = Path(sys.argv[2]) / case.id
    folder.mkdir()
    try:
        path = case.make(folder)
    except pytest.skip.Exception as skipped:
        outcomes[case.id] = {"skipped": str(skipped)}
        continue
    try:
        outcomes[case.id] = {"path": str(path), "frames": audio.read(path)[0].shape[-1]}
    except audio.AudioError as error:
        outcomes[case.id] = {"path": str(path), "error": str(error)}
print(json.dumps(outcomes))
"""


def path_with_ffmpeg(folder: Path) -> str:
    """PATH with, first, ``folder/ffmpeg``: a link to imageio-ffmpeg's bundled binary."""
    imageio_ffmpeg = pytest.importorskip(
        "imageio_ffmpeg", reason="imageio-ffmpeg (the [dev] extra, requirements-lock.txt) "
        "is not installed, so there is no ffmpeg to read through")
    folder.mkdir()
    (folder / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return os.pathsep.join([str(folder), os.environ.get("PATH", "")])


def path_without_ffmpeg() -> str:
    """PATH without the folders that hold an ``ffmpeg`` or ``avconv`` executable."""
    return os.pathsep.join(
        folder for folder in os.environ.get("PATH", "").split(os.pathsep)
        if not any(os.access(Path(folder, name), os.X_OK) for name in ("ffmpeg", "avconv")))


@pytest.mark.parametrize("decoder", ["ffmpeg", "no-ffmpeg"])
def test_read_outcomes_are_the_same_with_and_without_ffmpeg(decoder, tmp_path):
    path = (path_with_ffmpeg(tmp_path / "bin") if decoder == "ffmpeg"
            else path_without_ffmpeg())
    (tmp_path / "in").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", READ_SCRIPT, str(Path(__file__).parent), str(tmp_path / "in")],
        cwd=tmp_path, env={**os.environ, "PATH": path}, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.splitlines()[-1])
    assert ("FFmpegAudioFile" in outcomes.pop("backends")) == (decoder == "ffmpeg")
    assert sorted(outcomes) == sorted(case.id for case in READ_CASES)
    for case in READ_CASES:
        outcome = outcomes[case.id]
        if "skipped" in outcome:
            continue
        if case.error is None:
            assert "frames" in outcome, (case.id, outcome)
            assert case.frames is None or outcome["frames"] == case.frames, (case.id, outcome)
        else:
            assert "error" in outcome, (case.id, outcome)
            assert outcome["path"] in outcome["error"], (case.id, outcome)
            for fragment in case.error:
                assert fragment in outcome["error"], (case.id, outcome)


# -- batches ------------------------------------------------------------------------------
@pytest.fixture
def batch(tmp_path):
    """good_a.wav, notes.wav (text), nan.wav, good_b.wav."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [audio_file("good_a.wav", lambda: mixture(seed=1))(folder),
            raw_file("notes.wav", lambda: b"just some text\n" * 50)(folder),
            audio_file("nan.wav", lambda: with_values(mixture(), (0, 100), np.nan))(folder),
            audio_file("good_b.wav", lambda: mixture(seed=2))(folder)]


def test_batch_reports_and_skips_each_bad_file(litert_model_path, batch, tmp_path):
    out = tmp_path / "out"
    result = run_cli("separate", *batch, "--model", litert_model_path, "-o", out,
                     "--bit-depth", "32")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(f"Error: {batch[1]}: ") and "not a readable" in lines[0]
    assert lines[1].startswith(f"Error: {batch[2]}: ") and "NaN" in lines[1]
    assert lines[2] == "Error: 2 of 4 files failed"
    assert sorted(tree(out)) == sorted(["good_a", "good_b"] + [
        f"{t}/{f}" for t in ("good_a", "good_b") for f in STEM_FILES])
    for good in (batch[0], batch[3]):
        before = {k: v for k, v in tree(out).items() if not k.startswith(good.stem)}
        assert_separated(good, out, before, N)


def test_fail_fast_stops_at_the_first_failure(litert_model_path, batch, tmp_path):
    out = tmp_path / "out"
    result = run_cli("separate", *batch, "--model", litert_model_path, "-o", out,
                     "--fail-fast", "--bit-depth", "32")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"Error: {batch[1]}: ") and "not a readable" in lines[0]
    assert lines[1] == ("Error: stopped at the first failure (--fail-fast): 1 of 4 files "
                        "separated, 2 not tried")
    assert "nan.wav" not in result.stderr and "good_b" not in result.stderr
    assert sorted(tree(out)) == ["good_a"] + [f"good_a/{f}" for f in STEM_FILES]
    assert_separated(batch[0], out, {}, N)


def test_fail_fast_with_the_first_file_bad_writes_nothing(litert_model_path, batch, tmp_path):
    out = tmp_path / "out"
    result = run_cli("separate", batch[2], batch[0], batch[3], "--model", litert_model_path,
                     "-o", out, "--fail-fast")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 2 and "nan.wav" in lines[0], result.stderr
    assert "0 of 3 files separated, 2 not tried" in lines[1]
    assert not out.exists()


def test_fail_fast_on_a_full_disk_keeps_only_complete_files(litert_model_path, batch, tmp_path,
                                                             monkeypatch):
    """The disk fills during the second file's second stem: the first file stays complete,
    the second leaves nothing, the third is not tried."""
    out = tmp_path / "out"
    goods = [batch[0], batch[3],
             audio_file("good_c.wav", lambda: mixture(seed=3))(batch[0].parent)]
    full_disk(4)(out, monkeypatch)  # the 4th stem written: good_b/accompaniment.wav
    result = run_cli("separate", *goods, "--model", litert_model_path, "-o", out, "--fail-fast",
                     "--bit-depth", "32")
    monkeypatch.undo()
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(f"Error: {goods[1]}: {out / 'good_b' / 'accompaniment.wav'}: "
                               f"cannot be written (No space left on device)"), lines[0]
    assert "1 of 3 files separated, 1 not tried" in lines[1]
    assert sorted(tree(out)) == ["good_a"] + [f"good_a/{f}" for f in STEM_FILES]


def test_fail_fast_when_every_file_is_good(litert_model_path, batch, tmp_path):
    out = tmp_path / "out"
    result = run_cli("separate", batch[0], batch[3], "--model", litert_model_path, "-o", out,
                     "--fail-fast")
    assert result.exit_code == 0, result.output
    assert error_lines(result.stderr) == []
    assert sorted(tree(out)) == sorted(["good_a", "good_b"] + [
        f"{t}/{f}" for t in ("good_a", "good_b") for f in STEM_FILES])


# -- the installed program ----------------------------------------------------------------
def console(*args, **kwargs) -> subprocess.Popen:
    command = ([str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists()
               else [sys.executable, "-m", "keras_svs.cli"])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen(command + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def limit_file_size() -> None:  # runs in the child: files may not grow past 20 kB
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file-size limits")
def test_console_script_batch_and_full_disk(litert_model_path, tmp_path):
    """The real program, as a terminal sees it: (1) a batch of every kind of unreadable
    input and one good file; (2) a real failed write from libsndfile: the output files may
    not grow past 20 kB (RLIMIT_FSIZE, as a nearly full disk), the stems need 32 kB."""
    folder = tmp_path / "in"
    folder.mkdir()
    bad = [case.make(folder) for case in CASES
           if case.error is not None and case.setup is None]
    good = audio_file("good.wav", lambda: mixture(seconds=1.0))(folder)
    batch_out, full_out = tmp_path / "batch_out", tmp_path / "full_out"
    batch_run = console("separate", *bad, good, "--model", litert_model_path, "-o", batch_out)
    full_run = console("separate", good, "--model", litert_model_path, "-o", full_out,
                       "--bit-depth", "32", preexec_fn=limit_file_size)
    stdout, stderr = batch_run.communicate(timeout=300)
    full_stdout, full_stderr = full_run.communicate(timeout=300)

    assert batch_run.returncode == 1 and stdout == ""
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == len(bad) + 1, stderr
    for path, line in zip(bad, lines):
        assert line.startswith(f"Error: {path}: "), line
    assert lines[-1] == f"Error: {len(bad)} of {len(bad) + 1} files failed"
    others = [line for line in stderr.splitlines() if line and line not in lines]
    assert len(others) == 2 and others[0].startswith(f"{good} -> "), stderr  # + the summary
    assert sorted(tree(batch_out)) == ["good"] + [f"good/{f}" for f in STEM_FILES]

    assert full_run.returncode == 1 and full_stdout == ""
    assert "Traceback" not in full_stderr
    assert full_stderr.splitlines() == [
        f"Error: {full_out / 'good' / 'vocals.wav'}: cannot be written (the system refused "
        f"the write; is the disk full?)"], full_stderr
    assert tree(full_out) == {}


def _long_input(folder: Path, seconds: float = 600.0) -> Path:
    """A mono file long enough to be mid-write for a while (streamed in 1 s blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal(int(seconds * TINY_RATE)) * 0.1).astype(np.float32),
             TINY_RATE, subtype="PCM_16")
    return path


def _wait_for_temporaries(folder: Path, process: subprocess.Popen, timeout: float = 240.0):
    """Poll until a writer's temporary file exists under ``folder``; its paths."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in folder.rglob(".*") if p.is_file()] if folder.exists() else []
        if found:
            return found
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.kill()
    pytest.fail("no temporary file appeared")


def _signalled_mid_file(model, tmp_path: Path, out: Path, signum) -> subprocess.Popen:
    """Start ``keras-svs separate`` on a long file into ``out`` and send it ``signum`` once
    its first temporary file exists."""
    process = console("separate", _long_input(tmp_path / "in"), "--model", model, "-o", out,
                      "--block-seconds", "1")
    _wait_for_temporaries(out, process)
    process.send_signal(signum)
    return process


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_mid_file_leaves_nothing(litert_model_path, tmp_path):
    """A container stop or a scheduler's kill (SIGTERM) mid-file ends the run as Ctrl-C
    does: exit 1, one Error line, no file (temporary or not) in the output folder."""
    import signal

    out = tmp_path / "out"
    process = _signalled_mid_file(litert_model_path, tmp_path, out, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert error_lines(stderr) == ["Error: terminated"], stderr
    assert "Traceback" not in stderr
    assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_next_run_removes_what_a_killed_run_left(litert_model_path, tmp_path):
    """After SIGKILL no handler runs and temporary files stay; the next run into that folder
    removes them (their writer's process is gone), and leaves a running writer's alone."""
    import signal

    out = tmp_path / "out"
    process = _signalled_mid_file(litert_model_path, tmp_path, out, signal.SIGKILL)
    process.communicate(timeout=60)
    left = [p for p in out.rglob(".*") if p.is_file()]
    assert left and all(p.parent == out / "long" for p in left)
    alive = out / "long" / f".vocals.{os.getppid()}-keep.wav"  # pytest's parent: running
    alive.write_bytes(b"")
    short = _long_input(tmp_path / "again", seconds=1.0)
    result = run_cli("separate", short, "--model", litert_model_path, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "long").iterdir()) == sorted(
        [alive.name, *STEM_FILES])
