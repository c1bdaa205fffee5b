"""Train/valid/test splits, read from JSON files of name patterns.

A split file maps each split to a list of ``fnmatch`` patterns over track names; a track
belongs to the first split (in file order) with a matching pattern. The files for known
datasets ship inside the package, in ``keras_svs/assets/splits/`` (package data, so that
an installed wheel finds them as a source checkout does).

Without a split file, ``valid`` is every tenth track in name order (the first, the
eleventh, ...) and ``train`` the others, so that any folder of stems can be trained on.
Split names can be joined with ``+`` (``train+valid``) for their union; ``all`` is every track.
"""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from .tracks import DatasetError, Track

#: Splits defined without a split file, and the hold-out period of ``valid``.
HOLDOUT = ("train", "valid")
HOLDOUT_EVERY = 10
#: Split files shipped in the package: ``<dataset folder name>.json``.
SPLITS_DIR = Path(__file__).resolve().parents[1] / "assets" / "splits"


def split_file_for(root: str | os.PathLike) -> Path | None:
    """The split file for a dataset root: ``ROOT/splits.json`` if present, else the
    shipped ``SPLITS_DIR/<folder name>.json`` (e.g. ``mir1k.json``), else ``None``."""
    root = Path(root)
    for candidate in (root / "splits.json", SPLITS_DIR / f"{root.resolve().name}.json"):
        if candidate.is_file():
            return candidate
    return None


def split_names(split_file: str | os.PathLike | None) -> list[str]:
    """Split names defined by a split file (the hold-out splits and ``all`` without one)."""
    if split_file is None:
        return [*HOLDOUT, "all"]
    return list(_read(split_file)) + ["all"]


def select_split(tracks: list[Track], split: str,
                 split_file: str | os.PathLike | None) -> list[Track]:
    """The tracks of one split.

    Args:
        tracks: all tracks of the dataset.
        split: a split name from the file, ``"all"``, or names joined by ``+``.
        split_file: JSON split file, or ``None`` (hold-out ``train``/``valid``, ``all``).

    Raises:
        DatasetError: unknown split name, or a split with no tracks.
    """
    if "+" in split:
        names = {t.name for part in split.split("+")
                 for t in select_split(tracks, part, split_file)}
        return [t for t in tracks if t.name in names]
    if split == "all":
        chosen = list(tracks)
    elif split_file is None and split in HOLDOUT:
        chosen = [t for i, t in enumerate(sorted(tracks, key=lambda t: t.name))
                  if (i % HOLDOUT_EVERY == 0) == (split == "valid")]
    else:
        if split_file is None:
            raise DatasetError(f"split {split!r} asked for, but the dataset has no split "
                               "file (pass --split-file, or use train, valid or all)")
        rules = _read(split_file)
        if split not in rules:
            raise DatasetError(f"{split_file}: no split {split!r} (it has {', '.join(rules)})")
        chosen = [t for t in tracks if _split_of(t.name, rules) == split]
    if not chosen:
        raise DatasetError(f"split {split!r} holds no tracks"
                           + (f" (split file {split_file})" if split_file else ""))
    return chosen


def _read(split_file: str | os.PathLike) -> dict[str, list[str]]:
    try:
        rules = json.loads(Path(split_file).read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{split_file}: not a split file ({error})") from None
    return rules


def _split_of(name: str, rules: dict[str, list[str]]) -> str | None:
    for split, patterns in rules.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return split
    return None
