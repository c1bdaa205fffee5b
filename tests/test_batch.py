"""keras_svs.batch: separating many files from Python, as ``keras-svs separate`` does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY_RATE, synth_mixture
from keras_svs import batch, options

SECONDS = 0.4


@pytest.fixture(scope="module")
def separator(tiny_model_path):
    from keras_svs import Separator

    return Separator(tiny_model_path, mask="soft")


@pytest.fixture
def inputs(tmp_path):
    """a.wav, b.wav (mono), c.flac (stereo): 0.4 s at 8 kHz."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, (name, channels) in enumerate((("a.wav", 1), ("b.wav", 1), ("c.flac", 2))):
        sf.write(folder / name, synth_mixture(TINY_RATE, SECONDS, channels, seed=i).T,
                 TINY_RATE)
        paths.append(folder / name)
    return paths


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_separate_files_writes_every_stem_in_order(separator, inputs, tmp_path):
    out = tmp_path / "out"
    outcomes = list(batch.separate_files(separator, inputs, out, bit_depth=32))
    assert [o.path for o in outcomes] == inputs
    assert all(o.error is None for o in outcomes)
    assert files_under(out) == [f"{t}/{s}.wav" for t in "abc"
                                for s in ("accompaniment", "vocals")]
    for path, outcome in zip(inputs, outcomes):
        assert set(outcome.written) == {"vocals", "accompaniment"}
        assert outcome.audio_seconds == pytest.approx(SECONDS)
        assert outcome.seconds > 0
        mixture, _ = sf.read(path, dtype="float32", always_2d=True)
        stems = [sf.read(outcome.written[s], dtype="float32", always_2d=True)[0]
                 for s in ("vocals", "accompaniment")]
        assert stems[0].shape == mixture.shape
        np.testing.assert_allclose(stems[0] + stems[1], mixture, atol=1e-5)


def test_options_dict_template_and_stream_progress(tiny_model_path, inputs, tmp_path):
    calls = []
    out = tmp_path / "out"
    outcomes = list(batch.separate_files(
        {"model": tiny_model_path, "mask": "soft"}, inputs[:2], out,
        filename="{stem}/{track}.{codec}", stems=("vocals",), block_seconds=0.1,
        progress=lambda path, done, total: calls.append((path, done, total))))
    assert [o.error for o in outcomes] == [None, None]
    assert files_under(out) == ["vocals/a.wav", "vocals/b.wav"]
    frames = int(SECONDS * TINY_RATE)
    for path in inputs[:2]:  # both streamed (0.4 s > 0.1 s blocks), frames adding up
        done = [d for p, d, total in calls if p == path and total == frames]
        assert len(done) > 1 and done == sorted(done) and done[-1] == frames


def test_a_failure_is_an_outcome_and_the_others_go_on(separator, inputs, tmp_path):
    missing = tmp_path / "in" / "missing.wav"
    out = tmp_path / "out"
    outcomes = list(batch.separate_files(separator, [inputs[0], missing, inputs[1]], out))
    assert [o.path for o in outcomes] == [inputs[0], missing, inputs[1]]
    assert isinstance(outcomes[1].error, batch.EXPECTED_ERRORS)
    assert "missing.wav" in str(outcomes[1].error) and outcomes[1].written == {}
    assert outcomes[0].error is None and outcomes[2].error is None
    assert {p.split("/")[0] for p in files_under(out)} == {"a", "b"}


def test_fail_fast_starts_no_file_after_a_failure(separator, inputs, tmp_path):
    missing = tmp_path / "in" / "missing.wav"
    out = tmp_path / "out"
    outcomes = list(batch.separate_files(separator, [inputs[0], missing, *inputs[1:]], out,
                                         fail_fast=True))
    assert [o.path for o in outcomes] == [inputs[0], missing]
    assert outcomes[0].error is None and outcomes[1].error is not None
    assert files_under(out) == ["a/accompaniment.wav", "a/vocals.wav"]


