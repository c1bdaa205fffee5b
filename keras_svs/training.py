"""Two-stage training: autoencoder pretraining, then IBM fine-tuning (Lin et al. 2018).

Stage 1 (``pretrain``) fits the network to map the voice's share of the mixture magnitude,
``IBM * |X|``, to itself; stage 2 (``finetune``) starts from those weights and maps ``|X|`` to
the IBM with per-bin cross-entropy. Each stage keeps, in ``OUT/<stage>/``:

* ``best.weights.h5``: weights of the best validation loss so far;
* ``epochNN.weights.h5`` (fine-tuning with ``average_last``): the weights after epoch NN
  (from 01), and ``averaged.weights.h5``, the mean of the last ``average_last`` of them;
* ``log.csv``: one row per epoch (loss, val_loss, patches/s, ...);
* ``backup/``: Keras ``BackupAndRestore`` state, so the same command resumes after a kill.

A run is a :class:`Recipe` (what to train: preset, epochs, augmentation, loss, ...) and
:class:`RunOptions` (data selection, loader, monitoring, budget), both built by keyword.
Training examples are defined once (:class:`keras_svs.examples.PatchSampler`); tf.data
(:func:`keras_svs.pipeline.training_dataset`) makes them on the TensorFlow backend, and
NumPy worker processes (:func:`keras_svs.batches.stream`) on the others (``loader``). With
``time_budget`` the run fits its epochs to a wall-clock budget (15 % of it for the
autoencoder stage), and the cosine schedule follows the epochs that fit.

The final model (float32; the best validation loss, or with ``average_last`` the mean of
the last epochs' weights) is ``OUT/model.keras``; its STFT settings,
input statistics and default mask travel inside it. ``OUT/training.json`` records the run.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from . import distribute, examples, pipeline
from .datasets import DatasetError, discover, select_split
from .datasets.splits import split_file_for
from .models import (bin_accuracy, bin_cross_entropy, build_model, logits_model,
                     phase_sensitive_error, set_input_statistics, weighted_bin_cross_entropy)
from .models.presets import Preset, get_preset, with_network_input
from .models.teacher import TeacherTargets, load_teacher
from .options import LOADERS, LOSSES, Recipe, RunOptions
from .options import TRAINING_PRECISIONS as PRECISIONS

#: Fine-tuning loss -> (loss function, the bin weights its targets carry (a key of
#: :data:`keras_svs.examples.WEIGHTS`) or None, target kind): ``ce`` the per-bin
#: cross-entropy against the IBM (the paper); ``weighted`` the same with each bin weighted by
#: its mixture magnitude; ``psa`` the power-weighted squared error against the
#: phase-sensitive mask.
_LOSS_PARTS = {"ce": (bin_cross_entropy, None, "ibm"),
               "weighted": (weighted_bin_cross_entropy, "magnitude", "ibm"),
               "psa": (phase_sensitive_error, "power", "psa")}


def resolve(recipe: Recipe) -> Recipe:
    """A copy of ``recipe`` with every ``None`` replaced by its preset's default.

    Raises:
        KeyError: an unknown preset.
    """
    p = get_preset(recipe.preset)
    return dataclasses.replace(
        recipe,
        epochs=p.epochs if recipe.epochs is None else recipe.epochs,
        pretrain_epochs=p.pretrain_epochs if recipe.pretrain_epochs is None
        else recipe.pretrain_epochs,
        batch_size=recipe.batch_size or p.batch_size,
        learning_rate=recipe.learning_rate or p.learning_rate,
        remix=p.remix if recipe.remix is None else recipe.remix,
        patch_hop=p.patch_hop if recipe.patch_hop is None else recipe.patch_hop)


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``mixed_float16`` when the Keras backend has a GPU, else ``float32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    return "mixed_float16" if _has_gpu() else "float32"


def _has_gpu() -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def resolve_loader(loader: str) -> str:
    """``auto`` -> ``tf`` on the TensorFlow backend, else ``numpy`` (both loaders make the
    same examples: :mod:`keras_svs.examples`).

    Raises:
        ValueError: an unknown loader.
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, not {loader!r}")
    if loader != "auto":
        return loader
    return "tf" if keras.backend.backend() == "tensorflow" else "numpy"


