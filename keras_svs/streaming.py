"""Streaming separation of long files in bounded memory.

:func:`separate_stream` computes what :meth:`Separator.separate` computes on a whole file
(within float32 rounding), but reads the input in blocks and writes the stems block by
block, so that its memory does not grow with the file's length.

How the blocks stay exact:

* **STFT frames.** Frame ``j`` of the one-piece STFT (:func:`spectral.stft`, which pads
  ``pad = win - hop`` zeros before the signal) covers input samples
  ``[j * hop - pad, j * hop - pad + win)``; a block of frames ``[j0, j1)`` is computed from
  samples ``[j0 * hop - pad, j1 * hop)`` read from the file (zeros outside it), so its
  frames are exactly the one-piece frames.
* **Model context.** Model frames come from :meth:`Separator.mask_blocks`, the engine of
  the whole-file path, in blocks ``[s, e)`` with ``context`` frames of input on both
  sides: for patch models the patch overlap ``P - hop`` (the blocks start on the patch
  grid, so they are exact); for fully convolutional models (U-Net) the blocks and their
  context start at multiples of the model's ``time_multiple`` (so every stride-2 level
  sees the same grid as the one-piece call) and the context is
  :data:`UNET_CONTEXT_MULTIPLES` ``* time_multiple`` frames, which covers the six-level
  U-Net's receptive field (``tests/test_streaming.py`` checks it with impulses). The
  frames past the end up to the next multiple are zero magnitudes, as in the one-piece call.
* **Rates.** When the file's rate differs from the model's, its mono mix is resampled with
  ``soxr.ResampleStream`` (quality HQ) in chunks, which gives the samples of the one-shot
  ``soxr.resample`` that :func:`audio.resample` uses, then trimmed or padded to
  ``round(n * ratio)`` samples as there.
* **Mask to the input's grid.** The model-rate mask is carried to the input's frame times
  and bins by :func:`spectral.mask_to_grid`, from the few model frames around each block.
* **Inverse STFT.** Each block's frames are inverted and overlap-added
  (:func:`spectral.overlap_add_numpy`, as ``tf.signal.inverse_stft``); the
  last ``win - hop`` samples of its overlap-add (still missing later frames) are carried to
  the next block.

Memory: a few blocks of audio and spectrogram (set by ``block_seconds``; at the input's rate
at most :data:`INPUT_BLOCK_SECONDS` at a time) and the model's context; nothing
proportional to the file's length. Outputs are written to temporary files
beside their destinations and renamed into place only when all of them are complete; on
any error the temporary files are removed and no destination is touched.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import audio, spectral
from .separation import (STEMS, Separator, fft_threads, mask_channels, model_channels,
                         release_free_memory)

#: Default block length in seconds of :func:`separate_stream`; longer blocks cost less
#: context but more memory (``benchmarks/long_file.py`` measures the peak).
DEFAULT_BLOCK_SECONDS = 10.0
#: Context of fully convolutional models on each side of a block, in multiples of their
#: ``time_multiple`` (``2 ** levels``): 5 x 64 = 320 frames for the six-level U-Net, more
#: than its receptive field reaches on either side.
UNET_CONTEXT_MULTIPLES = 5
#: Longest stretch, in seconds, that the input-rate STFT, mask and inverse STFT handle at a
#: time: shorter than a model block, because their buffers add to the model's at the peak.
INPUT_BLOCK_SECONDS = 2.5
#: Input samples read at a time when the mono mix is resampled for the model.
_RESAMPLE_CHUNK = 2 ** 16


def model_blocking(separator: Separator) -> tuple[int, int]:
    """``(step, context)`` in model frames: model blocks start at multiples of ``step`` and
    see ``context`` frames of input on each side."""
    frames = separator.settings.frames
    if frames is None:  # fully convolutional
        return separator.step, UNET_CONTEXT_MULTIPLES * separator.step
    return separator.step, frames - separator.hop


# -- input ------------------------------------------------------------------------------
class _Resampled:
    """Channels of the file (``select``: its ``(channels, n)`` block -> the ``(k, n)`` rows
    the model sees, e.g. the mono mix) resampled to ``rate`` in chunks, one
    ``soxr.ResampleStream`` a row (as :func:`audio.resample` resamples row by row), read in
    ranges whose starts never decrease: float32 ``(k, stop - start)``, zeros outside
    ``[0, round(n * ratio))``."""

    def __init__(self, reader: audio.BlockReader, rate: int,
                 select: Callable[[np.ndarray], np.ndarray], chunk: int = _RESAMPLE_CHUNK):
        import soxr

        self.reader, self.chunk, self.select = reader, chunk, select
        self.length = round(reader.length * rate / reader.rate)  # as audio.resample
        self.rows = select(np.zeros((reader.channels, 1), np.float32)).shape[0]
        self.streams = [soxr.ResampleStream(reader.rate, rate, 1, dtype="float32",
                                            quality="HQ") for _ in range(self.rows)]
        self.position = 0  # input samples consumed
        self.done = False
        self.buffer = np.zeros((self.rows, 0), np.float32)
        self.offset = 0  # output index of buffer[:, 0]

    def read(self, start: int, stop: int) -> np.ndarray:
        while not self.done and self.offset + self.buffer.shape[1] < min(stop, self.length):
            a = self.position
            b = min(a + self.chunk, self.reader.length)
            rows = self.select(self.reader.read(a, b))
            self.position, self.done = b, b >= self.reader.length
            produced = [np.asarray(stream.resample_chunk(np.ascontiguousarray(row),
                                                         last=self.done), np.float32)
                        for stream, row in zip(self.streams, rows)]
            self.buffer = np.concatenate([self.buffer, np.stack(produced)], axis=1)
        drop = min(max(0, start - self.offset), self.buffer.shape[1])
        self.buffer, self.offset = self.buffer[:, drop:], self.offset + drop
        out = np.zeros((self.rows, stop - start), np.float32)
        a = max(start, self.offset, 0)
        b = min(stop, self.length, self.offset + self.buffer.shape[1])
        if b > a:
            out[:, a - start:b - start] = self.buffer[:, a - self.offset:b - self.offset]
        return out


def _frames(read, config: spectral.StftConfig, k0: int, k1: int) -> np.ndarray:
    """Frames ``[k0, k1)`` of the one-piece padded STFT of ``read``'s signal: complex64
    ``(channels, k1 - k0, bins)``."""
    segment = read(*config.frame_span(k0, k1))
    return spectral.stft_numpy(segment, config, padded=False, workers=fft_threads())


def _model_magnitude(separator: Separator, read) -> Callable[[int, int], np.ndarray]:
    """``magnitude(a, b)``: the model-rate magnitude of frames ``[a, b)`` of ``read``'s
    signal, as :meth:`Separator.mask_blocks` reads it: a mono model's ``(b - a, model
    bins)`` of the mean of the channels' spectra, a stereo model's ``(b - a, model bins,
    channels)`` of each channel's."""
    config, bins = separator.config, separator.settings.bins

    def magnitude(a: int, b: int) -> np.ndarray:
        spectrum = _frames(read, config, a, b)
        if separator.channels == 1:
            out = np.abs(spectrum.mean(axis=0)[:, :bins])
        else:
            out = np.moveaxis(np.abs(spectrum[..., :bins]), 0, -1)
        del spectrum
        release_free_memory()  # the model's activations start from a trimmed heap
        return out

    return magnitude


