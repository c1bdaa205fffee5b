"""The decode cache and the tf.data training stream (TensorFlow is imported only by the
functions that use it).

Data flow::

    tracks --decode (once, threads)--> DecodedAudio (model rate; optional HDF5 cache)
           --examples.PatchSampler (NumPy: crop, remix, gain, pitch, STFT, target)--> batches
           --training_dataset (tf.data: map threads, prefetch)--> model.fit

What a training example is (its crop, augmentation, target and weights) is defined once, in
:mod:`keras_svs.examples`, with the container of decoded sources (:class:`DecodedAudio`,
re-exported here); :func:`training_dataset` wraps it for the TensorFlow backend, and
:func:`keras_svs.batches.stream` for the others. This module imports :mod:`keras_svs.examples`,
never the reverse.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from . import spectral
from .datasets import DatasetError, Track
from .examples import DecodedAudio, PatchSampler, grid_patches, grid_steps
from .models.presets import Preset

if TYPE_CHECKING:
    import tensorflow as tf


def decode(tracks: list[Track], sample_rate: int, jobs: int | None = None,
           skip_bad: bool = False, channels: int = 1) -> DecodedAudio:
    """Decode and resample every track's two sources at ``sample_rate``.

    Args:
        tracks: the tracks to decode.
        sample_rate: rate in Hz of the decoded sources.
        jobs: decoding threads (default: one per CPU).
        skip_bad: skip a track that cannot be used (unreadable, stems of different
            lengths, non-finite samples) with a warning on stderr, instead of failing.
        channels: 1: the mono mix of each source; 2: its first two channels, a mono
            source (MIR-1K's) in both (what a stereo model sees of a mono song).

    Raises:
        DatasetError: naming the first track that cannot be used (or, with ``skip_bad``,
            when none can).
    """
    if not tracks:
        raise DatasetError("no tracks to decode")

    def load(track: Track):  # audio.read, under Track.load, refuses NaN/Inf samples too
        try:
            voice, accompaniment, _ = track.load(sample_rate, mono=channels == 1)
            return _with_channels(voice, channels), _with_channels(accompaniment, channels)
        except DatasetError as error:
            return error

    with ThreadPoolExecutor(jobs or os.cpu_count()) as pool:
        results = list(pool.map(load, tracks))
    kept, loaded = [], []
    for track, result in zip(tracks, results):
        if isinstance(result, DatasetError):
            if not skip_bad:
                raise DatasetError(f"{result} (track {track.name!r}; --skip-bad skips such "
                                   f"tracks)")
            warnings.warn(f"skipping track {track.name!r}: {result}", stacklevel=2)
            continue
        kept.append(track)
        loaded.append(result)
    if not kept:
        raise DatasetError(f"none of the {len(tracks)} tracks could be used")
    lengths = np.array([v.shape[-1] for v, _ in loaded], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return DecodedAudio([t.name for t in kept],
                        np.concatenate([v for v, _ in loaded], axis=-1),
                        np.concatenate([a for _, a in loaded], axis=-1),
                        starts, lengths, sample_rate)


def _with_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """``(c, samples)`` -> ``(samples,)`` for 1 channel, else ``(channels, samples)`` (the
    first ``channels``; a mono source repeated)."""
    if channels == 1:
        return x[0]
    if x.shape[0] == 1:
        return np.repeat(x, channels, axis=0)
    if x.shape[0] < channels:
        raise DatasetError(f"{x.shape[0]} channels, the model takes {channels}")
    return np.ascontiguousarray(x[:channels])


def concatenate(parts: list[DecodedAudio]) -> DecodedAudio:
    """One decode cache of several (same rate and channels), tracks in order.

    Raises:
        ValueError: the parts differ in rate or channels, or there are none.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    if len({(p.sample_rate, p.channels) for p in parts}) > 1:
        raise ValueError("decoded audio of different rates or channels cannot be joined")
    if len(parts) == 1:
        return parts[0]
    lengths = np.concatenate([p.lengths for p in parts])
    return DecodedAudio([n for p in parts for n in p.names],
                        np.concatenate([p.voice for p in parts], axis=-1),
                        np.concatenate([p.accompaniment for p in parts], axis=-1),
                        np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
                        lengths, parts[0].sample_rate)


def save_hdf5(decoded: DecodedAudio, path: str | os.PathLike,
              config: spectral.StftConfig | None = None) -> Path:
    """Write the decode cache to HDF5 (what ``keras-svs prepare`` writes).

    With ``config``, also stores each track's mixture magnitude ``|X|`` (float16,
    ``(frames, bins)``) and IBM (uint8) under ``spectra/<name>/`` for inspection and reuse.
    """
    import tensorflow as tf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["sample_rate"] = decoded.sample_rate
        f.create_dataset("names", data=np.array(decoded.names, dtype=object),
                         dtype=h5py.string_dtype())
        for key in ("voice", "accompaniment", "starts", "lengths"):
            f.create_dataset(key, data=getattr(decoded, key))
        if config is not None:
            f.attrs["stft"] = [config.sample_rate, config.n_fft, config.win_length,
                               config.hop_length]
            for i, name in enumerate(decoded.names):
                v, a = decoded.track(i)
                sv, sa = spectral.stft(v, config), spectral.stft(a, config)
                group = f.create_group(f"spectra/{name}")
                group["magnitude"] = spectral.magnitude(sv + sa).numpy().astype(np.float16)
                group["ibm"] = spectral.ibm(tf.abs(sv), tf.abs(sa)).numpy().astype(np.uint8)
    os.replace(tmp, path)
    return path


def prepare(data: str | os.PathLike, output: str | os.PathLike, preset: str = "small",
            splits: tuple[str, ...] = ("train", "valid"),
            split_file: str | os.PathLike | None = None) -> DecodedAudio:
    """Decode the tracks of ``splits`` of a dataset once, at ``preset``'s sample rate, and
    write them to the HDF5 cache ``output`` (:func:`save_hdf5`, with the preset's STFT):
    what ``keras-svs prepare`` does; ``keras-svs train --cache`` reads it.

    Args:
        data: the dataset root (any layout :func:`keras_svs.datasets.discover` knows).
        splits: split names of the split file (``all``: every track); a track in several
            is written once.
        split_file: the JSON split file; ``None``: the dataset's own.

    Returns:
        what was written.

    Raises:
        DatasetError: no tracks, an unknown split, or unreadable audio.
    """
    from .datasets import discover, select_split
    from .datasets.splits import split_file_for
    from .models.presets import get_preset

    config = get_preset(preset).stft
    tracks = discover(data)
    split_file = split_file or split_file_for(data)
    chosen = {t.name: t for s in splits for t in select_split(tracks, s, split_file)}
    decoded = decode(list(chosen.values()), config.sample_rate)
    save_hdf5(decoded, output, config)
    return decoded


def load_hdf5(path: str | os.PathLike, names: list[str] | None = None) -> DecodedAudio:
    """Read a decode cache written by :func:`save_hdf5`, optionally only some tracks."""
    with h5py.File(path, "r") as f:
        all_names = [n.decode() if isinstance(n, bytes) else n for n in f["names"][()]]
        starts, lengths = f["starts"][()], f["lengths"][()]
        keep = range(len(all_names)) if names is None else [
            all_names.index(n) for n in names if n in all_names]
        missing = set(names or []) - set(all_names)
        if missing:
            raise DatasetError(f"{path}: cache lacks {len(missing)} tracks, e.g. "
                               f"{sorted(missing)[0]!r}; run keras-svs prepare again")
        voice, accompaniment = f["voice"], f["accompaniment"]
        pieces = [(voice[..., starts[i]:starts[i] + lengths[i]],
                   accompaniment[..., starts[i]:starts[i] + lengths[i]]) for i in keep]
        rate = int(f.attrs["sample_rate"])
    sel_lengths = np.array([lengths[i] for i in keep], np.int64)
    return DecodedAudio([all_names[i] for i in keep],
                        np.concatenate([v for v, _ in pieces], axis=-1),
                        np.concatenate([a for _, a in pieces], axis=-1),
                        np.concatenate([[0], np.cumsum(sel_lengths)[:-1]]).astype(np.int64),
                        sel_lengths, rate)


def input_statistics(decoded: DecodedAudio, preset: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and std ``(bins,)`` of the network input (``log(|X| + eps)`` when the
    preset takes logs) over every frame of the mixtures."""
    from .models.layers import LOG_EPS

    total = np.zeros(preset.bins)
    total_sq = np.zeros(preset.bins)
    count = 0
    for i in range(len(decoded.names)):
        v, a = decoded.track(i)
        x = np.abs(spectral.stft_numpy(v + a, preset.stft))[..., :preset.bins]
        x = x.reshape(-1, preset.bins)  # the frames of every channel
        if preset.log_input:
            x = np.log(x + LOG_EPS)
        total += x.sum(0)
        total_sq += np.square(x, dtype=np.float64).sum(0)
        count += x.shape[0]
    mean = total / count
    return mean.astype(np.float32), np.sqrt(np.maximum(total_sq / count - mean ** 2, 0)).astype(
        np.float32)


def steps_per_epoch(decoded: DecodedAudio, preset: Preset, batch_size: int,
                    patch_hop: int | None = None) -> int:
    """Batches in one pass over the data (at least 1): in non-overlapping patches, or with
    ``patch_hop`` over the grid of a patch every ``patch_hop`` frames
    (:func:`keras_svs.examples.grid_patches`, :func:`keras_svs.examples.grid_steps`)."""
    if patch_hop:
        patches = len(grid_patches(decoded.lengths, preset, patch_hop)[0])
        return grid_steps(patches, batch_size)
    patches = int(decoded.lengths.sum()) // (preset.frames * preset.stft.hop_length)
    return max(1, patches // batch_size)


def training_dataset(sampler: PatchSampler, start: int = 0,
                     replicas: int = 1) -> tf.data.Dataset:
    """The TensorFlow backend's endless stream of training batches: batches ``start, start +
    1, ...`` of ``sampler``, the one definition of an example (:mod:`keras_svs.examples`),
    made by tf.data's map threads (``tf.numpy_function``) and prefetched.

    Args:
        sampler: the examples (its ``batch_size`` patches a batch).
        start: the first batch.
        replicas: split each batch into this many consecutive slices of ``batch_size /
            replicas`` patches, one element each (the per-replica batches of one input
            pipeline under a ``tf.distribute`` strategy, :mod:`keras_svs.distribute`).

    Returns:
        ``tf.data.Dataset`` of ``(input, target)`` float32 tensors of ``sampler.shapes``,
        equal to ``sampler.batch(k)`` for batch ``k`` (with ``replicas``: its slices, in
        order).

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``replicas``.
    """
    import tensorflow as tf

    x_shape, y_shape = sampler.shapes
    if replicas < 1 or x_shape[0] % replicas:
        raise ValueError(f"a batch of {x_shape[0]} cannot be split into {replicas} equal "
                         f"per-replica batches")

    def make(index):
        x, y = tf.numpy_function(sampler.batch, [index], (tf.float32, tf.float32),
                                 stateful=False)
        return tf.ensure_shape(x, x_shape), tf.ensure_shape(y, y_shape)

    ds = tf.data.Dataset.range(start, 2 ** 62).map(make, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
    if replicas > 1:
        ds = ds.unbatch().batch(x_shape[0] // replicas, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
