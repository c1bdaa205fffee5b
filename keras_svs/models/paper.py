"""The CNN of Lin et al. (2018), "Singing Voice Separation Using a Deep CNN Trained by
Ideal Binary Mask and Cross Entropy", parameterised by patch size.

With the defaults and a 9 x 2049 input it has exactly 19,489,049 parameters.
"""
from __future__ import annotations

from keras import layers


def paper_body(x, frames: int, bins: int, filters: tuple[int, int, int, int] = (32, 16, 64, 32),
               kernel: tuple[int, int] = (3, 12), pool: int = 12,
               dense: tuple[int, int] = (2048, 512), dropout: float = 0.5):
    """Map network input ``(batch, frames, bins, 1)`` to voice logits ``(batch, frames, bins)``.

    Conv(f0) -> Conv(f1) -> MaxPool(1 x pool, SAME) -> Conv(f2) -> Conv(f3) ->
    MaxPool(1 x pool, SAME) -> Dropout -> Dense(d0) -> Dropout -> Dense(d1) ->
    Dense(frames * bins) logits; ReLU, stride 1, SAME padding throughout.
    """
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, kernel, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        if i in (1, 3):
            x = layers.MaxPooling2D((1, pool), strides=(1, pool), padding="same",
                                    name=f"pool{i // 2 + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(dense[0], activation="relu", name="dense1")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Dense(dense[1], activation="relu", name="dense2")(x)
    x = layers.Dense(frames * bins, name="logits")(x)
    return layers.Reshape((frames, bins), name="logits_grid")(x)