def load_splits(data, cache: str | os.PathLike | None, preset: Preset,
                splits: tuple[str, ...] = ("train", "valid"),
                split_file: str | os.PathLike | None = None,
                skip_bad: bool = False) -> list[pipeline.DecodedAudio]:
    """Decode (or read from an HDF5 ``cache``) the tracks of each split at the preset's rate
    and channels (``skip_bad``: see :func:`pipeline.decode`).

    ``data`` is a dataset root or a list of them: each split is then the union of that
    split of every root (by its own split file; ``cache`` and ``split_file`` need one
    root)."""
    if isinstance(data, (list, tuple)):
        if len(data) > 1:
            if cache is not None or split_file is not None:
                raise ValueError("a cache or split file goes with one dataset, not several")
            parts = [load_splits(root, None, preset, splits, None, skip_bad) for root in data]
            return [pipeline.concatenate(list(split)) for split in zip(*parts)]
        data = data[0]
    tracks = discover(data)
    split_file = split_file or split_file_for(data)
    decoded = []
    for split in splits:
        chosen = select_split(tracks, split, split_file)
        if cache is not None and Path(cache).is_file():
            d = pipeline.load_hdf5(cache, [t.name for t in chosen])
            if d.sample_rate != preset.stft.sample_rate:
                raise DatasetError(f"{cache}: cached at {d.sample_rate} Hz, the preset needs "
                                   f"{preset.stft.sample_rate} Hz")
        else:
            d = pipeline.decode(chosen, preset.stft.sample_rate, skip_bad=skip_bad,
                                channels=preset.channels)
        if d.channels != preset.channels:
            raise DatasetError(f"{cache}: cached with {d.channels} channels, the preset "
                               f"takes {preset.channels}")
        decoded.append(d)
    return decoded


def train(data: str | os.PathLike | list, out_dir: str | os.PathLike,
          recipe: Recipe = Recipe(), options: RunOptions = RunOptions()) -> Path:
    """Run both stages and write ``OUT/model.keras``; rerunning the same call resumes.

    Args:
        data: dataset root (any layout :func:`keras_svs.datasets.discover` knows), or a
            list of roots whose splits are joined (see :func:`load_splits`).
        out_dir: output folder (created).
        recipe: what to train and how (``None`` fields: the preset's, :func:`resolve`).
        options: data selection, loader, monitoring, budget, strategy (on several devices
            or machines, :mod:`keras_svs.distribute`: ``batch_size`` is the global batch;
            only the chief writes ``out_dir``, each other worker ``out_dir/.worker-<task>``,
            removed at the end).

    Returns:
        path of the final ``.keras`` model (which only the chief writes).

    Raises:
        ValueError: an unknown loss, loader, precision or strategy, a negative
            ``average_last``, patch ``frames`` or ``bins`` the preset's network cannot take, a
            ``teacher`` whose input differs from the model's, a batch size the replicas
            cannot share, a distributed run on another loader than its
            backend's, or a multi-worker run with a time budget.
        KeyError: an unknown preset.
        DatasetError: data that cannot be used (see :func:`load_splits`).
    """
    recipe = resolve(recipe)
    if recipe.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {recipe.loss!r}")
    if recipe.average_last < 0:
        raise ValueError(f"average_last must be >= 0, not {recipe.average_last}")
    if recipe.ibm_weight is not None and recipe.teacher is None:
        raise ValueError("ibm_weight weighs a term of distillation: give a teacher too")
    loader = resolve_loader(options.loader)
    preset = with_network_input(get_preset(recipe.preset), recipe.frames, recipe.bins)
    plan = distribute.Plan(options.strategy)
    if plan.engine is not None and loader != resolve_loader("auto"):
        raise ValueError(f"--strategy {plan.name} on the {keras.backend.backend()} backend "
                         f"takes the {resolve_loader('auto')} loader, not {loader}")
    if plan.name == "multi-worker" and options.time_budget is not None:
        raise ValueError("a time budget cannot stop every worker of a multi-worker run at "
                         "the same epoch; give --epochs instead")
    plan.local_batch(recipe.batch_size)  # a batch that the replicas can share
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(recipe.seed)
    started = time.time()
    train_audio, valid_audio = load_splits(data, options.cache, preset,
                                           (options.train_split, options.valid_split),
                                           options.split_file, options.skip_bad)
    steps = recipe.steps_per_epoch or pipeline.steps_per_epoch(train_audio, preset,
                                                               recipe.batch_size,
                                                               recipe.patch_hop)
    precision = resolve_precision(recipe.precision)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        stats = pipeline.input_statistics(train_audio, preset) if preset.standardize else None
        with plan.scope():  # the model, its optimizer and metrics under the strategy
            model = build_model(preset)
            if stats is not None:
                set_input_statistics(model, *stats)
            if options.init is not None:
                _initialise(model, options.init)
            teacher = None if recipe.teacher is None else load_teacher(recipe.teacher, model)
            if recipe.freeze_batch_norm:
                for layer in model.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = False  # Keras: inference mode, statistics fixed
            stage = functools.partial(_fit_stage, train_audio=train_audio,
                                      valid_audio=valid_audio, preset=preset, recipe=recipe,
                                      options=options, steps=steps,
                                      folder=Path(plan.folder(out)), plan=plan)
            if recipe.pretrain_epochs > 0:
                autoencoder = build_model(preset, shortcuts=False)
                if stats is not None:
                    set_input_statistics(autoencoder, *stats)
                stage(autoencoder, "pretrain", epochs=recipe.pretrain_epochs,
                      deadline=_deadline(started, options.time_budget, PRETRAIN_SHARE))
                model.set_weights(autoencoder.get_weights())
            stage(model, "finetune", epochs=recipe.epochs, teacher=teacher,  # only here
                  deadline=_deadline(started, options.time_budget, 1.0))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    path = out / "model.keras"
    if not plan.chief:  # the chief writes the model; a worker's own files go
        shutil.rmtree(plan.folder(out), ignore_errors=True)
        return path
    final = build_model(preset)  # float32 policy whatever the training precision
    final.set_weights(model.get_weights())
    tmp = out / ".model.tmp.keras"
    final.save(tmp)
    os.replace(tmp, path)
    _write_record(out, recipe, options, plan, precision, steps, train_audio, valid_audio,
                  started, data)
    return path


