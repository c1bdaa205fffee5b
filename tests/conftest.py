"""Shared fixtures: synthesized audio, tiny datasets in every layout, tiny models.

Everything here is synthesized or built on the spot: no test needs the network or
``../shared`` (see ``test_real_data.py`` for the optional real-data checks).
"""
from __future__ import annotations

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # before TensorFlow is imported anywhere

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

#: The ``tiny`` preset's sample rate (8 kHz, 256-point FFT, 9 x 129 patches).
TINY_RATE = 8000


# -- synthesized sources ------------------------------------------------------------------
def synth_voice(rate: int, seconds: float, f0: float = 220.0, seed: int = 0) -> np.ndarray:
    """A "voice": a vibrato (frequency-modulated) harmonic tone, switched on and off.

    Returns float32 ``(samples,)``, peak about 0.3.
    """
    rng = np.random.default_rng(seed)
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / rate
    tone = np.zeros(n)
    for k in range(1, 13):
        if k * f0 * 1.03 < rate / 2:
            tone += np.sin(k * phase) / k
    tone /= np.max(np.abs(tone)) + 1e-9
    # on 0.35 s, off 0.15 s, with 20 ms ramps
    period, on, ramp = 0.5, 0.35, 0.02
    local = np.mod(t + rng.uniform(0, period), period)
    envelope = np.clip(np.minimum(local / ramp, (on - local) / ramp), 0.0, 1.0)
    return (0.3 * tone * envelope).astype(np.float32)


