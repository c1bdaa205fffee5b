"""TensorFlow SavedModel export: the whole separation inside one graph, for TF Serving.

The SavedModel has two endpoints and needs neither Python keras_svs nor Keras to run::

    loaded = tf.saved_model.load("exported/")
    stems = loaded.serve(waveform)            # float32 (channels, samples) at the model's rate
    stems["vocals"], stems["accompaniment"]   # float32 (channels, samples), summing to the input
    out = loaded.spectrogram(magnitude)       # float32 (frames, n_fft // 2 + 1)
    out["voice_probability"], out["mask"]     # (frames, model bins), (frames, n_fft // 2 + 1)

``serve`` is also the default serving signature. Inputs must be at the model's sample rate
(``sample_rate`` in ``assets/keras_svs.json`` of the export); resample before calling.
A stereo model's (``channels`` 2 there, ``spleeter``) ``spectrogram`` takes and gives
``(channels, frames, bins)``, and ``serve`` masks each of the first two channels with its
own mask, as :class:`keras_svs.Separator` does.
"""
from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import audio, spectral
from .separation import (default_model_path, finite_channels, make_mask, mask_channels,
                         model_channels, patch_weights)
from .models import load_model, settings

#: The array functions that :func:`model_channels` and :func:`mask_channels` use, for
#: tensors whose size is known only when the graph runs.
_GRAPH_ARRAYS = types.SimpleNamespace(arange=tf.range, minimum=tf.minimum, where=tf.where)


def patch_probabilities(model: keras.Model, padded: tf.Tensor, hop: int,
                        weights: tf.Tensor) -> tf.Tensor:
    """:func:`keras_svs.separation.average_patches` of a patch model's predictions, as
    TensorFlow graph operations.

    Args:
        model: patch model, ``(n, P, bins)`` -> ``(n, P, bins, 2)``.
        padded: ``(L, bins)`` magnitudes, ``L >= P``; patches start every ``hop`` frames
            from frame 0.
        hop: patch hop in frames.
        weights: ``(P,)`` weight of each patch position.

    Returns:
        ``(L', bins)`` probabilities, ``L' = (n - 1) * hop + P`` with ``n`` patches; frames
        covered by no weighted patch are 0.
    """
    frames = weights.shape[0]
    patches = tf.signal.frame(padded, frames, hop, axis=0)  # (n, P, bins)
    voice = tf.cast(model(patches, training=False)[..., 0], tf.float32)
    weighted = voice * weights[tf.newaxis, :, tf.newaxis]
    total = tf.signal.overlap_and_add(tf.transpose(weighted, [2, 0, 1]), hop)  # (bins, L')
    norm = tf.signal.overlap_and_add(
        tf.ones([tf.shape(patches)[0], 1]) * weights[tf.newaxis], hop)  # (L',)
    return tf.math.divide_no_nan(tf.transpose(total), norm[:, tf.newaxis])


def whole_probability(model: keras.Model, magnitude: tf.Tensor, mode: str = "average"):
    """Voice probability ``(frames, model bins)`` of a whole magnitude ``(frames, >= bins)``
    in one model call (the graph of what :meth:`Separator.voice_probability` computes in
    blocks); a stereo model's ``(channels, frames, model bins)`` of ``(channels, frames,
    >= bins)``."""
    s = settings(model)
    if s.channels != 1:
        mag = tf.transpose(magnitude[..., :s.bins], [1, 2, 0])  # (frames, bins, channels)
        total = tf.shape(mag)[0]
        padded = tf.pad(mag, [[0, -total % s.time_multiple], [0, 0], [0, 0]])
        out = model(padded[tf.newaxis], training=False)[0, :total, ..., 0]
        out = tf.ensure_shape(out, [None, s.bins, s.channels])  # transposed convs
        return tf.transpose(tf.cast(out, tf.float32), [2, 0, 1])
    mag = magnitude[:, :s.bins]
    total = tf.shape(mag)[0]
    if s.frames is None:
        padded = tf.pad(mag, [[0, -total % s.time_multiple], [0, 0]])
        return tf.cast(model(padded[tf.newaxis], training=False)[0, :total, :, 0], tf.float32)
    hop, weights = patch_weights(s.frames, mode)
    edge = s.frames - hop
    block = (total + hop - 1) // hop * hop
    padded = tf.pad(mag, [[edge, block - total + edge], [0, 0]])
    probability = patch_probabilities(model, padded, hop, tf.constant(weights))
    return probability[edge:edge + total]


