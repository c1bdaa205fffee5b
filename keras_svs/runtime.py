"""One way to run a model: a :class:`Predictor`, chosen by :func:`load`.

:class:`keras_svs.separation.Separator` computes a model's voice probability through one
callable, a :class:`Predictor` (its :attr:`~keras_svs.separation.Separator.predict`).
:func:`load` makes it from a model file or a Keras model, on one of
:data:`keras_svs.options.RUNTIMES`, finding, converting and falling back as needed:

* ``tensorflow``: the Keras model (its inference form) as one ``tf.function`` on the
  TensorFlow backend, an eager call on the other backends (:func:`tensorflow_predict`);
* ``litert``: the same function converted once to a LiteRT (TensorFlow Lite) flatbuffer
  and run by ``ai-edge-litert``'s interpreter with the XNNPACK delegate
  (:func:`litert_predict`). Its process imports neither TensorFlow nor Keras once the
  converted form is cached (:func:`cached_form`), which is most of a separation's start-up;
* ``litert-int8``: that form with its largest filters (:data:`INT8_MIN_WEIGHTS`) stored as
  per-channel int8 (:func:`quantize_filters`). Those convolutions become hybrid ones:
  float32 activations, int8 weights, which XNNPACK computes with int8 dot products. In a
  U-Net they are the deep, low-resolution layers, where most of the weights and the
  multiply-adds are; the shallow layers, which see the spectrogram at full resolution, stay
  float32. Not exact: BENCHMARKS.md has what it costs in dB and what it buys;
* ``auto``: where LiteRT applies (:func:`resolve`), ``litert-int8`` on a CPU whose int8
  dot products outrun float32 ones (:func:`int8_pays`), else ``litert``; else ``tensorflow``.

The converted form is built from the model file by the TensorFlow converter
(:func:`convert`) and cached in :func:`cache_dir`, keyed by the SHA-256 of the model file,
the runtime and :data:`FORM_VERSION`, with a JSON record beside it: the model's settings,
the model file's SHA-256 and the flatbuffer's. A later process needs neither the ``.keras``
file's Keras objects nor TensorFlow, and uses an entry only after checking it
(:func:`cached_form`): an entry that fails the check is removed, with one warning line on
stderr, and made again. The cache is a pure speed-up: deleting it costs one conversion.

A model file may come with a *packaged form* beside it (:func:`package_form`; the shipped
model does, so that no user's machine converts it): the converted flatbuffer less its large
filters, which are made again from the model file's own weights at first use, without
TensorFlow, and checked against the model file's SHA-256 and the flatbuffer's
(:func:`packaged_form`). :func:`ready_form` takes the cached form, else the packaged one.

TensorFlow and Keras stay the training, export and reference path; this module imports
them only to convert or to run the ``tensorflow`` runtime.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .options import RUNTIMES

#: Part of the cache key: bumped whenever the converted function or the cache entry's
#: record changes (the inference form, the conversion settings), so that no stale form is used.
FORM_VERSION = 2

#: ``litert-int8``: a convolution filter with at least this many weights is stored as int8.
#: In the ``spleeter`` nets these are the encoder's levels 4-6 and the decoder's 1-3
#: (204,800 weights and more); the next ones down have 147,456 (decoder 4) and 51,200
#: (encoder 3), and quantizing those moved the probabilities several times more for no
#: further speed (BENCHMARKS.md, the int8 runtime's section).
INT8_MIN_WEIGHTS = 200_000

#: the runtimes that run a converted LiteRT form
LITERT_RUNTIMES = ("litert", "litert-int8")

#: x86 CPU flags (``/proc/cpuinfo``) of an int8 dot-product instruction (VNNI). Without one,
#: XNNPACK's int8 convolutions are no faster than its float32 ones (BENCHMARKS.md, the int8
#: runtime's section), so ``auto`` keeps the exact float32 form there.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first processor's flags in ``cpuinfo`` (Linux x86), or None where that file
    does not exist or names none (another OS, another architecture)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def int8_pays(flags: frozenset[str] | None = None) -> bool:
    """Whether ``auto`` takes ``litert-int8`` rather than ``litert``: False only on an x86
    CPU known to lack :data:`INT8_DOT_FLAGS` (an AVX2-only one, say); True where the flags
    include one, or cannot be read (``flags``: default :func:`cpu_flags`)."""
    flags = cpu_flags() if flags is None else flags
    return flags is None or not flags.isdisjoint(INT8_DOT_FLAGS)


#: TensorFlow's pool sizes asked for by :func:`set_tensorflow_threads` (None: its default).
_TF_THREADS: int | None = None


def set_tensorflow_threads(threads: int) -> None:
    """Give TensorFlow's intra- and inter-op pools ``threads`` threads: now if TensorFlow
    is imported, else when :func:`load` imports it (a LiteRT predictor never does).

    Raises:
        RuntimeError: TensorFlow has already run an op in this process.
    """
    global _TF_THREADS
    _TF_THREADS = threads
    if "tensorflow" in sys.modules:
        configure_tensorflow()


def configure_tensorflow() -> None:
    """Give TensorFlow's pools :func:`set_tensorflow_threads`' count, where one was set and
    they differ (TensorFlow is imported)."""
    if _TF_THREADS is None:
        return
    import tensorflow as tf

    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads()) != (_TF_THREADS, _TF_THREADS):
        threading.set_intra_op_parallelism_threads(_TF_THREADS)
        threading.set_inter_op_parallelism_threads(_TF_THREADS)


def is_keras_model(model) -> bool:
    """Whether ``model`` is a ``keras.Model`` (never true before Keras is imported)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def load_model(path: str | os.PathLike):
    """:func:`keras_svs.models.load_model`, TensorFlow imported quietly
    (:func:`import_tensorflow_quietly`)."""
    import_tensorflow_quietly()
    from .models import load_model as load_keras_model

    return load_keras_model(path)