PRETRAIN_SHARE = 0.15


def _initialise(model: keras.Model, source: str | os.PathLike) -> None:
    """Copy a trained model's weights into ``model`` (:func:`keras_svs.models.io.
    copy_weights`: layer by layer of the same name), errors naming ``--init``."""
    from .models.io import copy_weights, load_model

    trained = load_model(source)
    try:
        copy_weights(trained, model)
    except ValueError as error:
        raise ValueError(f"--init {source}: {error}") from None


def _deadline(started: float, budget: float | None, share: float) -> float | None:
    return None if budget is None else started + share * budget


def _data(audio: pipeline.DecodedAudio, preset: Preset, recipe: Recipe,
          options: RunOptions, stage: str, training: bool,
          plan: distribute.Plan | None = None):
    """The training stream of the configured loader (tf.data or NumPy batches of one
    :class:`~keras_svs.examples.PatchSampler`, this worker's shard of it under ``plan``;
    default: one device), or the validation arrays; with a weighted loss the fine-tuning
    targets carry the bins' weights (``(..., 2)``)."""
    plan = plan or distribute.Plan("one-device", tf_config="")
    _, weights, target = _LOSS_PARTS[recipe.loss]
    if not training:
        return examples.validation_arrays(audio, preset, stage, target, weights,
                                          recipe.patch_hop)
    sampler = functools.partial(examples.PatchSampler, audio, preset, stage,
                                remix=recipe.remix, pitch=recipe.pitch, gain_db=recipe.gain_db,
                                seed=recipe.seed + (stage == "finetune"), target=target,
                                weights=weights, patch_hop=recipe.patch_hop)
    if resolve_loader(options.loader) == "tf":
        return plan.dataset(lambda batch, shards, shard, replicas: pipeline.training_dataset(
            sampler(batch_size=batch, shards=shards, shard=shard), replicas=replicas),
            recipe.batch_size)
    from . import batches

    return batches.stream(sampler(batch_size=plan.local_batch(recipe.batch_size),
                                  shards=plan.pipelines, shard=plan.pipeline),
                          workers=options.workers)


