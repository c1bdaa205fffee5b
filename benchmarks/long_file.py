"""Streaming separation of a long file: memory, time and exact output length.

    python benchmarks/long_file.py [--minutes 60] [--block-seconds S] [--dir DIR] [--json OUT]

Synthesises a stereo 44.1 kHz 16-bit WAV of MINUTES minutes block by block (never the whole
signal in memory), then runs `keras-svs separate FILE` (default settings: files over 5 minutes
stream in 10 s blocks; `--block-seconds S` passes that option) in a subprocess
and reports the child's peak RSS (`os.wait4`), its wall time (process start to exit: imports
and model load included) and the CLI's own separation time, the real-time factors, and checks
that both stems have exactly the input's frames, rate and channels and that they are not
truncated: read back block by block, vocals + accompaniment must equal the input to within
16-bit rounding over the whole length, and the last second must not be silent.
The files go to a temporary folder (or --dir, kept), about 3 x 10.6 MB per minute.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separate_speed import RATE, machine, synthesize  # noqa: E402

from keras_svs.batch import AUTO_BLOCK_SECONDS, AUTO_STREAM_SECONDS  # noqa: E402

TOLERANCE = 4 / 32768  # a few 16-bit steps: each of the three files was rounded once


def keras_svs_command() -> list[str]:
    script = Path(sys.executable).parent / "keras-svs"
    if script.exists():
        return [str(script)]
    found = shutil.which("keras-svs")
    return [found] if found else [sys.executable, "-c",
                                  "import sys; from keras_svs.cli import main; sys.exit(main())"]


def check(song: Path, stems: dict[str, Path], block: int) -> dict:
    """Lengths, and vocals + accompaniment == input over the whole file, block by block."""
    info = sf.info(str(song))
    result = {"input_frames": info.frames, "stems": {}}
    for stem, path in stems.items():
        out = sf.info(str(path))
        result["stems"][stem] = {"frames": out.frames, "rate": out.samplerate,
                                 "channels": out.channels,
                                 "same_shape": (out.frames, out.samplerate, out.channels)
                                 == (info.frames, info.samplerate, info.channels)}
    worst, last_rms, frames = 0.0, {}, 0
    files = [sf.SoundFile(str(song))] + [sf.SoundFile(str(p)) for p in stems.values()]
    try:
        while True:
            mix, *parts = [f.read(block, dtype="float32", always_2d=True) for f in files]
            if not len(mix):
                break
            n = min(len(mix), *(len(p) for p in parts))
            worst = max(worst, float(np.max(np.abs(mix[:n] - sum(p[:n] for p in parts)))))
            frames += len(mix)
    finally:
        for f in files:
            f.close()
    for stem, path in stems.items():
        with sf.SoundFile(str(path)) as f:
            f.seek(max(0, f.frames - RATE))
            tail = f.read(dtype="float32", always_2d=True)
        last_rms[stem] = float(np.sqrt(np.mean(tail ** 2))) if len(tail) else 0.0
    result.update(max_abs_sum_error=worst, last_second_rms=last_rms,
                  sum_matches=worst <= TOLERANCE,
                  not_truncated=all(s["same_shape"] for s in result["stems"].values())
                  and worst <= TOLERANCE and all(r > 1e-4 for r in last_rms.values()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--block-seconds", type=float, default=None,
                        help="pass --block-seconds to keras-svs separate (default: its own)")
    parser.add_argument("--model", default=None, help="keras-svs model (default: the shipped one)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    host = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        song = folder / "long.wav"
        began = time.perf_counter()
        frames = synthesize(song, args.minutes * 60)
        print(f"synthesised {frames / RATE / 60:.2f} min ({song.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        out_dir = folder / "separated"
        argv = keras_svs_command() + ["separate", str(song), "-o", str(out_dir), "--overwrite"]
        if args.block_seconds is not None:
            argv += ["--block-seconds", str(args.block_seconds)]
        if args.model:
            argv += ["--model", str(args.model)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        with tempfile.TemporaryFile("w+") as err:
            began = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - began
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            stderr = err.read()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        # the CLI reports "FILE -> DIR/ (S s of audio in T s, ...)"
        match = re.search(r"of audio in ([0-9.]+) s", stderr)
        separate_seconds = float(match.group(1)) if match else None
        stems = {s: out_dir / song.stem / f"{s}.wav" for s in ("vocals", "accompaniment")}
        began = time.perf_counter()
        checked = check(song, stems, block=int((args.block_seconds or AUTO_BLOCK_SECONDS) * RATE))
        check_seconds = time.perf_counter() - began
    seconds = frames / RATE
    summary = {"machine": host, "input": {"minutes": seconds / 60, "frames": frames, "rate": RATE,
                                          "channels": 2, "format": "WAV PCM_16"},
               "block_seconds": args.block_seconds, "command": " ".join(argv),
               "streamed": seconds > (AUTO_STREAM_SECONDS if args.block_seconds is None
                                      else args.block_seconds),
               "peak_rss_mb": usage.ru_maxrss / 1024, "wall_seconds": wall,
               "real_time_factor": seconds / wall, "separate_seconds": separate_seconds,
               "separate_real_time_factor": seconds / separate_seconds if separate_seconds else None,
               "check": checked, "check_seconds": check_seconds}
    print(f"machine: {host['cpu']} ({' '.join(host['simd']) or 'no AVX2'}), {host['cores']} cores, "
          f"{host['platform']}; date {host['date']}; "
          f"1-min load average {host['load_average_1min']}")
    print(f"input: {seconds / 60:.2f} min stereo 44.1 kHz 16-bit WAV ({frames:,} frames); "
          + ("keras-svs separate (default settings)" if args.block_seconds is None
             else f"keras-svs separate --block-seconds {args.block_seconds:g}")
          + ("" if summary["streamed"] else " (not streamed: the file is too short)"))
    print(f"child: peak RSS {summary['peak_rss_mb']:.0f} MB; wall {wall:.1f} s "
          f"({summary['real_time_factor']:.1f}x real time, imports and model load included)"
          + (f"; separation {separate_seconds:.1f} s "
             f"({summary['separate_real_time_factor']:.1f}x real time)" if separate_seconds else ""))
    for stem, s in checked["stems"].items():
        print(f"{stem}: {s['frames']:,} frames, {s['rate']} Hz, {s['channels']} channels: "
              f"{'same as the input' if s['same_shape'] else 'DIFFERS FROM THE INPUT'}; "
              f"last-second RMS {checked['last_second_rms'][stem]:.4f}")
    print(f"vocals + accompaniment vs input: max abs error {checked['max_abs_sum_error']:.2e} "
          f"({'within' if checked['sum_matches'] else 'OVER'} {TOLERANCE:.1e}); "
          f"not truncated: {checked['not_truncated']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not checked["not_truncated"]:
        raise SystemExit("the output does not match the input's length (see above)")


if __name__ == "__main__":
    main()
