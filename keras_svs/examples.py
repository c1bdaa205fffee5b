"""THE definition of a training example, in NumPy: crop, remix, gains, pitch, target, weights.

Every loader makes its examples here: :func:`keras_svs.pipeline.training_dataset` (tf.data, the
TensorFlow backend) runs :meth:`PatchSampler.batch` in its map threads, and
:func:`keras_svs.batches.stream` (the NumPy loader: JAX, PyTorch, or machines without
TensorFlow) calls it in-process or in worker processes. Both give the same batches for the
same seed. This module imports neither TensorFlow nor Keras.

A training example is made in this order:

1. a clip is drawn with probability proportional to its length, and a random crop of
   :func:`patch_samples` samples is taken from it (a clip shorter than that is zero-padded;
   nothing of the next clip bleeds in); or, with ``patch_hop`` (the paper's training set:
   every 8 frames), the voice's crop is the next patch of a fixed grid, every ``patch_hop``
   frames of every clip (:func:`grid_patches`), visited in a new random order each epoch, an
   epoch being one pass over the grid (:func:`grid_items`);
2. with probability ``remix`` the accompaniment comes from a second random clip and crop,
   and voice and accompaniment each get a random gain in ``[-gain_db, gain_db]`` dB;
3. with probability ``pitch`` a remixed voice is pitch-shifted by 1 to
   :data:`MAX_PITCH_SEMITONES` semitones up or down (resampled by linear interpolation);
4. the STFT of each source (:func:`keras_svs.spectral.stft_numpy`, unpadded, the lowest
   ``preset.bins`` bins) gives the input and target (:func:`from_segments`):

   * ``"pretrain"`` stage: input and target ``IBM * |X|`` (the autoencoder);
   * ``"finetune"`` stage, target ``"ibm"``: input ``|X|``, target the label-smoothed
     IBM ``|V| > |A|``; target ``"psa"``: the phase-sensitive mask
     ``clip(Re(V conj X) / |X|^2, 0, 1)``;
   * with ``weights``, the fine-tuning target gains a last axis of 2: the target and each
     bin's loss weight (:func:`bin_weights`).

Shapes: inputs are float32 ``(batch, frames, bins)``, or ``(batch, frames, bins,
channels)`` for multichannel audio (each channel's own IBM); targets the same, with a
trailing axis of 2 when weighted.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import spectral
from .options import Recipe

if TYPE_CHECKING:  # attribute access only
    from .models.presets import Preset

STAGES = ("pretrain", "finetune")
#: fine-tuning targets: the smoothed IBM (the paper), or the phase-sensitive mask
TARGETS = ("ibm", "psa")
#: loss weights of a bin -> the exponent of its mixture magnitude (:func:`bin_weights`):
#: ``magnitude`` for the weighted cross-entropy, ``power`` for the phase-sensitive error
WEIGHTS = {"magnitude": 1, "power": 2}
MAX_PITCH_SEMITONES = 3.0
#: Added to a patch's mean level in :func:`bin_weights` (guards a silent patch).
WEIGHT_EPS = 1e-8
_CHUNK = 256  # validation segments per STFT call (bounds the memory of one call)


@dataclasses.dataclass
class DecodedAudio:
    """The sources of many tracks at one rate, concatenated along time: what examples are cut
    from (the decode cache; :func:`keras_svs.pipeline.decode` and
    :func:`keras_svs.pipeline.load_hdf5` make it).

    Attributes:
        names: track names.
        voice, accompaniment: float32 ``(total_samples,)`` (mono) or ``(channels,
            total_samples)`` (for a model of ``channels > 1``: see
            :func:`keras_svs.pipeline.decode`).
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


def patch_samples(preset: Preset) -> int:
    """Samples in one training patch of ``preset.frames`` frames."""
    return preset.stft.num_samples(preset.frames)


