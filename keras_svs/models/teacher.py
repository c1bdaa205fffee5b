"""Distillation: fine-tuning targets blended with a trained teacher's voice probabilities.

A cheaper network (``spleeter1``, one U-Net; a ``student``) learns from a better one (the
``spleeter`` pair) by taking the teacher's voice probability ``q = sigmoid(z_teacher)`` of
each bin as (part of) its target, in one of two ways, under the run's fine-tuning loss
``L(target, z)`` (its bin weights unchanged):

* blended targets (``--teacher-share``): ``L((1 - share) t + share q, z)``, where ``t`` is
  the example's own target (the smoothed IBM, or the phase-sensitive mask);
* two terms (``--ibm-weight w``, :func:`distillation_loss`): ``L(q, z) + w L(t, z)``; with
  the cross-entropy (``--loss ce``) that is the teacher's probability as the target plus
  the paper's IBM cross-entropy weighted by ``w``. For a loss linear in its target (``ce``,
  ``weighted``) it equals the blend with ``share = 1 / (1 + w)``, times ``1 + w``.

The teacher sees the same network input as the student, in inference mode (batch norms'
statistics, no dropout), and its weights never change.

Backend-agnostic Keras 3 (``keras.ops``): the teacher runs inside the training step
(``compute_loss``), so its targets do not depend on the loader that made the examples.
"""
from __future__ import annotations

import functools
import os

import keras
from keras import ops

from .io import copy_weights, load_model, settings
from .presets import get_preset

#: The model settings a teacher must share with its student: those of the magnitudes both
#: take (scaling, logs and standardisation happen inside each model's front end).
SHARED_INPUT = ("sample_rate", "n_fft", "win_length", "hop_length", "bins", "channels")


def blend_targets(target, probability, share: float):
    """The examples' targets with ``share`` of the teacher's voice probability.

    Args:
        target: ``(batch, frames, bins[, channels])`` voice targets in [0, 1], or the same
            with a trailing axis of 2 (the target, then each bin's loss weight, which is
            kept).
        probability: the teacher's voice probability, the shape of the logits
            (``target`` without its weight axis).
        share: in [0, 1]; 0 returns the targets, 1 the teacher's probability alone.

    Returns:
        float32 targets of ``target``'s shape.
    """
    target = ops.cast(target, "float32")
    probability = ops.cast(probability, "float32")
    if len(target.shape) == len(probability.shape) + 1:  # a weight channel
        mixed = (1.0 - share) * target[..., 0] + share * probability
        return ops.stack([mixed, target[..., 1]], axis=-1)
    return (1.0 - share) * target + share * probability


def distillation_loss(loss, target, logits, probability, ibm_weight: float):
    """``loss(q, z) + ibm_weight * loss(t, z)``: the teacher's voice probability ``q`` as
    the target, plus the examples' own target ``t`` weighted by ``ibm_weight``.

    Args:
        loss: a loss of ``(target, logits)`` (:mod:`keras_svs.models.losses`: from the
            logits), e.g. :func:`~keras_svs.models.losses.bin_cross_entropy`.
        target: the examples' targets, as :func:`blend_targets` takes them (with a weight
            axis: the weights apply to both terms).
        logits: the student's voice logits ``(batch, frames, bins[, channels])``.
        probability: the teacher's voice probability, the logits' shape.
        ibm_weight: the second term's weight, >= 0.

    Returns:
        what ``loss`` returns (``(batch,)`` for the losses of this package).

    Raises:
        ValueError: a negative ``ibm_weight``.
    """
    if ibm_weight < 0:
        raise ValueError(f"the IBM term's weight must be >= 0, not {ibm_weight}")
    taught = loss(blend_targets(target, probability, 1.0), logits)
    if ibm_weight == 0:
        return taught
    return taught + ibm_weight * loss(target, logits)


class TeacherTargets(keras.Model):
    """Fits ``student`` (a logits view, :func:`keras_svs.models.logits_model`) with its
    targets blended with ``teacher``'s voice probabilities (:func:`blend_targets`).

    It is a functional model of the student's own layers, so its output and weights are
    the student's, and a weight file saved from either loads into the other; the teacher is
    held outside Keras's tracking, so it (never trained) is not in that file. Not meant to
    be saved whole (``.keras``): save the student. The loss, training and validation alike,
    is the compiled loss against the blended targets; metrics see the examples' own
    targets.

    Args:
        student: the model to train; its output, the voice logits.
        teacher: a model of the same input ending at voice logits of the student's shape.
        share: the teacher's share of each target, in [0, 1].
        ibm_weight: None: the blended targets; a weight >= 0: the loss is
            :func:`distillation_loss` of the compiled loss instead (``share`` unused).

    Raises:
        ValueError: ``share`` outside [0, 1]; a negative ``ibm_weight``.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, share: float,
                 ibm_weight: float | None = None):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the teacher's share must be in [0, 1], not {share}")
        if ibm_weight is not None and ibm_weight < 0:
            raise ValueError(f"the IBM term's weight must be >= 0, not {ibm_weight}")
        # a functional model of the student's own layers: the same weight-file layout
        super().__init__(student.inputs, student.outputs, name=f"{student.name}_taught")
        teacher.trainable = False
        self._teacher_logits = functools.partial(teacher, training=False)  # not tracked
        self.share = float(share)
        self.ibm_weight = None if ibm_weight is None else float(ibm_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        probability = ops.sigmoid(ops.cast(ops.stop_gradient(self._teacher_logits(x)),
                                           "float32"))
        if self.ibm_weight is not None:
            def compiled(target, logits):
                return super(TeacherTargets, self).compute_loss(x, target, logits,
                                                                sample_weight, training)

            return distillation_loss(compiled, y, y_pred, probability, self.ibm_weight)
        return super().compute_loss(x, blend_targets(y, probability, self.share), y_pred,
                                    sample_weight, training)


def load_teacher(path: str | os.PathLike, student: keras.Model) -> keras.Model:
    """The teacher's logits view, rebuilt from its file under the current dtype policy (so
    that it computes in the training run's precision), for ``student``.

    Args:
        path: a keras-svs ``.keras`` model file.
        student: the keras-svs model (with its probabilities head) to be trained.

    Returns:
        the teacher's ``logits_grid`` view (:func:`keras_svs.models.logits_model`).

    Raises:
        ValueError: the file is not a keras-svs model, or its input differs from the
            student's (the settings that differ are named).
    """
    from . import build_model, logits_model

    trained = load_model(path)
    mine, theirs = settings(student), settings(trained)
    differ = [f"{name} {getattr(theirs, name)} (the student's: {getattr(mine, name)})"
              for name in SHARED_INPUT if getattr(theirs, name) != getattr(mine, name)]
    if differ:
        raise ValueError(f"--teacher {path}: its input differs from the student's: "
                         f"{', '.join(differ)}")
    teacher = copy_weights(trained, build_model(get_preset(theirs.preset)))
    return logits_model(teacher)


__all__ = ["TeacherTargets", "blend_targets", "distillation_loss", "load_teacher", "SHARED_INPUT"]
