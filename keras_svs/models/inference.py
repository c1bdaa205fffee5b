"""A trained U-Net rewritten for inference: the same function, fewer and faster operations.

Three exact rewrites (equal up to float32 rounding, ~1e-6 on the probabilities):

* **batch norm folded** into the convolution before it: at inference its statistics are
  constants, so ``gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta`` is one
  convolution with scaled kernel and shifted bias;
* **the last convolution as taps**: a 3 x 3 convolution to a single channel (slow in
  TensorFlow's CPU kernels) is a 1 x 1 convolution to 9 channels, one per kernel tap, whose
  maps are shifted and summed;
* **sub-pixel transposed convolutions**: a 5 x 5 stride-2 ``same`` transposed convolution
  equals a 3 x 3 convolution with four times the output channels, one group per output
  phase (even/odd frame x even/odd bin), followed by a pixel shuffle, which TensorFlow's
  CPU kernels run faster than its transposed convolution; the ReLU after it is applied
  before the shuffle, fused into the convolution (one full-size tensor fewer).

Built with Keras layers only, from the weights of a model made by
:func:`keras_svs.models.unet.unet_body`; used by :class:`keras_svs.separation.Separator`.
Never saved: the ``.keras`` file keeps the training-time form. A ``spleeter`` pair
(:mod:`keras_svs.models.spleeter`) gets the sub-pixel rewrite of its transposed
convolutions (:func:`spleeter_inference_model`); its batch norms stay (they follow a ReLU,
or feed a skip connection that takes the convolution before them), and its head computes
:class:`~keras_svs.models.spleeter.PairRatioLogit`'s function with finite terms in every
runtime (:class:`StableRatioLogit`).

:func:`at_precision` runs any model in ``bfloat16`` instead (not exact: faster where the
hardware has bfloat16 dot products, slower where it has not).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..options import INFERENCE_PRECISIONS as PRECISIONS

from .layers import BinSoftmax, SpectrogramInput

#: output phase (0 even, 1 odd) -> {input offset: kernel tap} of a 5-tap stride-2 ``same``
#: transposed convolution: output 2j takes inputs j-1 (tap 3) and j (tap 1); output 2j+1
#: takes j-1 (tap 4), j (tap 2) and j+1 (tap 0).
_TAPS = {0: {-1: 3, 0: 1}, 1: {-1: 4, 0: 2, 1: 0}}

#: inference precisions: ``float32`` (the trained function, the same on every machine) or
#: ``bfloat16`` (weights and activations rounded to bfloat16, sums in float32; the input
#: front end and the softmax stay float32)


def inference_model(model: keras.Model) -> keras.Model:
    """The fast inference form of a trained ``unet`` model; other models are returned as
    they are (the paper's network, or a U-Net built without its shortcuts).

    Input ``(batch, frames, bins)`` magnitudes, output ``(batch, frames, bins, 2)``
    probabilities, as the model's own.
    """
    names = {layer.name for layer in model.layers}
    if "vocals_down1_conv" in names:
        return spleeter_inference_model(model)
    if "enc0_conv" not in names or "dec0_up" not in names or "input_off" in names:
        return model
    levels = sum(1 for name in names if name.startswith("enc") and name.endswith("_conv"))
    front = model.get_layer("spectrogram_input")
    bins = front.settings.bins
    magnitude = keras.Input(shape=(None, bins), name="magnitude")
    spectrogram = SpectrogramInput.from_config(front.get_config())
    inputs = spectrogram(magnitude)
    spectrogram.set_weights(front.get_weights())
    x, encoded = inputs, []
    for i in range(levels):
        kernel, bias = _fold(model, f"enc{i}_conv", f"enc{i}_bn")
        x = _conv(x, kernel, bias, strides=2, name=f"enc{i}_conv")
        x = layers.LeakyReLU(model.get_layer(f"enc{i}_act").negative_slope,
                             name=f"enc{i}_act")(x)
        encoded.append(x)
    for i in reversed(range(levels)):
        kernel, bias = _fold(model, f"dec{i}_up", f"dec{i}_bn", transposed=True)
        # the ReLU commutes with the pixel shuffle: fused into the convolution
        x = _conv(x, _subpixel_kernel(kernel), np.tile(bias, 4), activation="relu",
                  name=f"dec{i}_up")
        x = _pixel_shuffle(x, kernel.shape[2], f"dec{i}")
        if i > 0:
            x = layers.Concatenate(name=f"dec{i}_skip")([x, encoded[i - 1]])
        conv = model.get_layer(f"dec{i}_conv")
        x = _conv(x, *conv.get_weights(), activation="relu", name=f"dec{i}_conv")
    x = layers.Concatenate(name="with_input")([x, inputs])
    logits = _single_output_conv(x, *model.get_layer("logits").get_weights(), name="logits")
    return keras.Model(magnitude, BinSoftmax(name="probabilities")(logits),
                       name=f"{model.name}_inference")


def spleeter_inference_model(model: keras.Model) -> keras.Model:
    """The inference form of a ``spleeter`` model (:func:`keras_svs.models.spleeter.
    spleeter_body`, the pair or the vocals net alone): each 5 x 5 stride-2 transposed
    convolution and its ReLU become a 3 x 3 convolution and a pixel shuffle; every other
    layer is copied with its weights. Same input and output as the model's own."""
    from .spleeter import STEMS

    front = model.get_layer("spectrogram_input")
    magnitude = keras.Input(shape=model.input_shape[1:], name="magnitude")
    spectrogram = SpectrogramInput.from_config(front.get_config())
    inputs = spectrogram(magnitude)
    spectrogram.set_weights(front.get_weights())

    def copy(name, x):
        layer = model.get_layer(name)
        twin = layer.__class__.from_config(layer.get_config())
        y = twin(x)
        twin.set_weights(layer.get_weights())
        return y

    levels = sum(1 for layer in model.layers
                 if layer.name.startswith(f"{STEMS[0]}_down") and layer.name.endswith("_conv"))
    names = {layer.name for layer in model.layers}
    logits = []
    for stem in (s for s in STEMS if f"{s}_down1_conv" in names):
        p = f"{stem}_"
        x, convs = inputs, []
        for i in range(1, levels + 1):
            conv = copy(f"{p}down{i}_conv", x)
            convs.append(conv)
            x = copy(f"{p}down{i}_act", copy(f"{p}down{i}_bn", conv)) if i < levels else conv
        for i in range(1, levels + 1):
            kernel, bias = model.get_layer(f"{p}up{i}_conv").get_weights()
            x = _conv(x, _subpixel_kernel(kernel), np.tile(bias, 4), activation="relu",
                      name=f"{p}up{i}_conv")
            x = copy(f"{p}up{i}_bn", _pixel_shuffle(x, kernel.shape[2], f"{p}up{i}"))
            if i < levels:
                x = layers.Concatenate(name=f"{p}up{i}_skip")([convs[-1 - i], x])
        logits.append(copy(f"{p}up{levels + 1}_conv", x))
    if len(logits) == 1:  # the vocals net alone: its own logit
        voice = layers.Activation("linear", dtype="float32", name="logits_grid")(logits[0])
    else:
        voice = StableRatioLogit(name="logits_grid")(logits)
    return keras.Model(magnitude, BinSoftmax(name="probabilities")(voice),
                       name=f"{model.name}_inference")


def at_precision(model: keras.Model, precision: str = "float32") -> keras.Model:
    """``model`` computing in ``precision`` (one of :data:`PRECISIONS`): ``float32`` returns
    it as it is; ``bfloat16`` returns a copy whose layers compute in bfloat16, except those
    pinned to float32 (:class:`SpectrogramInput`, :class:`BinSoftmax`), so the output is
    still float32 probabilities ``(batch, frames, bins, 2)``.

    bfloat16 keeps 8 bits of mantissa: probabilities move by ~1e-3 on average (a few
    hundredths at most), BENCHMARKS.md has what it does to separation quality and speed.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "float32":
        return model

    def in_bfloat16(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "bfloat16"})

    copy = keras.models.clone_model(model, clone_function=in_bfloat16)
    copy.set_weights(model.get_weights())
    return copy


def _fold(model: keras.Model, conv_name: str, bn_name: str,
          transposed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of convolution ``conv_name`` with batch norm ``bn_name`` folded in.

    Kernels are ``(h, w, in, out)`` (``(h, w, out, in)`` when ``transposed``); the
    per-output-channel scale applies along ``out``.
    """
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer(conv_name).get_weights())
    bn = model.get_layer(bn_name)
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(variance + bn.epsilon)
    kernel = kernel * (scale[:, None] if transposed else scale)
    return kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def _subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """A ``(5, 5, out, in)`` stride-2 transposed-convolution kernel as the ``(3, 3, in,
    4 * out)`` kernel of the equivalent convolution; output group ``2 * phase_t + phase_f``
    holds the phase (frame, bin) = (phase_t, phase_f)."""
    if kernel.shape[:2] != (5, 5):
        raise ValueError(f"expected a 5 x 5 kernel, got {kernel.shape}")
    out, cin = kernel.shape[2], kernel.shape[3]
    sub = np.zeros((3, 3, cin, 2, 2, out), np.float32)
    for pt, taps_t in _TAPS.items():
        for pf, taps_f in _TAPS.items():
            for dt, kt in taps_t.items():
                for df, kf in taps_f.items():
                    sub[dt + 1, df + 1, :, pt, pf, :] = kernel[kt, kf].T
    return sub.reshape(3, 3, cin, 4 * out)


