"""Separation methods that evaluation scores: the model, the oracle masks, the mixture and
the training-free REPET-SIM baseline.

TensorFlow (the model, the TensorFlow STFT) and librosa (REPET-SIM) are imported by the
functions that use them.
"""
from __future__ import annotations

import numpy as np

from ..options import METHODS  # the separation methods :func:`estimate` knows

#: STFT settings of the reference methods when no model is given: rate, n_fft, win, hop.
DEFAULT_STFT = (16000, 1024, 1024, 256)
#: REPET-SIM: similarity window (s), voice margin and mask power (librosa's gallery).
REPET_WIDTH_S, REPET_MARGIN, REPET_POWER = 2.0, 10.0, 2.0


def default_config():
    """STFT settings of the reference methods without a model: a
    :class:`keras_svs.spectral.StftConfig` of :data:`DEFAULT_STFT` (16 kHz, n_fft 1024,
    window 1024, hop 256 samples)."""
    from ..spectral import StftConfig

    return StftConfig(*DEFAULT_STFT)


def estimate(method: str, voice: np.ndarray, accompaniment: np.ndarray, sr: int, config,
             separator=None) -> tuple[np.ndarray, np.ndarray]:
    """Estimate both sources of the mixture ``voice + accompaniment``.

    Methods: ``model`` (``separator.separate``), ``ibm`` (oracle mask ``|V| > |A|``),
    ``irm`` (oracle mask ``|V|^2 / (|V|^2 + |A|^2)``), ``mixture`` (the mixture as both
    estimates), ``repet`` (REPET-SIM, see :func:`repet_mask`). Masks are applied to the
    mixture's STFT at ``config``'s settings (carried to ``sr``); the accompaniment estimate
    is the mixture minus the voice estimate.

    Args:
        method: one of :data:`METHODS`.
        voice, accompaniment: float ``(..., samples)`` at ``sr`` Hz (any leading shape:
            ``(samples,)`` mono, ``(channels, samples)`` stereo, each channel separately).
        sr: sample rate in Hz.
        config: a :class:`keras_svs.spectral.StftConfig` for the mask methods.
        separator: a :class:`keras_svs.separation.Separator`, for ``model``.

    Returns:
        ``(voice_estimate, accompaniment_estimate)``: float32, the input's shape.

    Raises:
        ValueError: the sources differ in shape, an unknown method, or ``model`` without
            a separator.
    """
    voice = np.asarray(voice, np.float32)
    accompaniment = np.asarray(accompaniment, np.float32)
    if voice.shape != accompaniment.shape:
        raise ValueError(f"voice {voice.shape} and accompaniment {accompaniment.shape} "
                         "differ in shape")
    mixture = voice + accompaniment
    if method == "mixture":
        return mixture.copy(), mixture.copy()
    if method == "model":
        if separator is None:
            raise ValueError("method 'model' needs a separator")
        stems = separator.separate(mixture, sr)
        return (np.asarray(stems["vocals"], np.float32),
                np.asarray(stems["accompaniment"], np.float32))
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")

    from .. import spectral

    cfg = config.at_rate(sr)
    samples = voice.shape[-1]
    spectrum = spectral.stft(mixture, cfg).numpy()  # complex64 (..., frames, bins)
    if method == "repet":
        mask = repet_mask(np.abs(spectrum), cfg)
    else:
        v = spectral.magnitude(spectral.stft(voice, cfg))
        a = spectral.magnitude(spectral.stft(accompaniment, cfg))
        mask = (spectral.ibm(v, a) if method == "ibm" else spectral.irm(v, a)).numpy()
    voice_est = spectral.istft(spectrum * mask.astype(np.float32), cfg, samples).numpy()
    voice_est = voice_est.astype(np.float32)
    return voice_est, mixture - voice_est


def repet_mask(magnitude: np.ndarray, config) -> np.ndarray:
    """REPET-SIM voice mask (librosa's vocal-separation gallery example).

    The repeating background of each frame is the median of its most similar frames
    (``librosa.decompose.nn_filter``, cosine metric, frames at least ~2 s apart), capped
    at the mixture; the voice mask is ``librosa.util.softmask(|X| - B, 10 * B, power=2)``.

    Args:
        magnitude: mixture magnitudes ``(..., frames, bins)``.
        config: their STFT settings (for the 2-second width in frames).

    Returns:
        float32 ``(..., frames, bins)`` in [0, 1].
    """
    import librosa

    mag = np.asarray(magnitude, np.float32)
    flat = mag.reshape(-1, *mag.shape[-2:])
    frames = mag.shape[-2]
    width = min(int(round(REPET_WIDTH_S * config.sample_rate / config.hop_length)),
                (frames - 1) // 2 - 1)
    masks = []
    for spec in flat:
        full = spec.T.astype(np.float64)  # (bins, frames), librosa's layout
        if width >= 1:
            background = librosa.decompose.nn_filter(full, aggregate=np.median,
                                                     metric="cosine", width=width)
        else:  # too short to look for repetitions: the median frame
            background = np.repeat(np.median(full, axis=1, keepdims=True), frames, axis=1)
        background = np.minimum(full, background)
        mask = librosa.util.softmask(full - background, REPET_MARGIN * background,
                                     power=REPET_POWER)
        masks.append(mask.T)
    return np.stack(masks).reshape(mag.shape).astype(np.float32)
