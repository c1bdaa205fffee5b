"""What a model file says about its use (:class:`ModelSettings`), without Keras: the
separation engine reads it from a loaded model (:func:`keras_svs.models.settings`) or from
a cached converted form (:mod:`keras_svs.runtime`), which then needs no Keras at all;
:func:`read_settings`, :func:`read_weights` and :func:`read_weights_at` read a ``.keras`` file
itself, with neither Keras nor TensorFlow (``keras-svs info``, the packaged LiteRT form).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

#: The model shipped inside the package.
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.keras"

#: The member of a ``.keras`` archive that holds its weights (an HDF5 file).
WEIGHTS_MEMBER = "model.weights.h5"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What a model file says about its use: the STFT of its input, its input shape and
    normalisation, and its default separation mask. Stored as the configuration of the
    model's :class:`SpectrogramInput` (the keys of a saved ``.keras`` file are these field
    names), read with :func:`keras_svs.models.settings`, or from its stored form with
    :meth:`from_dict`.

    Attributes:
        preset: name of the recipe the model was built from.
        sample_rate: Hz of the model's input.
        n_fft, win_length, hop_length: its STFT, in samples (:attr:`stft`).
        bins: frequency bins the network sees (<= ``n_fft // 2 + 1``).
        frames: patch length in frames of a patch model; ``None`` for a fully
            convolutional one.
        time_multiple: a fully convolutional model takes frame counts that are multiples
            of it (1 for patch models).
        log_input, standardize, input_scale: the input normalisation
            (:class:`SpectrogramInput`).
        mask, threshold: the default separation mask and its threshold
            (:data:`keras_svs.options.MASKS`).
        channels: audio channels of the input (1: the mono mix; 2: stereo).
        extension: default mask of the bins above ``bins``
            (:data:`keras_svs.options.EXTENSIONS`).

    Raises:
        ValueError: ``channels`` < 1.
    """

    preset: str
    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    bins: int
    frames: int | None = None
    time_multiple: int = 1
    log_input: bool = False
    standardize: bool = False
    mask: str = "binary"
    threshold: float = 0.5
    channels: int = 1
    input_scale: float = 1.0
    extension: str = "top"

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, not {self.channels}")

    @property
    def stft(self) -> "StftConfig":  # noqa: F821 (imported here: SciPy's FFT is slow to import)
        """The STFT settings the model's input magnitudes are computed with
        (:class:`keras_svs.spectral.StftConfig`)."""
        from .spectral import StftConfig

        return StftConfig(self.sample_rate, self.n_fft, self.win_length, self.hop_length)

    def as_dict(self) -> dict:
        """The settings as ``{field: value}``, in field order (the stored form)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "ModelSettings":
        """The settings from their stored form (:meth:`as_dict`); a key missing takes its
        field's default.

        Raises:
            TypeError: a key that is no field; ValueError: as the constructor.
        """
        return cls(**stored)


def default_model_path() -> Path:
    """The model shipped inside the package (``ValueError`` if this install lacks it)."""
    if not DEFAULT_MODEL.is_file():
        raise ValueError(f"no model shipped at {DEFAULT_MODEL}; pass a model file (--model)")
    return DEFAULT_MODEL


def _archive(path: str | os.PathLike) -> zipfile.ZipFile:
    """A ``.keras`` file opened as the zip archive it is (``ValueError`` naming the path if
    it is missing or not one)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a .keras model file ({error})") from None


def _weights_data(path: str | os.PathLike) -> bytes:
    """The bytes of a ``.keras`` file's ``model.weights.h5`` (``ValueError`` naming the
    path where it has none)."""
    with _archive(path) as archive:
        try:
            return archive.read(WEIGHTS_MEMBER)
        except KeyError:
            raise ValueError(f"{path}: not a .keras model file (no {WEIGHTS_MEMBER})") from None