# -- separation -------------------------------------------------------------------------
def separate_stream(separator: Separator, in_path: str | os.PathLike,
                    out_paths: dict[str, str | os.PathLike],
                    block_seconds: float = DEFAULT_BLOCK_SECONDS, bit_depth: int = 16,
                    context: int | None = None, bitrate: int = audio.MP3_BITRATE,
                    progress: Callable[[int], object] | None = None) -> dict[str, Path]:
    """Separate an audio file block by block, in memory bounded by ``block_seconds``.

    The stems equal :meth:`Separator.separate` of the whole file (float32 rounding) and
    keep its rate, channels and length; the model's part is :meth:`Separator.mask_blocks`.

    Args:
        separator: the :class:`Separator` (model, mask, threshold, mode).
        in_path: any file libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1).
        out_paths: ``{stem: path}`` for stems among ``vocals``/``accompaniment``; the
            extension picks the format as in :func:`audio.write`.
        block_seconds: audio per block (default 10 s); memory grows with it.
        bit_depth: 16, 24 (PCM) or 32 (float WAV).
        bitrate: MP3's constant bitrate in kbit/s (:func:`audio.write`).
        context: model frames of context on each side of a model block; ``None`` (default)
            = :func:`model_blocking`'s (exact); smaller values are for tests only.
        progress: called after each block with the number of input frames (samples per
            channel) just written; the calls add up to the file's length (e.g. a
            ``click.progressbar``'s ``update``).

    Returns:
        ``{stem: written path}``.

    Raises:
        audio.AudioError: unreadable or empty input, or an unwritable output format; no
            output file is left behind after any error.
        ValueError: unknown stems, or ``block_seconds`` not positive.
    """
    in_path = Path(in_path)
    paths = {stem: Path(p) for stem, p in out_paths.items()}
    unknown = set(paths) - set(STEMS)
    if unknown:
        raise ValueError(f"unknown stems {sorted(unknown)}; choose among {STEMS}")
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be positive, not {block_seconds}")
    with audio.BlockReader(in_path) as reader, audio.BlockReader(in_path) as model_reader:
        writers = audio.BlockWriters(paths, reader.rate, reader.channels, bit_depth, bitrate)
        try:
            _run(separator, reader, model_reader, writers, block_seconds, context, progress)
        except BaseException:
            writers.abort()
            raise
        return writers.commit()


