"""BSS-Eval scores: v3 source metrics of mono clips, the SiSEC 2018 (v4) SDR of stereo
images, and their pooling over a split.

mir_eval and museval are imported by the functions that use them, never at import time;
every metric is computed in float64 and given in dB.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

#: The two sources, in the order of every ``(2, ...)`` array here.
SOURCES = ("voice", "accompaniment")
#: Per-clip metrics of each source, in dB.
METRICS = ("SDR", "SIR", "SAR", "NSDR")

_MUSEVAL = None  # museval's metrics module once looked for (False: not installed)


@contextlib.contextmanager
def _quiet_mir_eval() -> Iterator[None]:
    """Silence mir_eval's deprecation warning (mir_eval.separation is deprecated in 0.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", module=r"mir_eval.*")
        yield


def audible(x: np.ndarray, what: str = "an estimate",
             warn: Callable[[str], Any] | None = None) -> np.ndarray:
    """BSS-Eval cannot score an all-zero estimate: replace one by faint noise (-180 dBFS),
    which scores as the failure it is.

    Args:
        x: an estimate, float ``(..., samples)``.
        what: its name in the warning.
        warn: called with a one-line warning when ``x`` is replaced; None: no warning.

    Returns:
        ``x`` itself when any sample is non-zero, else float32 noise of ``x``'s shape
        (standard deviation 1e-9, the same noise on every call).
    """
    if np.any(x):
        return x
    if warn is not None:
        warn(f"Warning: {what} is silent; scored as faint noise")
    return (np.random.default_rng(0).standard_normal(x.shape) * 1e-9).astype(np.float32)


def bss_metrics(references: np.ndarray, estimates: np.ndarray) -> dict[str, np.ndarray]:
    """BSS-Eval v3 source metrics, estimate ``j`` scored against reference ``j``.

    ``mir_eval.separation.bss_eval_sources`` with ``compute_permutation=False``
    (512-tap distortion filters), on float64 copies of the inputs.

    Args:
        references: float ``(sources, samples)``, no source all zeros.
        estimates: float ``(sources, samples)``, no source all zeros.

    Returns:
        ``{"SDR": ..., "SIR": ..., "SAR": ...}``, each float64 ``(sources,)`` in dB.

    Raises:
        ValueError: shapes differ, or a reference or estimate is all zeros (mir_eval).
    """
    with _quiet_mir_eval():
        import mir_eval.separation

        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
            np.asarray(references, np.float64), np.asarray(estimates, np.float64),
            compute_permutation=False)
    return {"SDR": np.asarray(sdr, np.float64), "SIR": np.asarray(sir, np.float64),
            "SAR": np.asarray(sar, np.float64)}


def clip_metrics(voice: np.ndarray, accompaniment: np.ndarray, voice_estimate: np.ndarray,
                 accompaniment_estimate: np.ndarray) -> dict[str, dict[str, float]]:
    """SDR, SIR, SAR and NSDR of both estimates of one mono clip.

    NSDR is the SDR gain over the unprocessed mixture: SDR(estimate) minus the SDR of
    ``voice + accompaniment`` used as the estimate of the same source.

    Args:
        voice, accompaniment: the references, float ``(samples,)``, neither all zeros.
        voice_estimate, accompaniment_estimate: float ``(samples,)``, neither all zeros.

    Returns:
        ``{"voice": {"SDR", "SIR", "SAR", "NSDR"}, "accompaniment": {...}}`` in dB.

    Raises:
        ValueError: as :func:`bss_metrics`.
    """
    mixture = np.asarray(voice) + np.asarray(accompaniment)  # in the inputs' precision,
    references = np.stack([voice, accompaniment])             # as estimate("mixture") does
    estimates = np.stack([voice_estimate, accompaniment_estimate])
    unprocessed = np.stack([mixture, mixture])
    baseline = bss_metrics(references, unprocessed)
    # the `mixture` method's estimates are the baseline itself: score them once
    same = estimates.shape == unprocessed.shape and np.array_equal(estimates, unprocessed)
    scores = dict(baseline) if same else bss_metrics(references, estimates)
    scores["NSDR"] = scores["SDR"] - baseline["SDR"]
    return {source: {m: float(scores[m][j]) for m in METRICS}
            for j, source in enumerate(SOURCES)}


def museval_scorer() -> str:
    """What :func:`museval_sdr` scores with: ``"museval <version> v4"`` where the
    ``museval`` package is installed (``pip install keras-svs[bench]``), else
    ``"mir_eval framewise"`` (its approximation)."""
    metrics = _museval_metrics()
    return f"museval {metrics.VERSION} v4" if metrics is not None else "mir_eval framewise"


