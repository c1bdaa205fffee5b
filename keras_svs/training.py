"""Two-stage training: autoencoder pretraining, then IBM fine-tuning (Lin et al. 2018).

Stage 1 (``pretrain``) fits the network to map the voice's share of the mixture magnitude,
``IBM * |X|``, to itself; stage 2 (``finetune``) starts from those weights and maps ``|X|`` to
the IBM with per-bin cross-entropy. Each stage keeps, in ``OUT/<stage>/``:

* ``best.weights.h5``: weights of the best validation loss so far;
* ``epochNN.weights.h5`` (fine-tuning with ``average_last``): the weights after epoch NN
  (from 01), and ``averaged.weights.h5``, the mean of the last ``average_last`` of them;
* ``log.csv``: one row per epoch (loss, val_loss, patches/s, ...);
* ``backup/``: Keras ``BackupAndRestore`` state, so the same command resumes after a kill.

Batches come from tf.data (:mod:`keras_svs.pipeline`) on the TensorFlow backend and from
NumPy worker processes (:mod:`keras_svs.batches`) on the others (``loader``). With
``time_budget`` the run fits its epochs to a wall-clock budget (15 % of it for the
autoencoder stage), and the cosine schedule follows the epochs that fit.

The final model (float32; the best validation loss, or with ``average_last`` the mean of
the last epochs' weights) is ``OUT/model.keras``; its STFT settings,
input statistics and default mask travel inside it. ``OUT/training.json`` records the run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from . import pipeline
from .datasets import DatasetError, discover, select_split
from .datasets.splits import split_file_for
from .models import (bin_accuracy, bin_cross_entropy, build_model, logits_model,
                     phase_sensitive_error, set_input_statistics, weighted_bin_cross_entropy)
from .models.losses import WEIGHT_EPS, relative_weights
from .models.presets import Preset, get_preset
from .options import LOSSES, TRAINING_PRECISIONS as PRECISIONS
#: Fine-tuning loss -> (loss function, exponent of the bin weights added to the targets
#: (:func:`~keras_svs.models.losses.relative_weights`) or None, target kind): ``ce`` the
#: per-bin cross-entropy against the IBM (the paper); ``weighted`` the same with each bin
#: weighted by its mixture magnitude (:func:`magnitude_weights`); ``psa`` the power-weighted
#: squared error against the phase-sensitive mask (:func:`power_weights`).
_LOSS_PARTS = {"ce": (bin_cross_entropy, None, "ibm"),
               "weighted": (weighted_bin_cross_entropy, 1, "ibm"),
               "psa": (phase_sensitive_error, 2, "psa")}


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides the data (defaults come from the preset).

    Attributes:
        preset: preset name.
        epochs, pretrain_epochs: fine-tuning and autoencoder epochs (0 skips pretraining).
        steps_per_epoch: batches per epoch; ``None``: one pass in non-overlapping patches.
        batch_size, learning_rate: Adam settings.
        cosine: decay the learning rate to 0 along a cosine over the fine-tuning steps.
        precision: one of :data:`PRECISIONS`; ``auto`` = mixed_float16 on GPU, else float32.
        remix, pitch: augmentation probabilities (see :func:`pipeline.training_dataset`).
        gain_db: a remixed patch's voice and accompaniment each get a random gain in
            ``[-gain_db, gain_db]`` dB (so their ratio spans twice that); 0: their clips'
            own levels.
        seed: seeds Keras, NumPy and the data stream.
        train_split, valid_split: split names (``+`` joins several, e.g. ``train+valid``).
        verbose: Keras fit verbosity (0, 1 progress bar, 2 a line per epoch).
        loader: ``tf`` (tf.data), ``numpy`` (:mod:`keras_svs.batches`) or ``auto`` (tf on
            the TensorFlow backend, else numpy).
        workers: NumPy loader processes (0: make batches in the training process).
        time_budget: seconds for the whole run; the stages stop when their next epoch would
            not fit (``epochs`` then caps the count), and the cosine schedule follows.
        gnsdr_clips, gnsdr_every: log the voice GNSDR on that many validation clips every
            that many fine-tuning epochs (``val_gnsdr``); 0 clips: never.
        skip_bad: skip unusable tracks with a warning instead of stopping.
        init: a trained ``.keras`` model of the same preset to start from (its weights and
            input statistics); ``None``: random initialisation.
        loss: the fine-tuning loss, one of :data:`LOSSES`: ``ce`` the per-bin
            cross-entropy against the smoothed IBM (the paper), ``weighted`` the same
            weighted by each bin's mixture magnitude, ``psa`` the squared error against the
            phase-sensitive mask weighted by the mixture power (the separated voice's
            spectral error); the autoencoder stage always uses the plain cross-entropy.
        average_last: 0 keeps the fine-tuning weights of the best validation loss; ``k > 0``
            keeps the mean of the weights after each of the last ``k`` fine-tuning epochs
            (stochastic weight averaging; fewer if fewer epochs ran).
        frames: frames per training patch; ``None``: the preset's. Only fully convolutional
            presets (``unet``, ``spleeter``) take another length, a multiple of
            ``2 ** levels``; the model itself takes any length at separation time.
        freeze_batch_norm: keep every batch norm in inference mode with its statistics
            fixed (those of ``init``): fine-tuning a trained network with small batches.
    """

    preset: str = "small"
    epochs: int | None = None
    pretrain_epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    cosine: bool = False
    precision: str = "auto"
    remix: float | None = None
    pitch: float = 0.0
    seed: int = 0
    train_split: str = "train"
    valid_split: str = "valid"
    verbose: int = 2
    loader: str = "auto"
    workers: int = 0
    time_budget: float | None = None
    gnsdr_clips: int = 3
    gnsdr_every: int = 1
    init: str | None = None
    skip_bad: bool = False
    loss: str = "ce"
    average_last: int = 0
    gain_db: float = 6.0
    frames: int | None = None
    freeze_batch_norm: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` replaced by the preset's default."""
        p = get_preset(self.preset)
        return dataclasses.replace(
            self,
            epochs=p.epochs if self.epochs is None else self.epochs,
            pretrain_epochs=p.pretrain_epochs if self.pretrain_epochs is None
            else self.pretrain_epochs,
            batch_size=self.batch_size or p.batch_size,
            learning_rate=self.learning_rate or p.learning_rate,
            remix=p.remix if self.remix is None else self.remix)


def with_patch_frames(preset: Preset, frames: int | None) -> Preset:
    """The preset with training patches of ``frames`` frames (``None``: unchanged).

    Raises:
        ValueError: a fixed-patch network (``paper``), or not a multiple of ``2 ** levels``.
    """
    if frames is None or frames == preset.frames:
        return preset
    if preset.architecture == "unet":
        multiple = 2 ** len(preset.arch["filters"])
    elif preset.architecture == "spleeter":
        from .models.spleeter import TIME_MULTIPLE as multiple
    else:
        raise ValueError(f"the {preset.name} preset's network takes patches of exactly "
                         f"{preset.frames} frames, not {frames}")
    if frames <= 0 or frames % multiple:
        raise ValueError(f"frames must be a positive multiple of {multiple} for the "
                         f"{preset.name} preset, not {frames}")
    return dataclasses.replace(preset, frames=frames)


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


def resolve_loader(loader: str, channels: int = 1) -> str:
    """``auto`` -> ``tf`` on the TensorFlow backend for mono models, else ``numpy`` (the
    only loader of multichannel batches).

    Raises:
        ValueError: an unknown loader, or ``tf`` for a model of ``channels > 1``.
    """
    if loader not in ("auto", "tf", "numpy"):
        raise ValueError(f"loader must be auto, tf or numpy, not {loader!r}")
    if loader == "tf" and channels > 1:
        raise ValueError(f"the tf loader makes mono batches; a {channels}-channel model "
                         "takes --loader numpy (or auto)")
    if loader != "auto":
        return loader
    return "tf" if keras.backend.backend() == "tensorflow" and channels == 1 else "numpy"


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


def train(data: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig,
          cache: str | os.PathLike | None = None,
          split_file: str | os.PathLike | None = None) -> Path:
    """Run both stages and write ``OUT/model.keras``; rerunning the same call resumes.

    Args:
        data: dataset root (any layout :func:`keras_svs.datasets.discover` knows), or a
            list of roots whose splits are joined (see :func:`load_splits`).
        out_dir: output folder (created).
        config: the run's settings.
        cache: optional HDF5 decode cache written by ``keras-svs prepare``.
        split_file: JSON split file; default: the dataset's own (see ``datasets.splits``).

    Returns:
        path of the final ``.keras`` model.
    """
    config = config.resolved()
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {config.loss!r}")
    if config.average_last < 0:
        raise ValueError(f"average_last must be >= 0, not {config.average_last}")
    preset = with_patch_frames(get_preset(config.preset), config.frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    started = time.time()
    train_audio, valid_audio = load_splits(data, cache, preset,
                                           (config.train_split, config.valid_split), split_file,
                                           config.skip_bad)
    steps = config.steps_per_epoch or pipeline.steps_per_epoch(train_audio, preset,
                                                               config.batch_size)
    precision = resolve_precision(config.precision)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        stats = pipeline.input_statistics(train_audio, preset) if preset.standardize else None
        model = build_model(preset)
        if stats is not None:
            set_input_statistics(model, *stats)
        if config.init is not None:
            _initialise(model, config.init)
        if config.freeze_batch_norm:
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False  # Keras: inference mode, statistics fixed
        if config.pretrain_epochs > 0:
            autoencoder = build_model(preset, shortcuts=False)
            if stats is not None:
                set_input_statistics(autoencoder, *stats)
            _fit_stage(autoencoder, "pretrain", train_audio, valid_audio, preset, config, steps,
                       out, config.pretrain_epochs,
                       _deadline(started, config.time_budget, PRETRAIN_SHARE))
            model.set_weights(autoencoder.get_weights())
        _fit_stage(model, "finetune", train_audio, valid_audio, preset, config, steps, out,
                   config.epochs, _deadline(started, config.time_budget, 1.0))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    final = build_model(preset)  # float32 policy whatever the training precision
    final.set_weights(model.get_weights())
    path = out / "model.keras"
    tmp = out / ".model.tmp.keras"
    final.save(tmp)
    os.replace(tmp, path)
    _write_record(out, config, precision, steps, train_audio, valid_audio, started, data)
    return path


PRETRAIN_SHARE = 0.15


def _initialise(model: keras.Model, source: str | os.PathLike) -> None:
    """Copy a trained model's weights (input statistics included) into ``model``."""
    from .models import load_model

    trained = load_model(source)
    if trained.name != model.name:
        raise ValueError(f"--init {source}: a {trained.name!r} model cannot start a "
                         f"{model.name!r} run")
    model.set_weights([w.astype("float32") for w in trained.get_weights()])


def _deadline(started: float, budget: float | None, share: float) -> float | None:
    return None if budget is None else started + share * budget


def _data(audio: pipeline.DecodedAudio, preset: Preset, config: TrainConfig, stage: str,
          training: bool):
    """Training stream or validation data of the configured loader; with a weighted loss
    (``weighted``, ``psa``) the fine-tuning targets carry the bins' weights (``(..., 2)``)."""
    data = _loader_data(audio, preset, config, stage, training)
    exponent = _LOSS_PARTS[config.loss][1]
    if exponent is None or stage != "finetune":
        return data
    if isinstance(data, tuple):  # NumPy validation arrays
        return data[0], _with_weights(*data, exponent)
    if hasattr(data, "map"):  # tf.data
        return data.map(lambda x, y: (x, _with_weights(x, y, exponent)))
    return ((x, _with_weights(x, y, exponent)) for x, y in data)  # NumPy stream


def _with_weights(magnitude, target, exponent: int = 1):
    """``(batch, frames, bins)`` target -> ``(batch, frames, bins, 2)`` target and the
    :func:`~keras_svs.models.losses.relative_weights` of the input magnitude with this
    exponent (NumPy arrays, or tf.data tensors: these stay in TensorFlow, where the same
    formula is written in ``tf``, whatever the Keras backend)."""
    if isinstance(magnitude, np.ndarray):
        weights = keras.ops.convert_to_numpy(relative_weights(magnitude, exponent))
        return np.stack([target, weights.astype(target.dtype)], axis=-1)
    import tensorflow as tf

    level = magnitude if exponent == 1 else tf.pow(magnitude, float(exponent))
    mean = tf.reduce_mean(level, axis=(1, 2), keepdims=True)
    return tf.stack([target, level / (mean + WEIGHT_EPS ** exponent)], axis=-1)


def _loader_data(audio: pipeline.DecodedAudio, preset: Preset, config: TrainConfig,
                 stage: str, training: bool):
    """Training stream or validation data of the configured loader."""
    target = _LOSS_PARTS[config.loss][2]
    if resolve_loader(config.loader, preset.channels) == "tf":
        if training:
            return pipeline.training_dataset(audio, preset, stage, config.batch_size,
                                             config.remix, config.pitch,
                                             gain_db=config.gain_db,
                                             seed=config.seed + (stage == "finetune"),
                                             target=target)
        return pipeline.validation_dataset(audio, preset, stage, config.batch_size,
                                           target=target)
    from . import batches

    if training:
        sampler = batches.PatchSampler(audio, preset, stage, config.batch_size, config.remix,
                                       config.pitch, gain_db=config.gain_db,
                                       seed=config.seed + (stage == "finetune"),
                                       target=target)
        return batches.stream(sampler, workers=config.workers)
    return batches.validation_arrays(audio, preset, stage, target)


def _fit_stage(model: keras.Model, stage: str, train_audio: pipeline.DecodedAudio,
               valid_audio: pipeline.DecodedAudio, preset: Preset, config: TrainConfig,
               steps: int, out: Path, epochs: int, deadline: float | None = None) -> None:
    """Fit one stage, resuming from its backup; leaves the best weights in ``model``.

    What is fitted is ``model``'s logits view (:func:`~keras_svs.models.logits_model`, the
    same weights): every loss is computed from the logits."""
    view = logits_model(model)
    folder = out / stage
    folder.mkdir(exist_ok=True)
    best = folder / "best.weights.h5"
    averaging = stage == "finetune" and config.average_last > 0
    final = folder / "averaged.weights.h5" if averaging else best
    done = folder / "done"
    if done.exists() and final.exists():
        view.load_weights(final)
        return
    loss = _LOSS_PARTS[config.loss][0] if stage == "finetune" else bin_cross_entropy
    view.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss,
                  metrics=[bin_accuracy] if stage == "finetune" else None)
    train_ds = _data(train_audio, preset, config, stage, training=True)
    valid_ds = _data(valid_audio, preset, config, stage, training=False)
    budget = TimeBudget(deadline, epochs)
    checkpoint = keras.callbacks.ModelCheckpoint(best, monitor="val_loss", save_best_only=True,
                                                 save_weights_only=True)
    checkpoint.best = _best_logged(folder / "log.csv", checkpoint.best)
    callbacks = [keras.callbacks.BackupAndRestore(folder / "backup"), budget]
    if config.cosine and stage == "finetune":
        callbacks.append(CosineSchedule(config.learning_rate, budget.expected_epochs))
    callbacks += [Throughput(config.batch_size, steps, budget.expected_epochs),
                  keras.callbacks.TerminateOnNaN()]
    if stage == "finetune" and config.gnsdr_clips > 0:
        from .monitor import ValidationGnsdr

        callbacks.append(ValidationGnsdr(model, valid_audio, config.gnsdr_clips,
                                         config.gnsdr_every))
    callbacks += [checkpoint, keras.callbacks.CSVLogger(folder / "log.csv", append=True)]
    if averaging:
        callbacks.append(keras.callbacks.ModelCheckpoint(  # epoch01, epoch02, ...
            str(folder / "epoch{epoch:02d}.weights.h5"), save_weights_only=True))
    if config.verbose:
        print(f"[{stage}] {epochs} epochs x {steps} steps, batch {config.batch_size}, "
              f"{keras.mixed_precision.global_policy().name}", file=sys.stderr)
    arrays = isinstance(valid_ds, tuple)  # NumPy loader: Keras batches the arrays itself
    history = view.fit(train_ds, validation_data=valid_ds, epochs=epochs, steps_per_epoch=steps,
                        validation_batch_size=config.batch_size if arrays else None,
                        callbacks=callbacks, verbose=config.verbose, shuffle=False)
    losses = history.history.get("loss", [])
    if view.stop_training and losses and not np.isfinite(losses[-1]):
        raise FloatingPointError(f"{stage}: the loss became NaN; training stopped "
                                 "(try a lower --learning-rate or --precision float32)")
    if averaging:
        average_snapshots(view, snapshots(folder)[-config.average_last:])
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


def _write_record(out: Path, config: TrainConfig, precision: str, steps: int,
                  train_audio: pipeline.DecodedAudio, valid_audio: pipeline.DecodedAudio,
                  started: float, data) -> None:
    record = {
        "config": dataclasses.asdict(config), "precision": precision, "steps_per_epoch": steps,
        "data": [str(d) for d in data] if isinstance(data, (list, tuple)) else str(data),
        "train_tracks": len(train_audio.names),
        "train_seconds": round(train_audio.seconds, 1), "valid_tracks": len(valid_audio.names),
        "wall_seconds_this_run": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {"keras": keras.__version__, "python": platform.python_version()},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2))


def epochs_done(out_dir: str | os.PathLike, stage: str) -> int:
    """Completed epochs of a stage, from its CSV log."""
    log = Path(out_dir) / stage / "log.csv"
    if not log.exists():
        return 0
    with log.open() as f:
        return sum(1 for _ in csv.DictReader(f))


__all__ = ["PRECISIONS", "TrainConfig", "train", "resolve_precision", "load_splits",
           "epochs_done", "snapshots", "average_snapshots"]
