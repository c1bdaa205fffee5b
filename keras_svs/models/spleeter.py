"""Deezer's Spleeter 2stems network (Hennequin et al. 2020, MIT licence) in Keras 3.

Spleeter separates with two independent U-Nets, one estimating a vocals mask and one an
accompaniment mask, each from the magnitude spectrogram of both stereo channels: input
``(batch, frames, 1024, 2)``, the lowest 1024 bins (0 to 11 kHz) of a 4096-point STFT
with hop 1024 at 44.1 kHz. Each U-Net:

* encoder: six 5 x 5 stride-2 convolutions (``same`` padding: 1 before, 2 after)
  with 16, 32, 64, 128, 256, 512 filters, each followed by batch norm (epsilon 1e-3) and
  leaky ReLU 0.2. As in Spleeter, the skip connections and the bottleneck take the
  convolutions' outputs *before* batch norm; the sixth batch norm is computed by Spleeter
  but never used, so here it is a :class:`KeptBatchNormalization` that holds its weights
  and passes its input through;
* decoder: six 5 x 5 stride-2 transposed convolutions (``same``) with 256, 128, 64, 32,
  16, 1 filters, each followed by ReLU, then batch norm, dropout 0.5 in the first three,
  then concatenated ``[encoder convolution, decoder]`` with the skip of the same size;
* a final 4 x 4 convolution, dilation 2 (``same``: 3 on each side), from 1 to 2 channels:
  one mask logit per input channel; Spleeter's mask is its sigmoid.

Spleeter's separation ("Wiener-like" soft masks): the vocals share of a bin is
``m_v ** 2 / (m_v ** 2 + m_a ** 2)`` from the two nets' masks ``m_v, m_a``; bins above
1024 get mask 0 for both stems. :func:`spleeter_body` returns that share as a logit,
:class:`PairRatioLogit`, so that keras-svs's two-class head (``BinSoftmax``) turns it into
the (voice, accompaniment) probabilities.

Frames must be a multiple of 64 (six stride-2 levels); bins a multiple of 64 (1024 here).
Backend-agnostic Keras 3: Keras layers and ``keras.ops`` only.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from ..options import STEMS

#: Filters of the six encoder levels.
ENCODER_FILTERS = (16, 32, 64, 128, 256, 512)
#: Filters of the six decoder levels (the last one: a single map before the mask conv).
DECODER_FILTERS = (256, 128, 64, 32, 16, 1)
#: Decoder levels with dropout 0.5 (the first three).
DROPOUT_LEVELS = 3
#: Frames (and bins) must be a multiple of this: 2 ** (encoder levels).
TIME_MULTIPLE = 2 ** len(ENCODER_FILTERS)
#: Frequency bins Spleeter's networks see: 1024 of the 2049 of a 4096-point FFT (11 kHz).
BINS = 1024
#: Batch norm settings of Spleeter (PyTorch momentum 0.01 is Keras momentum 0.99).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
#: The two networks of the 2stems model, in order, with their layer-name prefixes.


@keras.saving.register_keras_serializable(package="keras_svs")
class KeptBatchNormalization(keras.layers.BatchNormalization):
    """A batch norm whose weights are kept but whose output is not used: it returns its
    input unchanged, shape for shape.

    Spleeter applies batch norm and leaky ReLU after its sixth encoder convolution and then
    discards the result (the decoder starts from the convolution's output). A Keras
    functional model keeps only the layers on a path to its output, so a plain unused
    ``BatchNormalization`` would silently drop those 4 x 512 checkpoint values; this layer
    keeps them in the model (and in its parameter count) without changing the function.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_svs")
class PairRatioLogit(keras.layers.Layer):
    """The voice logit of a pair of Spleeter mask logits, in float32.

    Inputs ``[z_v, z_a]``: the vocals and accompaniment nets' pre-sigmoid mask logits, each
    ``(batch, frames, bins, channels)``. Output, same shape::

        z = 2 * (log_sigmoid(z_v) - log_sigmoid(z_a))

    Why: with ``m = sigmoid(z)`` the masks, ``sigmoid(z) = 1 / (1 + (m_a / m_v) ** 2)
    = m_v ** 2 / (m_v ** 2 + m_a ** 2)``, Spleeter's vocals share of the bin, exactly in
    maths; and ``log_sigmoid`` is finite for every finite logit, so ``z`` stays finite
    where the masks themselves underflow to 0 (``z_v = -200``: ``m_v ** 2`` is 0 in
    float32, the ratio 0/0). A logit, not a probability, so that the two-class head and the
    logit losses of keras-svs apply unchanged. No weights.
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, inputs):
        voice, accompaniment = (ops.cast(z, "float32") for z in inputs)
        return 2.0 * (ops.log_sigmoid(voice) - ops.log_sigmoid(accompaniment))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def spleeter_unet(x, name_prefix: str = "", filters: tuple[int, ...] = ENCODER_FILTERS):
    """One Spleeter U-Net: magnitudes ``(batch, frames, bins, channels)`` (channels last;
    Spleeter: bins 1024, channels 2 = left/right, magnitudes of an unnormalised Hann-window
    STFT) -> pre-sigmoid mask logits of the same shape, one per channel.

    Layer names are ``name_prefix`` + ``down{1..6}_conv|_bn|_act``, ``up{1..6}_conv|_relu|
    _bn|_dropout|_skip`` and ``up7_conv``, numbered like the PyTorch port's modules
    (``down1_conv``, ..., ``up7``) so that :mod:`keras_svs.models.spleeter_import` can map
    a checkpoint onto them.

    Args:
        x: input tensor; frames and bins multiples of :data:`TIME_MULTIPLE`.
        name_prefix: prefix of every layer name (``"vocals_"``, ``"accompaniment_"``).
        filters: the six encoder levels' filters (Spleeter's :data:`ENCODER_FILTERS`; the
            decoder mirrors them, :data:`DECODER_FILTERS`); smaller ones make test models.
    """
    if len(filters) != len(ENCODER_FILTERS):
        raise ValueError(f"a Spleeter U-Net has {len(ENCODER_FILTERS)} levels, not "
                         f"{len(filters)}")
    p = name_prefix
    channels = x.shape[-1]
    convs = []
    decoder = (*filters[-2::-1], 1)
    for i, level in enumerate(filters, 1):
        conv = layers.Conv2D(level, 5, strides=2, padding="same", name=f"{p}down{i}_conv")(x)
        convs.append(conv)
        if i < len(filters):
            x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                          name=f"{p}down{i}_bn")(conv)
            x = layers.LeakyReLU(0.2, name=f"{p}down{i}_act")(x)
        else:  # the bottleneck is the convolution itself; its batch norm is kept, unused
            x = KeptBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                       name=f"{p}down{i}_bn")(conv)
    for i, level in enumerate(decoder, 1):
        x = layers.Conv2DTranspose(level, 5, strides=2, padding="same",
                                   name=f"{p}up{i}_conv")(x)
        x = layers.ReLU(name=f"{p}up{i}_relu")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                      name=f"{p}up{i}_bn")(x)
        if i <= DROPOUT_LEVELS:
            x = layers.Dropout(0.5, name=f"{p}up{i}_dropout")(x)
        if i < len(decoder):
            x = layers.Concatenate(name=f"{p}up{i}_skip")([convs[-1 - i], x])
    return layers.Conv2D(channels, 4, dilation_rate=2, padding="same",
                         name=f"{p}up7_conv")(x)


def spleeter_body(x, name: str = "logits_grid", filters: tuple[int, ...] = ENCODER_FILTERS,
                  nets: int = 2):
    """The 2stems pair, or its vocals net alone: network input ``(batch, frames, bins,
    channels)`` -> the voice logit of every bin and channel, ``(batch, frames, bins,
    channels)``, in float32.

    ``nets=2`` (Spleeter): the vocals net (layers ``vocals_*``) and the accompaniment net
    (``accompaniment_*``) on the same input; the logit's sigmoid is Spleeter's vocals ratio
    ``m_v ** 2 / (m_v ** 2 + m_a ** 2)`` (:class:`PairRatioLogit`). ``nets=1``: the vocals
    net alone, whose own mask ``m_v`` is the voice probability (half the compute; the
    accompaniment is the mixture minus the vocals). The output layer is named ``name``
    (``logits_grid``: the layer keras-svs training takes as the logits); ``filters`` as in
    :func:`spleeter_unet`.

    Raises:
        ValueError: ``nets`` is not 1 or 2.
    """
    if nets not in (1, 2):
        raise ValueError(f"a spleeter body has 1 or 2 nets, not {nets!r}")
    voice = spleeter_unet(x, f"{STEMS[0]}_", tuple(filters))
    if nets == 1:
        return layers.Activation("linear", dtype="float32", name=name)(voice)
    accompaniment = spleeter_unet(x, f"{STEMS[1]}_", tuple(filters))
    return PairRatioLogit(name=name)([voice, accompaniment])
