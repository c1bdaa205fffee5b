"""keras_svs.beam: catalogue separation on Apache Beam's DirectRunner, against `keras-svs
separate` (the [beam] extra; `make venv` installs it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("apache_beam", reason="the [beam] extra (apache-beam) is not installed")

from click.testing import CliRunner  # noqa: E402

from conftest import TINY_RATE, synth_mixture  # noqa: E402
from keras_svs import audio, batch  # noqa: E402
from keras_svs.beam import ModelSource, plan, separate_catalogue  # noqa: E402
from keras_svs.cli import main  # noqa: E402


def _catalogue(root: Path) -> dict[str, Path]:
    """Short songs in two folders: mono and stereo at the tiny model's rate, one at another
    rate, an unreadable file, and a name that two folders share."""
    files = {"a/mono.wav": (TINY_RATE, 1, 1.3), "a/stereo.flac": (TINY_RATE, 2, 0.9),
             "a/rate.wav": (11025, 2, 1.1), "a/same.wav": (TINY_RATE, 1, 0.5),
             "b/same.wav": (TINY_RATE, 1, 0.6)}
    paths = {}
    for i, (name, (rate, channels, seconds)) in enumerate(files.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth_mixture(rate, seconds, channels, seed=i).T, rate,
                 subtype="PCM_24" if name.endswith(".flac") else "FLOAT")
        paths[name] = path
    (root / "a" / "broken.wav").write_bytes(b"RIFF, but not audio")
    return paths


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_direct_runner_separates_as_separate_does(tiny_model_path, tmp_path):
    songs = _catalogue(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "separate-beam", "--input", str(tmp_path / "in" / "*" / "*"), "-o", str(out),
        "-m", str(tiny_model_path), "--batch-size", "2", "--bit-depth", "32",
        "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    assert result.exit_code == 1, result.output
    assert "3 files separated" in result.output and "3 failed" in result.output
    assert f"see {out / 'failed.jsonl'}" in result.output
    reference = tmp_path / "reference"
    good = [songs[name] for name in ("a/mono.wav", "a/stereo.flac", "a/rate.wav")]
    outcomes = list(batch.separate_files({"model": tiny_model_path}, good, reference,
                                         bit_depth=32))
    assert all(o.error is None for o in outcomes)
    for path in good:
        for stem in ("vocals", "accompaniment"):
            ours, rate = audio.read(out / path.stem / f"{stem}.wav")
            theirs, their_rate = audio.read(reference / path.stem / f"{stem}.wav")
            assert rate == their_rate and ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, atol=1e-4)
    manifest = {Path(line["path"]).name: line for line in _lines(out / "separated.jsonl")}
    assert sorted(manifest) == ["mono.wav", "rate.wav", "stereo.flac"]
    assert manifest["mono.wav"]["seconds"] == pytest.approx(1.3, abs=1e-3)
    assert manifest["stereo.flac"]["written"]["vocals"] == str(out / "stereo" / "vocals.wav")
    failed = {(Path(line["path"]).parent.name, Path(line["path"]).name): line
              for line in _lines(out / "failed.jsonl")}
    assert sorted(failed) == [("a", "broken.wav"), ("a", "same.wav"), ("b", "same.wav")]
    assert failed[("a", "broken.wav")]["step"] == "decode"
    assert "broken.wav" in failed[("a", "broken.wav")]["reason"]
    assert failed[("b", "same.wav")]["step"] == "plan"
    assert "writes" in failed[("b", "same.wav")]["reason"]
    assert not (out / "same").exists() and not (out / "broken").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporaries

    # again without --overwrite: every output exists, nothing is replaced
    before = (out / "mono" / "vocals.wav").stat().st_mtime_ns
    run = separate_catalogue(str(songs["a/mono.wav"]), out, tiny_model_path)
    assert (run.separated, run.failed) == (0, 1)
    assert "exists (use --overwrite" in _lines(out / "failed.jsonl")[0]["reason"]
    assert (out / "mono" / "vocals.wav").stat().st_mtime_ns == before


def test_a_savedmodel_export_runs_in_the_pipeline(tiny_model_path, tmp_path):
    from keras_svs.export import export

    exported = export(tiny_model_path, tmp_path / "exported")
    songs = tmp_path / "in"
    songs.mkdir()
    for i in range(2):
        sf.write(songs / f"song{i}.wav", synth_mixture(TINY_RATE, 0.8 + 0.3 * i, 2, i).T,
                 TINY_RATE, subtype="FLOAT")
    out = tmp_path / "out"
    run = separate_catalogue(str(songs / "*.wav"), out, exported, bit_depth=32,
                             stems=("vocals",))
    assert (run.separated, run.failed) == (2, 0)
    assert run.audio_seconds == pytest.approx(1.9, abs=1e-3)
    assert run.failure() is None and _lines(out / "failed.jsonl") == []
    from keras_svs.separation import Separator

    separator = Separator(tiny_model_path, runtime="tensorflow")
    for i in range(2):
        assert not (out / f"song{i}" / "accompaniment.wav").exists()
        mixture, rate = audio.read(songs / f"song{i}.wav")
        ours, _ = audio.read(out / f"song{i}" / "vocals.wav")
        np.testing.assert_allclose(ours, separator.separate(mixture, rate)["vocals"],
                                   atol=1e-4)
    with pytest.raises(ValueError, match="mode is average"):
        separate_catalogue(str(songs / "*.wav"), out, exported, mode="centre")


def test_plans_follow_the_separate_rules():
    assert plan("gs://bucket/in/song.mp3", "gs://bucket/out") == {
        "vocals": "gs://bucket/out/song/vocals.wav",
        "accompaniment": "gs://bucket/out/song/accompaniment.wav"}
    assert plan("/music/x.flac", "/out", "{stem}/{track}.{codec}", ("vocals",), "flac") == {
        "vocals": "/out/vocals/x.flac"}
    with pytest.raises(batch.OutputNameError, match="lacks {stem}"):
        plan("/music/x.flac", "/out", "{track}.{codec}")
    with pytest.raises(ValueError, match="no such model"):
        ModelSource("/nowhere/model.keras").check()


def test_a_folder_that_is_no_export_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a keras-svs export"):
        ModelSource(tmp_path / "folder").check()
