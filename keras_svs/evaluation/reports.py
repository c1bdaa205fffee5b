"""Reports of an evaluation result: JSON, CSV, a text table and an NSDR box plot.

matplotlib is imported by :func:`plot_nsdr` only.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from ..plotting import require_matplotlib
from .metrics import METRICS, SOURCES


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become ``None``, recursively through
    dicts, lists and tuples (tuples become lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`~keras_svs.evaluation.evaluate`'s result as JSON (non-finite numbers
    as ``null``; missing folders are made). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")
    return path


def csv_columns(result: dict[str, Any]) -> list[str]:
    """Column names of :func:`write_csv`: name, samples, seconds, ``<source>_<metric>``
    (``museval_SDR`` too when the clips have it)."""
    metrics = list(METRICS)
    if result["per_clip"] and "museval_SDR" in result["per_clip"][0]["voice"]:
        metrics.append("museval_SDR")
    return ["name", "samples", "seconds"] + [f"{s}_{m}" for s in SOURCES for m in metrics]


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write one CSV row per scored clip (seconds to 3 decimals, metrics in dB to 4;
    missing folders are made). Returns ``path``."""
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
    """A short human summary: clips, minutes of audio and the G-metrics of both sources
    (dB)."""
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


def plot_nsdr(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Box plot of the per-clip voice and accompaniment NSDR (dB), written to ``path``
    (PNG at 120 dpi; missing folders are made). Returns ``path``.

    Raises:
        ImportError: matplotlib is missing (with the install hint).
    """
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
