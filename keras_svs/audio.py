"""Audio files in and out: any format, rate and channel count; resampling; atomic writes.

Audio arrays in keras-svs are float32 of shape ``(channels, samples)`` with values
nominally in [-1, 1]. This is the only module that touches audio files.
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

#: Output formats ``write`` accepts, by file extension.
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}
#: Default sample encodings per (format, bit depth).
_SUBTYPES = {
    ("WAV", 16): "PCM_16", ("WAV", 24): "PCM_24", ("WAV", 32): "FLOAT",
    ("FLAC", 16): "PCM_16", ("FLAC", 24): "PCM_24",
    ("OGG", 16): "VORBIS", ("OGG", 24): "VORBIS", ("OGG", 32): "VORBIS",
    ("MP3", 16): "MPEG_LAYER_III", ("MP3", 24): "MPEG_LAYER_III", ("MP3", 32): "MPEG_LAYER_III",
}
#: MP3's default bitrate in kbit/s (:func:`write`'s ``bitrate``), and the constant bitrates
#: libsndfile's encoder (LAME) sets by its compression level, per rate range: MPEG-1 (32 kHz
#: and up), MPEG-2 (16-24 kHz), MPEG-2.5 (8-12 kHz).
MP3_BITRATE = 320
_MP3_BITRATES = ((32000, 32, 320), (16000, 8, 160), (0, 8, 64))


def mp3_compression(bitrate: int, sample_rate: int) -> float:
    """libsndfile's compression level (0 best .. 1) for a constant ``bitrate`` (kbit/s) at
    ``sample_rate``: it maps the level linearly onto the rate's bitrate range
    (:data:`_MP3_BITRATES`), and LAME takes the standard bitrate nearest to that; a bitrate
    above the range's top gives its top."""
    low, high = next((lo, hi) for floor, lo, hi in _MP3_BITRATES if sample_rate >= floor)
    return min(max((high - bitrate) / (high - low), 0.0), 0.999)


class AudioError(ValueError):
    """An audio file could not be read or written; the message names the file."""