def _museval_metrics():
    """museval's ``metrics`` module (with ``VERSION``, the package's version), or None.

    Loaded from its file: ``import museval`` imports ``musdb``/``stempeg``, which refuse
    to load without ffmpeg, and the metrics need neither. Looked for once per process.
    """
    global _MUSEVAL
    if _MUSEVAL is None:
        import importlib.metadata
        import importlib.util

        _MUSEVAL = False
        spec = importlib.util.find_spec("museval")
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
            module_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            module.VERSION = importlib.metadata.version("museval")
            _MUSEVAL = module
    return _MUSEVAL or None


def museval_sdr(references: np.ndarray, estimates: np.ndarray,
                sample_rate: int) -> np.ndarray:
    """SiSEC 2018 (museval v4) SDR of stereo images: the median over 1-second frames.

    With the ``museval`` package: ``museval.metrics.bss_eval`` as ``museval.evaluate``
    calls it (window = hop = 1 s, distortion filters fitted once per track: v4). Without
    it: ``mir_eval.separation.bss_eval_images_framewise`` with the same frames, which fits
    the filters per frame, so the numbers are close to museval's, not identical
    (:func:`museval_scorer` says which). Frames where a reference or an estimate is silent
    are NaN and left out.

    Args:
        references: float ``(sources, channels, samples)``.
        estimates: float ``(sources, channels, samples)``.
        sample_rate: Hz (sets the 1-second frame).

    Returns:
        float64 ``(sources,)``: median framewise SDR in dB (NaN where no frame counts).

    Raises:
        ValueError: shapes differ (museval / mir_eval).
    """
    refs = np.moveaxis(np.asarray(references, np.float64), -1, 1)  # (src, samples, ch)
    ests = np.moveaxis(np.asarray(estimates, np.float64), -1, 1)
    metrics = _museval_metrics()
    with _quiet_mir_eval(), np.errstate(divide="ignore", invalid="ignore"):
        if metrics is not None:
            sdr = metrics.bss_eval(refs, ests, compute_permutation=False,
                                   window=int(sample_rate), hop=int(sample_rate),
                                   framewise_filters=False, bsseval_sources_version=False)[0]
        else:
            import mir_eval.separation

            sdr = mir_eval.separation.bss_eval_images_framewise(
                refs, ests, window=int(sample_rate), hop=int(sample_rate))[0]
    sdr = np.asarray(sdr, np.float64).reshape(len(refs), -1)
    out = np.full(len(refs), np.nan)
    for j, frames in enumerate(sdr):
        frames = frames[np.isfinite(frames)]
        if frames.size:
            out[j] = np.median(frames)
    return out


def global_metrics(per_clip: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Pool per-clip scores.

    For each source: ``GNSDR``, ``GSIR``, ``GSAR``, ``GSDR`` (means weighted by the clip
    lengths ``samples``), ``<metric>_mean`` and ``<metric>_median`` for SDR, SIR, SAR and
    NSDR (unweighted), and ``museval_SDR`` (median over clips) when the clips have it.
    Non-finite values (an infinite SIR of a perfect estimate) are left out.

    Args:
        per_clip: entries with ``samples`` and ``{source: {metric: dB}}``, as from
            :func:`keras_svs.evaluation.evaluate`.

    Returns:
        ``{"voice": {...}, "accompaniment": {...}}`` in dB; NaN where no value counts.
    """
    weights = np.array([clip["samples"] for clip in per_clip], np.float64)
    out: dict[str, dict[str, float]] = {}
    for source in SOURCES:
        stats: dict[str, float] = {}
        for metric in METRICS:
            values = np.array([clip[source][metric] for clip in per_clip], np.float64)
            ok = np.isfinite(values)
            w = weights[ok]
            stats[f"G{metric}"] = (float(np.sum(values[ok] * w) / np.sum(w))
                                   if ok.any() and w.sum() > 0 else math.nan)
        for metric in METRICS:
            values = np.array([clip[source][metric] for clip in per_clip], np.float64)
            values = values[np.isfinite(values)]
            stats[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            stats[f"{metric}_median"] = float(np.median(values)) if values.size else math.nan
        if per_clip and all("museval_SDR" in clip[source] for clip in per_clip):
            values = np.array([clip[source]["museval_SDR"] for clip in per_clip], np.float64)
            values = values[np.isfinite(values)]
            stats["museval_SDR"] = float(np.median(values)) if values.size else math.nan
        out[source] = stats
    return out
