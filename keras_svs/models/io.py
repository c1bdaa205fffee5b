"""Model files: load (safe mode) and save at half size, and the settings a model carries
(:class:`~keras_svs.models.layers.ModelSettings`, stored in its
:class:`~keras_svs.models.layers.SpectrogramInput`)."""
from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from ..settings import WEIGHTS_MEMBER
from ..spectral import StftConfig
from .layers import ModelSettings, SpectrogramInput


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
        weights32.write_bytes(members[WEIGHTS_MEMBER])
        with h5py.File(weights32, "r") as source, h5py.File(weights16, "w") as target:
            _copy_h5(source, target)
        members[WEIGHTS_MEMBER] = weights16.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():  # the weights stored: read where they lie
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED
                             if name == WEIGHTS_MEMBER else zipfile.ZIP_DEFLATED)
    os.replace(staged, path)  # atomic: never a half-written model
    return path


def copy_weights(trained: keras.Model, model: keras.Model) -> keras.Model:
    """Set every weighted layer of ``model`` from the layer of the same name in ``trained``
    (input statistics included), in place: a model of the same preset, or one whose layers
    include ``model``'s (a ``spleeter`` pair for ``spleeter1``: the vocals net's). Weights
    are set as float32 (a half-precision file's too).

    Returns:
        ``model``.

    Raises:
        ValueError: ``trained`` lacks a weighted layer of ``model``, or its weights' shapes
            differ (the layer and both models named).
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            values = trained.get_layer(layer.name).get_weights()
        except ValueError:
            raise ValueError(f"a {trained.name!r} model has no layer {layer.name!r} for a "
                             f"{model.name!r} model") from None
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [v.shape for v in values]:
            raise ValueError(f"layer {layer.name!r} of the {trained.name!r} model has "
                             f"weights {[v.shape for v in values]}; the {model.name!r} "
                             f"model's take {shapes}")
        layer.set_weights([np.asarray(v, np.float32) for v in values])
    return model


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


def settings(model: keras.Model) -> ModelSettings:
    """The :class:`ModelSettings` stored in the model (STFT, input, patch and mask
    settings; ``ValueError`` if it is not a keras-svs model)."""
    return front_end(model).settings


def stft_config(model: keras.Model) -> StftConfig:
    """The STFT settings the model expects its input magnitudes to be computed with
    (``settings(model).stft``)."""
    return settings(model).stft


def set_input_statistics(model: keras.Model, mean: np.ndarray, std: np.ndarray) -> None:
    """Store per-bin input mean/std ``(bins,)`` in the model's front end."""
    front_end(model).set_statistics(mean, std)