def grid_patches(lengths: np.ndarray, preset: Preset,
                 patch_hop: int) -> tuple[np.ndarray, np.ndarray]:
    """The training patches of a fixed grid: one every ``patch_hop`` frames of every clip.

    Patch ``j`` of a clip starts at sample ``j * patch_hop * hop_length`` (frame ``j *
    patch_hop`` of the clip's unpadded STFT, :func:`keras_svs.spectral.stft_numpy`), for
    every ``j`` whose :func:`patch_samples` samples lie inside the clip; a clip shorter than
    one patch gives one patch at 0 (zero-padded).

    Args:
        lengths: int ``(clips,)`` clip lengths in samples.
        preset: STFT hop and patch frames.
        patch_hop: frames between the starts of consecutive patches (>= 1).

    Returns:
        int64 ``(clip, offset)``, each ``(patches,)``: clip index and start sample within
        the clip, clip by clip in time order.

    Raises:
        ValueError: ``patch_hop < 1``.
    """
    if patch_hop < 1:
        raise ValueError(f"patch_hop must be >= 1 frame, not {patch_hop}")
    step = int(patch_hop) * preset.stft.hop_length
    segment = patch_samples(preset)
    counts = np.maximum(np.asarray(lengths, np.int64) - segment, 0) // step + 1
    clip = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    offset = (np.arange(len(clip), dtype=np.int64) - first[clip]) * step
    return clip, offset