def read(path: str | os.PathLike, sample_rate: int | None = None,
         mono: bool = False) -> tuple[np.ndarray, int]:
    """Read an audio file.

    Args:
        path: a wav/flac/ogg/mp3/aiff file (anything libsndfile reads; other formats
            through librosa's audioread fallback).
        sample_rate: resample to this rate in Hz; ``None`` (default) keeps the file's.
        mono: average the channels into one (default False).

    Returns:
        ``(audio, rate)``: float32 array ``(channels, samples)`` and its rate in Hz.

    Raises:
        AudioError: naming the file: it is missing, unreadable (not audio, damaged or
            truncated so that no samples decode), holds no samples, or holds NaN or
            infinite samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.is_file() and path.stat().st_size == 0:
        raise AudioError(f"{path}: is an empty file (0 bytes), not an audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = data.T
    except Exception as sf_error:  # libsndfile could not read it: try audioread
        audio, rate = _read_with_librosa(path, sf_error)
    if audio.shape[-1] == 0:
        raise AudioError(f"{path}: holds no audio samples")
    check_finite(audio, path, rate)
    if mono:
        audio = audio.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def _read_with_librosa(path: Path, cause: Exception) -> tuple[np.ndarray, int]:
    """Decode a file libsndfile could not (``cause``) with librosa's audioread fallback
    (ffmpeg, GStreamer or Core Audio, where installed).

    A fallback decoder may turn a damaged file into zero samples rather than fail (ffmpeg
    does so with a cut FLAC), so an empty result counts as a failure when libsndfile reads
    the file's header: the file is in a format libsndfile knows, and its samples are bad.

    Returns:
        ``(audio, rate)``: float32 ``(channels, samples)``; no samples only where no
        decoder but the fallback knows the format and it found none.

    Raises:
        AudioError: naming ``path``: not a readable audio file (no decoder reads it), or
            damaged or truncated audio data (libsndfile reads the header, not the samples).
    """
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception:
        decoded = None
    if decoded is not None and np.size(decoded) > 0:
        return np.atleast_2d(decoded).astype(np.float32), int(rate)
    try:  # a header libsndfile reads, but samples no decoder can
        sf.info(str(path))
    except Exception:
        if decoded is not None:  # a format only the fallback reads, holding no samples
            return np.zeros((1, 0), np.float32), int(rate)
        raise AudioError(f"{path}: not a readable audio file ({cause})") from None
    raise AudioError(f"{path}: damaged or truncated audio data ({cause})") from None


def check_finite(audio: np.ndarray, path: str | os.PathLike, rate: int | None = None) -> None:
    """Raise :class:`AudioError` naming ``path`` if ``audio`` holds NaN or infinite samples
    (a float file can store them; separating them would give garbage, not stems)."""
    finite = np.isfinite(audio)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.all(axis=0))
    where = (f"{bad[0] / rate:.3f} s" if rate else f"sample {bad[0]}")
    kinds = " and ".join(name for name, hit in (("NaN", np.isnan(audio).any()),
                                                  ("infinite", np.isinf(audio).any())) if hit)
    raise AudioError(f"{path}: holds {kinds} samples ({bad.size} of {audio.shape[-1]} "
                     f"frames, the first at {where}); only finite samples can be separated")


def info(path: str | os.PathLike) -> tuple[int, int, int]:
    """Return ``(sample_rate, channels, frames)`` of an audio file without decoding it all."""
    meta = sf.info(str(path))
    return int(meta.samplerate), int(meta.channels), int(meta.frames)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) along the last axis.

    Args:
        audio: float array ``(..., samples)`` at ``rate_in`` Hz.
        rate_in, rate_out: sample rates in Hz.

    Returns:
        float32 array ``(..., round(samples * rate_out / rate_in))``.
    """
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    import soxr  # what librosa.resample(res_type="soxr_hq") calls; a librosa dependency

    x = np.asarray(audio, np.float32)
    flat = x.reshape(-1, x.shape[-1])
    out = np.stack([soxr.resample(row, rate_in, rate_out, quality="HQ") for row in flat])
    length = round(x.shape[-1] * rate_out / rate_in)  # soxr gives ceil(...); keep round(...)
    out = out[:, :length] if out.shape[-1] >= length else np.pad(
        out, ((0, 0), (0, length - out.shape[-1])))
    return out.reshape(*x.shape[:-1], length).astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels: ``(channels, samples)`` -> ``(samples,)``."""
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write(path: str | os.PathLike, audio: np.ndarray, sample_rate: int,
          bit_depth: int = 16, bitrate: int = MP3_BITRATE) -> Path:
    """Write audio atomically: to a temporary file beside ``path``, then renamed.

    A failure (full disk, bad folder) leaves no file at ``path``.

    Args:
        path: destination; the extension picks the format (.wav, .flac, .ogg, .mp3).
        audio: float array ``(channels, samples)`` or ``(samples,)``.
        sample_rate: rate in Hz (MP3: 8 to 48 kHz).
        bit_depth: 16 or 24 (integer PCM) or 32 (float WAV). Default 16.
        bitrate: MP3's constant bitrate in kbit/s (default 320; at most 160 below 32 kHz
            and 64 below 16 kHz); other formats ignore it.

    Returns:
        the written path.

    Raises:
        AudioError: naming ``path``: a format or bit depth it cannot store, or a write that
            failed (no permission, full disk, ...).
    """
    return write_all({path: audio}, sample_rate, bit_depth, bitrate)[0]


def write_all(outputs: dict, sample_rate: int, bit_depth: int = 16,
              bitrate: int = MP3_BITRATE) -> list[Path]:
    """Write several files all or nothing: each to a temporary file beside it, and only
    when all are complete are they renamed into place (:class:`BlockWriters`, one block
    per file).

    A failure (full disk, no permission, bad folder) removes the temporary files and the
    folders this call created, so none of the destinations is created or changed (and
    should a rename itself fail, the files already renamed into place are removed).

    Args:
        outputs: ``{path: audio}`` as for :func:`write`.
        sample_rate, bit_depth, bitrate: as for :func:`write`.

    Returns:
        the written paths, in the order of ``outputs``.

    Raises:
        AudioError: naming the file that could not be written.
    """
    arrays = {Path(path): np.atleast_2d(np.asarray(data, np.float32))
              for path, data in outputs.items()}
    writers = BlockWriters({path: path for path in arrays}, sample_rate,
                           {path: data.shape[0] for path, data in arrays.items()}, bit_depth,
                           bitrate)
    for path, data in arrays.items():
        writers.write(path, data)
    writers.commit()
    return list(arrays)


def _frames(audio: np.ndarray, subtype: str) -> np.ndarray:
    """``(channels, samples)`` or ``(samples,)`` float audio as the ``(samples, channels)``
    array libsndfile writes: clipped to [-1, 1] for integer PCM, and already 16-bit for
    ``PCM_16`` (converting here is faster than libsndfile's float conversion; the values
    may differ from libsndfile's by one least significant bit)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    if subtype == "PCM_16":
        out = np.empty(audio.shape[::-1], np.int16)
        # libsndfile's scale: reading divides by 32768; +1.0 becomes 32767
        np.clip(np.rint(audio.T * 32768.0), -32768, 32767, out=out, casting="unsafe")
        return out
    if subtype.startswith(("PCM", "MPEG")):
        audio = np.clip(audio, -1.0, 1.0)
    return np.ascontiguousarray(audio.T)


def _encoding(path: Path, bit_depth: int) -> tuple[str, str]:
    """``(format, subtype)`` libsndfile writes ``path`` with; :class:`AudioError` if the
    extension, the bit depth or the destination (a folder) cannot be written."""
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write this format; use one of {sorted(WRITE_FORMATS)}")
    subtype = _SUBTYPES.get((fmt, bit_depth))
    if subtype is None:
        raise AudioError(f"{path}: {fmt} cannot store {bit_depth}-bit samples")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, cannot write a file there")
    return fmt, subtype


def _make_dirs(folder: Path, made: list[Path]) -> None:
    """``mkdir -p folder``, adding the folders it creates (outermost first) to ``made``."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        made.append(folder)


def _reason(error: Exception) -> str:
    """A short reason for a failed write: the OS's words where there are some."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, AssertionError) or (isinstance(error, sf.LibsndfileError)
                                             and error.code == 2):
        # soundfile: libsndfile wrote fewer frames than asked, or SF_ERR_SYSTEM (errno lost)
        return "the system refused the write; is the disk full?"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# -- block by block (streaming separation of long files) ----------------------------------
