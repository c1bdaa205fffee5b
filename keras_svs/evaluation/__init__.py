"""Evaluation: BSS-Eval scores of a separation method on a dataset split.

For every clip of a split (:func:`evaluate`, :mod:`.runner`):

1. the two sources are decoded at their files' own rate (a model or method resamples what
   it needs internally): ``pairs`` (MIR-1K) as mono clips (voice + accompaniment, the right
   and left channels); MUSDB-style folders (``musdb``/``stems`` layouts) with their
   channels, the stereo images;
2. a method estimates both sources from the mixture (:func:`estimate`, :mod:`.methods`):
   the model, the oracle masks ``ibm``/``irm``, the unprocessed ``mixture``, or the
   training-free ``repet`` (REPET-SIM) baseline; the estimates always sum to the mixture;
   a stereo mixture is separated once, and its mono estimates are the channel means;
3. BSS-Eval v3 (``mir_eval.separation.bss_eval_sources``, no permutation) scores both
   mono estimates: SDR, SIR, SAR in dB, and NSDR = SDR(estimate) - SDR(mixture as the
   estimate) (:func:`clip_metrics`, :mod:`.metrics`); the stereo images of MUSDB-style
   folders also get the SiSEC 2018 SDR: BSS-Eval v4 over 1-second frames, their median
   (:func:`museval_sdr`, by the ``museval`` package where it is installed).

The scores are pooled by :func:`global_metrics`: GNSDR/GSIR/GSAR (means weighted by clip
length), plain means and medians; :mod:`.reports` writes them as JSON, CSV, a table or a
plot. Separation runs in the calling process (the model is loaded once); scoring, the slow
part, runs in a process pool. :mod:`.metrics` is also what validation during training
(:mod:`keras_svs.monitor`) scores with.

This package imports neither TensorFlow nor mir_eval at import time, so that pool workers
start quickly; metrics are computed in float64 by mir_eval.
"""
from __future__ import annotations

from ..datasets import DatasetError
from ..plotting import PLOT_HINT, require_matplotlib
from .methods import (DEFAULT_STFT, METHODS, REPET_MARGIN, REPET_POWER, REPET_WIDTH_S,
                      default_config, estimate, repet_mask)
from .metrics import (METRICS, SOURCES, audible, _museval_metrics, _quiet_mir_eval,
                      bss_metrics, clip_metrics, global_metrics, museval_scorer, museval_sdr)
from .reports import _finite, csv_columns, format_table, plot_nsdr, write_csv, write_json
from .runner import (MUSDB_LAYOUTS, _score_clip, _scoring_jobs, _tracks, _worker_init,
                     evaluate)

__all__ = [
    "SOURCES", "METRICS", "METHODS", "MUSDB_LAYOUTS", "DEFAULT_STFT", "REPET_WIDTH_S",
    "REPET_MARGIN", "REPET_POWER", "PLOT_HINT", "DatasetError",
    "bss_metrics", "clip_metrics", "museval_scorer", "museval_sdr", "global_metrics",
    "default_config", "estimate", "repet_mask", "evaluate",
    "write_json", "write_csv", "csv_columns", "format_table", "plot_nsdr",
    "require_matplotlib",
]
