"""keras_svs.cli: the keras-svs command, in process (CliRunner) and as a real program."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import synth_mixture, write_pairs, write_training_pairs
from keras_svs import audio
from keras_svs.cli import main

CONSOLE_SCRIPT = Path(sys.executable).parent / "keras-svs"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def assert_clean_error(result, *fragments):
    """Non-zero exit, exactly one ``Error:`` line naming the fragments, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def inputs(tmp_path):
    """Three mixtures: 44.1 kHz stereo 16-bit, 16 kHz mono 16-bit, 48 kHz stereo float."""
    folder = tmp_path / "in"
    folder.mkdir()
    specs = {"cd.wav": (44100, 2, "PCM_16"), "speech.wav": (16000, 1, "PCM_16"),
             "float.wav": (48000, 2, "FLOAT")}
    paths = {}
    for name, (rate, channels, subtype) in specs.items():
        x = synth_mixture(rate, 0.7, channels, seed=rate % 5)
        if subtype == "FLOAT":
            x = x * 3.0  # beyond full scale: only a float file keeps it
        sf.write(folder / name, x.T, rate, subtype=subtype)
        paths[name] = (folder / name, rate, channels, x.shape[1])
    return paths


def test_separate_keeps_rate_channels_and_length(tiny_model_path, inputs, tmp_path):
    out = tmp_path / "out"
    result = run("separate", *[p for p, *_ in inputs.values()], "--model", tiny_model_path,
                 "-o", out)
    assert result.exit_code == 0, result.output
    assert error_lines(result.stderr) == []
    for name, (path, rate, channels, frames) in inputs.items():
        folder = out / path.stem
        assert sorted(p.name for p in folder.iterdir()) == ["accompaniment.wav", "vocals.wav"]
        for stem in ("vocals", "accompaniment"):
            assert audio.info(folder / f"{stem}.wav") == (rate, channels, frames), name
        assert f"{path} -> " in result.stderr
    # 16-bit stems of an in-range input sum back to it
    path, *_ = inputs["cd.wav"]
    total = sum(audio.read(out / "cd" / f"{s}.wav")[0] for s in ("vocals", "accompaniment"))
    np.testing.assert_allclose(total, audio.read(path)[0], atol=3 / 2 ** 15)


def test_separate_options(tiny_model_path, inputs, tmp_path):
    path, rate, channels, frames = inputs["float.wav"]
    result = run("separate", path, "--model", tiny_model_path, "-o", tmp_path / "out",
                 "--codec", "flac", "--bit-depth", "24", "--mask", "soft", "--mode", "centre")
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "float" / "vocals.flac"
    assert sf.info(str(written)).subtype == "PCM_24"
    assert audio.info(written) == (rate, channels, frames)


@pytest.mark.parametrize("block_seconds", [None, 0.25])  # whole, and streamed in blocks
def test_separate_to_mp3_round_trip(tiny_model_path, inputs, tmp_path, block_seconds):
    """MP3 stems: the input's rate, channels and length, at the asked bitrate; they sum
    close to the input (MP3 is lossy: within a few per cent of its RMS)."""
    path, rate, channels, frames = inputs["cd.wav"]
    out = tmp_path / "out"
    result = run("separate", path, "--model", tiny_model_path, "-o", out, "--codec", "mp3",
                 "--bitrate", "192", *(["--block-seconds", block_seconds] if block_seconds
                                       else []))
    assert result.exit_code == 0, result.output
    stems = {}
    for stem in ("vocals", "accompaniment"):
        written = out / "cd" / f"{stem}.mp3"
        assert sf.info(str(written)).format == "MP3"
        assert audio.info(written) == (rate, channels, frames)
        stems[stem] = audio.read(written)[0]
    mixture = audio.read(path)[0]
    error = stems["vocals"] + stems["accompaniment"] - mixture
    assert np.sqrt(np.mean(error ** 2)) < 0.05 * np.sqrt(np.mean(mixture ** 2))


