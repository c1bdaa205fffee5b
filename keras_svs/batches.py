"""The NumPy loader: a stream of training batches for any Keras backend, without TensorFlow.

The batches are those of :class:`keras_svs.examples.PatchSampler`, the one definition of a
training example (the tf.data loader, :func:`keras_svs.pipeline.training_dataset`, wraps the
same sampler, so both give the same batches for the same seed). This module makes them in the
training process or in spawned worker processes: what runs under ``KERAS_BACKEND=jax`` or
``torch``, e.g. on a GPU machine without TensorFlow.
"""
from __future__ import annotations

import collections
import multiprocessing
from typing import Iterator

import numpy as np

from .examples import PatchSampler

_SAMPLER: PatchSampler | None = None


def _init_worker(sampler: PatchSampler) -> None:
    global _SAMPLER
    _SAMPLER = sampler


def _make_batch(index: int) -> tuple[np.ndarray, np.ndarray]:
    return _SAMPLER.batch(index)


def stream(sampler: PatchSampler, start: int = 0,
           workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches ``start, start + 1, ...`` of ``sampler``.

    ``workers > 0`` makes them in that many *spawned* processes (safe beside a GPU runtime
    that forking would break), keeping ``2 * workers`` batches in flight; the order and
    contents are the same as with ``workers=0``.
    """
    index = start
    if workers <= 0:
        while True:
            yield sampler.batch(index)
            index += 1
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(sampler,)) as pool:
        pending: collections.deque = collections.deque()
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.apply_async(_make_batch, (index,)))
                index += 1
            yield pending.popleft().get()


__all__ = ["stream"]
