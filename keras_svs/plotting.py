"""Pictures of a separation: what ``keras-svs separate --plot`` writes.

One PNG per input, four panels sharing the time axis (seconds) and a frequency axis in Hz:
the mixture's spectrogram (dB), the model's voice mask (0-1, on the model's own STFT grid),
and the spectrograms of the two stems. Needs matplotlib (``pip install keras-svs[plot]``).

:func:`require_matplotlib` is the one check every ``--plot`` makes; importing this module
imports neither matplotlib nor the STFT code (``keras_svs.evaluation`` imports it, and its
pool workers must start quickly).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from . import spectral

#: The install hint of :func:`require_matplotlib`'s error.
PLOT_HINT = "matplotlib is needed for --plot: pip install keras-svs[plot]"


def require_matplotlib() -> None:
    """Check that matplotlib can be imported.

    Raises:
        ImportError: matplotlib is missing; the message is :data:`PLOT_HINT`.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(PLOT_HINT) from None


def _decibels(waveform: np.ndarray, config: spectral.StftConfig) -> np.ndarray:
    """``(frames, bins)`` magnitude in dB (floor -100) of a ``(channels, samples)`` signal's
    channel mean."""
    from . import spectral

    mono = np.atleast_2d(waveform).mean(axis=0)
    return 20 * np.log10(np.abs(spectral.stft_numpy(mono, config)) + 1e-5)


def plot_separation(mixture: np.ndarray, stems: dict[str, np.ndarray], sample_rate: int,
                    mask: np.ndarray, mask_config: spectral.StftConfig,
                    path: str | os.PathLike, title: str = "") -> Path:
    """Write the four-panel PNG.

    Args:
        mixture: ``(channels, samples)`` or ``(samples,)`` at ``sample_rate``.
        stems: ``{"vocals": ..., "accompaniment": ...}``, shaped like ``mixture``.
        sample_rate: Hz.
        mask: ``(frames, bins)`` voice mask on ``mask_config``'s grid.
        mask_config: the model's STFT settings.
        path: PNG to write (atomically: a finished file or none).
        title: figure title.

    Returns:
        ``path``.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    config = mask_config.at_rate(sample_rate)
    panels = [("mixture", _decibels(mixture, config), config, "magma", (-100, 0), "dB")]
    panels.append(("voice mask (model)", mask, mask_config, "viridis", (0, 1), "mask"))
    for stem in ("vocals", "accompaniment"):
        panels.append((stem, _decibels(stems[stem], config), config, "magma", (-100, 0), "dB"))
    figure = Figure(figsize=(10, 9), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True)
    for ax, (name, values, grid, cmap, limits, unit) in zip(axes, panels):
        times = grid.frame_times(values.shape[0])
        freqs = grid.bin_frequencies()[:values.shape[1]]
        image = ax.pcolormesh(times, freqs, values.T, shading="auto", cmap=cmap,
                              vmin=limits[0], vmax=limits[1], rasterized=True)
        ax.set_ylabel("frequency (Hz)")
        ax.set_title(name, loc="left", fontsize=10)
        figure.colorbar(image, ax=ax, label=unit, pad=0.01)
    axes[-1].set_xlabel("time (s)")
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp.png")
    try:
        figure.savefig(staged, dpi=100)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


__all__ = ["PLOT_HINT", "require_matplotlib", "plot_separation"]