def synth_accompaniment(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """An "accompaniment": a few steady sine tones and a little noise. float32 ``(samples,)``."""
    rng = np.random.default_rng(1000 + seed)
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    out = np.zeros(n)
    for f in (110.0, 164.8, 329.6, 523.3, 1046.5):
        if f < rate / 2:
            out += 0.04 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    out += 0.005 * rng.standard_normal(n)
    return out.astype(np.float32)


def synth_pair(rate: int, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(voice, accompaniment)``, each float32 ``(samples,)``; f0 varies with the seed."""
    f0 = 180.0 + 40.0 * (seed % 5)
    return synth_voice(rate, seconds, f0, seed), synth_accompaniment(rate, seconds, seed)


def synth_mixture(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A mixture ``(channels, samples)``; channels differ slightly in gain."""
    v, a = synth_pair(rate, seconds, seed)
    gains = np.linspace(1.0, 0.7, channels)[:, None]
    return ((v + a)[None] * gains).astype(np.float32)


# -- tiny datasets on disk -----------------------------------------------------------------
def write_pairs(root: Path, names, rate: int = 16000, seconds: float = 1.0,
                fmt: str = "wav") -> Path:
    """Stereo pair files ``ROOT/<name>.<fmt>``: left accompaniment, right voice."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        v, a = synth_pair(rate, seconds, i)
        sf.write(root / f"{name}.{fmt}", np.stack([a, v], axis=1), rate, subtype="PCM_16")
    return root


def write_musdb(root: Path, names, rate: int = 16000, seconds: float = 1.0,
                channels: int = 2) -> Path:
    """MUSDB-style folders ``ROOT/<name>/{vocals,bass,drums,other,mixture}.wav`` (float WAV).

    The accompaniment is split into three stems that sum to it.
    """
    for i, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        v, a = synth_pair(rate, seconds, i)
        parts = {"bass": 0.5 * a, "drums": 0.3 * a, "other": 0.2 * a}
        gains = np.linspace(1.0, 0.8, channels)[None]
        for stem, x in {"vocals": v, **parts, "mixture": v + a}.items():
            sf.write(folder / f"{stem}.wav", x[:, None] * gains, rate, subtype="FLOAT")
    return root


def write_stems(root: Path, names, rate: int = 16000, seconds: float = 1.0) -> Path:
    """Folders ``ROOT/<name>/{vocals,accompaniment}.flac`` (mono)."""
    for i, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        v, a = synth_pair(rate, seconds, i)
        sf.write(folder / "vocals.flac", v, rate, subtype="PCM_24")
        sf.write(folder / "accompaniment.flac", a, rate, subtype="PCM_24")
    return root


def write_splits(root: Path, splits: dict) -> Path:
    """``ROOT/splits.json`` with the given ``{split: [patterns]}`` (first match wins)."""
    path = root / "splits.json"
    path.write_text(json.dumps({"splits": splits}))
    return path


def write_training_pairs(root: Path, tracks: int = 5, seconds: float = 2.0) -> Path:
    """A pairs dataset at the tiny preset's rate with a splits.json (1 valid, rest train)."""
    write_pairs(root, [f"clip_{i}" for i in range(tracks)], rate=TINY_RATE, seconds=seconds)
    write_splits(root, {"valid": ["clip_0"], "train": ["*"]})
    return root


# -- environment ---------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _separation_cache(tmp_path_factory):
    """Converted LiteRT forms (:func:`keras_svs.runtime.cache_dir`) go to a folder of this
    pytest run, inherited by the command-line subprocesses, never to the user's cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("KERAS_SVS_CACHE", str(tmp_path_factory.mktemp("keras-svs-cache")))
    yield
    patch.undo()


# -- models --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """An untrained ``tiny`` model (8 kHz, 9 x 129 patches) saved as ``.keras``."""
    import keras

    from keras_svs.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("tiny")
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def litert_model_path(tmp_path_factory) -> Path:
    """An untrained ``tinystereo`` model (fully convolutional, stereo, 8 kHz: the shipped
    model's kind) whose LiteRT form is converted here, once, into this run's cache: a
    separation with it then imports no TensorFlow, in this process or in a command's (and a
    worker process starts in a second, not in TensorFlow's ten)."""
    import keras

    from keras_svs.models import build_model
    from keras_svs.separation import Separator

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("models") / "tinystereo.keras"
    build_model("tinystereo").save(path)
    assert Separator(path).predict.runtime.startswith("litert")
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The untrained tiny model, loaded (share it; do not train it)."""
    from keras_svs.models import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> dict:
    """A tiny model trained for seconds: ``{"out": run folder, "model": model.keras,
    "data": dataset root, "config": (Recipe, RunOptions)}``."""
    from keras_svs.training import Recipe, RunOptions, train

    base = tmp_path_factory.mktemp("trained")
    data = write_training_pairs(base / "data", tracks=4, seconds=1.5)
    config = (Recipe(preset="tiny", epochs=1, pretrain_epochs=1, steps_per_epoch=3),
              RunOptions(verbose=0))
    out = base / "run"
    path = train(data, out, *config)
    return {"out": out, "model": path, "data": data, "config": config}


# -- reporting -----------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many bad-input cases (``tests/test_bad_inputs.py``) ran, and how; the peak memory
    of the service under load (``tests/test_serve_load.py``)."""
    for report in terminalreporter.stats.get("passed", []):
        for name, value in getattr(report, "user_properties", []):
            if name == "serve_load_memory" and report.when == "call":
                terminalreporter.write_line(value)
    _bad_input_summary(terminalreporter)


def _bad_input_summary(terminalreporter):
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 2}
    outcomes: dict[str, str] = {}
    for status in rank:
        for report in terminalreporter.stats.get(status, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_bad_inputs.py::" not in nodeid:
                continue
            if rank[status] >= rank[outcomes.get(nodeid, "passed")]:
                outcomes[nodeid] = status
    if not outcomes:
        return
    cases = set()
    for nodeid in outcomes:  # test_bad_input[cli:nan-samples] and [api:nan-samples]: 1 case
        name = nodeid.split("::", 1)[1]
        cases.add(name.split(":", 1)[1] if name.startswith("test_bad_input[") else name)
    counts = ", ".join(f"{sum(o == s for o in outcomes.values())} {s}"
                       for s in ("passed", "skipped", "failed", "error")
                       if any(o == s for o in outcomes.values()))
    terminalreporter.write_line(f"bad-input cases: {len(cases)} ({len(outcomes)} test runs: "
                                f"{counts})")


# -- the separation service (tests/test_serve*.py) -----------------------------------------
@pytest.fixture(scope="session")
def serve_model(tmp_path_factory) -> dict:
    """A ``tinystereo`` model (fully convolutional, 8 kHz) and a LiteRT cache that holds its
    converted form, so that the service's worker processes start without TensorFlow:
    ``{"model": path, "cache": folder, "env": environment for subprocesses}``. Made once
    per test run, shared by the pytest-xdist workers (under a file lock)."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "serve-model"
    root.mkdir(exist_ok=True)
    model, cache = root / "tinystereo.keras", root / "cache"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():
            import keras

            from keras_svs.models import build_model
            from keras_svs.separation import Separator

            keras.utils.set_random_seed(3)
            build_model("tinystereo").save(model)
            patch = pytest.MonkeyPatch()
            patch.setenv("KERAS_SVS_CACHE", str(cache))
            try:
                Separator(model, runtime="litert")  # converts into the cache
            finally:
                patch.undo()
            (root / "ready").touch()
    env = {**os.environ, "KERAS_SVS_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    return {"model": model, "cache": cache, "env": env}
