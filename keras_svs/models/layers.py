"""Layers shared by the architectures: the spectrogram front end (which carries the model's
:class:`~keras_svs.settings.ModelSettings`) and the per-bin softmax head.

Backend-agnostic Keras 3 (``keras.ops`` only).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..settings import ModelSettings

LOG_EPS = 1e-6


@keras.saving.register_keras_serializable(package="keras_svs")
class SpectrogramInput(keras.layers.Layer):
    """Turns mixture magnitudes into network input, and carries the model's STFT settings.

    Input ``(batch, frames, bins)`` magnitudes (linear, in [0, 1]); output
    ``(batch, frames, bins, 1)``: optionally scaled by ``input_scale``, optionally
    ``log(|X| + 1e-6)``, optionally standardised per bin by the stored training-set
    ``mean``/``std`` (non-trainable weights, present only when ``standardize``). Computes
    in float32 whatever the global precision policy.

    With ``channels > 1`` (e.g. the two stereo channels of ``spleeter``) the input is
    ``(batch, frames, bins, channels)`` magnitudes, one spectrogram per audio channel, and
    the output has the same shape (the channels are the network's input channels).

    Args:
        preset: name of the recipe the model was built from.
        sample_rate, n_fft, win_length, hop_length: STFT settings of the model's input.
        bins: frequency bins the network sees (<= ``n_fft // 2 + 1``).
        frames: patch length in frames for patch models; ``None`` for fully convolutional.
        time_multiple: fully convolutional models need frame counts that are multiples of it.
        log_input: take the log of the magnitude first.
        standardize: apply the stored per-bin mean/std.
        mask: default separation mask, ``"binary"`` or ``"soft"``; threshold: its threshold.
        channels: audio channels of the input (1: a mono mix, no channel axis in the input).
        input_scale: factor applied to the magnitudes first: a network trained on another
            STFT normalisation sees its own. keras-svs magnitudes use a window divided by
            its sum (full scale ~0.5); ``spleeter`` was trained on an unnormalised periodic
            Hann window of 4096 samples, so its magnitudes are keras-svs's times the
            window's sum, 2048. 1.0 (the default, no operation) for the other presets.
        extension: default mask of the bins above ``bins`` (see
            :data:`keras_svs.spectral.EXTENSIONS`).
    """

    def __init__(self, preset: str, sample_rate: int, n_fft: int, win_length: int,
                 hop_length: int, bins: int, frames: int | None = None,
                 time_multiple: int = 1, log_input: bool = False, standardize: bool = False,
                 mask: str = "binary", threshold: float = 0.5, channels: int = 1,
                 input_scale: float = 1.0, extension: str = "top", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        #: the model's :class:`ModelSettings` (what :func:`keras_svs.models.settings` reads)
        self.settings = ModelSettings(
            preset=str(preset), sample_rate=int(sample_rate), n_fft=int(n_fft),
            win_length=int(win_length), hop_length=int(hop_length), bins=int(bins),
            frames=None if frames is None else int(frames), time_multiple=int(time_multiple),
            log_input=bool(log_input), standardize=bool(standardize), mask=str(mask),
            threshold=float(threshold), channels=int(channels),
            input_scale=float(input_scale), extension=str(extension))
        self.mean = self.std = None
        if standardize:  # only then: the paper's network keeps its exact parameter count
            self.mean = self.add_weight(shape=(bins,), initializer="zeros", trainable=False,
                                        name="mean")
            self.std = self.add_weight(shape=(bins,), initializer="ones", trainable=False,
                                       name="std")

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store per-bin input statistics ``(bins,)`` (of the log magnitude if ``log_input``)."""
        if self.mean is None:
            raise ValueError("this model does not standardise its input")
        self.mean.assign(np.asarray(mean, np.float32))
        self.std.assign(np.maximum(np.asarray(std, np.float32), 1e-3))

    def call(self, magnitude):
        x = magnitude
        if self.settings.input_scale != 1.0:
            x = x * self.settings.input_scale
        if self.settings.log_input:
            x = ops.log(x + LOG_EPS)
        if self.settings.standardize:
            mean, std = self.mean, self.std
            if self.settings.channels > 1:  # per bin, the same for every channel
                mean, std = mean[:, None], std[:, None]
            x = (x - mean) / std
        if self.settings.channels > 1:
            return x
        return ops.expand_dims(x, -1)

    def compute_output_shape(self, input_shape):
        if self.settings.channels > 1:
            return tuple(input_shape)
        return (*input_shape, 1)

    def get_config(self):
        return {**super().get_config(), **self.settings.as_dict()}


@keras.saving.register_keras_serializable(package="keras_svs")
class BinSoftmax(keras.layers.Layer):
    """Per-bin two-class softmax over (voice, accompaniment), in float32.

    Input: voice logits ``(batch, frames, bins)``; output ``(batch, frames, bins, 2)``
    probabilities, channel 0 = voice. With one logit per bin this equals a sigmoid, so it
    adds no parameters (the paper's 19,489,049 stay exact).
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, logits):
        logits = ops.cast(logits, "float32")
        return ops.softmax(ops.stack([logits, ops.zeros_like(logits)], axis=-1), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 2)
