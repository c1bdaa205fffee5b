"""Separation: a model in, a waveform in, vocals and accompaniment out.

Steps (:meth:`Separator.separate`):

1. resample the input to the model's rate; a mono model (``channels == 1``) sees the mono
   mix, a stereo model (``spleeter``) its first two channels (a mono input in both);
2. magnitude STFT at the model's settings; the model's voice probability for every bin
   (patch models slide over time, see :func:`patch_probabilities`; fully convolutional
   models see the whole spectrogram at once, stereo ones in blocks of
   :data:`BLOCK_FRAMES` with up to :data:`BLOCK_CONTEXT` frames of the song on each side);
3. the mask: ``soft`` (the probability), ``binary`` (probability > threshold) or
   ``thresholded`` (the paper: probabilities below the threshold set to 0); the bins above
   the model's band get the model's ``extension`` (:func:`keras_svs.spectral.fit_bins`);
4. the mask is carried to an STFT of the *input* at its own rate and applied with the
   mixture's phase: a mono model's mask to every channel, a stereo model's to its own
   channel (further channels take the mean mask); vocals = inverse STFT, accompaniment =
   mixture - vocals, so the stems sum to the input.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from . import audio, spectral
from .spectral import MASKS, make_mask  # noqa: F401 (MASKS re-exported)
from .models import load_model, settings, stft_config
from .models.inference import at_precision, inference_model
from .options import MODES, STEMS

DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.keras"
#: Values of patch-model activations kept in memory at once (sets the block size).
_BLOCK_BUDGET = 2 ** 21
#: Threads for the STFTs of :meth:`Separator.separate` (scipy.fft ``workers``).
_WORKERS = os.cpu_count() or 1
#: Frames a multichannel fully convolutional model predicts per call (Spleeter's segment)
#: and the input frames of context it sees on each side (multiples of its time multiple),
#: so that its memory does not grow with the song.
BLOCK_FRAMES, BLOCK_CONTEXT = 512, 128


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for this process's separations: TensorFlow's intra- and
    inter-op pools and the STFTs' FFT workers (:class:`Separator`,
    :mod:`keras_svs.streaming`). The default is every core.

    Raises:
        ValueError: ``threads`` < 1.
        RuntimeError: TensorFlow has already run an op in this process (its pools are
            fixed from then on).
    """
    global _WORKERS
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _WORKERS = threads


def fft_threads() -> int:
    """The threads (scipy.fft ``workers``) of this process's separation STFTs."""
    return _WORKERS


def default_model_path() -> Path:
    """The model shipped inside the package (``ValueError`` if this install lacks it)."""
    if not DEFAULT_MODEL.is_file():
        raise ValueError(f"no model shipped at {DEFAULT_MODEL}; pass a model file (--model)")
    return DEFAULT_MODEL


