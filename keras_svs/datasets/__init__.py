"""Find the tracks of a dataset on disk, whatever its layout, and pick a split.

Layouts (see :func:`discover`):

* ``pairs``: stereo files whose left channel is the accompaniment and right channel the
  voice (MIR-1K, iKala);
* ``musdb``: one folder per track with ``vocals.*`` and other stems (MUSDB18-HQ, DSD100);
  the accompaniment is the sum of the non-vocal stems;
* ``stems``: one folder per track with ``vocals.*`` and ``accompaniment.*``.
"""
from __future__ import annotations

from .splits import select_split, split_names
from .tracks import AUDIO_EXTENSIONS, DatasetError, Track, discover

__all__ = ["AUDIO_EXTENSIONS", "DatasetError", "Track", "discover", "select_split",
           "split_names"]
