"""Evaluation: BSS-Eval scores of a separation method on a dataset split.

For every clip of a split (:func:`evaluate`):

1. the two sources are decoded at their files' own rate (a model or method resamples what
   it needs internally): ``pairs`` (MIR-1K) as mono clips (voice + accompaniment, the right
   and left channels); MUSDB-style folders (``musdb``/``stems`` layouts) with their
   channels, the stereo images;
2. a method estimates both sources from the mixture (:func:`estimate`): the model, the
   oracle masks ``ibm``/``irm``, the unprocessed ``mixture``, or the training-free ``repet``
   (REPET-SIM) baseline; the estimates always sum to the mixture; a stereo mixture is
   separated once, and its mono estimates are the channel means;
3. BSS-Eval v3 (``mir_eval.separation.bss_eval_sources``, no permutation) scores both
   mono estimates: SDR, SIR, SAR in dB, and NSDR = SDR(estimate) - SDR(mixture as the
   estimate) (:func:`clip_metrics`); the stereo images of MUSDB-style folders also get the
   SiSEC 2018 SDR: BSS-Eval v4 over 1-second frames, their median (:func:`museval_sdr`,
   by the ``museval`` package where it is installed).

The scores are pooled by :func:`global_metrics`: GNSDR/GSIR/GSAR (means weighted by clip
length), plain means and medians. Separation runs in the calling process (the model is
loaded once); scoring, the slow part, runs in a process pool.

This module imports neither TensorFlow nor mir_eval at import time, so that pool workers
start quickly; metrics are computed in float64 by mir_eval.
"""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import csv
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .datasets import DatasetError, Track, discover, select_split
from .datasets.splits import split_file_for
from .options import METHODS  # the separation methods :func:`estimate` knows

#: The two sources, in the order of every ``(2, ...)`` array here.
SOURCES = ("voice", "accompaniment")
#: Per-clip metrics of each source, in dB.
METRICS = ("SDR", "SIR", "SAR", "NSDR")
#: Layouts whose stereo images get a museval-style framewise SDR.
MUSDB_LAYOUTS = ("musdb", "stems")
#: STFT settings of the reference methods when no model is given: rate, n_fft, win, hop.
DEFAULT_STFT = (16000, 1024, 1024, 256)
#: REPET-SIM: similarity window (s), voice margin and mask power (librosa's gallery).
REPET_WIDTH_S, REPET_MARGIN, REPET_POWER = 2.0, 10.0, 2.0
PLOT_HINT = "matplotlib is needed for --plot: pip install keras-svs[plot]"

_thread_limits = None  # keeps a pool worker's BLAS thread limit alive


# -- metrics ------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_mir_eval() -> Iterator[None]:
    """Silence mir_eval's deprecation warning (mir_eval.separation is deprecated in 0.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", module=r"mir_eval.*")
        yield


def bss_metrics(references: np.ndarray, estimates: np.ndarray) -> dict[str, np.ndarray]:
    """BSS-Eval v3 source metrics, estimate ``j`` scored against reference ``j``.

    ``mir_eval.separation.bss_eval_sources`` with ``compute_permutation=False``
    (512-tap distortion filters).

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
        voice, accompaniment: the references, float ``(samples,)``.
        voice_estimate, accompaniment_estimate: float ``(samples,)``.

    Returns:
        ``{"voice": {"SDR", "SIR", "SAR", "NSDR"}, "accompaniment": {...}}`` in dB.
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
    """museval's ``metrics`` module, or None. Loaded from its file: ``import museval``
    imports ``musdb``/``stempeg``, which refuse to load without ffmpeg, and the metrics
    need neither."""
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


_MUSEVAL = None


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


def _score_clip(job: dict[str, Any]) -> dict[str, Any]:
    """Score one clip (runs in a pool worker): the ``per_clip`` entry of :func:`evaluate`.

    ``job`` holds ``name``, ``rate``, ``references``/``estimates`` float32 ``(2, samples)``
    and, for MUSDB-style tracks, ``images``/``image_estimates`` ``(2, channels, samples)``.
    """
    refs, ests = job["references"], job["estimates"]
    try:
        entry = {"name": job["name"], "samples": int(refs.shape[-1]),
                 "seconds": refs.shape[-1] / job["rate"], "rate": int(job["rate"])}
        entry.update(clip_metrics(refs[0], refs[1], ests[0], ests[1]))
        if job.get("images") is not None:
            v4 = museval_sdr(job["images"], job["image_estimates"], job["rate"])
            for j, source in enumerate(SOURCES):
                entry[source]["museval_SDR"] = float(v4[j])
    except ValueError as error:
        raise ValueError(f"{job['name']}: BSS-Eval failed ({error})") from None
    return entry


