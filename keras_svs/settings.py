"""What a model file says about its use (:class:`ModelSettings`), without Keras: the
separation engine reads it from a ``.keras`` file (:func:`keras_svs.models.settings`) or
from a cached converted form (:mod:`keras_svs.runtime`), which then needs no Keras at all.
"""
from __future__ import annotations

import dataclasses

from .spectral import StftConfig


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What a model file says about its use: the STFT of its input, its input shape and
    normalisation, and its default separation mask. Stored as the configuration of the
    model's :class:`SpectrogramInput` (the keys of a saved ``.keras`` file are these field
    names), read with :func:`keras_svs.models.settings`, or from its stored form with
    :meth:`from_dict`.

    Attributes:
        preset: name of the recipe the model was built from.
        sample_rate: Hz of the model's input.
        n_fft, win_length, hop_length: its STFT, in samples (:attr:`stft`).
        bins: frequency bins the network sees (<= ``n_fft // 2 + 1``).
        frames: patch length in frames of a patch model; ``None`` for a fully
            convolutional one.
        time_multiple: a fully convolutional model takes frame counts that are multiples
            of it (1 for patch models).
        log_input, standardize, input_scale: the input normalisation
            (:class:`SpectrogramInput`).
        mask, threshold: the default separation mask and its threshold
            (:data:`keras_svs.options.MASKS`).
        channels: audio channels of the input (1: the mono mix; 2: stereo).
        extension: default mask of the bins above ``bins``
            (:data:`keras_svs.options.EXTENSIONS`).

    Raises:
        ValueError: ``channels`` < 1.
    """

    preset: str
    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    bins: int
    frames: int | None = None
    time_multiple: int = 1
    log_input: bool = False
    standardize: bool = False
    mask: str = "binary"
    threshold: float = 0.5
    channels: int = 1
    input_scale: float = 1.0
    extension: str = "top"

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, not {self.channels}")

    @property
    def stft(self) -> StftConfig:
        """The STFT settings the model's input magnitudes are computed with."""
        return StftConfig(self.sample_rate, self.n_fft, self.win_length, self.hop_length)

    def as_dict(self) -> dict:
        """The settings as ``{field: value}``, in field order (the stored form)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> "ModelSettings":
        """The settings from their stored form (:meth:`as_dict`); a key missing takes its
        field's default.

        Raises:
            TypeError: a key that is no field; ValueError: as the constructor.
        """
        return cls(**stored)