def _fit_stage(model: keras.Model, stage: str, *, epochs: int, deadline: float | None,
               train_audio: pipeline.DecodedAudio, valid_audio: pipeline.DecodedAudio,
               preset: Preset, recipe: Recipe, options: RunOptions, steps: int,
               folder: Path, plan: distribute.Plan,
               teacher: keras.Model | None = None) -> None:
    """Fit one stage in ``folder / stage``, resuming from its backup; leaves the best
    weights in ``model``.

    What is fitted is ``model``'s logits view (:func:`~keras_svs.models.logits_model`, the
    same weights): every loss is computed from the logits; with a ``teacher`` (logits
    view), against targets blended with its probabilities
    (:class:`~keras_svs.models.teacher.TeacherTargets`)."""
    view = logits_model(model)
    if teacher is not None:
        view = TeacherTargets(view, teacher, recipe.teacher_share, recipe.ibm_weight)
    folder = folder / stage
    folder.mkdir(parents=True, exist_ok=True)
    best = folder / "best.weights.h5"
    averaging = stage == "finetune" and recipe.average_last > 0
    final = folder / "averaged.weights.h5" if averaging else best
    done = folder / "done"
    if done.exists() and final.exists():
        view.load_weights(final)
        return
    loss = _LOSS_PARTS[recipe.loss][0] if stage == "finetune" else bin_cross_entropy
    view.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss=loss,
                  metrics=[bin_accuracy] if stage == "finetune" else None)
    train_ds = _data(train_audio, preset, recipe, options, stage, training=True, plan=plan)
    valid_ds = _data(valid_audio, preset, recipe, options, stage, training=False, plan=plan)
    budget = TimeBudget(deadline, epochs)
    checkpoint = keras.callbacks.ModelCheckpoint(best, monitor="val_loss", save_best_only=True,
                                                 save_weights_only=True)
    checkpoint.best = _best_logged(folder / "log.csv", checkpoint.best)
    callbacks = [keras.callbacks.BackupAndRestore(folder / "backup"), budget]
    if recipe.cosine and stage == "finetune":
        callbacks.append(CosineSchedule(recipe.learning_rate, budget.expected_epochs))
    callbacks += [Throughput(recipe.batch_size, steps, budget.expected_epochs),
                  keras.callbacks.TerminateOnNaN()]
    if stage == "finetune" and options.gnsdr_clips > 0:
        from .monitor import ValidationGnsdr

        callbacks.append(ValidationGnsdr(model, valid_audio, options.gnsdr_clips,
                                         options.gnsdr_every))
    callbacks += [checkpoint, keras.callbacks.CSVLogger(folder / "log.csv", append=True)]
    if averaging:
        callbacks.append(keras.callbacks.ModelCheckpoint(  # epoch01, epoch02, ...
            str(folder / "epoch{epoch:02d}.weights.h5"), save_weights_only=True))
    if options.verbose:
        replicas = f" over {plan.replicas} replicas ({plan.name})" if plan.engine else ""
        print(f"[{stage}] {epochs} epochs x {steps} steps, batch {recipe.batch_size}"
              f"{replicas}, {keras.mixed_precision.global_policy().name}", file=sys.stderr)
    history = view.fit(train_ds, validation_data=valid_ds, epochs=epochs, steps_per_epoch=steps,
                        validation_batch_size=recipe.batch_size,
                        callbacks=callbacks, verbose=options.verbose, shuffle=False)
    losses = history.history.get("loss", [])
    if view.stop_training and losses and not np.isfinite(losses[-1]):
        raise FloatingPointError(f"{stage}: the loss became NaN; training stopped "
                                 "(try a lower --learning-rate or --precision float32)")
    if averaging:
        average_snapshots(view, snapshots(folder)[-recipe.average_last:])
        view.save_weights(final)
    elif best.exists():
        view.load_weights(best)
    done.touch()


def snapshots(folder: str | os.PathLike) -> list[Path]:
    """A stage's per-epoch weight files (``epochNN.weights.h5``), in epoch order."""
    return sorted(Path(folder).glob("epoch*.weights.h5"),
                  key=lambda path: int(path.name[len("epoch"):-len(".weights.h5")]))


