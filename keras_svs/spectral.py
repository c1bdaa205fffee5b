"""Short-time Fourier transforms, magnitudes and masks, following Lin et al. (2018).

Conventions (the authors' code):

* analysis window: periodic Hann of ``win_length`` samples divided by its sum, so that a
  full-scale sinusoid's magnitude peak is ~0.5 and every magnitude lies in [0, 1];
* each frame is zero-padded to ``n_fft`` (e.g. 1024-sample windows, 4096-point FFT);
* the signal is padded by ``win_length - hop_length`` zeros on both sides (and up to a
  whole hop at the end), which makes :func:`istft` an exact inverse of :func:`stft`.

Spectrograms are laid out ``(..., frames, bins)``; this is the only module that knows the
arithmetic of the STFT settings. Two implementations of the same transform: TensorFlow
(:func:`stft`, :func:`istft`: tf.data, separation, SavedModel graphs) and NumPy
(:func:`stft_numpy`, :func:`istft_numpy`: training batches and validation on any Keras
backend); TensorFlow is imported only by the functions that use it.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.fft

#: Separation masks made from voice probabilities (:func:`make_mask`) and how
#: :func:`fit_bins` fills the bins above a model's band: ``top`` repeats the top bin's
#: mask, ``zero`` gives them none of the voice (Spleeter's), ``mean`` the mean of the
#: band's top quarter in each frame.
from .options import EXTENSIONS, MASKS

#: Frames transformed at a time by :func:`stft_numpy` and :func:`istft_numpy`.
_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class StftConfig:
    """STFT settings.

    Attributes:
        sample_rate: Hz.
        n_fft: FFT size in samples (>= ``win_length``; frames are zero-padded).
        win_length: analysis window in samples.
        hop_length: hop in samples.
    """

    sample_rate: int = 22050
    n_fft: int = 4096
    win_length: int = 1024
    hop_length: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            raise ValueError(f"need 0 < hop <= win <= n_fft, got {self}")

    @property
    def bins(self) -> int:
        """Frequency bins of a one-sided spectrum: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def pad(self) -> int:
        """Zeros added before the signal (and at least as many after it)."""
        return self.win_length - self.hop_length

    def num_frames(self, samples: int) -> int:
        """Frames :func:`stft` returns for a signal of ``samples`` samples."""
        return 1 + math.ceil((samples + 2 * self.pad - self.win_length) / self.hop_length)

    def num_samples(self, frames: int) -> int:
        """Samples needed for exactly ``frames`` frames when no padding is applied."""
        return self.win_length + (frames - 1) * self.hop_length

    def frame_times(self, frames: int, start: int = 0) -> np.ndarray:
        """Centre of the window of frames ``[start, start + frames)``, in seconds from the
        signal's start: float64 ``(frames,)``."""
        return (np.arange(start, start + frames) * self.hop_length - self.pad
                + self.win_length / 2) / self.sample_rate

    def frame_position(self, times: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`frame_times`: the fractional frame index whose window is
        centred at each of ``times`` (seconds), float64 of their shape."""
        return (np.asarray(times) - self.frame_times(1)[0]) / (self.hop_length
                                                               / self.sample_rate)

    def frame_span(self, start: int, stop: int) -> tuple[int, int]:
        """The samples ``[first, last)`` of a signal that frames ``[start, stop)`` of its
        padded :func:`stft` are computed from; negative indices and those past the
        signal's end stand for the padding's zeros. Framing those samples unpadded
        (``padded=False``) gives exactly those frames."""
        return start * self.hop_length - self.pad, stop * self.hop_length

    def bin_frequencies(self) -> np.ndarray:
        """Centre frequency of each bin in Hz: ``(bins,)``."""
        return np.arange(self.bins) * self.sample_rate / self.n_fft

    def at_rate(self, sample_rate: int) -> "StftConfig":
        """The same settings in seconds and Hz at another sample rate.

        Window and hop keep their durations (rounded to samples); the FFT size is the
        smallest even size with no prime factor above 5 (fast for every FFT library) that
        keeps at least the same frequency resolution: 2880 for a 1024-point FFT at 16 kHz
        carried to 44.1 kHz (the next power of two, 4096, is a 42 % longer FFT).
        """
        if sample_rate == self.sample_rate:
            return self
        ratio = sample_rate / self.sample_rate
        win = max(2, round(self.win_length * ratio))
        hop = max(1, min(win, round(self.hop_length * ratio)))
        half = scipy.fft.next_fast_len(math.ceil(self.n_fft * ratio / 2), real=True)
        n_fft = max(win, 2 * half)
        return StftConfig(sample_rate, n_fft, win, hop)


def window(config: StftConfig, dtype=None) -> tf.Tensor:
    """Periodic Hann window of ``win_length`` divided by its sum: ``(win_length,)``."""
    import tensorflow as tf

    w = tf.signal.hann_window(config.win_length, periodic=True, dtype=dtype or tf.float32)
    return w / tf.reduce_sum(w)


def window_numpy(config: StftConfig) -> np.ndarray:
    """:func:`window` as float32 NumPy ``(win_length,)``."""
    n = np.arange(config.win_length)
    period = config.win_length - config.win_length % 2  # tf.signal's "periodic" for odd sizes
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / period)
    return (w / w.sum()).astype(np.float32)


def stft(signal: tf.Tensor | np.ndarray, config: StftConfig, padded: bool = True) -> tf.Tensor:
    """Complex STFT.

    Args:
        signal: float ``(..., samples)`` at ``config.sample_rate``.
        config: STFT settings.
        padded: pad the signal so that :func:`istft` inverts it exactly (default). False
            frames the signal as it is (training patches of ``num_samples(frames)``).

    Returns:
        complex64 ``(..., config.num_frames(samples), config.bins)`` when padded, else
        ``(..., 1 + (samples - win_length) // hop_length, config.bins)``.
    """
    import tensorflow as tf

    signal = tf.convert_to_tensor(signal, dtype=tf.float32)
    if not padded:
        return tf.signal.stft(signal, config.win_length, config.hop_length, config.n_fft,
                              window_fn=lambda n, dtype: window(config, dtype), pad_end=False)
    samples = tf.shape(signal)[-1]
    frames = 1 + (samples + 2 * config.pad - config.win_length + config.hop_length - 1) \
        // config.hop_length
    end = config.num_samples(frames) - samples - config.pad  # >= pad
    paddings = tf.concat([tf.zeros([tf.rank(signal) - 1, 2], tf.int32),
                          [[config.pad, end]]], axis=0)
    padded = tf.pad(signal, paddings)
    return tf.signal.stft(padded, config.win_length, config.hop_length, config.n_fft,
                          window_fn=lambda n, dtype: window(config, dtype), pad_end=False)


def istft(spectrum: tf.Tensor, config: StftConfig, length: int | tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`stft`.

    Args:
        spectrum: complex64 ``(..., frames, bins)``.
        config: the settings it was computed with.
        length: samples of the signal to return.

    Returns:
        float32 ``(..., length)``.
    """
    import tensorflow as tf

    inverse_window = tf.signal.inverse_stft_window_fn(
        config.hop_length, forward_window_fn=lambda n, dtype: window(config, dtype))
    signal = tf.signal.inverse_stft(spectrum, config.win_length, config.hop_length,
                                    config.n_fft, window_fn=inverse_window)
    return signal[..., config.pad:config.pad + length]


def stft_numpy(signal: np.ndarray, config: StftConfig, padded: bool = True,
               workers: int = 1) -> np.ndarray:
    """:func:`stft` in NumPy (same frames, same values to float32 rounding).

    Args:
        signal: float ``(..., samples)``.
        config, padded: as in :func:`stft`.
        workers: threads for the FFTs (``scipy.fft``'s ``workers``; -1: every core).

    Returns:
        complex64 ``(..., frames, config.bins)``.
    """
    x = np.asarray(signal, np.float32)
    if padded:
        samples = x.shape[-1]
        frames = config.num_frames(samples)
        end = config.num_samples(frames) - samples - config.pad
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(config.pad, end)])
    if x.shape[-1] < config.win_length:
        return np.zeros((*x.shape[:-1], 0, config.bins), np.complex64)
    frames = np.lib.stride_tricks.sliding_window_view(x, config.win_length, axis=-1)
    frames = frames[..., ::config.hop_length, :]
    w = window_numpy(config)
    out = np.empty((*frames.shape[:-1], config.bins), np.complex64)
    for start in range(0, frames.shape[-2], _CHUNK):  # chunks: windowed copies stay small
        piece = frames[..., start:start + _CHUNK, :] * w
        out[..., start:start + _CHUNK, :] = scipy.fft.rfft(piece, n=config.n_fft, axis=-1,
                                                           workers=workers)
    return out


