"""Training on several devices or machines: a strategy name mapped to the backend's own engine.

``keras-svs train --strategy`` (:data:`keras_svs.options.STRATEGIES`) names one of:

* ``one-device``: the backend's default placement (the first GPU, else the CPU), no wrapper;
* ``mirrored``: synchronous data parallelism over this machine's devices (its GPUs, else its
  logical CPU devices where more than one is configured);
* ``multi-worker``: the same over several machines, each running the same command with its
  own ``TF_CONFIG`` (the cluster's addresses and this task's place in it);
* ``auto``: ``multi-worker`` where ``TF_CONFIG`` names more than one task, else ``mirrored``
  where there is more than one device, else ``one-device`` (:func:`choose`).

What runs it: on the TensorFlow backend ``tf.distribute`` (``MirroredStrategy``,
``MultiWorkerMirroredStrategy``, which reads ``TF_CONFIG`` itself); on
the JAX backend ``keras.distribution.DataParallel`` over every device, with
``keras.distribution.initialize`` (``jax.distributed``) first for ``multi-worker``, its
coordinator, process count and process id read from the same ``TF_CONFIG``
(:func:`jax_job`). The model, its optimizer and metrics are built inside
:meth:`Plan.scope`.

The input: ``--batch-size`` is the global batch (all replicas together). Each worker's
input pipeline makes its own share of every global batch: worker ``w`` of ``W`` makes the
batches ``k * W + w`` of the example stream at ``batch / W`` patches each
(:class:`keras_svs.examples.PatchSampler` ``shards``), so no worker makes and discards the
others' examples (tf.data's auto-sharding by data would; the stream reads no files to
shard by file); tf.data's own auto-sharding is therefore off. Each worker's batch is then
split into one slice per local replica (:func:`keras_svs.pipeline.training_dataset`
``replicas``). With one worker the global batches are exactly those of one-device
training. Only the chief (task 0) writes the run folder; the other workers write their
checkpoints, logs and backups to ``OUT/.worker-<task>/`` (:meth:`Plan.folder`), removed
when the run finishes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Callable

from .options import STRATEGIES


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This task's place in a ``TF_CONFIG`` cluster.

    Attributes:
        addresses: ``host:port`` of every task, the chief (or worker 0) first.
        index: this task's position in ``addresses`` (0: the chief).
    """

    addresses: tuple[str, ...] = ()
    index: int = 0

    @property
    def size(self) -> int:
        """Tasks in the cluster (1 without ``TF_CONFIG``)."""
        return max(1, len(self.addresses))


def cluster(tf_config: str | None) -> Cluster:
    """Parse a ``TF_CONFIG`` value (``{"cluster": {"chief": [...], "worker": [...]},
    "task": {"type": "worker", "index": 0}}``); ``None`` or empty: a cluster of one.

    The chief, where there is one, is task 0 and the workers follow; without a chief,
    worker 0 is the chief (as ``MultiWorkerMirroredStrategy`` orders them).

    Raises:
        ValueError: not JSON, or a task that is not in its cluster.
    """
    if not tf_config:
        return Cluster()
    try:
        config = json.loads(tf_config)
        tasks = config.get("cluster", {})
        task = config.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description: {error}") from None
    chiefs, workers = list(tasks.get("chief", [])), list(tasks.get("worker", []))
    members = {"chief": chiefs, "worker": workers}
    if kind not in members or not 0 <= index < len(members[kind]):
        raise ValueError(f"TF_CONFIG: task {kind} {index} is not in its cluster "
                         f"({len(chiefs)} chief, {len(workers)} workers)")
    position = index if kind == "chief" else len(chiefs) + index
    return Cluster(tuple(chiefs + workers), position)


