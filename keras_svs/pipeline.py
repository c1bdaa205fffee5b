"""tf.data pipelines (TensorFlow is imported by the functions that build them): decoded-audio cache, remix/pitch augmentation, spectrogram patches, IBMs.

Data flow::

    tracks --decode (once, threads)--> DecodedAudio (model rate, mono; optional HDF5 cache)
           --random crop, remix, gain, pitch (tf)--> voice, accompaniment segments
           --STFT (tf.signal)--> (input magnitude patch, target patch) --batch--> model

Stages (``stage`` argument):

* ``"finetune"``: input ``|X|``, target the (smoothed) IBM ``|V| > |A|``, or with
  ``target="psa"`` the phase-sensitive mask ``clip(Re(V conj X) / |X|^2, 0, 1)``;
* ``"pretrain"``: autoencoder, input and target ``IBM * |X|`` (the voice's share of the
  mixture magnitude, in [0, 1]).

Patches are ``(frames, bins)``: the preset's patch length and the lowest ``bins`` bins.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from . import spectral
from .datasets import DatasetError, Track
from .models.presets import Preset

STAGES = ("pretrain", "finetune")
#: fine-tuning targets: the smoothed IBM (the paper), or the phase-sensitive mask
TARGETS = ("ibm", "psa")
MAX_PITCH_SEMITONES = 3.0


@dataclasses.dataclass
class DecodedAudio:
    """The sources of many tracks at one rate, concatenated along time (the decode cache).

    Attributes:
        names: track names.
        voice, accompaniment: float32 ``(total_samples,)`` (mono) or ``(channels,
            total_samples)`` (for a model of ``channels > 1``: see :func:`decode`).
        starts, lengths: int64 ``(tracks,)``: where each track lies in the arrays.
        sample_rate: Hz.
    """

    names: list[str]
    voice: np.ndarray
    accompaniment: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    sample_rate: int

    def track(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(voice, accompaniment)`` of track ``i``, each ``(samples,)`` or ``(channels,
        samples)``."""
        s = slice(self.starts[i], self.starts[i] + self.lengths[i])
        return self.voice[..., s], self.accompaniment[..., s]

    @property
    def channels(self) -> int:
        """Audio channels of the sources (1: mono arrays without a channel axis)."""
        return 1 if self.voice.ndim == 1 else self.voice.shape[0]

    @property
    def seconds(self) -> float:
        """Total duration in seconds."""
        return float(self.lengths.sum()) / self.sample_rate