def _pixel_shuffle(x, channels: int, name: str):
    """``(batch, T, F, 4 * channels)`` phase groups -> ``(batch, 2T, 2F, channels)``."""
    bins = x.shape[2]
    x = layers.Reshape((-1, bins, 2, 2, channels), name=f"{name}_phases")(x)
    x = layers.Permute((1, 3, 2, 4, 5), name=f"{name}_interleave")(x)
    return layers.Reshape((-1, 2 * bins, channels), name=f"{name}_shuffle")(x)


def _conv(x, kernel: np.ndarray, bias: np.ndarray, strides: int = 1,
          activation: str | None = None, name: str | None = None):
    """A ``same`` convolution with the given ``(h, w, in, out)`` kernel and bias."""
    conv = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=strides, padding="same",
                         activation=activation, name=name)
    y = conv(x)
    conv.set_weights([kernel, bias])
    return y


def _single_output_conv(x, kernel: np.ndarray, bias: np.ndarray, name: str):
    """A ``same`` ``(kh, kw, in, 1)`` convolution of ``(batch, T, F, in)`` as a 1 x 1
    convolution to one map per tap, shifted and summed: ``(batch, T, F)``."""
    kh, kw, cin, out = kernel.shape
    if out != 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"expected an odd-sized kernel to one channel, got {kernel.shape}")
    taps = _conv(x, kernel.reshape(kh * kw, cin).T[None, None], np.zeros(kh * kw, np.float32),
                 name=f"{name}_taps")
    return ShiftSum(kh, kw, float(bias[0]), name=name)(taps)


