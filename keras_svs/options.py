"""The choices of keras-svs settings, in one place, without TensorFlow.

The modules that act on a setting import its choices from here (for example
:data:`keras_svs.spectral.MASKS` is :data:`MASKS`; ``tests/test_batch.py`` checks that
:mod:`keras_svs.training` and :mod:`keras_svs.models` define the same), and the command
line builds its option lists from them without importing TensorFlow. The training
settings and their defaults are :class:`Recipe` and :class:`RunOptions`.
"""
from __future__ import annotations

import dataclasses

#: Separation masks made from voice probabilities (:func:`keras_svs.spectral.make_mask`):
#: ``soft`` the probability, ``binary`` probability > threshold, ``thresholded``
#: probabilities below the threshold set to 0.
MASKS = ("soft", "binary", "thresholded")
#: How the bins above a model's band are masked (:func:`keras_svs.spectral.fit_bins`):
#: ``top`` repeats the top bin's mask, ``zero`` gives them none of the voice, ``mean`` the
#: mean of the band's top quarter in each frame.
EXTENSIONS = ("top", "zero", "mean")
#: How a patch model slides over time (:func:`keras_svs.separation.patch_weights`).
MODES = ("average", "centre")
#: The stems a separation writes, in this order.
STEMS = ("vocals", "accompaniment")
#: Inference arithmetic (:func:`keras_svs.models.inference.at_precision`).
INFERENCE_PRECISIONS = ("float32", "bfloat16")
#: What runs a separator's model call (:mod:`keras_svs.runtime`): ``auto`` (where LiteRT
#: applies and is installed, ``litert-int8`` on a CPU with int8 dot products, else
#: ``litert``; else TensorFlow), ``tensorflow``, ``litert`` (float32), ``litert-int8`` (the
#: largest filters in int8).
RUNTIMES = ("auto", "tensorflow", "litert", "litert-int8")
#: Training arithmetic (``auto``: mixed_float16 on a GPU, float32 on a CPU).
TRAINING_PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: Fine-tuning losses (:data:`keras_svs.training.LOSSES`).
LOSSES = ("ce", "weighted", "psa")
#: Training batch loaders.
LOADERS = ("auto", "tf", "numpy")
#: Where training runs (:mod:`keras_svs.distribute`): ``auto``, ``one-device``, ``mirrored``
#: (this machine's devices), ``multi-worker`` (a cluster named by ``TF_CONFIG``).
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
#: Separation methods that :func:`keras_svs.evaluation.estimate` knows.
METHODS = ("model", "ibm", "irm", "mixture", "repet")
#: Beam runners that ``keras-svs separate-beam --runner`` names (:mod:`keras_svs.beam`).
BEAM_RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")
#: Output formats of separated stems (the file extension picks it).
CODECS = ("wav", "flac", "ogg", "mp3")
#: Output sample formats: 16 and 24 bit PCM, 32 = float WAV.
BIT_DEPTHS = (16, 24, 32)
#: Placeholders of an output file name template (:func:`keras_svs.batch.output_paths`):
#: the input's file name without extension, the stem, the output extension.
PLACEHOLDERS = ("track", "stem", "codec")
#: Where each stem of an input goes, relative to the output folder.
DEFAULT_FILENAME = "{track}/{stem}.{codec}"