class Predictor:
    """A model's voice probability, one call: float32 NumPy in, float32 NumPy out.

    A fully convolutional model's takes one spectrogram ``(frames, bins)`` (a stereo
    model's ``(frames, bins, channels)``; frames a multiple of its time multiple) and gives
    the probability of the same shape; a patch model's takes a batch of patches ``(n, P,
    bins)`` and gives ``(n, P, bins)``. Made by :func:`load`.

    Attributes:
        runtime: what runs it: ``tensorflow``, ``litert`` or ``litert-int8``.
        settings: the model's :class:`~keras_svs.settings.ModelSettings`.
        model: the Keras model it was made from (its inference form, in its precision), or
            None where a LiteRT form was found ready (no Keras model loaded).
    """

    def __init__(self, call: Callable[[np.ndarray], np.ndarray], runtime: str, settings,
                 model=None):
        self.call, self.runtime, self.settings, self.model = call, runtime, settings, model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.call(x)


def load(model, runtime: str = "auto", precision: str = "float32",
         inference_form: bool = True, threads: int = 1) -> Predictor:
    """The :class:`Predictor` of a model.

    A LiteRT runtime (:func:`resolve`) takes the model file's form cached or packaged
    (:func:`ready_form`: no Keras model is loaded, TensorFlow is not imported); else the
    Keras model is loaded (its inference form, in ``precision``) and, for a LiteRT runtime,
    converted once (:func:`convert`); a conversion that fails under ``auto`` falls back to
    ``tensorflow`` with a warning.

    Args:
        model: a ``.keras`` path or a loaded ``keras.Model``.
        runtime: one of :data:`keras_svs.options.RUNTIMES`.
        precision: ``float32`` or ``bfloat16``
            (:func:`keras_svs.models.inference.at_precision`).
        inference_form: compute in the model's inference form
            (:func:`keras_svs.models.inference.inference_model`), else in ``model`` itself.
        threads: the LiteRT interpreter's threads.

    Raises:
        ValueError: an unknown runtime, or a LiteRT one where it does not apply; a file
            that is not a keras-svs model.
        ImportError: a LiteRT runtime without ``ai-edge-litert``.
    """
    given = is_keras_model(model)
    path = None if given else Path(model)
    choice = dict(from_file=path is not None, precision=precision,
                  inference_form=inference_form)
    chosen = resolve(runtime, **choice)
    form = ready_form(path, chosen) if chosen in LITERT_RUNTIMES else None
    if form is not None:
        from .settings import ModelSettings

        return Predictor(litert_predict(form[0], threads), chosen,
                         ModelSettings.from_dict(form[1]))
    import_tensorflow_quietly()
    configure_tensorflow()
    from .models import settings as settings_of
    from .models.inference import at_precision, inference_model

    loaded = model if given else load_model(path)
    keras_model = at_precision(inference_model(loaded) if inference_form else loaded,
                               precision)
    del loaded  # the training form's weights: not kept
    settings = settings_of(keras_model)
    chosen = resolve(runtime, **choice, convolutional=settings.frames is None)
    if settings.frames is not None:  # a patch model: batches of patches
        return Predictor(tensorflow_predict(keras_model, [None, settings.frames,
                                                          settings.bins], batched=True),
                         "tensorflow", settings, keras_model)
    shape = form_shape(settings)
    if chosen in LITERT_RUNTIMES:
        try:
            form = convert(keras_model, shape, path, chosen)
            return Predictor(litert_predict(form[0], threads), chosen, settings, keras_model)
        except Exception as error:  # noqa: BLE001 (any converter failure)
            if runtime != "auto":
                raise
            warnings.warn(f"{path}: no LiteRT form ({first_line(error)}); separating with "
                          "TensorFlow", RuntimeWarning, stacklevel=3)
    return Predictor(tensorflow_predict(keras_model, shape, batched=False), "tensorflow",
                     settings, keras_model)


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
    """The runtime a separator uses: ``tensorflow``, ``litert`` or ``litert-int8``.

    The LiteRT runtimes apply to a fully convolutional model (``convolutional``; ``None``:
    not known yet, assumed) loaded from a file, in its float32 inference form. ``auto``
    takes one where they apply and ``ai-edge-litert`` is installed (``litert-int8`` where
    :func:`int8_pays`, else ``litert``), else ``tensorflow``.

    Raises:
        ValueError: an unknown runtime; a LiteRT runtime asked for where it does not apply.
        ImportError: a LiteRT runtime asked for without ``ai-edge-litert`` installed.
    """
    check(runtime)
    if runtime == "tensorflow":
        return runtime
    applies = (from_file and precision == "float32" and inference_form
               and convolutional is not False)
    if runtime == "auto":
        if not (applies and litert_installed()):
            return "tensorflow"
        return "litert-int8" if int8_pays() else "litert"
    if not applies:
        raise ValueError(f"runtime {runtime} takes a fully convolutional model from a file, "
                         "in precision float32 with its inference form")
    if not litert_installed():
        raise ImportError(f"runtime {runtime} needs ai-edge-litert (pip install "
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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def form_key(model_path: str | os.PathLike, runtime: str = "litert",
             model_sha256: str | None = None) -> str:
    """The cache key of a model file's converted form for ``runtime`` (one of
    :data:`LITERT_RUNTIMES`): SHA-256 of its bytes (hex; ``model_sha256`` where the caller
    has it), ``-int8`` for ``litert-int8``, and :data:`FORM_VERSION`."""
    flavour = "-int8" if runtime == "litert-int8" else ""
    return f"{model_sha256 or file_sha256(model_path)}{flavour}-v{FORM_VERSION}"


def form_record(size: int, sha256: str, stored: dict, model_sha256: str,
                runtime: str) -> dict:
    """The JSON record of a converted form (a cache entry's ``.json``): what
    :func:`verified_settings` checks it against (the flatbuffer's ``size`` in bytes and
    ``sha256``)."""
    return {"form_version": FORM_VERSION, "runtime": runtime, "model_sha256": model_sha256,
            "sha256": sha256, "size": size, "settings": stored}


class DamagedForm(ValueError):
    """A converted form that fails its check (:func:`verified_settings`)."""


def verified_settings(flatbuffer: Path, record: Path, model_sha256: str, runtime: str) -> dict:
    """The model settings stored in a converted form's ``record`` (JSON), once checked:
    the record is for this model file (``model_sha256``), ``runtime`` and
    :data:`FORM_VERSION`, its settings are a :class:`~keras_svs.settings.ModelSettings`, and
    ``flatbuffer``'s size and SHA-256 are the ones it records.

    Raises:
        DamagedForm: naming what failed (a file missing or unreadable included).
    """
    from .settings import ModelSettings

    try:
        stored = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise DamagedForm(f"its record is unreadable ({first_line(error)})") from None
    if not isinstance(stored, dict):
        raise DamagedForm("its record is not a JSON object")
    for key, want in (("form_version", FORM_VERSION), ("runtime", runtime),
                      ("model_sha256", model_sha256)):
        if stored.get(key) != want:
            raise DamagedForm(f"its record is for another {key.replace('_', ' ')} "
                              f"({stored.get(key)!r})")
    try:
        ModelSettings.from_dict(stored["settings"])
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedForm(f"its settings are not a model's ({first_line(error)})") from None
    try:
        size = flatbuffer.stat().st_size
        digest = file_sha256(flatbuffer) if size == stored.get("size") else None
    except OSError as error:
        raise DamagedForm(f"its flatbuffer is unreadable ({first_line(error)})") from None
    if digest is None or digest != stored.get("sha256"):
        raise DamagedForm("its flatbuffer's checksum is not the recorded one")
    return stored["settings"]


def warn(message: str) -> None:
    """One ``Warning: ...`` line on stderr (a damaged cache entry, a conversion to come)."""
    sys.stderr.write(f"Warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """One ``keras-svs: ...`` line on stderr (what a run is about to do that takes long)."""
    sys.stderr.write(f"keras-svs: {message}\n")
    sys.stderr.flush()


#: What converting costs, per million weights and fixed (seconds, GB of peak memory):
#: fitted to the shipped model's conversion (19.7 million weights: about 45 s and 2.9 GB
#: peak for the whole `keras-svs separate` on 2 AVX2 cores; BENCHMARKS.md, the first run's
#: section).
CONVERSION_COST = {"seconds": (2.0, 5.0), "gb": (0.12, 0.6)}


def conversion_cost(model_path: str | os.PathLike, runtime: str) -> str:
    """The line :func:`convert` prints before it converts: that it converts, once, and
    about how long and how much memory it takes (:data:`CONVERSION_COST`)."""
    from .settings import weight_count

    try:
        millions = weight_count(model_path) / 1e6
    except (ValueError, OSError):
        millions = 20.0
    (ts, t0), (gs, g0) = CONVERSION_COST["seconds"], CONVERSION_COST["gb"]
    return (f"converting {model_path} to its {runtime} form, once (about "
            f"{ts * millions + t0:.0f} s and {gs * millions + g0:.1f} GB of memory); "
            "later runs use the cached form")


def _entry(model_path: str | os.PathLike, runtime: str,
           model_sha256: str | None = None) -> Path:
    """A cache entry's path without suffix (``.tflite``, ``.json``, ``.lock``)."""
    return cache_dir() / "litert" / form_key(model_path, runtime, model_sha256)


def cached_form(model_path: str | os.PathLike, runtime: str = "litert",
                model_sha256: str | None = None) -> tuple[Path, dict] | None:
    """``(flatbuffer path, model settings as stored)`` of a model file's cached form for
    ``runtime`` (one of :data:`LITERT_RUNTIMES`), once checked (:func:`verified_settings`);
    None when it is not cached or ``model_path`` is not a file. An entry that fails the
    check is removed (under the entry's lock, so that no other process's entry being
    written is), with one warning line on stderr; the caller then makes it again.
    ``model_sha256``: the model file's, where the caller has it."""
    if not Path(model_path).is_file():
        return None
    model_sha256 = model_sha256 or file_sha256(model_path)
    base = _entry(model_path, runtime, model_sha256)
    flatbuffer, record = base.with_suffix(".tflite"), base.with_suffix(".json")
    if not (flatbuffer.exists() or record.exists()):
        return None
    try:
        return flatbuffer, verified_settings(flatbuffer, record, model_sha256, runtime)
    except DamagedForm:
        pass
    with _locked(base.with_suffix(".lock")):  # check again: another process may be writing it
        return _checked_entry(base, model_path, model_sha256, runtime)


def _checked_entry(base: Path, model_path, model_sha256: str,
                   runtime: str) -> tuple[Path, dict] | None:
    """:func:`cached_form`'s check of entry ``base``, its lock held: the entry, or None
    where there is none or it failed (then it is removed, with one warning line)."""
    flatbuffer, record = base.with_suffix(".tflite"), base.with_suffix(".json")
    if not (flatbuffer.exists() or record.exists()):
        return None
    try:
        return flatbuffer, verified_settings(flatbuffer, record, model_sha256, runtime)
    except DamagedForm as error:
        for path in (flatbuffer, record):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        warn(f"the cached {runtime} form of {model_path} was damaged ({error}); "
             f"removed from {flatbuffer.parent}, it is made again")
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


def convert(model, shape: list, model_path: str | os.PathLike,
            runtime: str = "litert") -> tuple[Path, dict]:
    """Convert a fully convolutional model (its float32 inference form) to LiteRT for
    ``runtime`` (one of :data:`LITERT_RUNTIMES`) and cache it for ``model_path``, the file
    it was loaded from (:func:`cached_form`).

    The converted function is :func:`tensorflow_predict`'s, its variables frozen into
    constants: one spectrogram ``shape`` (``[None, bins]`` or ``[None, bins, channels]``)
    in, its voice probability out; for ``litert-int8`` with :func:`quantize_filters`
    applied. Written atomically: an interrupted conversion leaves no half-written form;
    processes converting the same file at once (``--jobs``) take turns on a lock file, and
    those after the first find its form.

    Returns:
        ``(flatbuffer path, stored settings)``, as :func:`cached_form` gives them.
    """
    model_sha256 = file_sha256(model_path)

    def make(base: Path) -> tuple[Path, dict]:
        from .models import settings

        note(conversion_cost(model_path, runtime))
        flatbuffer = _convert(model, shape, int8=runtime == "litert-int8")
        return store(base, flatbuffer, settings(model).as_dict(), model_sha256, runtime)

    return _entry_or_make(model_path, runtime, model_sha256, make)


def _entry_or_make(model_path: str | os.PathLike, runtime: str, model_sha256: str,
                   make: Callable[[Path], tuple[Path, dict] | None]) -> tuple[Path, dict] | None:
    """A model file's cache entry for ``runtime``, checked (:func:`_checked_entry`), else
    what ``make(base)`` stores there (:func:`store`; None: nothing), under the entry's lock,
    so that processes making one entry at once take turns and those after the first find it."""
    base = _entry(model_path, runtime, model_sha256)
    base.parent.mkdir(parents=True, exist_ok=True)
    with _locked(base.with_suffix(".lock")):
        found = _checked_entry(base, model_path, model_sha256, runtime)
        return found if found is not None else make(base)


def store(base: Path, flatbuffer: bytes | Path, stored: dict, model_sha256: str,
          runtime: str, sha256: str | None = None) -> tuple[Path, dict]:
    """Write a cache entry: ``base`` + ``.tflite`` (the flatbuffer) and ``.json`` (its
    record, :func:`form_record`), each atomically (staged, then renamed); the caller holds
    the entry's lock. ``flatbuffer``: its bytes (``sha256``, their checksum, is computed
    where not given), or a staged file (:func:`_staged`) that holds them, renamed into place
    (then ``sha256`` is needed). Returns ``(flatbuffer path, stored)``."""
    if isinstance(flatbuffer, Path):
        size, staged = flatbuffer.stat().st_size, flatbuffer
    else:
        size, staged = len(flatbuffer), _staged(base, ".tflite")
        sha256 = sha256 or hashlib.sha256(flatbuffer).hexdigest()
        staged.write_bytes(flatbuffer)
    os.replace(staged, base.with_suffix(".tflite"))
    record = form_record(size, sha256, stored, model_sha256, runtime)
    staged = _staged(base, ".json")
    staged.write_bytes(json.dumps(record).encode())
    os.replace(staged, base.with_suffix(".json"))
    return base.with_suffix(".tflite"), stored


def _staged(base: Path, suffix: str) -> Path:
    """Where this process writes ``base`` + ``suffix`` (a cache entry's file, a packaged
    form's) before renaming it into place."""
    return base.with_name(f".{base.name}.{os.getpid()}{suffix}")


def _convert(model, shape: list, int8: bool) -> bytes:
    """:func:`convert`'s work: the flatbuffer."""
    import_tensorflow_quietly()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    function = _voice_function(model, shape, batched=False)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    # The traced function is garbage once frozen: dropped before the converter runs, with
    # the heap it leaves behind, the conversion's peak memory falls by a third (the shipped
    # model's: 4.3 GB to 2.8 GB; BENCHMARKS.md, the first run's section).
    del function
    gc.collect()
    _release_heap()
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()
    return quantize_filters(flatbuffer) if int8 else flatbuffer


def _release_heap() -> None:
    """Hand freed heap memory back to the operating system (glibc's ``malloc_trim``; a
    no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def quantize_filters(flatbuffer: bytes, min_weights: int = INT8_MIN_WEIGHTS) -> bytes:
    """A LiteRT flatbuffer with the float32 filter of every convolution (``CONV_2D``) of at
    least ``min_weights`` weights stored as int8: symmetric, one scale per output channel
    (its largest absolute weight / 127), as the TensorFlow converter's dynamic-range
    quantization stores them. The interpreter then runs those convolutions as hybrid ones
    (float32 in and out; XNNPACK quantizes each input tensor on the fly). Every other
    tensor and operator is unchanged; a flatbuffer with no such filter comes back as it
    is. Needs TensorFlow (its flatbuffer schema).
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    conv = {i for i, code in enumerate(model.operatorCodes)
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D}
    quantized = {}  # buffer index -> its quantization (filters may share a buffer)
    for graph in model.subgraphs:
        for op in graph.operators:
            tensor = graph.tensors[op.inputs[1]] if op.opcodeIndex in conv else None
            data = None if tensor is None else model.buffers[tensor.buffer].data
            if (data is None or tensor.type != schema.TensorType.FLOAT32
                    or int(np.prod(tensor.shape)) < min_weights):
                continue
            if tensor.buffer not in quantized:
                levels, scale = int8_levels(np.frombuffer(bytes(data), np.float32).reshape(
                    tensor.shape[0], -1))
                model.buffers[tensor.buffer].data = np.frombuffer(levels.tobytes(), np.uint8)
                params = quantized[tensor.buffer] = schema.QuantizationParametersT()
                params.scale = scale.tolist()
                params.zeroPoint = [0] * len(scale)
                params.quantizedDimension = 0  # filters are (out, h, w, in)
            tensor.type = schema.TensorType.INT8
            tensor.quantization = quantized[tensor.buffer]
    if not quantized:
        return flatbuffer
    builder = flatbuffers.Builder(len(flatbuffer) // 3)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def int8_levels(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization of float32 ``(rows, n)`` weights: ``(levels,
    scale)``, int8 ``(rows, n)`` and float32 ``(rows,)`` (a row's largest absolute weight /
    127; 1 for an all-zero row), ``weights ~ levels * scale[:, None]``."""
    scale = np.abs(weights).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    levels = np.clip(np.round(weights / scale[:, None]), -127, 127).astype(np.int8)
    return levels, scale.astype(np.float32)


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


# -- the packaged form ---------------------------------------------------------------------
#: A converted form's constant of at least this many bytes that is one of the model file's
#: weights rearranged (a convolution filter's taps, transposed, regrouped, zeros between)
#: is stored in a packaged form as where to take it from, not as its bytes.
PACKAGED_MIN_BYTES = 1 << 16


def packaged_paths(model_path: str | os.PathLike, runtime: str = "litert") -> tuple[Path, Path]:
    """The packaged form of a model file for ``runtime``, beside it: ``(record, skeleton)``,
    ``NAME.RUNTIME.json`` and ``NAME.RUNTIME.tflite.zlib`` (``default.keras``:
    ``default.litert.json``, ``default.litert.tflite.zlib``)."""
    stem = Path(model_path).with_suffix("")
    return (stem.with_name(f"{stem.name}.{runtime}.json"),
            stem.with_name(f"{stem.name}.{runtime}.tflite.zlib"))


def form_shape(settings) -> list:
    """The input shape of a fully convolutional model's converted function:
    ``[None, bins]`` (mono) or ``[None, bins, channels]``."""
    return [None, settings.bins] + ([settings.channels] if settings.channels != 1 else [])


def package_form(model_path: str | os.PathLike, runtime: str = "litert",
                 min_bytes: int = PACKAGED_MIN_BYTES) -> Path:
    """Write the packaged form of a fully convolutional model file for ``runtime`` (one of
    :data:`LITERT_RUNTIMES`) beside it (:func:`packaged_paths`), so that no user's machine
    converts it (:func:`packaged_form` assembles it without TensorFlow).

    The form is the converted flatbuffer (:func:`convert`; the cached one where there is
    one) stored as a *skeleton* and *fills*: each constant of at least ``min_bytes`` bytes
    that is one of the model file's weights rearranged is cut out of the skeleton (the rest
    is zlib-compressed) and recorded as where its taps come from (int8-quantized where the
    form stores it so). The record holds the SHA-256 of the model file, of the skeleton and
    of the whole flatbuffer: the form is used only with that model file, and only when it
    assembles to the converted bytes exactly. Checked here by assembling it once. Needs
    TensorFlow.

    The model file's weights are first stored uncompressed in it
    (:func:`~keras_svs.settings.store_weights_uncompressed`: the same model, its SHA-256
    changed) and the record says where each fill's weight lies in them, so that the first
    use reads them as they lie (:func:`~keras_svs.settings.read_weights_at`), neither
    inflated nor parsed by h5py: the first separation then takes little longer than later
    ones (BENCHMARKS.md, the first run's section).

    Returns:
        the record's path.

    Raises:
        ValueError: a model that is not fully convolutional; a runtime that is not LiteRT.
    """
    import zlib

    from tensorflow.lite.python import schema_py_generated as schema

    from .settings import (read_settings, read_weights, store_weights_uncompressed,
                           weight_locations)

    if runtime not in LITERT_RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(LITERT_RUNTIMES)}, not {runtime!r}")
    settings = read_settings(model_path)
    if settings.frames is not None:
        raise ValueError(f"{model_path}: a patch model has no LiteRT form")
    if store_weights_uncompressed(model_path):
        note(f"{model_path}: its weights are now stored uncompressed (read at first use)")
    model_sha256 = file_sha256(model_path)
    found = cached_form(model_path, "litert", model_sha256)
    if found is None:
        import_tensorflow_quietly()
        from .models import load_model
        from .models.inference import inference_model

        found = convert(inference_model(load_model(model_path)), form_shape(settings),
                        model_path, "litert")
    exact = found[0].read_bytes()
    if runtime == "litert":
        blob = exact
    else:
        blob = _entry_or_make(model_path, runtime, model_sha256, lambda base: store(
            base, quantize_filters(exact), found[1], model_sha256, runtime))[0].read_bytes()
    weights = read_weights(model_path)
    taps = {}  # (shape, bytes) of a tap matrix -> (weight, kt, kf, transposed)
    for name, w in weights.items():
        if w.ndim == 4:
            for kt in range(w.shape[0]):
                for kf in range(w.shape[1]):
                    for transposed, m in ((False, w[kt, kf]), (True, w[kt, kf].T)):
                        m = np.ascontiguousarray(m)
                        taps.setdefault((m.shape, m.tobytes()), (name, kt, kf, transposed))
    model = schema.Model.GetRootAsModel(exact, 0)
    graph, fills, seen = model.Subgraphs(0), [], set()
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if (tensor.Buffer() in seen or tensor.Type() != schema.TensorType.FLOAT32
                or tensor.ShapeLength() != 4 or buffer.DataLength() < min_bytes):
            continue
        seen.add(tensor.Buffer())
        shape = [int(n) for n in tensor.ShapeAsNumpy()]
        data = buffer.DataAsNumpy().view(np.float32).reshape(shape)
        fill = _tap_fill(data, taps)
        if fill is None:
            continue
        values = _fill_values(fill, weights)
        for int8, content in ((False, values.tobytes()),
                              (True, int8_levels(values.reshape(shape[0], -1))[0].tobytes())):
            offset = blob.find(content)
            if offset >= 0 and blob.find(content, offset + 1) < 0:
                fills.append({**fill, "offset": offset, "int8": int8})
                break
    fills.sort(key=lambda fill: fill["offset"])
    kept, start = [], 0  # the skeleton: the flatbuffer's bytes outside the fills
    for fill in fills:
        kept.append(blob[start:fill["offset"]])
        start = fill["offset"] + _fill_size(fill)
    packed = zlib.compress(b"".join(kept) + blob[start:], 9)
    locations = weight_locations(model_path)
    record = {**form_record(len(blob), hashlib.sha256(blob).hexdigest(), found[1],
                            model_sha256, runtime),
              "skeleton_sha256": hashlib.sha256(packed).hexdigest(), "fills": fills,
              "weights": {fill["weight"]: locations[fill["weight"]] for fill in fills}}
    record_path, skeleton_path = packaged_paths(model_path, runtime)
    for path, data in ((skeleton_path, packed), (record_path, json.dumps(record).encode())):
        staged = _staged(path, "")
        staged.write_bytes(data)
        os.replace(staged, path)
    assembled = _staged(skeleton_path, ".tflite")
    try:
        if _assemble(model_path, runtime, model_sha256, assembled) is None:
            raise RuntimeError(f"{record_path}: the packaged form does not assemble to its "
                               "converted form")
    finally:
        with contextlib.suppress(FileNotFoundError):
            assembled.unlink()
    return record_path


def _tap_fill(data: np.ndarray, taps: dict) -> dict | None:
    """A converted ``(out, h, w, in)`` filter as one weight's tap matrices: ``{"weight",
    "shape", "rows", "transposed", "taps": [[group, a, b, kt, kf], ...]}``, where rows
    ``[group * rows, (group + 1) * rows)`` of tap ``(a, b)`` are the weight's tap ``(kt,
    kf)`` (transposed or not) and every other row is zero; None where it is not one."""
    out, height, width, cin = data.shape
    for rows in sorted({shape[0] for shape, _ in taps
                        if shape[1] == cin and shape[0] and out % shape[0] == 0}):
        source, entries = None, []
        for group in range(out // rows):
            for a in range(height):
                for b in range(width):
                    block = np.ascontiguousarray(data[group * rows:(group + 1) * rows, a, b])
                    found = taps.get(((rows, cin), block.tobytes()))
                    if found is None and not block.any():
                        continue  # a zero block
                    if found is None or source not in (None, (found[0], found[3])):
                        entries = None
                        break
                    source = found[0], found[3]
                    entries.append([group, a, b, found[1], found[2]])
                if entries is None:
                    break
            if entries is None:
                break
        if entries and source is not None:
            return {"weight": source[0], "shape": list(data.shape), "rows": rows,
                    "transposed": source[1], "taps": entries}
    return None


def _fill_values(fill: dict, weights: dict, out: np.ndarray | None = None) -> np.ndarray:
    """A fill's float32 filter, made from its weight's taps (:func:`_tap_fill`; ``weights``
    as read, float16 or float32, cast here), in ``out`` (zeros of its size, any shape)
    where given."""
    values = (np.zeros(fill["shape"], np.float32) if out is None
              else out.reshape(fill["shape"]))
    weight, rows = weights[fill["weight"]], fill["rows"]
    for group, a, b, kt, kf in fill["taps"]:
        tap = weight[kt, kf]
        values[group * rows:(group + 1) * rows, a, b] = tap.T if fill["transposed"] else tap
    return values


def _fill_size(fill: dict) -> int:
    """Bytes of a fill in the flatbuffer (int8 or float32)."""
    return int(np.prod(fill["shape"])) * (1 if fill["int8"] else 4)


def _assemble(model_path: str | os.PathLike, runtime: str, model_sha256: str,
              target: Path) -> dict | None:
    """Write the flatbuffer of a model file's packaged form for ``runtime`` into file
    ``target``, without TensorFlow: the skeleton decompressed, each fill made from the model
    file's weights in place (in the file's own pages, mapped: no copy of the flatbuffer
    is made in memory); returns its record. None (and no ``target``) with one warning line
    where the form is for another model file or fails a checksum; None (silently) where
    the model file has no packaged form."""
    import mmap
    import zlib

    from .settings import read_weights_at

    record_path, skeleton_path = packaged_paths(model_path, runtime)
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        if (record.get("form_version"), record.get("runtime")) != (FORM_VERSION, runtime):
            return None  # written by another version of keras-svs
        if record.get("model_sha256") != model_sha256:
            raise DamagedForm("it was made from another model file")
        packed = skeleton_path.read_bytes()
        if hashlib.sha256(packed).hexdigest() != record.get("skeleton_sha256"):
            raise DamagedForm("its skeleton's checksum is not the recorded one")
        skeleton = memoryview(zlib.decompress(packed))
        weights = read_weights_at(model_path, record["weights"])
        with open(target, "w+b") as file:
            file.truncate(record["size"])
            with mmap.mmap(file.fileno(), record["size"]) as blob:
                start = kept = 0  # the flatbuffer up to `start` is made; `kept` skeleton bytes
                for fill in record["fills"]:  # in offset order
                    gap = fill["offset"] - start
                    blob[start:fill["offset"]] = skeleton[kept:kept + gap]
                    if fill["int8"]:
                        values = _fill_values(fill, weights)  # float32
                        levels = int8_levels(values.reshape(values.shape[0], -1))[0]
                        blob[fill["offset"]:fill["offset"] + levels.nbytes] = levels.tobytes()
                    else:  # made in place: the file's bytes there are zeros
                        _fill_values(fill, weights, out=np.frombuffer(
                            blob, np.float32, int(np.prod(fill["shape"])), fill["offset"]))
                    start, kept = fill["offset"] + _fill_size(fill), kept + gap
                blob[start:] = skeleton[kept:]
                digest = hashlib.sha256(blob).hexdigest()
        if digest != record.get("sha256"):
            raise DamagedForm("it does not assemble to the recorded checksum")
    except (OSError, ValueError, KeyError, TypeError, IndexError, zlib.error) as error:
        with contextlib.suppress(OSError):
            target.unlink()
        warn(f"the packaged {runtime} form of {model_path} is not used "
             f"({first_line(error)}); converting the model instead")
        return None
    return record


def packaged_form(model_path: str | os.PathLike, runtime: str = "litert",
                  model_sha256: str | None = None) -> tuple[Path, dict] | None:
    """A model file's packaged form for ``runtime`` (:func:`package_form`), assembled
    without TensorFlow straight into its cache entry: ``(flatbuffer path, stored
    settings)`` as :func:`cached_form` gives them; None where there is none usable."""
    model_sha256 = model_sha256 or file_sha256(model_path)
    if not packaged_paths(model_path, runtime)[0].is_file():
        return None

    def make(base: Path) -> tuple[Path, dict] | None:
        staged = _staged(base, ".tflite")
        record = _assemble(model_path, runtime, model_sha256, staged)
        return None if record is None else store(base, staged, record["settings"],
                                                 model_sha256, runtime, record["sha256"])

    return _entry_or_make(model_path, runtime, model_sha256, make)


def ready_form(model_path: str | os.PathLike,
               runtime: str = "litert") -> tuple[Path, dict] | None:
    """A model file's converted form for ``runtime`` without converting it: the cached one
    (:func:`cached_form`), else its packaged one (:func:`packaged_form`); None where
    neither is there (the model is then converted, once)."""
    if not Path(model_path).is_file():
        return None
    model_sha256 = file_sha256(model_path)
    return (cached_form(model_path, runtime, model_sha256)
            or packaged_form(model_path, runtime, model_sha256))


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
