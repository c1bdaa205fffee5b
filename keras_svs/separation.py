"""Separation: a model in, a waveform in, vocals and accompaniment out.

This module is the separation engine: :class:`Separator` is used for whole files (here), for
files streamed block by block (:mod:`keras_svs.streaming`), for validation during training
(:mod:`keras_svs.monitor`), and is what the SavedModel graph (:mod:`keras_svs.export`)
is tested equal to. Its one model call, :attr:`Separator.predict`, runs on a runtime of
:mod:`keras_svs.runtime`: TensorFlow (any Keras backend: compiled with ``tf.function`` on
TensorFlow, eager elsewhere) or LiteRT (a converted form, cached; then neither Keras nor
TensorFlow is imported). Keras is imported only where a model is loaded or built.

Steps (:meth:`Separator.separate_with_mask`):

1. resample the input to the model's rate; a mono model (``channels == 1``) sees the mono
   mix, a stereo model (``spleeter``) its first two channels (a mono input in both:
   :func:`model_channels`);
2. magnitude STFT at the model's settings; the model's voice probability for every bin,
   computed in blocks of model frames with context on either side
   (:meth:`Separator.probability_blocks`): patch models slide over time (patches averaged
   with :func:`patch_weights`, :func:`average_patches`); fully convolutional models see
   the whole spectrogram at once, stereo ones in blocks of :data:`BLOCK_FRAMES` with up to
   :data:`BLOCK_CONTEXT` frames of the song on each side;
3. the mask: ``soft`` (the probability), ``binary`` (probability > threshold) or
   ``thresholded`` (the paper: probabilities below the threshold set to 0); the bins above
   the model's band get the model's ``extension`` (:func:`keras_svs.spectral.fit_bins`);
4. the mask is carried to an STFT of the *input* at its own rate and applied with the
   mixture's phase: a mono model's mask to every channel, a stereo model's to its own
   channel (further channels take the mean mask: :func:`mask_channels`); vocals = inverse
   STFT, accompaniment = mixture - vocals, so the stems sum to the input.
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from . import audio, runtime as runtimes, spectral
from .spectral import MASKS, make_mask  # noqa: F401 (MASKS re-exported)
from .options import MODES, STEMS
from .runtime import load_model  # noqa: F401 (the engine's model loader, re-exported)
from .settings import DEFAULT_MODEL, ModelSettings, default_model_path  # noqa: F401

#: Values of patch-model activations kept in memory at once (sets the block size).
_BLOCK_BUDGET = 2 ** 21
#: Threads for the STFTs of :meth:`Separator.separate` (scipy.fft ``workers``) and LiteRT.
_WORKERS = os.cpu_count() or 1
#: Frames a multichannel fully convolutional model predicts per call (Spleeter's segment)
#: and the input frames of context it sees on each side (multiples of its time multiple),
#: so that its memory does not grow with the song.
BLOCK_FRAMES, BLOCK_CONTEXT = 512, 128


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for this process's separations: the STFTs' FFT workers
    (:class:`Separator`, :mod:`keras_svs.streaming`), the LiteRT interpreter's threads and
    TensorFlow's intra- and inter-op pools. The default is every core. TensorFlow is not
    imported for it: its pools are set now if it is imported already, else when a
    :class:`Separator` imports it (a LiteRT separator never does).

    Raises:
        ValueError: ``threads`` < 1.
        RuntimeError: TensorFlow has already run an op in this process (its pools are
            fixed from then on).
    """
    global _WORKERS
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    _WORKERS = threads
    runtimes.set_tensorflow_threads(threads)


def fft_threads() -> int:
    """The threads (scipy.fft ``workers``) of this process's separation STFTs."""
    return _WORKERS