class BlockReader:
    """Ranges of samples of an audio file without decoding it whole.

    ``read(start, stop)`` returns float32 ``(channels, stop - start)``, zeros outside the
    file (``start`` may be negative). Use as a context manager, or call :meth:`close`.

    Raises:
        AudioError: naming the file: missing, unreadable by libsndfile, or empty.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(f"{self.path}: no such file")
        try:
            self.file = sf.SoundFile(str(self.path))
        except Exception as error:
            raise AudioError(f"{self.path}: cannot be read in blocks ({_reason(error)})") \
                from None
        self.rate = int(self.file.samplerate)
        self.channels = int(self.file.channels)
        self.length = int(self.file.frames)
        if self.length <= 0:
            self.file.close()
            raise AudioError(f"{self.path}: holds no audio samples")

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((self.channels, stop - start), np.float32)
        a, b = max(start, 0), min(stop, self.length)
        if b > a:
            try:
                if self.file.tell() != a:
                    self.file.seek(a)
                data = self.file.read(b - a, dtype="float32", always_2d=True)
            except Exception as error:
                raise AudioError(f"{self.path}: damaged or truncated audio data "
                                 f"({_reason(error)})") from None
            if data.shape[0] < b - a:
                raise AudioError(f"{self.path}: damaged or truncated audio data (samples "
                                 f"{a + data.shape[0]} to {b} of {self.length} missing)")
            finite = np.isfinite(data).all(axis=1)
            if not finite.all():
                first = (a + int(np.argmin(finite))) / self.rate
                raise AudioError(f"{self.path}: holds NaN or infinite samples (the first at "
                                 f"{first:.3f} s); only finite samples can be separated")
            out[:, a - start:a - start + data.shape[0]] = data.T
        return out

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "BlockReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _temporary_prefix(path: Path, pid: int | None = None) -> str:
    """Prefix of the temporary files written for ``path``: ``.<stem>.<writer's pid>-``."""
    return f".{path.stem}.{os.getpid() if pid is None else pid}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