def release_free_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere). Loading a model and each large TensorFlow call leave tens to hundreds of MB
    of freed but still resident heap behind, which would count towards the process's peak
    memory at the next call (measured for :mod:`keras_svs.streaming`)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def patch_probabilities(model: keras.Model, padded: tf.Tensor, hop: int,
                        weights: tf.Tensor) -> tf.Tensor:
    """Voice probability of a patch model over a padded magnitude segment.

    Patches of the model's ``P`` frames start every ``hop`` frames from frame 0; each
    frame's probability is the ``weights``-weighted mean of the patches' predictions for it
    (uniform weights: overlap averaging; one-hot centre with ``hop=1``: the paper's
    centre-frame slide).

    Args:
        model: patch model, ``(n, P, bins)`` -> ``(n, P, bins, 2)``.
        padded: ``(L, bins)`` magnitudes, ``L >= P``.
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


def patch_weights(frames: int, mode: str) -> tuple[int, np.ndarray]:
    """``(hop, weights)`` for a patch model: ``centre`` = hop 1, only the centre frame;
    ``average`` = hop ``ceil(P / 3)``, every frame of every patch, equal weights."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "centre":
        return 1, np.eye(frames, dtype=np.float32)[frames // 2]
    return max(1, math.ceil(frames / 3)), np.ones(frames, np.float32)


def _pick_channels(have: int, want: int) -> list[int]:
    """The input channels a ``want``-channel model sees of a ``have``-channel input: the
    first ``want``, the last repeated where the input has fewer (mono: in every one)."""
    return [min(c, have - 1) for c in range(want)]


class Separator:
    """Separate singing voice from accompaniment.

    Example::

        from keras_svs import Separator
        from keras_svs import audio

        separator = Separator()                      # the model shipped in the package
        mixture, rate = audio.read("song.mp3")       # (channels, samples)
        stems = separator.separate(mixture, rate)    # {"vocals": ..., "accompaniment": ...}
        separator.separate_file("song.mp3", "separated/")  # separated/song/vocals.wav, ...

    Args:
        model: a ``.keras`` path or a loaded model; ``None`` (default) = the shipped model.
        mask: ``soft``, ``binary`` or ``thresholded``; default: the model's own default.
        threshold: for ``binary``/``thresholded``; default: the model's own.
        mode: patch models only: ``average`` (default; hop ``ceil(P/3)``, all predicted
            frames averaged) or ``centre`` (the paper: hop 1, centre frame only).
        extension: the mask of the bins above the model's band, one of
            :data:`keras_svs.spectral.EXTENSIONS`; default: the model's own.
        precision: ``float32`` (default: the trained function, the same result on every
            machine) or ``bfloat16`` (faster on CPUs with bfloat16 dot products, such as
            AVX-512 BF16 or AMX, and on GPUs; on a CPU without them a bfloat16 training
            step was 5x slower; probabilities within a few hundredths: see
            :func:`keras_svs.models.inference.at_precision`).
    """

    def __init__(self, model: str | os.PathLike | keras.Model | None = None,
                 mask: str | None = None, threshold: float | None = None,
                 mode: str = "average", precision: str = "float32",
                 extension: str | None = None):
        loaded = model if isinstance(model, keras.Model) else load_model(
            model if model is not None else default_model_path())
        #: the Keras model that computes the probabilities: for a U-Net its inference form
        #: (:func:`keras_svs.models.inference.inference_model`: the same function; the
        #: training form is not kept, which saves its weights' memory), else ``model``; in
        #: ``precision``
        self.model = at_precision(inference_model(loaded), precision)
        del loaded
        self.precision = precision
        self.settings = settings(self.model)
        #: audio channels the model takes (1: the mono mix; 2: stereo, ``spleeter``)
        self.channels = self.settings.get("channels", 1)
        self.config = stft_config(self.model)
        self.extension = extension or self.settings.get("extension", "top")
        spectral.fit_bins(np.zeros(1, np.float32), 2, self.extension)  # validates it
        self.mask = mask or self.settings["mask"]
        self.threshold = self.settings["threshold"] if threshold is None else float(threshold)
        make_mask(np.zeros(1, np.float32), self.mask, self.threshold)  # validates `mask`
        self.mode = mode
        #: the voice mask ``(frames, config.bins)`` of the last :meth:`separate` call, on the
        #: model's STFT grid (what ``--plot`` draws; a stereo model's: the channels' mean)
        self.last_mask: np.ndarray | None = None
        bins, frames = self.settings["bins"], self.settings["frames"]
        if frames is not None and self.channels != 1:
            raise ValueError("patch models take the mono mix (channels 1)")
        if frames is not None:  # a patch model
            self.hop, weights = patch_weights(frames, mode)
            batch = max(8, _BLOCK_BUDGET // (frames * bins * 4))
            self.block = batch * self.hop
            self._weights = tf.constant(weights)
            segment = self.block + 2 * (frames - self.hop)
            self._predict = tf.function(
                lambda x: patch_probabilities(self.model, x, self.hop, self._weights),
                input_signature=[tf.TensorSpec([segment, bins], tf.float32)])
        else:  # fully convolutional: any number of frames (a multiple of time_multiple)
            shape = [None, bins] if self.channels == 1 else [None, bins, self.channels]
            self._predict = tf.function(
                lambda x: tf.cast(self.model(x[tf.newaxis], training=False)[0, ..., 0],
                                  tf.float32),
                input_signature=[tf.TensorSpec(shape, tf.float32)], reduce_retracing=True)
        release_free_memory()  # loading leaves freed but resident heap behind

    # -- spectrogram level ------------------------------------------------------------
    def voice_probability(self, magnitude: np.ndarray) -> np.ndarray:
        """Voice probability per bin.

        Args:
            magnitude: ``(frames, bins)`` mixture magnitude at the model's STFT settings
                (extra bins above the model's are ignored); a stereo model's ``(channels,
                frames, bins)``, one spectrogram per channel.

        Returns:
            float32 ``(frames, model bins)`` in [0, 1] (``(channels, frames, model bins)``).
        """
        mag = np.asarray(magnitude, np.float32)[..., :self.settings["bins"]]
        if self.channels != 1:
            if mag.ndim != 3 or mag.shape[0] != self.channels:
                raise ValueError(f"a {self.channels}-channel model takes ({self.channels}, "
                                 f"frames, bins) magnitudes, not {mag.shape}")
            return np.moveaxis(self._blocks(np.moveaxis(mag, 0, -1)), -1, 0)
        total = mag.shape[0]
        frames = self.settings["frames"]
        if frames is None:
            multiple = self.settings["time_multiple"]
            padded = np.pad(mag, ((0, -total % multiple), (0, 0)))
            return self._predict(padded).numpy()[:total]
        edge = frames - self.hop
        blocks = max(1, math.ceil(total / self.block))
        padded = np.pad(mag, ((edge, blocks * self.block - total + edge), (0, 0)))
        out = [self._predict(padded[k * self.block:(k + 1) * self.block + 2 * edge]).numpy()
               [edge:edge + self.block] for k in range(blocks)]
        return np.concatenate(out)[:total]

    def _blocks(self, mag: np.ndarray) -> np.ndarray:
        """A fully convolutional model over ``(frames, bins, ...)`` in blocks of
        :data:`BLOCK_FRAMES`, each seeing up to :data:`BLOCK_CONTEXT` frames of the song on
        either side: the same call as on the whole spectrogram (zeros after its end, to the
        model's time multiple) for songs of up to ``BLOCK_FRAMES + BLOCK_CONTEXT`` frames,
        and memory that does not grow with longer ones. Blocks start on multiples of the
        model's time multiple."""
        total = mag.shape[0]
        multiple = self.settings["time_multiple"]
        size = math.ceil(BLOCK_FRAMES / multiple) * multiple
        context = math.ceil(BLOCK_CONTEXT / multiple) * multiple
        end = total + (-total % multiple)
        padded = np.pad(mag, [(0, end - total)] + [(0, 0)] * (mag.ndim - 1))
        out = []
        for s in range(0, end, size):
            lo, hi = max(0, s - context), min(end, s + size + context)
            out.append(self._predict(padded[lo:hi]).numpy()[s - lo:min(s + size, end) - lo])
        return np.concatenate(out)[:total]

    def voice_mask(self, magnitude: np.ndarray) -> np.ndarray:
        """The separation mask ``(frames, config.bins)`` (a stereo model's ``(channels,
        frames, config.bins)``) for a model-rate magnitude, as :meth:`voice_probability`
        takes it."""
        probability = self.voice_probability(magnitude)
        return spectral.fit_bins(make_mask(probability, self.mask, self.threshold),
                                 self.config.bins, self.extension)

    # -- waveform level ---------------------------------------------------------------
    def separate(self, waveform: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a mixture.

        Args:
            waveform: float ``(channels, samples)`` or ``(samples,)``.
            sample_rate: its rate in Hz (any; the model's input is resampled internally).

        Returns:
            ``{"vocals": ..., "accompaniment": ...}``: float32, the input's shape; they sum
            to the input.

        Raises:
            ValueError: the waveform holds NaN or infinite samples.
        """
        x = np.asarray(waveform, np.float32)
        if not np.isfinite(x).all():
            raise ValueError("the waveform holds NaN or infinite samples; only finite "
                             "samples can be separated")
        squeeze = x.ndim == 1
        x = np.atleast_2d(x)
        native = self.config.at_rate(sample_rate)
        # the STFTs in NumPy/SciPy on every core: twice as fast as tf.signal here
        spectrum = spectral.stft_numpy(x, native, workers=_WORKERS)  # (channels, frames, bins)
        if self.channels == 1:
            if native == self.config:  # the STFT is linear: the mono mix's is the mean
                model_spectrum = spectrum.mean(axis=0)
            else:
                mono = audio.resample(x.mean(axis=0), sample_rate, self.config.sample_rate)
                model_spectrum = spectral.stft_numpy(mono, self.config, workers=_WORKERS)
        else:
            picked = _pick_channels(x.shape[0], self.channels)
            if native == self.config:
                model_spectrum = spectrum[picked]
            else:  # each input channel resampled once, even when the model sees it twice
                used, where = np.unique(picked, return_inverse=True)
                resampled = audio.resample(x[used], sample_rate, self.config.sample_rate)
                model_spectrum = spectral.stft_numpy(resampled, self.config,
                                                     workers=_WORKERS)[where]
        model_mask = self.voice_mask(np.abs(model_spectrum))
        if self.channels == 1:
            self.last_mask = model_mask
            spectrum *= spectral.mask_to_grid(model_mask, self.config, native,
                                              spectrum.shape[1])
        else:
            self.last_mask = model_mask.mean(axis=0)
            grids = [spectral.mask_to_grid(m, self.config, native, spectrum.shape[1])
                     for m in model_mask]
            own = x.shape[0] >= self.channels  # else a mono input: both channels' mean
            if not own or x.shape[0] > len(grids):
                mean = sum(grids) / len(grids)
            for c in range(x.shape[0]):
                spectrum[c] *= grids[c] if own and c < len(grids) else mean
        vocals = spectral.istft_numpy(spectrum, native, x.shape[-1], workers=_WORKERS)
        stems = {"vocals": vocals, "accompaniment": x - vocals}
        return {k: v[0] if squeeze else v for k, v in stems.items()}

    def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike,
                      codec: str = "wav", bit_depth: int = 16,
                      stems: tuple[str, ...] = STEMS, plot: bool = False,
                      paths: dict[str, str | os.PathLike] | None = None) -> dict[str, Path]:
        """Separate an audio file into ``OUT_DIR/<file stem>/<stem>.<codec>``.

        The outputs keep the input's rate, channels and length. ``plot`` also writes
        ``separation.png`` there (:func:`keras_svs.plotting.plot_separation`).

        Args:
            paths: destinations ``{stem: path}`` (and ``"plot"``) instead of that layout
                (``out_dir`` and ``codec`` are then unused; the extension picks the format
                as in :func:`audio.write`); it must name every stem of ``stems`` (and
                ``"plot"`` with ``plot``).

        Returns:
            ``{stem: written path}`` (and ``"plot"``).

        Raises:
            audio.AudioError: naming the file: an unreadable, empty or non-finite input, or
                an output that cannot be written. The stems are written all or none: no
                stem (and no temporary file) is left behind by a failure.
        """
        unknown = set(stems) - set(STEMS)
        if unknown:
            raise ValueError(f"unknown stems {sorted(unknown)}; choose among {STEMS}")
        folder = Path(out_dir) / Path(path).stem
        if paths is None:
            paths = {stem: folder / f"{stem}.{codec}" for stem in stems}
            paths["plot"] = folder / "separation.png"
        else:
            paths = {key: Path(p) for key, p in paths.items()}
            missing = [key for key in (*stems, *(["plot"] if plot else [])) if key not in paths]
            if missing:
                raise ValueError(f"paths lacks {missing}")
        waveform, rate = audio.read(path)
        separated = self.separate(waveform, rate)
        # all stems or none: a failure writing one (full disk, ...) leaves none behind
        audio.write_all({paths[stem]: separated[stem] for stem in stems}, rate, bit_depth)
        written = {stem: paths[stem] for stem in stems}
        if plot:
            from .plotting import plot_separation

            written["plot"] = plot_separation(waveform, separated, rate, self.last_mask,
                                              self.config, paths["plot"],
                                              title=Path(path).name)
        return written

    def separate_files(self, paths, out_dir: str | os.PathLike = "separated", **options):
        """Separate several files with this separator, one after another:
        :func:`keras_svs.batch.separate_files` (same keyword ``options``, but no ``jobs``).

        Returns:
            an iterator of :class:`keras_svs.batch.Outcome`, one per file as it finishes.
        """
        from .batch import separate_files

        return separate_files(self, paths, out_dir, **options)