def export(model: str | os.PathLike | keras.Model | None, out_dir: str | os.PathLike,
           mask: str | None = None, threshold: float | None = None,
           mode: str = "average", extension: str | None = None) -> Path:
    """Write a SavedModel with ``serve`` (waveform) and ``spectrogram`` endpoints.

    Args:
        model: ``.keras`` path or loaded model; ``None``: the shipped model.
        out_dir: destination folder (replaced if it exists).
        mask, threshold, mode, extension: as for :class:`keras_svs.Separator` (defaults:
            the model's).

    Returns:
        ``out_dir``.
    """
    model = model if isinstance(model, keras.Model) else load_model(
        model if model is not None else default_model_path())
    s = settings(model)
    config = s.stft
    mask = mask or s.mask
    threshold = s.threshold if threshold is None else float(threshold)
    make_mask(tf.zeros([1]), mask, threshold)  # validates `mask`
    extension = extension or s.extension
    spectral.fit_bins(tf.zeros([1]), 2, extension)  # validates `extension`
    patch_weights(s.frames or 1, mode)  # validates `mode`
    bins, channels = s.bins, s.channels

    def separation_mask(magnitude):
        probability = whole_probability(model, magnitude, mode)
        return probability, spectral.fit_bins(make_mask(probability, mask, threshold),
                                              config.bins, extension)

    def serve(waveform):
        spectrum = spectral.stft(waveform, config)  # (channels, frames, bins)
        if channels == 1:
            mono = tf.reduce_mean(waveform, axis=0)
            _, m = separation_mask(spectral.magnitude(spectral.stft(mono, config)))
            m = m[tf.newaxis]
        else:  # as Separator.separate: model_channels in, mask_channels out
            have = tf.shape(waveform)[0]
            picked = model_channels(have, channels, _GRAPH_ARRAYS)
            _, masks = separation_mask(spectral.magnitude(tf.gather(spectrum, picked)))
            m = tf.gather(tf.concat([masks, tf.reduce_mean(masks, 0, keepdims=True)], 0),
                          mask_channels(have, channels, _GRAPH_ARRAYS))
        vocals = spectral.istft(spectrum * tf.cast(m, tf.complex64), config,
                                tf.shape(waveform)[-1])
        return {"vocals": vocals, "accompaniment": waveform - vocals}

    def spectrogram(magnitude):
        probability, m = separation_mask(magnitude)
        return {"voice_probability": probability, "mask": m}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="waveform")])
    archive.add_endpoint("spectrogram", spectrogram, input_signature=[
        tf.TensorSpec([None, config.bins] if channels == 1 else [channels, None, config.bins],
                      tf.float32, name="magnitude")])
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    meta = {**s.as_dict(), "mask": mask, "threshold": threshold, "mode": mode, "extension": extension,
            "model_bins": bins, "spectrum_bins": config.bins,
            "endpoints": {"serve": "waveform (channels, samples) -> vocals, accompaniment",
                          "spectrogram": "magnitude (frames, bins) -> voice_probability, mask"}}
    (tmp / "assets").mkdir(exist_ok=True)
    (tmp / "assets" / "keras_svs.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def export_settings(path: str | os.PathLike) -> dict:
    """The settings an export was written with (``assets/keras_svs.json`` of the folder:
    sample rate, STFT, mask, threshold, mode, extension, ...), without loading its graph.

    Raises:
        ValueError: the folder is missing, or holds no readable ``assets/keras_svs.json``
            ("not a keras-svs export"); the message names the path.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such SavedModel folder")
    try:
        return json.loads((folder / "assets" / "keras_svs.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{folder}: not a keras-svs export (no readable "
                         f"assets/keras_svs.json)") from None


def load_export(path: str | os.PathLike) -> tuple[object, dict]:
    """Load a SavedModel written by :func:`export`, checking it is whole first.

    Returns:
        ``(loaded, meta)``: the ``tf.saved_model.load`` object (``serve``, ``spectrogram``)
        and the settings in ``assets/keras_svs.json``.

    Raises:
        ValueError: the folder is missing, is not a keras-svs export, or lacks its graph or
            variables; the message names the path.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such SavedModel folder")
    if not (folder / "saved_model.pb").is_file():
        raise ValueError(f"{folder}: not a SavedModel (no saved_model.pb)")
    variables = folder / "variables"
    if not (variables / "variables.index").is_file() or not any(
            variables.glob("variables.data-*")):
        raise ValueError(f"{folder}: the SavedModel's variables are missing "
                         f"(variables/variables.index and .data files); export it again")
    meta = export_settings(folder)
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{folder}: the SavedModel does not load ({first})") from None
    return loaded, meta


class ExportedSeparator:
    """A SavedModel written by :func:`export`, called as
    :meth:`keras_svs.separation.Separator.separate` is: ``separate(waveform, sample_rate)
    -> {"vocals", "accompaniment"}``, float32 of the input's shape, summing to it.

    Its ``serve`` graph runs at the model's rate (``sample_rate``): there its stems equal
    the engine's float32 ones (``runtime`` ``tensorflow`` or ``litert``) within 1e-4
    (``tests/test_export.py``); the graph is float32, so ``litert-int8`` (what the engine's
    ``auto`` takes on a CPU with int8 dot products) differs from it as that runtime does.
    An input at another rate is resampled to the model's and the vocals back to the input's (where the engine carries
    its mask to an STFT of the input at its own rate instead), so its stems then differ more
    from the engine's.

    Args:
        path: the SavedModel folder.

    Raises:
        ValueError: not a whole keras-svs export (:func:`load_export`).
    """

    def __init__(self, path: str | os.PathLike):
        self.loaded, self.meta = load_export(path)
        self.sample_rate = int(self.meta["sample_rate"])

    def separate(self, waveform: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a float ``(channels, samples)`` or ``(samples,)`` mixture at
        ``sample_rate`` Hz.

        Raises:
            ValueError: the waveform holds NaN or infinite samples.
        """
        x, squeeze = finite_channels(waveform)
        at_model = audio.resample(x, sample_rate, self.sample_rate)
        vocals = self.loaded.serve(tf.constant(at_model))["vocals"].numpy()
        vocals = audio.resample(vocals, self.sample_rate, sample_rate)[..., :x.shape[-1]]
        vocals = np.pad(vocals, [(0, 0), (0, x.shape[-1] - vocals.shape[-1])])
        stems = {"vocals": vocals, "accompaniment": x - vocals}
        return {k: v[0] if squeeze else v for k, v in stems.items()}


__all__ = ["ExportedSeparator", "export", "load_export", "patch_probabilities",
           "whole_probability"]


def describe(path: str | os.PathLike | None = None) -> dict:
    """What ``keras-svs info`` prints: a ``.keras`` model's settings
    (:class:`~keras_svs.models.ModelSettings`) and ``parameters`` (its weight count), or a
    SavedModel folder's settings (:func:`load_export`); ``None``: the shipped model.

    Raises:
        ValueError: the file or folder is not a keras-svs model or export.
    """
    if path is not None and Path(path).is_dir():
        return load_export(path)[1]
    model = load_model(path if path is not None else default_model_path())
    return {**settings(model).as_dict(), "parameters": f"{model.count_params():,}"}