def test_an_output_name_collision_raises_before_any_work(separator, inputs, tmp_path,
                                                         monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("separated despite the collision")

    monkeypatch.setattr(type(separator), "separate_file", fail)
    out = tmp_path / "out"
    twin = tmp_path / "other" / "a.flac"  # the same {track} as in/a.wav
    twin.parent.mkdir()
    twin.write_bytes(inputs[0].read_bytes())
    with pytest.raises(batch.OutputNameError, match="for both"):
        batch.separate_files(separator, [inputs[0], twin], out)  # raises at the call
    with pytest.raises(batch.OutputNameError, match="lacks {stem}"):
        batch.separate_files(separator, inputs, out, filename="{track}.{codec}")
    assert not out.exists()


@pytest.mark.parametrize("template, fragment", [
    ("{track}/{name}.{codec}", "unknown placeholder {name}"),
    ("/tmp/{track}/{stem}.{codec}", "must be relative"),
    ("../{track}/{stem}.{codec}", "must not contain '..'"),
    ("{track}/{stem}.wav", "does not end in .flac"),
])
def test_output_paths_refuses_bad_templates(tmp_path, template, fragment):
    with pytest.raises(batch.OutputNameError, match=fragment.replace("{", r"\{")
                       .replace("}", r"\}").replace(".", r"\.")):
        batch.output_paths([Path("a.wav")], tmp_path, template, codec="flac")


def test_output_paths_places_stems_and_plot(tmp_path):
    plans = batch.output_paths([Path("x/song.mp3")], tmp_path, stems=("vocals",), plot=True)
    assert plans == [{"vocals": tmp_path / "song" / "vocals.wav",
                      "plot": tmp_path / "song" / "separation.png"}]


def test_existing_outputs_are_kept_without_overwrite(separator, inputs, tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "vocals.wav").write_bytes(b"keep me")
    [refused] = batch.separate_files(separator, inputs[:1], out)
    assert isinstance(refused.error, FileExistsError)
    assert "use --overwrite" in str(refused.error)
    assert (out / "a" / "vocals.wav").read_bytes() == b"keep me"
    assert not (out / "a" / "accompaniment.wav").exists()
    [replaced] = batch.separate_files(separator, inputs[:1], out, overwrite=True)
    assert replaced.error is None
    assert sf.info(out / "a" / "vocals.wav").frames == int(SECONDS * TINY_RATE)


def test_block_seconds_for_streams_long_files(inputs, monkeypatch):
    path = inputs[0]  # 0.4 s
    assert batch.block_seconds_for(path, None) is None
    assert batch.block_seconds_for(path, 0.1) == 0.1
    assert batch.block_seconds_for(path, 1.0) is None
    monkeypatch.setattr(batch, "AUTO_STREAM_SECONDS", 0.2)
    assert batch.block_seconds_for(path, None) == batch.AUTO_BLOCK_SECONDS


def test_a_separator_drives_a_templated_fail_fast_batch_in_two_jobs(litert_model_path,
                                                                     inputs, tmp_path):
    """What ``keras-svs separate --filename ... --jobs 2 --fail-fast`` does, from Python:
    the workers load the separator's model from its arguments; after the failure no file
    is started, and every file that was separated is whole."""
    from keras_svs import Separator

    separator = Separator(litert_model_path)
    missing = tmp_path / "in" / "missing.wav"
    out = tmp_path / "out"
    outcomes = list(batch.separate_files(separator, [missing, *inputs], out, jobs=2,
                                         fail_fast=True, filename="{stem}/{track}.{codec}"))
    failed = [o for o in outcomes if o.error is not None]
    assert [o.path for o in failed] == [missing] and "missing.wav" in str(failed[0].error)
    done = sorted(o.path.stem for o in outcomes if o.error is None)
    assert len(done) < len(inputs)  # the files not yet started at the failure were not
    assert files_under(out) == [f"{s}/{t}.wav" for s in ("accompaniment", "vocals")
                                for t in done]
    for outcome in outcomes:
        if outcome.error is None:
            written = outcome.written["vocals"]
            assert written == out / "vocals" / f"{outcome.path.stem}.wav"
            assert sf.info(written).frames == sf.info(outcome.path).frames


def test_jobs_need_a_separator_that_can_be_made_again(tiny_model, inputs, tmp_path):
    from keras_svs import Separator

    separator = Separator(tiny_model)
    assert separator.arguments is None
    with pytest.raises(ValueError, match="a Separator made from a model file"):
        batch.separate_files(separator, inputs, tmp_path / "out", jobs=2)
    with pytest.raises(ValueError, match="unknown stems"):
        batch.separate_files(separator, inputs, tmp_path / "out", stems=("drums",))


def test_parse_stems():
    assert batch.parse_stems(" accompaniment,vocals,accompaniment") == (
        "accompaniment", "vocals")
    with pytest.raises(ValueError, match="unknown stem 'bass'"):
        batch.parse_stems("vocals,bass")
    with pytest.raises(ValueError, match="name at least one"):
        batch.parse_stems(" , ")


def test_set_threads_refuses_fewer_than_one():
    from keras_svs import separation

    before = separation.fft_threads()
    with pytest.raises(ValueError, match="at least 1"):
        separation.set_threads(0)
    assert separation.fft_threads() == before >= 1


def test_set_threads_waits_for_tensorflow(tiny_model_path):
    """A worker's thread count reaches TensorFlow's pools only when a separator imports it,
    so a LiteRT worker never imports TensorFlow."""
    code = (
        "import sys\n"
        "from keras_svs import separation\n"
        "separation.set_threads(1)\n"
        "assert 'tensorflow' not in sys.modules and separation.fft_threads() == 1\n"
        f"separation.Separator({str(tiny_model_path)!r}, runtime='tensorflow')\n"
        "import tensorflow as tf\n"
        "t = tf.config.threading\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["1", "1"]


def test_options_are_the_owning_modules_choices():
    from keras_svs import evaluation, separation, spectral, training
    from keras_svs.models import inference, spleeter

    assert spectral.MASKS is options.MASKS and spectral.EXTENSIONS is options.EXTENSIONS
    assert separation.MODES is options.MODES and separation.STEMS is options.STEMS
    assert evaluation.METHODS is options.METHODS
    # defined again in these modules: kept equal here
    assert training.LOSSES == options.LOSSES
    assert training.PRECISIONS == options.TRAINING_PRECISIONS
    assert inference.PRECISIONS == options.INFERENCE_PRECISIONS
    assert spleeter.STEMS == options.STEMS


def test_the_cli_and_batch_import_no_tensorflow():
    code = ("import sys, keras_svs.cli, keras_svs.batch, keras_svs.options; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def _sigterm_caught_by_native_code(raises: BaseException | None = None) -> None:
    """Send this process SIGTERM and catch the handler's ``KeyboardInterrupt`` as native code
    may: raise ``raises`` instead, or nothing (swallowed)."""
    import os
    import signal
    import time

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    except KeyboardInterrupt:
        if raises is not None:
            raise raises from None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_that_surfaces_as_another_error_still_ends_as_terminated():
    """A signal landing in native code can come out as another exception; after a SIGTERM
    it is still the interrupt, and the previous handler is back afterwards."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="terminated"):
        with batch.sigterm_as_interrupt():
            _sigterm_caught_by_native_code(AttributeError("what the native code made of it"))
    assert signal.getsignal(signal.SIGTERM) is previous
    with pytest.raises(AttributeError):  # without a signal, errors are themselves
        with batch.sigterm_as_interrupt():
            raise AttributeError("a bug")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_swallowed_sigterm_still_ends_as_terminated_and_commits_no_file(tmp_path):
    """Native code that swallows the handler's exception: no writer renames a file into
    place after the signal, and the block still ends as the interrupt."""
    from keras_svs import audio

    out = tmp_path / "out" / "vocals.wav"
    with pytest.raises(KeyboardInterrupt, match="terminated"):
        with batch.sigterm_as_interrupt():
            _sigterm_caught_by_native_code()
            with pytest.raises(KeyboardInterrupt, match="terminated"):
                audio.write_all({out: np.zeros((2, 800), np.float32)}, TINY_RATE)
    assert not (tmp_path / "out").exists()  # neither the file, its temporary nor its folder
    assert not audio.STOPPING.is_set()
    audio.write_all({out: np.zeros((2, 800), np.float32)}, TINY_RATE)  # the next run writes
    assert sf.info(out).frames == 800