def test_separate_in_bfloat16(tiny_model_path, inputs, tmp_path):
    path, rate, channels, frames = inputs["cd.wav"]
    stems = {}
    for precision in ("float32", "bfloat16"):
        result = run("separate", path, "--model", tiny_model_path, "-o", tmp_path / precision,
                     "--precision", precision, "--bit-depth", "32")
        assert result.exit_code == 0, result.output
        stems[precision] = {stem: audio.read(tmp_path / precision / "cd" / f"{stem}.wav")[0]
                            for stem in ("vocals", "accompaniment")}
    half, full = stems["bfloat16"], stems["float32"]
    mixture = audio.read(path)[0]
    np.testing.assert_allclose(half["vocals"] + half["accompaniment"], mixture, atol=1e-4)
    assert 0 < np.abs(half["vocals"] - full["vocals"]).max() < 0.05 * np.abs(mixture).max()


def test_separate_unknown_precision(tiny_model_path, inputs, tmp_path):
    result = run("separate", inputs["cd.wav"][0], "--model", tiny_model_path,
                 "-o", tmp_path / "out", "--precision", "float16")
    assert result.exit_code == 2 and "float16" in result.output
    assert not (tmp_path / "out").exists()


def test_separate_missing_input(tiny_model_path, tmp_path):
    out = tmp_path / "out"
    result = run("separate", tmp_path / "missing.wav", "--model", tiny_model_path, "-o", out)
    assert_clean_error(result, "missing.wav")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_separate_missing_model(inputs, tmp_path):
    path, *_ = inputs["speech.wav"]
    result = run("separate", path, "--model", tmp_path / "nomodel.keras", "-o", tmp_path / "o")
    assert_clean_error(result, "nomodel.keras")
    assert not (tmp_path / "o").exists()


def test_separate_without_a_shipped_model(inputs, tmp_path, monkeypatch):
    import keras_svs.settings

    monkeypatch.setattr(keras_svs.settings, "DEFAULT_MODEL", tmp_path / "default.keras")
    path, *_ = inputs["speech.wav"]
    result = run("separate", path, "-o", tmp_path / "o")
    assert_clean_error(result, "--model")


def test_separate_one_bad_file_among_several(tiny_model_path, inputs, tmp_path):
    path, *_ = inputs["speech.wav"]
    out = tmp_path / "out"
    result = run("separate", tmp_path / "missing.wav", path, "--model", tiny_model_path,
                 "-o", out)
    assert result.exit_code != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 2 and "missing.wav" in lines[0] and "1 of 2" in lines[1]
    assert (out / "speech" / "vocals.wav").is_file()
    assert "Traceback" not in result.output


