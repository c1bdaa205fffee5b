"""Where the time of one separation goes, stage by stage.

    python benchmarks/profile_separate.py [--seconds 180] [--model PATH] [--repeats 2]
        [--precision float32|bfloat16] [--runtime auto|tensorflow|litert|litert-int8]
    python benchmarks/profile_separate.py --startup [--runtime tensorflow|litert|litert-int8] [--model PATH]

Synthesises the same stereo 44.1 kHz file as separate_speed.py, then runs the stages of
`Separator.separate_file` one after the other, timing each (best of --repeats after a
warm-up): decode, the input-rate STFT of both channels, the model's input (a mono model:
the mono mix resampled to its rate and its STFT; a stereo model: the magnitudes), the model
and its mask, the mask carried to the input's grid, the mask product and inverse STFT, and
the writing of both stems. Prints seconds per stage and the
share of the total, and the best of --repeats calls of `separate_file` itself.

`--startup` times, in this fresh process, what a separation waits for before its first block:
the engine's imports, then on TensorFlow the TensorFlow and Keras imports, the model load, the
inference form and the first call (tracing) on a 64-frame input; on LiteRT the cache look-up
(the model file's SHA-256), the interpreter and its first call (tensor allocation, XNNPACK).
"""
from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separate_speed import RATE, machine, synthesize  # noqa: E402


def stages(separator, path: Path, out: Path) -> dict[str, float]:
    """Run one separation stage by stage; ``{stage: seconds}``."""
    from keras_svs import audio, spectral
    from keras_svs.separation import fft_threads

    _WORKERS = fft_threads()

    times: dict[str, float] = {}

    def timed(name, fn):
        began = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - began
        return value

    x, rate = timed("decode", lambda: audio.read(path))
    config = separator.config
    native = config.at_rate(rate)
    spectrum = timed("input-rate STFT",
                     lambda: spectral.stft_numpy(x, native, workers=_WORKERS))
    if separator.channels == 1:
        mono = timed("resample", lambda: audio.resample(x.mean(axis=0), rate,
                                                         config.sample_rate))
        magnitude = timed("model-rate STFT", lambda: np.abs(
            spectral.stft_numpy(mono, config, workers=_WORKERS)))
    else:  # a stereo model at the file's rate and channels sees the input's STFT
        if native != config or x.shape[0] != separator.channels:
            raise SystemExit("a stereo model is profiled on a file at its rate and channels")
        magnitude = timed("magnitude", lambda: np.abs(spectrum))
    mask = timed("model (and mask)", lambda: separator.voice_mask(magnitude))
    masks = mask[None] if separator.channels == 1 else mask
    grids = timed("mask to input grid", lambda: [spectral.mask_to_grid(
        m, config, native, int(spectrum.shape[1])) for m in masks])
    vocals = timed("mask x spectrum + iSTFT", lambda: spectral.istft_numpy(
        spectrum * np.stack(grids), native, x.shape[-1], workers=_WORKERS))
    timed("write stems", lambda: audio.write_all(
        {out / "vocals.wav": vocals, out / "accompaniment.wav": x - vocals}, rate, 16))
    return times


def startup_stages(model: str | None, runtime: str) -> list[tuple[str, float]]:
    """Seconds of each start-up stage, from this script's first line (see the docstring);
    ``runtime`` ``tensorflow``, ``litert`` or ``litert-int8`` (a LiteRT form must be cached:
    run a separation once)."""
    stages, last = [], _STARTED

    def mark(name):
        nonlocal last
        now = time.perf_counter()
        stages.append((name, now - last))
        last = now

    from keras_svs import runtime as runtimes, separation
    from keras_svs.settings import ModelSettings

    mark("import keras_svs.separation (NumPy, SciPy, soundfile)")
    path = model or separation.default_model_path()
    if runtime == "tensorflow":
        runtimes.import_tensorflow_quietly()
        mark("import TensorFlow and Keras")
        from keras_svs.models import load_model, settings
        from keras_svs.models.inference import inference_model

        loaded = load_model(path)
        mark("load the .keras model")
        form = inference_model(loaded)
        mark("build its inference form")
        s = settings(form)
        shape = [None, s.bins] + ([s.channels] if s.channels != 1 else [])
        predict = runtimes.tensorflow_predict(form, shape, batched=False)
    else:
        cached = runtimes.cached_form(path, runtime)
        if cached is None:
            raise SystemExit(f"no cached LiteRT form of {path}: separate a file with it first")
        mark("find the cached form (SHA-256 of the model file)")
        predict = runtimes.litert_predict(cached[0], os.cpu_count() or 1)
        s = ModelSettings.from_dict(cached[1])
        mark("open the LiteRT interpreter")
    x = np.zeros((64, s.bins) + ((s.channels,) if s.channels != 1 else ()), np.float32)
    predict(x)
    mark("first model call, 64 frames (tracing or allocation)")
    predict(x)
    mark("second model call, 64 frames")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--runtime", default="auto", choices=["auto", "tensorflow", "litert",
                                                                 "litert-int8"])
    parser.add_argument("--startup", action="store_true", help="time the start-up stages")
    args = parser.parse_args()
    if args.startup:
        runtime = args.runtime
        if runtime == "auto":  # as the engine resolves it for a model file on this CPU
            from keras_svs.runtime import int8_pays
            runtime = "litert-int8" if int8_pays() else "litert"
        measured = startup_stages(args.model, runtime)
        m = machine()
        print(f"machine: {m['cpu']} ({' '.join(m['simd']) or 'no AVX2'}), {m['cores']} cores; "
              f"{m['date']}; start-up on {runtime}, from this script's first line")
        for name, seconds in measured:
            print(f"  {name:54s} {seconds:6.2f} s")
        print(f"  {'total':54s} {sum(t for _, t in measured):6.2f} s")
        return
    from keras_svs import Separator

    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        synthesize(song, args.seconds)
        separator = Separator(args.model, precision=args.precision, runtime=args.runtime)
        stages(separator, song, Path(tmp))  # warm-up
        runs = [stages(separator, song, Path(tmp)) for _ in range(args.repeats)]
        wholes = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            separator.separate_file(song, tmp)
            wholes.append(time.perf_counter() - began)
        whole = min(wholes)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    total = sum(best.values())
    m = machine()
    print(f"machine: {m['cpu']} ({' '.join(m['simd']) or 'no AVX2'}), {m['cores']} cores; {m['date']}")
    print(f"input: {args.seconds:.0f} s stereo {RATE / 1000:g} kHz; model "
          f"{separator.settings.preset} in {args.precision} on {separator.runtime}; best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:26s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'sum of stages':26s} {total:7.3f} s  ({args.seconds / total:.1f}x real time)")
    print(f"  {'separate_file, whole':26s} {whole:7.3f} s  ({args.seconds / whole:.1f}x real time)")


if __name__ == "__main__":
    main()
