"""Model construction (loading and settings: :mod:`.io`).

Every model maps mixture magnitudes ``(batch, frames, bins)`` to per-bin probabilities
``(batch, frames, bins, 2)`` (channel 0 = voice); a model of ``channels > 1`` audio channels
(``spleeter``: stereo) maps ``(batch, frames, bins, channels)`` to
``(batch, frames, bins, channels, 2)``. Its first layer, :class:`SpectrogramInput`,
carries the STFT settings and input statistics, so a saved ``.keras`` file is self-contained.
"""
from __future__ import annotations

import dataclasses

import keras

from .io import (copy_weights, front_end, load_model, save_half_precision, set_input_statistics,
                 settings, stft_config)
from .layers import BinSoftmax, ModelSettings, SpectrogramInput
from .losses import (bin_accuracy, bin_cross_entropy, phase_sensitive_error,
                     weighted_bin_cross_entropy)
from .paper import paper_body
from .spleeter import TIME_MULTIPLE as SPLEETER_TIME_MULTIPLE, spleeter_body
from .presets import PRESETS, Preset, get_preset, with_network_input
from .student import FILTERS as STUDENT_FILTERS, student_body
from .unet import unet_body

__all__ = ["PRESETS", "Preset", "get_preset", "build_model", "with_bins", "load_model", "logits_model",
           "save_half_precision", "copy_weights", "settings", "ModelSettings",
           "set_input_statistics", "stft_config", "front_end", "bin_cross_entropy", "bin_accuracy",
           "weighted_bin_cross_entropy", "phase_sensitive_error"]


def build_model(preset: str | Preset, shortcuts: bool = True) -> keras.Model:
    """Build an untrained model from a preset.

    Args:
        preset: a preset name (see :data:`PRESETS`) or a :class:`Preset`.
        shortcuts: for ``unet``, False builds the same layers with the skip paths zeroed
            (autoencoder pretraining); ignored by ``paper`` and ``spleeter``.

    Returns:
        a ``keras.Model`` named after the preset: ``(batch, frames, bins)`` magnitudes in
        (``(batch, frames, bins, channels)`` for ``channels > 1``), ``(batch, frames, bins,
        2)`` probabilities out (``(batch, frames, bins, channels, 2)``); ``frames`` is fixed
        for ``paper`` models and free (a multiple of ``2 ** levels``) for ``unet`` and
        ``spleeter``. Every model has a layer ``logits_grid`` giving the voice logits.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    if p.architecture == "paper":
        frames, multiple = p.frames, 1
    elif p.architecture == "unet":
        frames, multiple = None, 2 ** len(p.arch.get("filters", (0,) * 6))
    elif p.architecture == "spleeter":
        frames, multiple = None, SPLEETER_TIME_MULTIPLE
    elif p.architecture == "student":
        frames, multiple = None, 2 ** len(p.arch.get("filters", STUDENT_FILTERS))
    else:
        raise ValueError(f"unknown architecture {p.architecture!r}")
    shape = (frames, p.bins) if p.channels == 1 else (frames, p.bins, p.channels)
    magnitude = keras.Input(shape, name="magnitude")
    front = SpectrogramInput(p.name, p.stft.sample_rate, p.stft.n_fft, p.stft.win_length,
                             p.stft.hop_length, p.bins, frames, multiple, p.log_input,
                             p.standardize, p.mask, p.threshold, channels=p.channels,
                             input_scale=p.input_scale, extension=p.extension,
                             name="spectrogram_input")
    x = front(magnitude)
    if p.architecture == "paper":
        logits = paper_body(x, p.frames, p.bins, **p.arch)
    elif p.architecture == "spleeter":
        logits = spleeter_body(x, **p.arch)
    elif p.architecture == "student":
        logits = student_body(x, **p.arch)
    else:
        logits = unet_body(x, **p.arch, skips=shortcuts)
    probabilities = BinSoftmax(name="probabilities")(logits)
    return keras.Model(magnitude, probabilities, name=p.name)


def logits_model(model: keras.Model) -> keras.Model:
    """The training view of a keras-svs model: the same layers and weights, ending at the
    voice logits ``(batch, frames, bins)`` (layer ``logits_grid``) before the
    :class:`BinSoftmax` head. The losses in :mod:`keras_svs.models.losses` take these
    logits, so their gradient does not vanish where the probabilities saturate; a weight
    file saved from either form loads into the other.

    Raises:
        ValueError: ``model`` has no ``logits_grid`` layer.
    """
    try:
        logits = model.get_layer("logits_grid").output
    except ValueError:
        raise ValueError(f"model {model.name!r} has no 'logits_grid' layer") from None
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def with_bins(model: keras.Model, bins: int) -> keras.Model:
    """The same trained model with its network seeing the lowest ``bins`` frequency bins.

    A fully convolutional network (``unet``, ``spleeter``) has the same weights at any
    band, and its compute is proportional to the bins; those above the new band take the
    model's mask ``extension`` at separation. Its mask, threshold and extension are kept.

    Args:
        model: a trained keras-svs model (:func:`load_model`).
        bins: a multiple of the network's time multiple, at most its STFT's bins.

    Returns:
        a new float32 model with ``model``'s weights.

    Raises:
        ValueError: a fixed-patch network (``paper``), ``bins`` it cannot take, or
            per-bin input statistics (``standardize``) that do not fit ``bins``.
        KeyError: a model of a preset this version does not know.
    """
    s = settings(model)
    preset = dataclasses.replace(with_network_input(get_preset(s.preset), bins=bins),
                                 mask=s.mask, threshold=s.threshold, extension=s.extension)
    return copy_weights(model, build_model(preset))
