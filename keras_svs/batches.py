"""NumPy training batches: the examples of :mod:`keras_svs.pipeline`, for any Keras backend.

:func:`keras_svs.pipeline.training_dataset` builds its stream with tf.data; this module makes
the same kind of examples with NumPy alone, so that training runs where TensorFlow is not
installed (``KERAS_BACKEND=jax`` on a GPU machine, for instance). A whole batch is made at
once, vectorised: random crops, remix of two clips' sources with random gains, pitch/speed
shift of the voice by linear resampling, STFT (:func:`keras_svs.spectral.stft_numpy`) and
the IBM or autoencoder target. Batch ``k`` of a stream depends only on ``(seed, k)``.

Shapes: inputs and targets are float32 ``(batch, preset.frames, preset.bins)``, or
``(batch, preset.frames, preset.bins, channels)`` for multichannel audio (a ``spleeter``
model's stereo input: the IBM of each channel).
"""
from __future__ import annotations

import collections
import multiprocessing
from typing import Iterator

import numpy as np

from . import spectral
from .models.presets import Preset
from .pipeline import (MAX_PITCH_SEMITONES, STAGES, TARGETS, DecodedAudio, patch_samples,
                       validation_segments)


class PatchSampler:
    """Makes training batches from a decode cache.

    Args:
        decoded: mono voice and accompaniment of the training clips.
        preset: STFT settings, patch size, label smoothing.
        stage: ``"pretrain"`` (target = input = ``IBM * |X|``) or ``"finetune"``
            (input ``|X|``, target the smoothed IBM).
        batch_size: patches per batch.
        remix: probability that a patch takes its accompaniment from another random clip
            (both sources then get a random gain in ``[-gain_db, gain_db]`` dB).
        pitch: probability that a remixed voice is shifted by 1 to 3 semitones up or down.
        gain_db: remix gain range in dB.
        seed: the stream's seed.
        target: the fine-tuning target, one of :data:`keras_svs.pipeline.TARGETS`.
    """

    def __init__(self, decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                 batch_size: int | None = None, remix: float | None = None,
                 pitch: float = 0.0, gain_db: float = 6.0, seed: int = 0,
                 target: str = "ibm"):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.preset, self.stage, self.seed, self.target = preset, stage, int(seed), target
        self.batch_size = batch_size or preset.batch_size
        self.remix = preset.remix if remix is None else remix
        self.pitch, self.gain_db = pitch, gain_db
        self.segment = patch_samples(preset)
        reach = int(np.ceil(self.segment * 2 ** (MAX_PITCH_SEMITONES / 12))) + 2
        pad = [(0, 0)] * (decoded.voice.ndim - 1) + [(0, reach)]
        self.voice = np.pad(decoded.voice, pad)
        self.accompaniment = np.pad(decoded.accompaniment, pad)
        self.starts, self.lengths = decoded.starts, decoded.lengths
        self.weights = decoded.lengths / decoded.lengths.sum()

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``index`` of the stream: ``(input, target)``."""
        rng = np.random.default_rng([self.seed, int(index)])
        n = self.batch_size
        clips = rng.choice(len(self.lengths), size=(n, 2), p=self.weights)
        remixed = rng.random(n) < self.remix
        shifted = remixed & (rng.random(n) < self.pitch)
        semitones = rng.uniform(1.0, MAX_PITCH_SEMITONES, n) * rng.choice([-1.0, 1.0], n)
        rate = np.where(shifted, 2.0 ** (semitones / 12.0), 1.0)
        voice_clip = clips[:, 0]
        accompaniment_clip = np.where(remixed, clips[:, 1], clips[:, 0])
        voice_offset = self._offsets(rng, voice_clip, np.ceil(self.segment * rate))
        accompaniment_offset = np.where(
            remixed, self._offsets(rng, accompaniment_clip, np.full(n, self.segment)),
            voice_offset)
        gains = np.where(remixed[:, None], 10.0 ** (rng.uniform(-self.gain_db, self.gain_db,
                                                                (n, 2)) / 20.0), 1.0)
        gains = gains.reshape(n, 2, *[1] * self.voice.ndim)  # over channels, samples
        v = self._read(self.voice, voice_clip, voice_offset, rate) * gains[:, 0]
        a = self._read(self.accompaniment, accompaniment_clip, accompaniment_offset,
                       np.ones(n)) * gains[:, 1]
        return examples(v.astype(np.float32), a.astype(np.float32), self.preset, self.stage,
                        self.target)

    def _offsets(self, rng: np.random.Generator, clip: np.ndarray,
                 span: np.ndarray) -> np.ndarray:
        room = np.maximum(self.lengths[clip] - span.astype(np.int64), 0) + 1
        return np.floor(rng.random(len(clip)) * room).astype(np.int64)

    def _read(self, source: np.ndarray, clip: np.ndarray, offset: np.ndarray,
              rate: np.ndarray) -> np.ndarray:
        """``(n, segment)`` samples (``(n, channels, segment)``) from each clip at
        ``offset``, read at ``rate`` samples per output sample (linear interpolation); zeros
        past the clip's end (no bleed)."""
        def take(index):  # (n, segment) -> (n, [channels,] segment)
            return source[index] if source.ndim == 1 else np.moveaxis(source[:, index], 0, 1)

        def over_channels(x):
            return x if source.ndim == 1 else x[:, None]

        if np.all(rate == 1.0):  # no shift: a plain crop
            index = (self.starts[clip] + offset)[:, None] + np.arange(self.segment)
            inside = (offset[:, None] + np.arange(self.segment)) < self.lengths[clip][:, None]
            return take(index) * over_channels(inside)
        position = np.arange(self.segment, dtype=np.float64)[None, :] * rate[:, None]
        low = position.astype(np.int64)
        frac = over_channels((position - low).astype(np.float32))
        index = (self.starts[clip] + offset)[:, None] + low
        inside = over_channels((offset[:, None] + low + 1) < self.lengths[clip][:, None])
        left = take(index)
        return (left + (take(index + 1) - left) * frac) * inside