#: Set while the process is being stopped (SIGTERM: :func:`keras_svs.batch.sigterm_as_interrupt`
#: sets it): :meth:`BlockWriters.commit` then renames nothing into place and raises
#: ``KeyboardInterrupt("terminated")``, even where native code swallowed the exception that the
#: signal's handler raised.
STOPPING = threading.Event()


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that writers of ``path`` left behind when they were
    killed outright (SIGKILL, a power cut: no handler ran): files named as
    :class:`BlockWriters` names them, ``.<stem>.<pid>-<random><suffix>`` beside ``path``,
    whose writing process no longer runs. A running writer's files are left alone.

    Returns:
        the files removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.stem)}.*-*{path.suffix}"):
        pid = candidate.name[len(path.stem) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


class BlockWriters:
    """Several audio files written block by block, all or nothing (as :func:`write_all`):
    to temporary files beside their destinations, renamed into place by :meth:`commit`;
    :meth:`abort` (or any failure) removes the temporary files and the folders made.
    Temporary files that a killed earlier writer of the same destination left behind are
    removed first (:func:`remove_stale_temporaries`).

    Args:
        paths: ``{key: destination}``; the extension picks the format as in :func:`write`.
        sample_rate: of every file.
        channels: of every file, or ``{key: channels}``.
        bit_depth: 16 or 24 (integer PCM) or 32 (float WAV).
        bitrate: MP3's constant bitrate in kbit/s (as :func:`write`'s).

    Raises:
        AudioError: naming the file that cannot be written.
    """

    def __init__(self, paths: dict, sample_rate: int, channels: int | dict,
                 bit_depth: int = 16, bitrate: int = MP3_BITRATE):
        self.paths = {key: Path(p) for key, p in paths.items()}
        if not isinstance(channels, dict):
            channels = dict.fromkeys(self.paths, channels)
        self.subtypes, self.temps, self.files, self.made = {}, {}, {}, []
        formats = {}
        for key, path in self.paths.items():  # check everything before creating anything
            formats[key], self.subtypes[key] = _encoding(path, bit_depth)
        key = None
        try:
            for key, path in self.paths.items():
                _make_dirs(path.parent, self.made)
                remove_stale_temporaries(path)
                fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=path.suffix,
                                           dir=path.parent)
                os.close(fd)
                self.temps[key] = Path(tmp)
                mp3 = (dict(compression_level=mp3_compression(bitrate, sample_rate),
                            bitrate_mode="CONSTANT") if formats[key] == "MP3" else {})
                self.files[key] = sf.SoundFile(tmp, "w", int(sample_rate), int(channels[key]),
                                               self.subtypes[key], format=formats[key], **mp3)
        except BaseException as error:
            self._fail(key, error)

    def write(self, key, block: np.ndarray) -> None:
        """Append ``block`` float ``(channels, samples)`` to file ``key`` (ignored if the
        key was not asked for)."""
        if key not in self.files:
            return
        data = _frames(block, self.subtypes[key])
        try:
            self.files[key].write(data)
        except BaseException as error:
            self._fail(key, error)

    def commit(self) -> dict:
        """Close the files and rename them into place; ``{key: destination}``.

        Raises:
            AudioError: a file cannot be closed or renamed (nothing is left in place).
            KeyboardInterrupt: :data:`STOPPING` is set (the temporary files are removed).
        """
        key = None
        try:
            for key, f in self.files.items():
                f.close()
            mode = 0o666 & ~_umask()
            for key, tmp in self.temps.items():
                os.chmod(tmp, mode)
            if STOPPING.is_set():
                raise KeyboardInterrupt("terminated")
            placed = []
            try:
                for key, tmp in self.temps.items():
                    os.replace(tmp, self.paths[key])
                    placed.append(self.paths[key])
            except BaseException:
                for done in placed:
                    done.unlink(missing_ok=True)
                raise
        except BaseException as error:
            self._fail(key, error)
        return dict(self.paths)

    def abort(self) -> None:
        """Remove the temporary files and the folders made; no destination is touched."""
        for f in self.files.values():
            with contextlib.suppress(Exception):
                f.close()
        for tmp in self.temps.values():
            tmp.unlink(missing_ok=True)
        for path in self.paths.values():  # also one made but not yet recorded when a
            if path.parent.is_dir():       # signal interrupted the constructor
                for tmp in path.parent.glob(f"{glob.escape(_temporary_prefix(path))}*"
                                            f"{path.suffix}"):
                    tmp.unlink(missing_ok=True)
        for folder in reversed(self.made):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def _fail(self, key, error: BaseException):
        self.abort()
        if isinstance(error, Exception) and not isinstance(error, AudioError):
            path = self.paths.get(key, next(iter(self.paths.values()), ""))
            raise AudioError(f"{path}: cannot be written ({_reason(error)})") from error
        raise error
