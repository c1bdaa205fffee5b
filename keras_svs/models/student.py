"""Cheaper students of the shipped ``spleeter`` pair, to be distilled from it (the
``student`` architecture).

A student maps the same stereo network input as the pair, ``(batch, frames, bins,
channels)`` (the lowest ``bins`` of a 4096-point STFT at 44.1 kHz, times ``input_scale``),
to one voice logit per bin and channel, ``(batch, frames, bins, channels)``, in float32.
It is a Spleeter-like U-Net that costs less in any of four ways, each a builder argument:

* ``filters``: narrower levels (Spleeter's are 16 ... 512);
* ``heads=2``: **one U-Net with two outputs**, a vocals and an accompaniment mask logit per
  channel, combined as the pair combines its two nets' masks
  (``m_v ** 2 / (m_v ** 2 + m_a ** 2)``, :class:`~keras_svs.models.inference.
  StableRatioLogit`); ``heads=1``: the vocals logit alone;
* ``separable``: the levels from this one down use depthwise-separable convolutions (a
  depthwise 5 x 5 or 3 x 3 filter per channel, then a 1 x 1 convolution across them);
* ``network_bins < bins``: the U-Net sees only the lowest ``network_bins``; the logits of
  the bins above come from a **learned extension**, one dense map per frame and channel
  from the U-Net's top :data:`EXTENSION_CONTEXT` logits and the log magnitudes of the band
  above (a few thousand multiply-adds a frame).

Each encoder level: a 5 x 5 stride-2 convolution, batch norm, leaky ReLU 0.2. Each decoder
level: a 3 x 3 convolution to four times its filters with ReLU, then a pixel shuffle (the
sub-pixel form of Spleeter's 5 x 5 stride-2 transposed convolution, which is what the
engine runs for the pair anyway: :mod:`keras_svs.models.inference`), batch norm, dropout
0.5 in the first three, and the encoder's output of the same size concatenated; the last
level makes ``heads`` maps at full size (Spleeter's makes one). A last 3 x 3 convolution
gives ``channels * heads`` logits. The training form is the inference
form: nothing to rewrite before conversion.

Frames and ``network_bins`` must be multiples of ``2 ** len(filters)``. Backend-agnostic
Keras 3: Keras layers and ``keras.ops`` only.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from .inference import StableRatioLogit

#: Spleeter's six encoder levels, the default width.
FILTERS = (16, 32, 64, 128, 256, 512)
#: Decoder levels with dropout 0.5 (the first three, as Spleeter's).
DROPOUT_LEVELS = 3
#: The U-Net's top logits that the learned extension reads, beside the band above.
EXTENSION_CONTEXT = 32
#: Layer-name prefix of a student's U-Net (not ``vocals_``: the engine's inference rewrite
#: of the pair does not apply, and need not).
PREFIX = "student_"


@keras.saving.register_keras_serializable(package="keras_svs")
class PixelShuffle(keras.layers.Layer):
    """``(batch, T, F, 4 * c)`` phase groups -> ``(batch, 2T, 2F, c)``: group ``2 * pt +
    pf`` fills frame phase ``pt`` and bin phase ``pf``. No weights."""

    def call(self, x):
        t, f, c4 = ops.shape(x)[1], ops.shape(x)[2], x.shape[-1]
        c = c4 // 4
        x = ops.reshape(x, (-1, t, f, 2, 2, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, 2 * t, 2 * f, c))

    def compute_output_shape(self, input_shape):
        b, t, f, c4 = input_shape
        return (b, None if t is None else 2 * t, None if f is None else 2 * f, c4 // 4)


@keras.saving.register_keras_serializable(package="keras_svs")
class BandExtension(keras.layers.Layer):
    """The learned extension: the logits of the ``above`` bins over a U-Net's band.

    Inputs ``[logits, upper]``: the U-Net's logits ``(batch, frames, network_bins,
    channels)`` and the network input of the band above ``(batch, frames, above,
    channels)`` (scaled magnitudes). Output ``(batch, frames, network_bins + above,
    channels)``: the logits, then ``W [z_top; log(1 + u)] + b`` for each frame and channel,
    where ``z_top`` is the top :data:`EXTENSION_CONTEXT` logits, ``u`` the band above, ``W``
    ``(EXTENSION_CONTEXT + above, above)``. Computes in float32.
    """

    def __init__(self, above: int, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.above = int(above)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(EXTENSION_CONTEXT + self.above, self.above),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.above,), initializer="zeros", name="bias")

    def call(self, inputs):
        logits, upper = (ops.cast(v, "float32") for v in inputs)
        features = ops.concatenate([logits[:, :, -EXTENSION_CONTEXT:, :],
                                    ops.log(1.0 + ops.maximum(upper, 0.0))], axis=2)
        features = ops.transpose(features, (0, 1, 3, 2))  # (b, t, c, context + above)
        extension = ops.transpose(ops.matmul(features, self.kernel) + self.bias, (0, 1, 3, 2))
        return ops.concatenate([logits, extension], axis=2)

    def compute_output_shape(self, input_shape):
        b, t, f, c = input_shape[0]
        return (b, t, f + self.above, c)

    def get_config(self):
        return {**super().get_config(), "above": self.above}


@keras.saving.register_keras_serializable(package="keras_svs")
class Take(keras.layers.Layer):
    """``x[..., start:stop]`` along ``axis`` (2: bins, 3: channels) of a ``(batch, frames,
    bins, channels)`` tensor (``stop`` None: to the end). No weights."""

    def __init__(self, axis: int, start: int, stop: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.start = int(axis), int(start)
        self.stop = None if stop is None else int(stop)

    def call(self, x):
        index = [slice(None)] * 4
        index[self.axis] = slice(self.start, self.stop)
        return x[tuple(index)]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        size = shape[self.axis]
        if size is not None:
            shape[self.axis] = len(range(size)[self.start:self.stop])
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "start": self.start,
                "stop": self.stop}


def _conv(x, filters: int, kernel: int, strides: int, separable: bool, name: str,
          activation=None):
    if separable:
        return layers.SeparableConv2D(filters, kernel, strides=strides, padding="same",
                                      activation=activation, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding="same",
                         activation=activation, name=name)(x)


def student_unet(x, filters: tuple[int, ...] = FILTERS, heads: int = 2,
                 separable: int | None = None):
    """The student's U-Net: network input ``(batch, frames, bins, channels)`` ->
    ``channels * heads`` mask logits of the same frames and bins (vocals first).

    Args:
        x: input tensor; frames and bins multiples of ``2 ** len(filters)``.
        filters: each encoder level's filters (the decoder mirrors them).
        heads: 1 (vocals logits) or 2 (vocals, then accompaniment logits).
        separable: the first encoder level (1-based, at least 2: the first reads the
            audio channels) from which every level, and its mirror in the decoder, is
            depthwise-separable; ``None``: none.

    Raises:
        ValueError: ``separable`` below 2.
    """
    if separable is not None and separable < 2:
        raise ValueError(f"separable levels start at level 2 or deeper, not {separable}")
    channels = x.shape[-1]
    p = PREFIX
    levels = len(filters)
    cut = levels + 1 if separable is None else int(separable)
    skips = []
    for i, f in enumerate(filters, 1):
        x = _conv(x, f, 5, 2, i >= cut, f"{p}down{i}_conv")
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{p}down{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"{p}down{i}_act")(x)
        skips.append(x)
    decoder = (*filters[-2::-1], heads)  # as Spleeter's: a map per head at full size
    for i, f in enumerate(decoder, 1):
        level = levels - i + 1  # the encoder level this one mirrors
        x = _conv(x, 4 * f, 3, 1, level >= cut, f"{p}up{i}_conv", activation="relu")
        x = PixelShuffle(name=f"{p}up{i}_shuffle")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"{p}up{i}_bn")(x)
        if i <= DROPOUT_LEVELS:
            x = layers.Dropout(0.5, name=f"{p}up{i}_dropout")(x)
        if i < levels:
            x = layers.Concatenate(name=f"{p}up{i}_skip")([skips[-1 - i], x])
    return layers.Conv2D(channels * heads, 3, padding="same", name=f"{p}logits")(x)


def student_body(x, filters: tuple[int, ...] = FILTERS, heads: int = 2,
                 separable: int | None = None, network_bins: int | None = None,
                 name: str = "logits_grid"):
    """A student: network input ``(batch, frames, bins, channels)`` -> the voice logit of
    every bin and channel, ``(batch, frames, bins, channels)``, float32, in a layer named
    ``name`` (``logits_grid``, the layer keras-svs trains).

    Args:
        x: input tensor.
        filters, heads, separable: as in :func:`student_unet`.
        network_bins: bins the U-Net sees (``None``: all); the rest get the learned
            extension (:class:`BandExtension`).

    Raises:
        ValueError: ``heads`` not 1 or 2; ``network_bins`` above ``bins``, under
            :data:`EXTENSION_CONTEXT` or not a multiple of ``2 ** len(filters)``.
    """
    if heads not in (1, 2):
        raise ValueError(f"a student has 1 or 2 heads, not {heads!r}")
    bins, channels = x.shape[2], x.shape[-1]
    seen = bins if network_bins is None else int(network_bins)
    multiple = 2 ** len(filters)
    if not EXTENSION_CONTEXT <= seen <= bins or seen % multiple:
        raise ValueError(f"network_bins must be a multiple of {multiple} in "
                         f"[{EXTENSION_CONTEXT}, {bins}], not {seen}")
    lower = x if seen == bins else Take(2, 0, seen, name="network_band")(x)
    z = student_unet(lower, tuple(filters), heads, separable)
    if heads == 2:
        vocals = Take(3, 0, channels, name="vocals_logits")(z)
        accompaniment = Take(3, channels, name="accompaniment_logits")(z)
        z = StableRatioLogit(name="pair_ratio" if seen < bins else name)(
            [vocals, accompaniment])
    elif seen == bins:
        return layers.Activation("linear", dtype="float32", name=name)(z)
    if seen == bins:
        return z
    upper = Take(2, seen, name="upper_band")(x)
    return BandExtension(bins - seen, name=name)([z, upper])


__all__ = ["student_body", "student_unet", "PixelShuffle", "BandExtension", "Take", "FILTERS",
           "EXTENSION_CONTEXT"]
