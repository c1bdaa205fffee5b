"""Runtimes of the separation engine's one model call.

:class:`keras_svs.separation.Separator` computes a model's voice probability through one
callable, :attr:`~keras_svs.separation.Separator.predict`. This module makes it, on one of
:data:`keras_svs.options.RUNTIMES`:

* ``tensorflow``: the Keras model (its inference form) as one ``tf.function`` on the
  TensorFlow backend, an eager call on the other backends (:func:`tensorflow_predict`);
* ``litert``: the same function converted once to a LiteRT (TensorFlow Lite) flatbuffer
  and run by ``ai-edge-litert``'s interpreter with the XNNPACK delegate
  (:func:`litert_predict`). Its process imports neither TensorFlow nor Keras once the
  converted form is cached (:func:`cached_form`), which is most of a separation's start-up;
* ``auto``: ``litert`` where it applies (:func:`resolve`), else ``tensorflow``.

The converted form is built from the model file by the TensorFlow converter
(:func:`convert`) and cached in :func:`cache_dir`, keyed by the SHA-256 of the model file
and :data:`FORM_VERSION`, with the model's settings beside it (a JSON file), so that a
later process needs neither the ``.keras`` file's Keras objects nor TensorFlow. The cache
is a pure speed-up: deleting it costs one conversion.

TensorFlow and Keras stay the training, export and reference path; this module imports
them only to convert or to run the ``tensorflow`` runtime.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .options import RUNTIMES

#: Part of the cache key: bumped whenever the converted function changes (the inference
#: form, the conversion settings), so that no stale form is used.
FORM_VERSION = 1


def litert_installed() -> bool:
    """Whether ``ai-edge-litert``'s interpreter (the ``litert`` runtime) imports."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def check(runtime: str) -> str:
    """``runtime`` itself; ``ValueError`` if it is not one of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    return runtime


def resolve(runtime: str, *, from_file: bool, precision: str, inference_form: bool,
            convolutional: bool | None = None) -> str:
    """The runtime a separator uses: ``tensorflow`` or ``litert``.

    ``litert`` applies to a fully convolutional model (``convolutional``; ``None``: not
    known yet, assumed) loaded from a file, in its float32 inference form. ``auto`` takes
    it where it applies and ``ai-edge-litert`` is installed, else ``tensorflow``.

    Raises:
        ValueError: an unknown runtime; ``litert`` asked for where it does not apply.
        ImportError: ``litert`` asked for without ``ai-edge-litert`` installed.
    """
    check(runtime)
    if runtime == "tensorflow":
        return runtime
    applies = (from_file and precision == "float32" and inference_form
               and convolutional is not False)
    if runtime == "auto":
        return "litert" if applies and litert_installed() else "tensorflow"
    if not applies:
        raise ValueError("runtime litert takes a fully convolutional model from a file, in "
                         "precision float32 with its inference form")
    if not litert_installed():
        raise ImportError("runtime litert needs ai-edge-litert (pip install "
                          "'keras-svs[cpu]'); runtime auto falls back to tensorflow")
    return runtime


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name where it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def cache_dir() -> Path:
    """Where converted forms are cached: ``$KERAS_SVS_CACHE``, else
    ``$XDG_CACHE_HOME/keras-svs``, else ``~/.cache/keras-svs``."""
    if os.environ.get("KERAS_SVS_CACHE"):
        return Path(os.environ["KERAS_SVS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras-svs"


def form_key(model_path: str | os.PathLike) -> str:
    """The cache key of a model file's converted form: SHA-256 of its bytes (hex) and
    :data:`FORM_VERSION`."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return f"{digest.hexdigest()}-v{FORM_VERSION}"