def choose(strategy: str, devices: int, tasks: int) -> str:
    """The strategy to run: ``strategy`` itself, or for ``auto`` ``multi-worker`` with more
    than one task (``TF_CONFIG``), else ``mirrored`` with more than one local device, else
    ``one-device``.

    Args:
        strategy: one of :data:`keras_svs.options.STRATEGIES`.
        devices: local devices (GPUs, else configured logical CPUs).
        tasks: tasks in the cluster (:attr:`Cluster.size`).

    Raises:
        ValueError: an unknown strategy, or ``multi-worker`` without a cluster of more
            than one task.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    if strategy == "auto":
        return "multi-worker" if tasks > 1 else "mirrored" if devices > 1 else "one-device"
    if strategy == "multi-worker" and tasks < 2:
        raise ValueError("multi-worker training reads its cluster from TF_CONFIG, which "
                         "names no cluster of 2 or more tasks here")
    return strategy


def jax_job(where: Cluster) -> dict:
    """The keyword arguments of ``keras.distribution.initialize`` (``jax.distributed``) for
    a task of ``where``: ``job_addresses`` (every task, the coordinator first),
    ``num_processes`` and ``process_id``."""
    return {"job_addresses": ",".join(where.addresses), "num_processes": where.size,
            "process_id": where.index}


def split_batch(global_batch: int, replicas: int, pipelines: int) -> int:
    """Patches each input pipeline makes per step: ``global_batch / pipelines``.

    Raises:
        ValueError: ``global_batch`` is not a multiple of ``replicas`` (every replica takes
            an equal slice).
    """
    if global_batch % replicas:
        raise ValueError(f"the batch size ({global_batch}, all replicas together) must be a "
                         f"multiple of the {replicas} replicas")
    return global_batch // pipelines


def _multi_worker_strategy():
    """A ``tf.distribute.MultiWorkerMirroredStrategy`` (its cluster from ``TF_CONFIG``) whose
    ``reduce`` takes what Keras's ``fit`` hands it: a nested structure of per-replica values
    (the first batch, an ``(input, target)`` pair, to build the model), reduced one by one,
    and per-replica scalars (the logs) with ``axis=0``, reduced across the replicas.
    TensorFlow's collective ``reduce`` takes one value, and an axis only of a tensor that
    has it."""
    import tensorflow as tf

    class MultiWorkerMirrored(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super().reduce

            def one(v):
                scalar = axis is not None and all(
                    t.shape.rank == 0 for t in self.experimental_local_results(v))
                return parent(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirrored()


class Plan:
    """A resolved strategy on this backend: its scope, its input pipelines and who writes.

    Args:
        strategy: one of :data:`keras_svs.options.STRATEGIES`.
        tf_config: the cluster description; default: the ``TF_CONFIG`` environment
            variable.

    Attributes:
        name: the strategy resolved (:func:`choose`).
        where: this task's :class:`Cluster`.
        replicas: replicas in sync (all devices of all workers).
        pipelines: input pipelines (one per worker).
        chief: whether this task writes the run folder.
        engine: the ``tf.distribute.Strategy`` (TensorFlow backend) or the
            ``keras.distribution.Distribution`` (JAX); ``None`` for ``one-device``.

    Raises:
        ValueError: an unknown strategy, ``multi-worker`` without a cluster, or a backend
            without a distribution engine (PyTorch) asked for more than one device.
        RuntimeError: ``multi-worker`` once this process has run an operation or listed
            its devices (the strategy, or ``jax.distributed``, must configure the runtime
            first, as :func:`keras_svs.training.train` does).
    """

    def __init__(self, strategy: str = "auto", tf_config: str | None = None):
        import keras

        tf_config = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
        self.where = cluster(tf_config)
        self.backend = keras.backend.backend()
        self.engine = None
        if self.backend == "tensorflow":
            import tensorflow as tf

            self.name = choose(strategy, 1, self.where.size)
            if self.name == "multi-worker":  # the cluster from TF_CONFIG, before any op
                self.engine = _multi_worker_strategy()
            else:
                devices = (tf.config.list_logical_devices("GPU")
                           or tf.config.list_logical_devices("CPU"))
                self.name = choose(strategy, len(devices), self.where.size)
                if self.name == "mirrored":
                    self.engine = tf.distribute.MirroredStrategy([d.name for d in devices])
            self.replicas = 1 if self.engine is None else self.engine.num_replicas_in_sync
        elif self.backend == "jax":
            from keras import distribution

            self.name = choose(strategy, 1, self.where.size)
            if self.name == "multi-worker":  # before JAX starts its backend
                distribution.initialize(**jax_job(self.where))
            devices = distribution.list_devices()  # every process's, after initialize
            self.name = choose(strategy, len(devices), self.where.size)
            if self.name != "one-device":
                self.engine = distribution.DataParallel(devices=devices)
            self.replicas = len(devices) if self.engine is not None else 1
        else:
            self.name = choose(strategy, 1, self.where.size)
            if self.name != "one-device":
                raise ValueError(f"the {self.backend} backend has no distribution engine "
                                 f"here; --strategy {self.name} runs on TensorFlow or JAX")
            self.replicas = 1
        self.pipelines = self.where.size if self.name == "multi-worker" else 1
        self.chief = self.where.index == 0 or self.name != "multi-worker"

    @property
    def pipeline(self) -> int:
        """This task's input pipeline (0 .. ``pipelines - 1``)."""
        return self.where.index if self.name == "multi-worker" else 0

    def scope(self):
        """The context to build the model, optimizer and metrics in, and to fit in."""
        if self.engine is None:
            return contextlib.nullcontext()
        return self.engine.scope()

    def folder(self, out: os.PathLike) -> os.PathLike:
        """Where this task writes: the run folder ``out`` for the chief, else
        ``out/.worker-<task>``."""
        from pathlib import Path

        return Path(out) if self.chief else Path(out) / f".worker-{self.where.index}"

    def local_batch(self, global_batch: int) -> int:
        """Patches this task's input pipeline makes per step (:func:`split_batch`)."""
        return split_batch(global_batch, self.replicas, self.pipelines)

    def dataset(self, make: Callable[[int, int, int, int], object], global_batch: int):
        """The TensorFlow backend's training input, distributed: ``make(batch, shards,
        shard, replicas)`` gives one input pipeline's ``tf.data.Dataset`` (its ``batch``
        patches per step, shard ``shard`` of ``shards`` of the example stream, split into
        ``replicas`` per-replica batches); it is called once per worker, with tf.data's
        auto-sharding off. Without a strategy (``one-device``): ``make(batch, 1, 0, 1)``.

        Raises:
            ValueError: ``global_batch`` not a multiple of the replicas.
        """
        import tensorflow as tf

        batch = self.local_batch(global_batch)
        if self.engine is None:
            return make(batch, 1, 0, 1)

        def per_worker(context):
            local = self.replicas // context.num_input_pipelines
            dataset = make(batch, context.num_input_pipelines, context.input_pipeline_id,
                           local)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.OFF)
            return dataset.with_options(options)

        return self.engine.distribute_datasets_from_function(per_worker)


__all__ = ["Cluster", "Plan", "choose", "cluster", "jax_job", "split_batch"]