def istft_numpy(spectrum: np.ndarray, config: StftConfig, length: int,
                workers: int = 1) -> np.ndarray:
    """:func:`istft` in NumPy: ``(..., frames, bins)`` complex -> float32 ``(..., length)``.

    ``workers``: threads for the FFTs, as in :func:`stft_numpy`.
    """
    out = overlap_add_numpy(spectrum, config, workers)
    result = out[..., config.pad:config.pad + length]
    if result.shape[-1] < length:
        result = np.pad(result, [(0, 0)] * (result.ndim - 1) + [(0, length - result.shape[-1])])
    return np.ascontiguousarray(result)


def overlap_add_numpy(spectrum: np.ndarray, config: StftConfig,
                      workers: int = 1) -> np.ndarray:
    """The frames' inverse FFTs, windowed for exact reconstruction, overlap-added (what
    ``tf.signal.inverse_stft`` with ``inverse_stft_window_fn`` computes):
    ``(..., frames, bins)`` complex -> float32 ``(..., (frames - 1) * hop + win)``, sample 0
    at the first frame's start (no padding removed).

    ``workers``: threads for the FFTs, as in :func:`stft_numpy`.
    """
    spectrum = np.asarray(spectrum, np.complex64)
    win, hop = config.win_length, config.hop_length
    w = window_numpy(config).astype(np.float64)
    # tf.signal.inverse_stft_window_fn: the window over the sum of its overlapping squares
    squares = np.pad(w ** 2, (0, -win % hop)).reshape(-1, hop).sum(0)
    inverse = (w / np.tile(squares, -(-win // hop))[:win]).astype(np.float32)
    count, lead = spectrum.shape[-2], spectrum.shape[:-2]
    # overlap-add, one hop-sized slice of every frame at a time: slice k of frame i lands
    # at hop (i + k) of the output; in chunks of frames, so the frames stay small
    slices = -(-win // hop)
    out = np.zeros((*lead, (count + slices) * hop), np.float32)
    hops = out.reshape(*lead, count + slices, hop)
    for start in range(0, count, _CHUNK):
        frames = scipy.fft.irfft(spectrum[..., start:start + _CHUNK, :], n=config.n_fft,
                                 axis=-1, workers=workers)[..., :win]
        frames *= inverse
        n = frames.shape[-2]
        for k in range(slices):
            piece = frames[..., k * hop:(k + 1) * hop]
            hops[..., start + k:start + k + n, :piece.shape[-1]] += piece
    return out[..., :max(0, (count - 1) * hop + win)]


def magnitude(spectrum: tf.Tensor) -> tf.Tensor:
    """``|spectrum|`` as float32, same shape."""
    import tensorflow as tf

    return tf.abs(spectrum)


def ibm(voice_magnitude: tf.Tensor, accompaniment_magnitude: tf.Tensor,
        smoothing: float = 0.0) -> tf.Tensor:
    """Ideal binary mask ``|V| > |A|`` as float32, optionally label-smoothed.

    Args:
        voice_magnitude, accompaniment_magnitude: ``(..., frames, bins)``.
        smoothing: ``s`` maps the labels 1/0 to ``1 - s`` / ``s`` (the paper: 0.02).

    Returns:
        float32 mask of the same shape.
    """
    import tensorflow as tf

    voice_dominates = tf.greater(voice_magnitude, accompaniment_magnitude)
    return tf.where(voice_dominates, 1.0 - smoothing, smoothing)


def phase_sensitive_mask(voice: tf.Tensor, mixture: tf.Tensor) -> tf.Tensor:
    """Phase-sensitive mask ``clip(Re(V conj(X)) / |X|^2, 0, 1)`` (Erdogan et al. 2015): the
    real mask ``m`` in [0, 1] that minimises ``|m X - V|``, bin by bin.

    Args:
        voice, mixture: complex spectra ``(..., frames, bins)``.

    Returns:
        float32 mask of the same shape (0 where the mixture is silent).
    """
    import tensorflow as tf

    power = tf.square(tf.math.real(mixture)) + tf.square(tf.math.imag(mixture))
    dot = (tf.math.real(voice) * tf.math.real(mixture)
           + tf.math.imag(voice) * tf.math.imag(mixture))
    return tf.clip_by_value(tf.math.divide_no_nan(dot, power), 0.0, 1.0)


def phase_sensitive_mask_numpy(voice: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """:func:`phase_sensitive_mask` in NumPy: complex ``(..., frames, bins)`` -> float32."""
    power = np.square(mixture.real) + np.square(mixture.imag)
    dot = voice.real * mixture.real + voice.imag * mixture.imag
    ratio = np.divide(dot, power, out=np.zeros_like(power), where=power > 0)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32)


def irm(voice_magnitude: tf.Tensor, accompaniment_magnitude: tf.Tensor) -> tf.Tensor:
    """Ideal ratio mask ``|V|^2 / (|V|^2 + |A|^2)`` (0.5 where both are silent)."""
    import tensorflow as tf

    v2 = tf.square(voice_magnitude)
    a2 = tf.square(accompaniment_magnitude)
    return tf.math.divide_no_nan(v2, v2 + a2) + tf.cast(tf.equal(v2 + a2, 0.0), v2.dtype) * 0.5


def make_mask(probability: np.ndarray | tf.Tensor, kind: str, threshold: float):
    """Voice mask from voice probabilities (numpy or tf, any shape).

    ``soft``: the probability; ``binary``: 1 where probability > threshold, else 0;
    ``thresholded``: the probability, zeroed where it is below the threshold (the paper).
    """
    if kind not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, not {kind!r}")
    if kind == "soft":
        return probability
    above = probability > threshold
    if isinstance(probability, np.ndarray):
        return above.astype(np.float32) if kind == "binary" else probability * above
    import tensorflow as tf

    above = tf.cast(above, probability.dtype)
    return above if kind == "binary" else probability * above


def fit_bins(mask: tf.Tensor | np.ndarray, bins: int,
             extension: str = "top") -> tf.Tensor | np.ndarray:
    """Give a ``(..., b)`` mask exactly ``bins`` bins: crop, or extend it above its band as
    ``extension`` says (one of :data:`EXTENSIONS`: ``top`` repeats its top bin, ``zero``
    adds zeros, ``mean`` repeats the mean of its top quarter of bins, frame by frame).
    Float32, of the input's kind: a NumPy array for a NumPy array, else a tensor.

    Raises:
        ValueError: an unknown extension.
    """
    if extension not in EXTENSIONS:
        raise ValueError(f"extension must be one of {EXTENSIONS}, not {extension!r}")
    if isinstance(mask, np.ndarray):
        mask = mask.astype(np.float32, copy=False)
        have = mask.shape[-1]
        if have >= bins:
            return mask[..., :bins]
        if extension == "zero":
            fill = np.zeros_like(mask[..., -1:])
        elif extension == "mean":
            fill = mask[..., have - max(1, have // 4):].mean(axis=-1, keepdims=True)
        else:
            fill = mask[..., -1:]
        return np.concatenate([mask, np.repeat(fill, bins - have, axis=-1)], axis=-1)
    import tensorflow as tf

    mask = tf.convert_to_tensor(mask, tf.float32)
    have = mask.shape[-1]
    if have >= bins:
        return mask[..., :bins]
    if extension == "zero":
        fill = tf.zeros_like(mask[..., -1:])
    elif extension == "mean":
        fill = tf.reduce_mean(mask[..., have - max(1, have // 4):], axis=-1, keepdims=True)
    else:
        fill = mask[..., -1:]
    return tf.concat([mask, tf.repeat(fill, bins - have, axis=-1)], axis=-1)


def mask_to_grid(mask: np.ndarray, source: StftConfig, target: StftConfig,
                 frames: int, source_start: int = 0, target_start: int = 0) -> np.ndarray:
    """Carry a time-frequency mask to another STFT grid (rate, FFT size, hop).

    Linear interpolation in seconds and in Hz; frequencies above the source's Nyquist take
    the mask of its top bin, so a 44.1 kHz song keeps its full band. A stretch of a mask
    carries as the whole one does where the source frames reach at least two frames
    beyond the target's on either side (the ends are clamped).

    Args:
        mask: ``(source_frames, source.bins)``: source frames ``[source_start,
            source_start + source_frames)``.
        source, target: the two STFT settings.
        frames: frames of the target spectrogram wanted, from frame ``target_start``.

    Returns:
        float32 ``(frames, target.bins)``.
    """
    mask = fit_bins(np.asarray(mask, np.float32), source.bins)
    if source == target and mask.shape[0] == frames and source_start == target_start:
        return mask
    t_src = source.frame_times(mask.shape[0], source_start)
    t_dst = target.frame_times(frames, target_start)
    mask = _interp_axis(mask, t_src, t_dst, axis=0)
    return _interp_axis(mask, source.bin_frequencies(), target.bin_frequencies(), axis=1)


def _interp_axis(values: np.ndarray, x_src: np.ndarray, x_dst: np.ndarray,
                 axis: int) -> np.ndarray:
    """Piecewise-linear resampling of ``values`` along ``axis`` (clamped at both ends;
    ``x_dst`` ascending). Float32; the clamped tail (e.g. the bins above a model's band) is
    copied rather than interpolated."""
    values = np.asarray(values, np.float32)
    position = np.interp(x_dst, x_src, np.arange(len(x_src), dtype=np.float64))
    head = int(np.searchsorted(position, len(x_src) - 1, side="left"))  # then clamped
    low = np.floor(position[:head]).astype(int)
    high = np.minimum(low + 1, len(x_src) - 1)
    shape = [1, 1]
    shape[axis] = -1
    frac = (position[:head] - low).astype(np.float32).reshape(shape)
    out_shape = list(values.shape)
    out_shape[axis] = len(x_dst)
    out = np.empty(out_shape, np.float32)
    index = [slice(None), slice(None)]
    index[axis] = slice(0, head)
    start = np.take(values, low, axis=axis)
    np.multiply(np.take(values, high, axis=axis) - start, frac, out=out[tuple(index)])
    out[tuple(index)] += start
    index[axis] = slice(head, None)
    last = [slice(None), slice(None)]
    last[axis] = slice(len(x_src) - 1, len(x_src))
    out[tuple(index)] = values[tuple(last)]
    return out