def decode(tracks: list[Track], sample_rate: int, jobs: int | None = None,
           skip_bad: bool = False, channels: int = 1) -> DecodedAudio:
    """Decode and resample every track's two sources at ``sample_rate``.

    Args:
        tracks: the tracks to decode.
        sample_rate: rate in Hz of the decoded sources.
        jobs: decoding threads (default: one per CPU).
        skip_bad: skip a track that cannot be used (unreadable, stems of different
            lengths, non-finite samples) with a warning on stderr, instead of failing.
        channels: 1: the mono mix of each source; 2: its first two channels, a mono
            source (MIR-1K's) in both (what a stereo model sees of a mono song).

    Raises:
        DatasetError: naming the first track that cannot be used (or, with ``skip_bad``,
            when none can).
    """
    if not tracks:
        raise DatasetError("no tracks to decode")

    def load(track: Track):  # audio.read, under Track.load, refuses NaN/Inf samples too
        try:
            voice, accompaniment, _ = track.load(sample_rate, mono=channels == 1)
            return _with_channels(voice, channels), _with_channels(accompaniment, channels)
        except DatasetError as error:
            return error

    with ThreadPoolExecutor(jobs or os.cpu_count()) as pool:
        results = list(pool.map(load, tracks))
    kept, loaded = [], []
    for track, result in zip(tracks, results):
        if isinstance(result, DatasetError):
            if not skip_bad:
                raise DatasetError(f"{result} (track {track.name!r}; --skip-bad skips such "
                                   f"tracks)")
            warnings.warn(f"skipping track {track.name!r}: {result}", stacklevel=2)
            continue
        kept.append(track)
        loaded.append(result)
    if not kept:
        raise DatasetError(f"none of the {len(tracks)} tracks could be used")
    lengths = np.array([v.shape[-1] for v, _ in loaded], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return DecodedAudio([t.name for t in kept],
                        np.concatenate([v for v, _ in loaded], axis=-1),
                        np.concatenate([a for _, a in loaded], axis=-1),
                        starts, lengths, sample_rate)


def _with_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``(c, samples)`` -> ``(samples,)`` for 1 channel, else ``(channels, samples)`` (the
    first ``channels``; a mono source repeated)."""
    if channels == 1:
        return x[0]
    if x.shape[0] == 1:
        return np.repeat(x, channels, axis=0)
    if x.shape[0] < channels:
        raise DatasetError(f"{x.shape[0]} channels, the model takes {channels}")
    return np.ascontiguousarray(x[:channels])


def concatenate(parts: list[DecodedAudio]) -> DecodedAudio:
    """One decode cache of several (same rate and channels), tracks in order.

    Raises:
        ValueError: the parts differ in rate or channels, or there are none.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    if len({(p.sample_rate, p.channels) for p in parts}) > 1:
        raise ValueError("decoded audio of different rates or channels cannot be joined")
    if len(parts) == 1:
        return parts[0]
    lengths = np.concatenate([p.lengths for p in parts])
    return DecodedAudio([n for p in parts for n in p.names],
                        np.concatenate([p.voice for p in parts], axis=-1),
                        np.concatenate([p.accompaniment for p in parts], axis=-1),
                        np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
                        lengths, parts[0].sample_rate)


def save_hdf5(decoded: DecodedAudio, path: str | os.PathLike,
              config: spectral.StftConfig | None = None) -> Path:
    """Write the decode cache to HDF5 (what ``keras-svs prepare`` writes).

    With ``config``, also stores each track's mixture magnitude ``|X|`` (float16,
    ``(frames, bins)``) and IBM (uint8) under ``spectra/<name>/`` for inspection and reuse.
    """
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["sample_rate"] = decoded.sample_rate
        f.create_dataset("names", data=np.array(decoded.names, dtype=object),
                         dtype=h5py.string_dtype())
        for key in ("voice", "accompaniment", "starts", "lengths"):
            f.create_dataset(key, data=getattr(decoded, key))
        if config is not None:
            f.attrs["stft"] = [config.sample_rate, config.n_fft, config.win_length,
                               config.hop_length]
            for i, name in enumerate(decoded.names):
                v, a = decoded.track(i)
                sv, sa = spectral.stft(v, config), spectral.stft(a, config)
                group = f.create_group(f"spectra/{name}")
                group["magnitude"] = spectral.magnitude(sv + sa).numpy().astype(np.float16)
                group["ibm"] = spectral.ibm(tf.abs(sv), tf.abs(sa)).numpy().astype(np.uint8)
    os.replace(tmp, path)
    return path


def load_hdf5(path: str | os.PathLike, names: list[str] | None = None) -> DecodedAudio:
    """Read a decode cache written by :func:`save_hdf5`, optionally only some tracks."""
    with h5py.File(path, "r") as f:
        all_names = [n.decode() if isinstance(n, bytes) else n for n in f["names"][()]]
        starts, lengths = f["starts"][()], f["lengths"][()]
        keep = range(len(all_names)) if names is None else [
            all_names.index(n) for n in names if n in all_names]
        missing = set(names or []) - set(all_names)
        if missing:
            raise DatasetError(f"{path}: cache lacks {len(missing)} tracks, e.g. "
                               f"{sorted(missing)[0]!r}; run keras-svs prepare again")
        voice, accompaniment = f["voice"], f["accompaniment"]
        pieces = [(voice[..., starts[i]:starts[i] + lengths[i]],
                   accompaniment[..., starts[i]:starts[i] + lengths[i]]) for i in keep]
        rate = int(f.attrs["sample_rate"])
    sel_lengths = np.array([lengths[i] for i in keep], np.int64)
    return DecodedAudio([all_names[i] for i in keep],
                        np.concatenate([v for v, _ in pieces], axis=-1),
                        np.concatenate([a for _, a in pieces], axis=-1),
                        np.concatenate([[0], np.cumsum(sel_lengths)[:-1]]).astype(np.int64),
                        sel_lengths, rate)


def input_statistics(decoded: DecodedAudio, preset: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std ``(bins,)`` of the network input (``log(|X| + eps)`` when the
    preset takes logs) over every frame of the mixtures."""
    from .models.layers import LOG_EPS

    total = np.zeros(preset.bins)
    total_sq = np.zeros(preset.bins)
    count = 0
    for i in range(len(decoded.names)):
        v, a = decoded.track(i)
        x = np.abs(spectral.stft_numpy(v + a, preset.stft))[..., :preset.bins]
        x = x.reshape(-1, preset.bins)  # the frames of every channel
        if preset.log_input:
            x = np.log(x + LOG_EPS)
        total += x.sum(0)
        total_sq += np.square(x, dtype=np.float64).sum(0)
        count += x.shape[0]
    mean = total / count
    return mean.astype(np.float32), np.sqrt(np.maximum(total_sq / count - mean ** 2, 0)).astype(
        np.float32)


def patch_samples(preset: Preset) -> int:
    """Samples in one training patch of ``preset.frames`` frames."""
    return preset.stft.num_samples(preset.frames)


def steps_per_epoch(decoded: DecodedAudio, preset: Preset, batch_size: int) -> int:
    """Batches in one pass over the data in non-overlapping patches (at least 1)."""
    patches = int(decoded.lengths.sum()) // (preset.frames * preset.stft.hop_length)
    return max(1, patches // batch_size)


def training_dataset(decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                     batch_size: int | None = None, remix: float | None = None,
                     pitch: float = 0.0, gain_db: float = 6.0, seed: int = 0,
                     target: str = "ibm") -> tf.data.Dataset:
    """An endless, shuffled stream of training batches.

    Each patch comes from a random position of a clip drawn with probability proportional
    to its length. With probability ``remix`` the accompaniment comes from another random
    clip and both sources get a random gain in ``[-gain_db, gain_db]`` dB; a remixed voice
    is pitch-shifted by resampling (1 to 3 semitones up or down) with probability ``pitch``.

    Args:
        decoded: the decode cache.
        preset: STFT settings, patch size, label smoothing, defaults.
        stage: ``"pretrain"`` or ``"finetune"`` (see the module docstring).
        batch_size: default ``preset.batch_size``.
        remix: default ``preset.remix``; 0 disables remixing.
        pitch: probability of a pitch shift among remixed patches (default 0).
        gain_db: remix gain range in dB (default 6).
        seed: random seed; the stream is deterministic given it.
        target: the fine-tuning target, one of :data:`TARGETS`.

    Returns:
        ``tf.data.Dataset`` of ``(input, target)``, both float32
        ``(batch, preset.frames, preset.bins)``.
    """
    import tensorflow as tf

    _check_stage(stage, target)
    if decoded.channels != 1:
        raise ValueError("tf.data batches are mono; multichannel audio takes the NumPy "
                         "loader (keras_svs.batches)")
    batch_size = batch_size or preset.batch_size
    remix = preset.remix if remix is None else remix
    seg = patch_samples(preset)
    reach = int(np.ceil(seg * 2 ** (MAX_PITCH_SEMITONES / 12))) + 1
    pad = np.zeros(reach, np.float32)
    voice = tf.constant(np.concatenate([decoded.voice, pad]))
    accompaniment = tf.constant(np.concatenate([decoded.accompaniment, pad]))
    starts = tf.constant(decoded.starts)
    lengths = tf.constant(decoded.lengths)
    logits = tf.math.log(tf.cast(lengths, tf.float32))[tf.newaxis]

    def crop(source, clip, span, key):
        room = tf.maximum(lengths[clip] - span, 0) + 1
        offset = tf.random.stateless_uniform([], key, 0, tf.cast(room, tf.int32), tf.int32)
        begin = starts[clip] + tf.cast(offset, tf.int64)
        inside = tf.range(reach, dtype=tf.int64) < lengths[clip] - tf.cast(offset, tf.int64)
        return source[begin:begin + reach] * tf.cast(inside, tf.float32)  # no bleed

    def sample(index):
        keys = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), index]),
                                                      8)
        clips = tf.random.stateless_categorical(logits, 2, keys[0])[0]
        u = tf.random.stateless_uniform([4], keys[1])
        remixed = u[0] < remix
        shifted = tf.logical_and(remixed, u[1] < pitch)
        semitones = tf.random.stateless_uniform([], keys[2], 1.0, MAX_PITCH_SEMITONES)
        semitones = tf.where(u[2] < 0.5, -semitones, semitones)
        rate = tf.where(shifted, 2.0 ** (semitones / 12.0), 1.0)
        span = tf.cast(tf.math.ceil(seg * rate), tf.int64)
        v = _resample_linear(crop(voice, clips[0], span, keys[3]), rate, seg)
        a_clip = tf.where(remixed, clips[1], clips[0])
        a = crop(accompaniment, a_clip, seg, tf.where(remixed, keys[4], keys[3]))[:seg]
        gains = 10.0 ** (tf.random.stateless_uniform([2], keys[5], -gain_db, gain_db) / 20.0)
        gains = tf.where(remixed, gains, tf.ones([2]))
        return _example(v * gains[0], a * gains[1], preset, stage, target)

    ds = tf.data.Dataset.range(2 ** 62).map(sample, num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def validation_segments(decoded: DecodedAudio, preset: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping patch-long segment of every clip (the last zero-padded when a
    clip is shorter than a patch): voice and accompaniment, float32 ``(n, patch_samples)``
    (``(n, channels, patch_samples)`` for multichannel audio)."""
    seg = patch_samples(preset)
    step = preset.frames * preset.stft.hop_length
    voices, accompaniments = [], []

    def cut(x, begin):
        piece = x[..., begin:begin + seg]
        return np.pad(piece, [(0, 0)] * (x.ndim - 1) + [(0, seg - piece.shape[-1])])

    for i in range(len(decoded.names)):
        v, a = decoded.track(i)
        for begin in range(0, max(v.shape[-1] - seg, 0) + 1, step):
            voices.append(cut(v, begin))
            accompaniments.append(cut(a, begin))
    return np.stack(voices), np.stack(accompaniments)


def validation_dataset(decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                       batch_size: int | None = None, target: str = "ibm") -> tf.data.Dataset:
    """Every non-overlapping patch of every clip, no augmentation, cached; finite.

    Returns:
        ``tf.data.Dataset`` of ``(input, target)`` batches as in :func:`training_dataset`.
    """
    import tensorflow as tf

    _check_stage(stage, target)
    ds = tf.data.Dataset.from_tensor_slices(validation_segments(decoded, preset))
    ds = ds.map(lambda v, a: _example(v, a, preset, stage, target),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size or preset.batch_size).cache().prefetch(tf.data.AUTOTUNE)


def _example(voice: tf.Tensor, accompaniment: tf.Tensor, preset: Preset,
             stage: str, target: str = "ibm") -> tuple[tf.Tensor, tf.Tensor]:
    """Segments ``(patch_samples,)`` -> ``(input, target)`` patches ``(frames, bins)``."""
    sv = spectral.stft(voice, preset.stft, padded=False)[:, :preset.bins]
    sa = spectral.stft(accompaniment, preset.stft, padded=False)[:, :preset.bins]
    mixture = spectral.magnitude(sv + sa)
    v_mag, a_mag = spectral.magnitude(sv), spectral.magnitude(sa)
    if stage == "pretrain":
        vocal = spectral.ibm(v_mag, a_mag) * mixture
        return vocal, vocal
    if target == "psa":
        return mixture, spectral.phase_sensitive_mask(sv, sv + sa)
    return mixture, spectral.ibm(v_mag, a_mag, preset.label_smoothing)


def _resample_linear(signal: tf.Tensor, rate: tf.Tensor, length: int) -> tf.Tensor:
    """Read ``signal`` at ``rate`` samples per output sample (a pitch/speed shift by
    ``rate``), by linear interpolation: ``(n,)`` -> ``(length,)``."""
    import tensorflow as tf

    position = tf.range(length, dtype=tf.float32) * rate
    low = tf.cast(tf.floor(position), tf.int32)
    frac = position - tf.cast(low, tf.float32)
    return tf.gather(signal, low) * (1.0 - frac) + tf.gather(signal, low + 1) * frac


def _check_stage(stage: str, target: str = "ibm") -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