def read_settings(path: str | os.PathLike) -> ModelSettings:
    """The :class:`ModelSettings` a ``.keras`` file stores (the configuration of its
    ``SpectrogramInput`` layer in the archive's ``config.json``), read without Keras or
    TensorFlow.

    Raises:
        ValueError: the file is missing, not a ``.keras`` archive, or not a keras-svs
            model (no ``SpectrogramInput`` layer); the message names it.
    """
    with _archive(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: not a .keras model file (no readable config.json: "
                             f"{error})") from None
    stack = [config]
    while stack:  # the first SpectrogramInput layer, depth first
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class_name") == "SpectrogramInput":
                names = {f.name for f in dataclasses.fields(ModelSettings)}
                layer = item.get("config", {})
                return ModelSettings.from_dict({k: v for k, v in layer.items() if k in names})
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    raise ValueError(f"{path}: not a keras-svs model (no SpectrogramInput layer)")


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every weight a ``.keras`` file stores, ``{HDF5 path in model.weights.h5: float32
    array}`` (a float16-stored file's weights exactly, as Keras loads them), read with h5py:
    no Keras or TensorFlow.

    Raises:
        ValueError: the file is missing or holds no readable ``model.weights.h5``.
    """
    import h5py

    data = _weights_data(path)
    weights = {}
    with h5py.File(io.BytesIO(data), "r") as stored:
        # read as stored, then cast by NumPy: HDF5's own float16 conversion is ~10x slower
        stored.visititems(lambda name, item: weights.__setitem__(
            name, np.asarray(item[()]).astype(np.float32, copy=False))
            if isinstance(item, h5py.Dataset) else None)
    return weights


def weight_locations(path: str | os.PathLike) -> dict[str, dict]:
    """Where each weight of a ``.keras`` file lies in its ``model.weights.h5``: ``{HDF5
    path: {"offset": bytes from the member's start, "dtype": NumPy's name, "shape": list}}``,
    for the weights stored contiguously (as Keras stores them; a chunked or compact one is
    left out). With them, :func:`read_weights_at` reads weights without h5py.

    Raises:
        ValueError: the file is missing or holds no readable ``model.weights.h5``.
    """
    import h5py

    data = _weights_data(path)
    found = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and item.id.get_offset() is not None:
            found[name] = {"offset": int(item.id.get_offset()), "dtype": item.dtype.str,
                           "shape": list(item.shape)}

    with h5py.File(io.BytesIO(data), "r") as stored:
        stored.visititems(visit)
    return found


def read_weights_at(path: str | os.PathLike,
                    locations: dict[str, dict]) -> dict[str, np.ndarray]:
    """The weights of a ``.keras`` file at ``locations`` (:func:`weight_locations`'s, or
    some of them) as they are stored (float16 in a float16-stored file): read-only views
    on the bytes of its ``model.weights.h5``, read with neither h5py nor, where that member
    is stored uncompressed (:func:`store_weights_uncompressed`), inflating. The locations
    must be the file's own (the caller checks what it makes of them, e.g. by a checksum).

    Raises:
        ValueError: the file is missing, holds no ``model.weights.h5``, or a location lies
            outside it.
    """
    data = _weights_data(path)
    return {name: np.frombuffer(data, np.dtype(where["dtype"]),
                                int(np.prod(where["shape"])), int(where["offset"])
                                ).reshape([int(n) for n in where["shape"]])
            for name, where in locations.items()}


def store_weights_uncompressed(path: str | os.PathLike) -> bool:
    """Rewrite a ``.keras`` file so that its ``model.weights.h5`` is stored uncompressed
    (zip's ``STORED``; the other members as they were), atomically; the weights and the
    model are the same. Deflated, a float16-stored file's weights take under a tenth less
    room and a third of a second more to read (the shipped model's; :func:`read_weights_at`).
    Returns whether the file was rewritten (False: it was stored so already).

    Raises:
        ValueError: the file is missing or not a ``.keras`` archive.
    """
    path = Path(path)
    with _archive(path) as archive:
        members = archive.infolist()
        if all(m.compress_type == zipfile.ZIP_STORED for m in members
               if m.filename == WEIGHTS_MEMBER):
            return False
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        with zipfile.ZipFile(staged, "w") as out:
            for member in members:
                kind = (zipfile.ZIP_STORED if member.filename == WEIGHTS_MEMBER
                        else member.compress_type)
                out.writestr(member, archive.read(member), compress_type=kind)
    os.replace(staged, path)
    return True


def weight_count(path: str | os.PathLike) -> int:
    """The number of weights a ``.keras`` file stores (Keras's ``count_params()`` of the
    loaded model), read without Keras or TensorFlow."""
    import h5py

    with h5py.File(io.BytesIO(_weights_data(path)), "r") as stored:
        sizes = []
        stored.visititems(lambda name, item: sizes.append(item.size)
                          if isinstance(item, h5py.Dataset) else None)
    return int(sum(sizes))