@keras.saving.register_keras_serializable(package="keras_svs")
class ShiftSum(keras.layers.Layer):
    """``(batch, T, F, kh * kw)`` tap maps -> ``(batch, T, F)``: tap ``(i, j)`` (channel
    ``i * kw + j``) read at offset ``(i - kh // 2, j - kw // 2)`` with zeros outside, summed,
    plus ``bias``."""

    def __init__(self, kh: int, kw: int, bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.kh, self.kw, self.bias = int(kh), int(kw), float(bias)

    def call(self, taps):
        rh, rw = self.kh // 2, self.kw // 2
        padded = ops.pad(taps, [(0, 0), (rh, rh), (rw, rw), (0, 0)])
        frames, bins = ops.shape(taps)[1], ops.shape(taps)[2]
        total = None
        for i in range(self.kh):
            for j in range(self.kw):
                piece = padded[:, i:i + frames, j:j + bins, i * self.kw + j]
                total = piece if total is None else total + piece
        return total + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3])

    def get_config(self):
        return {**super().get_config(), "kh": self.kh, "kw": self.kw, "bias": self.bias}


@keras.saving.register_keras_serializable(package="keras_svs")
class StableRatioLogit(keras.layers.Layer):
    """:class:`~keras_svs.models.spleeter.PairRatioLogit`'s function, ``2 * (log_sigmoid(z_v)
    - log_sigmoid(z_a))`` of the two nets' logits ``(batch, frames, bins, channels)``, with
    ``log_sigmoid(z) = min(z, 0) - log(1 + exp(-|z|))``: each term finite for every finite
    logit whichever kernels run it. (The LiteRT converter lowers ``log_sigmoid`` to
    ``-log(1 + exp(-z))``, infinite for logits below about -88, which the shipped model
    gives.) Equal to it up to float32 rounding. No weights; computes in float32."""

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, inputs):
        def log_sigmoid(z):
            return ops.minimum(z, 0.0) - ops.log(1.0 + ops.exp(-ops.abs(z)))

        voice, accompaniment = (ops.cast(z, "float32") for z in inputs)
        return 2.0 * (log_sigmoid(voice) - log_sigmoid(accompaniment))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
