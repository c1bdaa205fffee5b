"""Catalogue separation throughput on Beam's DirectRunner, beside `keras-svs separate`.

    python benchmarks/beam_throughput.py [--files 8] [--seconds 30] [--workers 1] [--json OUT]

Makes FILES stereo 44.1 kHz FLAC songs of SECONDS seconds each (the demo clip repeated), then
runs, each in its own process (start-up, imports and model load included):

* `keras-svs separate-beam --input 'DIR/*.flac' -o OUT --direct_num_workers=WORKERS
  --direct_running_mode=multi_threading` (the shipped model, DirectRunner);
* `keras-svs separate DIR/*.flac -o OUT` (the same files, one process, for comparison);

and prints, as one JSON line, each one's wall seconds, files per minute and real-time factor
(seconds of audio per wall second), and the machine (CPU features, load).
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from separate_speed import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERAS_SVS = str(Path(sys.executable).with_name("keras-svs"))


def catalogue(folder: Path, files: int, seconds: float) -> float:
    """Write ``files`` songs of ``seconds`` s into ``folder``; returns their total seconds."""
    clip, rate = sf.read(ROOT / "data" / "demo" / "falcon69.flac", dtype="float32")
    length = int(seconds * rate)
    song = np.tile(clip, (length // len(clip) + 1, 1))[:length]
    for i in range(files):
        sf.write(folder / f"song{i:03d}.flac", np.roll(song, 997 * i, axis=0), rate)
    return files * length / rate


def timed(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1, help="--direct_num_workers")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        audio_seconds = catalogue(folder, args.files, args.seconds)
        runs = {
            "separate-beam": [KERAS_SVS, "separate-beam", "--input", str(folder / "*.flac"),
                              "-o", str(Path(tmp) / "beam"),
                              f"--direct_num_workers={args.workers}",
                              "--direct_running_mode=multi_threading"],
            "separate": [KERAS_SVS, "separate", *sorted(glob.glob(str(folder / "*.flac"))),
                         "-o", str(Path(tmp) / "separate")],
        }
        result = {"machine": machine(), "files": args.files, "seconds_each": args.seconds,
                  "audio_seconds": audio_seconds, "direct_num_workers": args.workers}
        for name, argv in runs.items():
            wall = timed(argv)
            result[name] = {"wall_s": round(wall, 2),
                            "files_per_min": round(args.files * 60 / wall, 2),
                            "x_real_time": round(audio_seconds / wall, 2)}
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