def examples(voice: np.ndarray, accompaniment: np.ndarray, preset: Preset,
             stage: str, target: str = "ibm") -> tuple[np.ndarray, np.ndarray]:
    """Source segments ``(n, patch_samples)`` -> float32 ``(input, target)``
    ``(n, frames, bins)`` (as :func:`keras_svs.pipeline._example`); multichannel segments
    ``(n, channels, patch_samples)`` -> ``(n, frames, bins, channels)``."""
    sv = spectral.stft_numpy(voice, preset.stft, padded=False)[..., :preset.bins]
    sa = spectral.stft_numpy(accompaniment, preset.stft, padded=False)[..., :preset.bins]
    if sv.ndim == 4:  # (n, channels, frames, bins): channels last, as the model takes them
        sv, sa = np.moveaxis(sv, 1, -1), np.moveaxis(sa, 1, -1)
    mixture = np.abs(sv + sa)
    dominates = _power(sv) > _power(sa)
    if stage == "pretrain":
        vocal = (dominates * mixture).astype(np.float32)
        return vocal, vocal
    if target == "psa":
        return mixture.astype(np.float32), spectral.phase_sensitive_mask_numpy(sv, sv + sa)
    s = preset.label_smoothing
    return mixture.astype(np.float32), np.where(dominates, 1.0 - s, s).astype(np.float32)


def _power(spectrum: np.ndarray) -> np.ndarray:
    """``|spectrum| ** 2`` without a square root (same order as ``|spectrum|``)."""
    return np.square(spectrum.real) + np.square(spectrum.imag)


def validation_arrays(decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                      target: str = "ibm") -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping patch of every clip, no augmentation (as
    :func:`keras_svs.pipeline.validation_dataset`): ``(input, target)`` arrays."""
    voices, accompaniments = validation_segments(decoded, preset)
    inputs, targets = zip(*(examples(voices[k:k + 256], accompaniments[k:k + 256], preset, stage,
                                     target)
                            for k in range(0, len(voices), 256)))
    return np.concatenate(inputs), np.concatenate(targets)


# -- a stream of batches made by worker processes ------------------------------------------

_SAMPLER: PatchSampler | None = None


def _init_worker(sampler: PatchSampler) -> None:
    global _SAMPLER
    _SAMPLER = sampler


def _make_batch(index: int) -> tuple[np.ndarray, np.ndarray]:
    return _SAMPLER.batch(index)


def stream(sampler: PatchSampler, start: int = 0,
           workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches ``start, start + 1, ...`` of ``sampler``.

    ``workers > 0`` makes them in that many *spawned* processes (safe beside a GPU runtime
    that forking would break), keeping ``2 * workers`` batches in flight; the order and
    contents are the same as with ``workers=0``.
    """
    index = start
    if workers <= 0:
        while True:
            yield sampler.batch(index)
            index += 1
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(sampler,)) as pool:
        pending: collections.deque = collections.deque()
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.apply_async(_make_batch, (index,)))
                index += 1
            yield pending.popleft().get()


__all__ = ["PatchSampler", "examples", "validation_arrays", "stream"]