def grid_steps(patches: int, batch_size: int) -> int:
    """Batches in one pass over ``patches`` grid patches: ``ceil(patches / batch_size)``."""
    return max(1, -(-int(patches) // int(batch_size)))


def grid_items(index: int, patches: int, batch_size: int, seed: int) -> np.ndarray:
    """The grid patches of stream batch ``index``: int64 ``(batch_size,)`` indices into
    :func:`grid_patches`.

    Epoch ``e`` (batches ``e * steps`` to ``(e + 1) * steps - 1``, ``steps =``
    :func:`grid_steps`) visits every patch once in a random order of its own (seeded by
    ``(seed, e)``); its last batch is filled up from the start of the same order, so a few
    patches appear twice in an epoch and none is missed. Depends only on its arguments.
    """
    steps = grid_steps(patches, batch_size)
    epoch, position = divmod(int(index), steps)
    order = np.random.default_rng([int(seed), epoch, 1]).permutation(int(patches))
    return order[(position * batch_size + np.arange(batch_size)) % patches]


def check(stage: str, target: str = "ibm", weights: str | None = None) -> None:
    """Raises ValueError naming the choices when ``stage``, ``target`` or ``weights`` is
    unknown."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if weights is not None and weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {tuple(WEIGHTS)} or None, not {weights!r}")


class Draw(NamedTuple):
    """The random choices of one batch of :class:`PatchSampler` (``n`` patches), each an
    ``(n,)`` array but ``gains``.

    Attributes:
        voice_clip, accompaniment_clip: clip indices (the same where not remixed).
        voice_offset, accompaniment_offset: the reads' first samples within their clips.
        rate: samples of the voice read per output sample (1: no pitch shift; 2 ** (k / 12)
            shifts the voice up by ``k`` semitones), linear interpolation.
        gains: ``(n, 2)`` linear gains of voice and accompaniment (1 where not remixed).
    """

    voice_clip: np.ndarray
    accompaniment_clip: np.ndarray
    voice_offset: np.ndarray
    accompaniment_offset: np.ndarray
    rate: np.ndarray
    gains: np.ndarray


class PatchSampler:
    """Makes training batches from a decode cache; batch ``k`` depends only on
    ``(seed, k)``, so any number of threads or processes may make them in any order.

    Args:
        decoded: voice and accompaniment of the training clips (mono, or ``(channels,
            samples)``).
        preset: STFT settings, patch size, label smoothing, default batch size and remix.
        stage: one of :data:`STAGES` (see the module docstring).
        batch_size: patches per batch (default ``preset.batch_size``).
        remix: probability that a patch takes its accompaniment from another random clip,
            both sources then getting a random gain (default ``preset.remix``; 0: never).
        pitch: probability that a remixed voice is shifted by 1 to 3 semitones up or down.
        gain_db: remix gain range in dB, ``[-gain_db, gain_db]`` for each source.
        seed: the stream's seed.
        target: the fine-tuning target, one of :data:`TARGETS`.
        weights: the fine-tuning target's bin weights, a key of :data:`WEIGHTS`, or None.
        shards, shard: this sampler makes shard ``shard`` of ``shards`` interleaved streams:
            its batch ``k`` is the stream's batch ``k * shards + shard`` (one shard per
            worker of distributed training, :mod:`keras_svs.distribute`; 1 and 0: the whole
            stream).
        patch_hop: ``None`` or 0: random crops; ``n >= 1``: the voice's crop is a patch of
            the grid of every ``n`` frames of every clip (:func:`grid_patches`), each epoch
            of :attr:`grid_steps` stream batches a pass over the grid in its own random
            order (:func:`grid_items`); remix, pitch and gains apply as with random crops.

    Raises:
        ValueError: an unknown stage, target or weights, a shard outside ``[0,
            shards)``, or a negative ``patch_hop``.
    """

    def __init__(self, decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                 batch_size: int | None = None, remix: float | None = None,
                 pitch: float = Recipe.pitch, gain_db: float = Recipe.gain_db, seed: int = 0,
                 target: str = "ibm", weights: str | None = None, shards: int = 1,
                 shard: int = 0, patch_hop: int | None = None):
        check(stage, target, weights)
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in [0, {shards}), not {shard}")
        self.shards, self.shard = int(shards), int(shard)
        self.preset, self.stage, self.seed = preset, stage, int(seed)
        self.target, self.weights = target, weights
        self.batch_size = batch_size or preset.batch_size
        self.remix = preset.remix if remix is None else remix
        self.pitch, self.gain_db = pitch, gain_db
        self.segment = patch_samples(preset)
        reach = int(np.ceil(self.segment * 2 ** (MAX_PITCH_SEMITONES / 12))) + 2
        pad = [(0, 0)] * (decoded.voice.ndim - 1) + [(0, reach)]
        self.voice = np.pad(decoded.voice, pad)
        self.accompaniment = np.pad(decoded.accompaniment, pad)
        self.starts, self.lengths = decoded.starts, decoded.lengths
        self.probabilities = decoded.lengths / decoded.lengths.sum()
        if patch_hop is not None and patch_hop < 0:
            raise ValueError(f"patch_hop must be >= 0 frames, not {patch_hop}")
        self.patch_hop = int(patch_hop or 0)
        self.grid = (grid_patches(self.lengths, preset, self.patch_hop) if self.patch_hop
                     else None)

    @property
    def grid_steps(self) -> int | None:
        """Stream batches (of all shards together) in one pass over the grid; ``None`` for
        random crops."""
        return None if self.grid is None else grid_steps(len(self.grid[0]), self.batch_size)

    @property
    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of a batch's ``(input, target)``."""
        x = (self.batch_size, self.preset.frames, self.preset.bins)
        if self.voice.ndim == 2:
            x += (self.voice.shape[0],)
        weighted = self.weights is not None and self.stage == "finetune"
        return x, x + (2,) if weighted else x

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``index`` of this shard of the stream: float32 ``(input, target)``
        of :attr:`shapes`."""
        draw = self.draw(index)
        n = len(draw.rate)
        gains = draw.gains.reshape(n, 2, *[1] * self.voice.ndim)  # over channels, samples
        v = self._read(self.voice, draw.voice_clip, draw.voice_offset, draw.rate) * gains[:, 0]
        a = self._read(self.accompaniment, draw.accompaniment_clip, draw.accompaniment_offset,
                       np.ones(n)) * gains[:, 1]
        return from_segments(v.astype(np.float32), a.astype(np.float32), self.preset,
                             self.stage, self.target, self.weights)

    def draw(self, index: int) -> Draw:
        """The random choices of batch ``index`` (which clips, where, what gains and pitch),
        without reading any audio: what :meth:`batch` reads, and what a loader that reads
        and transforms the audio elsewhere (on an accelerator) takes."""
        rng = np.random.default_rng([self.seed, int(index) * self.shards + self.shard])
        n = self.batch_size
        clips = rng.choice(len(self.lengths), size=(n, 2), p=self.probabilities)
        remixed = rng.random(n) < self.remix
        shifted = remixed & (rng.random(n) < self.pitch)
        semitones = rng.uniform(1.0, MAX_PITCH_SEMITONES, n) * rng.choice([-1.0, 1.0], n)
        rate = np.where(shifted, 2.0 ** (semitones / 12.0), 1.0)
        if self.grid is None:
            voice_clip = clips[:, 0]
            voice_offset = self._offsets(rng, voice_clip, np.ceil(self.segment * rate))
        else:
            items = grid_items(int(index) * self.shards + self.shard, len(self.grid[0]), n,
                               self.seed)
            voice_clip, voice_offset = self.grid[0][items], self.grid[1][items]
        accompaniment_clip = np.where(remixed, clips[:, 1], voice_clip)
        accompaniment_offset = np.where(
            remixed, self._offsets(rng, accompaniment_clip, np.full(n, self.segment)),
            voice_offset)
        gains = np.where(remixed[:, None], 10.0 ** (rng.uniform(-self.gain_db, self.gain_db,
                                                                (n, 2)) / 20.0), 1.0)
        return Draw(voice_clip, accompaniment_clip, voice_offset, accompaniment_offset, rate,
                    gains)

    def _offsets(self, rng: np.random.Generator, clip: np.ndarray,
                 span: np.ndarray) -> np.ndarray:
        """A random start ``(n,)`` in each clip for a read of ``span`` samples (0 where the
        clip is shorter)."""
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


def from_segments(voice: np.ndarray, accompaniment: np.ndarray, preset: Preset,
                  stage: str = "finetune", target: str = "ibm",
                  weights: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source segments -> float32 ``(input, target)`` examples (see the module docstring).

    Args:
        voice, accompaniment: ``(n, patch_samples)``, or ``(n, channels, patch_samples)``.
        preset: STFT settings, bins, label smoothing.
        stage, target, weights: as in :class:`PatchSampler`.

    Returns:
        inputs ``(n, frames, bins)`` (multichannel: ``(n, frames, bins, channels)``), and
        targets of the same shape, with a trailing axis of 2 when fine-tuning with weights.

    Raises:
        ValueError: an unknown stage, target or weights.
    """
    check(stage, target, weights)
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
        y = spectral.phase_sensitive_mask_numpy(sv, sv + sa)
    else:
        s = preset.label_smoothing
        y = np.where(dominates, 1.0 - s, s).astype(np.float32)
    if weights is not None:
        y = np.stack([y, bin_weights(mixture, WEIGHTS[weights])], axis=-1)
    return mixture.astype(np.float32), y


def bin_weights(magnitude: np.ndarray, exponent: int = 1) -> np.ndarray:
    """Each bin's loss weight: ``|X| ** exponent`` over the example's mean of it, so an
    example's weights average 1 (``WEIGHT_EPS ** exponent`` guards a silent one).

    Args:
        magnitude: mixture magnitudes ``(n, frames, bins)``, or ``(n, frames, bins,
            channels)``; the mean runs over frames and bins, for each channel.
        exponent: 1 for the weighted cross-entropy, 2 (power) for the phase-sensitive error.

    Returns:
        float32 weights of the same shape.
    """
    level = np.asarray(magnitude, np.float32)
    if exponent != 1:
        level = level ** exponent
    mean = level.mean(axis=(1, 2), keepdims=True)
    return (level / (mean + WEIGHT_EPS ** exponent)).astype(np.float32)


def _power(spectrum: np.ndarray) -> np.ndarray:
    """``|spectrum| ** 2`` without a square root (same order as ``|spectrum|``)."""
    return np.square(spectrum.real) + np.square(spectrum.imag)


def validation_segments(decoded: DecodedAudio, preset: Preset,
                        patch_hop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping patch-long segment of every clip (with ``patch_hop``: one every
    ``patch_hop`` frames, the grid of :func:`grid_patches`; the last zero-padded when a
    clip is shorter than a patch): voice and accompaniment, float32 ``(n, patch_samples)``
    (``(n, channels, patch_samples)`` for multichannel audio)."""
    seg = patch_samples(preset)
    step = (patch_hop or preset.frames) * preset.stft.hop_length
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


def validation_arrays(decoded: DecodedAudio, preset: Preset, stage: str = "finetune",
                      target: str = "ibm", weights: str | None = None,
                      patch_hop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The examples of every non-overlapping patch of every clip (with ``patch_hop``: of
    the grid of every ``patch_hop`` frames), no augmentation, in clip order: ``(input,
    target)`` arrays as :func:`from_segments` gives them.

    Raises:
        ValueError: an unknown stage, target or weights.
    """
    check(stage, target, weights)
    voices, accompaniments = validation_segments(decoded, preset, patch_hop)
    inputs, targets = zip(*(from_segments(voices[k:k + _CHUNK], accompaniments[k:k + _CHUNK],
                                          preset, stage, target, weights)
                            for k in range(0, len(voices), _CHUNK)))
    return np.concatenate(inputs), np.concatenate(targets)


__all__ = ["DecodedAudio", "STAGES", "TARGETS", "WEIGHTS", "MAX_PITCH_SEMITONES",
           "PatchSampler", "Draw", "from_segments", "bin_weights", "patch_samples",
           "grid_patches", "grid_steps", "grid_items", "validation_segments",
           "validation_arrays", "check"]