def release_free_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere). Loading a model and each large TensorFlow call leave tens to hundreds of MB
    of freed but still resident heap behind, which would count towards the process's peak
    memory at the next call."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None; looked up once (a separation calls
    :func:`release_free_memory` between blocks, where no import should run)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def patch_weights(frames: int, mode: str) -> tuple[int, np.ndarray]:
    """``(hop, weights)`` for a patch model of ``frames`` frames per patch: ``centre`` = hop
    1, only the centre frame; ``average`` = hop ``ceil(P / 3)``, every frame of every patch,
    equal weights. ``weights`` is float32 ``(frames,)``.

    Raises:
        ValueError: an unknown mode (one of :data:`keras_svs.options.MODES`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "centre":
        return 1, np.eye(frames, dtype=np.float32)[frames // 2]
    return max(1, math.ceil(frames / 3)), np.ones(frames, np.float32)


def average_patches(voice: np.ndarray, hop: int, weights: np.ndarray) -> np.ndarray:
    """Overlap-average the predictions of patches that start every ``hop`` frames.

    Args:
        voice: float ``(n, P, bins)``: patch ``i`` covers frames ``[i * hop, i * hop + P)``.
        hop: patch hop in frames.
        weights: ``(P,)`` weight of each position in a patch (uniform: overlap averaging;
            one-hot centre with ``hop=1``: the paper's centre-frame slide).

    Returns:
        float32 ``(L, bins)``, ``L = (n - 1) * hop + P``: each frame's ``weights``-weighted
        mean of the patches covering it; 0 where no weighted patch does.
    """
    n, frames = voice.shape[:2]
    length = (n - 1) * hop + frames
    total = np.zeros((length, *voice.shape[2:]), np.float32)
    norm = np.zeros(length, np.float32)
    for j in range(frames):  # position j of every patch at once
        if weights[j]:
            total[j:j + (n - 1) * hop + 1:hop] += voice[:, j] * weights[j]
            norm[j:j + (n - 1) * hop + 1:hop] += weights[j]
    np.divide(total, norm[:, None], out=total, where=norm[:, None] > 0)
    return total


def finite_channels(waveform) -> tuple[np.ndarray, bool]:
    """A mixture as the engine takes it: float32 ``(channels, samples)``, and whether the
    input was ``(samples,)`` (its stems are then given back without the channel axis).

    Raises:
        ValueError: the waveform holds NaN or infinite samples.
    """
    x = np.asarray(waveform, np.float32)
    if not np.isfinite(x).all():
        raise ValueError("the waveform holds NaN or infinite samples; only finite "
                         "samples can be separated")
    return np.atleast_2d(x), x.ndim == 1


def model_channels(have, want: int, xp=np):
    """The input channel that each channel of a ``want``-channel model sees, of a
    ``have``-channel input: the first ``want``, the last repeated where the input has
    fewer (a mono input in every one). Int ``(want,)``.

    ``xp`` is the array namespace (``arange``, ``minimum``, ``where``): NumPy, or in a
    TensorFlow graph, where ``have`` may be a tensor, TensorFlow's (``tf.range``, ...)."""
    return xp.minimum(xp.arange(want), have - 1)


def mask_channels(have, want: int, xp=np):
    """Which of a ``want``-channel model's masks each of ``have`` input channels takes: its
    own (channel ``c < want``, when the input has at least ``want`` channels), else
    ``want``, standing for the mean of the masks. Int ``(have,)``; ``xp`` as in
    :func:`model_channels`."""
    channel = xp.arange(have)
    return xp.where((channel < want) & (have >= want), channel, want)


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
        mask: ``soft``, ``binary`` or ``thresholded``; default: the model's own.
        threshold: for ``binary``/``thresholded``; default: the model's own.
        mode: patch models only: ``average`` (default; hop ``ceil(P/3)``, all predicted
            frames averaged) or ``centre`` (the paper: hop 1, centre frame only).
        precision: ``float32`` (default: the trained function, the same result on every
            machine) or ``bfloat16`` (faster on CPUs with bfloat16 dot products, such as
            AVX-512 BF16 or AMX, and on GPUs; probabilities within a few hundredths: see
            :func:`keras_svs.models.inference.at_precision`).
        extension: the mask of the bins above the model's band, one of
            :data:`keras_svs.spectral.EXTENSIONS`; default: the model's own.
        inference_form: True (default): a U-Net or ``spleeter`` model computes in its
            inference form (:func:`keras_svs.models.inference.inference_model`: the same
            function, faster; a copy of the weights). False: ``model`` itself, e.g. a model
            being trained, whose weights change between calls (with ``precision``
            ``float32``).
        patch_batch: patch models: patches per model call (plus those overlapping the
            block's ends); default: as many as keep the activations near
            :data:`_BLOCK_BUDGET` values. The result does not depend on it.
        runtime: what runs the model call (:mod:`keras_svs.runtime`): ``tensorflow``
            (the Keras model), ``litert`` (its LiteRT form, converted once per model file
            and cached; fully convolutional models from a file, float32, inference form;
            the same stems within 1e-4), ``litert-int8`` (that form with its largest
            filters in int8: faster where the CPU has int8 dot products, not exact) or
            ``auto`` (default: where LiteRT applies and ``ai-edge-litert`` is installed,
            ``litert-int8`` on such a CPU and ``litert`` on others
            (:func:`keras_svs.runtime.int8_pays`), else ``tensorflow``; a model whose conversion fails falls back to ``tensorflow``
            with a warning).

    Raises:
        ValueError: an unknown mask, mode, extension, precision or runtime; a model file
            that is not a keras-svs model; a LiteRT runtime where it does not apply.
        ImportError: a LiteRT runtime without ``ai-edge-litert``.
    """

    def __init__(self, model: str | os.PathLike | keras.Model | None = None,
                 mask: str | None = None, threshold: float | None = None,
                 mode: str = "average", precision: str = "float32",
                 extension: str | None = None, inference_form: bool = True,
                 patch_batch: int | None = None, runtime: str = "auto"):
        given = runtimes.is_keras_model(model)
        #: the keyword arguments that make this separator again in another process
        #: (:func:`keras_svs.batch.separate_files` with ``jobs`` > 1); None for a model
        #: given as a Keras object
        self.arguments = None if given else dict(
            model=None if model is None else str(model), mask=mask, threshold=threshold,
            mode=mode, precision=precision, extension=extension,
            inference_form=inference_form, patch_batch=patch_batch, runtime=runtime)
        predictor = runtimes.load(model if model is not None else default_model_path(),
                                  runtime, precision, inference_form, threads=_WORKERS)
        #: the model's voice probability, one call (:class:`keras_svs.runtime.Predictor`):
        #: a batch of patches ``(n, P, bins) -> (n, P, bins)``, or a whole spectrogram
        #: ``(frames, bins) -> (frames, bins)`` (a stereo model's ``(frames, bins,
        #: channels)``; frames a multiple of the time multiple)
        self.predict = predictor
        #: the runtime of :attr:`predict`: ``tensorflow``, ``litert`` or ``litert-int8``
        self.runtime = predictor.runtime
        #: the Keras model that computes the probabilities: for a U-Net or ``spleeter``
        #: model its inference form (unless ``inference_form`` is False; the training form
        #: is not kept, which saves its weights' memory), else ``model``; in ``precision``.
        #: None where a LiteRT runtime found its form ready (no Keras model loaded).
        self.model = predictor.model
        #: the model's :class:`~keras_svs.settings.ModelSettings`
        self.settings = predictor.settings
        self.precision = precision
        #: audio channels the model takes (1: the mono mix; 2: stereo, ``spleeter``)
        self.channels = self.settings.channels
        #: the model's STFT settings
        self.config = self.settings.stft
        self.extension = extension or self.settings.extension
        spectral.fit_bins(np.zeros(1, np.float32), 2, self.extension)  # validates it
        self.mask = mask or self.settings.mask
        self.threshold = self.settings.threshold if threshold is None else float(threshold)
        make_mask(np.zeros(1, np.float32), self.mask, self.threshold)  # validates `mask`
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        bins, frames = self.settings.bins, self.settings.frames
        if frames is not None and self.channels != 1:
            raise ValueError("patch models take the mono mix (channels 1)")
        if frames is not None:  # a patch model
            #: patch models: the patch hop and the weight of each patch position
            #: (:func:`patch_weights`); model blocks start on multiples of the hop
            self.hop, self.weights = patch_weights(frames, mode)
            batch = patch_batch or max(8, _BLOCK_BUDGET // (frames * bins * 4))
            #: patch models: model frames predicted per model call of a whole song
            self.block = batch * self.hop
            #: model blocks start on multiples of it (patch models: the hop; fully
            #: convolutional models: their time multiple)
            self.step = self.hop
        else:  # fully convolutional: any number of frames (a multiple of time_multiple)
            self.step = self.settings.time_multiple
        release_free_memory()  # loading leaves freed but resident heap behind

    # -- spectrogram level ------------------------------------------------------------
    def probability_blocks(self, read: Callable[[int, int], np.ndarray], total: int,
                           block: int, context: int) -> Iterator[tuple[int, np.ndarray]]:
        """The voice probability of ``total`` model frames, block by block.

        Each block of ``block`` frames is predicted from a window reaching ``context``
        frames beyond it on either side: zero magnitudes outside the song, and, for a
        fully convolutional model, windows clipped to the song and its zeros up to the
        next time multiple (as one call on the whole song sees it). A patch model's
        blocks equal the whole song's probabilities for ``context = P - hop``; a fully
        convolutional model's when ``context`` covers its receptive field.

        Args:
            read: ``read(a, b)`` gives float ``(b - a, bins)`` magnitudes of model frames
                ``[a, b)`` (extra bins above the model's are not allowed; a stereo model's
                ``(b - a, bins, channels)``), called once per block with ascending ranges.
            total: frames of the song.
            block: frames per block, a multiple of :attr:`step`.
            context: frames of context on each side.

        Yields:
            ``(start, probability)``: float32 ``(frames, bins)`` (``(frames, bins,
            channels)``) for frames ``[start, start + block)`` (fewer in the last block).

        Raises:
            ValueError: ``block`` is not a positive multiple of :attr:`step`.
        """
        if block < 1 or block % self.step:
            raise ValueError(f"block must be a positive multiple of {self.step}, not {block}")
        convolutional = self.settings.frames is None
        end = total + (-total % self.step) if convolutional else total
        shape = (self.settings.bins,) if self.channels == 1 else (self.settings.bins,
                                                                   self.channels)
        for s in range(0, total, block):
            e = min(s + block, total)
            lo, hi = s - context, s + block + context
            if convolutional:
                lo, hi = max(0, lo), min(end, hi)
            a, b = max(lo, 0), min(hi, total)
            window = np.zeros((hi - lo, *shape), np.float32)
            window[a - lo:b - lo] = read(a, b)
            yield s, self._window_probability(window)[s - lo:e - lo]

    def mask_blocks(self, read: Callable[[int, int], np.ndarray], total: int, block: int,
                    context: int) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`probability_blocks` made separation masks (mask, threshold and
        extension of this separator): yields ``(start, mask)``, float32 ``(frames,
        config.bins)`` (a stereo model's ``(channels, frames, config.bins)``)."""
        for start, probability in self.probability_blocks(read, total, block, context):
            if self.channels != 1:
                probability = np.moveaxis(probability, -1, 0)
            yield start, self._mask(probability)

    def _window_probability(self, window: np.ndarray) -> np.ndarray:
        """The model's probability of one window of magnitudes: a fully convolutional
        model's for every frame; a patch model's for frames ``[0, L')`` of patches starting
        every hop from frame 0 (:func:`average_patches`)."""
        if self.settings.frames is None:
            return self.predict(window)
        frames = self.settings.frames
        patches = np.lib.stride_tricks.sliding_window_view(window, frames, axis=0)
        patches = np.ascontiguousarray(np.moveaxis(patches[::self.hop], -1, 1))
        return average_patches(self.predict(patches), self.hop, self.weights)

    def _mask(self, probability: np.ndarray) -> np.ndarray:
        """The separation mask of a probability ``(..., bins)``: ``(..., config.bins)``."""
        return spectral.fit_bins(make_mask(probability, self.mask, self.threshold),
                                 self.config.bins, self.extension)

    def voice_probability(self, magnitude: np.ndarray) -> np.ndarray:
        """Voice probability per bin.

        Args:
            magnitude: ``(frames, bins)`` mixture magnitude at the model's STFT settings
                (extra bins above the model's are ignored); a stereo model's ``(channels,
                frames, bins)``, one spectrogram per channel.

        Returns:
            float32 ``(frames, model bins)`` in [0, 1] (``(channels, frames, model bins)``).

        Raises:
            ValueError: a stereo model's magnitude without its channels.
        """
        mag = np.asarray(magnitude, np.float32)[..., :self.settings.bins]
        if self.channels != 1:
            if mag.ndim != 3 or mag.shape[0] != self.channels:
                raise ValueError(f"a {self.channels}-channel model takes ({self.channels}, "
                                 f"frames, bins) magnitudes, not {mag.shape}")
            mag = np.moveaxis(mag, 0, -1)  # (frames, bins, channels)
        total = mag.shape[0]
        if self.settings.frames is not None:  # the exact context of patches
            block, context = self.block, self.settings.frames - self.hop
        elif self.channels == 1:  # one call on the whole song
            block, context = max(self.step, total + (-total % self.step)), 0
        else:  # bounded memory
            block, context = self.fixed_blocks()
        pieces = [p for _, p in self.probability_blocks(lambda a, b: mag[a:b], total,
                                                       block, context)]
        out = np.concatenate(pieces) if pieces else np.zeros(mag.shape, np.float32)
        return out if self.channels == 1 else np.moveaxis(out, -1, 0)

    def fixed_blocks(self) -> tuple[int, int] | None:
        """``(block, context)`` in model frames of a multichannel fully convolutional
        model: every separation of a song (whole or streamed) predicts it in blocks of
        about :data:`BLOCK_FRAMES` frames seeing :data:`BLOCK_CONTEXT` frames on each
        side (both multiples of :attr:`step`), so its memory does not grow with the song
        and both paths compute the same probabilities. None for other models."""
        if self.settings.frames is not None or self.channels == 1:
            return None
        return (math.ceil(BLOCK_FRAMES / self.step) * self.step,
                math.ceil(BLOCK_CONTEXT / self.step) * self.step)

    def voice_mask(self, magnitude: np.ndarray) -> np.ndarray:
        """The separation mask ``(frames, config.bins)`` (a stereo model's ``(channels,
        frames, config.bins)``) for a model-rate magnitude, as :meth:`voice_probability`
        takes it."""
        return self._mask(self.voice_probability(magnitude))

    # -- waveform level ---------------------------------------------------------------
    def separate(self, waveform: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a mixture: the stems of :meth:`separate_with_mask`.

        Args:
            waveform: float ``(channels, samples)`` or ``(samples,)``.
            sample_rate: its rate in Hz (any; the model's input is resampled internally).

        Returns:
            ``{"vocals": ..., "accompaniment": ...}``: float32, the input's shape; they sum
            to the input.

        Raises:
            ValueError: the waveform holds NaN or infinite samples.
        """
        return self.separate_with_mask(waveform, sample_rate)[0]

    def separate_with_mask(self, waveform: np.ndarray,
                           sample_rate: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Separate a mixture, and give the mask it was separated with.

        Args:
            waveform: float ``(channels, samples)`` or ``(samples,)``.
            sample_rate: its rate in Hz (any; the model's input is resampled internally).

        Returns:
            ``(stems, mask)``: ``stems`` as :meth:`separate` gives them; ``mask`` the voice
            mask on the model's STFT grid, float32 ``(frames, config.bins)`` (a stereo
            model's ``(channels, frames, config.bins)``, one per channel it saw).

        Raises:
            ValueError: the waveform holds NaN or infinite samples.
        """
        x, squeeze = finite_channels(waveform)
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
            picked = model_channels(x.shape[0], self.channels)
            if native == self.config:
                model_spectrum = spectrum[picked]
            else:  # each input channel resampled once, even when the model sees it twice
                used, where = np.unique(picked, return_inverse=True)
                resampled = audio.resample(x[used], sample_rate, self.config.sample_rate)
                model_spectrum = spectral.stft_numpy(resampled, self.config,
                                                     workers=_WORKERS)[where]
        model_mask = self.voice_mask(np.abs(model_spectrum))
        if self.channels == 1:
            spectrum *= spectral.mask_to_grid(model_mask, self.config, native,
                                              spectrum.shape[1])
        else:
            grids = [spectral.mask_to_grid(m, self.config, native, spectrum.shape[1])
                     for m in model_mask]
            sources = mask_channels(x.shape[0], self.channels)
            if np.any(sources == self.channels):  # a channel takes the mean mask
                grids.append(sum(grids) / len(grids))
            for c, k in enumerate(sources):
                spectrum[c] *= grids[k]
        vocals = spectral.istft_numpy(spectrum, native, x.shape[-1], workers=_WORKERS)
        stems = {"vocals": vocals, "accompaniment": x - vocals}
        return {k: v[0] if squeeze else v for k, v in stems.items()}, model_mask

    def separate_file(self, path: str | os.PathLike, out_dir: str | os.PathLike,
                      codec: str = "wav", bit_depth: int = 16, bitrate: int = audio.MP3_BITRATE,
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
        separated, mask = self.separate_with_mask(waveform, rate)
        # all stems or none: a failure writing one (full disk, ...) leaves none behind
        audio.write_all({paths[stem]: separated[stem] for stem in stems}, rate, bit_depth,
                        bitrate)
        written = {stem: paths[stem] for stem in stems}
        if plot:
            from .plotting import plot_separation

            mean = mask if mask.ndim == 2 else mask.mean(axis=0)  # a stereo model's: mean
            written["plot"] = plot_separation(waveform, separated, rate, mean,
                                              self.config, paths["plot"],
                                              title=Path(path).name)
        return written
