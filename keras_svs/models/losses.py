"""Loss and metric for per-bin voice/accompaniment classification (backend-agnostic)."""
from __future__ import annotations

import keras
from keras import ops

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="keras_svs")
def bin_cross_entropy(target, probabilities):
    """Mean per-bin two-class cross-entropy.

    Args:
        target: ``(batch, frames, bins)`` voice targets in [0, 1] (a smoothed IBM for
            fine-tuning; a magnitude in [0, 1] for autoencoder pretraining).
        probabilities: ``(batch, frames, bins, 2)`` softmax output, channel 0 = voice.

    Returns:
        ``(batch,)`` mean cross-entropy in nats.
    """
    target = ops.cast(target, "float32")
    p = ops.clip(ops.cast(probabilities, "float32"), _EPS, 1.0 - _EPS)
    ce = -(target * ops.log(p[..., 0]) + (1.0 - target) * ops.log(p[..., 1]))
    return ops.mean(ce, axis=(1, 2))


@keras.saving.register_keras_serializable(package="keras_svs")
def bin_accuracy(target, probabilities):
    """Fraction of bins whose voice/accompaniment decision matches ``target > 0.5``."""
    target = ops.cast(target, "float32") > 0.5
    predicted = ops.cast(probabilities[..., 0], "float32") > 0.5
    return ops.mean(ops.cast(ops.equal(target, predicted), "float32"), axis=(1, 2))
