"""Named recipes: STFT settings, architecture and training defaults, in one place.

A preset is the single source of every default that concerns a model; the CLI, training
and separation read them from here (or, for a trained model, from the model file itself).
"""
from __future__ import annotations

import dataclasses

from ..spectral import StftConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model recipe.

    Attributes:
        name: the preset's name.
        architecture: ``"paper"`` (Lin et al. 2018 CNN on fixed patches), ``"unet"``,
            ``"spleeter"`` (Deezer's 2stems pair of U-Nets, or its vocals net alone, on
            stereo magnitudes) or ``"student"`` (a cheaper U-Net on the same input, to be
            distilled from the pair: :mod:`keras_svs.models.student`).
        stft: STFT settings (the model's sample rate among them).
        bins: frequency bins the network sees (the lowest ``bins`` of ``stft.bins``).
        frames: frames per training patch (and per inference patch for ``paper``).
        log_input: feed ``log(|X| + 1e-6)`` instead of the linear magnitude.
        standardize: standardise each input bin by training-set mean/std (stored in the model).
        arch: keyword arguments of the architecture's builder.
        batch_size, learning_rate: Adam settings.
        pretrain_epochs, epochs: autoencoder and fine-tuning epochs.
        label_smoothing: IBM labels become ``s`` / ``1 - s``.
        mask: default separation mask, ``"binary"`` (thresholded, the paper) or ``"soft"``.
        threshold: voice-probability threshold of the binary mask.
        remix: probability that a training patch remixes voice and accompaniment of two clips.
        channels: audio channels the model takes, one magnitude spectrogram each (1: the
            mono mix, input ``(batch, frames, bins)``; 2: ``(batch, frames, bins, 2)``).
        input_scale: factor on the input magnitudes (see
            :class:`keras_svs.models.layers.SpectrogramInput`).
        extension: default mask of the bins above ``bins`` (see
            :data:`keras_svs.spectral.EXTENSIONS`).
        patch_hop: training patches: 0 random crops; ``n`` a fixed grid of one patch every
            ``n`` frames, an epoch one pass over it (:class:`keras_svs.examples.PatchSampler`).
    """

    name: str
    architecture: str
    stft: StftConfig
    bins: int
    frames: int
    log_input: bool = False
    standardize: bool = False
    arch: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 64
    learning_rate: float = 1e-4
    pretrain_epochs: int = 10
    epochs: int = 10
    label_smoothing: float = 0.02
    mask: str = "binary"
    threshold: float = 0.35
    remix: float = 0.5
    channels: int = 1
    input_scale: float = 1.0
    extension: str = "top"
    patch_hop: int = 0


PRESETS: dict[str, Preset] = {p.name: p for p in [
    # The authors' network exactly: 22.05 kHz, 9 x 2049 patches, 19,489,049 parameters,
    # trained on their grid of a patch every 8 frames.
    Preset("paper", "paper", StftConfig(22050, 4096, 1024, 256), bins=2049, frames=9,
           batch_size=107, pretrain_epochs=300, epochs=300, remix=0.0, patch_hop=8),
    # The same network for 16 kHz data such as MIR-1K: 9 x 513 patches.
    Preset("paper16k", "paper", StftConfig(16000, 1024, 1024, 256), bins=513, frames=9,
           batch_size=107, pretrain_epochs=20, epochs=40, remix=0.5),
    # A narrow version of the paper's network, quick to train on a CPU.
    Preset("small", "paper", StftConfig(16000, 512, 512, 128), bins=257, frames=9,
           arch=dict(filters=(16, 8, 16, 8), dense=(256, 128)),
           batch_size=64, learning_rate=5e-4, pretrain_epochs=2, epochs=8, threshold=0.5),
    # For tests: seconds to build and train.
    Preset("tiny", "paper", StftConfig(8000, 256, 256, 64), bins=129, frames=9,
           arch=dict(filters=(4, 4, 4, 4), dense=(32, 16)),
           batch_size=16, learning_rate=1e-3, pretrain_epochs=1, epochs=1, threshold=0.5),
    # Fully convolutional encoder-decoder on log, standardised magnitudes.
    Preset("unet", "unet", StftConfig(16000, 1024, 1024, 256), bins=512, frames=128,
           log_input=True, standardize=True,
           arch=dict(filters=(16, 32, 64, 128, 256, 512), dropout=0.2),
           batch_size=8, learning_rate=1e-3, pretrain_epochs=2, epochs=40,
           mask="soft", threshold=0.5, remix=0.75),
    # Deezer's Spleeter 2stems (MIT licence): two U-Nets on the stereo magnitudes of the
    # lowest 1024 bins (11 kHz) of a 4096 / hop 1024 STFT at 44.1 kHz; its weights come
    # from `keras-svs import-spleeter` (keras_svs.models.spleeter_import). Spleeter's
    # magnitudes are of an unnormalised Hann window: 2048 (the window's sum) times ours.
    # Bins above 11 kHz: the mean mask of 8.3-11 kHz, frame by frame (``extension``).
    Preset("spleeter", "spleeter", StftConfig(44100, 4096, 4096, 1024), bins=1024,
           frames=512, batch_size=4, mask="soft", threshold=0.5, channels=2,
           input_scale=2048.0, extension="mean"),
    # Spleeter's vocals U-Net alone (its accompaniment net dropped: half the compute); its
    # own sigmoid mask is the voice probability. Starts from `keras-svs import-spleeter`'s
    # file (``--init``: the layers of the same names).
    Preset("spleeter1", "spleeter", StftConfig(44100, 4096, 4096, 1024), bins=1024,
           frames=512, arch=dict(nets=1), batch_size=4, mask="soft", threshold=0.5,
           channels=2, input_scale=2048.0, extension="mean"),
    # A cheaper network to distil from the shipped pair (`keras-svs train --teacher`): one
    # U-Net of half Spleeter's width with two outputs, on the pair's input (768 bins,
    # stereo), of which it sees the lowest 384 (0-4.1 kHz), the rest a learned extension;
    # its speed against the pair and the other candidates: benchmarks/student_speed.py.
    Preset("student", "student", StftConfig(44100, 4096, 4096, 1024), bins=768,
           frames=512, arch=dict(heads=2, filters=(8, 16, 32, 64, 128, 256),
                                 network_bins=384), batch_size=4,
           mask="soft", threshold=0.5, channels=2, input_scale=2048.0, extension="mean"),
    # For tests: the spleeter architecture, stereo, with 2 filters a level, at 8 kHz.
    Preset("tinystereo", "spleeter", StftConfig(8000, 256, 256, 64), bins=64, frames=64,
           arch=dict(filters=(2, 2, 2, 2, 2, 2)), batch_size=4, learning_rate=1e-3,
           pretrain_epochs=1, epochs=1, mask="soft", threshold=0.5, channels=2, remix=0.5),
]}


def get_preset(name: str) -> Preset:
    """Look up a preset by name; ``KeyError`` lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def with_network_input(preset: Preset, frames: int | None = None,
                       bins: int | None = None) -> Preset:
    """The preset with training patches of ``frames`` frames and a network that sees the
    lowest ``bins`` frequency bins (``None``: the preset's). A fully convolutional network
    (``unet``, ``spleeter``) has the same weights at any size, so both are choices of the
    run; bins above the network's take the preset's ``extension`` at separation.

    Raises:
        ValueError: a fixed-patch network (``paper``); not a positive multiple of
            ``2 ** levels``; more bins than the STFT has.
    """
    if (frames is None or frames == preset.frames) and (bins is None or bins == preset.bins):
        return preset
    if preset.architecture == "unet":
        multiple = 2 ** len(preset.arch["filters"])
    elif preset.architecture == "spleeter":
        from .spleeter import TIME_MULTIPLE as multiple
    elif preset.architecture == "student":
        from .student import FILTERS
        multiple = 2 ** len(preset.arch.get("filters", FILTERS))
    else:
        raise ValueError(f"the {preset.name} preset's network takes patches of exactly "
                         f"{preset.frames} frames and {preset.bins} bins")
    for name, value in (("frames", frames), ("bins", bins)):
        if value is not None and (value <= 0 or value % multiple):
            raise ValueError(f"{name} must be a positive multiple of {multiple} for the "
                             f"{preset.name} preset, not {value}")
    if bins is not None and bins > preset.stft.bins:
        raise ValueError(f"bins must be at most the STFT's {preset.stft.bins}, not {bins}")
    return dataclasses.replace(preset, frames=preset.frames if frames is None else frames,
                               bins=preset.bins if bins is None else bins)
