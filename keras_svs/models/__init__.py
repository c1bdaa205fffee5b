"""Model construction and loading.

Every model maps mixture magnitudes ``(batch, frames, bins)`` to per-bin probabilities
``(batch, frames, bins, 2)`` (channel 0 = voice); a model of ``channels > 1`` audio channels
(``spleeter``: stereo) maps ``(batch, frames, bins, channels)`` to
``(batch, frames, bins, channels, 2)``. Its first layer, :class:`SpectrogramInput`,
carries the STFT settings and input statistics, so a saved ``.keras`` file is self-contained.
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from ..spectral import StftConfig
from .layers import BinSoftmax, SpectrogramInput
from .losses import (bin_accuracy, bin_cross_entropy, magnitude_weights,
                     phase_sensitive_error, power_weights, weighted_bin_cross_entropy)
from .paper import paper_body
from .spleeter import TIME_MULTIPLE as SPLEETER_TIME_MULTIPLE, spleeter_body
from .presets import PRESETS, Preset, get_preset
from .unet import unet_body

__all__ = ["PRESETS", "Preset", "get_preset", "build_model", "load_model", "logits_model",
           "save_half_precision", "settings",
           "stft_config", "front_end", "bin_cross_entropy", "bin_accuracy",
           "weighted_bin_cross_entropy", "magnitude_weights", "phase_sensitive_error",
           "power_weights"]


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


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a keras-svs ``.keras`` model (Keras safe mode: no arbitrary code runs).

    Raises:
        ValueError: the file is missing or not a keras-svs model; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a loadable keras-svs model ({first})") from None
    try:
        front_end(model)  # raises if it is some other Keras model
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model


def save_half_precision(model: str | os.PathLike | keras.Model, path: str | os.PathLike) -> Path:
    """Save a model with its float32 weights stored as float16 (half the file size).

    The file loads like any other (:func:`load_model`): Keras casts the stored weights back
    to the layers' float32 variables, so inference still computes in float32.

    Returns:
        ``path``.
    """
    import tempfile
    import zipfile

    import h5py

    model = model if isinstance(model, keras.Model) else load_model(model)
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.keras"
        model.save(full)
        with zipfile.ZipFile(full) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        weights32, weights16 = Path(tmp) / "w32.h5", Path(tmp) / "w16.h5"
        weights32.write_bytes(members["model.weights.h5"])
        with h5py.File(weights32, "r") as source, h5py.File(weights16, "w") as target:
            _copy_h5(source, target)
        members["model.weights.h5"] = weights16.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    os.replace(staged, path)  # atomic: never a half-written model
    return path


def _copy_h5(source, target) -> None:
    """Copy an HDF5 tree, float32 datasets as float16, keeping every attribute."""
    import h5py

    target.attrs.update(dict(source.attrs))

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            data = item[()]
            if getattr(data, "dtype", None) == np.float32:
                data = data.astype(np.float16)
            target.create_dataset(name, data=data)
        else:
            target.require_group(name)
        target[name].attrs.update(dict(item.attrs))

    source.visititems(visit)


def front_end(model: keras.Model) -> SpectrogramInput:
    """The model's :class:`SpectrogramInput` layer (``ValueError`` if it has none)."""
    for layer in model.layers:
        if isinstance(layer, SpectrogramInput):
            return layer
    raise ValueError(f"model {model.name!r} is not a keras-svs model (no SpectrogramInput)")


def settings(model: keras.Model) -> dict:
    """STFT, patch and mask settings stored in the model (a copy)."""
    return dict(front_end(model).settings)


def stft_config(model: keras.Model) -> StftConfig:
    """The STFT settings the model expects its input magnitudes to be computed with."""
    s = settings(model)
    return StftConfig(s["sample_rate"], s["n_fft"], s["win_length"], s["hop_length"])


def set_input_statistics(model: keras.Model, mean: np.ndarray, std: np.ndarray) -> None:
    """Store per-bin input mean/std ``(bins,)`` in the model's front end."""
    front_end(model).set_statistics(mean, std)
