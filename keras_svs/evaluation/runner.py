"""The evaluation loop: decode and separate a split's clips in this process, score them
with BSS-Eval in a pool of worker processes, pool the scores.

The workers are spawned (never forked from a process that may hold TensorFlow); this
module imports neither TensorFlow nor mir_eval at import time, so that they start quickly.
"""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..datasets import DatasetError, Track, discover, select_split
from ..datasets.splits import split_file_for
from .methods import METHODS, default_config, estimate
from .metrics import SOURCES, audible, clip_metrics, global_metrics, museval_scorer, \
    museval_sdr

#: Layouts whose stereo images get a museval-style framewise SDR.
MUSDB_LAYOUTS = ("musdb", "stems")

_thread_limits = None  # keeps a pool worker's BLAS thread limit alive


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
    """The split's tracks (its first ``limit`` when given) and the split file used.

    Raises:
        DatasetError: as :func:`keras_svs.datasets.select_split`.
        ValueError: ``limit`` below 1.
    """
    tracks = discover(data)
    split_file = split_file or split_file_for(data)
    chosen = select_split(tracks, split, split_file)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        chosen = chosen[:limit]
    return chosen, (Path(split_file) if split_file else None)


def _score_clip(job: dict[str, Any]) -> dict[str, Any]:
    """Score one clip (runs in a pool worker): the ``per_clip`` entry of :func:`evaluate`.

    ``job`` holds ``name``, ``rate`` (Hz), ``references``/``estimates`` float32
    ``(2, samples)`` and, for MUSDB-style tracks, ``images``/``image_estimates``
    ``(2, channels, samples)``.

    Raises:
        ValueError: BSS-Eval refused the clip (the message names it).
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


def _scoring_jobs(tracks: list[Track], method: str, config, separator,
                  warn: Callable[[str], Any]) -> Iterable[dict[str, Any]]:
    """Decode and separate each track at its own rate (in this process): the pool's
    scoring jobs (see :func:`_score_clip`), or ``{"name", "skipped": True}`` for a track
    with an all-zero source."""
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
               "estimates": np.stack([audible(v_est, f"{track.name}: the voice estimate", warn),
                                      audible(a_est, f"{track.name}: the accompaniment "
                                                      "estimate", warn)])}
        if images is not None:
            job["images"] = images
            job["image_estimates"] = np.stack([iv, ia])
        yield job


def _method_setup(method: str, model, separator, **separator_options):
    """``(model_path, separator, config)`` of a method: the separator for ``model`` (the
    given one, else one built from ``model`` or the shipped model with
    ``separator_options``), and the STFT settings of the mask methods (the model's when
    given, else :func:`default_config`).

    Raises:
        ValueError: a bad model file.
    """
    model_path = None
    if method == "model" and separator is not None:
        model_path = Path(model) if model is not None else None
        config = separator.config
    elif method == "model":
        from ..separation import Separator, default_model_path

        model_path = Path(model) if model is not None else default_model_path()
        separator = Separator(model_path, **separator_options)
        config = separator.config
    elif model is not None:
        from ..models import load_model, stft_config

        model_path = Path(model)
        config = stft_config(load_model(model_path))
    else:
        config = default_config()
    return model_path, separator, config


def _score_in_pool(work: Iterable[dict[str, Any]], jobs: int,
                   record: Callable[[dict[str, Any]], None]) -> None:
    """Score ``work`` in ``jobs`` spawned processes, passing each entry to ``record`` as
    it completes; at most ``2 * jobs`` clips wait at a time (bounds the audio held in
    memory). On any error the queued clips are cancelled."""
    context = multiprocessing.get_context("spawn")  # never fork a TensorFlow process
    with futures.ProcessPoolExecutor(jobs, mp_context=context,
                                     initializer=_worker_init) as pool:
        pending: set[futures.Future] = set()
        try:
            for job in work:
                while len(pending) >= 2 * jobs:
                    done, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                    for future in done:
                        record(future.result())
                pending.add(pool.submit(_score_clip, job))
            for future in futures.as_completed(pending):
                record(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _score_all(work: Iterable[dict[str, Any]], jobs: int,
               advance: Callable[[int], Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Score every job of :func:`_scoring_jobs` (in this process when ``jobs`` is 1),
    calling ``advance(1)`` per clip done or skipped.

    Returns:
        ``({name: per_clip entry}, [skipped names])``.
    """
    results: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []

    def record(entry: dict[str, Any]) -> None:
        results[entry["name"]] = entry
        advance(1)

    def to_score() -> Iterable[dict[str, Any]]:
        for job in work:
            if job.get("skipped"):
                skipped.append(job["name"])
                advance(1)
            else:
                yield job

    if jobs == 1:
        for job in to_score():
            record(_score_clip(job))
    else:
        _score_in_pool(to_score(), jobs, record)
    return results, skipped


def _result(*, method: str, model_path: Path | None, split: str, data, split_path,
            tracks: list[Track], per_clip: list[dict[str, Any]], skipped: list[str], config,
            separator, started: float) -> dict[str, Any]:
    """:func:`evaluate`'s result dict from its scored clips."""
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
                    ("mask", "threshold", "mode", "precision", "extension", "runtime")
                    if hasattr(separator, key)})
    return out


def evaluate(data: str | os.PathLike, split: str, method: str,
             model: str | os.PathLike | None = None, jobs: int | None = None,
             split_file: str | os.PathLike | None = None, mask: str | None = None,
             threshold: float | None = None, mode: str = "average",
             limit: int | None = None, progress: bool = True,
             precision: str = "float32", separator=None,
             extension: str | None = None, runtime: str = "auto") -> dict[str, Any]:
    """Score a separation method on a dataset split with BSS-Eval v3.

    Args:
        data: dataset root (any layout :func:`keras_svs.datasets.discover` knows).
        split: split name from the split file, or ``"all"``.
        method: one of :data:`METHODS`.
        model: a ``.keras`` model. For ``model`` the separator (default: the shipped
            model); for the other methods only its sample rate and STFT settings (default:
            16 kHz, :data:`~keras_svs.evaluation.methods.DEFAULT_STFT`).
        jobs: scoring processes (default ``os.cpu_count()``; 1 scores in this process).
        split_file: JSON split file (default: the dataset's, see ``split_file_for``).
        mask, threshold, mode, precision, extension, runtime: the
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
        ValueError: an unknown method, a bad model file, ``jobs`` or ``limit`` below 1.
    """
    from tqdm import tqdm

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    started = time.perf_counter()
    tracks, split_path = _tracks(data, split, split_file, limit)
    model_path, separator, config = _method_setup(
        method, model, separator, mask=mask, threshold=threshold, mode=mode,
        precision=precision, extension=extension, runtime=runtime)

    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    jobs = min(jobs, len(tracks))
    bar = tqdm(total=len(tracks), desc=f"evaluate {method}", unit="clip", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    warn = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
    try:
        results, skipped = _score_all(_scoring_jobs(tracks, method, config, separator, warn),
                                      jobs, bar.update)
    finally:
        bar.close()

    per_clip = [results[t.name] for t in tracks if t.name in results]
    if not per_clip:
        raise DatasetError(f"no clip of split {split!r} could be scored "
                           f"({len(skipped)} skipped: a silent voice or accompaniment)")
    return _result(method=method, model_path=model_path, split=split, data=data,
                   split_path=split_path, tracks=tracks, per_clip=per_clip, skipped=skipped,
                   config=config, separator=separator, started=started)