def _option(default, kind: str | tuple | None = None, help: str | None = None,
            short: str | None = None):
    """A settings field that is also a ``keras-svs train`` option (:func:`train_options`).

    Args:
        default: the field's default (a ``bool`` field's option is a flag).
        kind: the option's values: a tuple of choices, or one of ``"int"``, ``"int>=0"``,
            ``"int>=1"``, ``"float>0"``, ``"float>=0"``, ``"0..1"``, ``"str"``, ``"path"``,
            ``"file"`` (an existing file); None for a flag.
        help: the option's help text.
        short: a short flag (``"-p"``).
    """
    return dataclasses.field(default=default, metadata={"kind": kind, "help": help,
                                                        "short": short})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """What a training run makes, and how: the settings that decide the model
    (:func:`keras_svs.training.train`). Built by keyword; ``None`` takes the preset's value
    (:func:`keras_svs.training.resolve`). The command line's ``train`` defaults are these.

    Attributes:
        preset: preset name (:mod:`keras_svs.models.presets`).
        epochs, pretrain_epochs: fine-tuning and autoencoder epochs (0 skips pretraining).
        steps_per_epoch: batches per epoch; ``None``: one pass in non-overlapping patches
            (with ``patch_hop``: one pass over the grid).
        patch_hop: training patches: ``None`` the preset's (``paper``: 8, the authors'
            training set), 0 random crops, ``n`` a fixed grid of one patch every ``n``
            frames of every clip, each epoch a pass over it in a new random order
            (:class:`keras_svs.examples.PatchSampler`); validation then uses the same grid.
        batch_size, learning_rate: Adam settings.
        cosine: decay the learning rate to 0 along a cosine over the fine-tuning epochs.
        precision: one of :data:`TRAINING_PRECISIONS`; ``auto`` = mixed_float16 on a GPU,
            else float32.
        remix: probability that a patch's accompaniment comes from another clip
            (:class:`keras_svs.examples.PatchSampler`).
        pitch: probability that a remixed voice is shifted by 1 to 3 semitones.
        gain_db: a remixed patch's voice and accompaniment each get a random gain in
            ``[-gain_db, gain_db]`` dB (so their ratio spans twice that); 0: their clips'
            own levels.
        loss: the fine-tuning loss, one of :data:`LOSSES`: ``ce`` the per-bin
            cross-entropy against the smoothed IBM (the paper), ``weighted`` the same
            weighted by each bin's mixture magnitude, ``psa`` the squared error against the
            phase-sensitive mask weighted by the mixture power (the separated voice's
            spectral error); the autoencoder stage always uses the plain cross-entropy.
        frames: frames per training patch; ``None``: the preset's. Only fully convolutional
            presets (``unet``, ``spleeter``) take another length, a multiple of
            ``2 ** levels``; the model itself takes any length at separation time.
        bins: frequency bins the network sees, the lowest of the STFT's; ``None``: the
            preset's. Fully convolutional presets only, a multiple of ``2 ** levels``: the
            network's compute is proportional to them, and the bins above get the
            preset's mask extension (:func:`keras_svs.spectral.fit_bins`).
        freeze_batch_norm: keep every batch norm in inference mode with its statistics
            fixed (those of the ``init`` model): fine-tuning a trained network with small
            batches.
        average_last: 0 keeps the fine-tuning weights of the best validation loss; ``k > 0``
            keeps the mean of the weights after each of the last ``k`` fine-tuning epochs
            (stochastic weight averaging; fewer if fewer epochs ran).
        teacher: a trained keras-svs model of the same input whose voice probabilities
            join the fine-tuning targets (distillation, :mod:`keras_svs.models.teacher`);
            ``None``: the examples' own targets.
        teacher_share: the teacher's share of each fine-tuning target, in [0, 1] (with
            ``teacher``).
        ibm_weight: with ``teacher``: ``None`` blends the targets by ``teacher_share``; a
            weight ``w >= 0`` makes the loss ``L(q, z) + w L(t, z)`` instead, the
            teacher's probability ``q`` as the target plus ``w`` times the loss against
            the examples' own target ``t`` (with ``loss="ce"``: the paper's IBM
            cross-entropy; :func:`keras_svs.models.teacher.distillation_loss`).
        seed: seeds Keras, NumPy and the example stream.
    """

    preset: str = _option("small", "str", "paper, paper16k, small, tiny, unet, spleeter, "
                          "spleeter1 or student.", short="-p")
    epochs: int | None = _option(None, "int>=0", "Fine-tuning epochs (default: the preset's).")
    pretrain_epochs: int | None = _option(None, "int>=0",
                                          "Autoencoder epochs; 0 skips the stage.")
    steps_per_epoch: int | None = _option(None, "int>=1",
                                          "Batches per epoch (default: one pass).")
    patch_hop: int | None = _option(None, "int>=0", "Training patches on a grid, one every N "
                                    "frames (0: random crops; default: the preset's, paper 8).")
    batch_size: int | None = _option(None, "int>=1")
    learning_rate: float | None = _option(None, "float>0")
    cosine: bool = _option(False, help="Cosine learning-rate decay while fine-tuning.")
    precision: str = _option("auto", TRAINING_PRECISIONS, "auto: mixed_float16 on a GPU.")
    remix: float | None = _option(None, "0..1", "Probability of remixing clips' sources.")
    pitch: float = _option(0.0, "0..1", "Probability of a 1-3 semitone voice shift.")
    gain_db: float = _option(6.0, "float>=0", "Remixed sources' random gains: +-this many dB.")
    loss: str = _option("ce", LOSSES, "ce: cross-entropy against the IBM (the paper); "
                        "weighted: magnitude-weighted; psa: against the phase-sensitive mask.")
    frames: int | None = _option(None, "int>=1",
                                 "Frames per training patch (default: the preset's).")
    bins: int | None = _option(None, "int>=1", "Frequency bins the network sees, the lowest "
                               "(default: the preset's).")
    freeze_batch_norm: bool = _option(False, help="Keep batch norms' statistics (those of "
                                      "--init).")
    average_last: int = _option(0, "int>=0",
                                "Keep the mean weights of the last N epochs (0: best).")
    teacher: str | None = _option(None, "file", "Distil: a trained model whose voice "
                                  "probabilities join the fine-tuning targets.")
    teacher_share: float = _option(0.5, "0..1", "The teacher's share of each target.")
    ibm_weight: float | None = _option(None, "float>=0", "Distil with the teacher's "
                                       "probability as the target plus this weight times "
                                       "the loss against the IBM (instead of "
                                       "--teacher-share).")
    seed: int = _option(0, "int")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a training run goes, beside its :class:`Recipe`: data selection, loader,
    monitoring and budget. Built by keyword; the command line's ``train`` defaults are these.

    Attributes:
        train_split, valid_split: split names (``+`` joins several, e.g. ``train+valid``).
        split_file: JSON split file; ``None``: the dataset's own
            (:mod:`keras_svs.datasets.splits`).
        cache: HDF5 decode cache written by ``keras-svs prepare``; ``None``: decode.
        init: a trained ``.keras`` model to start from, layer by layer of the same name
            (its weights and input statistics): the same preset, or ``spleeter`` for
            ``spleeter1``; ``None``: random initialisation.
        skip_bad: skip unusable tracks with a warning instead of stopping.
        loader: one of :data:`LOADERS`: ``tf`` (tf.data), ``numpy``
            (:mod:`keras_svs.batches`) or ``auto`` (tf on the TensorFlow backend, else numpy);
            both make the same examples (:mod:`keras_svs.examples`).
        workers: NumPy loader processes (0: make batches in the training process).
        time_budget: seconds for the whole run; the stages stop when their next epoch would
            not fit (``epochs`` then caps the count), and the cosine schedule follows.
        gnsdr_clips, gnsdr_every: log the voice GNSDR on that many validation clips every
            that many fine-tuning epochs (``val_gnsdr``); 0 clips: never.
        strategy: one of :data:`STRATEGIES` (:mod:`keras_svs.distribute`): ``tf.distribute``
            on TensorFlow, ``keras.distribution`` on JAX; the batch size is then the global
            batch of all replicas together, and only the chief writes the run folder.
        verbose: Keras fit verbosity (0, 1 progress bar, 2 a line per epoch).
    """

    train_split: str = _option("train", "str",
                               "Split(s) to train on; join with + (e.g. train+valid).")
    valid_split: str = _option("valid", "str",
                               "Split for validation loss and checkpoint selection.")
    split_file: str | None = _option(None, "path", "JSON split file (default: the dataset's).")
    cache: str | None = _option(None, "path", "HDF5 decode cache written by `keras-svs "
                                "prepare`.")
    init: str | None = _option(None, "file", "Start from this model.")
    skip_bad: bool = _option(False, help="Skip unusable tracks with a warning instead of "
                             "stopping.")
    loader: str = _option("auto", LOADERS, "tf.data or NumPy workers (same examples).")
    workers: int = _option(0, "int>=0", "NumPy loader processes (0: in the training process).")
    time_budget: float | None = _option(None, "float>0",
                                        "Seconds for the whole run (epochs that fit).")
    gnsdr_clips: int = _option(3, "int>=0", "Log voice GNSDR on this many validation clips.")
    gnsdr_every: int = _option(1, "int>=1", "... every this many fine-tuning epochs.")
    strategy: str = _option("auto", STRATEGIES, "Devices or machines (TF_CONFIG) to train on; "
                            "--batch-size is then the global batch.")
    verbose: int = 2


def train_options() -> list[dataclasses.Field]:
    """The :class:`Recipe` and :class:`RunOptions` fields that are ``keras-svs train``
    options, in that order; each field's ``metadata`` holds its option's ``kind``, ``help``
    and ``short`` flag (:func:`_option`)."""
    return [field for owner in (Recipe, RunOptions) for field in dataclasses.fields(owner)
            if "kind" in field.metadata]


def training_settings(**settings) -> tuple[Recipe, RunOptions]:
    """Split flat keyword settings (the ``train`` command's options) into a :class:`Recipe`
    and :class:`RunOptions`; a setting missing takes its default.

    Raises:
        TypeError: naming a setting that is neither's field.
    """
    names = {field.name for field in dataclasses.fields(Recipe)}
    recipe = Recipe(**{k: v for k, v in settings.items() if k in names})
    return recipe, RunOptions(**{k: v for k, v in settings.items() if k not in names})