def cached_form(model_path: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(flatbuffer path, model settings as stored)`` of a model file's cached LiteRT
    form, or None when it is not cached (or its settings file is unreadable, or
    ``model_path`` is not a file)."""
    if not Path(model_path).is_file():
        return None
    base = cache_dir() / "litert" / form_key(model_path)
    flatbuffer, stored = base.with_suffix(".tflite"), base.with_suffix(".json")
    if not flatbuffer.is_file():
        return None
    try:
        return flatbuffer, json.loads(stored.read_text())
    except (OSError, ValueError):
        return None


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null, where
    ``TF_CPP_MIN_LOG_LEVEL`` asks for a quiet TensorFlow (set and not ``0``): its oneDNN
    line is logged before that setting takes effect. A failing import still raises."""
    if "tensorflow" not in sys.modules:
        with _quiet_stderr():
            import tensorflow  # noqa: F401


def _voice_function(model, shape: list, batched: bool):
    """The model's voice probability (output channel 0, float32) as one ``tf.function``
    of an input of ``shape`` (``None``: any size; a batch of patches when ``batched``,
    else one spectrogram without a batch axis)."""
    import tensorflow as tf

    def call(x):
        voice = model(x if batched else x[tf.newaxis], training=False)[..., 0]
        voice = tf.cast(voice, tf.float32)
        return voice if batched else voice[0]

    return tf.function(call, input_signature=[tf.TensorSpec(shape, tf.float32)],
                       reduce_retracing=True)


def tensorflow_predict(model, shape: list,
                       batched: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The ``tensorflow`` runtime's predict: float32 NumPy in (``shape``), the voice
    probability as float32 NumPy out (the input's shape without the model's output axis):
    one compiled function on TensorFlow, an eager call on the other Keras backends."""
    import keras

    if keras.backend.backend() == "tensorflow":
        function = _voice_function(model, shape, batched)
        return lambda x: function(x).numpy()

    def eager(x):
        voice = model(x if batched else x[None], training=False)[..., 0]
        voice = keras.ops.convert_to_numpy(voice).astype(np.float32)
        return voice if batched else voice[0]

    return eager


def convert(model, shape: list, model_path: str | os.PathLike) -> tuple[Path, dict]:
    """Convert a fully convolutional model (its float32 inference form) to LiteRT and cache
    it for ``model_path``, the file it was loaded from (:func:`cached_form`).

    The converted function is :func:`tensorflow_predict`'s, its variables frozen into
    constants: one spectrogram ``shape`` (``[None, bins]`` or ``[None, bins, channels]``)
    in, its voice probability out. Written atomically: an interrupted conversion leaves no
    half-written form; processes converting the same file at once (``--jobs``) take turns
    on a lock file, and those after the first find its form.

    Returns:
        ``(flatbuffer path, stored settings)``, as :func:`cached_form` gives them.
    """
    base = cache_dir() / "litert" / form_key(model_path)
    base.parent.mkdir(parents=True, exist_ok=True)
    with _locked(base.with_suffix(".lock")):
        return cached_form(model_path) or _convert(model, shape, base)


def _convert(model, shape: list, base: Path) -> tuple[Path, dict]:
    """:func:`convert`'s work: the form written to ``base`` + ``.tflite`` and ``.json``."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    from .models import settings

    function = _voice_function(model, shape, batched=False)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model).convert()
    stored = settings(model).as_dict()
    for suffix, data in ((".json", json.dumps(stored).encode()), (".tflite", flatbuffer)):
        staged = base.with_name(f".{base.name}.{os.getpid()}{suffix}")
        staged.write_bytes(data)
        os.replace(staged, base.with_suffix(suffix))  # the .tflite last: it marks the entry
    return base.with_suffix(".tflite"), stored


def litert_predict(flatbuffer: str | os.PathLike,
                   threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The ``litert`` runtime's predict: float32 ``(frames, bins[, channels])`` in, the
    voice probability of the same shape out (a new array), computed by the LiteRT
    interpreter with ``threads`` threads (XNNPACK). The input tensor is resized when the
    frame count changes (blocks of a song have one size but for the first and last)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(flatbuffer), num_threads=threads)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    state = {"shape": None}

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if state["shape"] != x.shape:
            interpreter.resize_tensor_input(source, x.shape, strict=True)
            with _quiet_stderr():  # "Created TensorFlow Lite XNNPACK delegate" at the first
                interpreter.allocate_tensors()
            state["shape"] = x.shape
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return predict


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (``fcntl.flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 pointed at /dev/null, where ``TF_CPP_MIN_LOG_LEVEL`` asks for
    quiet (set and not ``0``)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in (None, "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