def test_existing_output_needs_overwrite(tiny_model_path, inputs, tmp_path):
    path, *_ = inputs["speech.wav"]
    out = tmp_path / "out"
    assert run("separate", path, "--model", tiny_model_path, "-o", out).exit_code == 0
    vocals = out / "speech" / "vocals.wav"
    vocals.write_bytes(b"marker")
    result = run("separate", path, "--model", tiny_model_path, "-o", out)
    assert_clean_error(result, "vocals.wav", "--overwrite")
    assert vocals.read_bytes() == b"marker"
    result = run("separate", path, "--model", tiny_model_path, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert audio.info(vocals)[1:] == inputs["speech.wav"][2:]


def test_train_writes_a_loadable_model(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--preset", "tiny", "--epochs", "1",
                 "--pretrain-epochs", "1", "--steps-per-epoch", "2", "-o", out)
    assert result.exit_code == 0, result.output
    assert "model written to" in result.stderr
    from keras_svs.models import load_model, settings

    assert settings(load_model(out / "model.keras")).preset == "tiny"
    assert (out / "pretrain" / "log.csv").is_file() and (out / "training.json").is_file()


def test_train_without_split_file_holds_out_every_tenth_track(tmp_path):
    data = tmp_path / "data"
    write_pairs(data, [f"clip_{i}" for i in range(3)], rate=8000, seconds=1.0)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--preset", "tiny", "--epochs", "1",
                 "--pretrain-epochs", "0", "--steps-per-epoch", "1", "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    assert (record["train_tracks"], record["valid_tracks"]) == (2, 1)
    assert not (out / "pretrain").exists()


def test_train_unknown_preset(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=0.5)
    result = run("train", "--data", data, "--preset", "nope", "-o", tmp_path / "run")
    assert_clean_error(result, "nope")
    assert not (tmp_path / "run").exists()


def test_train_missing_data(tmp_path):
    result = run("train", "--data", tmp_path / "nodata", "--preset", "tiny",
                 "-o", tmp_path / "run")
    assert_clean_error(result, "nodata")


def test_prepare_writes_a_cache(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=0.5)
    result = run("prepare", "--data", data, "-o", tmp_path / "cache.h5", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    from keras_svs.pipeline import load_hdf5

    cache = load_hdf5(tmp_path / "cache.h5")
    assert sorted(cache.names) == ["clip_0", "clip_1", "clip_2"]
    assert cache.sample_rate == 8000


def test_export_writes_a_saved_model(tiny_model_path, tmp_path):
    result = run("export", tiny_model_path, tmp_path / "exported")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    assert (tmp_path / "exported" / "assets" / "keras_svs.json").is_file()


def test_export_argument_errors(tiny_model_path, tmp_path):
    result = run("export", tiny_model_path, tmp_path / "a", tmp_path / "b")
    assert result.exit_code != 0 and "at most" in result.stderr
    result = run("export", tmp_path / "none.keras", tmp_path / "a")
    assert_clean_error(result, "none.keras")
    assert not (tmp_path / "a").exists()


def test_info(tiny_model_path):
    result = run("info", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert "preset: tiny" in result.stdout
    assert "sample_rate: 8000" in result.stdout
    assert "parameters: 23,337" in result.stdout


def test_info_reads_the_model_file_without_tensorflow(tiny_model, tiny_model_path):
    """``info`` on a .keras file (and the shipped model) imports no TensorFlow, and prints
    what the loaded model says of itself."""
    from keras_svs.models import settings

    code = ("import sys; from keras_svs.cli import main; "
            "main(['info', *sys.argv[1:]], standalone_mode=False); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    for args in ([str(tiny_model_path)], []):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        *lines, imported = out.stdout.splitlines()
        assert imported == "False False", out.stdout
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_path)],
                         capture_output=True, text=True, timeout=120)
    printed = dict(line.split(": ", 1) for line in out.stdout.splitlines()[:-1])
    want = {k: str(v) for k, v in settings(tiny_model).as_dict().items()}
    assert printed == {**want, "parameters": f"{tiny_model.count_params():,}"}


def test_info_on_a_non_model(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_text("nope")
    assert_clean_error(run("info", junk), "junk.keras")


def test_help_and_version():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("separate", "train", "prepare", "export", "info"):
        assert command in result.stdout
    result = run("--version")
    assert result.exit_code == 0 and "0.1.0" in result.stdout


def test_console_script(tiny_model_path, inputs, tmp_path):
    """The installed program: one clean Error line on stderr, no TensorFlow noise, and a
    working separation."""
    command = ([str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists()
               else [sys.executable, "-m", "keras_svs.cli"])
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "out"
    path, rate, channels, frames = inputs["cd.wav"]
    failing = subprocess.Popen(
        command + ["separate", str(tmp_path / "missing.wav"), "--model", str(tiny_model_path),
                   "-o", str(tmp_path / "failed")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    working = subprocess.run(
        command + ["separate", str(path), "--model", str(tiny_model_path), "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    stdout, stderr = failing.communicate(timeout=300)
    assert failing.returncode == 1
    assert stdout == ""
    assert len(error_lines(stderr)) == 1 and "missing.wav" in stderr, stderr
    assert stderr.splitlines() == error_lines(stderr)  # nothing else: no start-up log lines
    assert not (tmp_path / "failed").exists()
    assert working.returncode == 0, working.stderr
    lines = working.stderr.splitlines()
    assert len(lines) == 2 and f"{path} -> " in lines[0] and lines[1].startswith("1 file, ")
    assert audio.info(out / "cd" / "vocals.wav") == (rate, channels, frames)


def test_train_with_numpy_loader_and_time_budget(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--preset", "tiny", "--epochs", "50",
                 "--pretrain-epochs", "0", "--steps-per-epoch", "1", "--loader", "numpy",
                 "--workers", "0", "--time-budget", "0.001", "--gnsdr-clips", "1",
                 "--gnsdr-every", "1", "--gain-db", "3", "--loss", "psa", "-o", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "training.json").read_text())["config"]
    assert (config["loader"], config["workers"], config["time_budget"]) == ("numpy", 0, 0.001)
    assert (config["gain_db"], config["loss"]) == (3.0, "psa")
    assert (config["gnsdr_clips"], config["gnsdr_every"]) == (1, 1)
    from keras_svs.training import epochs_done

    assert epochs_done(out, "finetune") == 1  # the budget stopped 50 epochs after the first
    assert "val_gnsdr" in (out / "finetune" / "log.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("option, value", [("--loader", "torch"), ("--time-budget", "0"),
                                           ("--workers", "-1"), ("--gnsdr-every", "0"),
                                           ("--gnsdr-clips", "-2"), ("--gain-db", "-1"),
                                           ("--frames", "0"), ("--patch-hop", "-1")])
def test_train_rejects_bad_new_options(tmp_path, option, value):
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=0.5)
    result = run("train", "--data", data, "--preset", "tiny", option, value,
                 "-o", tmp_path / "run")
    assert result.exit_code == 2, result.output  # a usage error, before any training
    assert option in result.output
    assert not (tmp_path / "run").exists()


def test_train_patch_hop_cuts_a_grid_and_an_epoch_is_one_pass(tmp_path):
    """``--patch-hop N``: training patches every N frames, steps per epoch one pass over them
    (ceil(patches / batch)), validation on the same grid."""
    from keras_svs import examples, pipeline
    from keras_svs.models import get_preset
    from keras_svs.training import load_splits

    data = write_training_pairs(tmp_path / "data", tracks=3, seconds=1.0)
    out = tmp_path / "run"
    result = run("train", "--data", data, "--preset", "tiny", "--patch-hop", "4",
                 "--epochs", "1", "--pretrain-epochs", "0", "--batch-size", "8",
                 "--gnsdr-clips", "0", "-o", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["patch_hop"] == 4
    tiny = get_preset("tiny")
    train_audio, _ = load_splits(data, None, tiny)
    patches = len(examples.grid_patches(train_audio.lengths, tiny, 4)[0])
    assert patches > 8
    assert record["steps_per_epoch"] == -(-patches // 8)
    assert record["steps_per_epoch"] == pipeline.steps_per_epoch(train_audio, tiny, 8, 4)


def test_train_refuses_frames_that_the_network_cannot_take(tmp_path):
    """The paper's network has a fixed 9-frame patch: one error line, no run folder."""
    data = write_training_pairs(tmp_path / "data", tracks=2, seconds=0.5)
    result = run("train", "--data", data, "--preset", "tiny", "--frames", "18",
                 "-o", tmp_path / "run")
    assert result.exit_code == 1, result.output
    assert "exactly 9 frames" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


# -- batch use: --stems, --filename, progress, one model load ------------------------------
@pytest.fixture
def short_inputs(tmp_path):
    """Three short 8 kHz mono mixtures a.wav, b.wav, c.flac (0.4 s each)."""
    folder = tmp_path / "batch"
    folder.mkdir()
    paths = []
    for i, name in enumerate(("a.wav", "b.wav", "c.flac")):
        sf.write(folder / name, synth_mixture(8000, 0.4, 1, seed=i).T, 8000)
        paths.append(folder / name)
    return paths


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("block", [None, "0.1"])  # whole files, and streamed in blocks
def test_separate_only_the_requested_stems(tiny_model_path, short_inputs, tmp_path, block):
    out = tmp_path / "out"
    extra = ["--block-seconds", block] if block else []
    result = run("separate", *short_inputs[:2], "--model", tiny_model_path, "-o", out,
                 "--stems", "accompaniment", *extra)
    assert result.exit_code == 0, result.output
    assert files_under(out) == ["a/accompaniment.wav", "b/accompaniment.wav"]
    assert audio.info(out / "a" / "accompaniment.wav") == (8000, 1, 3200)
    result = run("separate", short_inputs[0], "--model", tiny_model_path, "-o", out,
                 "--stems", " vocals , vocals", *extra)  # spaces and repeats are fine
    assert result.exit_code == 0, result.output
    assert files_under(out) == ["a/accompaniment.wav", "a/vocals.wav", "b/accompaniment.wav"]


@pytest.mark.parametrize("stems", ["vocals,drums", "", ","])
def test_separate_unknown_stems_are_a_usage_error(short_inputs, tmp_path, stems):
    # a missing model would be the error if the stems were checked after loading it
    result = run("separate", short_inputs[0], "--model", tmp_path / "none.keras",
                 "-o", tmp_path / "out", "--stems", stems)
    assert result.exit_code == 2, result.output
    assert "--stems" in result.stderr and "none.keras" not in result.stderr
    assert "drums" in result.stderr if "drums" in stems else True
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("block", [None, "0.1"])
def test_separate_filename_template(tiny_model_path, short_inputs, tmp_path, block):
    out = tmp_path / "out"
    extra = ["--block-seconds", block] if block else []
    result = run("separate", *short_inputs, "--model", tiny_model_path, "-o", out,
                 "--filename", "{stem}/{track}-{codec}.{codec}", "--codec", "flac", *extra)
    assert result.exit_code == 0, result.output
    assert files_under(out) == [f"{stem}/{track}-flac.flac" for stem in
                                ("accompaniment", "vocals") for track in "abc"]
    assert sf.info(str(out / "vocals" / "c-flac.flac")).format == "FLAC"
    # the existing-output check looks at the same paths
    marker = out / "vocals" / "b-flac.flac"
    marker.write_bytes(b"marker")
    result = run("separate", short_inputs[1], "--model", tiny_model_path, "-o", out,
                 "--filename", "{stem}/{track}-{codec}.{codec}", "--codec", "flac", *extra)
    assert_clean_error(result, "b-flac.flac", "--overwrite")
    assert marker.read_bytes() == b"marker"
    # without {stem}, one stem is fine
    result = run("separate", short_inputs[0], "--model", tiny_model_path, "-o", out,
                 "--filename", "just-{track}.{codec}", "--stems", "vocals", *extra)
    assert result.exit_code == 0, result.output
    assert audio.info(out / "just-a.wav") == (8000, 1, 3200)


def test_separate_plot_follows_the_filename_template(tiny_model_path, short_inputs,
                                                     tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    result = run("separate", short_inputs[0], "--model", tiny_model_path, "-o", out,
                 "--filename", "{track}_{stem}.{codec}", "--plot")
    assert result.exit_code == 0, result.output
    assert files_under(out) == ["a_accompaniment.wav", "a_separation.png", "a_vocals.wav"]


@pytest.mark.parametrize("template, inputs, fragment", [
    ("{track}.{codec}", 1, "lacks {stem}"),
    ("{stem}.{codec}", 2, "for both"),
    ("/tmp/{track}/{stem}.{codec}", 1, "relative"),
    ("../{track}/{stem}.{codec}", 1, ".."),
    ("{track}/../../{stem}.{codec}", 1, ".."),
    ("{track}/{stem}.{ext}", 1, "{ext}"),
    ("{track}/{stem}.{codec", 1, "--filename"),
    ("{track}/{stem}", 1, "end in .wav"),
])
def test_separate_bad_filename_templates(short_inputs, tmp_path, template, inputs,
                                         fragment):
    out = tmp_path / "out"
    result = run("separate", *short_inputs[:inputs], "--model", tmp_path / "none.keras",
                 "-o", out, "--filename", template)
    assert result.exit_code == 2, result.output  # a usage error, before loading the model
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert fragment in result.stderr and "--filename" in result.stderr, result.stderr
    assert "none.keras" not in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_separate_same_track_name_twice_is_caught(short_inputs, tmp_path):
    other = tmp_path / "elsewhere" / "a.wav"
    other.parent.mkdir()
    other.write_bytes(short_inputs[0].read_bytes())
    result = run("separate", short_inputs[0], other, "--model", tmp_path / "none.keras",
                 "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "for both" in result.stderr and "a/vocals.wav" in result.stderr


def test_batch_loads_the_model_once(tiny_model_path, short_inputs, tmp_path, monkeypatch):
    import keras_svs.runtime

    calls = []
    original = keras_svs.runtime.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras_svs.runtime, "load_model", counting)
    out = tmp_path / "out"
    result = run("separate", *short_inputs, "--model", tiny_model_path, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert files_under(out) == [f"{t}/{s}.wav" for t in "abc"
                                for s in ("accompaniment", "vocals")]
    lines = result.stderr.splitlines()
    # one line per file, then the summary; no progress bar (stderr is not a terminal)
    assert len(lines) == 4, result.stderr
    assert all(f"{p} -> " in line for p, line in zip(short_inputs, lines))
    assert lines[-1].startswith("3 files, 1.2 s of audio in "), lines[-1]
    assert lines[-1].endswith(" real time)") and "separating" not in result.stderr
    assert result.stdout == ""


def test_batch_progress_bar_only_on_a_terminal(tiny_model_path, short_inputs, tmp_path,
                                               monkeypatch):
    import keras_svs.cli

    monkeypatch.setattr(keras_svs.cli, "_stderr_is_terminal", lambda: True)
    result = run("separate", *short_inputs[:2], "--model", tiny_model_path,
                 "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "separating" in result.stderr  # click draws it (here as its bare label)
    assert "2 files, 0.8 s of audio in " in result.stderr
    result = run("separate", short_inputs[2], "--model", tiny_model_path,
                 "-o", tmp_path / "out")  # one file: no bar
    assert result.exit_code == 0, result.output
    assert "separating" not in result.stderr and "1 file, 0.4 s" in result.stderr


def test_train_on_a_folder_without_tracks_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    result = run("train", "--data", tmp_path / "empty", "--preset", "tiny",
                 "-o", tmp_path / "run")
    assert_clean_error(result, "empty", "no audio tracks")


def test_train_names_a_bad_clip_and_skip_bad_skips_it(tmp_path):
    data = write_training_pairs(tmp_path / "data", tracks=4, seconds=1.0)
    (data / "clip_3.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEbroken")
    common = ["train", "--data", data, "--preset", "tiny", "--epochs", "1",
              "--pretrain-epochs", "0", "--steps-per-epoch", "1", "--gnsdr-clips", "0"]
    result = run(*common, "-o", tmp_path / "run")
    assert_clean_error(result, "clip_3.wav", "--skip-bad")
    assert not (tmp_path / "run" / "model.keras").exists()
    result = run(*common, "-o", tmp_path / "skipped", "--skip-bad")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert any("clip_3" in line for line in warnings), result.stderr
    assert json.loads((tmp_path / "skipped" / "training.json").read_text())["train_tracks"] == 2


def test_jobs_separate_a_batch_in_parallel_like_one_job(tiny_model_path, short_inputs, tmp_path):
    """--jobs 2: two worker processes, the same stems as one job, one line per file."""
    missing = tmp_path / "batch" / "missing.wav"
    outputs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        result = run("separate", short_inputs[0], missing, *short_inputs[1:], "--model",
                     tiny_model_path, "-o", out, "--jobs", jobs, "--bit-depth", "32")
        assert result.exit_code == 1, result.output
        assert files_under(out) == [f"{t}/{s}.wav" for t in "abc"
                                    for s in ("accompaniment", "vocals")]
        lines = result.stderr.splitlines()
        assert sorted(line.split(" -> ")[0] for line in lines if " -> " in line) == sorted(
            str(p) for p in short_inputs)
        assert f"Error: {missing}: no such file" in lines
        assert lines[-2].startswith("3 files, ") and lines[-1] == "Error: 1 of 4 files failed"
        assert len(lines) == 6, result.stderr
        outputs[jobs] = {p: audio.read(out / p)[0] for p in files_under(out)}
    for name, data in outputs["1"].items():
        np.testing.assert_allclose(outputs["2"][name], data, atol=1e-5)


def test_streamed_file_has_its_own_progress_bar_on_a_terminal(tiny_model_path, short_inputs,
                                                             tmp_path, monkeypatch):
    import keras_svs.cli

    args = ("separate", short_inputs[0], "--model", tiny_model_path, "--block-seconds", "0.1",
            "--overwrite", "-o", tmp_path / "out")
    assert "streaming a.wav" not in run(*args).stderr  # not a terminal: no bar
    monkeypatch.setattr(keras_svs.cli, "_stderr_is_terminal", lambda: True)
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "streaming a.wav" in result.stderr  # click draws it (here as its bare label)
    assert "streaming" not in run(*args[:4], *args[-3:]).stderr  # a whole file: no bar