def global_metrics(per_clip: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Pool per-clip scores.

    For each source: ``GNSDR``, ``GSIR``, ``GSAR``, ``GSDR`` (means weighted by the clip
    lengths ``samples``), ``<metric>_mean`` and ``<metric>_median`` for SDR, SIR, SAR and
    NSDR (unweighted), and ``museval_SDR`` (median over clips) when the clips have it.
    Non-finite values (an infinite SIR of a perfect estimate) are left out.

    Args:
        per_clip: entries with ``samples`` and ``{source: {metric: dB}}``, as from
            :func:`evaluate`.

    Returns:
        ``{"voice": {...}, "accompaniment": {...}}``; NaN where no value counts.
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


# -- estimates ----------------------------------------------------------------------------
def default_config():
    """STFT settings of the reference methods without a model: 16 kHz, 1024/1024/256."""
    from .spectral import StftConfig

    return StftConfig(*DEFAULT_STFT)


def estimate(method: str, voice: np.ndarray, accompaniment: np.ndarray, sr: int, config,
             separator=None) -> tuple[np.ndarray, np.ndarray]:
    """Estimate both sources of the mixture ``voice + accompaniment``.

    Methods: ``model`` (``separator.separate``), ``ibm`` (oracle mask ``|V| > |A|``),
    ``irm`` (oracle mask ``|V|^2 / (|V|^2 + |A|^2)``), ``mixture`` (the mixture as both
    estimates), ``repet`` (REPET-SIM, see :func:`repet_mask`). Masks are applied to the
    mixture's STFT at ``config``'s settings (carried to ``sr``); the accompaniment estimate
    is the mixture minus the voice estimate.

    Args:
        method: one of :data:`METHODS`.
        voice, accompaniment: float ``(..., samples)`` at ``sr`` Hz (any leading shape:
            ``(samples,)`` mono, ``(channels, samples)`` stereo, each channel separately).
        sr: sample rate in Hz.
        config: a :class:`keras_svs.spectral.StftConfig` for the mask methods.
        separator: a :class:`keras_svs.separation.Separator`, for ``model``.

    Returns:
        ``(voice_estimate, accompaniment_estimate)``: float32, the input's shape.
    """
    voice = np.asarray(voice, np.float32)
    accompaniment = np.asarray(accompaniment, np.float32)
    if voice.shape != accompaniment.shape:
        raise ValueError(f"voice {voice.shape} and accompaniment {accompaniment.shape} "
                         "differ in shape")
    mixture = voice + accompaniment
    if method == "mixture":
        return mixture.copy(), mixture.copy()
    if method == "model":
        if separator is None:
            raise ValueError("method 'model' needs a separator")
        stems = separator.separate(mixture, sr)
        return (np.asarray(stems["vocals"], np.float32),
                np.asarray(stems["accompaniment"], np.float32))
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")

    from . import spectral

    cfg = config.at_rate(sr)
    samples = voice.shape[-1]
    spectrum = spectral.stft(mixture, cfg).numpy()  # complex64 (..., frames, bins)
    if method == "repet":
        mask = repet_mask(np.abs(spectrum), cfg)
    else:
        v = spectral.magnitude(spectral.stft(voice, cfg))
        a = spectral.magnitude(spectral.stft(accompaniment, cfg))
        mask = (spectral.ibm(v, a) if method == "ibm" else spectral.irm(v, a)).numpy()
    voice_est = spectral.istft(spectrum * mask.astype(np.float32), cfg, samples).numpy()
    voice_est = voice_est.astype(np.float32)
    return voice_est, mixture - voice_est


def repet_mask(magnitude: np.ndarray, config) -> np.ndarray:
    """REPET-SIM voice mask (librosa's vocal-separation gallery example).

    The repeating background of each frame is the median of its most similar frames
    (``librosa.decompose.nn_filter``, cosine metric, frames at least ~2 s apart), capped
    at the mixture; the voice mask is ``librosa.util.softmask(|X| - B, 10 * B, power=2)``.

    Args:
        magnitude: mixture magnitudes ``(..., frames, bins)``.
        config: their STFT settings (for the 2-second width in frames).

    Returns:
        float32 ``(..., frames, bins)`` in [0, 1].
    """
    import librosa

    mag = np.asarray(magnitude, np.float32)
    flat = mag.reshape(-1, *mag.shape[-2:])
    frames = mag.shape[-2]
    width = min(int(round(REPET_WIDTH_S * config.sample_rate / config.hop_length)),
                (frames - 1) // 2 - 1)
    masks = []
    for spec in flat:
        full = spec.T.astype(np.float64)  # (bins, frames), librosa's layout
        if width >= 1:
            background = librosa.decompose.nn_filter(full, aggregate=np.median,
                                                     metric="cosine", width=width)
        else:  # too short to look for repetitions: the median frame
            background = np.repeat(np.median(full, axis=1, keepdims=True), frames, axis=1)
        background = np.minimum(full, background)
        mask = librosa.util.softmask(full - background, REPET_MARGIN * background,
                                     power=REPET_POWER)
        masks.append(mask.T)
    return np.stack(masks).reshape(mag.shape).astype(np.float32)


# -- the evaluation loop ------------------------------------------------------------------
def _audible(x: np.ndarray, what: str, warn) -> np.ndarray:
    """BSS-Eval cannot score an all-zero estimate: replace one by faint noise (-180 dBFS),
    which scores as the failure it is, with a warning."""
    if np.any(x):
        return x
    warn(f"Warning: {what} is silent; scored as faint noise")
    return (np.random.default_rng(0).standard_normal(x.shape) * 1e-9).astype(np.float32)


def _worker_init() -> None:
    """Pool worker start-up: one BLAS thread per worker (the workers are the parallelism)."""
    global _thread_limits
    warnings.simplefilter("ignore", FutureWarning)
    try:
        from threadpoolctl import threadpool_limits

        _thread_limits = threadpool_limits(limits=1)
    except Exception:  # pragma: no cover - threadpoolctl missing: BLAS defaults
        pass


def _tracks(data: str | os.PathLike, split: str, split_file: str | os.PathLike | None,
            limit: int | None) -> tuple[list[Track], Path | None]:
    tracks = discover(data)
    split_file = split_file or split_file_for(data)
    chosen = select_split(tracks, split, split_file)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        chosen = chosen[:limit]
    return chosen, (Path(split_file) if split_file else None)


def _scoring_jobs(tracks: list[Track], method: str, config, separator,
                  warn) -> Iterable[dict[str, Any]]:
    """Decode and separate each track at its own rate (in this process): the pool's
    scoring jobs."""
    for track in tracks:
        musdb = track.layout in MUSDB_LAYOUTS
        voice, accompaniment, rate = track.load(sample_rate=None, mono=not musdb)
        # (channels, samples); MUSDB-style: the stereo images for the v4 SDR, separated
        # once, and the mono clip is their channel mean (what ``load(mono=True)`` gives)
        images = np.stack([voice, accompaniment]) if musdb else None
        voice, accompaniment = voice.mean(axis=0), accompaniment.mean(axis=0)
        silent = [s for s, x in zip(SOURCES, (voice, accompaniment)) if not np.any(x)]
        if silent:
            warn(f"Warning: {track.name}: skipped, its {' and '.join(silent)} is all zeros "
                 "(BSS-Eval needs both sources)")
            yield {"name": track.name, "skipped": True}
            continue
        if images is not None:
            iv, ia = estimate(method, images[0], images[1], rate, config, separator)
            v_est, a_est = iv.mean(axis=0), ia.mean(axis=0)
        else:
            v_est, a_est = estimate(method, voice, accompaniment, rate, config, separator)
        job = {"name": track.name, "rate": rate,
               "references": np.stack([voice, accompaniment]),
               "estimates": np.stack([_audible(v_est, f"{track.name}: the voice estimate", warn),
                                      _audible(a_est, f"{track.name}: the accompaniment "
                                                      "estimate", warn)])}
        if images is not None:
            job["images"] = images
            job["image_estimates"] = np.stack([iv, ia])
        yield job


def evaluate(data: str | os.PathLike, split: str, method: str,
             model: str | os.PathLike | None = None, jobs: int | None = None,
             split_file: str | os.PathLike | None = None, mask: str | None = None,
             threshold: float | None = None, mode: str = "average",
             limit: int | None = None, progress: bool = True,
             precision: str = "float32", separator=None,
             extension: str | None = None) -> dict[str, Any]:
    """Score a separation method on a dataset split with BSS-Eval v3.

    Args:
        data: dataset root (any layout :func:`keras_svs.datasets.discover` knows).
        split: split name from the split file, or ``"all"``.
        method: one of :data:`METHODS`.
        model: a ``.keras`` model. For ``model`` the separator (default: the shipped
            model); for the other methods only its sample rate and STFT settings (default:
            16 kHz, :data:`DEFAULT_STFT`).
        jobs: scoring processes (default ``os.cpu_count()``; 1 scores in this process).
        split_file: JSON split file (default: the dataset's, see ``split_file_for``).
        mask, threshold, mode, precision, extension: the
            :class:`~keras_svs.separation.Separator`'s, for ``model``.
        limit: score only the split's first ``limit`` clips (quick checks).
        progress: show a progress bar on stderr.
        separator: for ``model``, a separator to use instead of one built from ``model``:
            any object with ``config`` (its :class:`~keras_svs.spectral.StftConfig`) and
            ``separate(waveform, rate) -> {"vocals", "accompaniment"}`` (a peer system
            scored by the same code, as ``benchmarks/vs_spleeter.py`` does).

    Returns:
        ``{"method", "model", "split", "clips", "seconds", "voice": {"GNSDR", "GSIR",
        "GSAR", ...}, "accompaniment": {...}, "skipped", "per_clip": [{"name", "samples",
        "seconds", "voice": {"SDR", "SIR", "SAR", "NSDR"[, "museval_SDR"]},
        "accompaniment": {...}}], ...}``: metrics in dB, ``seconds`` the scored audio.

    Raises:
        DatasetError: no such split, an empty split, an unreadable or inconsistent stem
            (the message names the file), or no clip that could be scored.
        ValueError: an unknown method or a bad model file.
    """
    from tqdm import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    started = time.perf_counter()
    tracks, split_path = _tracks(data, split, split_file, limit)

    model_path = None
    if method == "model" and separator is not None:
        model_path = Path(model) if model is not None else None
        config = separator.config
    elif method == "model":
        from .separation import Separator, default_model_path

        model_path = Path(model) if model is not None else default_model_path()
        separator = Separator(model_path, mask=mask, threshold=threshold, mode=mode,
                              precision=precision, extension=extension)
        config = separator.config
    elif model is not None:
        from .models import load_model, stft_config

        model_path = Path(model)
        config = stft_config(load_model(model_path))
    else:
        config = default_config()

    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    jobs = min(jobs, len(tracks))
    bar = tqdm(total=len(tracks), desc=f"evaluate {method}", unit="clip", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    warn = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
    results: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []

    def record(entry: dict[str, Any]) -> None:
        results[entry["name"]] = entry
        bar.update(1)

    work = _scoring_jobs(tracks, method, config, separator, warn)
    try:
        if jobs == 1:
            for job in work:
                if job.get("skipped"):
                    skipped.append(job["name"])
                    bar.update(1)
                else:
                    record(_score_clip(job))
        else:
            context = multiprocessing.get_context("spawn")  # never fork a TensorFlow process
            with futures.ProcessPoolExecutor(jobs, mp_context=context,
                                             initializer=_worker_init) as pool:
                pending: set[futures.Future] = set()
                try:
                    for job in work:
                        if job.get("skipped"):
                            skipped.append(job["name"])
                            bar.update(1)
                            continue
                        while len(pending) >= 2 * jobs:  # bound the audio held in memory
                            done, pending = futures.wait(
                                pending, return_when=futures.FIRST_COMPLETED)
                            for future in done:
                                record(future.result())
                        pending.add(pool.submit(_score_clip, job))
                    for future in futures.as_completed(pending):
                        record(future.result())
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()

    per_clip = [results[t.name] for t in tracks if t.name in results]
    if not per_clip:
        raise DatasetError(f"no clip of split {split!r} could be scored "
                           f"({len(skipped)} skipped: a silent voice or accompaniment)")
    summary = global_metrics(per_clip)
    rates = sorted({clip["rate"] for clip in per_clip})  # the files' own
    out: dict[str, Any] = {
        "method": method,
        "model": str(model_path) if model_path is not None else None,
        "split": split,
        "clips": len(per_clip),
        "seconds": float(sum(clip["seconds"] for clip in per_clip)),
        "voice": summary["voice"],
        "accompaniment": summary["accompaniment"],
        "skipped": len(skipped),
        "skipped_clips": skipped,
        "data": str(data),
        "split_file": str(split_path) if split_path else None,
        "layouts": sorted({t.layout for t in tracks}),
        "sample_rate": rates[0] if len(rates) == 1 else rates,
        "stft": {"sample_rate": config.sample_rate, "n_fft": config.n_fft,
                 "win_length": config.win_length, "hop_length": config.hop_length},
        "metrics": "BSS-Eval v3 (mir_eval.separation.bss_eval_sources, mono, 512-tap "
                   "filters); NSDR = SDR - SDR(mixture); G* = length-weighted means",
        "museval_scorer": museval_scorer() if "museval_SDR" in summary["voice"] else None,
        "elapsed_s": time.perf_counter() - started,
        "per_clip": per_clip,
    }
    if separator is not None:
        out.update({key: getattr(separator, key) for key in
                    ("mask", "threshold", "mode", "precision", "extension")
                    if hasattr(separator, key)})
    return out


# -- reports ------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become ``null``, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`evaluate`'s result as JSON (non-finite numbers as ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")
    return path


def csv_columns(result: dict[str, Any]) -> list[str]:
    """Column names of :func:`write_csv`: name, samples, seconds, ``<source>_<metric>``."""
    metrics = list(METRICS)
    if result["per_clip"] and "museval_SDR" in result["per_clip"][0]["voice"]:
        metrics.append("museval_SDR")
    return ["name", "samples", "seconds"] + [f"{s}_{m}" for s in SOURCES for m in metrics]


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write one CSV row per scored clip (metrics in dB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = csv_columns(result)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for clip in result["per_clip"]:
            row = [clip["name"], clip["samples"], f"{clip['seconds']:.3f}"]
            for column in columns[3:]:
                source, metric = column.split("_", 1)
                row.append(f"{clip[source][metric]:.4f}")
            writer.writerow(row)
    return path


def format_table(result: dict[str, Any]) -> str:
    """A short human summary: clips, audio and the G-metrics of both sources (dB)."""
    museval = "museval_SDR" in result["voice"]
    head = f"{'source':<15}{'GNSDR':>8}{'GSIR':>8}{'GSAR':>8}{'median NSDR':>13}"
    head += f"{'museval SDR':>13}" if museval else ""
    lines = [f"{result['method']} on {result['split']}: {result['clips']} clips, "
             f"{result['seconds'] / 60:.1f} min of audio"
             + (f", {result['skipped']} skipped" if result.get("skipped") else ""), head]
    for source in SOURCES:
        s = result[source]
        line = (f"{source:<15}{s['GNSDR']:>8.2f}{s['GSIR']:>8.2f}{s['GSAR']:>8.2f}"
                f"{s['NSDR_median']:>13.2f}")
        line += f"{s['museval_SDR']:>13.2f}" if museval else ""
        lines.append(line)
    return "\n".join(lines)


def require_matplotlib() -> None:
    """Raise ``ImportError`` with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(PLOT_HINT) from None


def plot_nsdr(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Box plot of the per-clip voice (and accompaniment) NSDR, written to ``path``."""
    require_matplotlib()
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [[c[s]["NSDR"] for c in result["per_clip"] if math.isfinite(c[s]["NSDR"])]
            for s in SOURCES]
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.subplots()
    axes.boxplot(data, showmeans=True)
    axes.set_xticks([1, 2], list(SOURCES))
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_ylabel("NSDR (dB)")
    axes.set_title(f"{result['method']} on {result['split']} ({result['clips']} clips)")
    figure.savefig(path, dpi=120)
    return path
