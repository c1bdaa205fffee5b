"""Validation GNSDR during training, on any Keras backend (NumPy STFT, the BSS-Eval of
:mod:`keras_svs.evaluation.metrics`).

:class:`keras_svs.separation.Separator` is the separation users run (TensorFlow graphs,
any input rate); this module is its small, backend-agnostic twin for clips already at the
model's rate, so that training can report the number that matters (voice GNSDR on a few
validation clips) every few epochs, wherever it runs.
"""
from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import time

import keras
import numpy as np

from . import spectral
from .evaluation.metrics import _audible, bss_metrics
from .models import settings, stft_config
from .pipeline import DecodedAudio


def voice_probability(model: keras.Model, magnitude: np.ndarray, mode: str = "average",
                      block: int = 256) -> np.ndarray:
    """Voice probability ``(frames, model bins)`` of a model for a ``(frames, bins)``
    magnitude at its STFT settings (as :meth:`Separator.voice_probability`).

    Fully convolutional models see the whole clip (time padded to their multiple); patch
    models slide with hop ``ceil(P / 3)`` averaging every frame (``average``) or hop 1
    keeping the centre frame (``centre``). A stereo model takes and gives ``(channels,
    frames, bins)``.
    """
    if mode not in ("average", "centre"):
        raise ValueError(f"mode must be average or centre, not {mode!r}")
    cfg = settings(model)
    mag = np.asarray(magnitude, np.float32)[..., :cfg["bins"]]
    if cfg.get("channels", 1) != 1:
        total = mag.shape[1]
        x = np.pad(np.moveaxis(mag, 0, -1), ((0, -total % cfg["time_multiple"]), (0, 0), (0, 0)))
        out = keras.ops.convert_to_numpy(model(x[None], training=False))[0, :total, ..., 0]
        return np.moveaxis(out, -1, 0).astype(np.float32)
    total = mag.shape[0]
    if cfg["frames"] is None:
        padded = np.pad(mag, ((0, -total % cfg["time_multiple"]), (0, 0)))
        out = model(padded[None], training=False)
        return keras.ops.convert_to_numpy(out)[0, :total, :, 0].astype(np.float32)
    frames = cfg["frames"]
    if mode == "centre":
        hop, weights = 1, np.eye(frames, dtype=np.float32)[frames // 2]
    else:
        hop, weights = max(1, math.ceil(frames / 3)), np.ones(frames, np.float32)
    edge = frames - hop
    count = math.ceil((total + edge) / hop)
    padded = np.pad(mag, ((edge, count * hop + frames - total - edge), (0, 0)))
    starts = np.arange(count + 1) * hop
    summed = np.zeros((len(padded), mag.shape[1]), np.float64)
    norm = np.zeros(len(padded))
    for k in range(0, len(starts), block):
        chunk = starts[k:k + block]
        patches = np.zeros((block, frames, mag.shape[1]), np.float32)  # one shape: one trace
        for j, s in enumerate(chunk):
            patches[j] = padded[s:s + frames]
        voice = keras.ops.convert_to_numpy(model(patches, training=False))[:len(chunk), ..., 0]
        for s, v in zip(chunk, voice):
            summed[s:s + frames] += v * weights[:, None]
            norm[s:s + frames] += weights
    return (summed / np.maximum(norm, 1e-12)[:, None])[edge:edge + total].astype(np.float32)


def separate_voice(model: keras.Model, mixture: np.ndarray, mask: str | None = None,
                   threshold: float | None = None, mode: str = "average") -> np.ndarray:
    """Vocals ``(samples,)`` of a mono mixture at the model's rate (a stereo model's
    ``(channels, samples)`` of a stereo one; mask: ``soft``, ``binary`` or
    ``thresholded``; default the model's own, as its band extension)."""
    cfg = settings(model)
    config = stft_config(model)
    mask = mask or cfg["mask"]
    threshold = cfg["threshold"] if threshold is None else threshold
    spectrum = spectral.stft_numpy(mixture, config)
    p = voice_probability(model, np.abs(spectrum), mode)
    full = spectral.fit_bins(spectral.make_mask(p, mask, threshold), config.bins,
                             cfg.get("extension", "top"))
    return spectral.istft_numpy(spectrum * full, config, np.shape(mixture)[-1])


def _bss(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """BSS-Eval v3 of both sources (:func:`keras_svs.evaluation.metrics.bss_metrics`):
    ``(sdr, sir, sar)`` of float ``(2, samples)`` references and estimates, float64
    ``(3, 2)`` in dB."""
    scores = bss_metrics(reference, estimate)
    return np.stack([scores["SDR"], scores["SIR"], scores["SAR"]])


def gnsdr(model: keras.Model, decoded: DecodedAudio, clips: int | None = None,
          mask: str | None = None, threshold: float | None = None, mode: str = "average",
          jobs: int = 1) -> dict[str, float]:
    """Length-weighted voice/accompaniment GNSDR, GSIR, GSAR over the first ``clips``
    clips of ``decoded`` (all when ``None``), BSS-Eval v3 as in :mod:`keras_svs.evaluation`.
    Silent sources make BSS-Eval undefined: such clips are skipped."""
    reference, estimate, mixture, lengths = [], [], [], []
    for i in range(len(decoded.names) if clips is None else min(clips, len(decoded.names))):
        v, a = decoded.track(i)
        if not (np.any(v) and np.any(a)):
            continue
        x = v + a
        vocals = separate_voice(model, x, mask, threshold, mode)
        if x.ndim == 2:  # a stereo model's: BSS-Eval v3 of the mono mixes
            v, a, x, vocals = (y.mean(axis=0) for y in (v, a, x, vocals))
        reference.append(np.stack([v, a]))
        estimate.append(np.stack([_audible(vocals), _audible(x - vocals)]))
        mixture.append(np.stack([x, x]))
        lengths.append(x.shape[-1])
    if not lengths:
        return {}
    pairs = list(zip(reference + reference, estimate + mixture))
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            scores = list(pool.map(_bss, *zip(*pairs)))
    else:
        scores = [_bss(r, e) for r, e in pairs]
    n = len(lengths)
    est, mix = np.stack(scores[:n]), np.stack(scores[n:])  # (clips, 3, 2)
    w = np.asarray(lengths, np.float64)[:, None] / sum(lengths)
    nsdr = ((est[:, 0] - mix[:, 0]) * w).sum(0)
    return {"voice_gnsdr": float(nsdr[0]), "voice_gsir": float((est[:, 1] * w).sum(0)[0]),
            "voice_gsar": float((est[:, 2] * w).sum(0)[0]),
            "accompaniment_gnsdr": float(nsdr[1]), "clips": n}


class ValidationGnsdr(keras.callbacks.Callback):
    """Adds ``val_gnsdr`` (voice GNSDR in dB on the first ``clips`` validation clips) to the
    logs every ``every`` epochs, and ``gnsdr_s`` (seconds it took).

    Args:
        separating: the probability model to score (it shares its weights with the model
            being fitted, which may be its logits view).
    """

    def __init__(self, separating: keras.Model, decoded: DecodedAudio, clips: int = 3,
                 every: int = 1):
        super().__init__()
        self.separating = separating
        self.decoded, self.clips, self.every = decoded, clips, max(1, every)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:  # CSVLogger fixes its columns at the first epoch
            logs["val_gnsdr"] = logs["gnsdr_s"] = float("nan")
            return
        start = time.time()
        scores = gnsdr(self.separating, self.decoded, self.clips)
        logs["val_gnsdr"] = scores.get("voice_gnsdr", float("nan"))
        logs["gnsdr_s"] = time.time() - start


__all__ = ["voice_probability", "separate_voice", "gnsdr", "ValidationGnsdr"]