def average_snapshots(model: keras.Model, paths: list[Path]) -> None:
    """Set ``model``'s weights to the mean of the weight files ``paths`` (each saved from a
    model of the same architecture): floating-point weights, batch-norm statistics
    included, are averaged; any others (e.g. random-seed states) come from the last file."""
    if not paths:
        raise ValueError("no weight snapshots to average")
    total = None
    for path in paths:
        model.load_weights(path)
        weights = model.get_weights()
        wide = [w.astype(np.float64) for w in weights]
        total = wide if total is None else [t + w for t, w in zip(total, wide)]
    model.set_weights([(t / len(paths)).astype(w.dtype) if np.issubdtype(w.dtype, np.floating)
                       else w for t, w in zip(total, weights)])


def _best_logged(log: Path, default: float) -> float:
    """Lowest ``val_loss`` already in a CSV log (so a resumed run keeps the true best)."""
    if not log.exists():
        return default
    with log.open() as f:
        values = [float(row["val_loss"]) for row in csv.DictReader(f) if row.get("val_loss")]
    return min(values, default=default)


class TimeBudget(keras.callbacks.Callback):
    """Stops a stage when its next epoch would end after ``deadline`` (a ``time.time()``),
    and estimates how many epochs the stage will run (``expected_epochs()``)."""

    def __init__(self, deadline: float | None, epochs: int):
        super().__init__()
        self.deadline, self.epochs = deadline, epochs
        self.estimate, self.last = epochs, None

    def expected_epochs(self) -> int:
        return self.estimate

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.deadline is None:
            return
        now = time.time()
        seconds = now - self.begin
        self.estimate = min(self.epochs, epoch + 1 + int(max(0.0, self.deadline - now)
                                                         // max(seconds, 1e-9)))
        if now + seconds > self.deadline:
            self.model.stop_training = True


class CosineSchedule(keras.callbacks.Callback):
    """Learning rate ``base * (1 + cos(pi * epoch / total)) / 2`` set at each epoch's start,
    ``total`` read from ``expected_epochs()`` (which a :class:`TimeBudget` may revise)."""

    def __init__(self, base: float, expected_epochs):
        super().__init__()
        self.base, self.expected_epochs = base, expected_epochs

    def on_epoch_begin(self, epoch, logs=None):
        total = max(1, self.expected_epochs())
        self.model.optimizer.learning_rate = self.base * 0.5 * (
            1.0 + math.cos(math.pi * min(epoch, total) / total))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
    """Adds ``patches_per_s`` and ``eta_s`` (to the end of the stage) to each epoch's logs."""

    def __init__(self, batch_size: int, steps: int, expected_epochs):
        super().__init__()
        self.patches = batch_size * steps
        self.expected_epochs = expected_epochs
        self.start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.time() - self.start
        if logs is not None:
            logs["patches_per_s"] = self.patches / max(seconds, 1e-9)
            logs["eta_s"] = seconds * max(0, self.expected_epochs() - epoch - 1)


def _write_record(out: Path, recipe: Recipe, options: RunOptions, plan: distribute.Plan,
                  precision: str, steps: int, train_audio: pipeline.DecodedAudio,
                  valid_audio: pipeline.DecodedAudio, started: float, data) -> None:
    record = {
        "config": {**dataclasses.asdict(recipe), **dataclasses.asdict(options)},
        "precision": precision, "steps_per_epoch": steps,
        "strategy": plan.name, "replicas": plan.replicas, "workers": plan.pipelines,
        "data": [str(d) for d in data] if isinstance(data, (list, tuple)) else str(data),
        "train_tracks": len(train_audio.names),
        "train_seconds": round(train_audio.seconds, 1), "valid_tracks": len(valid_audio.names),
        "wall_seconds_this_run": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"keras": keras.__version__, "python": platform.python_version()},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2, default=str))


def epochs_done(out_dir: str | os.PathLike, stage: str) -> int:
    """Completed epochs of a stage, from its CSV log."""
    log = Path(out_dir) / stage / "log.csv"
    if not log.exists():
        return 0
    with log.open() as f:
        return sum(1 for _ in csv.DictReader(f))


__all__ = ["PRECISIONS", "Recipe", "RunOptions", "resolve", "train", "resolve_precision",
           "resolve_loader", "load_splits", "with_network_input", "epochs_done", "snapshots",
           "average_snapshots"]
