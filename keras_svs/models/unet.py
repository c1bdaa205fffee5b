"""A fully convolutional 2-D U-Net that predicts a per-bin voice logit (the ``unet`` preset).

Encoder: ``len(filters)`` levels of 5 x 5 stride-2 convolutions + batch norm + leaky ReLU.
Decoder: 5 x 5 stride-2 transposed convolutions, skip concatenation, a 3 x 3 convolution per
level, dropout in the two deepest levels; the network input is concatenated before a final
3 x 3 convolution to one logit per bin. Frames and bins must be multiples of
``2 ** len(filters)``.
"""
from __future__ import annotations

from keras import layers


def unet_body(x, filters: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
              dropout: float = 0.2, skips: bool = True):
    """Map network input ``(batch, frames, bins, 1)`` to voice logits ``(batch, frames, bins)``.

    Args:
        x: input tensor.
        filters: channels of each encoder level.
        dropout: rate in the two deepest decoder levels.
        skips: use the shortcuts (encoder-decoder skips and the input before the last
            convolution). ``False`` multiplies them by zero: the same layers and weights,
            but every path goes through the bottleneck, which makes autoencoder
            pretraining meaningful for this network.
    """
    inputs = x
    encoded = []
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 5, strides=2, padding="same", name=f"enc{i}_conv")(x)
        x = layers.BatchNormalization(name=f"enc{i}_bn")(x)
        x = layers.LeakyReLU(0.2, name=f"enc{i}_act")(x)
        encoded.append(x)
    for i in reversed(range(len(filters))):
        f = filters[i - 1] if i > 0 else filters[0]
        x = layers.Conv2DTranspose(f, 5, strides=2, padding="same", name=f"dec{i}_up")(x)
        x = layers.BatchNormalization(name=f"dec{i}_bn")(x)
        x = layers.ReLU(name=f"dec{i}_act")(x)
        if i >= len(filters) - 2:
            x = layers.Dropout(dropout, name=f"dec{i}_dropout")(x)
        if i > 0:
            x = layers.Concatenate(name=f"dec{i}_skip")([x, _shortcut(encoded[i - 1], skips,
                                                                     f"dec{i}_skip_off")])
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"dec{i}_conv")(x)
    x = layers.Concatenate(name="with_input")([x, _shortcut(inputs, skips, "input_off")])
    x = layers.Conv2D(1, 3, padding="same", name="logits")(x)
    return layers.Reshape((-1, x.shape[2]), name="logits_grid")(x)


def _shortcut(tensor, enabled: bool, name: str):
    """``tensor`` itself, or a zeroed copy of it (same shape, no weights) when disabled."""
    return tensor if enabled else layers.Rescaling(0.0, name=name)(tensor)
