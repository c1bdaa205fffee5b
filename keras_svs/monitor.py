"""Validation GNSDR during training, on any Keras backend.

Separation is :class:`keras_svs.separation.Separator`'s (on the model being trained, as it
is: ``inference_form=False``), scoring is :mod:`keras_svs.evaluation.metrics`' (BSS-Eval
v3), so that training reports the number that matters (voice GNSDR on a few validation
clips, at the model's rate) every few epochs, wherever it runs.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from typing import TYPE_CHECKING

import keras
import numpy as np

from .separation import Separator

if TYPE_CHECKING:
    from .pipeline import DecodedAudio


def _separator(model: keras.Model, mask: str | None = None, threshold: float | None = None,
               mode: str = "average", patch_batch: int | None = None) -> Separator:
    """A :class:`Separator` computing with ``model`` itself (its current weights)."""
    return Separator(model, mask, threshold, mode, inference_form=False,
                     patch_batch=patch_batch)


def voice_probability(model: keras.Model, magnitude: np.ndarray, mode: str = "average",
                      block: int = 256) -> np.ndarray:
    """:meth:`Separator.voice_probability` of ``model`` as it is: ``(frames, model bins)``
    of a ``(frames, bins)`` magnitude at its STFT settings (a stereo model's ``(channels,
    frames, bins)``); a patch model predicts about ``block`` patches per call.

    Raises:
        ValueError: an unknown mode.
    """
    return _separator(model, mode=mode, patch_batch=block).voice_probability(magnitude)


def separate_voice(model: keras.Model, mixture: np.ndarray, mask: str | None = None,
                   threshold: float | None = None, mode: str = "average") -> np.ndarray:
    """Vocals ``(samples,)`` of a mono mixture at the model's rate (a stereo model's
    ``(channels, samples)`` of a stereo one; mask: ``soft``, ``binary`` or
    ``thresholded``; default the model's own, as its band extension): the vocals of
    :meth:`Separator.separate` with ``model`` as it is.

    Raises:
        ValueError: an unknown mask or mode.
    """
    separator = _separator(model, mask, threshold, mode)
    return separator.separate(mixture, separator.config.sample_rate)["vocals"]


def gnsdr(model: keras.Model, decoded: DecodedAudio, clips: int | None = None,
          mask: str | None = None, threshold: float | None = None, mode: str = "average",
          jobs: int = 1) -> dict[str, float]:
    """Length-weighted voice/accompaniment GNSDR, GSIR, GSAR over the first ``clips``
    clips of ``decoded`` (all when ``None``), BSS-Eval v3 as in :mod:`keras_svs.evaluation`
    (:func:`~keras_svs.evaluation.metrics.clip_metrics`, pooled by
    :func:`~keras_svs.evaluation.metrics.global_metrics`; a stereo model's clips are
    scored as their mono mixes). Silent sources make BSS-Eval undefined: such clips are
    skipped. ``jobs > 1`` scores in that many processes.

    Returns:
        ``voice_gnsdr``, ``voice_gsir``, ``voice_gsar``, ``accompaniment_gnsdr`` in dB and
        ``clips`` (scored); ``{}`` when no clip could be scored.
    """
    return _gnsdr(_separator(model, mask, threshold, mode), decoded, clips, jobs)


def _gnsdr(separator: Separator, decoded: DecodedAudio, clips: int | None,
           jobs: int = 1) -> dict[str, float]:
    """:func:`gnsdr` with a ready separator."""
    from .evaluation.metrics import audible, clip_metrics, global_metrics

    rate = separator.config.sample_rate
    sources, lengths = [], []  # (voice, accompaniment, their estimates) of each clip
    for i in range(len(decoded.names) if clips is None else min(clips, len(decoded.names))):
        v, a = decoded.track(i)
        if not (np.any(v) and np.any(a)):
            continue
        x = v + a
        vocals = separator.separate(x, rate)["vocals"]
        if x.ndim == 2:  # a stereo model's: BSS-Eval v3 of the mono mixes
            v, a, x, vocals = (y.mean(axis=0) for y in (v, a, x, vocals))
        sources.append((v, a, audible(vocals), audible(x - vocals)))
        lengths.append(x.shape[-1])
    if not lengths:
        return {}
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            scores = list(pool.map(clip_metrics, *zip(*sources)))
    else:
        scores = [clip_metrics(*clip) for clip in sources]
    pooled = global_metrics([{"samples": n, **score} for n, score in zip(lengths, scores)])
    voice, accompaniment = pooled["voice"], pooled["accompaniment"]
    return {"voice_gnsdr": voice["GNSDR"], "voice_gsir": voice["GSIR"],
            "voice_gsar": voice["GSAR"], "accompaniment_gnsdr": accompaniment["GNSDR"],
            "clips": len(lengths)}


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
        self._engine: Separator | None = None  # built at the first scoring epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every:  # CSVLogger fixes its columns at the first epoch
            logs["val_gnsdr"] = logs["gnsdr_s"] = float("nan")
            return
        start = time.time()
        if self._engine is None:  # the model itself: it sees the weights of each epoch
            self._engine = _separator(self.separating)
        scores = _gnsdr(self._engine, self.decoded, self.clips)
        logs["val_gnsdr"] = scores.get("voice_gnsdr", float("nan"))
        logs["gnsdr_s"] = time.time() - start


__all__ = ["voice_probability", "separate_voice", "gnsdr", "ValidationGnsdr"]
