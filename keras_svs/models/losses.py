"""Losses and metric for per-bin voice/accompaniment classification (backend-agnostic).

Every function here takes the network's voice *logits* ``z`` ``(batch, frames, bins)``
(the output of the ``logits_grid`` layer; :func:`keras_svs.models.logits_model` exposes
it), not the probabilities: the voice probability is ``sigmoid(z)`` (the model's
:class:`~keras_svs.models.layers.BinSoftmax` head), and the cross-entropy is computed as
``t softplus(-z) + (1 - t) softplus(z)``, as the authors' code does with
``sigmoid_cross_entropy_with_logits``. Its gradient ``sigmoid(z) - t`` stays large at a
saturated logit, where a loss of clipped probabilities has none.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_svs")
def bin_cross_entropy(target, logits):
    """Mean per-bin two-class cross-entropy.

    Args:
        target: ``(batch, frames, bins)`` voice targets in [0, 1] (a smoothed IBM for
            fine-tuning; a magnitude in [0, 1] for autoencoder pretraining).
        logits: ``(batch, frames, bins)`` voice logits (any float dtype).

    Returns:
        ``(batch,)`` mean cross-entropy in nats.
    """
    return ops.mean(_cross_entropy(ops.cast(target, "float32"), logits), axis=(1, 2))


@keras.saving.register_keras_serializable(package="keras_svs")
def weighted_bin_cross_entropy(target, logits):
    """Per-bin two-class cross-entropy weighted per bin (``--loss weighted``).

    Args:
        target: ``(batch, frames, bins, 2)``: channel 0 the voice target in [0, 1] (the
            smoothed IBM), channel 1 the bin's weight (the training examples carry it:
            the bin's mixture magnitude over the patch's mean magnitude).
        logits: ``(batch, frames, bins)`` voice logits.

    Returns:
        ``(batch,)`` weighted mean cross-entropy in nats.
    """
    target = ops.cast(target, "float32")
    return ops.mean(_cross_entropy(target[..., 0], logits) * target[..., 1], axis=(1, 2))


@keras.saving.register_keras_serializable(package="keras_svs")
def phase_sensitive_error(target, logits):
    """Weighted squared error of the voice probability against the phase-sensitive mask
    (``--loss psa``). With weights of each bin's mixture power over the patch's mean power
    (the training examples carry them), a patch's loss is ``sum |p X - V|^2`` over its
    mean ``|X|^2``, up to a term the model cannot change: the error of the separated
    voice's complex spectrum, the quantity SDR measures.

    Args:
        target: ``(batch, frames, bins, 2)``: channel 0 the phase-sensitive mask
            ``clip(Re(V conj X) / |X|^2, 0, 1)``, channel 1 the bin's weight.
        logits: ``(batch, frames, bins)`` voice logits (the probability is their sigmoid).

    Returns:
        ``(batch,)`` weighted mean squared error.
    """
    target = ops.cast(target, "float32")
    error = ops.sigmoid(ops.cast(logits, "float32")) - target[..., 0]
    return ops.mean(ops.square(error) * target[..., 1], axis=(1, 2))


def _cross_entropy(target, logits):
    """``(batch, frames, bins)`` per-bin cross-entropy of the voice target, from the logits:
    ``-log sigmoid(z) = softplus(-z)`` and ``-log(1 - sigmoid(z)) = softplus(z)``, finite
    for any finite ``z``."""
    z = ops.cast(logits, "float32")
    return target * ops.softplus(-z) + (1.0 - target) * ops.softplus(z)


@keras.saving.register_keras_serializable(package="keras_svs")
def bin_accuracy(target, logits):
    """Fraction of bins whose voice/accompaniment decision (voice probability > 0.5, i.e.
    logit > 0) matches ``target > 0.5`` (``target`` ``(batch, frames, bins)``, or with a
    weight channel as in :func:`weighted_bin_cross_entropy`; a multichannel model's
    ``(batch, frames, bins, channels)``, as its logits)."""
    target = ops.cast(target, "float32")
    if len(target.shape) == len(logits.shape) + 1:  # a weight channel
        target = target[..., 0]
    target = target > 0.5
    predicted = ops.cast(logits, "float32") > 0.0
    return ops.mean(ops.cast(ops.equal(target, predicted), "float32"), axis=(1, 2))
