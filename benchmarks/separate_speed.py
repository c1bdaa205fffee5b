"""Separation speed of keras-svs on a 180 s stereo 44.1 kHz file (prints numbers only).

    python benchmarks/separate_speed.py [--seconds 180] [--repeats 3] [--model PATH]

Times `Separator.separate_file` (decode, resample, STFT, model, inverse STFT, encode) on a
synthesised file, after one warm-up run, and prints the median, the real-time factor, the
peak RSS of this process and the machine. The Open-Unmix comparison of issue 5 is not here yet.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_svs import Separator, audio  # noqa: E402


def synthesize(path: Path, seconds: float, rate: int = 44100) -> None:
    """A stereo test signal: harmonic 'voice' glides over chords and noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    voice = sum(np.sin(2 * np.pi * k * 220 * t * (1 + 0.02 * np.sin(5 * t))) / k for k in range(1, 8))
    chords = sum(np.sin(2 * np.pi * f * t) for f in (110, 164.8, 261.6, 329.6))
    mix = 0.1 * np.stack([voice + chords, 0.8 * voice + chords]) + 0.01 * rng.standard_normal((2, len(t)))
    audio.write(path, mix.astype(np.float32), rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--mode", default="average", choices=["average", "centre"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        synthesize(song, args.seconds)
        separator = Separator(args.model, mode=args.mode)
        separator.separate_file(song, Path(tmp) / "out")  # warm-up: tracing, caches
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            separator.separate_file(song, Path(tmp) / "out")
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"model: {separator.settings['preset']} ({separator.model.count_params():,} parameters), "
          f"mode {args.mode}, mask {separator.mask}")
    print(f"input: {args.seconds:.0f} s stereo 44.1 kHz WAV; repeats: {args.repeats}")
    print(f"keras-svs separate: median {median:.2f} s "
          f"({args.seconds / median:.1f}x real time), runs {[round(t, 2) for t in times]}")
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
