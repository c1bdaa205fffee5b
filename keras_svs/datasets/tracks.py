"""Tracks (a voice and an accompaniment) and their discovery in the supported layouts."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .. import audio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
_NOT_ACCOMPANIMENT = {"vocals", "mixture", "accompaniment", "voice"}


class DatasetError(ValueError):
    """A dataset is empty, incomplete or inconsistent; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One song or clip with its two sources.

    Attributes:
        name: the clip's name (file stem, or folder name for folder layouts).
        layout: ``"pairs"``, ``"musdb"`` or ``"stems"``.
        voice: the voice file (for ``pairs``, the stereo file itself).
        accompaniment: the accompaniment files, summed (empty for ``pairs``).
    """

    name: str
    layout: str
    voice: Path
    accompaniment: tuple[Path, ...] = ()

    def load(self, sample_rate: int | None = None,
             mono: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
        """Decode the two sources.

        Args:
            sample_rate: resample to this rate (Hz); ``None`` keeps the files' rate.
            mono: average channels (``pairs`` are mono by nature: one channel each).

        Returns:
            ``(voice, accompaniment, rate)``, float32 arrays ``(channels, samples)`` of
            equal shape; their sum is the mixture.

        Raises:
            DatasetError: a stem is unreadable, or the stems differ in length or rate.
        """
        try:
            if self.layout == "pairs":
                pair, rate = audio.read(self.voice)
                if pair.shape[0] != 2:
                    raise DatasetError(f"{self.voice}: a pair file needs 2 channels "
                                       f"(left accompaniment, right voice), it has {pair.shape[0]}")
                voice, accompaniment = pair[1:2], pair[0:1]
            else:
                voice, rate = audio.read(self.voice, mono=mono)
                accompaniment = None
                for path in self.accompaniment:
                    stem, stem_rate = audio.read(path, mono=mono)
                    if stem_rate != rate or stem.shape != voice.shape:
                        raise DatasetError(
                            f"{path}: {stem.shape[-1]} samples x {stem.shape[0]} channels at "
                            f"{stem_rate} Hz, but {self.voice.name} has {voice.shape[-1]} x "
                            f"{voice.shape[0]} at {rate} Hz")
                    accompaniment = stem if accompaniment is None else accompaniment + stem
        except audio.AudioError as error:
            raise DatasetError(str(error)) from None
        if sample_rate is not None and sample_rate != rate:
            voice = audio.resample(voice, rate, sample_rate)
            accompaniment = audio.resample(accompaniment, rate, sample_rate)
            rate = sample_rate
        return voice, accompaniment, rate


def discover(root: str | os.PathLike) -> list[Track]:
    """Find every track below ``root``, sorted by name.

    A folder that holds a ``vocals.*`` file is one track (``stems`` when it has an
    ``accompaniment.*`` and no other stems, else ``musdb``); otherwise every audio file
    below ``root`` is a stereo ``pairs`` clip.

    Raises:
        DatasetError: ``root`` is missing or holds no tracks, or a track folder lacks stems.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    folders = sorted({p.parent for p in files if p.stem.lower() == "vocals"})
    if folders:
        tracks = [_folder_track(folder) for folder in folders]
    else:
        tracks = [Track(p.stem, "pairs", p) for p in files]
    if not tracks:
        raise DatasetError(f"{root}: no audio tracks found (expected stereo pair files, or "
                           "folders with vocals.* and accompaniment.* or other stems)")
    return sorted(tracks, key=lambda t: t.name)


def _folder_track(folder: Path) -> Track:
    stems = {p.stem.lower(): p for p in sorted(folder.iterdir())
             if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()}
    others = tuple(p for stem, p in stems.items() if stem not in _NOT_ACCOMPANIMENT)
    if others:
        return Track(folder.name, "musdb", stems["vocals"], others)
    if "accompaniment" in stems:
        return Track(folder.name, "stems", stems["vocals"], (stems["accompaniment"],))
    raise DatasetError(f"{folder}: has vocals but no accompaniment.* or other stems")