def separate_file_stream(separator: Separator, path: str | os.PathLike,
                         out_dir: str | os.PathLike, codec: str = "wav", bit_depth: int = 16,
                         stems: tuple[str, ...] = STEMS,
                         block_seconds: float = DEFAULT_BLOCK_SECONDS,
                         paths: dict[str, str | os.PathLike] | None = None,
                         progress: Callable[[int], object] | None = None,
                         bitrate: int = audio.MP3_BITRATE) -> dict[str, Path]:
    """:meth:`Separator.separate_file` (same layout ``OUT_DIR/<file stem>/<stem>.<codec>``,
    or ``paths``: destinations ``{stem: path}`` naming every stem of ``stems``) with
    :func:`separate_stream` (no plot; ``progress`` as there)."""
    if paths is None:
        folder = Path(out_dir) / Path(path).stem
        paths = {s: folder / f"{s}.{codec}" for s in stems}
    else:
        missing = [s for s in stems if s not in paths]
        if missing:
            raise ValueError(f"paths lacks {missing}")
    return separate_stream(separator, path, {s: paths[s] for s in stems},
                           block_seconds, bit_depth, progress=progress, bitrate=bitrate)


def _run(separator: Separator, reader: audio.BlockReader, model_reader: audio.BlockReader,
         writers: audio.BlockWriters, block_seconds: float, context: int | None,
         progress: Callable[[int], object] | None) -> None:
    config = separator.config
    rate, n = reader.rate, reader.length
    native = config.at_rate(rate)
    same = native == config
    mono = separator.channels == 1
    picked = model_channels(reader.channels, separator.channels)
    if same:  # one-piece: the mean of the channels' spectra, or the channels the model sees
        model_read = model_reader.read if mono else lambda a, b: model_reader.read(a, b)[picked]
        samples = n
    else:  # one-piece: the STFT of the resampled mono mix, or of each channel it sees
        if mono:
            source = _Resampled(model_reader, config.sample_rate,
                                lambda x: x.mean(axis=0, keepdims=True))
        else:
            source = _Resampled(model_reader, config.sample_rate, lambda x: x[picked])
        model_read, samples = source.read, source.length
    total = config.num_frames(samples)
    fixed = separator.fixed_blocks()
    if fixed is not None:  # the whole-file path's blocks: the same probabilities
        block, default_context = fixed
    else:
        step, default_context = model_blocking(separator)
        block = step * max(1, math.ceil(block_seconds * config.sample_rate
                                        / config.hop_length / step))
    context = default_context if context is None else int(context)
    masks = separator.mask_blocks(_model_magnitude(separator, model_read), total, block,
                                  context)
    # the masks of the model's channels, (channels, frames, config.bins); a mono model: 1
    buffer, buffer_start = np.zeros((1 if mono else separator.channels, 0, config.bins),
                                    np.float32), 0
    sources = (np.zeros(reader.channels, int) if mono
               else mask_channels(reader.channels, separator.channels))

    frames = native.num_frames(n)
    hop, pad = native.hop_length, native.pad
    native_block = max(1, round(min(block_seconds, INPUT_BLOCK_SECONDS) * rate / hop))
    carry = np.zeros((reader.channels, pad), np.float32)
    for j0 in range(0, frames, native_block):
        j1 = min(frames, j0 + native_block)
        if same:
            lo, hi = j0, j1
        else:  # the model frames around this block's frame times
            position = config.frame_position(native.frame_times(j1 - j0, j0))
            lo = max(0, math.floor(position.min()) - 2)
            hi = min(total, math.ceil(position.max()) + 3)
        while buffer_start + buffer.shape[1] < hi:
            _, mask_block = next(masks)
            release_free_memory()  # the next STFTs start from a heap trimmed of activations
            buffer = np.concatenate([buffer, mask_block[None] if mono else mask_block],
                                    axis=1)
        buffer, buffer_start = buffer[:, lo - buffer_start:], lo
        grids = [spectral.mask_to_grid(m[:hi - lo], config, native, j1 - j0,
                                       source_start=lo, target_start=j0) for m in buffer]
        if np.any(sources == len(grids)):  # a channel takes the mean mask
            grids.append(sum(grids) / len(grids))
        start, stop = native.frame_span(j0, j1)  # input samples of the block's frames
        segment = reader.read(start, stop)
        spectrum = spectral.stft_numpy(segment, native, padded=False, workers=fft_threads())
        for c, k in enumerate(sources):
            spectrum[c] *= grids[k]
        del grids
        vocals = spectral.overlap_add_numpy(spectrum, native, workers=fft_threads())
        del spectrum
        vocals[:, :pad] += carry
        done = (j1 - j0) * hop
        carry = vocals[:, done:done + pad].copy()
        a, b = max(0, start), min(n, start + done)  # the complete samples of the input
        if b > a:
            v = vocals[:, a - start:b - start]
            writers.write("vocals", v)
            writers.write("accompaniment", segment[:, a - start:b - start] - v)
            if progress is not None:
                progress(b - a)
        release_free_memory()
